//! The first admin of an empty store without a config file.

use std::sync::Arc;

use xi_api::identity::ChangePasswordRequest;
use xi_api::PermissionSet;
use xi_identity::IdentityError;

use crate::support::{assert_err, bearer, open, sign_in, Env, ADDR};

on_both!(
    bootstrap_creates_one_admin_who_must_change_its_password,
    concurrent_bootstraps_create_one_admin,
);

async fn bootstrap_creates_one_admin_who_must_change_its_password(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let boot = id
        .bootstrap()
        .await
        .unwrap()
        .expect("an empty store bootstraps");
    assert_eq!(boot.username, "admin");
    assert!(boot.password.len() >= 16, "a strong random password");
    assert!(id.bootstrap().await.unwrap().is_none(), "only once");

    let (issued, principal) = sign_in(id, "admin", &boot.password).await;
    assert!(issued.must_change_password);
    assert!(principal.must_change_password);
    assert_eq!(principal.permissions, PermissionSet::ALL);
    let user_id = principal.user_id.expect("a store user");
    assert!(id.user(user_id).await.unwrap().must_change_password);

    let change = ChangePasswordRequest {
        new_password: "new-admin-pw-1".into(),
        old_password: Some(boot.password.clone()),
    };
    id.change_password(&principal, user_id, change, ADDR)
        .await
        .unwrap();
    let again = id
        .authenticate(Some(&bearer(&issued.access_token)))
        .await
        .expect("the caller's own session goes on");
    assert!(
        !again.must_change_password,
        "the flag is gone after the change"
    );
    assert!(!id.user(user_id).await.unwrap().must_change_password);
    assert_err!(
        id.login("admin", &boot.password, ADDR).await,
        IdentityError::Auth(xi_auth::AuthError::BadLogin)
    );
    let (issued, principal) = sign_in(id, "admin", "new-admin-pw-1").await;
    assert!(!issued.must_change_password);
    assert!(!principal.must_change_password);
}

async fn concurrent_bootstraps_create_one_admin(url: String) {
    let env = Env::new(&url).await;
    let mut supervisors = vec![env.identity.clone()];
    for _ in 0..3 {
        supervisors.push(open(&url, None, env.clock.clone()).await);
    }
    let tasks: Vec<_> = supervisors
        .iter()
        .map(|s| {
            let s = Arc::clone(s);
            tokio::spawn(async move { s.bootstrap().await })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        if let Some(boot) = task.await.unwrap().expect("bootstrap") {
            created.push(boot);
        }
    }
    assert_eq!(created.len(), 1, "exactly one supervisor creates the admin");
    let users = env.identity.users().await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].username, "admin");
    // Every supervisor accepts the winner's admin (they share the signing secret too).
    let (issued, _) = sign_in(&supervisors[3], "admin", &created[0].password).await;
    let principal = supervisors[1]
        .authenticate(Some(&bearer(&issued.access_token)))
        .await
        .expect("a token of one supervisor works on another");
    assert_eq!(principal.username, "admin");
}
