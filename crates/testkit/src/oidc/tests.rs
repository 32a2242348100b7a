//! The provider and the helpers on their own, without our server: a client-credentials
//! token, a code-flow login through the dev forms, and the device flow. About 2 s.

use base64::Engine;
use sha2::{Digest, Sha256};

use reqwest::Url;

use super::*;

fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

#[tokio::test]
async fn client_credentials_give_api_jwts_with_groups() {
    let idp = TestIdp::start();
    for (client, groups) in [
        (SERVICE_CLIENT, "xi-users"),
        (SERVICE_ADMIN_CLIENT, "xi-admins"),
    ] {
        let token = idp.client_credentials_token(client).await;
        let claims = claims(&token);
        assert_eq!(claims["aud"], API_AUDIENCE);
        assert_eq!(claims["iss"], idp.issuer());
        assert_eq!(claims["client_id"], client);
        assert_eq!(claims["groups"], serde_json::json!([groups]));
    }
    let (kid, pem) = idp.rsa_key();
    assert!(!kid.is_empty() && pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(idp.key_paths().iter().all(|p| p.is_file()));
}

#[tokio::test]
async fn code_flow_and_device_flow_through_the_dev_pages() {
    let idp = TestIdp::start();
    let client = browser_client();

    // Code flow straight at the IdP, to a callback on a port nothing listens on.
    let callback = "http://127.0.0.1:9/api/oidc/callback";
    let verifier = "a-verifier-of-at-least-43-characters-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let mut authorize = Url::parse(&format!("{}/auth", idp.issuer())).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", WEB_CLIENT)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", callback)
        .append_pair("scope", "openid profile email groups")
        .append_pair("state", "s1")
        .append_pair("nonce", "n1")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = Url::parse(&browserless_login(&client, authorize.as_str(), "alice").await).unwrap();
    let query: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(back.path(), CALLBACK_PATH);
    assert_eq!(query["state"], "s1");
    let tokens = idp
        .token_request(
            WEB_CLIENT,
            &[
                ("grant_type", "authorization_code"),
                ("code", &query["code"]),
                ("redirect_uri", callback),
                ("code_verifier", verifier),
            ],
        )
        .await
        .unwrap();
    let id = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["nonce"], "n1");
    assert_eq!(id["groups"], serde_json::json!(["xi-admins"]));

    // Cancelling at the consent page (a new client, so consent is asked again).
    authorize
        .query_pairs_mut()
        .clear()
        .append_pair("client_id", WEB_CLIENT_EDDSA)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", callback)
        .append_pair("scope", "openid")
        .append_pair("state", "s2")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let denied = browserless_deny(&client, authorize.as_str(), "alice").await;
    assert!(
        denied.contains("error=access_denied") && denied.contains("state=s2"),
        "{denied}"
    );

    // Device flow: the device asks, the user logs in on another "browser", the device polls.
    let device_auth = |scope: &'static str| {
        let http = reqwest::Client::new();
        let url = format!("{}/device/auth", idp.issuer());
        async move {
            let response = http
                .post(url)
                .basic_auth(WEB_CLIENT, Some(DEFAULT_CLIENT_SECRET))
                .form(&[("scope", scope)])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let grant = "urn:ietf:params:oauth:grant-type:device_code";
    let device = device_auth("openid groups").await;
    let code = device["device_code"].as_str().unwrap();
    complete_device_login(
        &browser_client(),
        device["verification_uri"].as_str().unwrap(),
        device["user_code"].as_str().unwrap(),
        "bob",
    )
    .await;
    let tokens = idp
        .token_request(WEB_CLIENT, &[("grant_type", grant), ("device_code", code)])
        .await
        .unwrap();
    assert_eq!(
        claims(tokens["id_token"].as_str().unwrap())["groups"],
        serde_json::json!(["xi-users"])
    );

    let device = device_auth("openid").await;
    deny_device_login(
        &browser_client(),
        device["verification_uri_complete"].as_str().unwrap(),
        device["user_code"].as_str().unwrap(),
    )
    .await;
    let refused = idp
        .token_request(
            WEB_CLIENT,
            &[
                ("grant_type", grant),
                ("device_code", device["device_code"].as_str().unwrap()),
            ],
        )
        .await
        .unwrap_err();
    assert!(refused.contains("access_denied"), "{refused}");

    // RP-initiated logout with the session from the code flow above.
    let mut logout = Url::parse(&format!("{}/session/end", idp.issuer())).unwrap();
    logout
        .query_pairs_mut()
        .append_pair("client_id", WEB_CLIENT)
        .append_pair("post_logout_redirect_uri", "http://127.0.0.1:9/ui/")
        .append_pair("state", "bye");
    let back = browserless_logout(&client, logout.as_str()).await;
    assert_eq!(back, "http://127.0.0.1:9/ui/?state=bye");
}
