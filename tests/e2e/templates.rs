//! Hostile chat templates (a `chat_template` launch option) against the real binary: each is a
//! 400 naming the limit it hit, within seconds; the server's own memory never sees the
//! template's strings; other models keep chatting; and terminating a model does not wait for
//! a render in progress.

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{post, Local};

/// Three nested loops: a billion iterations.
const LOOPS: &str = "{% for a in range(1000) %}{% for b in range(1000) %}\
    {% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}";
/// A string doubled 40 times from 100 MB: one instruction per doubling, so only a memory limit
/// stops it.
const DOUBLING: &str = "{% set ns = namespace(s='x'*100000000) %}{% for i in range(40) %}\
    {% set ns.s = ns.s ~ ns.s %}{% endfor %}";
/// 100 MB of output from cheap iterations.
const OUTPUT: &str = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}";
/// Inside the fuel and the memory limit, but each iteration copies 50 MB: about 1000 s.
const SLOW: &str = "{% set s = 'x' * 50000000 %}{% for i in range(100000) %}\
    {% if (s ~ i) == s %}{% endif %}{% endfor %}";

/// Launches the tiny Qwen2 fixture (no template of its own) as `uid`, with `template` as its
/// `chat_template` launch option, or the catalogue's template when `None`.
async fn launch(client: &Client, local: &Local, uid: &str, template: Option<&str>) {
    let mut body = json!({
        "model_name": "qwen2.5-instruct", "model_uid": uid, "model_engine": "transformers",
        "model_format": "pytorch", "model_size_in_billions": "0_5",
        "model_path": xi_testkit::fixture_path("tiny_llm/qwen2"),
    });
    if let Some(template) = template {
        body["chat_template"] = json!(template);
    }
    let (status, reply) = post(client, local.url("/v1/models"), None, body).await;
    assert_eq!(status, 200, "launch {uid}: {reply}");
}

async fn chat(client: &Client, local: &Local, uid: &str) -> (u16, Value) {
    let body = json!({
        "model": uid, "max_tokens": 4, "temperature": 0,
        "messages": [{ "role": "user", "content": "hello there" }],
    });
    post(client, local.url("/v1/chat/completions"), None, body).await
}

/// A client that gives up on a request after 30 s (a render without limits runs for hours).
fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Peak resident memory of a process, in MiB (Linux).
fn peak_rss_mib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[tokio::test]
async fn hostile_templates_are_refused_by_name_and_the_server_stays_up() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = client();
    let cases = [
        (
            "loops",
            LOOPS,
            "the chat template exceeded its instruction budget (fuel 2000000)",
        ),
        (
            "doubling",
            DOUBLING,
            "the chat template exceeded its memory limit of 512 MiB",
        ),
        (
            "output",
            OUTPUT,
            "the chat template exceeded its output limit of 33554432 bytes",
        ),
    ];
    for (uid, template, _) in cases {
        launch(&client, &local, uid, Some(template)).await;
    }
    for round in 0..2 {
        for (uid, _, expected) in cases {
            let started = Instant::now();
            let (status, body) = chat(&client, &local, uid).await;
            let took = started.elapsed();
            assert_eq!(status, 400, "{uid}: {body}");
            assert_eq!(body["detail"], expected, "{uid}");
            assert!(
                took < Duration::from_secs(10),
                "{uid} (round {round}) took {took:?}"
            );
        }
    }
    // The hostile models and the server are still there, and a normal model chats.
    launch(&client, &local, "tiny", None).await;
    let (status, body) = chat(&client, &local, "tiny").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4, "{body}");
    let (status, body) = chat(&client, &local, "loops").await;
    assert_eq!(status, 400, "{body}");
    // Gigabytes were allocated, in the sandbox: the server itself stayed small.
    if let Some(peak) = peak_rss_mib(&local.pid()) {
        assert!(peak < 1024, "the server's peak RSS is {peak} MiB");
    }
}

#[tokio::test]
async fn a_slow_template_hits_the_time_limit_and_terminate_does_not_wait_for_it() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = client();
    launch(&client, &local, "slow", Some(SLOW)).await;

    let started = Instant::now();
    let (status, body) = chat(&client, &local, "slow").await;
    let took = started.elapsed();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["detail"],
        "the chat template exceeded its time limit of 3000 ms"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");

    // A render in progress, then a terminate: it returns at once, not after the render.
    let render = tokio::spawn({
        let (client, url) = (client.clone(), local.url("/v1/chat/completions"));
        async move {
            let body = json!({
                "model": "slow", "max_tokens": 4,
                "messages": [{ "role": "user", "content": "hello there" }],
            });
            post(&client, url, None, body).await
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = Instant::now();
    let res = client
        .delete(local.url("/v1/models/slow"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert!(
        took < Duration::from_millis(1500),
        "terminate took {took:?}"
    );
    let (status, body) = render.await.unwrap();
    assert!(status == 400 || status == 404, "{status}: {body}");

    // The server serves on.
    launch(&client, &local, "tiny", None).await;
    let (status, body) = chat(&client, &local, "tiny").await;
    assert_eq!(status, 200, "{body}");
}
