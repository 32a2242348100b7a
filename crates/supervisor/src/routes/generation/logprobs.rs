//! Log probabilities in OpenAI's two shapes: chat's `{"content": [{"token", "logprob",
//! "bytes", "top_logprobs"}]}` and completions' parallel lists (`tokens`, `token_logprobs`,
//! `top_logprobs` as `{token: logprob}` maps, `text_offset`).

use serde_json::{json, Map, Value};
use xi_api::worker::TokenLogprob;

/// Chat's `logprobs` of `entries`.
pub fn chat(entries: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            let top: Vec<Value> = e
                .top_logprobs
                .iter()
                .map(|t| json!({ "token": t.token, "logprob": t.logprob, "bytes": t.bytes }))
                .collect();
            json!({ "token": e.token, "logprob": e.logprob, "bytes": e.bytes, "top_logprobs": top })
        })
        .collect();
    json!({ "content": content })
}

/// Completions' `logprobs` of `entries`; `offset` is where the first token's text starts in
/// the answer, and moves past the last.
pub fn completion(entries: &[TokenLogprob], offset: &mut usize) -> Value {
    let mut tokens = Vec::with_capacity(entries.len());
    let mut token_logprobs = Vec::with_capacity(entries.len());
    let mut top_logprobs = Vec::with_capacity(entries.len());
    let mut text_offset = Vec::with_capacity(entries.len());
    for e in entries {
        tokens.push(json!(e.token));
        token_logprobs.push(json!(e.logprob));
        let top: Map<String, Value> = e
            .top_logprobs
            .iter()
            .map(|t| (t.token.clone(), json!(t.logprob)))
            .collect();
        top_logprobs.push(Value::Object(top));
        text_offset.push(json!(*offset));
        *offset += e.token.len();
    }
    json!({ "tokens": tokens, "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs, "text_offset": text_offset })
}

#[cfg(test)]
mod tests {
    use xi_api::worker::TopLogprob;

    use super::*;

    fn entry(token: &str, logprob: f32) -> TokenLogprob {
        TokenLogprob {
            token: token.into(),
            bytes: token.as_bytes().to_vec(),
            logprob,
            top_logprobs: vec![TopLogprob {
                token: token.into(),
                bytes: token.as_bytes().to_vec(),
                logprob,
            }],
        }
    }

    #[test]
    fn both_shapes_are_openais() {
        let entries = [entry("Hi", -0.5), entry(" there", -1.0)];
        assert_eq!(
            chat(&entries)["content"][1],
            json!({ "token": " there", "logprob": -1.0, "bytes": [32, 116, 104, 101, 114, 101],
                "top_logprobs": [{ "token": " there", "logprob": -1.0, "bytes": [32, 116, 104, 101, 114, 101] }] })
        );
        let mut offset = 3;
        let shaped = completion(&entries, &mut offset);
        assert_eq!(shaped["tokens"], json!(["Hi", " there"]));
        assert_eq!(shaped["token_logprobs"], json!([-0.5, -1.0]));
        assert_eq!(shaped["top_logprobs"][0], json!({ "Hi": -0.5 }));
        assert_eq!(shaped["text_offset"], json!([3, 5]));
        assert_eq!(offset, 11);
    }
}
