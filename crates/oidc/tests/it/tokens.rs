//! Every refusal of a token, each with a token that is good but for one thing, signed with the
//! provider's own keys (so only that one check can be what fails).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use xi_oidc::OidcError;
use xi_testkit::oidc::{TestIdp, API_AUDIENCE, SERVICE_ADMIN_CLIENT, SERVICE_CLIENT};

use crate::support::{id_claims, now, provider, settings, sign_with, signed};

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn refused(result: Result<serde_json::Map<String, Value>, OidcError>, expected: &str) {
    match result {
        Err(OidcError::InvalidToken(m)) => assert!(m.contains(expected), "{expected:?}: {m}"),
        other => panic!("{expected:?}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn id_tokens_are_checked_claim_by_claim() {
    let idp = TestIdp::start();
    let p = provider(&idp);
    let good = id_claims(&idp);
    let verify = |token: String, nonce: &'static str| {
        let p = &p;
        async move { p.verify_id_token(&token, Some(nonce), now()).await }
    };

    // Each of the provider's key types verifies (the test can tell good from bad).
    for key in ["rsa", "ec", "ed25519"] {
        let claims = verify(signed(&idp, key, &good), "n1").await.unwrap();
        assert_eq!(claims["sub"], "alice", "{key}");
    }
    // Within the 60 s leeway an expired token still passes; beyond it, not.
    let just = with(good.clone(), "exp", json!(now() - 30));
    verify(signed(&idp, "rsa", &just), "n1").await.unwrap();
    let cases = [
        (with(good.clone(), "exp", json!(now() - 120)), "expired"),
        (
            with(good.clone(), "nbf", json!(now() + 600)),
            "not valid yet",
        ),
        (
            with(good.clone(), "iat", json!(now() + 600)),
            "issued in the future",
        ),
        (with(good.clone(), "aud", json!("someone-else")), "audience"),
        (
            with(good.clone(), "aud", json!(["xi-web", "other"])).tap("azp", json!("other")),
            "azp",
        ),
        (with(good.clone(), "nonce", json!("n2")), "nonce"),
        (
            with(good.clone(), "iss", json!("http://127.0.0.1:1")),
            "issuer",
        ),
        (remove(good.clone(), "sub"), "subject"),
        (remove(good.clone(), "exp"), "expiry"),
    ];
    for (claims, expected) in cases {
        refused(verify(signed(&idp, "rsa", &claims), "n1").await, expected);
    }
    let no_nonce = remove(good.clone(), "nonce");
    refused(verify(signed(&idp, "rsa", &no_nonce), "n1").await, "nonce");
    let no_iat = remove(good.clone(), "iat");
    refused(verify(signed(&idp, "rsa", &no_iat), "n1").await, "iat");
}

trait Tap {
    fn tap(self, key: &str, value: Value) -> Value;
}

impl Tap for Value {
    fn tap(self, key: &str, value: Value) -> Value {
        with(self, key, value)
    }
}

fn remove(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// `header.payload.signature` with a header of our choosing.
fn forged(header: Value, claims: &Value, signature: &[u8]) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.{}",
        part(&header),
        part(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test]
async fn forged_signatures_are_refused() {
    let idp = TestIdp::start();
    let other = TestIdp::start();
    let p = provider(&idp);
    let good = id_claims(&idp);
    let (rsa_kid, _) = idp.rsa_key();
    let (ec_kid, _) = idp.ec_key();

    // alg none: no signature at all.
    let none = forged(json!({"alg": "none", "kid": rsa_kid}), &good, b"");
    refused(
        p.verify_id_token(&none, Some("n1"), now()).await,
        "not accepted",
    );

    // HS256 "signed" with the provider's public key (the classic key-confusion attack): the
    // JWKS's RSA modulus as the HMAC secret.
    let jwks: Value = reqwest::get(format!("{}/jwks", idp.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null);
    let secret = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kty"] == "RSA"))
        .map(|k| k["n"].as_str().unwrap_or("n").to_string())
        .unwrap_or_else(|| "public-key".into());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(rsa_kid.to_string());
    let hs = jsonwebtoken::encode(
        &header,
        &good,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap();
    refused(
        p.verify_id_token(&hs, Some("n1"), now()).await,
        "not accepted",
    );

    // Signed by another provider's key under this provider's kid.
    let (_, other_pem) = other.rsa_key();
    let stolen_kid = sign_with("rsa", rsa_kid, other_pem, &good);
    refused(
        p.verify_id_token(&stolen_kid, Some("n1"), now()).await,
        "signature invalid",
    );

    // An RSA signature under the EC key's kid: the key does not fit the algorithm.
    let (_, rsa_pem) = idp.rsa_key();
    let wrong_family = sign_with("rsa", ec_kid, rsa_pem, &good);
    refused(
        p.verify_id_token(&wrong_family, Some("n1"), now()).await,
        "does not publish",
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_interval() {
    let mut idp = TestIdp::start();
    let good = id_claims(&idp);
    let (_, rsa_pem) = idp.rsa_key();
    let rsa_pem = rsa_pem.to_string();
    let token = signed(&idp, "rsa", &good);
    let unknown = sign_with("rsa", "rotated-key", &rsa_pem, &good);

    // Both providers have the JWKS cached; then the provider goes away.
    let mut eager = provider(&idp);
    eager.refetch_interval = std::time::Duration::ZERO;
    let patient = provider(&idp);
    eager
        .verify_id_token(&token, Some("n1"), now())
        .await
        .unwrap();
    patient
        .verify_id_token(&token, Some("n1"), now())
        .await
        .unwrap();
    idp.stop();

    // A known kid needs no fetch.
    patient
        .verify_id_token(&token, Some("n1"), now())
        .await
        .unwrap();
    // An unknown kid makes the eager one fetch again (and fail: the provider is gone) ...
    let err = eager
        .verify_id_token(&unknown, Some("n1"), now())
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::Unavailable(_)), "{err:?}");
    // ... while within the interval the patient one refuses without asking.
    refused(
        patient.verify_id_token(&unknown, Some("n1"), now()).await,
        "does not publish",
    );
}

#[tokio::test]
async fn access_tokens_of_the_provider_carry_their_groups() {
    let idp = TestIdp::start();
    let sso = xi_oidc::Sso::new(
        settings(idp.issuer(), idp.client_secret(), json!({})),
        std::sync::Arc::new(xi_auth::SystemClock),
    )
    .unwrap();
    let token = idp.client_credentials_token(SERVICE_CLIENT).await;
    let user = sso
        .bearer(&token)
        .await
        .expect("a JWT with an issuer")
        .unwrap();
    assert_eq!(user.username, SERVICE_CLIENT);
    assert_eq!(user.permissions.names(), ["models:list", "models:read"]);
    let admin = idp.client_credentials_token(SERVICE_ADMIN_CLIENT).await;
    let user = sso.bearer(&admin).await.unwrap().unwrap();
    assert_eq!(user.permissions.names(), ["admin"]);

    // An ID token (audience: the web client) is not an access token for the API.
    let id_token = signed(&idp, "rsa", &id_claims(&idp));
    let err = sso.bearer(&id_token).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("audience"), "{err}");
    // A token of an issuer we do not know, and one of ours (no issuer), and an api key.
    let stranger = with(id_claims(&idp), "iss", json!("https://elsewhere.example"));
    let stranger = with(stranger, "aud", json!(API_AUDIENCE));
    let err = sso
        .bearer(&signed(&idp, "rsa", &stranger))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("not accepted here"), "{err}");
    let ours = forged(
        json!({"alg": "HS256"}),
        &json!({"sub": "a", "exp": 1}),
        b"x",
    );
    assert!(sso.bearer(&ours).await.is_none());
    assert!(sso.bearer("xf-0123456789abcdef").await.is_none());

    // An access token's azp names the client that asked for it: any client may.
    let now = now();
    let service = json!({"iss": idp.issuer(), "sub": "svc", "aud": [API_AUDIENCE, "account"],
        "azp": "billing-service", "iat": now, "exp": now + 300});
    sso.bearer(&signed(&idp, "rsa", &service))
        .await
        .unwrap()
        .unwrap();

    // Where the API's audience is the client's own id (Entra's default), an ID token still is
    // not an access token.
    let same = xi_oidc::Sso::new(
        settings(
            idp.issuer(),
            idp.client_secret(),
            json!({"api_audience": xi_testkit::oidc::WEB_CLIENT}),
        ),
        std::sync::Arc::new(xi_auth::SystemClock),
    )
    .unwrap();
    let err = same.bearer(&id_token).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("not an access token"), "{err}");
}
