//! Providers configured against a [`TestIdp`], and tokens signed with its keys.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use xi_oidc::provider::Provider;
use xi_oidc::OidcSettings;
use xi_testkit::oidc::{TestIdp, API_AUDIENCE, WEB_CLIENT};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Settings for one provider named `testidp` at `issuer`, with `extra` fields on top.
pub fn settings(issuer: &str, secret: &str, extra: Value) -> OidcSettings {
    let mut p = json!({
        "name": "testidp",
        "issuer": issuer,
        "client_id": WEB_CLIENT,
        "client_secret": secret,
        "scopes": ["openid", "profile", "email", "groups"],
        "group_permissions": {"xi-admins": ["admin"], "xi-users": ["models:list", "models:read"]},
        "api_audience": API_AUDIENCE,
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    OidcSettings::from_value("test", "", &json!({ "providers": [p] }), &|_| None).unwrap()
}

pub fn provider(idp: &TestIdp) -> Provider {
    let config = settings(idp.issuer(), idp.client_secret(), json!({}))
        .providers
        .remove(0);
    Provider::new(config).unwrap()
}

/// Claims of a good ID token for `xi-web` with nonce `n1`.
pub fn id_claims(idp: &TestIdp) -> Value {
    let now = now();
    json!({
        "iss": idp.issuer(), "sub": "alice", "aud": WEB_CLIENT, "nonce": "n1",
        "iat": now, "exp": now + 300, "preferred_username": "alice", "groups": ["xi-admins"],
    })
}

/// A token signed with one of the provider's keys (`rsa`, `ec` or `ed25519`).
pub fn signed(idp: &TestIdp, key: &str, claims: &Value) -> String {
    let (kid, pem) = match key {
        "rsa" => idp.rsa_key(),
        "ec" => idp.ec_key(),
        _ => idp.ed25519_key(),
    };
    sign_with(key, kid, pem, claims)
}

/// A token signed with `pem` under the key id `kid`.
pub fn sign_with(key: &str, kid: &str, pem: &str, claims: &Value) -> String {
    let (alg, encoding) = match key {
        "rsa" => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes())),
        "ec" => (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes())),
        _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem.as_bytes())),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &encoding.unwrap()).unwrap()
}
