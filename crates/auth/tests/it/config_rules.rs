//! SPEC section 2: every rule of the `--auth-config` file, as one table, plus loading from disk
//! and password hashes in the file.

use serde_json::{json, Value};
use xi_auth::password::hash_for_config;
use xi_auth::{AuthError, AuthSettings};

use crate::{assert_no_leak, sensitive_strings, DOCS_SECRET};

/// The example of `seeds/auth_system.rst`, verbatim, plus `api_keys` for both users.
pub(crate) const DOCS_EXAMPLE: &str = r#"{
    "auth_config": {
        "algorithm": "HS256",
        "secret_key": "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
        "token_expire_in_minutes": 30
    },
    "user_config": [
        {
            "username": "user1",
            "password": "secret1",
            "permissions": [
                "admin"
            ],
            "api_keys": ["sk-72tkvudyGLPMi"]
        },
        {
            "username": "user2",
            "password": "secret2",
            "permissions": [
                "models:list",
                "models:read"
            ],
            "api_keys": ["sk-ZOTLIY4gt9w11", "sk-Aq3vZ9mB0cD4e"]
        }
    ]
}"#;

const USER1: &str = r#"user_config[0] (user "user1")"#;
const USER2: &str = r#"user_config[1] (user "user2")"#;

pub(crate) fn docs() -> Value {
    serde_json::from_str(DOCS_EXAMPLE).expect("the docs example is JSON")
}

/// The docs example after `edit`, as text.
fn edit(edit: impl FnOnce(&mut Value)) -> String {
    let mut value = docs();
    edit(&mut value);
    value.to_string()
}

pub(crate) fn set(pointer: &str, new: Value) -> String {
    edit(|v| {
        *v.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer}")) = new
    })
}

pub(crate) fn remove(pointer: &str) -> String {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer with a parent");
    edit(|v| {
        let parent = if parent.is_empty() {
            v
        } else {
            v.pointer_mut(parent).expect("parent exists")
        };
        match parent {
            Value::Object(map) => {
                map.remove(key).unwrap_or_else(|| panic!("no {pointer}"));
            }
            other => panic!("{pointer}: parent is not an object: {other}"),
        }
    })
}

fn auth_with(algorithm: &str, secret: &str) -> String {
    edit(|v| {
        v["auth_config"]["algorithm"] = json!(algorithm);
        v["auth_config"]["secret_key"] = json!(secret);
    })
}

enum Expect {
    /// Parses; every substring must appear in some warning.
    Ok { warnings: Vec<&'static str> },
    /// Refused with exactly this field, and a message containing this.
    Err {
        field: String,
        message: &'static str,
    },
}

fn ok() -> Expect {
    Expect::Ok {
        warnings: Vec::new(),
    }
}

fn warns(warnings: &[&'static str]) -> Expect {
    Expect::Ok {
        warnings: warnings.to_vec(),
    }
}

fn err(field: &str, message: &'static str) -> Expect {
    Expect::Err {
        field: field.to_string(),
        message,
    }
}

fn rules() -> Vec<(&'static str, String, Expect)> {
    let secret_key = "auth_config.secret_key";
    let expiry = "auth_config.token_expire_in_minutes";
    let algorithm = "auth_config.algorithm";
    let user2_password = format!("{USER2}.password");
    let user2_permissions = format!("{USER2}.permissions");
    let user1_key0 = format!("{USER1}.api_keys[0]");
    let bcrypt_hash = bcrypt::hash("pw-bcrypt", 4).expect("bcrypt hash");
    let argon2id_hash = hash_for_config("pw-argon2").expect("argon2id hash");
    let argon2i_hash = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").expect("salt");
        argon2::Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::default(),
        )
        .hash_password(b"pw-argon2i", &salt)
        .expect("argon2i hash")
        .to_string()
    };

    vec![
        // The good file.
        (
            "docs example plus api keys",
            DOCS_EXAMPLE.to_string(),
            warns(&["example key"]),
        ),
        // The file as a whole.
        (
            "invalid JSON",
            r#"{"auth_config": {"#.to_string(),
            err("(file)", "not valid JSON"),
        ),
        ("empty file", String::new(), err("(file)", "not valid JSON")),
        (
            "trailing comma",
            DOCS_EXAMPLE.replace("30\n", "30,\n"),
            err("(file)", "not valid JSON"),
        ),
        (
            "top level is a list",
            "[]".to_string(),
            err("(top level)", "JSON object"),
        ),
        (
            "top level is a string",
            r#""auth""#.to_string(),
            err("(top level)", "JSON object"),
        ),
        (
            "top level is null",
            "null".to_string(),
            err("(top level)", "JSON object"),
        ),
        (
            "auth_config missing",
            remove("/auth_config"),
            err("auth_config", "required"),
        ),
        (
            "auth_config is a list",
            set("/auth_config", json!([])),
            err("auth_config", "JSON object"),
        ),
        (
            "auth_config is null",
            set("/auth_config", Value::Null),
            err("auth_config", "JSON object"),
        ),
        (
            "user_config missing",
            remove("/user_config"),
            err("user_config", "required"),
        ),
        (
            "user_config is an object",
            set("/user_config", json!({})),
            err("user_config", "list"),
        ),
        (
            "user_config is a string",
            set("/user_config", json!("user1")),
            err("user_config", "list"),
        ),
        (
            "user_config is empty",
            set("/user_config", json!([])),
            warns(&["user_config is empty"]),
        ),
        // algorithm
        (
            "algorithm RS256",
            set("/auth_config/algorithm", json!("RS256")),
            err(algorithm, "HS256, HS384 or HS512"),
        ),
        (
            "algorithm none",
            set("/auth_config/algorithm", json!("none")),
            err(algorithm, "HS256, HS384 or HS512"),
        ),
        (
            "algorithm None",
            set("/auth_config/algorithm", json!("None")),
            err(algorithm, "not supported"),
        ),
        (
            "algorithm empty",
            set("/auth_config/algorithm", json!("")),
            err(algorithm, "not supported"),
        ),
        (
            "algorithm ES256",
            set("/auth_config/algorithm", json!("ES256")),
            err(algorithm, "not supported"),
        ),
        (
            "algorithm is a number",
            set("/auth_config/algorithm", json!(256)),
            err(algorithm, "must be a string"),
        ),
        (
            "algorithm omitted",
            remove("/auth_config/algorithm"),
            warns(&["example key"]),
        ),
        (
            "algorithm HS384",
            set("/auth_config/algorithm", json!("HS384")),
            ok(),
        ),
        (
            "algorithm HS512",
            set("/auth_config/algorithm", json!("HS512")),
            ok(),
        ),
        // secret_key
        (
            "secret empty",
            set("/auth_config/secret_key", json!("")),
            err(secret_key, "openssl rand -hex 32"),
        ),
        (
            "secret missing",
            remove("/auth_config/secret_key"),
            err(secret_key, "required"),
        ),
        (
            "secret null",
            set("/auth_config/secret_key", Value::Null),
            err(secret_key, "must be a string"),
        ),
        (
            "secret is a number",
            set("/auth_config/secret_key", json!(12345)),
            err(secret_key, "must be a string"),
        ),
        (
            "HS256 secret of 31 bytes",
            auth_with("HS256", &"a".repeat(31)),
            err(secret_key, "openssl rand -hex 32"),
        ),
        (
            "HS256 secret of 32 bytes",
            auth_with("HS256", &"a".repeat(32)),
            ok(),
        ),
        (
            "HS384 secret of 47 bytes",
            auth_with("HS384", &"b".repeat(47)),
            err(secret_key, "at least 48"),
        ),
        (
            "HS384 secret of 48 bytes",
            auth_with("HS384", &"b".repeat(48)),
            ok(),
        ),
        (
            "HS512 secret of 63 bytes",
            auth_with("HS512", &"c".repeat(63)),
            err(secret_key, "at least 64"),
        ),
        (
            "HS512 secret of 64 bytes",
            auth_with("HS512", &"c".repeat(64)),
            ok(),
        ),
        (
            "HS512 with the 64-byte docs secret",
            auth_with("HS512", DOCS_SECRET),
            warns(&["example key"]),
        ),
        (
            "default algorithm wants 32 bytes",
            edit(|v| {
                v["auth_config"]
                    .as_object_mut()
                    .unwrap()
                    .remove("algorithm");
                v["auth_config"]["secret_key"] = json!("d".repeat(31));
            }),
            err(secret_key, "at least 32"),
        ),
        // token_expire_in_minutes
        (
            "expiry 0",
            set("/auth_config/token_expire_in_minutes", json!(0)),
            err(expiry, "positive integer"),
        ),
        (
            "expiry -1",
            set("/auth_config/token_expire_in_minutes", json!(-1)),
            err(expiry, "positive integer"),
        ),
        (
            "expiry \"abc\"",
            set("/auth_config/token_expire_in_minutes", json!("abc")),
            err(expiry, "positive integer"),
        ),
        (
            "expiry 1.5",
            set("/auth_config/token_expire_in_minutes", json!(1.5)),
            err(expiry, "positive integer"),
        ),
        (
            "expiry \"0\"",
            set("/auth_config/token_expire_in_minutes", json!("0")),
            err(expiry, "positive integer"),
        ),
        (
            "expiry \"-5\"",
            set("/auth_config/token_expire_in_minutes", json!("-5")),
            err(expiry, "positive integer"),
        ),
        (
            "expiry \"\"",
            set("/auth_config/token_expire_in_minutes", json!("")),
            err(expiry, "positive integer"),
        ),
        (
            "expiry true",
            set("/auth_config/token_expire_in_minutes", json!(true)),
            err(expiry, "positive integer"),
        ),
        (
            "expiry null",
            set("/auth_config/token_expire_in_minutes", Value::Null),
            err(expiry, "positive integer"),
        ),
        (
            "expiry missing",
            remove("/auth_config/token_expire_in_minutes"),
            err(expiry, "required"),
        ),
        (
            "expiry \"30\" (numeric string)",
            set("/auth_config/token_expire_in_minutes", json!("30")),
            ok(),
        ),
        (
            "expiry 1",
            set("/auth_config/token_expire_in_minutes", json!(1)),
            ok(),
        ),
        // users
        (
            "user is a string",
            set("/user_config/1", json!("user2")),
            err("user_config[1]", "JSON object"),
        ),
        (
            "username missing",
            remove("/user_config/1/username"),
            err("user_config[1].username", "required"),
        ),
        (
            "username empty",
            set("/user_config/1/username", json!("")),
            err("user_config[1].username", "must not be empty"),
        ),
        (
            "username is a number",
            set("/user_config/1/username", json!(2)),
            err("user_config[1].username", "must be a string"),
        ),
        (
            "duplicate username",
            set("/user_config/1/username", json!("user1")),
            err("user_config[1].username", "duplicate username \"user1\""),
        ),
        (
            "password missing",
            remove("/user_config/1/password"),
            err(&user2_password, "required"),
        ),
        (
            "password empty",
            set("/user_config/1/password", json!("")),
            err(&user2_password, "must not be empty"),
        ),
        (
            "password is a number",
            set("/user_config/1/password", json!(1234)),
            err(&user2_password, "must be a string"),
        ),
        (
            "permissions missing",
            remove("/user_config/1/permissions"),
            err(&user2_permissions, "required"),
        ),
        (
            "permissions is a string",
            set("/user_config/1/permissions", json!("admin")),
            err(&user2_permissions, "list"),
        ),
        (
            "permissions null",
            set("/user_config/1/permissions", Value::Null),
            err(&user2_permissions, "list"),
        ),
        (
            "unknown permission",
            set("/user_config/1/permissions/1", json!("models:fly")),
            err(
                &format!("{user2_permissions}[1]"),
                "unknown permission \"models:fly\"",
            ),
        ),
        (
            "permission in upper case",
            set("/user_config/1/permissions/0", json!("MODELS:LIST")),
            err(&format!("{user2_permissions}[0]"), "unknown permission"),
        ),
        (
            "permission is a number",
            set("/user_config/1/permissions/0", json!(7)),
            err(&format!("{user2_permissions}[0]"), "must be a string"),
        ),
        (
            "empty permission list",
            set("/user_config/1/permissions", json!([])),
            ok(),
        ),
        (
            "aliases models:write and models:add",
            set(
                "/user_config/1/permissions",
                json!(["models:write", "models:add"]),
            ),
            ok(),
        ),
        (
            "cache permissions",
            set(
                "/user_config/1/permissions",
                json!(["cache:list", "cache:delete"]),
            ),
            ok(),
        ),
        // api keys
        (
            "api key sk-short",
            set("/user_config/0/api_keys/0", json!("sk-short")),
            err(&user1_key0, "exactly 13 letters or digits"),
        ),
        (
            "api key without sk- prefix",
            set("/user_config/0/api_keys/0", json!("ab-72tkvudyGLPMi")),
            err(&user1_key0, "'sk-'"),
        ),
        (
            "api key with no prefix at all",
            set("/user_config/0/api_keys/0", json!("72tkvudyGLPMiXYZ")),
            err(&user1_key0, "'sk-'"),
        ),
        (
            "api key with upper-case prefix",
            set("/user_config/0/api_keys/0", json!("SK-72tkvudyGLPMi")),
            err(&user1_key0, "'sk-'"),
        ),
        (
            "api key with 14 chars after sk-",
            set("/user_config/0/api_keys/0", json!("sk-72tkvudyGLPMij")),
            err(&user1_key0, "16 characters"),
        ),
        (
            "api key with 12 chars after sk-",
            set("/user_config/0/api_keys/0", json!("sk-72tkvudyGLPM")),
            err(&user1_key0, "16 characters"),
        ),
        (
            "api key with an underscore",
            set("/user_config/0/api_keys/0", json!("sk-72tkvudy_LPMi")),
            err(&user1_key0, "letters or digits"),
        ),
        (
            "api key with a dash",
            set("/user_config/0/api_keys/0", json!("sk-72tkvudy-LPMi")),
            err(&user1_key0, "letters or digits"),
        ),
        (
            "api key with a space",
            set("/user_config/0/api_keys/0", json!("sk-72tkvudy LPMi")),
            err(&user1_key0, "letters or digits"),
        ),
        (
            "api key with a non-ASCII letter",
            set("/user_config/0/api_keys/0", json!("sk-72tkvudyéLPM")),
            err(&user1_key0, "letters or digits"),
        ),
        (
            "api key with a newline",
            set("/user_config/0/api_keys/0", json!("sk-72tkvudyGLPMi\n")),
            err(&user1_key0, "letters or digits"),
        ),
        (
            "api key is a number",
            set("/user_config/0/api_keys/0", json!(42)),
            err(&user1_key0, "must be a string"),
        ),
        (
            "api_keys is a string",
            set("/user_config/0/api_keys", json!("sk-72tkvudyGLPMi")),
            err(&format!("{USER1}.api_keys"), "list"),
        ),
        (
            "same api key twice in one user",
            set("/user_config/1/api_keys/1", json!("sk-ZOTLIY4gt9w11")),
            err(&format!("{USER2}.api_keys[1]"), "already used"),
        ),
        (
            "same api key in two users",
            set("/user_config/1/api_keys/0", json!("sk-72tkvudyGLPMi")),
            err(&format!("{USER2}.api_keys[0]"), "already used"),
        ),
        (
            "api_keys omitted",
            edit(|v| {
                v["user_config"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("api_keys");
                v["user_config"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("api_keys");
            }),
            ok(),
        ),
        (
            "api_keys null",
            set("/user_config/0/api_keys", Value::Null),
            ok(),
        ),
        (
            "api_keys empty",
            set("/user_config/0/api_keys", json!([])),
            ok(),
        ),
        // unknown keys are warnings
        (
            "unknown keys at every level",
            edit(|v| {
                v["comment"] = json!("hello");
                v["auth_config"]["issuer"] = json!("me");
                v["user_config"][1]["email"] = json!("u2@example.com");
            }),
            warns(&[
                r#"unknown key "comment""#,
                r#"unknown key auth_config."issuer""#,
                r#"unknown key user_config[1] (user "user2")."email""#,
            ]),
        ),
        // password hashes
        (
            "bcrypt hash password",
            set("/user_config/1/password", json!(bcrypt_hash)),
            ok(),
        ),
        (
            "argon2id hash password",
            set("/user_config/1/password", json!(argon2id_hash)),
            ok(),
        ),
        (
            "malformed argon2id hash",
            set("/user_config/1/password", json!("$argon2id$garbage")),
            err(&user2_password, "argon2"),
        ),
        (
            "argon2id hash cut short",
            set(
                "/user_config/1/password",
                json!(&argon2id_hash[..argon2id_hash.len() / 2]),
            ),
            err(&user2_password, "argon2"),
        ),
        (
            "argon2id hash with m=1 (below argon2's minimum)",
            set(
                "/user_config/1/password",
                json!(format!(
                    "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0${}",
                    "A".repeat(43)
                )),
            ),
            err(&user2_password, "argon2"),
        ),
        (
            "argon2i hash",
            set("/user_config/1/password", json!(argon2i_hash)),
            err(&user2_password, "argon2id"),
        ),
        (
            "short bcrypt hash",
            set("/user_config/1/password", json!("$2b$12$short")),
            err(&user2_password, "bcrypt"),
        ),
        (
            "bcrypt hash cut by one",
            set("/user_config/1/password", json!(&bcrypt_hash[..59])),
            err(&user2_password, "bcrypt"),
        ),
    ]
}

#[test]
fn every_rule_of_spec_section_2() {
    let mut failures = Vec::new();
    for (name, text, expect) in rules() {
        let mut secrets = serde_json::from_str::<Value>(&text)
            .map(|v| sensitive_strings(&v))
            .unwrap_or_default();
        secrets.extend(sensitive_strings(&docs()));
        let result = AuthSettings::parse("auth.json", &text);
        match (expect, result) {
            (Expect::Ok { warnings }, Ok(settings)) => {
                for wanted in warnings {
                    if !settings.warnings.iter().any(|w| w.contains(wanted)) {
                        failures.push(format!(
                            "{name}: no warning contains {wanted:?}; warnings: {:?}",
                            settings.warnings
                        ));
                    }
                }
                for warning in &settings.warnings {
                    assert_no_leak(&format!("{name}: warning"), warning, &secrets);
                }
            }
            (Expect::Ok { .. }, Err(e)) => failures.push(format!("{name}: expected Ok, got {e:?}")),
            (Expect::Err { field, message }, Err(e)) => {
                let display = e.to_string();
                let debug = format!("{e:?}");
                assert_no_leak(&format!("{name}: error Display"), &display, &secrets);
                assert_no_leak(&format!("{name}: error Debug"), &debug, &secrets);
                match e {
                    AuthError::Config {
                        path,
                        field: got_field,
                        message: got_message,
                    } => {
                        if got_field != field {
                            failures.push(format!(
                                "{name}: field {got_field:?}, expected {field:?} ({got_message})"
                            ));
                        }
                        if !got_message.contains(message) {
                            failures
                                .push(format!("{name}: message {got_message:?} lacks {message:?}"));
                        }
                        if path != "auth.json" {
                            failures.push(format!("{name}: path {path:?}"));
                        }
                        if !display.contains(&field) || !display.contains("auth.json") {
                            failures.push(format!(
                                "{name}: Display {display:?} lacks the field or path"
                            ));
                        }
                    }
                    other => failures.push(format!("{name}: expected Config error, got {other:?}")),
                }
            }
            (Expect::Err { field, .. }, Ok(_)) => {
                failures.push(format!("{name}: expected an error at {field:?}, it parsed"))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} rule(s) broken:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
