//! Launch validation, lifecycle routes, catalogue and cluster views (auth off).

use reqwest::Client;
use serde_json::{json, Value};

use crate::support::{json_of, TestServer};

async fn launch(client: &Client, server: &TestServer, body: Value) -> (u16, Value) {
    json_of(
        client
            .post(server.url("/v1/models"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn launch_requests_are_validated_with_upstream_messages() {
    let server = TestServer::open();
    let client = Client::new();
    let cases = [
        (
            json!({}),
            400,
            "Invalid input. Please specify the `model_name` field.",
        ),
        (
            json!({ "model_name": "x", "model_type": "image" }),
            400,
            "not supported",
        ),
        (
            json!({ "model_name": "smollm2-instruct", "model_engine": "vLLM" }),
            400,
            "candle",
        ),
        (
            json!({ "model_name": "smollm2-instruct", "replica": 0 }),
            400,
            "replica",
        ),
        (
            json!({ "model_name": "smollm2-instruct", "request_limits": -1 }),
            400,
            "request_limits",
        ),
        (
            json!({ "model_name": "smollm2-instruct", "model_uid": "   " }),
            400,
            "The model UID is invalid",
        ),
        (
            json!({ "model_name": "smollm2-instruct", "model_uid": "u".repeat(101) }),
            400,
            "The model UID is invalid",
        ),
        (
            json!({ "model_name": "no-such-model" }),
            400,
            "Model not found, name: no-such-model, type: LLM",
        ),
        (
            json!({ "model_name": "all-MiniLM-L6-v2" }),
            400,
            "type: LLM",
        ),
        (
            json!({ "model_name": "smollm2-instruct", "model_format": "ggufv2", "quantization": "Q5_K_S" }),
            400,
            "ggufv2/0_135/Q4_1",
        ),
        (
            json!({ "model_name": "smollm2-instruct", "model_size_in_billions": 7 }),
            400,
            "size=7",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, reply) = launch(&client, &server, body.clone()).await;
        assert_eq!(got, status, "{body} -> {reply}");
        let detail = reply["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "{body}: {detail:?} lacks {needle:?}"
        );
    }
    // Valid requests pass validation and, with no worker attached, stop with 503.
    for body in [
        json!({ "model_name": "smollm2-instruct", "model_engine": "candle", "model_format": "ggufv2",
                "model_size_in_billions": 0.135, "quantization": "q4_1", "model_path": "/tmp/x.gguf" }),
        json!({ "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "replica": 2,
                "model_engine": "sentence_transformers" }),
        json!({ "model_name": "bge-reranker-base", "model_type": "rerank", "model_uid": "my-reranker" }),
        json!({ "model_name": "smollm2-instruct", "model_engine": "llama.cpp", "model_format": "ggufv2" }),
    ] {
        let (got, reply) = launch(&client, &server, body.clone()).await;
        assert_eq!(got, 503, "{body} -> {reply}");
        assert_eq!(reply["detail"], "No available worker found", "{reply}");
    }
}

#[tokio::test]
async fn unknown_uids_are_400_on_management_routes_and_404_on_inference() {
    let server = TestServer::open();
    let client = Client::new();
    let expected = "Model not found in the model list, uid: ghost";
    for (method, path) in [
        ("GET", "/v1/models/ghost"),
        ("DELETE", "/v1/models/ghost"),
        ("GET", "/v1/models/ghost/progress"),
        ("POST", "/v1/models/ghost/cancel"),
    ] {
        let req = client.request(method.parse().unwrap(), server.url(path));
        let (status, body) = json_of(req.send().await.unwrap()).await;
        assert_eq!(
            (status, body["detail"].as_str().unwrap()),
            (400, expected),
            "{method} {path}"
        );
    }
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/rerank",
    ] {
        let res = client
            .post(server.url(path))
            .json(&json!({ "model": "ghost", "input": "x" }))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(res).await;
        assert_eq!(
            (status, body["detail"].as_str().unwrap()),
            (404, expected),
            "{path}"
        );
        let res = client
            .post(server.url(path))
            .json(&json!({ "input": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{path} without model");
    }
    let (status, body) = json_of(client.get(server.url("/v1/models")).send().await.unwrap()).await;
    assert_eq!(
        (status, body),
        (200, json!({ "object": "list", "data": [] }))
    );
    let (status, body) = json_of(
        client
            .get(server.url("/v1/models/instances?model_name=x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!([])));
}

#[tokio::test]
async fn catalogue_views_have_upstream_shapes() {
    let server = TestServer::open();
    let client = Client::new();
    let (_, families) = json_of(
        client
            .get(server.url("/v1/models/families"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for key in [
        "chat",
        "generate",
        "tools",
        "vision",
        "reasoning",
        "audio",
        "omni",
        "hybrid",
    ] {
        assert!(families[key].is_array(), "{key} in {families}");
    }
    assert!(families["chat"]
        .as_array()
        .unwrap()
        .contains(&json!("smollm2-instruct")));
    let (_, prompts) = json_of(
        client
            .get(server.url("/v1/models/prompts"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let smol = &prompts["smollm2-instruct"];
    assert!(smol["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(smol["stop_token_ids"], json!([2, 0]));

    let (status, engines) = json_of(
        client
            .get(server.url("/v1/engines/smollm2-instruct"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let gguf = engines["candle"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["model_format"] == "ggufv2" && e["model_size_in_billions"] == "0_135")
        .expect("a ggufv2 135M entry");
    assert!(gguf["quantizations"]
        .as_array()
        .unwrap()
        .contains(&json!("Q4_1")));
    let (status, _) = json_of(
        client
            .get(server.url("/v1/engines/embedding/bge-small-en-v1.5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = json_of(
        client
            .get(server.url("/v1/engines/nothing-like-it"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["detail"].as_str().unwrap()),
        (400, "Model nothing-like-it not found")
    );
}

#[tokio::test]
async fn cluster_views_of_a_supervisor_without_workers() {
    let server = TestServer::open();
    let client = Client::new();
    let address = server.url.trim_start_matches("http://").to_string();
    let (_, status) = json_of(client.get(server.url("/status")).send().await.unwrap()).await;
    assert!(status["uptime"].as_f64().unwrap() >= 0.0);
    assert_eq!(status["workers"], json!({}), "{status}");
    let (_, info) = json_of(
        client
            .get(server.url("/v1/cluster/info?detailed=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(info[0]["node_type"], "Supervisor");
    assert_eq!(info.as_array().unwrap().len(), 1, "{info}");
    let (_, version) = json_of(
        client
            .get(server.url("/v1/cluster/version"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    let (_, devices) = json_of(
        client
            .get(server.url("/v1/cluster/devices"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(devices, json!(0));
    let (_, workers) = json_of(client.get(server.url("/v1/workers")).send().await.unwrap()).await;
    assert_eq!(workers, json!([]));
    let (_, sup) = json_of(
        client
            .get(server.url("/v1/supervisor"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(sup, json!({ "supervisor_ip": address }));
}
