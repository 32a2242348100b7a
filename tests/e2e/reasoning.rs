//! Reasoning split from the answer through the real binary: SmolLM2 launched with upstream's
//! `reasoning_content` option and held (by a `guided_regex`) to a `<think>...</think>` answer
//! gives `reasoning_content` and `content` apart, plain and streamed; without the option the
//! tags stay in the text. `chat_template_kwargs` reach the template (never over its own
//! variables), and a bad one is a 400.

use serde_json::{json, Value};

use crate::support::{launch, post, post_text, serving_smollm2, smollm2_launch, sse_events};

const THOUGHT: &str = "<think>[a-z ]{3,24}</think>[A-Z][a-z ]{2,24}";

fn chat(uid: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": uid, "messages": [{ "role": "user", "content": "Think, then answer: what is a cat?" }],
        "max_tokens": 64, "temperature": 0.8, "seed": 3, "guided_regex": THOUGHT,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn plain_words(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
}

#[tokio::test]
async fn reasoning_comes_apart_from_the_answer_plain_and_streamed() {
    let (_dir, local, client) = serving_smollm2("smol").await;
    let mut thinker = smollm2_launch("thinker");
    thinker["reasoning_content"] = json!(true);
    launch(&client, &local, thinker).await;
    let url = || local.url("/v1/chat/completions");

    let (status, reply) = post(&client, url(), None, chat("thinker", json!({}))).await;
    assert_eq!(status, 200, "{reply}");
    let message = &reply["choices"][0]["message"];
    let thought = message["reasoning_content"].as_str().unwrap();
    let answer = message["content"].as_str().unwrap();
    assert!(plain_words(thought) && plain_words(answer), "{reply}");

    // The same answer streamed: reasoning deltas, then content deltas.
    let text = post_text(&client, url(), &chat("thinker", json!({ "stream": true }))).await;
    let chunks = sse_events(&text);
    let delta = |key: &str| -> String {
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"][key].as_str())
            .collect()
    };
    assert_eq!(delta("reasoning_content"), thought, "{text}");
    assert_eq!(delta("content"), answer, "{text}");
    let first_content = chunks.iter().position(|c| {
        c["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    });
    let last_reasoning = chunks
        .iter()
        .rposition(|c| c["choices"][0]["delta"]["reasoning_content"].is_string());
    assert!(last_reasoning < first_content, "{text}");

    // Without the launch option the tags are text.
    let (_, reply) = post(&client, url(), None, chat("smol", json!({}))).await;
    let message = &reply["choices"][0]["message"];
    assert!(message.get("reasoning_content").is_none(), "{reply}");
    assert!(
        message["content"].as_str().unwrap().starts_with("<think>"),
        "{reply}"
    );
}

#[tokio::test]
async fn chat_template_kwargs_reach_the_template_but_not_over_its_own_variables() {
    let (_dir, local, client) = serving_smollm2("smol").await;
    // The tiny Qwen2 fixture carries no template: this one reads a variable of the request's.
    let template =
        "{% if enable_thinking is defined and not enable_thinking %}t1 t2 t3 {% endif %}\
        {% for m in messages %}{{ m.content }} {% endfor %}";
    launch(
        &client,
        &local,
        json!({
            "model_name": "qwen2.5-instruct", "model_uid": "tiny", "model_engine": "transformers",
            "model_format": "pytorch", "model_size_in_billions": "0_5", "chat_template": template,
            "model_path": xi_testkit::fixture_path("tiny_llm/qwen2"),
        }),
    )
    .await;
    let prompt_tokens = |kwargs: Value| {
        let client = client.clone();
        let url = local.url("/v1/chat/completions");
        async move {
            let mut body = json!({ "model": "tiny", "max_tokens": 1, "temperature": 0,
                "messages": [{ "role": "user", "content": "t4 t5" }] });
            if !kwargs.is_null() {
                body["chat_template_kwargs"] = kwargs;
            }
            let (status, reply) = post(&client, url, None, body).await;
            (status, reply)
        }
    };
    let tokens = |r: &Value| r["usage"]["prompt_tokens"].as_u64().unwrap();
    let (_, plain) = prompt_tokens(Value::Null).await;
    let (_, off) = prompt_tokens(json!({ "enable_thinking": false })).await;
    assert_eq!(tokens(&off), tokens(&plain) + 3, "{off} vs {plain}");
    let (_, on) = prompt_tokens(json!({ "enable_thinking": true })).await;
    assert_eq!(tokens(&on), tokens(&plain));
    let (status, same) = prompt_tokens(json!({ "messages": [] })).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(tokens(&same), tokens(&plain), "the template's messages win");
    let (status, reply) = prompt_tokens(json!("enable_thinking")).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["detail"]
        .as_str()
        .unwrap()
        .contains("chat_template_kwargs must be an object"));
}
