//! Log probabilities through the real binary with SmolLM2, in OpenAI's shapes: chat's
//! `logprobs.content` (plain and streamed) and completions' parallel lists; the tokens spell
//! the answer, greedy tokens are their position's most likely, and bad values are 400s.

use serde_json::{json, Value};

use crate::support::{post, post_text, serving_smollm2, sse_events};

/// Chat's entries: each token's text, its logprob, and that it leads its alternatives.
fn check_chat_entries(entries: &[Value], top: usize) -> String {
    let mut spelled = String::new();
    for e in entries {
        let token = e["token"].as_str().unwrap();
        let bytes: Vec<u8> = serde_json::from_value(e["bytes"].clone()).unwrap();
        assert_eq!(String::from_utf8_lossy(&bytes), token, "{e}");
        assert!(e["logprob"].as_f64().unwrap() <= 0.0, "{e}");
        let alternatives = e["top_logprobs"].as_array().unwrap();
        assert_eq!(alternatives.len(), top, "{e}");
        assert_eq!(alternatives[0]["token"], e["token"], "greedy: {e}");
        spelled.push_str(token);
    }
    spelled
}

#[tokio::test]
async fn chat_and_completions_report_logprobs_in_openais_shapes() {
    let (_dir, local, client) = serving_smollm2("smol").await;
    let chat = json!({
        "model": "smol", "messages": [{ "role": "user", "content": "Name a colour." }],
        "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 2,
    });
    let (status, reply) = post(
        &client,
        local.url("/v1/chat/completions"),
        None,
        chat.clone(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let choice = &reply["choices"][0];
    let entries = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        entries.len() as u64,
        reply["usage"]["completion_tokens"].as_u64().unwrap(),
        "{reply}"
    );
    let spelled = check_chat_entries(entries, 2);
    assert_eq!(spelled, choice["message"]["content"].as_str().unwrap());

    // Streamed: the chunks' entries together spell the streamed text.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let text = post_text(&client, local.url("/v1/chat/completions"), &streamed).await;
    let chunks = sse_events(&text);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let entries: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .cloned()
        .collect();
    assert_eq!(check_chat_entries(&entries, 2), content, "{text}");
    assert_eq!(
        content,
        choice["message"]["content"].as_str().unwrap(),
        "greedy twice"
    );

    // Completions: `logprobs: N`, as the legacy API shapes it.
    let body = json!({ "model": "smol", "prompt": "One, two, three,", "max_tokens": 6,
        "temperature": 0, "logprobs": 3 });
    let (status, reply) = post(&client, local.url("/v1/completions"), None, body).await;
    assert_eq!(status, 200, "{reply}");
    let choice = &reply["choices"][0];
    let lp = &choice["logprobs"];
    let tokens: Vec<String> = serde_json::from_value(lp["tokens"].clone()).unwrap();
    assert_eq!(tokens.concat(), choice["text"].as_str().unwrap(), "{reply}");
    let offsets: Vec<usize> = serde_json::from_value(lp["text_offset"].clone()).unwrap();
    let mut at = 0;
    for (token, offset) in tokens.iter().zip(&offsets) {
        assert_eq!(*offset, at);
        at += token.len();
    }
    let top = lp["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), tokens.len());
    for (map, token) in top.iter().zip(&tokens) {
        let map = map.as_object().unwrap();
        assert!(
            (1..=3).contains(&map.len()) && map.contains_key(token),
            "{map:?}"
        );
    }
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), tokens.len());

    // Without logprobs, none; bad values are 400s naming the field.
    let plain = json!({ "model": "smol", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 2 });
    let (_, reply) = post(&client, local.url("/v1/chat/completions"), None, plain).await;
    assert!(reply["choices"][0]["logprobs"].is_null(), "{reply}");
    for (extra, detail) in [
        (
            json!({ "logprobs": true, "top_logprobs": 21 }),
            "top_logprobs must be between 0 and 20",
        ),
        (
            json!({ "top_logprobs": 2 }),
            "top_logprobs needs logprobs: true",
        ),
    ] {
        let mut body =
            json!({ "model": "smol", "messages": [{ "role": "user", "content": "hi" }] });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, reply) = post(&client, local.url("/v1/chat/completions"), None, body).await;
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["detail"].as_str().unwrap().contains(detail),
            "{reply}"
        );
    }
}
