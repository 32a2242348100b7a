//! `n` > 1 through the real binary with SmolLM2: several choices in OpenAI's shapes, plain and
//! streamed, chat and completions, with tools; the prompt is counted once in `usage`, a seed
//! makes the choices reproducible, and `n` out of range is a 400.

use serde_json::{json, Value};

use crate::support::{post, post_text, serving_smollm2, sse_events};

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "smol", "messages": [{ "role": "user", "content": "Name an animal." }],
        "max_tokens": 12, "temperature": 1.0, "seed": 11,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn several_choices_come_back_in_openais_shapes() {
    let (_dir, local, client) = serving_smollm2("smol").await;
    let url = || local.url("/v1/chat/completions");
    let (status, one) = post(&client, url(), None, chat(json!({}))).await;
    assert_eq!(status, 200, "{one}");
    let (status, three) = post(&client, url(), None, chat(json!({ "n": 3 }))).await;
    assert_eq!(status, 200, "{three}");
    let choices = three["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{three}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{three}");
        assert!(c["message"]["content"].is_string(), "{three}");
        assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()));
    }
    // Choice 0 is the n = 1 answer of the same seed; the prompt is counted once.
    assert_eq!(
        choices[0]["message"], one["choices"][0]["message"],
        "{three} vs {one}"
    );
    assert_eq!(
        three["usage"]["prompt_tokens"],
        one["usage"]["prompt_tokens"]
    );
    let completion = three["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        completion > one["usage"]["completion_tokens"].as_u64().unwrap(),
        "{three}"
    );
    // A seed makes every choice reproducible.
    let (_, again) = post(&client, url(), None, chat(json!({ "n": 3 }))).await;
    assert_eq!(again["choices"], three["choices"]);

    // Streamed: each choice's chunks under its index, each with its own end, then [DONE].
    let text = post_text(&client, url(), &chat(json!({ "n": 2, "stream": true }))).await;
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let chunks = sse_events(&text);
    for (index, choice) in choices.iter().enumerate().take(2) {
        let mine: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == index)
            .collect();
        let content: String = mine
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(
            content,
            choice["message"]["content"].as_str().unwrap(),
            "{text}"
        );
        let ends = mine
            .iter()
            .filter(|c| !c["choices"][0]["finish_reason"].is_null())
            .count();
        assert_eq!(ends, 1, "{text}");
    }
    // The last chunk carries the request's usage: the prompt once, every choice's tokens.
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["prompt_tokens"], three["usage"]["prompt_tokens"],
        "{text}"
    );
    let tokens = |k: &str| usage[k].as_u64().unwrap();
    assert_eq!(
        tokens("total_tokens"),
        tokens("prompt_tokens") + tokens("completion_tokens")
    );

    // Completions and tools take n too.
    let body = json!({ "model": "smol", "prompt": "Once upon a time", "max_tokens": 6,
        "temperature": 1.0, "seed": 2, "n": 2 });
    let (status, reply) = post(&client, local.url("/v1/completions"), None, body).await;
    assert_eq!(status, 200, "{reply}");
    let texts: Vec<&str> = reply["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 2, "{reply}");
    let tools = json!([{ "type": "function", "function": { "name": "pick",
        "parameters": { "type": "object", "properties": { "animal": { "enum": ["cat", "dog", "fox"] } },
            "required": ["animal"], "additionalProperties": false } } }]);
    let body = chat(json!({ "n": 2, "tools": tools, "tool_choice": "required",
        "parallel_tool_calls": false, "max_tokens": 48 }));
    let (status, reply) = post(&client, url(), None, body).await;
    assert_eq!(status, 200, "{reply}");
    for c in reply["choices"].as_array().unwrap() {
        assert_eq!(c["finish_reason"], "tool_calls", "{reply}");
        assert_eq!(
            c["message"]["tool_calls"][0]["function"]["name"], "pick",
            "{reply}"
        );
    }

    for n in [0, 17] {
        let (status, reply) = post(&client, url(), None, chat(json!({ "n": n }))).await;
        assert_eq!(status, 400, "{reply}");
        assert!(reply["detail"]
            .as_str()
            .unwrap()
            .contains("n must be between 1 and 16"));
    }
}
