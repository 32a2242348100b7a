//! Starting and stopping the real binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_xinference-local");
pub const SECRET: &str = "a3f1c9e07b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

/// A running `xinference-local`. Killed (SIGKILL) on drop unless stopped first.
pub struct Local {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Local {
    /// Starts the binary with `args` (plus `-p 0 --home home`) and waits for its address.
    pub fn start(home: &Path, args: &[&str]) -> Local {
        let log = home.with_extension(format!("log-{}", rand_suffix()));
        let mut child = Command::new(BIN)
            .args(["-p", "0", "--home"])
            .arg(home)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("xinference-local listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "no address line; got {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Local { child, url, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name} failed");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "process did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn rand_suffix() -> String {
    format!("{}-{:?}", std::process::id(), Instant::now())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "")
}

/// Runs the binary to completion (for configs that must be refused).
pub fn run_to_exit(home: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(["-p", "0", "--home"])
        .arg(home)
        .args(args)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn config(users: Value) -> Value {
    json!({
        "auth_config": { "algorithm": "HS256", "secret_key": SECRET, "token_expire_in_minutes": 30 },
        "user_config": users,
    })
}

pub fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

pub async fn login(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("{url}/token"))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap()
}

pub async fn token(client: &reqwest::Client, url: &str, user: &str, password: &str) -> String {
    let res = login(client, url, user, password).await;
    assert_eq!(res.status(), 200, "login of {user}");
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The real test models, fetched by `scripts/fetch-test-models.sh` (called here, so a fresh
/// machine needs nothing else); a failed fetch fails the test loudly.
pub fn models_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-test-models.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run fetch-test-models.sh");
        assert!(
            out.status.success(),
            "scripts/fetch-test-models.sh failed (the tests need the real models):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

pub fn minilm() -> PathBuf {
    models_dir().join("all-MiniLM-L6-v2")
}

pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/engine/tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Builds the cross-encoder of the rerank fixture in `dir`: all-MiniLM-L6-v2's body and pooler
/// under `bert.` plus the seeded classifier head the PyTorch reference used.
pub fn build_cross_encoder(dir: &Path) {
    use candle_core::{Device, Tensor};
    let f = fixture("minilm_cross_encoder.json");
    for name in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ] {
        std::fs::copy(minilm().join(name), dir.join(name)).unwrap();
    }
    let body =
        candle_core::safetensors::load(minilm().join("model.safetensors"), &Device::Cpu).unwrap();
    let mut tensors: std::collections::HashMap<String, Tensor> = body
        .into_iter()
        .map(|(k, v)| (format!("bert.{k}"), v))
        .collect();
    let weight: Vec<f32> = f["classifier_weight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let bias = f["classifier_bias"].as_f64().unwrap() as f32;
    tensors.insert(
        "classifier.weight".into(),
        Tensor::from_vec(weight, (1, 384), &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "classifier.bias".into(),
        Tensor::from_vec(vec![bias], 1, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["architectures"] = json!(["BertForSequenceClassification"]);
    config["num_labels"] = json!(1);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}
