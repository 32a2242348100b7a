//! The identity store under faults, through the real `xinference-local`:
//!
//! - `kill -9` while 100 admin writes are in flight (SQLite): after a restart on the same home
//!   every acknowledged write is there, nothing is half-written, and SQLite's own checks pass.
//! - the database (PostgreSQL) going away and coming back: cached credentials keep working,
//!   logins and admin writes answer 503 with `Retry-After`, and everything recovers by itself.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;
use xi_testkit::postgres::TempPostgres;

use crate::support::Local;

const ADMIN_PASSWORD: &str = "admin-password-after-bootstrap";
const BASE: [&str; 2] = ["models:list", "models:read"];
const CHANGED: [&str; 3] = ["models:list", "models:read", "models:start"];

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One request: (status, JSON body or Null, Retry-After header). Err when no answer came.
async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    auth: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value, Option<String>), String> {
    let mut req = client.request(method, url);
    if let Some(auth) = auth {
        req = req.bearer_auth(auth);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let text = res.text().await.map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok((status, body, retry_after))
}

async fn get(client: &Client, url: String, auth: &str) -> (u16, Value) {
    let (s, b, _) = call(client, reqwest::Method::GET, url, Some(auth), None)
        .await
        .unwrap();
    (s, b)
}

/// Logs in: (status, access token, body).
async fn login(client: &Client, local: &Local, user: &str, password: &str) -> (u16, Value) {
    let body = json!({"username": user, "password": password});
    let (s, b, _) = call(
        client,
        reqwest::Method::POST,
        local.url("/token"),
        None,
        Some(body),
    )
    .await
    .unwrap();
    (s, b)
}

async fn token(client: &Client, local: &Local, user: &str, password: &str) -> String {
    let (status, body) = login(client, local, user, password).await;
    assert_eq!(status, 200, "login of {user}: {body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// Logs the bootstrap admin in, changes its password to [`ADMIN_PASSWORD`], logs in again.
async fn set_up_admin(client: &Client, local: &Local) -> String {
    let first = local.bootstrap_password();
    let token = token(client, local, "admin", &first).await;
    let change = json!({"new_password": ADMIN_PASSWORD, "old_password": first});
    let (status, body, _) = call(
        client,
        reqwest::Method::PUT,
        local.url("/v1/admin/users/1/password"),
        Some(&token),
        Some(change),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "password change: {body}");
    self::token(client, local, "admin", ADMIN_PASSWORD).await
}

fn set(perms: &Value) -> BTreeSet<String> {
    perms
        .as_array()
        .unwrap_or_else(|| panic!("permissions are a list: {perms}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn strs(perms: &[&str]) -> BTreeSet<String> {
    perms.iter().map(|p| p.to_string()).collect()
}

#[derive(Clone, Debug)]
enum Op {
    CreateUser { name: String },
    CreateKey { name: String, owner: i64 },
    SetPermissions { id: i64 },
    DeleteUser { id: i64 },
}

/// What an op got back: `Some(status, body)`, or `None` when the connection died first.
type Outcome = Option<(u16, Value)>;

async fn perform(client: &Client, base: &str, admin: &str, op: &Op) -> Outcome {
    use reqwest::Method;
    let (method, path, body) = match op {
        Op::CreateUser { name } => (
            Method::POST,
            "/v1/admin/users".to_string(),
            Some(
                json!({"username": name, "password": format!("{name}-password"), "permissions": BASE}),
            ),
        ),
        Op::CreateKey { name, owner } => (
            Method::POST,
            "/v1/admin/keys".to_string(),
            Some(json!({"name": name, "owner": owner})),
        ),
        Op::SetPermissions { id } => (
            Method::PUT,
            format!("/v1/admin/users/{id}/permissions"),
            Some(json!({"permissions": CHANGED})),
        ),
        Op::DeleteUser { id } => (Method::DELETE, format!("/v1/admin/users/{id}"), None),
    };
    call(client, method, format!("{base}{path}"), Some(admin), body)
        .await
        .ok()
        .map(|(s, b, _)| (s, b))
}

fn sqlite_checks(db: &Path) {
    if Command::new("sqlite3").arg("-version").output().is_err() {
        eprintln!(
            "identity_faults: SKIPPING the sqlite3 checks (PRAGMA integrity_check, \
             foreign_key_check): the sqlite3 CLI is not installed"
        );
        return;
    }
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg("PRAGMA integrity_check; PRAGMA foreign_key_check; \
              SELECT 'orphan keys: ' || count(*) FROM api_keys WHERE user_id NOT IN (SELECT id FROM users); \
              SELECT 'orphan key models: ' || count(*) FROM api_key_models WHERE key_id NOT IN (SELECT id FROM api_keys);")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        "ok\norphan keys: 0\norphan key models: 0",
        "SQLite's checks of {}",
        db.display()
    );
}

#[test]
fn kill_9_during_admin_writes_loses_no_acknowledged_write() {
    let started = Instant::now();
    let dir = TempDir::new().unwrap();
    let home = dir.path().join("server");
    let rt = runtime();
    let client = client();

    let mut local = Local::start(&home, &["--auth"]);
    let admin = rt.block_on(set_up_admin(&client, &local));

    // Users to change (p0..p19) and to delete (p20..p29, each with a key that must go with it).
    let (pre_users, pre_keys) = rt.block_on(async {
        let mut users = HashMap::new();
        let mut handles = Vec::new();
        for i in 0..30 {
            let (client, base, admin) = (client.clone(), local.url.clone(), admin.clone());
            handles.push(tokio::spawn(async move {
                let name = format!("p{i}");
                let op = Op::CreateUser { name: name.clone() };
                (name, perform(&client, &base, &admin, &op).await)
            }));
        }
        for h in handles {
            let (name, outcome) = h.await.unwrap();
            let (status, body) = outcome.expect("an answer");
            assert_eq!(status, 201, "create {name}: {body}");
            users.insert(name, body["id"].as_i64().unwrap());
        }
        let mut keys = HashMap::new();
        for i in 20..30 {
            let owner = users[&format!("p{i}")];
            let op = Op::CreateKey {
                name: format!("pre-key-{i}"),
                owner,
            };
            let (status, body) = perform(&client, &local.url, &admin, &op)
                .await
                .expect("an answer");
            assert_eq!(status, 201, "{body}");
            keys.insert(owner, body["id"].as_i64().unwrap());
        }
        (users, keys)
    });
    let pre = |i: usize| pre_users[&format!("p{i}")];

    // 100 writes: 40 user creations, 30 key creations, 20 permission changes, 10 deletions,
    // interleaved, at most 16 in flight.
    let mut ops = Vec::new();
    let (mut u, mut k, mut p, mut d) = (0, 0, 0, 0);
    for i in 0..100 {
        let op = match i % 10 {
            0 | 2 | 4 | 7 => {
                u += 1;
                Op::CreateUser {
                    name: format!("c{u}"),
                }
            }
            1 | 5 | 8 => {
                k += 1;
                let owner = if k % 3 == 0 { 1 } else { pre(k % 20) };
                Op::CreateKey {
                    name: format!("k{k}"),
                    owner,
                }
            }
            3 | 9 => {
                p += 1;
                Op::SetPermissions { id: pre(p - 1) }
            }
            _ => {
                d += 1;
                Op::DeleteUser { id: pre(19 + d) }
            }
        };
        ops.push(op);
    }
    assert_eq!((u, k, p, d), (40, 30, 20, 10));

    let returned = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let (outcomes, killed_after, in_flight) = rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(16));
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let kill_tx = Arc::new(std::sync::Mutex::new(Some(kill_tx)));
        let mut handles = Vec::new();
        for op in ops.clone() {
            let (client, base, admin) = (client.clone(), local.url.clone(), admin.clone());
            let (gate, returned, kill_tx) = (gate.clone(), returned.clone(), kill_tx.clone());
            let sent = sent.clone();
            handles.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
                let outcome = perform(&client, &base, &admin, &op).await;
                if returned.fetch_add(1, Ordering::SeqCst) + 1 >= 30 {
                    if let Some(tx) = kill_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
                outcome
            }));
        }
        tokio::time::timeout(Duration::from_secs(20), kill_rx)
            .await
            .expect("30 writes returned within 20 s")
            .unwrap();
        local.child.kill().unwrap(); // SIGKILL
        let killed_after = returned.load(Ordering::SeqCst);
        let in_flight = sent.load(Ordering::SeqCst) - killed_after;
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.unwrap());
        }
        (outcomes, killed_after, in_flight)
    });
    local.child.wait().unwrap();
    let acked = outcomes
        .iter()
        .filter(|o| matches!(o, Some((s, _)) if (200..300).contains(s)))
        .count();
    let unanswered = outcomes.iter().filter(|o| o.is_none()).count();
    for (op, outcome) in ops.iter().zip(&outcomes) {
        if let Some((status, body)) = outcome {
            assert!(
                (200..300).contains(status),
                "{op:?} answered {status} before the kill: {body}"
            );
        }
    }
    let mut by_kind: HashMap<&str, (usize, usize)> = HashMap::new();
    for (op, outcome) in ops.iter().zip(&outcomes) {
        let kind = match op {
            Op::CreateUser { .. } => "create user",
            Op::CreateKey { .. } => "create key",
            Op::SetPermissions { .. } => "set permissions",
            Op::DeleteUser { .. } => "delete user",
        };
        let entry = by_kind.entry(kind).or_default();
        entry.0 += usize::from(outcome.is_some());
        entry.1 += 1;
    }
    eprintln!(
        "identity_faults: killed after {killed_after} returned ({in_flight} in flight); \
         {acked} acknowledged, {unanswered} without an answer; acknowledged/sent by kind: \
         {by_kind:?}"
    );
    assert!(
        in_flight > 0 && unanswered > 0,
        "the kill came after every write had returned: nothing was in flight"
    );
    drop(local);

    // Restart on the same home: the admin's new password, no second bootstrap.
    let local = Local::start(&home, &["--auth"]);
    assert!(
        !local.logs().contains("First admin of the identity store"),
        "a restart must not bootstrap again:\n{}",
        local.logs()
    );
    rt.block_on(async {
        let admin = token(&client, &local, "admin", ADMIN_PASSWORD).await;
        let (status, users) = get(&client, local.url("/v1/admin/users"), &admin).await;
        assert_eq!(status, 200, "{users}");
        let users = users.as_array().unwrap().clone();
        let mut by_name: HashMap<String, Value> = HashMap::new();
        for user in &users {
            for field in [
                "id",
                "username",
                "source",
                "enabled",
                "must_change_password",
                "permissions",
                "created_at",
            ] {
                assert!(
                    user.get(field).is_some_and(|v| !v.is_null()),
                    "listed user without {field}: {user}"
                );
            }
            let id = user["id"].as_i64().unwrap();
            let (status, one) =
                get(&client, local.url(&format!("/v1/admin/users/{id}")), &admin).await;
            assert_eq!(status, 200, "listed user {id} cannot be fetched: {one}");
            assert_eq!(
                &one, user,
                "GET /v1/admin/users/{id} disagrees with the list"
            );
            by_name.insert(user["username"].as_str().unwrap().to_string(), user.clone());
        }
        let ids: BTreeSet<i64> = users.iter().map(|u| u["id"].as_i64().unwrap()).collect();
        assert!(by_name.contains_key("admin"));

        let (status, keys) = get(&client, local.url("/v1/admin/keys"), &admin).await;
        assert_eq!(status, 200, "{keys}");
        let keys = keys.as_array().unwrap().clone();
        let mut key_ids = BTreeSet::new();
        for key in &keys {
            let owner = key["user_id"].as_i64().unwrap();
            assert!(ids.contains(&owner), "key of a missing user {owner}: {key}");
            key_ids.insert(key["id"].as_i64().unwrap());
        }

        for (op, outcome) in ops.iter().zip(&outcomes) {
            let acked = outcome.is_some();
            match op {
                Op::CreateUser { name } => {
                    match by_name.get(name) {
                        Some(user) => assert_eq!(
                            set(&user["permissions"]),
                            strs(&BASE),
                            "{name}: all of the creation or none"
                        ),
                        None => assert!(!acked, "acknowledged user {name} is missing"),
                    }
                    if acked {
                        let id = outcome.as_ref().unwrap().1["id"].as_i64().unwrap();
                        assert_eq!(by_name[name]["id"].as_i64(), Some(id));
                        let (s, _) =
                            login(&client, &local, name, &format!("{name}-password")).await;
                        assert_eq!(s, 200, "acknowledged user {name} cannot log in");
                    }
                }
                Op::CreateKey { name, owner } => {
                    if let Some((_, body)) = outcome {
                        let id = body["id"].as_i64().unwrap();
                        assert!(
                            key_ids.contains(&id),
                            "acknowledged key {name} ({id}) is missing"
                        );
                        let key = keys.iter().find(|k| k["id"].as_i64() == Some(id)).unwrap();
                        assert_eq!(key["user_id"].as_i64(), Some(*owner), "{key}");
                        let (s, b) = get(
                            &client,
                            local.url("/v1/models"),
                            body["key"].as_str().unwrap(),
                        )
                        .await;
                        assert_eq!(s, 200, "acknowledged key {name} does not work: {b}");
                    }
                }
                Op::SetPermissions { id } => {
                    let user = users.iter().find(|u| u["id"].as_i64() == Some(*id));
                    let user = user.unwrap_or_else(|| panic!("user {id} (never deleted) is gone"));
                    let got = set(&user["permissions"]);
                    if acked {
                        assert_eq!(
                            got,
                            strs(&CHANGED),
                            "acknowledged permission change of {id} lost"
                        );
                    } else {
                        assert!(
                            got == strs(&CHANGED) || got == strs(&BASE),
                            "user {id}: {got:?}"
                        );
                    }
                }
                Op::DeleteUser { id } => {
                    let present = ids.contains(id);
                    if acked {
                        assert!(!present, "acknowledged deletion of user {id} lost");
                        let (s, _) =
                            get(&client, local.url(&format!("/v1/admin/users/{id}")), &admin).await;
                        assert_eq!(s, 404);
                    }
                    let key = pre_keys[id];
                    assert_eq!(
                        key_ids.contains(&key),
                        present,
                        "user {id} present={present}, but its key {key} present={}",
                        key_ids.contains(&key)
                    );
                }
            }
        }
    });
    sqlite_checks(&home.join("identity.db"));
    eprintln!("identity_faults: kill -9 test took {:?}", started.elapsed());
}

#[test]
fn a_database_outage_answers_503_and_recovers_without_a_restart() {
    let started = Instant::now();
    let mut pg = TempPostgres::start();
    let url = pg.fresh_database();
    let dir = TempDir::new().unwrap();
    let mut local = Local::start(
        &dir.path().join("server"),
        &["--auth", "--database-url", &url],
    );
    let rt = runtime();
    let client = client();
    let (admin, key) = rt.block_on(async {
        let admin = set_up_admin(&client, &local).await;
        let (status, created, _) = call(
            &client,
            reqwest::Method::POST,
            local.url("/v1/admin/keys"),
            Some(&admin),
            Some(json!({"name": "app"})),
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{created}");
        let key = created["key"].as_str().unwrap().to_string();
        assert_eq!(get(&client, local.url("/v1/models"), &key).await.0, 200);
        assert_eq!(get(&client, local.url("/v1/models"), &admin).await.0, 200);
        (admin, key)
    });

    pg.stop();
    rt.block_on(async {
        // Cached credentials go on, and quickly.
        let t = Instant::now();
        let (s, b) = get(&client, local.url("/v1/models"), &key).await;
        assert_eq!(s, 200, "a cached key during the outage: {b}");
        let (s, b) = get(&client, local.url("/v1/models"), &admin).await;
        assert_eq!(s, 200, "a cached token during the outage: {b}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "cached credentials took {:?}",
            t.elapsed()
        );

        // A new login: 503 naming the store, with Retry-After, within a bounded time.
        let t = Instant::now();
        let body = json!({"username": "admin", "password": ADMIN_PASSWORD});
        let (s, b, retry) = call(
            &client,
            reqwest::Method::POST,
            local.url("/token"),
            None,
            Some(body),
        )
        .await
        .unwrap();
        let login_took = t.elapsed();
        assert_eq!(s, 503, "a login during the outage: {b}");
        assert!(
            b["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("identity store"),
            "{b}"
        );
        assert!(
            retry.is_some_and(|r| r.parse::<u64>().is_ok()),
            "no Retry-After on the 503"
        );
        assert!(
            login_took < Duration::from_secs(10),
            "the 503 took {login_took:?}"
        );

        // An admin write: 503 as well.
        let t = Instant::now();
        let bob = json!({"username": "bob", "password": "bob-password", "permissions": BASE});
        let (s, b, retry) = call(
            &client,
            reqwest::Method::POST,
            local.url("/v1/admin/users"),
            Some(&admin),
            Some(bob.clone()),
        )
        .await
        .unwrap();
        assert_eq!(s, 503, "an admin write during the outage: {b}");
        assert!(retry.is_some(), "no Retry-After on the write's 503");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the write's 503 took {:?}",
            t.elapsed()
        );
        eprintln!("identity_faults: outage login 503 in {login_took:?}");
    });

    pg.restart();
    rt.block_on(async {
        let t = Instant::now();
        let mut back = None;
        while t.elapsed() < Duration::from_secs(15) {
            let (s, b) = login(&client, &local, "admin", ADMIN_PASSWORD).await;
            if s == 200 {
                back = Some(b["access_token"].as_str().unwrap().to_string());
                break;
            }
            assert_eq!(s, 503, "while the store comes back: {b}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let admin = back.expect("logins work again within 15 s of the database's restart");
        eprintln!(
            "identity_faults: logins back {:?} after the restart",
            t.elapsed()
        );
        let bob = json!({"username": "bob", "password": "bob-password", "permissions": BASE});
        let (s, b, _) = call(
            &client,
            reqwest::Method::POST,
            local.url("/v1/admin/users"),
            Some(&admin),
            Some(bob),
        )
        .await
        .unwrap();
        assert_eq!(s, 201, "an admin write after recovery: {b}");
        let (s, _) = login(&client, &local, "bob", "bob-password").await;
        assert_eq!(s, 200, "the new user logs in");
        assert_eq!(get(&client, local.url("/v1/models"), &key).await.0, 200);
    });
    assert!(
        local.child.try_wait().unwrap().is_none(),
        "the server exited during the outage:\n{}",
        local.logs()
    );
    drop(local);
    pg.stop();
    eprintln!("identity_faults: outage test took {:?}", started.elapsed());
}
