//! Launch options are parsed once, by the supervisor, when the launch arrives: a bad value of any
//! option is a 400 naming it before any worker is asked, and the workers get the typed options
//! with the replica's index (the fake worker records the spec it was sent).

use std::sync::Arc;

use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;
use xi_api::launch::{Dtype, GpuRequest, GpuShare, LaunchOptions, Requantize};
use xi_api::worker::Worker;
use xi_testkit::FakeWorker;

use crate::support::{json_of, TestServer};

struct Setup {
    server: TestServer,
    worker: Arc<FakeWorker>,
    files: TempDir,
    client: Client,
}

impl Setup {
    fn new() -> Setup {
        let worker = FakeWorker::new("127.0.0.1:7001");
        Setup {
            server: TestServer::with_workers(vec![worker.clone() as Arc<dyn Worker>]),
            worker,
            files: TempDir::new().unwrap(),
            client: Client::new(),
        }
    }

    /// Launches an embedding model as `uid` with the launch `fields` added to the body.
    async fn launch(&self, uid: &str, name: &str, model_type: &str, fields: Value) -> (u16, Value) {
        let mut body = json!({
            "model_uid": uid, "model_name": name, "model_type": model_type,
            "model_path": self.files.path().to_str().unwrap(),
        });
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = self
            .client
            .post(self.server.url("/v1/models"))
            .json(&body)
            .send()
            .await
            .unwrap();
        json_of(res).await
    }

    async fn launch_embedding(&self, uid: &str, fields: Value) -> (u16, Value) {
        self.launch(uid, "all-MiniLM-L6-v2", "embedding", fields)
            .await
    }

    fn options(&self, replica_uid: &str) -> LaunchOptions {
        self.worker.spec(replica_uid).unwrap().options
    }
}

#[tokio::test]
async fn a_numeric_n_gpu_string_is_the_integer_the_worker_gets() {
    let setup = Setup::new();
    for (uid, n_gpu, want) in [
        ("s", json!("1"), GpuRequest::Count(1)),
        ("i", json!(1), GpuRequest::Count(1)),
        ("auto", json!("auto"), GpuRequest::Auto),
        ("cpu", json!(null), GpuRequest::Cpu),
    ] {
        let (status, body) = setup.launch_embedding(uid, json!({ "n_gpu": n_gpu })).await;
        assert_eq!(
            (status, body),
            (200, json!({ "model_uid": uid })),
            "{n_gpu}"
        );
        let options = setup.options(&format!("{uid}-0"));
        assert_eq!(options.n_gpu, want, "{n_gpu}");
        // Placement reads the same parsed value.
        assert_eq!(options.gpus_per_replica(), want.count(), "{n_gpu}");
    }
    let (status, _) = setup.launch_embedding("absent", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(setup.options("absent-0").n_gpu, GpuRequest::Auto);
}

#[tokio::test]
async fn replicas_get_their_index_and_typed_options_and_unknown_keys_pass_through() {
    let setup = Setup::new();
    let fields = json!({
        "replica": 2, "gpu_idx": [1, 0], "dtype": "bf16", "requantize": "Q8_0",
        "dynamic_batching": false, "max_num_seqs": 4, "max_num_batched_tokens": 64,
        "enable_thinking": true,
    });
    let (status, body) = setup.launch_embedding("m", fields).await;
    assert_eq!((status, body), (200, json!({ "model_uid": "m" })));
    for (index, gpu) in [(0usize, 1usize), (1, 0)] {
        let spec = setup.worker.spec(&format!("m-{index}")).unwrap();
        assert_eq!((spec.model_uid.as_str(), spec.replica_index), ("m", index));
        assert_eq!(spec.options.gpu_share(index), GpuShare::Indices(&[gpu]));
        assert_eq!(spec.options.dtype, Some(Dtype::Bfloat16));
        assert_eq!(spec.options.requantize, Some(Requantize::Q8_0));
        assert!(!spec.options.dynamic_batching);
        assert_eq!(spec.options.max_num_seqs, 4);
        assert_eq!(spec.options.max_num_batched_tokens, 64);
        assert_eq!(
            spec.options.extra,
            json!({"enable_thinking": true})
                .as_object()
                .cloned()
                .unwrap()
        );
    }
    // Defaults, and the family's chat template for files that carry none.
    let (status, _) = setup
        .launch("q", "qwen2.5-instruct", "LLM", json!({}))
        .await;
    assert_eq!(status, 200);
    let options = setup.options("q-0");
    assert_eq!(
        (options.max_num_seqs, options.max_num_batched_tokens),
        (16, 512)
    );
    assert!(options.dynamic_batching);
    assert!(options
        .chat_template
        .is_some_and(|t| t.contains("im_start")));
    let (status, _) = setup
        .launch(
            "own",
            "qwen2.5-instruct",
            "LLM",
            json!({"chat_template": "{{ x }}"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        setup.options("own-0").chat_template.as_deref(),
        Some("{{ x }}")
    );
}

/// One bad value per option: a 400 whose detail starts with the option's name, before any
/// worker is asked, leaving nothing behind.
#[tokio::test]
async fn every_bad_option_value_is_a_400_naming_the_field_before_any_worker_is_asked() {
    let setup = Setup::new();
    for (fields, want) in [
        (
            json!({"n_gpu": 0}),
            "n_gpu must be a positive integer, \"auto\" or null, got 0",
        ),
        (
            json!({"n_gpu": "two"}),
            "n_gpu must be a positive integer, \"auto\" or null, got \"two\"",
        ),
        (
            json!({"n_gpu": "0"}),
            "n_gpu must be a positive integer, \"auto\" or null, got \"0\"",
        ),
        (
            json!({"gpu_idx": "0"}),
            "gpu_idx must be a GPU index or a list of them",
        ),
        (
            json!({"gpu_idx": [0, 1], "replica": 3}),
            "The length of gpu_idx (2) must be a multiple of replica (3)",
        ),
        (
            json!({"dtype": "int4"}),
            "dtype must be \"auto\", \"float32\", \"bfloat16\" or \"float16\", got \"int4\"",
        ),
        (
            json!({"requantize": "Q4_0"}),
            "requantize must be \"Q8_0\", \"F32\" or \"none\", got \"Q4_0\"",
        ),
        (json!({"requantize": 8}), "requantize must be"),
        (
            json!({"dynamic_batching": "yes"}),
            "dynamic_batching must be true or false, got \"yes\"",
        ),
        (
            json!({"max_num_seqs": 0}),
            "max_num_seqs must be a positive integer, got 0",
        ),
        (
            json!({"max_num_batched_tokens": "512"}),
            "max_num_batched_tokens must be a positive integer, got \"512\"",
        ),
        (
            json!({"chat_template": 3}),
            "chat_template must be a string, got 3",
        ),
    ] {
        let (status, body) = setup.launch_embedding("bad", fields.clone()).await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{fields}: {body}");
        assert!(detail.starts_with(want), "{fields}: {detail}");
    }
    assert_eq!(setup.worker.count("launch"), 0, "no worker was asked");
    let res = setup
        .client
        .get(setup.server.url("/v1/models"))
        .send()
        .await
        .unwrap();
    let (_, models) = json_of(res).await;
    assert_eq!(
        models["data"],
        json!([]),
        "refused launches leave nothing behind"
    );
}

/// `download_hub` is a launch field of its own: a launch that downloads from another hub is
/// refused naming it (it used to be dropped, and the launch went to Hugging Face).
#[tokio::test]
async fn a_download_from_an_unsupported_hub_is_refused_naming_download_hub() {
    let setup = Setup::new();
    let body = json!({
        "model_uid": "hub", "model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
        "download_hub": "modelscope",
    });
    let res = setup
        .client
        .post(setup.server.url("/v1/models"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("download_hub \"modelscope\" is not supported"),
        "{detail}"
    );
    assert_eq!(setup.worker.count("launch"), 0);
}
