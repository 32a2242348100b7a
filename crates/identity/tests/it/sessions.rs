//! Logins, refresh-token rotation, logout, and what ends a session.

use xi_api::identity::{ChangePasswordRequest, UpdateUserRequest};
use xi_auth::{AuthError, Credential};
use xi_identity::{Identity, IdentityError};

use crate::support::{
    assert_err, bearer, perms, root, strings, Env, ACCESS_SECS, ADDR, REFRESH_SECS,
    THROTTLE_PER_USER,
};

on_both!(
    login_refresh_and_rotation,
    reusing_a_refresh_token_ends_the_session,
    logout_ends_the_session_at_once,
    disabling_a_user_ends_its_sessions,
    permission_changes_apply_on_the_next_request,
    a_password_change_ends_the_other_sessions,
    bad_logins_are_alike_and_throttled,
    tokens_expire_by_the_clock,
);

/// The access token no longer authenticates.
async fn refused(identity: &Identity, access_token: &str) {
    assert_err!(
        identity.authenticate(Some(&bearer(access_token))).await,
        IdentityError::Auth(AuthError::InvalidCredentials) | IdentityError::Unauthorized(_)
    );
}

async fn login_refresh_and_rotation(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let uid = env
        .user("alice", "alice-pw-123", &["models:list", "models:read"])
        .await;
    let first = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    assert!(!first.access_token.is_empty() && !first.refresh_token.is_empty());
    assert_ne!(first.access_token, first.refresh_token);
    assert_eq!(first.expires_in, ACCESS_SECS);
    assert!(!first.must_change_password);
    let principal = id
        .authenticate(Some(&bearer(&first.access_token)))
        .await
        .unwrap();
    assert_eq!(principal.username, "alice");
    assert_eq!(principal.user_id, Some(uid));
    assert_eq!(principal.credential, Credential::Token);
    assert_eq!(
        principal.permissions,
        perms(&["models:list", "models:read"])
    );
    assert!(principal.key.is_none());
    let session = principal.session.clone().expect("a session");

    env.clock.advance(5);
    let second = id.refresh(&first.refresh_token, ADDR).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    let again = id
        .authenticate(Some(&bearer(&second.access_token)))
        .await
        .unwrap();
    assert_eq!(
        again.session.as_deref(),
        Some(session.as_str()),
        "the same session"
    );
    assert_eq!(again.permissions, principal.permissions);

    // The old refresh token is spent (presenting it is reuse, see the next scenario); the
    // new one rotates on.
    let third = id.refresh(&second.refresh_token, ADDR).await.unwrap();
    id.authenticate(Some(&bearer(&third.access_token)))
        .await
        .unwrap();
    assert_err!(
        id.refresh("not-a-token", ADDR).await,
        IdentityError::Unauthorized(_)
    );
    assert_err!(id.refresh("", ADDR).await, IdentityError::BadRequest(_));
    assert_err!(
        id.authenticate(Some("Bearer not.a.jwt")).await,
        IdentityError::Auth(AuthError::InvalidCredentials)
    );
    assert_err!(
        id.authenticate(None).await,
        IdentityError::Auth(AuthError::NotAuthenticated)
    );

    // Only hashes of refresh tokens are stored.
    let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(id.store().pool())
        .await
        .unwrap();
    assert_eq!(hashes.len(), 3);
    for token in [
        &first.refresh_token,
        &second.refresh_token,
        &third.refresh_token,
    ] {
        assert!(hashes.iter().all(|h| !h.contains(token.as_str())));
    }
}

async fn reusing_a_refresh_token_ends_the_session(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user("alice", "alice-pw-123", &["models:list"]).await;
    let first = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    let other = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    let second = id.refresh(&first.refresh_token, ADDR).await.unwrap();
    id.authenticate(Some(&bearer(&second.access_token)))
        .await
        .unwrap();

    assert_err!(
        id.refresh(&first.refresh_token, ADDR).await,
        IdentityError::Unauthorized(m) if m.contains("already used")
    );
    assert_err!(
        id.refresh(&second.refresh_token, ADDR).await,
        IdentityError::Unauthorized(_)
    );
    refused(id, &second.access_token).await;
    refused(id, &first.access_token).await;
    // Another session of the same user is untouched.
    id.authenticate(Some(&bearer(&other.access_token)))
        .await
        .unwrap();
    id.refresh(&other.refresh_token, ADDR).await.unwrap();
}

async fn logout_ends_the_session_at_once(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user("alice", "alice-pw-123", &["models:list"]).await;
    // By refresh token, with no caller.
    let a = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    id.authenticate(Some(&bearer(&a.access_token)))
        .await
        .unwrap(); // cached now
    id.logout(&a.refresh_token, None, ADDR).await.unwrap();
    refused(id, &a.access_token).await;
    assert_err!(
        id.refresh(&a.refresh_token, ADDR).await,
        IdentityError::Unauthorized(_)
    );
    // By the calling token, with no refresh token.
    let b = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    let caller = id
        .authenticate(Some(&bearer(&b.access_token)))
        .await
        .unwrap();
    id.logout("", Some(&caller), ADDR).await.unwrap();
    refused(id, &b.access_token).await;
    assert_err!(
        id.refresh(&b.refresh_token, ADDR).await,
        IdentityError::Unauthorized(_)
    );
    // An unknown token is no error (nothing to end).
    id.logout("unknown", None, ADDR).await.unwrap();
}

async fn disabling_a_user_ends_its_sessions(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let uid = env.user("alice", "alice-pw-123", &["models:list"]).await;
    let one = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    let two = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    id.authenticate(Some(&bearer(&one.access_token)))
        .await
        .unwrap();
    id.authenticate(Some(&bearer(&two.access_token)))
        .await
        .unwrap();
    let disable = UpdateUserRequest {
        enabled: Some(false),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), uid, disable, ADDR).await.unwrap();
    refused(id, &one.access_token).await;
    refused(id, &two.access_token).await;
    assert_err!(
        id.refresh(&one.refresh_token, ADDR).await,
        IdentityError::Unauthorized(_)
    );
    assert_err!(
        id.login("alice", "alice-pw-123", ADDR).await,
        IdentityError::Auth(AuthError::BadLogin)
    );
    // Enabled again, the old sessions stay ended; a new login works.
    let enable = UpdateUserRequest {
        enabled: Some(true),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), uid, enable, ADDR).await.unwrap();
    refused(id, &one.access_token).await;
    env.sign_in("alice", "alice-pw-123").await;
}

async fn permission_changes_apply_on_the_next_request(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let uid = env
        .user(
            "alice",
            "alice-pw-123",
            &["models:list", "models:read", "models:start"],
        )
        .await;
    let issued = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    let before = id
        .authenticate(Some(&bearer(&issued.access_token)))
        .await
        .unwrap();
    assert_eq!(
        before.permissions,
        perms(&["models:list", "models:read", "models:start"])
    );
    let cut = UpdateUserRequest {
        permissions: Some(strings(&["models:list", "models:stop"])),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), uid, cut, ADDR).await.unwrap();
    let after = id
        .authenticate(Some(&bearer(&issued.access_token)))
        .await
        .unwrap();
    assert_eq!(
        after.permissions,
        perms(&["models:list"]),
        "the token's grant cut down to the user's current permissions"
    );
    // A refresh issues the new permissions.
    let refreshed = id.refresh(&issued.refresh_token, ADDR).await.unwrap();
    let now = id
        .authenticate(Some(&bearer(&refreshed.access_token)))
        .await
        .unwrap();
    assert_eq!(now.permissions, perms(&["models:list", "models:stop"]));
}

async fn a_password_change_ends_the_other_sessions(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let uid = env.user("alice", "alice-pw-123", &["models:list"]).await;
    let (mine, me) = env.sign_in("alice", "alice-pw-123").await;
    let (other, _) = env.sign_in("alice", "alice-pw-123").await;
    let change = ChangePasswordRequest {
        new_password: "alice-new-pw".into(),
        old_password: Some("alice-pw-123".into()),
    };
    id.change_password(&me, uid, change, ADDR).await.unwrap();
    refused(id, &other.access_token).await;
    assert_err!(
        id.refresh(&other.refresh_token, ADDR).await,
        IdentityError::Unauthorized(_)
    );
    id.authenticate(Some(&bearer(&mine.access_token)))
        .await
        .expect("the caller's own session goes on");
    id.refresh(&mine.refresh_token, ADDR)
        .await
        .expect("and refreshes");
    // A reset by an admin ends every session of the user.
    let (third, _) = env.sign_in("alice", "alice-new-pw").await;
    let reset = ChangePasswordRequest {
        new_password: "alice-reset-pw".into(),
        old_password: None,
    };
    id.change_password(&root(), uid, reset, ADDR).await.unwrap();
    refused(id, &third.access_token).await;
    refused(id, &mine.access_token).await;
}

async fn bad_logins_are_alike_and_throttled(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user("alice", "alice-pw-123", &["models:list"]).await;
    assert_err!(
        id.login("nobody", "whatever-pw", "192.0.2.50").await,
        IdentityError::Auth(AuthError::BadLogin)
    );
    for _ in 0..THROTTLE_PER_USER {
        assert_err!(
            id.login("alice", "wrong-password", ADDR).await,
            IdentityError::Auth(AuthError::BadLogin)
        );
    }
    assert_err!(
        id.login("alice", "alice-pw-123", ADDR).await,
        IdentityError::Auth(AuthError::Throttled { retry_after_secs }) if retry_after_secs > 0,
    );
    // The window passes on the clock.
    env.clock.advance(61);
    id.login("alice", "alice-pw-123", ADDR)
        .await
        .expect("after the window");
    for _ in 0..THROTTLE_PER_USER {
        let _ = id.login("nobody", "x-password", "192.0.2.51").await;
    }
    assert_err!(
        id.login("nobody", "x-password", "192.0.2.51").await,
        IdentityError::Auth(AuthError::Throttled { .. })
    );
}

async fn tokens_expire_by_the_clock(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user("alice", "alice-pw-123", &["models:list"]).await;
    let issued = id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    id.authenticate(Some(&bearer(&issued.access_token)))
        .await
        .unwrap();
    env.clock.advance(ACCESS_SECS - 1);
    id.authenticate(Some(&bearer(&issued.access_token)))
        .await
        .expect("still valid");
    env.clock.advance(2);
    refused(id, &issued.access_token).await;
    let renewed = id
        .refresh(&issued.refresh_token, ADDR)
        .await
        .expect("the refresh token lives on");
    id.authenticate(Some(&bearer(&renewed.access_token)))
        .await
        .unwrap();

    env.clock.advance(REFRESH_SECS);
    assert_err!(
        id.refresh(&renewed.refresh_token, ADDR).await,
        IdentityError::Unauthorized(m) if !m.contains("already used")
    );
    refused(id, &renewed.access_token).await;
    // The refused refresh was not reuse: logging in again works.
    env.sign_in("alice", "alice-pw-123").await;
}
