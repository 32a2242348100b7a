//! Config files beyond the rule table: what a good file parses into, defaults, aliases,
//! password hashes in the file, loading from disk and error display.

use serde_json::{json, Value};
use xi_api::{Permission, PermissionSet};
use xi_auth::password::hash_for_config;
use xi_auth::{AuthError, AuthSettings, JwtAlgorithm};

use crate::config_rules::{docs, set, DOCS_EXAMPLE};
use crate::{assert_no_leak, config_error, parse, sensitive_strings, service, DOCS_SECRET};

#[test]
fn docs_example_parses_into_the_expected_settings() {
    let settings = AuthSettings::parse("auth.json", DOCS_EXAMPLE).expect("docs example parses");
    assert_eq!(settings.algorithm, JwtAlgorithm::HS256);
    assert_eq!(settings.secret_key.expose(), DOCS_SECRET);
    assert_eq!(settings.token_expire_in_minutes, 30);
    let users: Vec<(&str, PermissionSet, usize)> = settings
        .users
        .iter()
        .map(|u| (u.username.as_str(), u.permissions, u.api_keys.len()))
        .collect();
    assert_eq!(
        users,
        vec![
            ("user1", PermissionSet::ALL, 1),
            (
                "user2",
                crate::perms(&[Permission::ModelsList, Permission::ModelsRead]),
                2
            ),
        ]
    );
    assert_eq!(settings.users[1].api_keys[1].expose(), "sk-Aq3vZ9mB0cD4e");
    // Exactly one warning: the well-known example secret.
    assert_eq!(settings.warnings.len(), 1, "{:?}", settings.warnings);
    assert!(settings.warnings[0].contains("example key"));
    assert!(settings.warnings[0].contains("openssl rand -hex 32"));
}

#[test]
fn algorithm_defaults_to_hs256_and_each_hs_size_is_kept() {
    let cases: &[(Option<&str>, JwtAlgorithm)] = &[
        (None, JwtAlgorithm::HS256),
        (Some("HS256"), JwtAlgorithm::HS256),
        (Some("HS384"), JwtAlgorithm::HS384),
        (Some("HS512"), JwtAlgorithm::HS512),
    ];
    for (name, expected) in cases {
        let mut value = crate::base_config();
        match name {
            Some(n) => value["auth_config"]["algorithm"] = json!(n),
            None => {
                value["auth_config"]
                    .as_object_mut()
                    .unwrap()
                    .remove("algorithm");
            }
        }
        assert_eq!(parse(&value).algorithm, *expected, "algorithm {name:?}");
    }
}

#[test]
fn expiry_accepts_numbers_and_numeric_strings() {
    let cases: &[(Value, u64)] = &[
        (json!(30), 30),
        (json!("30"), 30),
        (json!(1), 1),
        (json!("1440"), 1440),
    ];
    for (value, expected) in cases {
        let text = set("/auth_config/token_expire_in_minutes", value.clone());
        let settings = AuthSettings::parse("auth.json", &text).expect("parses");
        assert_eq!(settings.token_expire_in_minutes, *expected, "value {value}");
    }
}

#[test]
fn permission_aliases_expand() {
    let cases: &[(&[&str], &[Permission])] = &[
        (
            &["models:write"],
            &[Permission::ModelsStart, Permission::ModelsStop],
        ),
        (&["models:add"], &[Permission::ModelsRegister]),
        (
            &["models:write", "models:add", "models:list"],
            &[
                Permission::ModelsStart,
                Permission::ModelsStop,
                Permission::ModelsRegister,
                Permission::ModelsList,
            ],
        ),
        (
            &["cache:list", "cache:delete"],
            &[Permission::CacheList, Permission::CacheDelete],
        ),
        (&["models:list", "admin"], &Permission::ALL),
    ];
    for (names, expected) in cases {
        let text = set("/user_config/1/permissions", json!(names));
        let settings = AuthSettings::parse("auth.json", &text).expect("parses");
        assert_eq!(
            settings.users[1].permissions,
            crate::perms(expected),
            "{names:?}"
        );
    }
}

#[test]
fn hashed_passwords_are_accepted_and_verify_at_login() {
    let bcrypt_hash = bcrypt::hash("pw-bcrypt", 4).expect("bcrypt hash");
    let argon2_hash = hash_for_config("pw-argon2").expect("argon2id hash");
    assert!(argon2_hash.starts_with("$argon2id$"), "{argon2_hash}");
    let value = crate::config(
        "HS256",
        crate::SECRET,
        30,
        json!([
            {"username": "b", "password": bcrypt_hash, "permissions": ["models:list"]},
            {"username": "a", "password": argon2_hash, "permissions": ["models:list"]},
            {"username": "p", "password": "pw-plain", "permissions": ["models:list"]},
        ]),
    );
    let (auth, _clock) = service(&value);
    let cases: &[(&str, &str, bool)] = &[
        ("b", "pw-bcrypt", true),
        ("b", "pw-bcrypt ", false),
        ("b", "", false),
        ("a", "pw-argon2", true),
        ("a", "pw-argon", false),
        // The hash string itself is not a password.
        ("a", argon2_hash.as_str(), false),
        ("b", bcrypt_hash.as_str(), false),
        ("p", "pw-plain", true),
        ("p", "PW-PLAIN", false),
    ];
    for (user, password, good) in cases {
        let result = auth.login(user, password, "10.0.0.1");
        match (good, result) {
            (true, Ok(token)) => {
                let principal = auth
                    .authenticate(Some(&crate::bearer(&token.access_token)))
                    .expect("fresh token authenticates");
                assert_eq!(principal.username, *user);
            }
            (false, Err(AuthError::BadLogin)) => {}
            (good, other) => panic!("{user}/{password:?}: expected good={good}, got {other:?}"),
        }
    }
}

#[test]
fn plain_passwords_are_hashed_at_load() {
    let settings = parse(&crate::base_config());
    for (user, plain) in
        settings
            .users
            .iter()
            .zip([crate::ALICE_PW, crate::BOB_PW, crate::CAROL_PW])
    {
        let stored = user.password.as_str();
        assert!(
            stored.starts_with("$argon2id$"),
            "{}: {stored}",
            user.username
        );
        assert!(
            !stored.contains(plain),
            "{}: plain password kept",
            user.username
        );
        assert!(user.password.verify(plain));
    }
}

#[test]
fn load_reads_files_and_names_file_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.json");
    std::fs::write(&good, DOCS_EXAMPLE).unwrap();
    let settings = AuthSettings::load(&good).expect("good file loads");
    assert_eq!(settings.users.len(), 2);

    let not_json = dir.path().join("not-json.json");
    std::fs::write(&not_json, "username = secret1\n").unwrap();
    let missing = dir.path().join("missing.json");
    let a_directory = dir.path().to_path_buf();
    let binary = dir.path().join("binary.json");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x7b]).unwrap();
    let top_level_list = dir.path().join("list.json");
    std::fs::write(&top_level_list, format!("[{DOCS_EXAMPLE}]")).unwrap();

    let cases = [
        ("missing file", missing, "(file)", "cannot read"),
        ("a directory", a_directory, "(file)", "cannot read"),
        ("not JSON", not_json, "(file)", "not valid JSON"),
        ("not UTF-8", binary, "(file)", ""),
        (
            "top level is a list",
            top_level_list,
            "(top level)",
            "JSON object",
        ),
    ];
    for (name, path, field, message) in cases {
        let (got_field, got_message, e) = config_error(AuthSettings::load(&path));
        assert_eq!(got_field, field, "{name}: {got_message}");
        assert!(got_message.contains(message), "{name}: {got_message}");
        let AuthError::Config { path: label, .. } = &e else {
            unreachable!("config_error only returns Config")
        };
        assert_eq!(label, &path.display().to_string(), "{name}");
        assert!(
            e.to_string().contains(&path.display().to_string()),
            "{name}: {e}"
        );
        assert_no_leak(name, &e.to_string(), &sensitive_strings(&docs()));
    }
}

#[test]
fn config_error_display_is_one_clear_line() {
    let (_, _, e) = config_error(AuthSettings::parse(
        "/etc/xinference/auth.json",
        &set("/user_config/1/permissions/0", json!("models:fly")),
    ));
    let display = e.to_string();
    assert!(
        display.starts_with(
            r#"invalid auth config /etc/xinference/auth.json: user_config[1] (user "user2").permissions[0]: unknown permission "models:fly""#
        ),
        "{display}"
    );
    assert!(!display.contains('\n'), "{display}");
    // The message lists what is accepted.
    for known in PermissionSet::known_names() {
        assert!(display.contains(known), "{display} lacks {known}");
    }
}

#[test]
fn docs_secret_warning_survives_into_the_service() {
    let (auth, _clock) = service(&serde_json::from_str(DOCS_EXAMPLE).unwrap());
    let warnings = auth.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("example key"));
    assert!(!warnings[0].contains(DOCS_SECRET));
    // And it still works: the warning is not an error.
    let token = auth.login("user1", "secret1", "10.0.0.1").expect("login");
    assert!(auth
        .authenticate(Some(&crate::bearer(&token.access_token)))
        .is_ok());
}
