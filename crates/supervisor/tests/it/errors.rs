//! Error shapes: always JSON `{"detail": ...}`, the right status, no secrets; login details.

use std::sync::Arc;

use reqwest::Client;
use serde_json::{json, Value};
use xi_api::worker::{GenerateEvent, Worker, WorkerError, WorkerErrorKind};
use xi_auth::ThrottlePolicy;
use xi_supervisor::SupervisorConfig;
use xi_testkit::FakeWorker;

use crate::support::{auth_config, json_of, login, TestServer, SECRET};

fn users() -> Value {
    auth_config(&[
        (
            "alice",
            "alice-password-1",
            &["admin"],
            &["sk-AliceKey12345"],
        ),
        ("bob", "bob-password-22", &["models:list"], &[]),
    ])
}

fn server_with(edit: impl FnOnce(&mut SupervisorConfig)) -> TestServer {
    let dir = tempfile::TempDir::new().unwrap();
    let auth = dir.path().join("auth.json");
    std::fs::write(&auth, users().to_string()).unwrap();
    let mut config = SupervisorConfig::new(dir.path().join("home"));
    config.auth_config = Some(auth);
    edit(&mut config);
    TestServer::start(config, Some(dir))
}

fn assert_no_secret(body: &Value) {
    let text = body.to_string();
    for secret in [
        SECRET,
        "alice-password-1",
        "bob-password-22",
        "sk-AliceKey12345",
    ] {
        assert!(!text.contains(secret), "a secret leaked into {text}");
    }
}

#[tokio::test]
async fn unknown_routes_wrong_methods_bad_bodies_are_json_errors() {
    let server = server_with(|c| c.max_body_bytes = 4096);
    let client = Client::new();
    let key = "sk-AliceKey12345";
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client.get(server.url("/v1/nope")).bearer_auth(key),
            404,
            "Not Found",
        ),
        (
            client.put(server.url("/v1/models")).bearer_auth(key),
            405,
            "Method not allowed",
        ),
        (
            client.patch(server.url("/status")),
            401,
            "Not authenticated",
        ),
        (
            client
                .post(server.url("/v1/models"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body("{not json"),
            422,
            "",
        ),
        (
            client
                .post(server.url("/v1/models"))
                .bearer_auth(key)
                .json(&json!({ "replica": "two" })),
            422,
            "",
        ),
        (
            client
                .post(server.url("/v1/models"))
                .bearer_auth(key)
                .json(&json!({ "model_name": "x".repeat(5000) })),
            413,
            "",
        ),
        (
            client.post(server.url("/token")).body("x".repeat(5000)),
            413,
            "",
        ),
        (
            client.post(server.url("/token")).body("{}"),
            422,
            "Field required: username",
        ),
        (client.post(server.url("/token")).body("not json"), 422, ""),
        (
            client
                .post(server.url("/token"))
                .json(&json!({ "username": 1, "password": "x" })),
            422,
            "Field username must be a string",
        ),
        (
            client.post(server.url("/token")).form(&[
                ("grant_type", "client_credentials"),
                ("username", "a"),
                ("password", "b"),
            ]),
            422,
            "",
        ),
        (
            client
                .get(server.url("/v1/model_registrations/LLM?detailed=maybe"))
                .bearer_auth(key),
            422,
            "",
        ),
    ];
    for (request, status, detail) in cases {
        let (got, body) = json_of(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{body}");
        let text = body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail string in {body}"));
        assert!(!text.is_empty());
        if !detail.is_empty() {
            assert_eq!(text, detail);
        }
        assert_no_secret(&body);
    }
}

#[tokio::test]
async fn login_by_json_and_by_form_gives_a_pinned_expiring_token() {
    let server = server_with(|_| {});
    let client = Client::new();
    let res = client
        .post(server.url("/token"))
        .json(&json!({ "username": "bob", "password": "bob-password-22" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    let token = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let claims = jsonwebtoken::decode::<Value>(token, &key, &jsonwebtoken::Validation::default())
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["scopes"], json!(["models:list"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        1800
    );

    let res = client
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-password-1"),
            ("scope", ""),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    let alice = body["access_token"].as_str().unwrap();
    let res = client
        .get(server.url("/v1/cluster/version"))
        .bearer_auth(alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn bad_logins_are_401_with_the_same_body_and_then_throttled() {
    let server = server_with(|c| {
        c.throttle = ThrottlePolicy {
            per_user: 3,
            per_address: 100,
            window_secs: 60,
        }
    });
    let client = Client::new();
    for (user, password) in [("bob", "wrong"), ("nobody", "wrong"), ("bob", "")] {
        let res = client
            .post(server.url("/token"))
            .json(&json!({ "username": user, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let (status, body) = json_of(res).await;
        assert_eq!(
            (status, body),
            (401, json!({ "detail": "Incorrect username or password" }))
        );
    }
    // bob has 2 failures; a third makes him throttled, even with the right password.
    let res = client
        .post(server.url("/token"))
        .json(&json!({ "username": "bob", "password": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = client
        .post(server.url("/token"))
        .json(&json!({ "username": "bob", "password": "bob-password-22" }))
        .send()
        .await
        .unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 429);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("Too many failed login attempts"));
    // Other users are unaffected, and their success reveals nothing about bob.
    let token = login(&client, &server, "alice", "alice-password-1").await;
    assert!(!token.is_empty());

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("xinference_login_attempts_total{result=\"throttled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("xinference_login_attempts_total{result=\"failure\"} 4"),
        "{metrics}"
    );
}

/// An internal failure's detail: generic, with a reference, never the cause.
fn assert_generic_internal(detail: &str, cause: &str) {
    let reference = detail
        .strip_prefix("Internal server error; see the server log (ref ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not the generic detail: {detail}"));
    assert!(
        reference.len() == 8 && reference.bytes().all(|b| b.is_ascii_hexdigit()),
        "{detail}"
    );
    assert!(!detail.contains(cause), "the cause leaked: {detail}");
}

#[tokio::test]
async fn internal_failures_are_a_generic_500_or_event_and_never_the_cause() {
    let worker = FakeWorker::new("10.0.0.9:7001");
    let server = TestServer::with_workers(vec![worker.clone() as Arc<dyn Worker>]);
    let client = Client::new();
    let files = tempfile::TempDir::new().unwrap();
    let res = client
        .post(server.url("/v1/models"))
        .json(&json!({
            "model_uid": "chat", "model_name": "smollm2-instruct", "model_type": "LLM",
            "model_path": files.path().to_str().unwrap(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res).await, (200, json!({ "model_uid": "chat" })));

    let cause = "internal error: a KV cache of another kind";
    worker.script_generation(vec![
        GenerateEvent::Text("Hel".into()),
        GenerateEvent::Error(WorkerError::new(WorkerErrorKind::Internal, cause)),
    ]);
    let chat = |stream: bool| {
        client
            .post(server.url("/v1/chat/completions"))
            .json(&json!({
                "model": "chat", "stream": stream,
                "messages": [{ "role": "user", "content": "Hi" }],
            }))
    };
    let text = chat(true).send().await.unwrap().text().await.unwrap();
    let last = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .last()
        .and_then(|e| e.strip_prefix("data: "))
        .unwrap_or_default();
    let event: Value = serde_json::from_str(last).unwrap();
    assert_generic_internal(event["error"].as_str().unwrap(), cause);

    let (status, body) = json_of(chat(false).send().await.unwrap()).await;
    assert_eq!(status, 500, "{body}");
    assert_generic_internal(body["detail"].as_str().unwrap(), cause);
}
