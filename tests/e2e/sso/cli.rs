//! The command line's flows: the loopback redirect bound to its verifier, device logins, and
//! `xinference login --sso` end to end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use xi_testkit::oidc::{
    browser_client, browserless_deny, browserless_login, complete_device_login, deny_device_login,
};

use super::*;

#[tokio::test]
async fn the_cli_loopback_flow_binds_the_code_to_its_verifier() {
    let sso = Sso::start();
    let verifier = "the-cli-verifier-0123456789-0123456789-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let start = |redirect: &str| {
        sso.local.url(&format!(
            "/api/oidc/authorize?provider=testidp&cli_redirect={redirect}&cli_challenge={challenge}"
        ))
    };
    let loopback = "http://127.0.0.1:4711/callback";
    let cli_code = |res: &reqwest::Response| {
        let to = location(res);
        assert!(to.starts_with(loopback), "back to the CLI: {to}");
        param(&to, "code")
    };

    // Without the verifier the code is refused, and spent.
    let browser = browser_client();
    let callback = browserless_login(&browser, &start(loopback), "alice").await;
    let code = cli_code(&browser.get(&callback).send().await.unwrap());
    assert_eq!(
        exchange(&browser, &sso.local, &code, None).await.status(),
        400
    );
    assert_eq!(
        exchange(&Client::new(), &sso.local, &code, Some(verifier))
            .await
            .status(),
        400
    );
    // With it, the tokens.
    let callback = browserless_login(&browser, &start(loopback), "alice").await;
    let code = cli_code(&browser.get(&callback).send().await.unwrap());
    assert_eq!(
        exchange(&Client::new(), &sso.local, &code, Some("wrong"))
            .await
            .status(),
        400
    );
    let callback = browserless_login(&browser, &start(loopback), "alice").await;
    let code = cli_code(&browser.get(&callback).send().await.unwrap());
    let res = exchange(&Client::new(), &sso.local, &code, Some(verifier)).await;
    assert_eq!(res.status(), 200);

    // A failure goes back to the waiting CLI too, so it can stop at once.
    let denier = browser_client();
    let denied = browserless_deny(&denier, &start(loopback), "alice").await;
    let res = denier.get(&denied).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(param(&location(&res), "error"), "login_failed");

    // Only loopback addresses with a port may receive a login.
    for bad in [
        "http://evil.example:80/cb",
        "https://127.0.0.1:4711/cb",
        "http://127.0.0.1/cb",
    ] {
        let (status, message) = detail(Client::new().get(start(bad)).send().await.unwrap()).await;
        assert_eq!(status, 400, "{bad}");
        assert!(message.contains("cli_redirect"), "{message}");
    }
}

#[tokio::test]
async fn device_logins_wait_for_the_user_then_open_a_session() {
    let sso = Sso::start();
    let start = |_: ()| {
        post_json(
            &sso.local,
            "/v1/auth/sso/device",
            json!({"provider": "testidp"}),
        )
    };
    let granted: Value = start(()).await.json().await.unwrap();
    let denied: Value = start(()).await.json().await.unwrap();
    let poll = |handle: &Value| {
        post_json(
            &sso.local,
            "/v1/auth/sso/device/token",
            json!({ "handle": handle }),
        )
    };
    let (status, message) = detail(poll(&granted["handle"]).await).await;
    assert_eq!(
        (status.as_u16(), message.as_str()),
        (400, "authorization_pending")
    );
    // Polling faster than the interval is answered here, without asking the provider.
    let (_, message) = detail(poll(&granted["handle"]).await).await;
    assert_eq!(message, "slow_down");

    let uri = granted["verification_uri"].as_str().unwrap();
    complete_device_login(
        &browser_client(),
        uri,
        granted["user_code"].as_str().unwrap(),
        "bob",
    )
    .await;
    deny_device_login(
        &browser_client(),
        uri,
        denied["user_code"].as_str().unwrap(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(
        granted["interval"].as_u64().unwrap() + 1,
    ))
    .await;

    let res = poll(&granted["handle"]).await;
    assert_eq!(res.status(), 200, "{}", sso.idp.log());
    let tokens: Value = res.json().await.unwrap();
    let me = whoami(&sso.local, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(me["username"], "bob");
    assert!(tokens["refresh_token"].is_string());
    // The handle is spent.
    let (_, message) = detail(poll(&granted["handle"]).await).await;
    assert_eq!(message, "expired_token");
    let (_, message) = detail(poll(&denied["handle"]).await).await;
    assert_eq!(message, "access_denied");
}

#[tokio::test]
async fn xinference_login_sso_stores_tokens_the_cli_then_uses() {
    let sso = Sso::start();
    let dir = TempDir::new().unwrap();
    let mut cli = Command::new(env!("CARGO_BIN_EXE_xinference"))
        .env("XINFERENCE_HOME", dir.path())
        .env_remove("XINFERENCE_ENDPOINT")
        .env_remove("XINFERENCE_API_KEY")
        .args(["login", "--sso", "--no-browser", "-e", &sso.local.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(cli.stderr.take().unwrap());
    let mut prompt = String::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains("enter the code") {
            prompt = line;
            break;
        }
    }
    let (uri, code) = prompt
        .trim_start_matches("To log in, open ")
        .split_once(" and enter the code ")
        .unwrap_or_else(|| panic!("the device prompt: {prompt:?}"));
    complete_device_login(&browser_client(), uri, code.trim(), "alice").await;
    let out = tokio::task::spawn_blocking(move || cli.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("as alice"), "{stdout}");

    let list = Command::new(env!("CARGO_BIN_EXE_xinference"))
        .env("XINFERENCE_HOME", dir.path())
        .env_remove("XINFERENCE_API_KEY")
        .args(["list", "-e", &sso.local.url])
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
}
