//! SPEC section 3: tokens. Issue (header alg, claims), verification (pinned algorithm, signature,
//! `exp`, `nbf`, `sub`), effective permissions, the `Authorization` header and api keys.

use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde_json::{json, Value};
use xi_api::{Permission, PermissionSet};
use xi_auth::{AuthError, AuthService, Credential};

use crate::{
    b64url, base_config, bearer, config, perms, service, users, ALICE_PW, BOB_KEY, BOB_PW,
    CAROL_KEY, SECRET, T0,
};

fn sign(algorithm: Algorithm, key: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(key).expect("hmac key"),
    )
    .expect("sign")
}

/// Claims the server itself would issue for `sub` at [`T0`], valid for an hour.
fn claims(sub: &str, scopes: &[&str]) -> Value {
    json!({"sub": sub, "scopes": scopes, "iat": T0, "exp": T0 + 3600})
}

fn segments(token: &str) -> (String, String, String) {
    let mut parts = token.split('.');
    let header = parts.next().expect("header").to_string();
    let payload = parts.next().expect("payload").to_string();
    let signature = parts.next().expect("signature").to_string();
    assert!(parts.next().is_none(), "three segments");
    (header, payload, signature)
}

fn login(auth: &AuthService, user: &str, password: &str) -> String {
    auth.login(user, password, "10.0.0.1")
        .unwrap_or_else(|e| panic!("login {user}: {e}"))
        .access_token
}

#[test]
fn issued_token_authenticates_with_the_users_permissions() {
    let (auth, _clock) = service(&base_config());
    let cases: &[(&str, &str, PermissionSet)] = &[
        ("alice", ALICE_PW, PermissionSet::ALL),
        (
            "bob",
            BOB_PW,
            perms(&[Permission::ModelsList, Permission::ModelsRead]),
        ),
        ("carol", crate::CAROL_PW, perms(&[Permission::ModelsList])),
    ];
    for (user, password, expected) in cases {
        let issued = auth.login(user, password, "10.0.0.1").expect("login");
        assert_eq!(issued.expires_in, 30 * 60);
        let principal = auth
            .authenticate(Some(&bearer(&issued.access_token)))
            .expect("authenticates");
        assert_eq!(principal.username, *user);
        assert_eq!(principal.permissions, *expected, "{user}");
        assert_eq!(principal.credential, Credential::Token);
    }
}

#[test]
fn header_alg_and_claims_match_the_config_for_every_hs_size() {
    let cases: &[(&str, Algorithm, usize, u64)] = &[
        ("HS256", Algorithm::HS256, 32, 7),
        ("HS384", Algorithm::HS384, 48, 30),
        ("HS512", Algorithm::HS512, 64, 1440),
    ];
    for (name, algorithm, secret_len, minutes) in cases {
        let secret = &SECRET[..*secret_len];
        let (auth, _clock) = service(&config(name, secret, *minutes, users()));
        let issued = auth.login("bob", BOB_PW, "10.0.0.1").expect("login");
        let token = issued.access_token;

        let header = decode_header(&token).expect("header");
        assert_eq!(header.alg, *algorithm, "{name}");

        let mut validation = Validation::new(*algorithm);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = decode::<Value>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()).unwrap(),
            &validation,
        )
        .unwrap_or_else(|e| panic!("{name}: the token is signed with the configured secret: {e}"));
        let claims = data.claims;
        assert_eq!(claims["sub"], json!("bob"), "{name}");
        assert_eq!(
            claims["scopes"],
            json!(["models:list", "models:read"]),
            "{name}"
        );
        assert_eq!(claims["iat"], json!(T0), "{name}");
        assert_eq!(claims["exp"], json!(T0 + minutes * 60), "{name}");
        assert_eq!(issued.expires_in, minutes * 60, "{name}");

        // Admin is issued as the single scope "admin".
        let alice = login(&auth, "alice", ALICE_PW);
        let alice_claims: Value =
            jsonwebtoken::dangerous::insecure_decode_claims(&alice).expect("claims");
        assert_eq!(alice_claims["scopes"], json!(["admin"]), "{name}");
    }
}

#[test]
fn verification_pins_the_configured_hs_size() {
    // One 64-byte secret is long enough for all three, so only the algorithm differs.
    let algorithms = [
        ("HS256", Algorithm::HS256),
        ("HS384", Algorithm::HS384),
        ("HS512", Algorithm::HS512),
    ];
    for (server_name, server_alg) in algorithms {
        let (auth, _clock) = service(&config(server_name, SECRET, 30, users()));
        for (_, token_alg) in algorithms {
            let token = sign(
                token_alg,
                SECRET.as_bytes(),
                &claims("bob", &["models:list"]),
            );
            let result = auth.authenticate(Some(&bearer(&token)));
            if token_alg == server_alg {
                assert!(
                    result.is_ok(),
                    "{server_name} server, {token_alg:?} token: {result:?}"
                );
            } else {
                assert!(
                    matches!(result, Err(AuthError::InvalidCredentials)),
                    "{server_name} server accepted a {token_alg:?} token: {result:?}"
                );
            }
        }
    }
}

#[test]
fn bad_tokens_are_invalid_credentials() {
    let (auth, _clock) = service(&base_config());
    let good = login(&auth, "bob", BOB_PW);
    let (header, payload, signature) = segments(&good);
    let bob = claims("bob", &["models:list"]);
    let signed = |c: &Value| sign(Algorithm::HS256, SECRET.as_bytes(), c);
    let none_header = |alg: &str| b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
    let alice_payload = b64url(claims("alice", &["admin"]).to_string().as_bytes());

    let cases: Vec<(&str, String)> = vec![
        (
            "signed with another secret",
            sign(Algorithm::HS256, &[b'x'; 64], &bob),
        ),
        (
            "signed with a prefix of the secret",
            sign(Algorithm::HS256, &SECRET.as_bytes()[..32], &bob),
        ),
        (
            "alg none, empty signature",
            format!("{}.{payload}.", none_header("none")),
        ),
        (
            "alg None, empty signature",
            format!("{}.{payload}.", none_header("None")),
        ),
        (
            "alg NONE, empty signature",
            format!("{}.{payload}.", none_header("NONE")),
        ),
        (
            "alg none, original signature",
            format!("{}.{payload}.{signature}", none_header("none")),
        ),
        (
            "HS512 with the same secret",
            sign(Algorithm::HS512, SECRET.as_bytes(), &bob),
        ),
        (
            "HS384 with the same secret",
            sign(Algorithm::HS384, SECRET.as_bytes(), &bob),
        ),
        (
            "header switched to HS512, HS256 signature",
            format!("{}.{payload}.{signature}", none_header("HS512")),
        ),
        (
            "header switched to RS256",
            format!("{}.{payload}.{signature}", none_header("RS256")),
        ),
        (
            "no exp",
            signed(&json!({"sub": "bob", "scopes": ["models:list"], "iat": T0})),
        ),
        (
            "exp as a string",
            signed(&json!({"sub": "bob", "scopes": [], "iat": T0, "exp": (T0 + 3600).to_string()})),
        ),
        (
            "exp null",
            signed(&json!({"sub": "bob", "scopes": [], "iat": T0, "exp": null})),
        ),
        (
            "no sub",
            signed(&json!({"scopes": ["admin"], "iat": T0, "exp": T0 + 3600})),
        ),
        ("unknown sub", signed(&claims("mallory", &["admin"]))),
        (
            "sub differs in case",
            signed(&claims("Bob", &["models:list"])),
        ),
        ("empty sub", signed(&claims("", &["models:list"]))),
        ("truncated signature", good[..good.len() - 4].to_string()),
        ("signature removed", format!("{header}.{payload}.")),
        ("signature segment removed", format!("{header}.{payload}")),
        (
            "payload swapped for alice",
            format!("{header}.{alice_payload}.{signature}"),
        ),
        ("extra segment", format!("{good}.{signature}")),
        ("garbage", "not-a-token".to_string()),
        ("three garbage segments", "a.b.c".to_string()),
        ("dots only", "..".to_string()),
        ("non-ASCII", "éé.éé.éé".to_string()),
    ];
    for (name, token) in cases {
        let result = auth.authenticate(Some(&bearer(&token)));
        assert!(
            matches!(result, Err(AuthError::InvalidCredentials)),
            "{name}: expected InvalidCredentials, got {result:?}"
        );
    }
    // The good token itself still works after all that.
    assert!(auth.authenticate(Some(&bearer(&good))).is_ok());
}

#[test]
fn expiry_is_enforced_by_the_clock() {
    let (auth, clock) = service(&base_config());
    let token = bearer(&login(&auth, "bob", BOB_PW));
    let exp = T0 + 30 * 60;
    // (seconds to advance, valid afterwards)
    let steps: &[(u64, bool)] = &[
        (0, true),
        (30 * 60 - 1, true), // exp - 1
        (1, false),          // exactly exp
        (1, false),          // exp + 1
        (86_400, false),
    ];
    for (advance, valid) in steps {
        clock.advance(*advance);
        let now = xi_auth::Clock::now_unix(clock.as_ref());
        let result = auth.authenticate(Some(&token));
        if *valid {
            assert!(
                result.is_ok(),
                "now = exp{:+}: {result:?}",
                now as i64 - exp as i64
            );
        } else {
            assert!(
                matches!(result, Err(AuthError::InvalidCredentials)),
                "now = exp{:+}: {result:?}",
                now as i64 - exp as i64
            );
        }
    }
    // A fresh login at the new time works again.
    let fresh = login(&auth, "bob", BOB_PW);
    assert!(auth.authenticate(Some(&bearer(&fresh))).is_ok());
}

#[test]
fn not_before_is_honoured() {
    let (auth, clock) = service(&base_config());
    let token = bearer(&sign(
        Algorithm::HS256,
        SECRET.as_bytes(),
        &json!({"sub": "bob", "scopes": ["models:list"], "iat": T0, "nbf": T0 + 100, "exp": T0 + 1000}),
    ));
    let steps: &[(u64, bool)] = &[
        (0, false),
        (99, false),
        (1, true),
        (500, true),
        (400, false),
    ];
    let mut now = T0;
    for (advance, valid) in steps {
        clock.advance(*advance);
        now += advance;
        let result = auth.authenticate(Some(&token));
        assert_eq!(result.is_ok(), *valid, "now = T0+{}: {result:?}", now - T0);
        if !valid {
            assert!(matches!(result, Err(AuthError::InvalidCredentials)));
        }
    }
}

#[test]
fn effective_permissions_are_token_scopes_within_current_user_permissions() {
    let (auth, _clock) = service(&base_config());
    let list = perms(&[Permission::ModelsList]);
    // (user, scopes in a server-signed token, expected effective permissions)
    let cases: &[(&str, &[&str], PermissionSet)] = &[
        ("carol", &["admin"], list),
        ("carol", &["admin", "models:start", "models:list"], list),
        ("carol", &["models:start"], PermissionSet::EMPTY),
        ("carol", &["models:list", "bogus:scope"], list),
        ("carol", &[], PermissionSet::EMPTY),
        ("bob", &["models:write", "models:add"], PermissionSet::EMPTY),
        (
            "bob",
            &["admin"],
            perms(&[Permission::ModelsList, Permission::ModelsRead]),
        ),
        ("bob", &["models:read"], perms(&[Permission::ModelsRead])),
        ("alice", &["models:list"], list),
        ("alice", &[], PermissionSet::EMPTY),
        ("alice", &["admin"], PermissionSet::ALL),
        (
            "alice",
            &["models:write"],
            perms(&[Permission::ModelsStart, Permission::ModelsStop]),
        ),
    ];
    for (user, scopes, expected) in cases {
        let token = sign(Algorithm::HS256, SECRET.as_bytes(), &claims(user, scopes));
        let principal = auth
            .authenticate(Some(&bearer(&token)))
            .unwrap_or_else(|e| panic!("{user} {scopes:?}: {e}"));
        assert_eq!(principal.permissions, *expected, "{user} {scopes:?}");
        if *user == "carol" {
            assert!(
                !principal.permissions.allows(Permission::Admin),
                "{scopes:?}"
            );
            assert!(
                !principal.permissions.allows(Permission::ModelsStart),
                "{scopes:?}"
            );
        }
    }
}

#[test]
fn authorization_header_forms() {
    let (auth, _clock) = service(&base_config());
    let token = login(&auth, "bob", BOB_PW);
    let not_authenticated: &[Option<&str>] = &[
        None,
        Some(""),
        Some("   "),
        Some("Basic xyz"),
        Some("Basic Ym9iOmJvYi1Qdy1YSzI3"),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer    "),
        Some("bearer"),
        Some("Token abc"),
        Some("Bearerabc"),
    ];
    for header in not_authenticated {
        let result = auth.authenticate(*header);
        assert!(
            matches!(result, Err(AuthError::NotAuthenticated)),
            "{header:?}: expected NotAuthenticated, got {result:?}"
        );
    }
    let works = [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("bEaReR {token}"),
        format!("  Bearer   {token}  "),
    ];
    for header in &works {
        let principal = auth
            .authenticate(Some(header))
            .unwrap_or_else(|e| panic!("{header:?}: {e}"));
        assert_eq!(principal.username, "bob");
    }
    // Another scheme with a perfectly good token is still not a bearer header.
    let basic = format!("Basic {token}");
    assert!(matches!(
        auth.authenticate(Some(&basic)),
        Err(AuthError::NotAuthenticated)
    ));
}

#[test]
fn api_keys_authenticate_as_their_owner() {
    let (auth, _clock) = service(&base_config());
    let bob = perms(&[Permission::ModelsList, Permission::ModelsRead]);
    let carol = perms(&[Permission::ModelsList]);
    let good: &[(String, &str, PermissionSet)] = &[
        (format!("Bearer {BOB_KEY}"), "bob", bob),
        (format!("bearer {BOB_KEY}"), "bob", bob),
        (format!("Bearer {CAROL_KEY}"), "carol", carol),
    ];
    for (header, user, expected) in good {
        let principal = auth
            .authenticate(Some(header))
            .unwrap_or_else(|e| panic!("{header}: {e}"));
        assert_eq!(principal.username, *user);
        assert_eq!(principal.permissions, *expected);
        assert_eq!(principal.credential, Credential::ApiKey);
    }
    let invalid = [
        "sk-0000000000000",  // well-formed, unknown
        "sk-ABCDEF1234567",  // bob's key in another case
        "sk-AbCdEf1234568",  // one character off
        "sk-AbCdEf123456",   // too short: not a key, and not a JWT either
        "sk-AbCdEf12345678", // too long
    ];
    for key in invalid {
        let result = auth.authenticate(Some(&bearer(key)));
        assert!(
            matches!(result, Err(AuthError::InvalidCredentials)),
            "{key}: expected InvalidCredentials, got {result:?}"
        );
    }
    // An api key is not a password.
    assert!(matches!(
        auth.login("bob", BOB_KEY, "10.0.0.1"),
        Err(AuthError::BadLogin)
    ));
}

#[test]
fn tokens_do_not_survive_a_change_of_secret() {
    let (first, _c1) = service(&base_config());
    let token = login(&first, "bob", BOB_PW);
    let other_secret = SECRET.chars().rev().collect::<String>();
    let (second, _c2) = service(&config("HS256", &other_secret, 30, users()));
    assert!(first.authenticate(Some(&bearer(&token))).is_ok());
    assert!(matches!(
        second.authenticate(Some(&bearer(&token))),
        Err(AuthError::InvalidCredentials)
    ));
}
