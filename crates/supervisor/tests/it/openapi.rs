//! The OpenAPI document against the route table it is generated beside: every route is in it
//! with the security the middleware enforces, nothing else is, every schema it names exists,
//! and the server serves it (and its docs page) publicly, or behind `--docs-require-auth`.

use std::collections::BTreeSet;

use reqwest::Client;
use serde_json::{json, Value};
use xi_supervisor::{openapi_document, route_table, Access};

use crate::support::{auth_config, json_of, TestServer};

fn document() -> Value {
    serde_json::to_value(openapi_document(&route_table())).unwrap()
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn every_route_of_the_table_is_in_the_document_and_nothing_else() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let table: BTreeSet<(String, String)> = route_table()
        .iter()
        .map(|r| (r.verb.as_str().to_string(), r.path.to_string()))
        .collect();
    let documented = operations(&doc);
    let missing: Vec<_> = table.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes the server does not have: {extra:?}"
    );
}

#[test]
fn each_operation_carries_the_security_of_its_row() {
    let doc = document();
    let user = json!([{ "bearer": [] }, { "api_key": [] }]);
    for row in route_table() {
        let op = &doc["paths"][row.path][row.verb.as_str().to_lowercase()];
        let (security, permission) = match row.access {
            Access::Public => (json!([{}]), Value::Null),
            Access::Requires(p) => (user.clone(), json!(p.as_str())),
            Access::Authenticated => (user.clone(), json!("authenticated")),
            Access::PublicOrRequires(p, _) => (
                json!([{}, { "bearer": [] }, { "api_key": [] }]),
                json!(p.as_str()),
            ),
            Access::Cluster => (json!([{ "cluster_secret": [] }]), json!("cluster")),
        };
        assert_eq!(op["security"], security, "{row:?}");
        assert_eq!(op["x-permission"], permission, "{row:?}");
        let responses = &op["responses"];
        if row.access != Access::Public {
            assert!(responses["401"].is_object(), "{row:?} documents no 401");
        }
        if matches!(row.access, Access::Requires(_)) {
            assert!(responses["403"].is_object(), "{row:?} documents no 403");
        }
        assert!(
            responses
                .as_object()
                .unwrap()
                .keys()
                .any(|s| s.starts_with('2') || s.starts_with('3')),
            "{row:?} documents no success"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["cluster_secret"]["in"], "header");
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_schema_the_document_names_exists() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(
        found.len() > 30,
        "the bodies are typed: {} refs",
        found.len()
    );
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} is not a schema ref"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} names no schema"
        );
    }
    // The request bodies come from the types the routes parse.
    let schemas = &doc["components"]["schemas"];
    for name in [
        "ChatCompletionRequest",
        "SamplingFields",
        "LaunchModelRequest",
        "CreateKeyRequest",
        "EmbeddingsBody",
        "TranscriptionForm",
    ] {
        assert!(schemas[name].is_object(), "no {name} schema");
    }
}

#[tokio::test]
async fn the_document_and_docs_page_are_served_publicly_with_auth_on() {
    let server = TestServer::with_auth(&auth_config(&[("ann", "pw", &["admin"], &[])]));
    let client = Client::new();
    let res = client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    let (status, served) = json_of(res).await;
    assert_eq!(status, 200);
    assert_eq!(served, document());
    let res = client.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let page = res.text().await.unwrap();
    assert!(
        page.contains("fetch(\"openapi.json\""),
        "the page loads the document"
    );
}

#[tokio::test]
async fn docs_require_auth_puts_both_behind_models_list() {
    let dir = tempfile::TempDir::new().unwrap();
    let auth = dir.path().join("auth.json");
    let users = auth_config(&[
        ("lister", "pw", &["models:list"], &["sk-ListKey123456"]),
        ("nobody", "pw", &[], &["sk-NoneKey123456"]),
    ]);
    std::fs::write(&auth, users.to_string()).unwrap();
    let mut cfg = xi_supervisor::SupervisorConfig::new(dir.path().join("home"));
    cfg.auth_config = Some(auth);
    cfg.docs_require_auth = true;
    let server = TestServer::start(cfg, Some(dir));
    let client = Client::new();
    for path in ["/openapi.json", "/docs"] {
        let res = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let res = client
            .get(server.url(path))
            .bearer_auth("sk-NoneKey123456")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        let res = client
            .get(server.url(path))
            .bearer_auth("sk-ListKey123456")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
}
