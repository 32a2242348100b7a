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

    // top_k 1 leaves one candidate: sampling at temperature 1 gives the greedy answer.
    let top_k: Value = client
        .post(local.url("/v1/chat/completions"))
        .json(&question(
            json!({ "temperature": 1.0, "top_k": 1, "seed": 11 }),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        top_k["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );

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
            question(json!({ "max_tokens": 0 })),
            "/v1/chat/completions",
            400,
            "max_tokens must be at least 1, got 0",
        ),
        (
            json!({ "model": "smollm2-instruct", "prompt": "x", "max_tokens": -5 }),
            "/v1/completions",
            400,
            "max_tokens must be at least 1, got -5",
        ),
        (
            question(json!({ "max_completion_tokens": 0 })),
            "/v1/chat/completions",
            400,
            "max_tokens must be at least 1",
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
            question(json!({ "n": 1000000 })),
            "/v1/chat/completions",
            400,
            "n must be between 1 and 16, got 1000000",
        ),
        (
            json!({ "model": "smollm2-instruct", "prompt": "x", "best_of": 3 }),
            "/v1/completions",
            400,
            "best_of = 3 is not supported",
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
    // One sequence at a time, so a generation that kept running would block the next request.
    let mut launch = launch_body();
    launch["max_num_seqs"] = json!(1);
    let res = client
        .post(local.url("/v1/models"))
        .json(&launch)
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
    // This answer comes back only if the abandoned generation stopped (4000 tokens would take minutes).
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

#[tokio::test]
async fn concurrent_streams_generate_together() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();
    let mut launch = launch_body();
    launch["requantize"] = json!("Q8_0");
    let res = client
        .post(local.url("/v1/models"))
        .json(&launch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Four streams of 48 tokens each. Batched, every stream has text before any has finished;
    // one at a time, the first would finish before the last began.
    let events = std::sync::Mutex::new(Vec::new());
    let stream = |i: usize| {
        let client = client.clone();
        let url = local.url("/v1/chat/completions");
        let events = &events;
        async move {
            let body = json!({
                "model": "smollm2-instruct", "stream": true, "max_tokens": 48, "ignore_eos": true,
                "temperature": 0.7, "seed": i,
                "messages": [{ "role": "user", "content": format!("Tell story number {i}.") }],
            });
            let res = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let mut chunks = res.bytes_stream();
            let mut seen_text = false;
            let mut text = String::new();
            while let Some(chunk) = chunks.next().await {
                let chunk = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
                text.push_str(&chunk);
                // Text, not the opening role chunk (whose content is "").
                let has_text =
                    chunk.contains("\"content\":\"") && !chunk.contains("\"content\":\"\"");
                if !seen_text && has_text {
                    seen_text = true;
                    events.lock().unwrap().push(("text", i));
                }
            }
            events.lock().unwrap().push(("done", i));
            assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
            assert!(text.trim_end().ends_with("data: [DONE]"));
        }
    };
    futures_util::future::join_all((0..4).map(stream)).await;
    let events = events.into_inner().unwrap();
    let last_text = events.iter().rposition(|e| e.0 == "text").unwrap();
    let first_done = events.iter().position(|e| e.0 == "done").unwrap();
    assert!(
        last_text < first_done,
        "streams did not overlap: {events:?}"
    );
    assert_eq!(events.iter().filter(|e| e.0 == "text").count(), 4);
}

#[tokio::test]
async fn pytorch_format_folders_launch_and_chat_with_the_catalogue_template() {
    // A tiny random-weight Qwen2 saved by transformers (safetensors, no chat template of its
    // own): it launches as `pytorch`, and chat uses qwen2.5-instruct's template.
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();
    let folder = xi_testkit::fixture_path("tiny_llm/qwen2");
    let res = client
        .post(local.url("/v1/models"))
        .json(&json!({
            "model_name": "qwen2.5-instruct", "model_uid": "tiny", "model_engine": "transformers",
            "model_format": "pytorch", "model_size_in_billions": "0_5",
            "model_path": folder,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let body: Value = client
        .post(local.url("/v1/chat/completions"))
        .json(&json!({
            "model": "tiny", "max_tokens": 6, "temperature": 0,
            "messages": [{ "role": "user", "content": "hello there" }],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 6);
    // The template's default system prompt is in the prompt.
    assert!(
        body["usage"]["prompt_tokens"].as_u64().unwrap() > 10,
        "{body}"
    );
}

/// Sets the UINT32 metadata value `key` of a GGUF file's bytes.
fn patch_gguf_u32(bytes: &mut [u8], key: &str, value: u32) {
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .unwrap()
        + key.len();
    let value_type = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(value_type, 4, "{key} is a UINT32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// The attack that aborted the whole server (`llama.block_count = 0xFFFFFFFF`: a 2 TB
/// allocation), and its neighbours, through the real binary: each launch is a 400 naming the
/// field, quickly, and the server then serves the real model.
#[tokio::test]
async fn gguf_files_whose_header_lies_are_a_400_and_the_server_serves_on() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();
    let original = std::fs::read(xi_testkit::smollm2_gguf()).unwrap();
    for (key, value) in [
        ("llama.block_count", u32::MAX),
        ("llama.embedding_length", u32::MAX),
        ("llama.attention.head_count", 0),
        ("llama.attention.head_count_kv", 0),
    ] {
        let mut bytes = original.clone();
        patch_gguf_u32(&mut bytes, key, value);
        let path = dir.path().join("hostile.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let mut launch = launch_body();
        launch["model_path"] = json!(path);
        launch["model_uid"] = json!("hostile");
        let started = std::time::Instant::now();
        let res = client
            .post(local.url("/v1/models"))
            .json(&launch)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 400, "{key}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(key), "{key}: {detail}");
        assert!(!detail.contains("backtrace"), "{detail}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{key} took {:?}",
            started.elapsed()
        );
    }
    let res = client
        .post(local.url("/v1/models"))
        .json(&launch_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = client
        .post(local.url("/v1/chat/completions"))
        .json(&question(json!({ "max_tokens": 4 })))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
