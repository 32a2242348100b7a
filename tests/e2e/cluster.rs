//! A real cluster on loopback: `xinference-supervisor` and `xinference-worker` processes on
//! free ports, the cluster secret, workers joining, dying (SIGKILL), restarting, and the
//! supervisor restarting under them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{eventually, get_json, post, Local, SUPERVISOR_BIN, WORKER_BIN};

/// Fast heartbeats keep the tests short; the default (2 s) is measured in the docs.
const HEARTBEAT: &str = "0.5";

struct Cluster {
    dir: TempDir,
    supervisor: Local,
    secret_file: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = TempDir::new().unwrap();
        let supervisor = start_supervisor(dir.path(), "0");
        let secret_file = dir.path().join("sup-home").join("cluster_secret");
        assert!(secret_file.exists(), "the supervisor saved its secret");
        Cluster {
            dir,
            supervisor,
            secret_file,
        }
    }

    fn url(&self, path: &str) -> String {
        self.supervisor.url(path)
    }

    fn port(&self) -> String {
        self.supervisor.url.rsplit(':').next().unwrap().to_string()
    }

    fn worker(&self, name: &str) -> Local {
        let home = self.dir.path().join(name);
        Local::spawn(
            WORKER_BIN,
            "xinference-worker",
            &home,
            &[
                "-e",
                &self.supervisor.url,
                "-H",
                "127.0.0.1",
                "--home",
                home.to_str().unwrap(),
                "--cluster-secret-file",
                self.secret_file.to_str().unwrap(),
            ],
            &[],
        )
    }
}

impl Cluster {
    /// Two workers, both alive in `/status`.
    async fn two_workers(&self, client: &Client) -> (Local, Local) {
        let (a, b) = (self.worker("a"), self.worker("b"));
        for w in [&a, &b] {
            assert!(wait_alive(client, self, &address_of(w), true).await);
        }
        (a, b)
    }

    /// Launches and expects success.
    async fn launch(&self, client: &Client, body: Value) {
        let (status, reply) = post(client, self.url("/v1/models"), None, body).await;
        assert_eq!(status, 200, "{reply}");
    }
}

/// A four-token chat with the LLM `chat`.
async fn short_chat(client: &Client, cluster: &Cluster) -> (u16, Value) {
    post(
        client,
        cluster.url("/v1/chat/completions"),
        None,
        json!({ "model": "chat", "max_tokens": 4, "messages": [{ "role": "user", "content": "Hi" }] }),
    )
    .await
}

fn start_supervisor(dir: &Path, port: &str) -> Local {
    let home = dir.join("sup-home");
    Local::spawn(
        SUPERVISOR_BIN,
        "xinference-supervisor",
        &home,
        &[
            "-H",
            "127.0.0.1",
            "-p",
            port,
            "--home",
            home.to_str().unwrap(),
            "--heartbeat-interval",
            HEARTBEAT,
        ],
        &[],
    )
}

fn address_of(worker: &Local) -> String {
    worker.url.trim_start_matches("http://").to_string()
}

/// `{address: alive}` from `/status`.
async fn alive_workers(client: &Client, cluster: &Cluster) -> Vec<(String, bool)> {
    let status = get_json(client, cluster.url("/status")).await;
    status["workers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(address, w)| (address.clone(), w["alive"].as_bool().unwrap()))
        .collect()
}

async fn wait_alive(client: &Client, cluster: &Cluster, address: &str, alive: bool) -> bool {
    eventually(Duration::from_secs(15), || async {
        alive_workers(client, cluster)
            .await
            .iter()
            .any(|(a, up)| a == address && *up == alive)
    })
    .await
}

fn minilm_launch(uid: &str, replica: u32) -> Value {
    json!({
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": uid,
        "replica": replica, "model_path": xi_testkit::minilm(),
    })
}

async fn embed(client: &Client, cluster: &Cluster, uid: &str) -> (u16, Value) {
    post(
        client,
        cluster.url("/v1/embeddings"),
        None,
        json!({ "model": uid, "input": "the cluster answers" }),
    )
    .await
}

#[tokio::test]
async fn only_workers_with_the_secret_join_and_worker_ports_refuse_everyone_else() {
    let cluster = Cluster::start();
    let client = Client::new();

    // No worker yet: launches cannot be placed.
    let (status, body) = post(
        &client,
        cluster.url("/v1/models"),
        None,
        minilm_launch("m", 1),
    )
    .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (503, Some("No available worker found"))
    );

    let worker = cluster.worker("w1");
    let address = address_of(&worker);
    assert!(wait_alive(&client, &cluster, &address, true).await);

    // A worker with another secret is refused, says so and exits; the supervisor logs it.
    let home = cluster.dir.path().join("intruder");
    let out = std::process::Command::new(WORKER_BIN)
        .args(["-e", &cluster.supervisor.url, "-H", "127.0.0.1", "--home"])
        .arg(&home)
        .env("XINFERENCE_CLUSTER_SECRET", "not-the-cluster-secret-at-all")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused this worker's cluster secret"),
        "{stderr}"
    );
    assert!(cluster
        .supervisor
        .logs()
        .contains("refused a cluster call: wrong or missing cluster secret"));
    // A worker without any secret does not start.
    let out = std::process::Command::new(WORKER_BIN)
        .args(["-e", &cluster.supervisor.url, "--home"])
        .arg(&home)
        .env_remove("XINFERENCE_CLUSTER_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster secret"));
    assert_eq!(alive_workers(&client, &cluster).await.len(), 1);

    // The internal routes answer nothing useful without the secret, on both sides.
    for (url, body) in [
        (format!("{}/internal/v1/replicas", worker.url), json!({})),
        (format!("{}/internal/v1/shutdown", worker.url), json!({})),
        (
            cluster.url("/internal/v1/workers/join"),
            json!({ "address": "1.2.3.4:5", "resources": {}, "replicas": [] }),
        ),
    ] {
        let res = client
            .post(&url)
            .header("x-xinference-cluster-secret", "guess-guess-guess-guess")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{url}");
        let res = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 401, "{url}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["detail"],
            "Missing or wrong cluster secret"
        );
    }
    // The public API never shows the secret.
    let secret = std::fs::read_to_string(&cluster.secret_file).unwrap();
    for path in [
        "/status",
        "/v1/cluster/info?detailed=true",
        "/v1/workers",
        "/metrics",
    ] {
        let text = client
            .get(cluster.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(secret.trim()), "{path} shows the secret");
    }

    let info = get_json(&client, cluster.url("/v1/cluster/info?detailed=true")).await;
    assert_eq!(info[0]["node_type"], "Supervisor");
    assert_eq!(info[1]["node_type"], "Worker");
    assert_eq!(info[1]["address"], address.as_str());
    assert!(info[1]["cpu_count"].as_u64().unwrap() >= 1);
    assert!(info[1]["mem_total"].as_u64().unwrap() > 0);

    // A graceful exit leaves at once (no waiting for missed heartbeats).
    let mut worker = worker;
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(10)).success());
    let workers = alive_workers(&client, &cluster).await;
    assert!(workers.is_empty(), "{workers:?}");
}

#[tokio::test]
async fn replicas_spread_and_a_killed_worker_is_routed_around_quickly() {
    let cluster = Cluster::start();
    let client = Client::new();
    let (mut a, b) = cluster.two_workers(&client).await;
    cluster.launch(&client, minilm_launch("mini", 2)).await;
    let instances = get_json(&client, cluster.url("/v1/models/instances?model_uid=mini")).await;
    let holders: BTreeSet<String> = instances[0]["replica_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["worker_address"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = [address_of(&a), address_of(&b)].into();
    assert_eq!(holders, expected, "the two replicas are on the two workers");
    let workers = get_json(&client, cluster.url("/v1/workers")).await;
    for w in workers.as_array().unwrap() {
        assert_eq!(w["models"].as_object().unwrap().len(), 1, "{w}");
    }
    // Pinning by worker address; an unknown IP is refused.
    let mut pinned = minilm_launch("pinned", 1);
    pinned["worker_ip"] = json!(address_of(&b));
    cluster.launch(&client, pinned).await;
    let described = get_json(&client, cluster.url("/v1/models/pinned")).await;
    assert_eq!(described["address"], address_of(&b).as_str());
    let mut nowhere = minilm_launch("nowhere", 1);
    nowhere["worker_ip"] = json!("10.9.8.7");
    let (status, body) = post(&client, cluster.url("/v1/models"), None, nowhere).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (
            400,
            Some("Worker ip address 10.9.8.7 is not in the cluster.")
        )
    );

    // Both replicas serve, identically.
    let mut served = BTreeSet::new();
    let mut vectors = Vec::new();
    for _ in 0..4 {
        let (status, body) = embed(&client, &cluster, "mini").await;
        assert_eq!(status, 200, "{body}");
        served.insert(body["model_replica"].as_str().unwrap().to_string());
        vectors.push(body["data"][0]["embedding"].clone());
    }
    assert_eq!(
        served.len(),
        2,
        "round-robin over both replicas: {served:?}"
    );
    assert!(vectors.windows(2).all(|w| w[0] == w[1]));

    // Traffic while worker a is killed: every request succeeds (on b) or fails fast; none hangs.
    let traffic = {
        let client = client.clone();
        let url = cluster.url("/v1/embeddings");
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                let start = Instant::now();
                let res = client
                    .post(&url)
                    .json(&json!({ "model": "mini", "input": "still there?" }))
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .unwrap();
                outcomes.push((res.status().as_u16(), start.elapsed()));
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    a.signal("KILL");
    let _ = a.wait_exit(Duration::from_secs(5));
    assert!(wait_alive(&client, &cluster, &address_of(&a), false).await);
    let detection = killed_at.elapsed();
    let outcomes = traffic.await.unwrap();
    let slowest = outcomes.iter().map(|(_, t)| *t).max().unwrap();
    let failed = outcomes.iter().filter(|(s, _)| *s != 200).count();
    eprintln!(
        "killed worker declared dead after {detection:?} (heartbeat {HEARTBEAT} s); {} requests, {failed} failed, slowest {slowest:?}",
        outcomes.len()
    );
    assert!(detection < Duration::from_secs(10), "{detection:?}");
    assert!(outcomes.len() > 10);
    assert!(
        slowest < Duration::from_secs(3),
        "a request waited {slowest:?}"
    );
    assert!(
        outcomes.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{outcomes:?}"
    );
    // The model now lives on b alone; the dead worker's replica is gone from routing.
    let on_b = instances[0]["replica_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["worker_address"] == address_of(&b).as_str())
        .unwrap()["replica_model_uid"]
        .clone();
    for _ in 0..3 {
        let (status, body) = embed(&client, &cluster, "mini").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model_replica"], on_b);
    }
    let described = get_json(&client, cluster.url("/v1/models/mini")).await;
    assert_eq!(described["replica"], 1);
    let workers = get_json(&client, cluster.url("/v1/workers")).await;
    let dead = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["work-ip"] == address_of(&a).as_str())
        .unwrap();
    assert_eq!(dead["alive"], false);
    assert!(dead["models"].as_object().unwrap().is_empty());

    // A new worker joins in a's place and takes new launches.
    let c = cluster.worker("c");
    assert!(wait_alive(&client, &cluster, &address_of(&c), true).await);
    cluster.launch(&client, minilm_launch("fresh", 1)).await;
    let described = get_json(&client, cluster.url("/v1/models/fresh")).await;
    assert_eq!(
        described["address"],
        address_of(&c).as_str(),
        "the least loaded worker"
    );
}

#[tokio::test]
async fn models_survive_a_supervisor_restart_and_streams_pass_through() {
    let mut cluster = Cluster::start();
    let client = Client::new();
    let (a, b) = cluster.two_workers(&client).await;
    cluster.launch(&client, minilm_launch("mini", 2)).await;
    let llm = json!({
        "model_name": "smollm2-instruct", "model_format": "ggufv2", "quantization": "Q4_1",
        "model_path": xi_testkit::smollm2_gguf(), "model_uid": "chat",
        // One sequence at a time: a generation that is not cancelled would block the next.
        "max_num_seqs": 1,
    });
    cluster.launch(&client, llm).await;

    // A stream passes through chunk by chunk.
    let res = client
        .post(cluster.url("/v1/chat/completions"))
        .json(&json!({
            "model": "chat", "stream": true, "max_tokens": 24, "temperature": 0,
            "messages": [{ "role": "user", "content": "Name three colours." }],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut chunks = 0;
    let mut text = String::new();
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        chunks += 1;
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(chunks > 5, "{chunks} chunks: {text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // Two choices, tool calls parsed on the worker, and log probabilities cross the cluster.
    let tools = json!([{ "type": "function", "function": { "name": "pick",
        "parameters": { "type": "object", "properties": { "colour": { "enum": ["red", "blue"] } },
            "required": ["colour"], "additionalProperties": false } } }]);
    let (status, reply) = post(
        &client,
        cluster.url("/v1/chat/completions"),
        None,
        json!({ "model": "chat", "n": 2, "max_tokens": 40, "seed": 1, "logprobs": true,
            "tools": tools, "tool_choice": "required", "parallel_tool_calls": false,
            "messages": [{ "role": "user", "content": "Pick a colour." }] }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{reply}");
    for c in choices {
        assert_eq!(c["finish_reason"], "tool_calls", "{reply}");
        assert_eq!(c["message"]["tool_calls"][0]["function"]["name"], "pick");
        assert!(
            !c["logprobs"]["content"].as_array().unwrap().is_empty(),
            "{reply}"
        );
    }

    // A client that goes away cancels the worker's generation: the next request (one sequence
    // at a time) is served at once instead of after thousands of tokens.
    let res = client
        .post(cluster.url("/v1/chat/completions"))
        .json(&json!({
            "model": "chat", "stream": true, "max_tokens": 4000, "ignore_eos": true,
            "messages": [{ "role": "user", "content": "Tell me a very long story." }],
        }))
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    let start = Instant::now();
    let (status, body) = short_chat(&client, &cluster).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "waited {:?}",
        start.elapsed()
    );

    // Restart the supervisor on the same port: the workers join again with their replicas.
    let port = cluster.port();
    cluster.supervisor.signal("TERM");
    assert!(cluster
        .supervisor
        .wait_exit(Duration::from_secs(10))
        .success());
    cluster.supervisor = start_supervisor(cluster.dir.path(), &port);
    // A new client: the old one's pooled connections died with the old process.
    let client = Client::new();
    // Each worker re-joins on its own heartbeat: wait for both (both models listed, and both
    // replicas of `mini`, which live on different workers).
    let ok = eventually(Duration::from_secs(15), || async {
        let models = get_json(&client, cluster.url("/v1/models")).await;
        let mini = get_json(&client, cluster.url("/v1/models/mini")).await;
        models["data"].as_array().map_or(0, Vec::len) == 2 && mini["replica"] == 2
    })
    .await;
    assert!(
        ok,
        "models are listed again: {}",
        get_json(&client, cluster.url("/v1/models")).await
    );
    let described = get_json(&client, cluster.url("/v1/models/mini")).await;
    assert_eq!(described["replica"], 2, "{described}");
    assert_eq!(described["dimensions"], 384);
    let (status, body) = embed(&client, &cluster, "mini").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = short_chat(&client, &cluster).await;
    assert_eq!(status, 200, "{body}");

    // Stopping the cluster stops the workers too.
    let res = client
        .delete(cluster.url("/v1/clusters"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for mut w in [a, b] {
        assert!(w.wait_exit(Duration::from_secs(15)).success());
    }
    assert!(cluster
        .supervisor
        .wait_exit(Duration::from_secs(15))
        .success());
}
