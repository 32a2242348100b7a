//! Serving through in-process fake workers (`xi_testkit::FakeWorker`): dispatch to the
//! replicas, SSE streaming, failover past unreachable workers, and the HTTP status of each
//! worker error kind. No model weights: the fake answers deterministic vectors and scripted
//! streams.

use std::sync::Arc;

use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;
use xi_api::worker::{
    GenerateEvent, GenerateSummary, Prompt, Worker, WorkerError, WorkerErrorKind,
};
use xi_testkit::fake_worker::{embedding_of, score_of};
use xi_testkit::FakeWorker;

use crate::support::{json_of, TestServer};

const A: &str = "10.0.0.1:7001";
const B: &str = "10.0.0.2:7001";

/// A supervisor serving with fake workers, and a model folder to launch from.
struct Cluster {
    server: TestServer,
    workers: Vec<Arc<FakeWorker>>,
    files: TempDir,
    client: Client,
}

impl Cluster {
    fn new(addresses: &[&str]) -> Cluster {
        let workers: Vec<Arc<FakeWorker>> = addresses.iter().map(|a| FakeWorker::new(a)).collect();
        let handles: Vec<Arc<dyn Worker>> = workers
            .iter()
            .map(|w| w.clone() as Arc<dyn Worker>)
            .collect();
        Cluster {
            server: TestServer::with_workers(handles),
            workers,
            files: TempDir::new().unwrap(),
            client: Client::new(),
        }
    }

    fn worker(&self, address: &str) -> &FakeWorker {
        self.workers
            .iter()
            .find(|w| w.address() == address)
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.server.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        json_of(res).await
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let res = self
            .client
            .request(method, self.server.url(path))
            .send()
            .await
            .unwrap();
        json_of(res).await
    }

    /// Launches `name` of `model_type` as `uid` with `replica` replicas; returns status and body.
    async fn launch(&self, uid: &str, name: &str, model_type: &str, replica: u32) -> (u16, Value) {
        let path = self.files.path().to_str().unwrap().to_string();
        let body = json!({
            "model_uid": uid, "model_name": name, "model_type": model_type,
            "replica": replica, "model_path": path,
        });
        self.post("/v1/models", body).await
    }

    async fn launch_ready(&self, uid: &str, name: &str, model_type: &str, replica: u32) {
        let (status, body) = self.launch(uid, name, model_type, replica).await;
        assert_eq!(
            (status, body),
            (200, json!({ "model_uid": uid })),
            "launch of {uid}"
        );
    }

    async fn embed(&self, uid: &str, input: &str) -> (u16, Value) {
        self.post("/v1/embeddings", json!({ "model": uid, "input": input }))
            .await
    }
}

#[tokio::test]
async fn replicas_spread_over_the_workers_and_requests_go_round_robin() {
    let cluster = Cluster::new(&[A, B]);
    cluster
        .launch_ready("emb", "all-MiniLM-L6-v2", "embedding", 2)
        .await;
    let mut loaded: Vec<String> = cluster.workers.iter().flat_map(|w| w.replicas()).collect();
    loaded.sort();
    assert_eq!(loaded, ["emb-0", "emb-1"]);
    for w in &cluster.workers {
        assert_eq!(w.replicas().len(), 1, "{} holds one replica", w.address());
        let spec = w.spec(&w.replicas()[0]).unwrap();
        assert_eq!(spec.model_uid, "emb");
        assert_eq!(spec.model_name, "all-MiniLM-L6-v2");
        assert_eq!(spec.model_path, cluster.files.path());
    }

    let mut answered_by = Vec::new();
    for text in ["one", "two", "three", "four"] {
        let (status, body) = cluster.embed("emb", text).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "emb");
        assert_eq!(body["data"][0]["embedding"], json!(embedding_of(text)));
        assert_eq!(body["usage"]["prompt_tokens"], 1);
        answered_by.push(body["model_replica"].as_str().unwrap().to_string());
    }
    // Round robin: the replicas take turns.
    assert_ne!(answered_by[0], answered_by[1]);
    assert_eq!(answered_by[0], answered_by[2]);
    assert_eq!(answered_by[1], answered_by[3]);
    for w in &cluster.workers {
        let replica = w.replicas()[0].clone();
        let served: Vec<String> = w
            .calls()
            .into_iter()
            .filter(|c| c.op == "embed")
            .map(|c| c.replica_uid)
            .collect();
        assert_eq!(served, [replica.clone(), replica], "{}", w.address());
    }

    // The dimensions the worker reported at load are the model's.
    let (status, body) = cluster.call(reqwest::Method::GET, "/v1/models/emb").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dimensions"], xi_testkit::fake_worker::DIMENSIONS);
    assert_eq!(body["replica"], 2);

    // Terminating stops the replica on each worker.
    let (status, body) = cluster
        .call(reqwest::Method::DELETE, "/v1/models/emb")
        .await;
    assert_eq!(status, 200, "{body}");
    for w in &cluster.workers {
        assert!(
            w.replicas().is_empty(),
            "{} still holds a replica",
            w.address()
        );
        assert_eq!(w.count("terminate"), 1);
    }
}

#[tokio::test]
async fn rerank_orders_the_workers_scores() {
    let cluster = Cluster::new(&[A]);
    cluster
        .launch_ready("rr", "bge-reranker-base", "rerank", 1)
        .await;
    let documents = ["nothing here", "red apples", "apples"];
    let query = "red apples";
    let (status, body) = cluster
        .post(
            "/v1/rerank",
            json!({ "model": "rr", "query": query, "documents": documents, "return_documents": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let order: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [1, 2, 0]);
    assert_eq!(
        body["results"][1]["relevance_score"],
        json!(score_of(query, "apples"))
    );
    assert_eq!(body["results"][0]["document"]["text"], "red apples");
}

/// The `data:` payloads of an SSE body, in order.
fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
                .to_string()
        })
        .collect()
}

async fn chat_stream(cluster: &Cluster, uid: &str) -> (u16, String, Vec<String>) {
    let res = cluster
        .client
        .post(cluster.server.url("/v1/chat/completions"))
        .json(&json!({
            "model": uid, "stream": true,
            "messages": [{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "Hi" }],
        }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = res.text().await.unwrap();
    (status, content_type, sse_events(&text))
}

#[tokio::test]
async fn chat_streams_the_workers_events_as_sse_chunks_then_done() {
    let cluster = Cluster::new(&[A]);
    cluster
        .launch_ready("chat", "smollm2-instruct", "LLM", 1)
        .await;
    let (status, content_type, events) = chat_stream(&cluster, "chat").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // The role first, then one chunk per piece of text, then the finish with usage.
    assert_eq!(chunks.len(), 4, "{chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let pieces: Vec<&str> = chunks[1..3]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, ["Hello", " world"]);
    let last = &chunks[3];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        last["usage"],
        json!({ "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 })
    );
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "chat");
        assert_eq!(chunk["id"], chunks[0]["id"], "one id for the whole stream");
    }
    // The worker got the chat as turns.
    let request = cluster.worker(A).last_generate_request().unwrap();
    match request.prompt {
        Prompt::Chat(turns) => {
            let turns: Vec<(String, String)> =
                turns.into_iter().map(|t| (t.role, t.content)).collect();
            assert_eq!(
                turns,
                [
                    ("system".to_string(), "Be brief.".to_string()),
                    ("user".to_string(), "Hi".to_string())
                ]
            );
        }
        other => panic!("a chat became {other:?}"),
    }

    // Without `stream` the same events make one answer.
    let (status, body) = cluster
        .post(
            "/v1/chat/completions",
            json!({ "model": "chat", "messages": [{ "role": "user", "content": "Hi" }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello world");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // Completions stream text chunks, no role chunk.
    cluster.worker(A).script_generation(vec![
        GenerateEvent::Text("4".into()),
        GenerateEvent::Done(GenerateSummary {
            prompt_tokens: 4,
            completion_tokens: 1,
            finish_reason: "length".into(),
        }),
    ]);
    let res = cluster
        .client
        .post(cluster.server.url("/v1/completions"))
        .json(&json!({ "model": "chat", "prompt": "2+2=", "stream": true }))
        .send()
        .await
        .unwrap();
    let events = sse_events(&res.text().await.unwrap());
    assert_eq!(events.len(), 3, "{events:?}");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "4");
    let last: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test]
async fn an_error_in_the_middle_of_a_stream_becomes_an_error_event() {
    let cluster = Cluster::new(&[A]);
    cluster
        .launch_ready("chat", "smollm2-instruct", "LLM", 1)
        .await;
    cluster.worker(A).script_generation(vec![
        GenerateEvent::Text("Hel".into()),
        GenerateEvent::Error(WorkerError::new(
            WorkerErrorKind::InvalidInput,
            "the prompt is too long",
        )),
    ]);
    let (status, _, events) = chat_stream(&cluster, "chat").await;
    // The status line went out with the first chunk: the error travels in the stream.
    assert_eq!(status, 200);
    assert_eq!(events.len(), 3, "{events:?}");
    let error: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(error, json!({ "error": "the prompt is too long" }));
    assert!(!events.iter().any(|e| e == "[DONE]"));

    // Without `stream` the same error is the answer's status.
    let (status, body) = cluster
        .post(
            "/v1/chat/completions",
            json!({ "model": "chat", "messages": [{ "role": "user", "content": "Hi" }] }),
        )
        .await;
    assert_eq!(
        (status, body),
        (400, json!({ "detail": "the prompt is too long" }))
    );
}

#[tokio::test]
async fn requests_fail_over_to_a_reachable_replica_and_fail_when_none_is_left() {
    let cluster = Cluster::new(&[A, B]);
    cluster
        .launch_ready("emb", "all-MiniLM-L6-v2", "embedding", 2)
        .await;
    cluster
        .launch_ready("chat", "smollm2-instruct", "LLM", 2)
        .await;
    cluster.worker(A).set_unreachable(true);
    let on_b: Vec<String> = cluster.worker(B).replicas();
    for text in ["one", "two", "three", "four"] {
        let (status, body) = cluster.embed("emb", text).await;
        assert_eq!(status, 200, "{body}");
        let replica = body["model_replica"].as_str().unwrap().to_string();
        assert!(on_b.contains(&replica), "{replica} is not on {B}");
        assert_eq!(body["data"][0]["embedding"], json!(embedding_of(text)));
    }
    assert_eq!(cluster.worker(B).count("embed"), 4);
    assert!(
        cluster.worker(A).count("embed") >= 1,
        "the unreachable worker was tried"
    );
    for _ in 0..2 {
        let (status, _, events) = chat_stream(&cluster, "chat").await;
        assert_eq!(status, 200);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    }
    assert_eq!(cluster.worker(B).count("generate"), 2);

    // With every worker gone the request fails, with the last worker's reason.
    cluster.worker(B).set_unreachable(true);
    let (status, body) = cluster.embed("emb", "five").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("is unreachable"),
        "{body}"
    );

    // Back: served again.
    cluster.worker(A).set_unreachable(false);
    cluster.worker(B).set_unreachable(false);
    let (status, body) = cluster.embed("emb", "six").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn only_an_unreachable_worker_is_failed_over_a_busy_one_answers_503() {
    let cluster = Cluster::new(&[A, B]);
    cluster
        .launch_ready("emb", "all-MiniLM-L6-v2", "embedding", 2)
        .await;
    cluster
        .worker(A)
        .fail_calls(Some((WorkerErrorKind::Busy, "the queue is full")));
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (status, body) = cluster.embed("emb", "x").await;
        statuses.push(status);
        if status == 503 {
            assert_eq!(body, json!({ "detail": "the queue is full" }));
        }
    }
    statuses.sort();
    // One request went to the busy replica and got its answer; the other to the idle one.
    assert_eq!(statuses, [200, 503]);
    assert_eq!(cluster.worker(A).count("embed"), 1);
    assert_eq!(cluster.worker(B).count("embed"), 1);
}

/// Each worker error kind and the status (and `Retry-After`) the client gets for it.
const STATUS_OF_KIND: [(WorkerErrorKind, u16, Option<&str>); 9] = [
    (WorkerErrorKind::InvalidModel, 400, None),
    (WorkerErrorKind::InvalidInput, 400, None),
    (WorkerErrorKind::TooLarge, 413, None),
    (WorkerErrorKind::NotFound, 404, None),
    (WorkerErrorKind::Busy, 503, Some("1")),
    (WorkerErrorKind::Unavailable, 503, None),
    (WorkerErrorKind::Unreachable, 503, None),
    (WorkerErrorKind::Cancelled, 499, None),
    (WorkerErrorKind::Internal, 500, None),
];

/// Checks the body a client got for a worker error with `message`: `{"detail": message}`,
/// except that internal failures are not described to clients (a generic detail, perhaps
/// with a log reference).
fn assert_detail(kind: WorkerErrorKind, message: &str, body: &Value) {
    let detail = body["detail"].as_str().unwrap_or_default();
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "{kind:?}: {body}"
    );
    if kind == WorkerErrorKind::Internal {
        assert!(detail.starts_with("Internal server error"), "{body}");
        assert!(!detail.contains(message), "the cause leaked: {body}");
    } else {
        assert_eq!(detail, message, "{kind:?}");
    }
}

#[tokio::test]
async fn each_worker_error_kind_of_a_request_has_its_status() {
    let cluster = Cluster::new(&[A]);
    cluster
        .launch_ready("emb", "all-MiniLM-L6-v2", "embedding", 1)
        .await;
    for (kind, status, retry_after) in STATUS_OF_KIND {
        let message = format!("scripted {kind:?} failure");
        cluster.worker(A).fail_calls(Some((kind, &message)));
        let res = cluster
            .client
            .post(cluster.server.url("/v1/embeddings"))
            .json(&json!({ "model": "emb", "input": "x" }))
            .send()
            .await
            .unwrap();
        let got_retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let (got, body) = json_of(res).await;
        assert_eq!(got, status, "{kind:?}: {body}");
        assert_eq!(got_retry.as_deref(), retry_after, "{kind:?} Retry-After");
        assert_detail(kind, &message, &body);
    }
    cluster.worker(A).fail_calls(None);
    let (status, body) = cluster.embed("emb", "x").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn each_worker_error_kind_of_a_launch_has_its_status_and_leaves_nothing_behind() {
    let cluster = Cluster::new(&[A]);
    for (i, (kind, status, _)) in STATUS_OF_KIND.into_iter().enumerate() {
        let message = format!("scripted {kind:?} launch failure");
        cluster.worker(A).fail_launches(Some((kind, &message)));
        let uid = format!("m{i}");
        let (got, body) = cluster
            .launch(&uid, "all-MiniLM-L6-v2", "embedding", 1)
            .await;
        assert_eq!(got, status, "{kind:?}: {body}");
        assert_detail(kind, &message, &body);
    }
    let (_, body) = cluster.call(reqwest::Method::GET, "/v1/models").await;
    assert_eq!(body["data"], json!([]), "failed launches are not listed");
}

#[tokio::test]
async fn a_launch_that_fails_on_one_worker_stops_the_replicas_already_loaded() {
    let cluster = Cluster::new(&[A, B]);
    cluster
        .worker(B)
        .fail_launches(Some((WorkerErrorKind::InvalidModel, "bad weights")));
    let (status, body) = cluster
        .launch("emb", "all-MiniLM-L6-v2", "embedding", 2)
        .await;
    assert_eq!((status, body), (400, json!({ "detail": "bad weights" })));
    for w in &cluster.workers {
        assert!(w.replicas().is_empty(), "{} kept a replica", w.address());
    }
    assert_eq!(cluster.worker(A).count("launch"), 1);
    assert_eq!(cluster.worker(A).count("terminate"), 1);
    // The uid is free again.
    cluster.worker(B).fail_launches(None);
    cluster
        .launch_ready("emb", "all-MiniLM-L6-v2", "embedding", 2)
        .await;
}
