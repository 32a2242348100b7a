//! The `Authorization` header as the config-file auth reads it: bearer parsing, the api-key
//! path (`sk-...` keys looked up in constant time) and JWT verification. Only bob's key and
//! tokens signed with the server's key may authenticate.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use xi_auth::{AuthService, AuthSettings, ManualClock, ThrottlePolicy};

const KEY: &str = "sk-AbCdEf1234567";

static SERVICE: LazyLock<AuthService> = LazyLock::new(|| {
    let config = serde_json::json!({
        "auth_config": {
            "algorithm": "HS256",
            "secret_key": "7c1e4a9f0b3d6e8a2c5f7b9d1e3a6c8f0a2d4e6b8c1f3a5d7e9b0c2e4f6a8d1b",
            "token_expire_in_minutes": 30
        },
        "user_config": [
            {"username": "bob", "password": "bob-Pw-XK27",
             "permissions": ["models:list"], "api_keys": [KEY]}
        ]
    });
    let settings = AuthSettings::parse("fuzz.json", &config.to_string()).expect("config");
    let policy = ThrottlePolicy {
        per_user: 10,
        per_address: 10,
        window_secs: 60,
    };
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    AuthService::from_settings(settings, policy, clock).expect("service")
});

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(principal) = SERVICE.authenticate(Some(header)) {
        let token = xi_auth::service::bearer_token(Some(header));
        assert_eq!(token, Some(KEY), "{header:?} authenticated as {principal:?}");
    }
});
