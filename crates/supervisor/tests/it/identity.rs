//! The identity store through the supervisor's HTTP API: users, keys, sessions, the rules
//! (escalation, the last admin, must-change-password) and key model lists, on SQLite, and two
//! supervisors sharing one real PostgreSQL database.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::{json, Value};
use tempfile::TempDir;
use xi_api::worker::Worker;
use xi_auth::SystemClock;
use xi_identity::{Identity, IdentityOptions, Store};
use xi_supervisor::SupervisorConfig;
use xi_testkit::postgres::TempPostgres;
use xi_testkit::FakeWorker;

use crate::support::{auth_config, json_of, login, TestServer};

/// A caller of one server: a base URL and an optional bearer.
struct Api<'a> {
    client: Client,
    server: &'a TestServer,
    bearer: Option<String>,
}

impl<'a> Api<'a> {
    fn new(server: &'a TestServer, bearer: Option<&str>) -> Api<'a> {
        Api {
            client: Client::new(),
            server,
            bearer: bearer.map(str::to_string),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, self.server.url(path));
        if let Some(bearer) = &self.bearer {
            req = req.bearer_auth(bearer);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        json_of(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

async fn token_pair(server: &TestServer, user: &str, password: &str) -> (String, String) {
    let (status, body) = Api::new(server, None)
        .post("/token", json!({ "username": user, "password": password }))
        .await;
    assert_eq!(status, 200, "login of {user}: {body}");
    let refresh = body["refresh_token"].as_str().expect("a refresh token");
    (
        body["access_token"].as_str().unwrap().into(),
        refresh.into(),
    )
}

/// A server with the config admin `root`, the identity store on SQLite, and fake workers.
fn config_server(workers: Vec<Arc<dyn Worker>>) -> (TestServer, TempDir) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("auth.json");
    let auth = auth_config(&[("root", "root-password", &["admin"], &[])]);
    std::fs::write(&path, serde_json::to_vec(&auth).unwrap()).unwrap();
    let mut config = SupervisorConfig::new(dir.path().join("home"));
    config.auth_config = Some(path);
    let files = TempDir::new().unwrap();
    (TestServer::start_with(config, Some(dir), workers), files)
}

#[tokio::test]
async fn users_keys_and_sessions_over_http_with_config_admins() {
    let worker = FakeWorker::new("10.0.0.1:7001");
    let (server, files) = config_server(vec![worker.clone() as Arc<dyn Worker>]);
    let root_token = login(&Client::new(), &server, "root", "root-password").await;
    let root = Api::new(&server, Some(&root_token));

    // Users: created, listed beside the config's, refused when duplicate or malformed.
    let alice = json!({
        "username": "alice", "password": "alice-password",
        "permissions": ["models:list", "models:read", "keys:create"],
    });
    let (status, body) = root.post("/v1/admin/users", alice.clone()).await;
    assert_eq!(status, 201, "{body}");
    let alice_id = body["id"].as_i64().unwrap();
    assert_eq!(root.post("/v1/admin/users", alice).await.0, 409);
    let (status, body) = root
        .post(
            "/v1/admin/users",
            json!({"username": "root", "password": "whatever-long"}),
        )
        .await;
    assert_eq!(status, 409, "a config user's name: {body}");
    let (status, body) = root
        .post(
            "/v1/admin/users",
            json!({"username": "carol", "password": "carol-password", "permissions": ["models:fly"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("models:fly"),
        "{body}"
    );
    let (status, body) = root
        .post(
            "/v1/admin/users",
            json!({"username": "dave", "password": "short"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("at least"),
        "{body}"
    );
    let (status, users) = root.get("/v1/admin/users").await;
    assert_eq!(status, 200);
    let sources: Vec<(String, String)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap().into(),
                u["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("root".into(), "config".into()),
            ("alice".into(), "local".into())
        ]
    );

    // Alice logs in; what she may do is what she holds.
    let (alice_token, alice_refresh) = token_pair(&server, "alice", "alice-password").await;
    let as_alice = Api::new(&server, Some(&alice_token));
    let (status, me) = as_alice.get("/v1/auth/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], alice_id);
    assert_eq!(me["source"], "local");
    assert_eq!(
        as_alice
            .post(
                "/v1/admin/users",
                json!({"username": "eve", "password": "eve-password"})
            )
            .await
            .0,
        403
    );

    // Two models; Alice's key may use only one of them.
    for uid in ["a", "b"] {
        let body = json!({
            "model_uid": uid, "model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
            "model_path": files.path().to_str().unwrap(),
        });
        let (status, answer) = root.post("/v1/models", body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, created) = as_alice
        .post("/v1/admin/keys", json!({"name": "app", "models": ["a"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("xf-") && key.len() == 51, "{key}");
    let key_id = created["id"].as_i64().unwrap();
    let (status, listed) = as_alice.get(&format!("/v1/admin/keys/{key_id}")).await;
    assert_eq!(status, 200);
    assert!(
        !listed.to_string().contains(&key),
        "the key is never shown again"
    );
    assert_eq!(listed["key_prefix"], &key[..7]);

    let as_key = Api::new(&server, Some(&key));
    let (status, models) = as_key.get("/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a"], "the key sees only its model");
    assert_eq!(
        root.get("/v1/models").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, _) = as_key
        .post("/v1/embeddings", json!({"model": "a", "input": "hello"}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = as_key
        .post("/v1/embeddings", json!({"model": "b", "input": "hello"}))
        .await;
    assert_eq!(status, 404, "another model is absent to the key: {body}");
    assert_eq!(
        as_key.get("/v1/models/b").await.0,
        400,
        "as upstream for an unknown uid"
    );
    assert_eq!(
        as_key.delete("/v1/models/a").await.0,
        403,
        "keys only use models"
    );

    // A key cannot outgrow its owner, nor its creator.
    let (status, body) = as_alice
        .post("/v1/admin/keys", json!({"permissions": ["models:start"]}))
        .await;
    assert_eq!(status, 403, "{body}");

    // Revoked: refused on the next request, although it was just used (and cached).
    assert_eq!(
        as_alice.delete(&format!("/v1/admin/keys/{key_id}")).await.0,
        200
    );
    let (status, body) = as_key.get("/v1/models").await;
    assert_eq!(status, 401, "{body}");

    // Sessions: refresh rotates; reusing the old token ends the session.
    let anonymous = Api::new(&server, None);
    let (status, rotated) = anonymous
        .post("/v1/auth/refresh", json!({"refresh_token": alice_refresh}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_access = rotated["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        Api::new(&server, Some(&new_access))
            .get("/v1/auth/me")
            .await
            .0,
        200
    );
    let (status, body) = anonymous
        .post("/v1/auth/refresh", json!({"refresh_token": alice_refresh}))
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        Api::new(&server, Some(&new_access))
            .get("/v1/auth/me")
            .await
            .0,
        401
    );
    assert_eq!(
        as_alice.get("/v1/auth/me").await.0,
        401,
        "the whole session ended"
    );

    // Logout ends a fresh session at once.
    let (access, refresh) = token_pair(&server, "alice", "alice-password").await;
    assert_eq!(
        anonymous
            .post("/v1/auth/logout", json!({"refresh_token": refresh}))
            .await,
        (200, json!({"ok": true}))
    );
    assert_eq!(
        Api::new(&server, Some(&access)).get("/v1/auth/me").await.0,
        401
    );

    // A permission change applies to live sessions on their next request.
    let (access, _) = token_pair(&server, "alice", "alice-password").await;
    let as_alice = Api::new(&server, Some(&access));
    assert_eq!(as_alice.get("/v1/models").await.0, 200);
    let path = format!("/v1/admin/users/{alice_id}/permissions");
    assert_eq!(
        root.put(&path, json!({"permissions": ["keys:create"]}))
            .await
            .0,
        200
    );
    assert_eq!(as_alice.get("/v1/models").await.0, 403);

    // The audit log saw it, and holds no secret.
    let (status, events) = root.get("/v1/admin/audit?limit=200").await;
    assert_eq!(status, 200);
    let text = events.to_string();
    for action in [
        "login",
        "refresh",
        "logout",
        "user.create",
        "key.create",
        "key.revoke",
        "denied",
    ] {
        assert!(
            text.contains(&format!("\"action\":\"{action}\"")),
            "{action} in {text}"
        );
    }
    let denied = |outcome: &str, user: Option<&str>| {
        events.as_array().unwrap().iter().any(|e| {
            e["action"] == "denied"
                && e["outcome"] == outcome
                && user.is_none_or(|u| e["username"] == u)
        })
    };
    assert!(
        denied("forbidden", Some("alice")),
        "alice's 403 is audited: {text}"
    );
    assert!(
        denied("invalid_credentials", None),
        "the revoked key's 401 is audited"
    );
    for secret in [
        key.as_str(),
        "alice-password",
        "root-password",
        alice_refresh.as_str(),
    ] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
}

/// Creates the store's first admin as a fresh server would, returning its password (the server
/// prints it on stderr; here the test opens the same database first).
async fn bootstrap(url: &str) -> String {
    let store = Store::open(url).await.unwrap();
    let hashing = Arc::new(xi_auth::HashPool::new(1).unwrap());
    let identity = Identity::open(
        store,
        None,
        IdentityOptions::default(),
        Arc::new(SystemClock),
        hashing,
    )
    .await
    .unwrap();
    identity.bootstrap().await.unwrap().unwrap().password
}

fn advanced_server(database_url: Option<String>) -> TestServer {
    let dir = TempDir::new().unwrap();
    let mut config = SupervisorConfig::new(dir.path().join("home"));
    config.auth_advanced = true;
    config.database_url = database_url;
    config.identity.poll_interval = Duration::from_millis(100);
    TestServer::start(config, Some(dir))
}

#[tokio::test]
async fn without_a_config_the_first_admin_must_change_its_password_and_stays_the_last() {
    let dir = TempDir::new().unwrap();
    let url = Store::sqlite_url(&dir.path().join("identity.db"));
    let password = bootstrap(&url).await;
    let server = advanced_server(Some(url));
    let (status, body) = Api::new(&server, None)
        .post("/token", json!({"username": "admin", "password": password}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["must_change_password"], true);
    let token = body["access_token"].as_str().unwrap().to_string();
    let admin = Api::new(&server, Some(&token));
    let (status, body) = admin.get("/v1/models").await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (403, Some(xi_identity::MUST_CHANGE_PASSWORD))
    );
    assert_eq!(
        admin.get("/v1/auth/me").await.1["must_change_password"],
        true
    );
    let (status, body) = admin
        .put(
            "/v1/admin/users/1/password",
            json!({"new_password": "a-new-password"}),
        )
        .await;
    assert_eq!(status, 400, "the current password is needed: {body}");
    let change = json!({"new_password": "a-new-password", "old_password": password});
    assert_eq!(admin.put("/v1/admin/users/1/password", change).await.0, 200);
    assert_eq!(
        admin.get("/v1/models").await.0,
        200,
        "the same session goes on"
    );

    // A delegated user manager cannot make itself (or anyone) admin, nor touch the admin.
    let ops =
        json!({"username": "ops", "password": "ops-password", "permissions": ["users:manage"]});
    assert_eq!(admin.post("/v1/admin/users", ops).await.0, 201);
    let ops_token = login(&Client::new(), &server, "ops", "ops-password").await;
    let as_ops = Api::new(&server, Some(&ops_token));
    let (status, body) = as_ops
        .post(
            "/v1/admin/users",
            json!({"username": "mallory", "password": "mallory-password", "permissions": ["admin"]}),
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        body["detail"].as_str().unwrap().contains("do not hold"),
        "{body}"
    );
    assert_eq!(
        as_ops
            .put(
                "/v1/admin/users/2/permissions",
                json!({"permissions": ["admin"]})
            )
            .await
            .0,
        403
    );
    assert_eq!(
        as_ops
            .put("/v1/admin/users/1", json!({"enabled": false}))
            .await
            .0,
        403
    );
    assert_eq!(as_ops.delete("/v1/admin/users/1").await.0, 403);

    // The last enabled admin stays.
    let (status, body) = admin
        .put("/v1/admin/users/1", json!({"enabled": false}))
        .await;
    assert_eq!(status, 403);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("last enabled admin"),
        "{body}"
    );
    assert_eq!(admin.delete("/v1/admin/users/1").await.0, 403);
    // Unknown ids and bodies are clear 4xx.
    assert_eq!(admin.get("/v1/admin/users/99").await.0, 404);
    let (status, body) = admin.get("/v1/admin/users/abc").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("path"), "{body}");
    // A body of the wrong shape is 422, as upstream (FastAPI) answers it.
    assert_eq!(
        admin
            .put("/v1/admin/users/1", json!({"enabled": "no"}))
            .await
            .0,
        422
    );
    // Disabling a user ends its sessions at once.
    assert_eq!(
        admin
            .put("/v1/admin/users/2", json!({"enabled": false}))
            .await
            .0,
        200
    );
    assert_eq!(as_ops.get("/v1/auth/me").await.0, 401);
}

#[tokio::test]
async fn two_supervisors_share_users_keys_and_revocations_through_postgres() {
    let pg = TempPostgres::start();
    let url = pg.fresh_database();
    let password = bootstrap(&url).await;
    let one = advanced_server(Some(url.clone()));
    let two = advanced_server(Some(url));
    let (token, _) = token_pair(&one, "admin", &password).await;
    let change = json!({"new_password": "a-new-password", "old_password": password});
    assert_eq!(
        Api::new(&one, Some(&token))
            .put("/v1/admin/users/1/password", change)
            .await
            .0,
        200
    );
    // A token issued by one supervisor works on the other (one signing secret in the store).
    let admin_two = Api::new(&two, Some(&token));
    assert_eq!(admin_two.get("/v1/auth/me").await.0, 200);
    let bob =
        json!({"username": "bob", "password": "bob-password", "permissions": ["models:list"]});
    assert_eq!(admin_two.post("/v1/admin/users", bob).await.0, 201);
    let (_, created) = admin_two.post("/v1/admin/keys", json!({"owner": 2})).await;
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_i64().unwrap();
    let bob_one = login(&Client::new(), &one, "bob", "bob-password").await;
    assert_eq!(
        Api::new(&one, Some(&bob_one)).get("/v1/models").await.0,
        200
    );
    let key_on_one = Api::new(&one, Some(&key));
    assert_eq!(key_on_one.get("/v1/models").await.0, 200);
    // Revoked through the second supervisor: the first one's cache follows within its poll.
    assert_eq!(
        admin_two
            .delete(&format!("/v1/admin/keys/{key_id}"))
            .await
            .0,
        200
    );
    let mut refused = false;
    for _ in 0..50 {
        if key_on_one.get("/v1/models").await.0 == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "the revoked key still works on the other supervisor after 5 s"
    );
}

#[tokio::test]
async fn a_keys_limits_answer_429_and_its_use_is_counted() {
    let worker = FakeWorker::new("10.0.0.1:7001");
    let (server, files) = config_server(vec![worker.clone() as Arc<dyn Worker>]);
    let root_token = login(&Client::new(), &server, "root", "root-password").await;
    let root = Api::new(&server, Some(&root_token));
    let body = json!({
        "model_uid": "emb", "model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
        "model_path": files.path().to_str().unwrap(),
    });
    assert_eq!(root.post("/v1/models", body).await.0, 200);
    let user = json!({"username": "app", "password": "app-password", "permissions": ["models:read", "models:list"]});
    let (_, created) = root.post("/v1/admin/users", user).await;
    let owner = created["id"].as_i64().unwrap();
    let (status, created) = root
        .post(
            "/v1/admin/keys",
            json!({"owner": owner, "limits": {"requests_per_minute": 3}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_i64().unwrap();
    let (status, body) = root
        .post(
            "/v1/admin/keys",
            json!({"owner": owner, "limits": {"requests_per_minute": 0}}),
        )
        .await;
    assert_eq!(status, 400, "a zero limit is refused: {body}");

    let as_key = Api::new(&server, Some(&key));
    for _ in 0..3 {
        let (status, body) = as_key
            .post(
                "/v1/embeddings",
                json!({"model": "emb", "input": "four words of text"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let res = Client::new()
        .post(server.url("/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "emb", "input": "again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let (_, body) = json_of(res).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("requests_per_minute = 3"),
        "{body}"
    );

    // The use reaches the store within a poll, and /metrics by key prefix and user.
    let mut usage = Value::Null;
    for _ in 0..50 {
        let (_, info) = root.get(&format!("/v1/admin/keys/{key_id}")).await;
        usage = info["usage"].clone();
        if usage["requests"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(usage["requests"], 3, "{usage}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    let metrics = Client::new()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = &key[..7];
    assert!(
        metrics.contains(&format!(
            "xinference_usage_requests_total{{key=\"{prefix}\",user=\"app\"}} 3"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("xinference_key_limited_total{limit=\"requests_per_minute\"} 1"));
}

/// The address a failed login is audited under, sent with `X-Forwarded-For`.
async fn audited_address(trusted: Vec<std::net::IpAddr>) -> String {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("auth.json");
    let auth = auth_config(&[("root", "root-password", &["admin"], &[])]);
    std::fs::write(&path, serde_json::to_vec(&auth).unwrap()).unwrap();
    let mut config = SupervisorConfig::new(dir.path().join("home"));
    config.auth_config = Some(path);
    config.trusted_proxies = trusted;
    let server = TestServer::start(config, Some(dir));
    let client = Client::new();
    let res = client
        .post(server.url("/token"))
        .header("X-Forwarded-For", "6.6.6.6, 198.51.100.7")
        .json(&json!({"username": "root", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let token = login(&client, &server, "root", "root-password").await;
    let (_, events) = Api::new(&server, Some(&token))
        .get("/v1/admin/audit?action=login")
        .await;
    let failed = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["outcome"] == "bad_password")
        .cloned()
        .unwrap();
    failed["address"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy_and_from_the_right() {
    assert_eq!(audited_address(Vec::new()).await, "127.0.0.1");
    let loopback = "127.0.0.1".parse().unwrap();
    assert_eq!(audited_address(vec![loopback]).await, "198.51.100.7");
}
