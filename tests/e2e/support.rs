//! Starting and stopping the real binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_xinference-local");
pub const SUPERVISOR_BIN: &str = env!("CARGO_BIN_EXE_xinference-supervisor");
pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_xinference-worker");
pub const SECRET: &str = "a3f1c9e07b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

/// A running server binary (`xinference-local`, `-supervisor` or `-worker`). Killed
/// (SIGKILL) on drop unless stopped first.
pub struct Local {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Local {
    /// Starts the binary with `args` (plus `-p 0 --home home`) and waits for its address.
    pub fn start(home: &Path, args: &[&str]) -> Local {
        Self::start_with_env(home, args, &[])
    }

    /// Like [`Local::start`], with extra environment variables for the server process. Tests
    /// never reach the real hub: `HF_ENDPOINT` is a closed local port unless `env` sets it.
    pub fn start_with_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Local {
        let mut all = vec!["-p", "0", "--home", home.to_str().unwrap()];
        all.extend_from_slice(args);
        Self::spawn(BIN, "xinference-local", home, &all, env)
    }

    /// Starts `bin` with exactly `args` and waits for its `<name> listening on <url>` line
    /// (lines before it, such as the supervisor's secret notice, are skipped).
    pub fn spawn(bin: &str, name: &str, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Local {
        let log = home.with_extension(format!("log-{}", rand_suffix()));
        let mut child = Command::new(bin)
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env("XINFERENCE_DOWNLOAD_MAX_ATTEMPTS", "1")
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let prefix = format!("{name} listening on ");
        let url = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).unwrap();
            if let Some(url) = line.trim().strip_prefix(&prefix) {
                break url.to_string();
            }
            assert!(
                n > 0,
                "{name} printed no address line; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
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

    /// The first admin's password, which an `--auth` server with an empty identity store
    /// prints once on stderr.
    pub fn bootstrap_password(&self) -> String {
        let logs = self.logs();
        let line = logs
            .lines()
            .find(|l| l.contains("First admin of the identity store"))
            .unwrap_or_else(|| panic!("no first-admin line in the log:\n{logs}"));
        line.rsplit("password \"")
            .next()
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string()
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

pub use xi_testkit::{build_cross_encoder, fixture, minilm};

/// `GET url` as JSON (the tests' most common call).
pub async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let res = client.get(url).send().await.expect("request sent");
    res.json().await.expect("a JSON body")
}

/// `POST url` with a JSON body (and a bearer token, if any): the status and the JSON reply.
pub async fn post(
    client: &reqwest::Client,
    url: String,
    auth: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = client.post(url).json(&body);
    if let Some(auth) = auth {
        req = req.bearer_auth(auth);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON body"))
}

/// The launch body of SmolLM2 (its Q4_1 GGUF) as `uid`.
pub fn smollm2_launch(uid: &str) -> Value {
    json!({
        "model_name": "smollm2-instruct", "model_uid": uid, "model_engine": "candle",
        "model_format": "ggufv2", "quantization": "Q4_1",
        "model_path": xi_testkit::smollm2_gguf(),
    })
}

/// Launches `body` on `local`, expecting success.
pub async fn launch(client: &reqwest::Client, local: &Local, body: Value) {
    let (status, reply) = post(client, local.url("/v1/models"), None, body).await;
    assert_eq!(status, 200, "{reply}");
}

/// A server (in a temp home) serving SmolLM2 as `uid`, and a client.
pub async fn serving_smollm2(uid: &str) -> (tempfile::TempDir, Local, reqwest::Client) {
    let dir = tempfile::TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = reqwest::Client::new();
    launch(&client, &local, smollm2_launch(uid)).await;
    (dir, local, client)
}

/// The whole body of a (streamed) answer to `body` posted to `url`.
pub async fn post_text(client: &reqwest::Client, url: String, body: &Value) -> String {
    let res = client
        .post(url)
        .json(body)
        .send()
        .await
        .expect("request sent");
    res.text().await.expect("a body")
}

/// The `data:` events of a server-sent stream, parsed (`[DONE]` left out).
pub fn sse_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}
