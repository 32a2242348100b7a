//! Secrets never get printed: not by `Debug` of parsed settings, principals or issued tokens, not
//! by config errors (`Display` or `Debug`), not by warnings.

use serde_json::{json, Value};
use xi_auth::password::hash_for_config;
use xi_auth::{AuthError, AuthSettings, Secret};

use crate::{
    assert_no_leak, base_config, bearer, config, parse, sensitive_strings, service, users,
    ALICE_PW, BOB_KEY, BOB_PW, CAROL_KEY, CAROL_PW, DOCS_SECRET, SECRET,
};

/// Every secret of [`base_config`], spelled out (not derived), so a bug in the helper cannot hide
/// a leak.
fn known_secrets() -> Vec<String> {
    [SECRET, ALICE_PW, BOB_PW, CAROL_PW, BOB_KEY, CAROL_KEY]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn sensitive_strings_finds_every_secret_of_the_base_config() {
    let mut found = sensitive_strings(&base_config());
    let mut expected = known_secrets();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn settings_debug_hides_secrets_and_hashes() {
    let bcrypt_hash = bcrypt::hash("pw-bcrypt", 4).expect("bcrypt");
    let argon2_hash = hash_for_config("pw-argon2").expect("argon2id");
    let mut users = users();
    users.as_array_mut().unwrap().extend([
        json!({"username": "dave", "password": bcrypt_hash, "permissions": []}),
        json!({"username": "erin", "password": argon2_hash, "permissions": ["models:list"]}),
    ]);
    let value = config("HS512", SECRET, 30, users);
    let settings = parse(&value);
    let mut secrets = known_secrets();
    secrets.extend(["pw-bcrypt", "pw-argon2"].map(String::from));
    // Hash strings are not printed either, nor their salts/digests.
    secrets.push(bcrypt_hash.clone());
    secrets.push(argon2_hash.clone());
    secrets.push(bcrypt_hash[29..].to_string());
    secrets.push(argon2_hash.rsplit('$').next().unwrap().to_string());
    for hash in settings
        .users
        .iter()
        .map(|u| u.password.as_str().to_string())
    {
        secrets.push(hash.rsplit('$').next().unwrap().to_string());
    }

    for (name, text) in [
        ("settings {:?}", format!("{settings:?}")),
        ("settings {:#?}", format!("{settings:#?}")),
        ("users {:?}", format!("{:?}", settings.users)),
        (
            "secret_key {:?} / {}",
            format!("{:?} {}", settings.secret_key, settings.secret_key),
        ),
        ("api_keys {:?}", format!("{:?}", settings.users[1].api_keys)),
        ("password {:?}", format!("{:?}", settings.users[0].password)),
    ] {
        assert_no_leak(name, &text, &secrets);
    }
    // The Debug output still says what it is.
    let debug = format!("{settings:?}");
    for visible in [
        "alice",
        "bob",
        "HS512",
        "***",
        "Argon2id(***)",
        "Bcrypt(***)",
    ] {
        assert!(debug.contains(visible), "{visible} missing from {debug}");
    }
}

#[test]
fn principal_and_issued_token_debug_hide_secrets() {
    let (auth, _clock) = service(&base_config());
    let issued = auth.login("bob", BOB_PW, "10.0.0.1").expect("login");
    let by_token = auth
        .authenticate(Some(&bearer(&issued.access_token)))
        .expect("token");
    let by_key = auth.authenticate(Some(&bearer(BOB_KEY))).expect("key");
    for (name, text) in [
        ("IssuedToken", format!("{issued:?}")),
        ("Principal by token", format!("{by_token:?}")),
        ("Principal by api key", format!("{by_key:?} {by_key:#?}")),
    ] {
        assert_no_leak(name, &text, &known_secrets());
    }
    // Principals do not carry the token either.
    assert_no_leak(
        "Principal by token",
        &format!("{by_token:?}"),
        std::slice::from_ref(&issued.access_token),
    );
}

#[test]
fn login_and_authenticate_errors_hide_what_was_sent() {
    let (auth, _clock) = service(&base_config());
    let token = auth.login("bob", BOB_PW, "10.0.0.1").unwrap().access_token;
    let errors: Vec<(&str, AuthError, Vec<String>)> = vec![
        (
            "bad login",
            auth.login("bob", "guess-Pw-123", "10.0.0.1").unwrap_err(),
            vec!["guess-Pw-123".to_string()],
        ),
        (
            "bad token",
            auth.authenticate(Some(&bearer(&format!("{token}x"))))
                .unwrap_err(),
            vec![token.clone()],
        ),
        (
            "unknown key",
            auth.authenticate(Some(&bearer("sk-Zz0000000000z")))
                .unwrap_err(),
            vec!["sk-Zz0000000000z".to_string()],
        ),
        (
            "not a bearer",
            auth.authenticate(Some("Basic c2VjcmV0LWJhc2lj"))
                .unwrap_err(),
            vec!["c2VjcmV0LWJhc2lj".to_string()],
        ),
    ];
    for (name, error, sent) in errors {
        let mut secrets = known_secrets();
        secrets.extend(sent);
        assert_no_leak(name, &format!("{error} {error:?}"), &secrets);
    }
}

/// Configs whose error sits right next to a secret.
fn leaky_configs() -> Vec<(&'static str, Value)> {
    let with_user = |user: Value| config("HS256", SECRET, 30, json!([user]));
    vec![
        (
            "short secret",
            config("HS256", "hunter2-short-Secret", 30, users()),
        ),
        (
            "secret too short for HS512",
            config("HS512", &SECRET[..63], 30, users()),
        ),
        (
            "bad algorithm with a real secret",
            config("RS256", SECRET, 30, users()),
        ),
        (
            "api key of the wrong shape",
            with_user(
                json!({"username": "u", "password": "pw-Shape-1", "permissions": [],
                             "api_keys": ["sk-Secret!23456"]}),
            ),
        ),
        (
            "api key too long",
            with_user(
                json!({"username": "u", "password": "pw-Long-2", "permissions": [],
                             "api_keys": ["sk-SecretKey1234567890"]}),
            ),
        ),
        (
            "duplicate api key",
            with_user(
                json!({"username": "u", "password": "pw-Dup-3", "permissions": [],
                             "api_keys": ["sk-DupDupDup1234", "sk-DupDupDup1234"]}),
            ),
        ),
        (
            "malformed argon2id",
            with_user(
                json!({"username": "u", "password": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$!!notb64!!",
                             "permissions": []}),
            ),
        ),
        (
            "argon2id without a hash",
            with_user(
                json!({"username": "u", "password": "$argon2id$v=19$m=19456,t=2,p=1",
                             "permissions": []}),
            ),
        ),
        (
            "short bcrypt",
            with_user(
                json!({"username": "u", "password": "$2b$12$shortButSecretish", "permissions": []}),
            ),
        ),
        (
            "bad permission after a password",
            with_user(json!({"username": "u", "password": "pw-Perm-4", "permissions": ["root"]})),
        ),
        (
            "missing permissions after a password",
            with_user(json!({"username": "u", "password": "pw-Perm-5"})),
        ),
        (
            "duplicate user",
            config(
                "HS256",
                SECRET,
                30,
                json!([
                    {"username": "u", "password": "pw-First-6", "permissions": []},
                    {"username": "u", "password": "pw-Second-7", "permissions": []}
                ]),
            ),
        ),
        (
            "bad expiry",
            json!({"auth_config": {"secret_key": SECRET, "token_expire_in_minutes": "soon"},
                   "user_config": users()}),
        ),
    ]
}

#[test]
fn config_errors_never_echo_secrets() {
    for (name, value) in leaky_configs() {
        let secrets = sensitive_strings(&value);
        assert!(!secrets.is_empty(), "{name}");
        match AuthSettings::parse("auth.json", &value.to_string()) {
            Err(e @ AuthError::Config { .. }) => {
                assert_no_leak(&format!("{name}: Display"), &e.to_string(), &secrets);
                assert_no_leak(&format!("{name}: Debug"), &format!("{e:?}"), &secrets);
            }
            other => panic!("{name}: expected a Config error, got {other:?}"),
        }
    }
}

#[test]
fn json_syntax_errors_never_echo_secrets() {
    // Broken right after (or inside) a secret value.
    let texts = [
        format!(r#"{{"auth_config": {{"secret_key": "{SECRET}""#),
        format!(r#"{{"auth_config": {{"secret_key": "{SECRET}" "algorithm": "HS256"}}}}"#),
        format!(r#"{{"auth_config": {{"secret_key": "{SECRET}\q"}}}}"#),
        format!(r#"{{"user_config": [{{"password": "{BOB_PW}", }}]}}"#),
        format!(r#"{{"user_config": [{{"api_keys": ["{BOB_KEY}" "{CAROL_KEY}"]}}]}}"#),
        format!("{{\"user_config\": [{{\"password\": \"{ALICE_PW}\u{1}\"}}]}}"),
        format!(r#"{{"user_config": [{{"password": {BOB_PW}}}]}}"#),
    ];
    for text in texts {
        match AuthSettings::parse("auth.json", &text) {
            Err(e @ AuthError::Config { .. }) => {
                assert_no_leak(&text, &format!("{e} {e:?}"), &known_secrets());
            }
            other => panic!("{text}: expected a Config error, got {other:?}"),
        }
    }
}

#[test]
fn warnings_never_echo_secrets() {
    let mut value = base_config();
    value["auth_config"]["secret_key"] = json!(DOCS_SECRET);
    // Unknown keys whose *values* are secrets.
    value["auth_config"]["old_secret_key"] = json!("an-Old-Secret-0987654321");
    value["user_config"][1]["passwd"] = json!("bob-Old-Pw-111");
    value["user_config"][1]["api_key"] = json!("sk-OldOldOld1234");
    let settings = parse(&value);
    let mut secrets = known_secrets();
    secrets.retain(|s| s != SECRET);
    secrets.extend(
        [
            DOCS_SECRET,
            "an-Old-Secret-0987654321",
            "bob-Old-Pw-111",
            "sk-OldOldOld1234",
        ]
        .map(String::from),
    );
    assert_eq!(settings.warnings.len(), 4, "{:?}", settings.warnings);
    for warning in &settings.warnings {
        assert_no_leak("warning", warning, &secrets);
    }
}

#[test]
fn secret_type_never_formats_its_value() {
    let cases = ["", "x", SECRET, BOB_KEY, "multi\nline"];
    for value in cases {
        let secret = Secret::new(value);
        assert_eq!(
            format!("{secret:?}|{secret}|{secret:#?}|{secret:>10}"),
            "***|***|***|***"
        );
        assert_eq!(secret.expose(), value);
    }
}
