//! The permission matrix: every route of the table × every kind of caller.

use reqwest::{Client, Method};
use serde_json::json;
use xi_api::{Permission, PermissionSet};
use xi_supervisor::{route_table, Access, RouteDef, Verb};

use crate::support::{auth_config, json_of, login, TestServer, SECRET};

/// Fills path parameters with values that exist where that matters.
fn concrete_path(def: &RouteDef) -> String {
    def.path
        .replace("{model_uid}", "no-such-model")
        .replace("{model_type}", "LLM")
        .replace("{model_name}", "smollm2-instruct")
        .replace("{file}", "app.js")
        .replace("{id}", "1")
}

fn method(verb: Verb) -> Method {
    match verb {
        Verb::Get => Method::GET,
        Verb::Post => Method::POST,
        Verb::Put => Method::PUT,
        Verb::Delete => Method::DELETE,
    }
}

/// DELETE /v1/clusters stops the server when allowed, so those calls get a server of their own.
fn stops_server(def: &RouteDef) -> bool {
    def.verb == Verb::Delete && def.path == "/v1/clusters"
}

/// POST /v1/auth/logout ends the session of the token it is given (it is public: the
/// unauthenticated callers cover it here, and the identity tests cover logging out).
fn ends_session(def: &RouteDef) -> bool {
    def.verb == Verb::Post && def.path == "/v1/auth/logout"
}

async fn call(
    client: &Client,
    base: &str,
    def: &RouteDef,
    auth: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = client.request(method(def.verb), format!("{base}{}", concrete_path(def)));
    if let Some(header) = auth {
        req = req.header("Authorization", header);
    }
    if matches!(def.verb, Verb::Post | Verb::Put) {
        req = req.json(&json!({}));
    }
    let res = req.send().await.unwrap();
    let is_json = res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if res.status() == 200 && !is_json {
        // Success bodies that are not JSON: Prometheus text, the web UI's files (`/` redirects
        // to the page, which the client follows), the API docs page. Errors are always JSON
        // (json_of checks).
        assert!(
            ["/metrics", "/", "/docs"].contains(&def.path) || def.path.starts_with("/ui"),
            "{def:?} answered a non-JSON body"
        );
        return (200, serde_json::Value::String(res.text().await.unwrap()));
    }
    json_of(res).await
}

const USERS: [(&str, &str); 12] = [
    ("u-models-list", "models:list"),
    ("u-models-read", "models:read"),
    ("u-models-register", "models:register"),
    ("u-models-unregister", "models:unregister"),
    ("u-models-start", "models:start"),
    ("u-models-stop", "models:stop"),
    ("u-cache-list", "cache:list"),
    ("u-cache-delete", "cache:delete"),
    ("u-users-manage", "users:manage"),
    ("u-keys-create", "keys:create"),
    ("u-keys-manage", "keys:manage"),
    ("u-admin", "admin"),
];

fn config() -> serde_json::Value {
    let mut users: Vec<(&str, &str, &[&str], &[&str])> = Vec::new();
    for (name, perm) in &USERS {
        let keys: &[&str] = match *name {
            "u-admin" => &["sk-AdminKey12345"],
            "u-models-list" => &["sk-ListKey123456"],
            _ => &[],
        };
        users.push((name, "pw", std::slice::from_ref(perm), keys));
    }
    auth_config(&users)
}

#[tokio::test]
async fn every_route_answers_each_caller_exactly_as_the_table_says() {
    let server = TestServer::with_auth(&config());
    let client = Client::new();
    let mut callers: Vec<(String, String, PermissionSet)> = Vec::new();
    for (name, perm) in USERS {
        let token = login(&client, &server, name, "pw").await;
        callers.push((
            format!("token of {name}"),
            format!("Bearer {token}"),
            PermissionSet::parse_name(perm).unwrap(),
        ));
    }
    callers.push((
        "admin api key".into(),
        "Bearer sk-AdminKey12345".into(),
        PermissionSet::ALL,
    ));
    callers.push((
        "models:list api key".into(),
        "Bearer sk-ListKey123456".into(),
        PermissionSet::of(Permission::ModelsList),
    ));
    let unauthenticated: [(&str, Option<&str>, &str); 6] = [
        ("no header", None, "Not authenticated"),
        (
            "basic scheme",
            Some("Basic dXNlcjpwdw=="),
            "Not authenticated",
        ),
        ("bearer without token", Some("Bearer"), "Not authenticated"),
        (
            "bad token",
            Some("Bearer not.a.jwt"),
            "Could not validate credentials",
        ),
        (
            "unknown api key",
            Some("Bearer sk-NoSuchKey12345"),
            "Could not validate credentials",
        ),
        (
            "token signed with another key",
            Some(&FORGED),
            "Could not validate credentials",
        ),
    ];

    let table = route_table();
    assert!(table.len() >= 25, "the table lists every route");
    let mut checked = 0;
    for def in &table {
        for (label, header, detail) in unauthenticated {
            if stops_server(def) && def.access == Access::Public {
                continue;
            }
            let (status, body) = call(&client, &server.url, def, header).await;
            match def.access {
                // Without `--metrics-require-auth` these rows are public.
                Access::Public | Access::PublicOrRequires(..) => assert!(
                    status != 401 && status != 403,
                    "{def:?} is public but {label} got {status} {body}"
                ),
                Access::Requires(_) | Access::Authenticated => {
                    assert_eq!(status, 401, "{def:?} with {label}: {body}");
                    assert_eq!(body["detail"], detail, "{def:?} with {label}");
                }
                Access::Cluster => {
                    assert_eq!(status, 401, "{def:?} with {label}: {body}");
                    assert_eq!(body["detail"], "Missing or wrong cluster secret");
                }
            }
            checked += 1;
        }
        for (label, header, perms) in &callers {
            let allowed = match def.access {
                Access::Public | Access::PublicOrRequires(..) | Access::Authenticated => true,
                Access::Requires(p) => perms.allows(p),
                // Worker routes: no user credential opens them, not even admin's.
                Access::Cluster => false,
            };
            if (stops_server(def) && allowed) || ends_session(def) {
                continue;
            }
            let (status, body) = call(&client, &server.url, def, Some(header)).await;
            if def.access == Access::Cluster {
                assert_eq!(status, 401, "{def:?} must refuse {label}: {body}");
                assert_eq!(body["detail"], "Missing or wrong cluster secret");
            } else if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{def:?} must allow {label}, got {status} {body}"
                );
            } else {
                assert_eq!(status, 403, "{def:?} must refuse {label}: {body}");
                assert_eq!(body["detail"], "Not enough permissions");
            }
            checked += 1;
        }
    }
    assert!(checked > 400, "matrix walked {checked} cases");
}

/// A well-formed HS256 token for `u-admin` signed with a key the server does not have.
static FORGED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let claims =
        json!({ "sub": "u-admin", "scopes": ["admin"], "iat": 0, "exp": 4_000_000_000u64 });
    let key =
        jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another-secret!")
            .unwrap();
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    assert_ne!(
        SECRET.as_bytes(),
        b"another-secret-another-secret-another-secret!"
    );
    format!("Bearer {token}")
});

#[tokio::test]
async fn stopping_the_cluster_needs_admin_and_then_stops_the_server() {
    let client = Client::new();
    let server = TestServer::with_auth(&config());
    let token = login(&client, &server, "u-models-stop", "pw").await;
    let res = client
        .delete(server.url("/v1/clusters"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    let res = client
        .delete(server.url("/v1/clusters"))
        .bearer_auth("sk-AdminKey12345")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!((status, body), (200, json!({ "result": true })));
    let mut stopped = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if client.get(server.url("/status")).send().await.is_err() {
            stopped = true;
            break;
        }
    }
    assert!(
        stopped,
        "the server still answers after DELETE /v1/clusters"
    );
}

#[tokio::test]
async fn with_auth_off_every_route_is_open_and_authorization_is_ignored() {
    let server = TestServer::open();
    let client = Client::new();
    for def in route_table().iter().filter(|d| !stops_server(d)) {
        for header in [None, Some("Bearer garbage"), Some("Basic xyz")] {
            let (status, body) = call(&client, &server.url, def, header).await;
            if def.access == Access::Cluster {
                // Turning user auth off never opens the workers' routes.
                assert_eq!(status, 401, "{def:?} with {header:?}: {body}");
                continue;
            }
            assert!(
                status != 401 && status != 403,
                "{def:?} with {header:?}: {status} {body}"
            );
        }
    }
    let (status, body) = json_of(
        client
            .get(server.url("/v1/cluster/auth"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!({ "auth": false })));
    let res = client
        .post(server.url("/token"))
        .json(&json!({ "username": "a", "password": "b" }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status, body),
        (400, json!({ "detail": "Authentication is not enabled" }))
    );
}

/// Auth on with the users of [`config`], `--metrics-require-auth` and `--docs-require-auth`.
fn metrics_protected_server() -> TestServer {
    let dir = tempfile::TempDir::new().unwrap();
    let auth = dir.path().join("auth.json");
    std::fs::write(&auth, config().to_string()).unwrap();
    let mut cfg = xi_supervisor::SupervisorConfig::new(dir.path().join("home"));
    cfg.auth_config = Some(auth);
    cfg.metrics_require_auth = true;
    cfg.docs_require_auth = true;
    TestServer::start(cfg, Some(dir))
}

#[tokio::test]
async fn metrics_can_be_put_behind_admin() {
    let server = metrics_protected_server();
    let client = Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(client.get(server.url("/metrics")).send().await.unwrap()),
        401
    );
    let res = client
        .get(server.url("/metrics"))
        .bearer_auth("sk-ListKey123456")
        .send()
        .await
        .unwrap();
    assert_eq!(status(res), 403);
    let res = client
        .get(server.url("/metrics"))
        .bearer_auth("sk-AdminKey12345")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("xinference_http_requests_total"), "{text}");
    assert!(
        text.contains("status=\"401\""),
        "the refused request was counted: {text}"
    );
}

/// With the switches on every `PublicOrRequires` row is a `Requires` row, for every kind of
/// caller; the other rows do not change.
#[tokio::test]
async fn protected_rows_need_their_permission_with_metrics_require_auth() {
    let server = metrics_protected_server();
    let client = Client::new();
    let rows: Vec<(RouteDef, Permission)> = route_table()
        .into_iter()
        .filter_map(|d| match d.access {
            Access::PublicOrRequires(p, _) => Some((d, p)),
            _ => None,
        })
        .collect();
    assert!(
        rows.len() >= 3,
        "/metrics, /openapi.json and /docs are such rows"
    );
    for (def, required) in &rows {
        let (status, body) = call(&client, &server.url, def, None).await;
        assert_eq!(status, 401, "{def:?} without credentials: {body}");
        for (name, perm) in USERS {
            let token = login(&client, &server, name, "pw").await;
            let (status, body) =
                call(&client, &server.url, def, Some(&format!("Bearer {token}"))).await;
            let allowed = PermissionSet::parse_name(perm).unwrap().allows(*required);
            if allowed {
                assert_eq!(status, 200, "{def:?} must allow {name}: {body}");
            } else {
                assert_eq!(status, 403, "{def:?} must refuse {name}: {body}");
                assert_eq!(body["detail"], "Not enough permissions");
            }
        }
    }
}
