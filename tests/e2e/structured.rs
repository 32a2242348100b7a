//! Structured output through the real binary with SmolLM2: `response_format` (json_object,
//! json_schema) and vLLM's `guided_*` fields on chat and completions, plain and streamed;
//! bad constraints are a 400 before anything is generated, and the server serves on.

use serde_json::{json, Value};

use crate::support::{post, serving_smollm2};

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "smollm2-instruct",
        "messages": [{ "role": "user", "content": content }],
        "max_tokens": 96, "temperature": 0.8, "seed": 7,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn answer(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {body}"))
}

#[tokio::test]
async fn constrained_answers_follow_their_schema_regex_or_choice() {
    let (_dir, local, client) = serving_smollm2("smollm2-instruct").await;
    let url = || local.url("/v1/chat/completions");

    // OpenAI's json_schema response format: the answer parses and has the schema's shape.
    let schema = json!({
        "type": "object",
        "properties": {
            "city": { "type": "string", "maxLength": 20 },
            "population": { "type": "integer", "minimum": 0, "maximum": 100000000 },
            "capital": { "type": "boolean" },
        },
        "required": ["city", "population", "capital"],
        "additionalProperties": false,
    });
    for seed in [1, 2, 3] {
        let (status, body) = post(
            &client,
            url(),
            None,
            chat(
                "Describe Paris as JSON.",
                json!({ "seed": seed, "response_format": { "type": "json_schema",
                    "json_schema": { "name": "city", "schema": schema, "strict": true } } }),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let city: Value = serde_json::from_str(answer(&body)).expect("the answer is JSON");
        let fields = city.as_object().unwrap();
        assert_eq!(fields.len(), 3, "{city}");
        assert!(
            city["city"].as_str().unwrap().chars().count() <= 20,
            "{city}"
        );
        let population = city["population"].as_i64().unwrap();
        assert!((0..=100_000_000).contains(&population), "{city}");
        assert!(city["capital"].is_boolean(), "{city}");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
    }

    // json_object, streamed: the deltas together are one JSON object.
    let text = client
        .post(url())
        .json(&chat(
            "Give me a JSON object about a cat.",
            json!({ "stream": true, "response_format": { "type": "json_object" } }),
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let streamed: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    let object: Value = serde_json::from_str(&streamed).expect("the streamed answer is JSON");
    assert!(object.is_object(), "{streamed}");

    // vLLM's guided_choice and guided_regex (the openai SDK sends them in extra_body).
    for seed in [1, 2, 3] {
        let (status, body) = post(
            &client,
            url(),
            None,
            chat(
                "Is the sky blue?",
                json!({ "seed": seed, "guided_choice": ["yes", "no", "it depends"] }),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            ["yes", "no", "it depends"].contains(&answer(&body)),
            "{body}"
        );
    }
    let (status, body) = post(
        &client,
        local.url("/v1/completions"),
        None,
        json!({ "model": "smollm2-instruct", "prompt": "Call me at ", "max_tokens": 20,
            "temperature": 0.8, "seed": 5, "guided_regex": "\\d{3}-\\d{4}" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let phone = body["choices"][0]["text"].as_str().unwrap();
    let digits: Vec<bool> = phone.chars().map(|c| c.is_ascii_digit()).collect();
    assert_eq!(phone.len(), 8, "{phone:?}");
    assert_eq!(phone.as_bytes()[3], b'-', "{phone:?}");
    assert_eq!(digits.iter().filter(|d| **d).count(), 7, "{phone:?}");

    // A grammar cut short by max_tokens ends with "length", as OpenAI's does.
    let (status, body) = post(
        &client,
        url(),
        None,
        chat(
            "Describe Paris as JSON.",
            json!({ "max_tokens": 3, "guided_json": schema }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
}

#[tokio::test]
async fn bad_constraints_are_a_400_before_generation_and_the_server_serves_on() {
    let (_dir, local, client) = serving_smollm2("smollm2-instruct").await;
    let url = || local.url("/v1/chat/completions");
    for (extra, detail) in [
        (
            json!({ "guided_json": { "type": "string", "pattern": "(unclosed" } }),
            "invalid grammar",
        ),
        (
            json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": { "type": "nonsense" } } } }),
            "invalid grammar",
        ),
        (json!({ "guided_regex": "a(b" }), "invalid grammar"),
        (
            json!({ "guided_grammar": "start: missing_rule" }),
            "invalid grammar",
        ),
        (
            json!({ "response_format": { "type": "xml" } }),
            "response_format.type must be",
        ),
        (
            json!({ "guided_regex": "a", "guided_choice": ["a"] }),
            "give at most one output constraint",
        ),
    ] {
        let (status, body) = post(&client, url(), None, chat("Hi", extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {body}");
        let got = body["detail"].as_str().unwrap();
        assert!(got.contains(detail), "{extra}: {got}");
    }
    let (status, body) = post(&client, url(), None, chat("Hi", json!({ "max_tokens": 4 }))).await;
    assert_eq!(status, 200, "the server serves on: {body}");
}
