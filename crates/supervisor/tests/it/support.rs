//! `TestServer`: a real supervisor on 127.0.0.1:0 with a temp `XINFERENCE_HOME`, with no worker
//! or with in-process fake workers (`xi_testkit::FakeWorker`); real weights are for the
//! end-to-end tests in `tests/e2e`.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use xi_api::worker::Worker;
use xi_supervisor::{Supervisor, SupervisorConfig};

pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub struct TestServer {
    pub url: String,
    _dir: Option<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Auth off, fresh home.
    pub fn open() -> TestServer {
        let dir = TempDir::new().unwrap();
        let config = SupervisorConfig::new(dir.path().join("home"));
        TestServer::start(config, Some(dir))
    }

    /// Auth on with `auth` (a config JSON value), fresh home.
    pub fn with_auth(auth: &Value) -> TestServer {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(&path, serde_json::to_vec(auth).unwrap()).unwrap();
        let mut config = SupervisorConfig::new(dir.path().join("home"));
        config.auth_config = Some(path);
        TestServer::start(config, Some(dir))
    }

    /// Auth off on an existing home (for restart tests).
    pub fn open_at(home: &Path) -> TestServer {
        TestServer::start(SupervisorConfig::new(home.to_path_buf()), None)
    }

    /// Auth off, fresh home, serving with `workers` (local mode: they see this host's files).
    pub fn with_workers(workers: Vec<Arc<dyn Worker>>) -> TestServer {
        let dir = TempDir::new().unwrap();
        let config = SupervisorConfig::new(dir.path().join("home"));
        TestServer::start_with(config, Some(dir), workers)
    }

    pub fn start(config: SupervisorConfig, dir: Option<TempDir>) -> TestServer {
        TestServer::start_with(config, dir, Vec::new())
    }

    pub fn start_with(
        config: SupervisorConfig,
        dir: Option<TempDir>,
        workers: Vec<Arc<dyn Worker>>,
    ) -> TestServer {
        let supervisor = Supervisor::new(config).expect("supervisor starts");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let shutdown = async move {
                let _ = stopped.await;
            };
            runtime
                .block_on(supervisor.run(listener, workers, shutdown))
                .unwrap();
        });
        TestServer {
            url,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An auth config: `users` is a list of (username, password, permissions, api_keys).
pub fn auth_config(users: &[(&str, &str, &[&str], &[&str])]) -> Value {
    let users: Vec<Value> = users
        .iter()
        .map(|(name, password, perms, keys)| {
            json!({ "username": name, "password": password, "permissions": perms, "api_keys": keys })
        })
        .collect();
    json!({
        "auth_config": { "algorithm": "HS256", "secret_key": SECRET, "token_expire_in_minutes": 30 },
        "user_config": users,
    })
}

pub async fn login(
    client: &reqwest::Client,
    server: &TestServer,
    user: &str,
    password: &str,
) -> String {
    let res = client
        .post(server.url("/token"))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login of {user} failed");
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// Status and JSON body of a response; panics if the body is not JSON.
pub async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text:?}"));
    (status, body)
}
