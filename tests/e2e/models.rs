//! Real models through the real binary: launch, embeddings, rerank, lifecycle, backpressure.

use std::time::Duration;

use base64::Engine as _;
use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{
    build_cross_encoder, config, eventually, fixture, get_json, minilm, post, token, write_json,
    Local,
};

fn launch_minilm(uid: &str, replica: u32) -> Value {
    json!({
        "model_uid": uid, "model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
        "model_path": minilm(), "replica": replica,
    })
}

fn max_abs_diff(a: &Value, b: &Value) -> f64 {
    let a = a.as_array().unwrap();
    let b = b.as_array().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs())
        .fold(0.0, f64::max)
}

#[tokio::test]
async fn embeddings_with_auth_match_sentence_transformers() {
    let dir = TempDir::new().unwrap();
    let auth_path = dir.path().join("auth.json");
    write_json(
        &auth_path,
        &config(json!([
            { "username": "admin", "password": "admin-pass-123", "permissions": ["admin"] },
            { "username": "reader", "password": "reader-pass-1", "permissions": ["models:list", "models:read"],
              "api_keys": ["sk-ReaderKey0001"] },
        ])),
    );
    let local = Local::start(
        &dir.path().join("home"),
        &["--auth-config", auth_path.to_str().unwrap()],
    );
    let client = Client::new();
    let admin = token(&client, &local.url, "admin", "admin-pass-123").await;
    let reader = token(&client, &local.url, "reader", "reader-pass-1").await;

    let (status, body) = post(
        &client,
        local.url("/v1/models"),
        Some(&reader),
        launch_minilm("mini", 1),
    )
    .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (403, Some("Not enough permissions"))
    );
    let (status, body) = post(
        &client,
        local.url("/v1/models"),
        Some(&admin),
        launch_minilm("mini", 1),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({ "model_uid": "mini" })));

    let res = client
        .get(local.url("/v1/models"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let models: Value = res.json().await.unwrap();
    let model = &models["data"][0];
    assert_eq!(
        (model["id"].as_str(), model["model_type"].as_str()),
        (Some("mini"), Some("embedding"))
    );
    assert_eq!(
        (model["dimensions"].as_u64(), model["max_tokens"].as_u64()),
        (Some(384), Some(256))
    );

    let reference = fixture("minilm_embeddings.json");
    let sentences = reference["sentences"].clone();
    let (status, body) = post(
        &client,
        local.url("/v1/embeddings"),
        Some("sk-ReaderKey0001"),
        json!({ "model": "mini", "input": sentences }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "mini");
    assert_eq!(body["model_replica"], "mini-0");
    let data = body["data"].as_array().unwrap();
    assert_eq!(
        data.len(),
        reference["embeddings"].as_array().unwrap().len()
    );
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["object"], "embedding");
        let diff = max_abs_diff(&item["embedding"], &reference["embeddings"][i]);
        assert!(diff <= 1e-5, "sentence {i} differs by {diff}");
    }
    let tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > 256 && tokens < 400, "real token count: {tokens}");

    // One string: "hello world" is [CLS] hello world [SEP].
    let (_, one) = post(
        &client,
        local.url("/v1/embeddings"),
        Some(&reader),
        json!({ "model": "mini", "input": "Hello world" }),
    )
    .await;
    assert_eq!(
        one["usage"],
        json!({ "prompt_tokens": 4, "total_tokens": 4 })
    );
    // base64 is the little-endian f32 bytes of the same vector.
    let (_, b64) = post(
        &client,
        local.url("/v1/embeddings"),
        Some(&reader),
        json!({ "model": "mini", "input": "Hello world", "encoding_format": "base64" }),
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = bytes
        .chunks(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    assert!(max_abs_diff(&json!(floats), &one["data"][0]["embedding"]) < 1e-12);
    // Token ids embed like their text.
    let (_, ids) = post(
        &client,
        local.url("/v1/embeddings"),
        Some(&reader),
        json!({ "model": "mini", "input": [101, 7592, 2088, 102] }),
    )
    .await;
    assert_eq!(
        max_abs_diff(&ids["data"][0]["embedding"], &one["data"][0]["embedding"]),
        0.0
    );

    let bad: Vec<(Value, u16, &str)> = vec![
        (
            json!({ "model": "ghost", "input": "x" }),
            404,
            "Model not found in the model list, uid: ghost",
        ),
        (
            json!({ "model": "mini", "input": [] }),
            400,
            "input must not be empty",
        ),
        (
            json!({ "model": "mini", "input": {"a": 1} }),
            400,
            "input must be a string",
        ),
        (
            json!({ "model": "mini", "input": [[1, 2], []] }),
            400,
            "non-empty",
        ),
        (
            json!({ "model": "mini", "input": [101, 99999999, 102] }),
            400,
            "outside the vocabulary",
        ),
        (
            json!({ "model": "mini", "input": "x", "encoding_format": "hex" }),
            400,
            "encoding_format",
        ),
        (
            json!({ "model": "mini", "input": "x", "dimensions": 128 }),
            400,
            "384-dimensional",
        ),
        (
            json!({ "model": "mini", "input": "word ".repeat(300), "truncate": false }),
            400,
            "302 tokens but the model accepts at most 256",
        ),
        (json!({ "input": "x" }), 422, "model"),
    ];
    for (body, status, needle) in bad {
        let (got, reply) = post(
            &client,
            local.url("/v1/embeddings"),
            Some(&reader),
            body.clone(),
        )
        .await;
        assert_eq!(got, status, "{body} -> {reply}");
        assert!(
            reply["detail"].as_str().unwrap().contains(needle),
            "{body} -> {reply}"
        );
    }
    let (status, _) = post(
        &client,
        local.url("/v1/rerank"),
        Some(&reader),
        json!({ "model": "mini", "query": "q", "documents": ["d"] }),
    )
    .await;
    assert_eq!(status, 400, "an embedding model does not rerank");
    let (status, _) = post(
        &client,
        local.url("/v1/chat/completions"),
        Some(&reader),
        json!({ "model": "mini", "messages": [] }),
    )
    .await;
    assert_eq!(status, 400, "an embedding model does not chat");

    let res = client
        .delete(local.url("/v1/models/mini"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = client
        .delete(local.url("/v1/models/mini"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, _) = post(
        &client,
        local.url("/v1/embeddings"),
        Some(&reader),
        json!({ "model": "mini", "input": "x" }),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn rerank_from_a_registered_model_uri_matches_pytorch() {
    let dir = TempDir::new().unwrap();
    let model_dir = dir.path().join("cross-encoder");
    std::fs::create_dir_all(&model_dir).unwrap();
    build_cross_encoder(&model_dir);
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();
    let registration = json!({
        "model_name": "my-cross-encoder", "type": "normal", "language": ["en"], "max_tokens": 512,
        "model_specs": [{ "model_format": "pytorch", "model_uri": model_dir, "quantization": "none" }],
    });
    let (status, body) = post(
        &client,
        local.url("/v1/model_registrations/rerank"),
        None,
        json!({ "model": registration.to_string(), "worker_ip": null, "persist": true }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &client,
        local.url("/v1/models"),
        None,
        json!({ "model_name": "my-cross-encoder", "model_type": "rerank" }),
    )
    .await;
    assert_eq!(status, 200, "launch from model_uri: {body}");

    let f = fixture("minilm_cross_encoder.json");
    let pairs = f["pairs"].as_array().unwrap();
    let query = pairs[0][0].as_str().unwrap();
    let documents: Vec<&str> = pairs[..3].iter().map(|p| p[1].as_str().unwrap()).collect();
    let expected: Vec<f64> = f["scores"].as_array().unwrap()[..3]
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    let (status, body) = post(
        &client,
        local.url("/v1/rerank"),
        None,
        json!({ "model": "my-cross-encoder", "query": query, "documents": documents, "return_documents": true, "return_len": true }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let mut previous = f64::INFINITY;
    for result in results {
        let index = result["index"].as_u64().unwrap() as usize;
        let score = result["relevance_score"].as_f64().unwrap();
        assert!(
            (score - expected[index]).abs() <= 1e-5,
            "document {index}: {score} vs {}",
            expected[index]
        );
        assert!(score <= previous, "sorted by relevance");
        previous = score;
        assert_eq!(result["document"], json!({ "text": documents[index] }));
    }
    let tokens = &body["meta"]["tokens"];
    assert!(tokens["input_tokens"].as_u64().unwrap() > 20, "{body}");
    assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));

    let (_, top) = post(
        &client,
        local.url("/v1/rerank"),
        None,
        json!({ "model": "my-cross-encoder", "query": query, "documents": documents, "top_n": 1 }),
    )
    .await;
    assert_eq!(top["results"].as_array().unwrap().len(), 1);
    assert_eq!(top["results"][0]["document"], Value::Null);
    assert_eq!(top["meta"]["tokens"], Value::Null);
    let (status, body) = post(
        &client,
        local.url("/v1/rerank"),
        None,
        json!({ "model": "my-cross-encoder", "query": "q", "documents": [] }),
    )
    .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (400, Some("documents must not be empty"))
    );
}

#[tokio::test]
async fn background_launch_progress_replicas_and_bad_folders() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();

    let (status, body) = post(
        &client,
        local.url("/v1/models?wait_ready=false"),
        None,
        launch_minilm("bg", 2),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({ "model_uid": "bg" })));
    let ready = eventually(Duration::from_secs(60), || async {
        let progress: Value = get_json(&client, local.url("/v1/models/bg/progress")).await;
        progress["progress"].as_f64() == Some(1.0)
    })
    .await;
    assert!(ready, "the background launch finished");
    let instances: Value = get_json(&client, local.url("/v1/models/instances?model_uid=bg")).await;
    assert_eq!(instances[0]["status"], "READY");
    assert_eq!(
        instances[0]["replica_statuses"].as_array().unwrap().len(),
        2
    );
    let described: Value = get_json(&client, local.url("/v1/models/bg")).await;
    assert_eq!(described["replica"], 2);

    let mut replicas = Vec::new();
    for _ in 0..4 {
        let (_, body) = post(
            &client,
            local.url("/v1/embeddings"),
            None,
            json!({ "model": "bg", "input": "x" }),
        )
        .await;
        replicas.push(body["model_replica"].as_str().unwrap().to_string());
    }
    assert_eq!(
        replicas,
        ["bg-0", "bg-1", "bg-0", "bg-1"],
        "round-robin over replicas"
    );

    let (status, body) = post(
        &client,
        local.url("/v1/models"),
        None,
        launch_minilm("bg", 1),
    )
    .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (400, Some("Model is already in the model list, uid: bg"))
    );
    let (status, body) = post(&client, local.url("/v1/models/bg/cancel"), None, json!({})).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (400, Some("Model bg is not being launched"))
    );
    let res = client
        .delete(local.url("/v1/models/bg"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, _) = post(
        &client,
        local.url("/v1/models"),
        None,
        launch_minilm("bg", 1),
    )
    .await;
    assert_eq!(status, 200, "the uid is free again after terminate");

    // A folder without weights is refused with the missing file's name; nothing stays behind.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for name in ["config.json", "tokenizer.json"] {
        std::fs::copy(minilm().join(name), broken.join(name)).unwrap();
    }
    let mut body = launch_minilm("broken", 1);
    body["model_path"] = json!(broken);
    let (status, reply) = post(&client, local.url("/v1/models"), None, body).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["detail"]
            .as_str()
            .unwrap()
            .contains("has no model.safetensors"),
        "{reply}"
    );
    let (status, _) = post(
        &client,
        local.url("/v1/embeddings"),
        None,
        json!({ "model": "broken", "input": "x" }),
    )
    .await;
    assert_eq!(status, 404);
    let mut body = launch_minilm("nowhere", 1);
    body["model_path"] = json!("/no/such/model");
    let (status, reply) = post(&client, local.url("/v1/models"), None, body).await;
    assert_eq!(
        (status, reply["detail"].as_str()),
        (400, Some("model_path /no/such/model does not exist"))
    );
    let (status, reply) = post(
        &client,
        local.url("/v1/models"),
        None,
        json!({ "model_name": "bge-small-en-v1.5", "model_type": "embedding" }),
    )
    .await;
    // No local files: the hub is asked (here a closed port), and the failure says where.
    assert_eq!(status, 503);
    assert!(
        reply["detail"]
            .as_str()
            .unwrap()
            .contains("cannot reach http://127.0.0.1:9/api/models/BAAI/bge-small-en-v1.5"),
        "{reply}"
    );
}

#[tokio::test]
async fn terminate_during_requests_never_hangs_and_full_queues_answer_503() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(
        &dir.path().join("home"),
        &[
            "--model-queue-size",
            "1",
            "--log-level",
            "info,xi_worker=debug",
        ],
    );
    let client = Client::new();
    let (status, _) = post(
        &client,
        local.url("/v1/models"),
        None,
        launch_minilm("busy", 1),
    )
    .await;
    assert_eq!(status, 200);

    let sentences: Vec<String> = (0..64)
        .map(|i| format!("sentence number {i} about queues and batches"))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let client = client.clone();
        let url = local.url("/v1/embeddings");
        let body = json!({ "model": "busy", "input": sentences });
        tasks.push(tokio::spawn(async move {
            let res =
                tokio::time::timeout(Duration::from_secs(60), client.post(url).json(&body).send())
                    .await
                    .expect("a request hung")
                    .unwrap();
            let retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (res.status().as_u16(), retry_after)
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(
        statuses.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|(s, _)| *s == 503),
        "a queue of 1 overflows: {statuses:?}"
    );
    assert!(statuses
        .iter()
        .filter(|(s, _)| *s == 503)
        .all(|(_, r)| r.as_deref() == Some("1")));

    // Requests in flight while the model is terminated end with an answer, never a hang.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let url = local.url("/v1/embeddings");
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                let res = tokio::time::timeout(
                    Duration::from_secs(60),
                    client
                        .post(&url)
                        .json(&json!({ "model": "busy", "input": "hello" }))
                        .send(),
                )
                .await
                .expect("a request hung")
                .unwrap();
                seen.push(res.status().as_u16());
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let res = client
        .delete(local.url("/v1/models/busy"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for task in tasks {
        let seen = task.await.unwrap();
        assert!(seen.iter().all(|s| [200, 404, 503].contains(s)), "{seen:?}");
    }
    assert_eq!(
        client
            .get(local.url("/status"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let models: Value = get_json(&client, local.url("/v1/models")).await;
    assert_eq!(models["data"], json!([]));
}

#[tokio::test]
async fn requests_that_arrive_together_share_a_forward_pass() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(
        &dir.path().join("home"),
        &["--log-level", "info,xi_worker=debug"],
    );
    let client = Client::new();
    let (status, _) = post(
        &client,
        local.url("/v1/models"),
        None,
        launch_minilm("batch", 1),
    )
    .await;
    assert_eq!(status, 200);
    let reference = fixture("minilm_embeddings.json");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        let url = local.url("/v1/embeddings");
        let sentence = reference["sentences"][i % 8].clone();
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .json(&json!({ "model": "batch", "input": sentence }))
                .send()
                .await
                .unwrap();
            (i, res.json::<Value>().await.unwrap())
        }));
    }
    for task in tasks {
        let (i, body) = task.await.unwrap();
        // Each request gets its own input's embedding back, whatever it was batched with.
        let diff = max_abs_diff(
            &body["data"][0]["embedding"],
            &reference["embeddings"][i % 8],
        );
        assert!(diff <= 1e-5, "request {i} differs by {diff}");
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
    }
    let logs = local.logs();
    let merged = logs
        .lines()
        .filter(|l| l.contains("embedding round"))
        .any(|l| !l.contains("requests=1 "));
    assert!(merged, "no round merged several requests:\n{logs}");
}
