//! Admin operations on users and their rules.

use xi_api::identity::{
    ChangePasswordRequest, CreateUserRequest, UpdateUserRequest, SOURCE_CONFIG,
};
use xi_auth::{Credential, ManualClock, Principal};
use xi_identity::IdentityError;

use crate::support::{assert_err, config_service, perms, root, strings, Env, ADDR, T0};

on_both!(
    users_are_created_with_checked_requests,
    a_user_manager_grants_and_touches_only_what_it_may,
    the_last_enabled_admin_stays,
    config_users_are_listed_and_keep_their_names,
    changing_ones_own_password_needs_the_old_one,
    ids_of_deleted_users_are_never_reused,
);

/// A client holding an id, or an audit event naming one, must never reach another user
/// (SQLite reuses the largest rowid unless told not to).
async fn ids_of_deleted_users_are_never_reused(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let first = id
        .create_user(&root(), request("first", "first-pw-123", &[]), ADDR)
        .await
        .unwrap();
    id.delete_user(&root(), first.id, ADDR).await.unwrap();
    let second = id
        .create_user(&root(), request("second", "second-pw-123", &[]), ADDR)
        .await
        .unwrap();
    assert!(second.id > first.id, "{} reused as {}", first.id, second.id);
    assert_err!(id.user(first.id).await, IdentityError::NotFound(_));
}

fn request(username: &str, password: &str, permissions: &[&str]) -> CreateUserRequest {
    CreateUserRequest {
        username: username.into(),
        password: password.into(),
        permissions: strings(permissions),
        must_change_password: false,
    }
}

async fn users_are_created_with_checked_requests(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let created = id
        .create_user(
            &root(),
            request("alice", "alice-pw-123", &["models:list", "models:write"]),
            ADDR,
        )
        .await
        .unwrap();
    assert_eq!(created.username, "alice");
    let info = id.user(created.id).await.unwrap();
    assert_eq!(info.username, "alice");
    assert_eq!(info.source, "local");
    assert!(info.enabled);
    assert_eq!(
        info.permissions,
        strings(&["models:list", "models:start", "models:stop"]),
        "aliases are stored as their canonical names"
    );
    let (_, principal) = env.sign_in("alice", "alice-pw-123").await;
    assert_eq!(
        principal.permissions,
        perms(&["models:list", "models:write"])
    );

    assert_err!(
        id.create_user(&root(), request("alice", "other-pw-123", &[]), ADDR)
            .await,
        IdentityError::Conflict(_)
    );
    for bad in ["", "with space", "-dash", "semi;colon", &"x".repeat(65)] {
        assert_err!(
            id.create_user(&root(), request(bad, "fine-pw-123", &[]), ADDR).await,
            IdentityError::BadRequest(m) if m.contains("username")
        );
    }
    assert_err!(
        id.create_user(&root(), request("bob", "short", &[]), ADDR).await,
        IdentityError::BadRequest(m) if m.contains("Password") && m.contains('8')
    );
    assert_err!(
        id.create_user(&root(), request("bob", "bob-pw-1234", &["models:fly"]), ADDR).await,
        IdentityError::BadRequest(m) if m.contains("models:fly")
    );
    assert_eq!(
        id.users().await.unwrap().len(),
        1,
        "nothing refused was created"
    );
    assert_err!(id.user(created.id + 100).await, IdentityError::NotFound(_));
}

async fn a_user_manager_grants_and_touches_only_what_it_may(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let admin = env.user("boss", "boss-pw-123", &["admin"]).await;
    let plain = env.user("plain", "plain-pw-123", &["models:list"]).await;
    env.user(
        "manager",
        "manager-pw-1",
        &["users:manage", "models:list", "models:read"],
    )
    .await;
    let (_, manager) = env.sign_in("manager", "manager-pw-1").await;

    assert_err!(
        id.create_user(&manager, request("x1", "x1-pw-12345", &["admin"]), ADDR).await,
        IdentityError::Forbidden(m) if m.contains("admin")
    );
    assert_err!(
        id.create_user(&manager, request("x2", "x2-pw-12345", &["models:read", "models:start"]), ADDR).await,
        IdentityError::Forbidden(m) if m.contains("models:start") && !m.contains("models:read")
    );
    id.create_user(
        &manager,
        request("x3", "x3-pw-12345", &["models:list"]),
        ADDR,
    )
    .await
    .expect("granting what it holds");
    let grant = UpdateUserRequest {
        permissions: Some(strings(&["models:stop"])),
        ..UpdateUserRequest::default()
    };
    assert_err!(
        id.update_user(&manager, plain, grant, ADDR).await,
        IdentityError::Forbidden(m) if m.contains("models:stop")
    );
    let grant = UpdateUserRequest {
        permissions: Some(strings(&["models:list", "models:read"])),
        ..UpdateUserRequest::default()
    };
    id.update_user(&manager, plain, grant, ADDR)
        .await
        .expect("within its own");

    let disable = UpdateUserRequest {
        enabled: Some(false),
        ..UpdateUserRequest::default()
    };
    assert_err!(
        id.update_user(&manager, admin, disable, ADDR).await,
        IdentityError::Forbidden(_)
    );
    assert_err!(
        id.delete_user(&manager, admin, ADDR).await,
        IdentityError::Forbidden(_)
    );
    let password = ChangePasswordRequest {
        new_password: "taken-over-1".into(),
        old_password: None,
    };
    assert_err!(
        id.change_password(&manager, admin, password, ADDR).await,
        IdentityError::Forbidden(_)
    );
    let boss = id.user(admin).await.unwrap();
    assert!(boss.enabled && boss.permissions == strings(&["admin"]));
    env.sign_in("boss", "boss-pw-123").await;

    // What it may: a non-admin's password, disabling and deleting a non-admin.
    let password = ChangePasswordRequest {
        new_password: "reset-pw-123".into(),
        old_password: None,
    };
    id.change_password(&manager, plain, password, ADDR)
        .await
        .unwrap();
    env.sign_in("plain", "reset-pw-123").await;
    id.delete_user(&manager, plain, ADDR).await.unwrap();
    assert_err!(id.user(plain).await, IdentityError::NotFound(_));
}

async fn the_last_enabled_admin_stays(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let a = env.user("admin-a", "admin-a-pw-1", &["admin"]).await;
    let disable = || UpdateUserRequest {
        enabled: Some(false),
        ..UpdateUserRequest::default()
    };
    let demote = || UpdateUserRequest {
        permissions: Some(strings(&["models:list"])),
        ..UpdateUserRequest::default()
    };
    let last = |r: Result<(), IdentityError>| {
        assert_err!(r, IdentityError::Forbidden(m) if m.contains("last"));
    };
    last(id.update_user(&root(), a, disable(), ADDR).await);
    last(id.update_user(&root(), a, demote(), ADDR).await);
    last(id.delete_user(&root(), a, ADDR).await);
    let (_, a_self) = env.sign_in("admin-a", "admin-a-pw-1").await;
    last(id.update_user(&a_self, a, disable(), ADDR).await);
    assert!(id.user(a).await.unwrap().enabled);

    let b = env.user("admin-b", "admin-b-pw-1", &["admin"]).await;
    id.update_user(&root(), a, disable(), ADDR)
        .await
        .expect("another admin exists");
    // Now b is the last enabled one (a disabled admin does not count).
    last(id.update_user(&root(), b, disable(), ADDR).await);
    last(id.update_user(&root(), b, demote(), ADDR).await);
    last(id.delete_user(&root(), b, ADDR).await);
    let enable = UpdateUserRequest {
        enabled: Some(true),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), a, enable, ADDR).await.unwrap();
    id.update_user(&root(), b, demote(), ADDR)
        .await
        .expect("a is an admin again");
    let promote = UpdateUserRequest {
        permissions: Some(strings(&["admin"])),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), b, promote, ADDR).await.unwrap();
    id.delete_user(&root(), b, ADDR).await.expect("a stays");
    last(id.delete_user(&root(), a, ADDR).await);
}

async fn config_users_are_listed_and_keep_their_names(url: String) {
    let clock = std::sync::Arc::new(ManualClock::new(T0));
    let config = config_service(clock.clone());
    let identity = crate::support::open(&url, Some(config), clock).await;
    assert!(
        identity.bootstrap().await.unwrap().is_none(),
        "a config file means no bootstrap"
    );
    let actor = Principal::config_user("cfgadmin", perms(&["admin"]), Credential::Token);
    let local = identity
        .create_user(
            &actor,
            request("local1", "local1-pw-1", &["models:read"]),
            ADDR,
        )
        .await
        .unwrap();
    let users = identity.users().await.unwrap();
    let names: Vec<_> = users
        .iter()
        .map(|u| (u.username.as_str(), u.source.as_str(), u.id))
        .collect();
    assert_eq!(
        names,
        vec![
            ("cfgadmin", SOURCE_CONFIG, None),
            ("cfguser", SOURCE_CONFIG, None),
            ("local1", "local", Some(local.id)),
        ]
    );
    assert_eq!(users[0].permissions, strings(&["admin"]));
    assert_eq!(users[1].permissions, strings(&["models:list"]));
    for name in ["cfgadmin", "cfguser"] {
        assert_err!(
            identity
                .create_user(&actor, request(name, "some-pw-123", &[]), ADDR)
                .await,
            IdentityError::Conflict(_)
        );
    }
    // The config admin counts as an admin: the only store admin can go.
    let admin = identity
        .create_user(
            &actor,
            request("local-admin", "local-admin-1", &["admin"]),
            ADDR,
        )
        .await
        .unwrap();
    identity
        .delete_user(&actor, admin.id, ADDR)
        .await
        .expect("cfgadmin stays an admin");
    // Config users log in through the identity store, with sessions.
    let (_, principal) = crate::support::sign_in(&identity, "cfguser", "cfg-user-pw-1").await;
    assert_eq!(principal.username, "cfguser");
    assert_eq!(principal.user_id, None);
    assert_eq!(principal.permissions, perms(&["models:list"]));
    assert!(principal.session.is_some());
    // And their config keys authenticate through it.
    let by_key = identity
        .authenticate(Some("Bearer sk-72tkvudyGLPMi"))
        .await
        .unwrap();
    assert_eq!(
        (by_key.username.as_str(), by_key.credential),
        ("cfgadmin", Credential::ApiKey)
    );
    assert_err!(
        identity.authenticate(Some("Bearer sk-000000000000X")).await,
        IdentityError::Auth(xi_auth::AuthError::InvalidCredentials)
    );
}

async fn changing_ones_own_password_needs_the_old_one(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let uid = env.user("carol", "carol-pw-123", &["models:list"]).await;
    let (_, carol) = env.sign_in("carol", "carol-pw-123").await;
    let change = |old: Option<&str>| ChangePasswordRequest {
        new_password: "carol-new-pw".into(),
        old_password: old.map(String::from),
    };
    assert_err!(
        id.change_password(&carol, uid, change(None), ADDR).await,
        IdentityError::BadRequest(m) if m.contains("old_password")
    );
    assert_err!(
        id.change_password(&carol, uid, change(Some("wrong-old-pw")), ADDR)
            .await,
        IdentityError::Unauthorized(_)
    );
    let short = ChangePasswordRequest {
        new_password: "short".into(),
        old_password: Some("carol-pw-123".into()),
    };
    assert_err!(
        id.change_password(&carol, uid, short, ADDR).await,
        IdentityError::BadRequest(_)
    );
    let other = env.user("dave", "dave-pw-1234", &[]).await;
    assert_err!(
        id.change_password(&carol, other, change(Some("dave-pw-1234")), ADDR)
            .await,
        IdentityError::Forbidden(_)
    );
    id.change_password(&carol, uid, change(Some("carol-pw-123")), ADDR)
        .await
        .unwrap();
    env.sign_in("carol", "carol-new-pw").await;
    env.sign_in("dave", "dave-pw-1234").await;
}
