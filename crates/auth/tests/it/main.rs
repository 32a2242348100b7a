//! Integration tests of `xi-auth` against SPEC sections 2 and 3: the config file rules, JWT issue
//! and verification, login (throttle, equal cost, reload) and that secrets never get printed.
//!
//! Shared fixtures live here; each module holds data-driven tables.

mod config_files;
mod config_rules;
mod jwt;
mod login;
mod secrets;

use std::sync::Arc;

use serde_json::{json, Value};
use xi_api::{Permission, PermissionSet};
use xi_auth::{AuthError, AuthService, AuthSettings, ManualClock, ThrottlePolicy};

/// The start of every test's manual clock.
pub const T0: u64 = 1_700_000_000;

/// A 64-byte secret (valid for HS256, HS384 and HS512) that is not the docs' example.
pub const SECRET: &str = "7c1e4a9f0b3d6e8a2c5f7b9d1e3a6c8f0a2d4e6b8c1f3a5d7e9b0c2e4f6a8d1b";

/// The example secret of the upstream documentation (and of SPEC's seed page).
pub const DOCS_SECRET: &str = "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7";

pub const ALICE_PW: &str = "alice-Pw-ZQ81";
pub const BOB_PW: &str = "bob-Pw-XK27";
pub const CAROL_PW: &str = "carol-Pw-MN55";
pub const BOB_KEY: &str = "sk-AbCdEf1234567";
pub const CAROL_KEY: &str = "sk-ZyXwVu9876543";

/// alice: admin; bob: models:list + models:read, one api key; carol: models:list, one api key.
pub fn users() -> Value {
    json!([
        {"username": "alice", "password": ALICE_PW, "permissions": ["admin"]},
        {"username": "bob", "password": BOB_PW, "permissions": ["models:list", "models:read"],
         "api_keys": [BOB_KEY]},
        {"username": "carol", "password": CAROL_PW, "permissions": ["models:list"],
         "api_keys": [CAROL_KEY]}
    ])
}

pub fn config(algorithm: &str, secret: &str, minutes: u64, users: Value) -> Value {
    json!({
        "auth_config": {
            "algorithm": algorithm,
            "secret_key": secret,
            "token_expire_in_minutes": minutes
        },
        "user_config": users
    })
}

/// HS256, [`SECRET`], 30 minutes, [`users`].
pub fn base_config() -> Value {
    config("HS256", SECRET, 30, users())
}

pub fn parse(config: &Value) -> AuthSettings {
    AuthSettings::parse("test.json", &config.to_string())
        .unwrap_or_else(|e| panic!("config should parse: {e}"))
}

/// A policy that never throttles in tests that are not about throttling.
pub fn no_throttle() -> ThrottlePolicy {
    ThrottlePolicy {
        per_user: 10_000,
        per_address: 10_000,
        window_secs: 60,
    }
}

pub fn service_with(config: &Value, policy: ThrottlePolicy) -> (AuthService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let service = AuthService::from_settings(parse(config), policy, clock.clone())
        .unwrap_or_else(|e| panic!("service should build: {e}"));
    (service, clock)
}

pub fn service(config: &Value) -> (AuthService, Arc<ManualClock>) {
    service_with(config, no_throttle())
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn perms(list: &[Permission]) -> PermissionSet {
    list.iter().copied().collect()
}

/// `(field, message, error)` of a config error; panics on anything else.
pub fn config_error(result: Result<AuthSettings, AuthError>) -> (String, String, AuthError) {
    match result {
        Err(err) => match &err {
            AuthError::Config { field, message, .. } => (field.clone(), message.clone(), err),
            other => panic!("expected AuthError::Config, got {other:?}"),
        },
        Ok(settings) => panic!("expected AuthError::Config, the config parsed: {settings:?}"),
    }
}

/// base64url without padding, as JWT segments use.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Every secret-bearing string of a config JSON: the secret key, each password, each api key.
pub fn sensitive_strings(config: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str) {
            if !s.is_empty() {
                out.push(s.to_string());
            }
        }
    };
    push(config.pointer("/auth_config/secret_key"));
    if let Some(users) = config.get("user_config").and_then(Value::as_array) {
        for user in users {
            push(user.get("password"));
            if let Some(keys) = user.get("api_keys").and_then(Value::as_array) {
                for key in keys {
                    push(Some(key));
                }
            }
        }
    }
    out
}

/// Fails when `text` contains any of `secrets`.
pub fn assert_no_leak(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} leaks the secret {secret:?}: {text}"
        );
    }
}

#[test]
fn b64url_matches_known_vectors() {
    let cases: &[(&[u8], &str)] = &[
        (b"", ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"\xfb\xff", "-_8"),
        (br#"{"alg":"none"}"#, "eyJhbGciOiJub25lIn0"),
    ];
    for (input, expected) in cases {
        assert_eq!(b64url(input), *expected, "input {input:?}");
    }
}
