//! `xinference-local` as a user runs it: config refusal, reload, signals, crash safety, logs.

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{
    config, eventually, get_json, login, run_to_exit, token, write_json, Local, BIN, SECRET,
};

fn users() -> Value {
    json!([
        { "username": "admin", "password": "admin-pass-123", "permissions": ["admin"], "api_keys": ["sk-AdminKey00001"] },
        { "username": "bob", "password": "bob-pass-456", "permissions": ["models:list", "models:read"] },
    ])
}

#[test]
fn bad_configs_stop_startup_naming_the_field_and_never_listen() {
    let dir = TempDir::new().unwrap();
    let secret_short = json!({ "auth_config": { "secret_key": "too-short", "token_expire_in_minutes": 30 }, "user_config": [] });
    let mut bad_perm = config(users());
    bad_perm["user_config"][1]["permissions"] = json!(["models:fly"]);
    let mut bad_key = config(users());
    bad_key["user_config"][0]["api_keys"] = json!(["sk-short"]);
    let mut dup_user = config(users());
    dup_user["user_config"][1]["username"] = json!("admin");
    let mut bad_alg = config(users());
    bad_alg["auth_config"]["algorithm"] = json!("RS256");
    let mut bad_expiry = config(users());
    bad_expiry["auth_config"]["token_expire_in_minutes"] = json!(0);
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        ("missing file", None, "cannot read the file"),
        (
            "not json",
            Some(Value::String("{ nope".into())),
            "is not valid JSON",
        ),
        (
            "short secret",
            Some(secret_short),
            "auth_config.secret_key: is 9 bytes long, HS256 needs at least 32",
        ),
        (
            "unknown permission",
            Some(bad_perm),
            "user_config[1] (user \"bob\").permissions[0]: unknown permission \"models:fly\"",
        ),
        (
            "bad api key",
            Some(bad_key),
            "user_config[0] (user \"admin\").api_keys[0]",
        ),
        (
            "duplicate user",
            Some(dup_user),
            "duplicate username \"admin\"",
        ),
        (
            "bad algorithm",
            Some(bad_alg),
            "auth_config.algorithm: \"RS256\" is not supported",
        ),
        (
            "zero expiry",
            Some(bad_expiry),
            "auth_config.token_expire_in_minutes: must be a positive integer",
        ),
    ];
    for (name, content, needle) in cases {
        let path = dir.path().join(format!("{}.json", name.replace(' ', "-")));
        match content {
            Some(Value::String(raw)) => std::fs::write(&path, raw).unwrap(),
            Some(value) => write_json(&path, &value),
            None => {}
        }
        let (status, stdout, stderr) = run_to_exit(
            &dir.path().join("home"),
            &["--auth-config", path.to_str().unwrap()],
        );
        assert!(!status.success(), "{name}: must exit non-zero");
        assert!(
            stderr.contains(needle),
            "{name}: stderr lacks {needle:?}:\n{stderr}"
        );
        assert!(
            !stdout.contains("listening"),
            "{name}: it listened: {stdout}"
        );
        assert!(
            !stderr.contains(SECRET) && !stderr.contains("bob-pass-456"),
            "{name}: secret in stderr"
        );
    }
}

#[tokio::test]
async fn the_example_config_serves_and_sigterm_stops_gracefully() {
    let dir = TempDir::new().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/auth.json");
    let mut local = Local::start(&dir.path().join("home"), &["--auth-config", example]);
    let client = Client::new();
    let auth: Value = get_json(&client, local.url("/v1/cluster/auth")).await;
    assert_eq!(auth, json!({ "auth": true }));
    let user1 = token(&client, &local.url, "user1", "secret1").await;
    let res = client
        .get(local.url("/v1/cluster/info"))
        .bearer_auth(&user1)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    local.signal("TERM");
    let status = local.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(
        local.logs().contains("supervisor stopped"),
        "{}",
        local.logs()
    );
}

#[tokio::test]
async fn sighup_without_auth_is_logged_and_the_server_keeps_serving() {
    let dir = TempDir::new().unwrap();
    let mut local = Local::start(&dir.path().join("home"), &[]);
    local.signal("HUP");
    let client = Client::new();
    assert!(
        eventually(Duration::from_secs(10), || async {
            local.logs().contains("nothing to reload")
        })
        .await,
        "{}",
        local.logs()
    );
    assert!(
        local.child.try_wait().unwrap().is_none(),
        "SIGHUP killed the server"
    );
    let res = client.get(local.url("/status")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn sighup_reload_takes_effect_for_tokens_already_issued() {
    let dir = TempDir::new().unwrap();
    let auth_path = dir.path().join("auth.json");
    write_json(&auth_path, &config(users()));
    let local = Local::start(
        &dir.path().join("home"),
        &["--auth-config", auth_path.to_str().unwrap()],
    );
    let client = Client::new();
    let bob = token(&client, &local.url, "bob", "bob-pass-456").await;
    let admin = token(&client, &local.url, "admin", "admin-pass-123").await;
    let status_of = |tok: String, path: &'static str| {
        let client = client.clone();
        let url = local.url(path);
        async move {
            client
                .get(url)
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status_of(bob.clone(), "/v1/models").await, 200);

    // Remove models:list from bob: his existing token loses it.
    let mut reduced = config(users());
    reduced["user_config"][1]["permissions"] = json!(["models:read"]);
    write_json(&auth_path, &reduced);
    local.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || status_of(
            bob.clone(),
            "/v1/models"
        )
        .then(|s| async move { s == 403 }))
        .await,
        "permission removal not applied; logs:\n{}",
        local.logs()
    );

    // A broken file is refused and the previous config stays.
    std::fs::write(&auth_path, "{ broken").unwrap();
    local.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            local.logs().contains("reload failed")
        })
        .await,
        "{}",
        local.logs()
    );
    assert_eq!(status_of(admin.clone(), "/v1/cluster/info").await, 200);
    assert_eq!(status_of(bob.clone(), "/v1/models").await, 403);

    // Remove bob: his token is no longer valid at all.
    let mut without_bob = config(users());
    without_bob["user_config"].as_array_mut().unwrap().pop();
    write_json(&auth_path, &without_bob);
    local.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || status_of(
            bob.clone(),
            "/v1/models"
        )
        .then(|s| async move { s == 401 }))
        .await,
        "user removal not applied"
    );
    assert_eq!(status_of(admin, "/v1/cluster/info").await, 200);
}

#[tokio::test]
async fn kill_9_during_registration_writes_leaves_every_file_whole() {
    let dir = TempDir::new().unwrap();
    let home = dir.path().join("home");
    let uri = dir.path().to_str().unwrap().to_string();
    let local = Local::start(&home, &[]);
    let client = Client::new();
    let url = local.url("/v1/model_registrations/embedding");
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..100_000 {
                let name = format!("crash-test-{i}");
                let model = json!({
                    "model_name": name, "dimensions": 8, "max_tokens": 16,
                    // Bulky definitions make each write take longer, so the kill lands mid-write more often.
                    "model_description": "x".repeat(64 * 1024),
                    "model_specs": [{ "model_format": "pytorch", "model_uri": uri }]
                });
                let body =
                    json!({ "model": model.to_string(), "worker_ip": null, "persist": true });
                match client.post(&url).json(&body).send().await {
                    Ok(res) if res.status() == 200 => acknowledged.push(name),
                    _ => break,
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut local = local;
    local.child.kill().unwrap(); // SIGKILL
    local.child.wait().unwrap();
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged.len() > 5,
        "only {} writes before the kill",
        acknowledged.len()
    );
    eprintln!(
        "{} registrations acknowledged before kill -9",
        acknowledged.len()
    );

    let folder = home.join("model/v2/embedding");
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            serde_json::from_str::<Value>(&text)
                .unwrap_or_else(|e| panic!("{} is torn: {e}", path.display()));
        }
    }
    let restarted = Local::start(&home, &[]);
    let list: Value = get_json(&client, restarted.url("/v1/model_registrations/embedding")).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["model_name"].as_str())
        .collect();
    for name in &acknowledged {
        assert!(
            names.contains(&name.as_str()),
            "{name} was acknowledged but is lost"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left after restart: {leftovers:?}"
    );
}

#[tokio::test]
async fn no_secret_reaches_the_logs_even_at_trace_level() {
    let dir = TempDir::new().unwrap();
    let auth_path = dir.path().join("auth.json");
    write_json(&auth_path, &config(users()));
    let local = Local::start(
        &dir.path().join("home"),
        &[
            "--auth-config",
            auth_path.to_str().unwrap(),
            "--log-level",
            "trace",
        ],
    );
    let client = Client::new();
    let admin = token(&client, &local.url, "admin", "admin-pass-123").await;
    assert_eq!(
        login(&client, &local.url, "bob", "wrong-guess-789")
            .await
            .status(),
        401
    );
    for auth in [
        admin.as_str(),
        "sk-AdminKey00001",
        "sk-WrongKey00001",
        "not-a-token",
    ] {
        client
            .get(local.url("/v1/models"))
            .bearer_auth(auth)
            .send()
            .await
            .unwrap();
    }
    let logs = local.logs();
    assert!(logs.contains("login succeeded"), "logs are written: {logs}");
    for secret in [
        SECRET,
        "admin-pass-123",
        "bob-pass-456",
        "wrong-guess-789",
        "sk-AdminKey00001",
        "sk-WrongKey00001",
        admin.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}

#[tokio::test]
async fn hash_password_output_works_as_a_config_password_and_unknown_users_cost_the_same() {
    let mut child = std::process::Command::new(BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hashed-pass-321\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let dir = TempDir::new().unwrap();
    let auth_path = dir.path().join("auth.json");
    write_json(
        &auth_path,
        &config(json!([{ "username": "carol", "password": hash, "permissions": ["models:list"] }])),
    );
    // Throttling off: this test makes more failed logins than the limits allow.
    let local = Local::start(
        &dir.path().join("home"),
        &[
            "--auth-config",
            auth_path.to_str().unwrap(),
            "--login-failures-per-user",
            "0",
            "--login-failures-per-address",
            "0",
        ],
    );
    let client = Client::new();
    token(&client, &local.url, "carol", "hashed-pass-321").await;

    // Interleave wrong-password and unknown-user logins and compare medians, so load from
    // other tests running at the same time hits both sides alike.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..9 {
        let start = Instant::now();
        assert_eq!(
            login(&client, &local.url, "carol", &format!("bad-{i}"))
                .await
                .status(),
            401
        );
        known.push(start.elapsed());
        let start = Instant::now();
        assert_eq!(
            login(&client, &local.url, &format!("ghost-{i}"), "bad")
                .await
                .status(),
            401
        );
        unknown.push(start.elapsed());
    }
    known.sort();
    unknown.sort();
    let ratio = known[4].as_secs_f64() / unknown[4].as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "known {known:?} vs unknown {unknown:?}"
    );
}
