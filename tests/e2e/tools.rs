//! Tool calling through the real binary: SmolLM2 (whose template takes no tools, so it gets
//! the generic prompt) answers a required or named call with OpenAI `tool_calls`, plain and
//! streamed as OpenAI streams them; a history of calls and tool answers renders, through the
//! generic prompt and through the catalogue's Qwen2.5 template (tools in the prompt); bad tool
//! fields are 400s naming the field, and the server serves on.

use serde_json::{json, Value};

use crate::support::{launch, post, post_text, serving_smollm2, sse_events};

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                "required": ["city", "days"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "now", "description": "The time"}},
    ])
}

fn chat(uid: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": uid,
        "messages": [{ "role": "user", "content": "What is the weather in Paris this week?" }],
        "max_tokens": 96, "temperature": 0.8, "seed": 3, "tools": tools(),
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// A call as OpenAI shapes it, with arguments that are JSON of the offered schema.
fn check_call(call: &Value) -> (String, Value) {
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_") && id.len() == 29, "{call}");
    assert_eq!(call["type"], "function", "{call}");
    let name = call["function"]["name"].as_str().unwrap().to_string();
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    if name == "get_weather" {
        assert!(["Paris", "Rome", "Oslo"].contains(&arguments["city"].as_str().unwrap()));
        assert!(
            (1..=7).contains(&arguments["days"].as_i64().unwrap()),
            "{arguments}"
        );
        assert_eq!(arguments.as_object().unwrap().len(), 2, "{arguments}");
    } else {
        assert_eq!(name, "now");
    }
    (name, arguments)
}

#[tokio::test]
async fn required_and_named_calls_come_back_as_openai_tool_calls() {
    let (_dir, local, client) = serving_smollm2("smol").await;
    let url = || local.url("/v1/chat/completions");
    for seed in [1, 2, 3] {
        let body = chat(
            "smol",
            json!({ "tool_choice": "required", "parallel_tool_calls": false, "seed": seed }),
        );
        let (status, reply) = post(&client, url(), None, body).await;
        assert_eq!(status, 200, "{reply}");
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{reply}");
        assert_eq!(choice["message"]["role"], "assistant");
        assert!(choice["message"]["content"].is_null(), "{reply}");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{reply}");
        check_call(&calls[0]);
    }
    // Parallel calls: every complete call is one (a small model may repeat its call until
    // max_tokens cuts it short).
    let body = chat("smol", json!({ "tool_choice": "required", "seed": 4 }));
    let (status, reply) = post(&client, url(), None, body).await;
    assert_eq!(status, 200, "{reply}");
    let choice = &reply["choices"][0];
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert!(!calls.is_empty(), "{reply}");
    calls.iter().for_each(|c| drop(check_call(c)));
    let reason = choice["finish_reason"].as_str().unwrap();
    assert!(reason == "tool_calls" || reason == "length", "{reply}");
    // A named function, one call only, streamed: OpenAI's deltas (id, type and name under the
    // call's index, then the arguments), and the last chunk says tool_calls.
    let body = chat(
        "smol",
        json!({ "stream": true, "parallel_tool_calls": false,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}} }),
    );
    let text = post_text(&client, url(), &body).await;
    let chunks = sse_events(&text);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let mut assembled: Vec<Value> = Vec::new();
    for chunk in &chunks {
        for delta in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = delta["index"].as_u64().unwrap() as usize;
            if assembled.len() <= index {
                assert_eq!(delta["function"]["arguments"], "", "the head comes first");
                assembled.push(json!({ "id": delta["id"], "type": delta["type"],
                    "function": { "name": delta["function"]["name"], "arguments": "" } }));
            } else {
                let so_far = assembled[index]["function"]["arguments"].as_str().unwrap();
                let more = delta["function"]["arguments"].as_str().unwrap();
                assembled[index]["function"]["arguments"] = json!(format!("{so_far}{more}"));
            }
        }
    }
    assert_eq!(assembled.len(), 1, "{text}");
    assert_eq!(check_call(&assembled[0]).0, "get_weather");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls", "{text}");
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_history_of_calls_renders_through_the_generic_prompt_and_a_native_template() {
    let (_dir, local, client) = serving_smollm2("smol").await;
    // The tiny Qwen2 fixture with the catalogue's Qwen2.5 template, which takes tools itself.
    launch(
        &client,
        &local,
        json!({
            "model_name": "qwen2.5-instruct", "model_uid": "qwen", "model_engine": "transformers",
            "model_format": "pytorch", "model_size_in_billions": "0_5",
            "model_path": xi_testkit::fixture_path("tiny_llm/qwen2"),
        }),
    )
    .await;
    let url = || local.url("/v1/chat/completions");
    let history = json!([
        { "role": "user", "content": "Weather in Oslo?" },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function",
            "function": { "name": "get_weather", "arguments": "{\"city\": \"Oslo\", \"days\": 1}" } }] },
        { "role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 4}" },
    ]);
    for uid in ["smol", "qwen"] {
        // (With log probabilities: the tiny fixture's tokenizer is one llguidance cannot read,
        // so its tokens' bytes come from its own decoder, and its `auto` calls go unconstrained.)
        let plain = json!({ "model": uid, "messages": [history[0]], "max_tokens": 2,
            "temperature": 0, "logprobs": true });
        let (status, without) = post(&client, url(), None, plain).await;
        assert_eq!(status, 200, "{uid}: {without}");
        let entries = without["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap();
        assert!(!entries.is_empty(), "{uid}: {without}");
        // One small function: the tiny fixture's context is 256 tokens.
        let body = json!({ "model": uid, "messages": history, "tools": [tools()[1]],
            "max_tokens": 8, "temperature": 0 });
        let (status, with) = post(&client, url(), None, body).await;
        assert_eq!(status, 200, "{uid}: {with}");
        // The tools and the call's round trip are in the prompt.
        let tokens = |r: &Value| r["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(
            tokens(&with) > tokens(&without) + 60,
            "{uid}: {with} vs {without}"
        );
        let reason = with["choices"][0]["finish_reason"].as_str().unwrap();
        assert!(["stop", "length", "tool_calls"].contains(&reason), "{with}");
        // tool_choice "none": the model is not shown the tools.
        let body = json!({ "model": uid, "messages": [history[0]], "tools": [tools()[1]],
            "tool_choice": "none", "max_tokens": 2, "temperature": 0 });
        let (status, none) = post(&client, url(), None, body).await;
        assert_eq!(status, 200, "{uid}: {none}");
        assert_eq!(tokens(&none), tokens(&without), "{uid}");
    }
}

#[tokio::test]
async fn bad_tool_requests_are_400s_naming_the_field_and_the_server_serves_on() {
    let (_dir, local, client) = serving_smollm2("smol").await;
    let url = || local.url("/v1/chat/completions");
    let user = json!({ "role": "user", "content": "hi" });
    for (extra, detail) in [
        (
            json!({ "tools": {"type": "function"} }),
            "tools must be a list",
        ),
        (
            json!({ "tools": [{"type": "function", "function": {"name": "bad name"}}] }),
            "tools[0].function.name must be",
        ),
        (json!({ "tool_choice": "always" }), "tool_choice must be"),
        (
            json!({ "tool_choice": {"type": "function", "function": {"name": "missing"}} }),
            "which tools does not list",
        ),
        (
            json!({ "tools": null, "tool_choice": "required" }),
            "tool_choice requires tools",
        ),
        (
            json!({ "response_format": {"type": "json_object"} }),
            "tools cannot be combined with response_format",
        ),
        (
            json!({ "messages": [user, {"role": "tool", "content": "4"}] }),
            "messages[1]: a tool message needs the tool_call_id",
        ),
        (
            json!({ "messages": [user, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "now", "arguments": "{not json"}}]}, {"role": "tool", "tool_call_id": "c", "content": "4"}] }),
            "messages[1].tool_calls[0].function.arguments is not JSON",
        ),
        (
            json!({ "messages": [{"role": "user", "content": "x", "tool_calls": [{"function": {"name": "now"}}]}] }),
            "messages[0]: only assistant messages carry tool_calls",
        ),
    ] {
        let (status, body) = post(&client, url(), None, chat("smol", extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {body}");
        let got = body["detail"].as_str().unwrap();
        assert!(got.contains(detail), "{extra}: {got}");
    }
    let body = chat("smol", json!({ "max_tokens": 4 }));
    let (status, body) = post(&client, url(), None, body).await;
    assert_eq!(status, 200, "the server serves on: {body}");
}
