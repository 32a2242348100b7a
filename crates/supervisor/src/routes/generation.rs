//! `/v1/chat/completions` and `/v1/completions`, plain or streamed (SSE), in OpenAI's shapes.

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use xi_api::generation::SamplingFields;
use xi_api::models::ModelType;
use xi_api::worker::{ChatTurn, GenerateEvent, GenerateRequest, Prompt, Sampling};

use super::inference::resolve;
use crate::authz::{ModelsRead, Require};
use crate::clock::unix_now;
use crate::domain::Cluster;
use crate::error::SupervisorError;
use crate::lifecycle::ModelEntry;
use crate::state::AppState;
use crate::usage::Meter;

fn bad(message: impl Into<String>) -> SupervisorError {
    SupervisorError::BadRequest(message.into())
}

/// The checked sampling of a request (the fields both routes share, parsed in `xi-api`): a 400
/// naming the bad field.
fn sampling_of(body: &SamplingFields) -> Result<Sampling, SupervisorError> {
    body.sampling().map_err(SupervisorError::BadRequest)
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

/// OpenAI content is a string or a list of parts; text parts are joined.
fn content_text(content: &Option<Value>) -> Result<String, SupervisorError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => Ok(t.to_string()),
                    _ => Err(bad("only text content parts are supported")),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|parts| parts.join("")),
        Some(_) => Err(bad(
            "message content must be a string or a list of text parts",
        )),
    }
}

pub async fn chat(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = resolve(&state, &require.caller, &body, ModelType::Llm, "chat")?;
    let body = body.into_inner();
    let sampling: SamplingFields = serde_json::from_value(body.clone())
        .map_err(|e| SupervisorError::Unprocessable(format!("Invalid chat request: {e}")))?;
    let messages: Vec<Message> = body
        .get("messages")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| SupervisorError::Unprocessable(format!("Invalid messages: {e}")))?
        .unwrap_or_default();
    let last_ok = messages
        .last()
        .is_some_and(|m| ["user", "system", "tool"].contains(&m.role.as_str()));
    if !last_ok {
        return Err(bad("Invalid input. Please specify the prompt."));
    }
    let turns = messages
        .iter()
        .map(|m| {
            Ok(ChatTurn {
                role: m.role.clone(),
                content: content_text(&m.content)?,
            })
        })
        .collect::<Result<Vec<_>, SupervisorError>>()?;
    let request = GenerateRequest {
        prompt: Prompt::Chat(turns),
        sampling: sampling_of(&sampling)?,
    };
    let meter = Meter::of(&state, &require.caller);
    run(
        &state.cluster,
        &entry,
        request,
        sampling.stream,
        Kind::Chat,
        meter,
    )
    .await
}

pub async fn completions(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = resolve(
        &state,
        &require.caller,
        &body,
        ModelType::Llm,
        "completions",
    )?;
    let body = body.into_inner();
    if body.get("logit_bias").is_some_and(|v| !v.is_null()) {
        return Err(SupervisorError::NotImplemented(
            "logit_bias is not supported".into(),
        ));
    }
    let sampling: SamplingFields = serde_json::from_value(body.clone())
        .map_err(|e| SupervisorError::Unprocessable(format!("Invalid completion request: {e}")))?;
    let prompt = match body.get("prompt") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        _ => return Err(bad("Invalid input. Please specify the prompt.")),
    };
    let request = GenerateRequest {
        prompt: Prompt::Text(prompt),
        sampling: sampling_of(&sampling)?,
    };
    let meter = Meter::of(&state, &require.caller);
    run(
        &state.cluster,
        &entry,
        request,
        sampling.stream,
        Kind::Completion,
        meter,
    )
    .await
}

#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn ids(self) -> (String, &'static str, &'static str) {
        let id = format!("{:024x}", rand::random::<u128>() >> 32);
        match self {
            Kind::Chat => (
                format!("chatcmpl-{id}"),
                "chat.completion",
                "chat.completion.chunk",
            ),
            Kind::Completion => (format!("cmpl-{id}"), "text_completion", "text_completion"),
        }
    }
}

async fn run(
    cluster: &Cluster,
    entry: &ModelEntry,
    request: GenerateRequest,
    stream: bool,
    kind: Kind,
    meter: Meter,
) -> Result<HttpResponse, SupervisorError> {
    let (_, mut events) = cluster
        .dispatch(entry, |replica, worker| {
            let request = request.clone();
            async move { worker.generate(replica, request).await }
        })
        .await?;
    let (id, object, chunk_object) = kind.ids();
    let created = unix_now() as u64;
    let model = entry.uid.clone();
    if !stream {
        let mut text = String::new();
        loop {
            match events.next().await {
                Some(GenerateEvent::Text(piece)) => text.push_str(&piece),
                Some(GenerateEvent::Done(done)) => {
                    meter.record(done.prompt_tokens, done.completion_tokens);
                    let choice = match kind {
                        Kind::Chat => {
                            json!({ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": done.finish_reason })
                        }
                        Kind::Completion => {
                            json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": done.finish_reason })
                        }
                    };
                    return Ok(HttpResponse::Ok().json(json!({
                        "id": id, "object": object, "created": created, "model": model,
                        "choices": [choice],
                        "usage": usage(done.prompt_tokens, done.completion_tokens),
                    })));
                }
                Some(GenerateEvent::Error(e)) => return Err(e.into()),
                None => {
                    return Err(SupervisorError::internal(
                        "the generation ended without a result",
                    ))
                }
            }
        }
    }
    let chunk = move |delta: Value, finish: Value, extra: Option<Value>| {
        let choice = match kind {
            Kind::Chat => json!({ "index": 0, "delta": delta, "finish_reason": finish }),
            Kind::Completion => {
                json!({ "index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")), "logprobs": null, "finish_reason": finish })
            }
        };
        let mut body = json!({ "id": id, "object": chunk_object, "created": created, "model": model, "choices": [choice] });
        if let (Some(extra), Some(map)) = (extra, body.as_object_mut()) {
            map.insert("usage".into(), extra);
        }
        Bytes::from(format!("data: {body}\n\n"))
    };
    let first = matches!(kind, Kind::Chat).then(|| {
        chunk(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
            None,
        )
    });
    let body = futures_util::stream::iter(first)
        .chain(events.map(move |event| match event {
            GenerateEvent::Text(piece) => chunk(json!({ "content": piece }), Value::Null, None),
            GenerateEvent::Done(done) => {
                meter.record(done.prompt_tokens, done.completion_tokens);
                let last = chunk(
                    json!({}),
                    json!(done.finish_reason),
                    Some(usage(done.prompt_tokens, done.completion_tokens)),
                );
                let mut bytes = last.to_vec();
                bytes.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(bytes)
            }
            // The status line is sent already: errors travel as an event, as upstream does.
            GenerateEvent::Error(e) => {
                let detail = SupervisorError::from(e).client_detail();
                Bytes::from(format!("data: {}\n\n", json!({ "error": detail })))
            }
        }))
        .map(Ok::<_, actix_web::Error>);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body))
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}
