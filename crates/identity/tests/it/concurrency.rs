//! Many writers at once.

use std::sync::Arc;

use xi_api::identity::CreateUserRequest;
use xi_identity::IdentityError;

use crate::support::{assert_err, bearer, root, Env, ADDR};

on_both!(
    a_hundred_concurrent_user_creations_all_succeed,
    concurrent_refreshes_of_one_token_end_the_session,
);

async fn a_hundred_concurrent_user_creations_all_succeed(url: String) {
    let env = Env::new(&url).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let id = Arc::clone(&env.identity);
            tokio::spawn(async move {
                let request = CreateUserRequest {
                    username: format!("user{i:03}"),
                    password: format!("password-{i:03}"),
                    permissions: vec!["models:list".into()],
                    must_change_password: false,
                };
                id.create_user(&root(), request, ADDR).await
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        if let Err(e) = task.await.unwrap() {
            failures.push(format!("user{i:03}: {e:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 100 failed: {failures:#?}",
        failures.len()
    );
    let users = env.identity.users().await.unwrap();
    let mut names: Vec<_> = users.iter().map(|u| u.username.clone()).collect();
    names.sort();
    let want: Vec<_> = (0..100).map(|i| format!("user{i:03}")).collect();
    assert_eq!(names, want);
    assert_eq!(
        env.identity.store().revision().await.unwrap(),
        100,
        "one revision each"
    );
}

async fn concurrent_refreshes_of_one_token_end_the_session(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user("alice", "alice-pw-123", &["models:list"]).await;
    let issued = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    id.authenticate(Some(&bearer(&issued.access_token)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let id = Arc::clone(id);
            let token = issued.refresh_token.clone();
            tokio::spawn(async move { id.refresh(&token, ADDR).await })
        })
        .collect();
    let mut won = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(new) => won.push(new),
            Err(IdentityError::Unauthorized(_)) => {}
            Err(other) => panic!("a refresh failed otherwise: {other:?}"),
        }
    }
    assert!(
        won.len() <= 1,
        "{} refreshes of one token succeeded",
        won.len()
    );
    assert_err!(
        id.authenticate(Some(&bearer(&issued.access_token))).await,
        IdentityError::Auth(xi_auth::AuthError::InvalidCredentials)
    );
    for new in &won {
        assert_err!(
            id.refresh(&new.refresh_token, ADDR).await,
            IdentityError::Unauthorized(_)
        );
        assert_err!(
            id.authenticate(Some(&bearer(&new.access_token))).await,
            IdentityError::Auth(xi_auth::AuthError::InvalidCredentials)
        );
    }
    let reuse: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'refresh' AND outcome = 'reuse'",
    )
    .fetch_one(id.store().pool())
    .await
    .unwrap();
    assert!(reuse >= 1, "the reuse is audited");
}
