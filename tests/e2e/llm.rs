//! SmolLM2-135M-Instruct (GGUF) through the real binary: chat and completions, plain and
//! streamed, errors, and a client that goes away mid-stream.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{get_json, Local};

fn launch_body() -> Value {
    json!({
        "model_name": "smollm2-instruct", "model_engine": "candle", "model_format": "ggufv2",
        "quantization": "Q4_1", "model_path": xi_testkit::smollm2_gguf(),
        // f32 weights compute like the unquantized model, so the greedy answer is known.
        "requantize": "F32",
    })
}

fn question(extra: Value) -> Value {
    let mut body = json!({
        "model": "smollm2-instruct",
        "messages": [{ "role": "user", "content": "What is the capital of France?" }],
        "temperature": 0,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn chat_and_completions_plain_and_streamed() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();
    let res = client
        .post(local.url("/v1/models"))
        .json(&launch_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let described: Value = get_json(&client, local.url("/v1/models/smollm2-instruct")).await;
    assert_eq!(described["model_type"], "LLM");
    assert_eq!(described["model_ability"], json!(["chat"]));

    let body: Value = client
        .post(local.url("/v1/chat/completions"))
        .json(&question(json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"],
        json!({ "role": "assistant", "content": "The capital of France is Paris." })
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 37);
    assert_eq!(body["usage"]["completion_tokens"], 7);

    let text = client
        .post(local.url("/v1/chat/completions"))
        .json(&question(json!({ "stream": true })))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, "The capital of France is Paris.");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 7);

    let body: Value = client
        .post(local.url("/v1/completions"))
        .json(&json!({ "model": "smollm2-instruct", "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert!(
        body["choices"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{body}"
    );

    // Nulls for unset fields, as some clients send them, are fine.
    let stop: Value = client
        .post(local.url("/v1/chat/completions"))
        .json(&question(
            json!({ "stop": [" Paris"], "stop_token_ids": null, "seed": null, "top_p": null }),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stop["choices"][0]["message"]["content"],
        "The capital of France is"
    );
    assert_eq!(stop["choices"][0]["finish_reason"], "stop");

    let long = "word ".repeat(9000);
    let bad: Vec<(Value, &str, u16, &str)> = vec![
        (
            json!({ "model": "smollm2-instruct", "messages": [] }),
            "/v1/chat/completions",
            400,
            "Invalid input. Please specify the prompt.",
        ),
        (
            json!({ "model": "smollm2-instruct", "messages": [{ "role": "assistant", "content": "hi" }] }),
            "/v1/chat/completions",
            400,
            "Invalid input. Please specify the prompt.",
        ),
        (
            question(json!({ "temperature": 3 })),
            "/v1/chat/completions",
            400,
            "temperature",
        ),
        (
            json!({ "model": "smollm2-instruct", "messages": [{ "role": "user", "content": long }] }),
            "/v1/chat/completions",
            400,
            "but the model's context is 8192 tokens",
        ),
        (
            json!({ "model": "ghost", "messages": [] }),
            "/v1/chat/completions",
            404,
            "uid: ghost",
        ),
        (
            json!({ "model": "smollm2-instruct", "prompt": "x", "logit_bias": {"1": 2} }),
            "/v1/completions",
            501,
            "logit_bias",
        ),
        (
            json!({ "model": "smollm2-instruct", "input": "x" }),
            "/v1/embeddings",
            400,
            "does not support embeddings",
        ),
    ];
    for (body, path, status, needle) in bad {
        let res = client
            .post(local.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let got = res.status().as_u16();
        let reply: Value = res.json().await.unwrap();
        assert_eq!(got, status, "{path} {reply}");
        assert!(
            reply["detail"].as_str().unwrap().contains(needle),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn a_client_that_goes_away_stops_its_generation() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();
    let res = client
        .post(local.url("/v1/models"))
        .json(&launch_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A long sampled story, streamed; read one chunk, then hang up.
    let body = json!({
        "model": "smollm2-instruct", "stream": true, "max_tokens": 4000, "temperature": 1.0, "seed": 3,
        "messages": [{ "role": "user", "content": "Write a very long story about a lighthouse." }],
    });
    let res = client
        .post(local.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    // The replica generates one sequence at a time: this answer comes back only if the
    // abandoned generation stopped (4000 tokens would take minutes).
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        client
            .post(local.url("/v1/chat/completions"))
            .json(&question(json!({ "max_tokens": 8 })))
            .send(),
    )
    .await
    .expect("the abandoned generation kept the model busy")
    .unwrap();
    assert_eq!(res.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(30));
}
