//! Provider access tokens on the API, a provider that is down, and every way to configure
//! providers (a file, flags and environment, the auth config's section).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use xi_testkit::oidc::{
    browser_client, browserless_login, TestIdp, API_AUDIENCE, SERVICE_ADMIN_CLIENT, SERVICE_CLIENT,
    WEB_CLIENT, WEB_CLIENT_EDDSA, WEB_CLIENT_ES256,
};

use crate::support::{get_json, run_to_exit, token, write_json, Local};

use super::*;

#[tokio::test]
async fn provider_access_tokens_work_on_the_api_within_their_groups() {
    let sso = Sso::start();
    let service = sso.idp.client_credentials_token(SERVICE_CLIENT).await;
    assert_eq!(get_as(&sso.local, "/v1/models", &service).await.0, 200);
    assert_eq!(get_as(&sso.local, "/v1/admin/users", &service).await.0, 403);
    let me = whoami(&sso.local, &service).await;
    assert_eq!(me["username"], "testidp:xi-service");
    let admin = sso.idp.client_credentials_token(SERVICE_ADMIN_CLIENT).await;
    assert_eq!(get_as(&sso.local, "/v1/admin/users", &admin).await.0, 200);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = json!({"iss": sso.idp.issuer(), "sub": "svc", "aud": API_AUDIENCE,
        "iat": now, "exp": now + 300, "groups": ["xi-admins"]});
    assert_eq!(
        get_as(
            &sso.local,
            "/v1/admin/users",
            &signed(&sso.idp, &good, None)
        )
        .await
        .0,
        200,
        "a good token signed by the provider's key (the refusals below can fail)"
    );
    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let other = TestIdp::start();
    let (_, other_pem) = other.rsa_key();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(sso.idp.rsa_key().0.to_string());
    let foreign_key = jsonwebtoken::encode(
        &header,
        &good,
        &EncodingKey::from_rsa_pem(other_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let alg_none = format!("{}.{}.", part(&json!({"alg": "none"})), part(&good));
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(sso.idp.rsa_key().1.as_bytes()).unwrap(),
    )
    .unwrap();
    let refused = [
        (
            "wrong audience",
            signed(&sso.idp, &with("aud", json!(WEB_CLIENT)), None),
        ),
        (
            "expired",
            signed(&sso.idp, &with("exp", json!(now - 600)), None),
        ),
        (
            "unknown issuer",
            signed(&sso.idp, &with("iss", json!("https://other.example")), None),
        ),
        (
            "unknown kid",
            signed(&sso.idp, &good, Some("not-a-key-of-the-provider")),
        ),
        ("another key", foreign_key),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
    ];
    for (what, token) in refused {
        let res = Client::new()
            .get(sso.local.url("/v1/admin/users"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let (status, message) = detail(res).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(message, "Could not validate credentials", "{what}");
    }
}

#[tokio::test]
async fn a_provider_that_is_down_is_503_and_passwords_still_work() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("oidc.json");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    // Port 9 (discard) is closed here: nothing answers.
    write_json(
        &config,
        &provider_config("http://127.0.0.1:9", secret.to_str().unwrap()),
    );
    let local = Local::start(
        &dir.path().join("home"),
        &["--auth", "--oidc-config", config.to_str().unwrap()],
    );
    let res = Client::new()
        .get(local.url("/api/oidc/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key(reqwest::header::RETRY_AFTER));
    let (_, message) = detail(res).await;
    assert!(
        message.contains("unreachable") && message.contains("password"),
        "{message}"
    );
    let (status, _) = detail(post_json(&local, "/v1/auth/sso/device", json!({})).await).await;
    assert_eq!(status, 503);
    token(
        &Client::new(),
        &local.url,
        "admin",
        &local.bootstrap_password(),
    )
    .await;
}

#[test]
fn bad_single_sign_on_config_stops_startup_naming_the_field() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("oidc.json");
    let mut bad = provider_config("http://id.example.com", "/nonexistent");
    bad["providers"][0]["client_secret_file"] = Value::Null;
    bad["providers"][0]["client_secret"] = json!("inline");
    write_json(&config, &bad);
    let home = dir.path().join("home");
    let (status, _, stderr) = run_to_exit(
        &home,
        &["--auth", "--oidc-config", config.to_str().unwrap()],
    );
    assert!(!status.success());
    assert!(
        stderr.contains("providers[0].issuer") && stderr.contains("https"),
        "{stderr}"
    );

    write_json(
        &config,
        &provider_config("https://id.example.com", "/nonexistent/secret"),
    );
    let (status, _, stderr) = run_to_exit(
        &home,
        &["--auth", "--oidc-config", config.to_str().unwrap()],
    );
    assert!(!status.success());
    assert!(stderr.contains("client_secret_file"), "{stderr}");

    std::fs::write(dir.path().join("secret"), "s").unwrap();
    let secret = dir.path().join("secret");
    write_json(
        &config,
        &provider_config("https://id.example.com", secret.to_str().unwrap()),
    );
    let (status, _, stderr) = run_to_exit(&home, &["--oidc-config", config.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("needs auth on"), "{stderr}");
}

#[tokio::test]
async fn one_provider_from_flags_and_environment_beside_a_file_of_others() {
    let idp = TestIdp::start();
    let dir = TempDir::new().unwrap();
    // Two more clients of the same provider, whose ID tokens are signed ES256 and EdDSA.
    let config = dir.path().join("oidc.json");
    let secret = idp.client_secret_file();
    let mut file = provider_config(idp.issuer(), secret.to_str().unwrap());
    let template = file["providers"][0].clone();
    let mut providers = Vec::new();
    for (name, client) in [("es", WEB_CLIENT_ES256), ("ed", WEB_CLIENT_EDDSA)] {
        let mut p = template.clone();
        p["name"] = json!(name);
        p["display_name"] = json!(format!("Test IdP ({name})"));
        p["client_id"] = json!(client);
        providers.push(p);
    }
    // A provider only members of xi-users may use, without device logins.
    let mut ops = template.clone();
    ops["name"] = json!("ops");
    ops["required_groups"] = json!(["xi-users"]);
    ops["device_flow"] = json!(false);
    providers.push(ops);
    file["providers"] = json!(providers);
    write_json(&config, &file);
    let local = Local::start_with_env(
        &dir.path().join("home"),
        &[
            "--auth",
            "--oidc-config",
            config.to_str().unwrap(),
            "--oidc-issuer",
            idp.issuer(),
            "--oidc-client-id",
            WEB_CLIENT,
            "--oidc-name",
            "corp",
            "--oidc-scopes",
            "openid,profile,groups",
            "--oidc-group-permission",
            "xi-admins=admin",
            "--oidc-group-permission",
            "xi-users=models:list+models:read",
        ],
        &[("XINFERENCE_OIDC_CLIENT_SECRET", idp.client_secret())],
    );
    let providers: Value = get_json(&Client::new(), local.url("/v1/auth/sso/providers")).await;
    let names: Vec<&str> = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["es", "ed", "ops", "corp"]);
    let secret_shown = local.logs().contains(idp.client_secret());
    assert!(!secret_shown, "the client secret is never logged");

    // Each provider logs alice in (RS256, ES256 and EdDSA ID tokens); one issuer and subject
    // are one user, whichever client of that issuer she came through.
    let mut ids = Vec::new();
    for name in ["corp", "es", "ed"] {
        let browser = browser_client();
        let start = local.url(&format!("/api/oidc/authorize?provider={name}"));
        let callback = browserless_login(&browser, &start, "alice").await;
        let res = browser.get(&callback).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND, "{name}: {}", local.logs());
        let code = location(&res).trim_start_matches("/ui/#/sso/").to_string();
        let tokens: Value = exchange(&browser, &local, &code, None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(tokens["provider"], name);
        let me = whoami(&local, tokens["access_token"].as_str().unwrap()).await;
        assert_eq!(me["permissions"], json!(["admin"]), "{name}");
        ids.push(me["id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");

    // alice is not in xi-users: "ops" keeps her out; bob is, and gets in.
    let browser = browser_client();
    let start = local.url("/api/oidc/authorize?provider=ops");
    let callback = browserless_login(&browser, &start, "alice").await;
    let (status, message) = detail(browser.get(&callback).send().await.unwrap()).await;
    assert_eq!(status, 403);
    assert!(message.contains("Only members of xi-users"), "{message}");
    let browser = browser_client();
    let callback = browserless_login(&browser, &start, "bob").await;
    assert_eq!(
        browser.get(&callback).send().await.unwrap().status(),
        StatusCode::FOUND
    );
    // Its device logins are off: the CLI would use the browser instead.
    let res = post_json(&local, "/v1/auth/sso/device", json!({"provider": "ops"})).await;
    let (status, message) = detail(res).await;
    assert_eq!(status, 400);
    assert!(
        message.contains("does not offer device authorization"),
        "{message}"
    );
    let ui: Value = get_json(&Client::new(), local.url("/v1/cluster/ui_config")).await;
    assert_eq!(
        ui,
        json!({"auth_advanced": true, "oidc_enabled": true, "token_router_enabled": true})
    );
}

#[tokio::test]
async fn the_auth_config_file_may_hold_the_providers() {
    let dir = TempDir::new().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let mut config = crate::support::config(json!([
        {"username": "admin", "password": "admin-password", "permissions": ["admin"]}
    ]));
    config["oidc"] = provider_config("https://id.example.com", secret.to_str().unwrap());
    let path = dir.path().join("auth.json");
    write_json(&path, &config);
    let local = Local::start(
        &dir.path().join("home"),
        &["--auth-config", path.to_str().unwrap()],
    );
    let providers = get_json(&Client::new(), local.url("/v1/auth/sso/providers")).await;
    assert_eq!(providers["providers"][0]["name"], "testidp");
    assert!(
        !local.logs().contains("unknown key"),
        "oidc is a known section"
    );
    // The config file's users log in with passwords as before.
    token(&Client::new(), &local.url, "admin", "admin-password").await;
}
