//! The `n_gpu` / `gpu_idx` launch fields through the real binary. This build (the CPU build the
//! tests run) has no CUDA support, so GPU requests are refused with why, and everything that
//! asks for no GPU, or for "auto", runs on the CPU.

use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{fixture, minilm, post, Local};

fn launch(uid: &str, extra: Value) -> Value {
    let mut body = json!({
        "model_uid": uid, "model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
        "model_path": minilm(),
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn gpu_requests_without_gpus_are_400_and_auto_or_null_run_on_the_cpu() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();
    let one_gpu = if cfg!(feature = "cuda") {
        "n_gpu=1 but this worker has no GPU"
    } else {
        "n_gpu=1 asks for GPUs but this build has no CUDA support (build with scripts/build-cuda.sh)"
    };
    for (extra, want) in [
        (json!({"n_gpu": 1}), one_gpu),
        // A numeric string is the same integer (placement and the worker read one parsed value).
        (json!({"n_gpu": "1"}), one_gpu),
        (json!({"n_gpu": 2}), "n_gpu=2 "),
        (json!({"gpu_idx": 0}), "gpu_idx"),
        (
            json!({"gpu_idx": [0, 1], "replica": 3}),
            "The length of gpu_idx (2) must be a multiple of replica (3)",
        ),
        (
            json!({"n_gpu": "two"}),
            "n_gpu must be a positive integer, \"auto\" or null",
        ),
        (json!({"n_gpu": null, "dtype": "int4"}), "dtype must be"),
    ] {
        let body = launch("g", extra.clone());
        let (status, body) = post(&client, local.url("/v1/models"), None, body).await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{extra}: {body}");
        assert!(detail.starts_with(want), "{extra}: {detail}");
    }
    let models: Value = client
        .get(local.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        models["data"],
        json!([]),
        "refused launches leave nothing behind"
    );

    // null (CPU only), "auto" (upstream's default: the CPU when there is no GPU), and absent.
    let reference = fixture("minilm_embeddings.json");
    for (uid, extra) in [
        ("cpu-null", json!({"n_gpu": null})),
        ("cpu-auto", json!({"n_gpu": "auto"})),
        ("cpu-absent", json!({})),
    ] {
        let (status, body) = post(&client, local.url("/v1/models"), None, launch(uid, extra)).await;
        assert_eq!((status, &body), (200, &json!({ "model_uid": uid })));
        let (status, body) = post(
            &client,
            local.url("/v1/embeddings"),
            None,
            json!({ "model": uid, "input": reference["sentences"][0] }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let got = body["data"][0]["embedding"].as_array().unwrap();
        let want = reference["embeddings"][0].as_array().unwrap();
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-5, "{uid}: {diff}");
    }
    let logs = local.logs();
    let on_cpu = logs.matches("on=cpu").count();
    assert!(
        on_cpu >= 3,
        "every replica loaded on the CPU kernels:\n{logs}"
    );
}
