//! SPEC section 3: login. Bad logins, the failed-login throttle, equal cost for unknown users and
//! config reload.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xi_api::Permission;
use xi_auth::{AuthError, AuthService, ManualClock, ThrottlePolicy};

use crate::{
    base_config, bearer, config, no_throttle, perms, service, service_with, ALICE_PW, BOB_KEY,
    BOB_PW, CAROL_PW, SECRET, T0,
};

fn per_user(limit: usize) -> ThrottlePolicy {
    ThrottlePolicy {
        per_user: limit,
        per_address: 100,
        window_secs: 60,
    }
}

fn per_address(limit: usize) -> ThrottlePolicy {
    ThrottlePolicy {
        per_user: 100,
        per_address: limit,
        window_secs: 60,
    }
}

fn throttled_for(result: Result<xi_auth::IssuedToken, AuthError>) -> u64 {
    match result {
        Err(AuthError::Throttled { retry_after_secs }) => retry_after_secs,
        other => panic!("expected Throttled, got {other:?}"),
    }
}

#[test]
fn wrong_password_and_unknown_user_are_the_same_bad_login() {
    let (auth, _clock) = service(&base_config());
    let cases: &[(&str, &str)] = &[
        ("bob", "wrong"),
        ("bob", ""),
        ("bob", "bob-Pw-XK27 "),
        ("bob", "BOB-PW-XK27"),
        ("bob", ALICE_PW),
        ("bob", BOB_KEY),
        ("Bob", BOB_PW),
        (" bob", BOB_PW),
        ("nobody", BOB_PW),
        ("nobody", ""),
        ("", ""),
        ("", BOB_PW),
        ("alice", BOB_PW),
    ];
    let mut messages = Vec::new();
    for (i, (user, password)) in cases.iter().enumerate() {
        let result = auth.login(user, password, &format!("10.1.0.{i}"));
        match result {
            Err(e @ AuthError::BadLogin) => messages.push(e.to_string()),
            other => panic!("{user:?}/{password:?}: expected BadLogin, got {other:?}"),
        }
    }
    // Same body for every case.
    assert!(
        messages
            .iter()
            .all(|m| m == "Incorrect username or password"),
        "{messages:?}"
    );
    // And the right password still works after all those failures (no throttle here).
    assert!(auth.login("bob", BOB_PW, "10.1.0.99").is_ok());
}

#[test]
fn per_user_throttle_blocks_even_the_right_password_until_the_window_passes() {
    let (auth, clock) = service_with(&base_config(), per_user(3));
    for attempt in 0..3 {
        let result = auth.login("bob", "wrong", "10.0.0.1");
        assert!(
            matches!(result, Err(AuthError::BadLogin)),
            "attempt {attempt}: {result:?}"
        );
    }
    // The 4th attempt, right password included, from the same or another address.
    for (user, password, address) in [
        ("bob", BOB_PW, "10.0.0.1"),
        ("bob", BOB_PW, "10.9.9.9"),
        ("bob", "wrong", "10.0.0.1"),
    ] {
        let retry = throttled_for(auth.login(user, password, address));
        assert!(retry > 0 && retry <= 60, "{user}/{address}: retry {retry}");
    }
    assert_eq!(auth.throttled("bob", "10.0.0.1"), Some(60));
    // Others are not affected: another user, from another address or from bob's.
    assert!(auth.login("carol", CAROL_PW, "10.0.0.2").is_ok());
    assert!(auth.login("alice", ALICE_PW, "10.0.0.1").is_ok());
    assert_eq!(auth.throttled("carol", "10.0.0.2"), None);

    // The wait counts down with the clock; throttled attempts do not extend it.
    clock.advance(20);
    assert_eq!(throttled_for(auth.login("bob", BOB_PW, "10.0.0.1")), 40);
    clock.advance(39);
    assert_eq!(throttled_for(auth.login("bob", BOB_PW, "10.0.0.1")), 1);
    clock.advance(1);
    let token = auth
        .login("bob", BOB_PW, "10.0.0.1")
        .expect("window passed");
    assert!(auth
        .authenticate(Some(&bearer(&token.access_token)))
        .is_ok());
}

#[test]
fn throttle_counts_failures_within_a_sliding_window() {
    let (auth, clock) = service_with(&base_config(), per_user(3));
    // Failures at T0, T0+10, T0+20.
    for _ in 0..3 {
        assert!(matches!(
            auth.login("bob", "wrong", "10.0.0.1"),
            Err(AuthError::BadLogin)
        ));
        clock.advance(10);
    }
    // Now T0+30: throttled until the first failure leaves the window at T0+60.
    assert_eq!(throttled_for(auth.login("bob", BOB_PW, "10.0.0.1")), 30);
    clock.advance(30);
    // T0+60: two failures left in the window, one more is allowed (and fails) ...
    assert!(matches!(
        auth.login("bob", "wrong", "10.0.0.1"),
        Err(AuthError::BadLogin)
    ));
    // ... and then bob waits until T0+70, when the T0+10 failure leaves.
    assert_eq!(throttled_for(auth.login("bob", BOB_PW, "10.0.0.1")), 10);
    clock.advance(10);
    assert!(auth.login("bob", BOB_PW, "10.0.0.1").is_ok());
}

#[test]
fn unknown_usernames_are_throttled_too() {
    let (auth, _clock) = service_with(&base_config(), per_user(2));
    for _ in 0..2 {
        assert!(matches!(
            auth.login("mallory", "x", "10.0.0.1"),
            Err(AuthError::BadLogin)
        ));
    }
    let retry = throttled_for(auth.login("mallory", "x", "10.0.0.1"));
    assert!(retry > 0 && retry <= 60);
    assert!(auth.login("bob", BOB_PW, "10.0.0.1").is_ok());
}

#[test]
fn per_address_throttle_spans_usernames() {
    let (auth, clock) = service_with(&base_config(), per_address(3));
    for user in ["bob", "nobody", "carol"] {
        assert!(matches!(
            auth.login(user, "wrong", "10.0.0.9"),
            Err(AuthError::BadLogin)
        ));
    }
    // Any username from that address, right password or not.
    for (user, password) in [("alice", ALICE_PW), ("bob", BOB_PW), ("someone", "x")] {
        let retry = throttled_for(auth.login(user, password, "10.0.0.9"));
        assert!(retry > 0 && retry <= 60, "{user}: {retry}");
    }
    // The same users from another address are fine.
    assert!(auth.login("alice", ALICE_PW, "10.0.0.8").is_ok());
    assert!(auth.login("bob", BOB_PW, "10.0.0.8").is_ok());
    clock.advance(60);
    assert!(auth.login("alice", ALICE_PW, "10.0.0.9").is_ok());
}

#[test]
fn a_success_clears_the_usernames_record_only() {
    // Per user: 2 failures, a success, 2 more failures: not throttled (the success reset it).
    let (auth, _clock) = service_with(&base_config(), per_user(3));
    for _ in 0..2 {
        assert!(matches!(
            auth.login("bob", "wrong", "10.0.0.1"),
            Err(AuthError::BadLogin)
        ));
    }
    assert!(auth.login("bob", BOB_PW, "10.0.0.1").is_ok());
    for _ in 0..2 {
        assert!(matches!(
            auth.login("bob", "wrong", "10.0.0.1"),
            Err(AuthError::BadLogin)
        ));
    }
    assert!(auth.login("bob", BOB_PW, "10.0.0.1").is_ok());
    // A success by bob does not clear carol's record.
    for _ in 0..3 {
        assert!(matches!(
            auth.login("carol", "wrong", "10.0.0.2"),
            Err(AuthError::BadLogin)
        ));
    }
    assert!(auth.login("bob", BOB_PW, "10.0.0.2").is_ok());
    throttled_for(auth.login("carol", CAROL_PW, "10.0.0.3"));

    // Per address: a success from the address does not clear the address's record.
    let (auth, _clock) = service_with(&base_config(), per_address(3));
    for _ in 0..2 {
        assert!(matches!(
            auth.login("bob", "wrong", "10.0.0.5"),
            Err(AuthError::BadLogin)
        ));
    }
    assert!(auth.login("alice", ALICE_PW, "10.0.0.5").is_ok());
    assert!(matches!(
        auth.login("bob", "wrong", "10.0.0.5"),
        Err(AuthError::BadLogin)
    ));
    throttled_for(auth.login("alice", ALICE_PW, "10.0.0.5"));
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn unknown_user_costs_about_what_a_wrong_password_costs() {
    let (auth, _clock) = service(&base_config());
    // Warm up both paths.
    let _ = auth.login("bob", "warm-up", "10.0.0.1");
    let _ = auth.login("nobody", "warm-up", "10.0.0.1");
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..15 {
        let start = Instant::now();
        let result = auth.login("bob", &format!("wrong-{i}"), "10.0.0.1");
        known.push(start.elapsed());
        assert!(matches!(result, Err(AuthError::BadLogin)));

        let start = Instant::now();
        let result = auth.login(&format!("nobody-{i}"), &format!("wrong-{i}"), "10.0.0.1");
        unknown.push(start.elapsed());
        assert!(matches!(result, Err(AuthError::BadLogin)));
    }
    let (known, unknown) = (median(known), median(unknown));
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.5..=2.0).contains(&ratio),
        "unknown user {unknown:?} vs wrong password {known:?}: ratio {ratio:.2}"
    );
}

fn write_config(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).expect("write config");
}

fn bob_with(permissions: &[&str]) -> Value {
    json!({"username": "bob", "password": BOB_PW, "permissions": permissions, "api_keys": [BOB_KEY]})
}

fn alice() -> Value {
    json!({"username": "alice", "password": ALICE_PW, "permissions": ["admin"]})
}

#[test]
fn reload_applies_at_once_and_a_bad_reload_keeps_the_old_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.json");
    write_config(
        &path,
        &config(
            "HS256",
            SECRET,
            30,
            json!([alice(), bob_with(&["models:list", "models:read"])]),
        ),
    );
    let clock = Arc::new(ManualClock::new(T0));
    let auth = AuthService::from_file(&path, no_throttle(), clock.clone()).expect("loads");
    let bob_token = bearer(&auth.login("bob", BOB_PW, "10.0.0.1").unwrap().access_token);
    let alice_token = bearer(
        &auth
            .login("alice", ALICE_PW, "10.0.0.1")
            .unwrap()
            .access_token,
    );
    let bob_key = bearer(BOB_KEY);
    let list_read = perms(&[Permission::ModelsList, Permission::ModelsRead]);
    let list = perms(&[Permission::ModelsList]);
    assert_eq!(
        auth.authenticate(Some(&bob_token)).unwrap().permissions,
        list_read
    );
    assert_eq!(
        auth.authenticate(Some(&bob_key)).unwrap().permissions,
        list_read
    );

    // 1. bob loses models:read: his old token and his key lose it at once.
    write_config(
        &path,
        &config(
            "HS256",
            SECRET,
            30,
            json!([alice(), bob_with(&["models:list"])]),
        ),
    );
    let warnings = auth.reload().expect("reload");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        auth.authenticate(Some(&bob_token)).unwrap().permissions,
        list
    );
    assert_eq!(auth.authenticate(Some(&bob_key)).unwrap().permissions, list);

    // 2. Giving it back does not widen an old token beyond its scopes ...
    write_config(
        &path,
        &config(
            "HS256",
            SECRET,
            30,
            json!([
                alice(),
                bob_with(&["models:list", "models:read", "models:start"])
            ]),
        ),
    );
    auth.reload().expect("reload");
    assert_eq!(
        auth.authenticate(Some(&bob_token)).unwrap().permissions,
        list_read
    );

    // 3. bob is removed: his token and key are refused, alice is untouched.
    write_config(&path, &config("HS256", SECRET, 30, json!([alice()])));
    auth.reload().expect("reload");
    assert!(matches!(
        auth.authenticate(Some(&bob_token)),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        auth.authenticate(Some(&bob_key)),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        auth.login("bob", BOB_PW, "10.0.0.1"),
        Err(AuthError::BadLogin)
    ));
    assert_eq!(
        auth.authenticate(Some(&alice_token)).unwrap().username,
        "alice"
    );

    // 4. Bad reloads return the error and keep the previous config in force.
    let bad_files: &[(&str, String, &str)] = &[
        ("invalid JSON", "{\"auth_config\": ".to_string(), "(file)"),
        (
            "unknown permission",
            config(
                "HS256",
                SECRET,
                30,
                json!([{"username": "alice", "password": "x", "permissions": ["root"]}]),
            )
            .to_string(),
            r#"user_config[0] (user "alice").permissions[0]"#,
        ),
        (
            "short secret",
            config("HS256", "short", 30, json!([alice()])).to_string(),
            "auth_config.secret_key",
        ),
    ];
    for (name, text, field) in bad_files {
        std::fs::write(&path, text).unwrap();
        match auth.reload() {
            Err(AuthError::Config { field: got, .. }) => assert_eq!(got, *field, "{name}"),
            other => panic!("{name}: expected a Config error, got {other:?}"),
        }
        assert_eq!(
            auth.authenticate(Some(&alice_token)).unwrap().permissions,
            xi_api::PermissionSet::ALL,
            "{name}"
        );
        let fresh = auth
            .login("alice", ALICE_PW, "10.0.0.1")
            .expect("alice still logs in");
        assert!(
            auth.authenticate(Some(&bearer(&fresh.access_token)))
                .is_ok(),
            "{name}"
        );
        assert!(
            matches!(
                auth.login("bob", BOB_PW, "10.0.0.1"),
                Err(AuthError::BadLogin)
            ),
            "{name}"
        );
    }

    // 5. The file disappears: same.
    std::fs::remove_file(&path).unwrap();
    match auth.reload() {
        Err(AuthError::Config { field, .. }) => assert_eq!(field, "(file)"),
        other => panic!("missing file: expected a Config error, got {other:?}"),
    }
    assert!(auth.authenticate(Some(&alice_token)).is_ok());

    // 6. A new secret invalidates every token issued before.
    let other_secret: String = SECRET.chars().rev().collect();
    write_config(&path, &config("HS256", &other_secret, 30, json!([alice()])));
    auth.reload().expect("reload");
    assert!(matches!(
        auth.authenticate(Some(&alice_token)),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(auth.login("alice", ALICE_PW, "10.0.0.1").is_ok());
}

#[test]
fn reload_returns_the_new_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.json");
    write_config(&path, &base_config());
    let auth = AuthService::from_file(&path, no_throttle(), Arc::new(ManualClock::new(T0)))
        .expect("loads");
    assert!(auth.warnings().is_empty(), "{:?}", auth.warnings());
    let mut with_unknown = base_config();
    with_unknown["auth_config"]["issuer"] = json!("me");
    write_config(&path, &with_unknown);
    let warnings = auth.reload().expect("reload");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("issuer"));
    assert_eq!(auth.warnings(), warnings);
}

#[test]
fn reload_without_a_file_is_an_error() {
    let (auth, _clock) = service(&base_config());
    assert!(matches!(auth.reload(), Err(AuthError::Internal(_))));
    assert!(auth.login("bob", BOB_PW, "10.0.0.1").is_ok());
}

#[test]
fn from_file_refuses_a_bad_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.json");
    std::fs::write(&path, "not json").unwrap();
    let result = AuthService::from_file(&path, no_throttle(), Arc::new(ManualClock::new(T0)));
    match result {
        Err(AuthError::Config { field, .. }) => assert_eq!(field, "(file)"),
        Err(other) => panic!("expected a Config error, got {other:?}"),
        Ok(_) => panic!("a bad file was accepted"),
    }
}
