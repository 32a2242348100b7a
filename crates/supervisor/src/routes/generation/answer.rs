//! The worker's events as OpenAI's answer: one response, or server-sent chunks.

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::StreamExt;
use serde_json::{json, Value};
use xi_api::worker::{GenerateEvent, GenerateRequest, TokenLogprob};

use super::logprobs;
use crate::clock::unix_now;
use crate::domain::Cluster;
use crate::error::SupervisorError;
use crate::lifecycle::ModelEntry;
use crate::usage::Meter;

#[derive(Clone, Copy)]
pub(super) enum Kind {
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

pub(super) async fn run(
    cluster: &Cluster,
    entry: &ModelEntry,
    request: GenerateRequest,
    stream: bool,
    kind: Kind,
    meter: Meter,
) -> Result<HttpResponse, SupervisorError> {
    let with_logprobs = request.sampling.logprobs.is_some();
    let choices = request.sampling.choices();
    let (_, events) = cluster
        .dispatch(entry, |replica, worker| {
            let request = request.clone();
            async move { worker.generate(replica, request).await }
        })
        .await?;
    let (id, object, chunk_object) = kind.ids();
    let created = unix_now() as u64;
    let model = entry.uid.clone();
    if !stream {
        let (answers, usage) = collect(events, choices, &meter).await?;
        let choices: Vec<Value> = answers
            .into_iter()
            .enumerate()
            .map(|(index, a)| a.choice(index, kind, with_logprobs))
            .collect();
        return Ok(HttpResponse::Ok().json(json!({
            "id": id, "object": object, "created": created, "model": model,
            "choices": choices, "usage": usage,
        })));
    }
    let mut chunks = Chunks {
        id,
        object: chunk_object,
        created,
        model,
        kind,
        meter,
        with_logprobs,
        current: 0,
        choices: (0..choices).map(|_| Streamed::default()).collect(),
        open: choices,
        usage: (0, 0),
    };
    // Each choice's first chunk names the assistant (as OpenAI's do).
    let first: Vec<Bytes> = match kind {
        Kind::Chat => (0..choices)
            .map(|index| {
                let delta = json!({ "role": "assistant", "content": "" });
                chunks.frame(chunks.choice(index, delta, Value::Null), None)
            })
            .collect(),
        Kind::Completion => Vec::new(),
    };
    let body = futures_util::stream::iter(first)
        .chain(events.filter_map(move |event| std::future::ready(chunks.event(event))))
        .map(Ok::<_, actix_web::Error>);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body))
}

/// One choice's whole answer (a request that does not stream).
#[derive(Default)]
struct Answer {
    text: String,
    reasoning: String,
    calls: Vec<Value>,
    tokens: Vec<TokenLogprob>,
    finish_reason: String,
}

impl Answer {
    fn choice(self, index: usize, kind: Kind, with_logprobs: bool) -> Value {
        match kind {
            Kind::Chat => {
                let mut message = json!({ "role": "assistant", "content": self.text });
                if !self.reasoning.is_empty() {
                    message["reasoning_content"] = json!(self.reasoning);
                }
                // As OpenAI answers a call: no text is `null`, not "".
                if !self.calls.is_empty() {
                    if self.text.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = Value::Array(self.calls);
                }
                let shaped = with_logprobs.then(|| logprobs::chat(&self.tokens));
                json!({ "index": index, "message": message, "logprobs": shaped, "finish_reason": self.finish_reason })
            }
            Kind::Completion => {
                let shaped = with_logprobs.then(|| logprobs::completion(&self.tokens, &mut 0));
                json!({ "index": index, "text": self.text, "logprobs": shaped, "finish_reason": self.finish_reason })
            }
        }
    }
}

/// Every choice's answer, once each has its `Done`, and the request's usage (the prompt
/// counted once: the choices share it).
async fn collect(
    mut events: xi_api::worker::EventStream,
    choices: usize,
    meter: &Meter,
) -> Result<(Vec<Answer>, Value), SupervisorError> {
    let mut answers: Vec<Answer> = (0..choices).map(|_| Answer::default()).collect();
    let (mut current, mut open) = (0usize, choices);
    let (mut prompt, mut completion) = (0usize, 0usize);
    while open > 0 {
        let event = events
            .next()
            .await
            .ok_or_else(|| SupervisorError::internal("the generation ended without a result"))?;
        if let GenerateEvent::Choice(i) = event {
            if i >= choices {
                return Err(SupervisorError::internal("a worker sent an unknown choice"));
            }
            current = i;
            continue;
        }
        let answer = &mut answers[current];
        match event {
            GenerateEvent::Text(piece) => answer.text.push_str(&piece),
            GenerateEvent::Reasoning(piece) => answer.reasoning.push_str(&piece),
            GenerateEvent::Logprobs(entries) => answer.tokens.extend(entries),
            GenerateEvent::ToolCall(call) => answer.calls.push(json!({
                "id": call.id, "type": "function",
                "function": { "name": call.name, "arguments": call.arguments },
            })),
            GenerateEvent::Done(done) => {
                meter.record(
                    if open == choices {
                        done.prompt_tokens
                    } else {
                        0
                    },
                    done.completion_tokens,
                );
                prompt = done.prompt_tokens;
                completion += done.completion_tokens;
                answer.finish_reason = done.finish_reason;
                open -= 1;
            }
            GenerateEvent::Error(e) => return Err(e.into()),
            GenerateEvent::Choice(_) => {}
        }
    }
    Ok((answers, usage(prompt, completion)))
}

/// What one streamed choice has pending.
#[derive(Default)]
struct Streamed {
    /// Log probabilities of tokens whose text has not been sent yet: they ride on the next
    /// chunk that carries text (a token's text can come a step after it), or on the last.
    pending: Vec<TokenLogprob>,
    /// Completions: where the next token's text starts in the answer.
    offset: usize,
    /// Tool calls sent so far (the next call's index).
    calls: usize,
}

/// The chunks of one streamed answer, in OpenAI's shapes.
struct Chunks {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    kind: Kind,
    meter: Meter,
    with_logprobs: bool,
    /// The choice the worker's events are about now.
    current: usize,
    choices: Vec<Streamed>,
    /// Choices not done yet.
    open: usize,
    /// Prompt tokens (once) and completion tokens (all choices) so far.
    usage: (usize, usize),
}

impl Chunks {
    fn choice(&self, index: usize, delta: Value, finish: Value) -> Value {
        match self.kind {
            Kind::Chat => json!({ "index": index, "delta": delta, "finish_reason": finish }),
            Kind::Completion => {
                json!({ "index": index, "text": delta.get("content").cloned().unwrap_or(json!("")), "logprobs": null, "finish_reason": finish })
            }
        }
    }

    /// `choice` with the current choice's pending log probabilities, if any were asked for.
    fn with_pending(&mut self, mut choice: Value) -> Value {
        if !self.with_logprobs {
            return choice;
        }
        let Some(streamed) = self.choices.get_mut(self.current) else {
            return choice;
        };
        let entries = std::mem::take(&mut streamed.pending);
        choice["logprobs"] = match self.kind {
            Kind::Chat => logprobs::chat(&entries),
            Kind::Completion => logprobs::completion(&entries, &mut streamed.offset),
        };
        choice
    }

    fn frame(&self, choice: Value, usage: Option<Value>) -> Bytes {
        let mut body = json!({ "id": self.id, "object": self.object, "created": self.created,
            "model": self.model, "choices": [choice] });
        if let (Some(usage), Some(map)) = (usage, body.as_object_mut()) {
            map.insert("usage".into(), usage);
        }
        Bytes::from(format!("data: {body}\n\n"))
    }

    /// The bytes an event sends (log probabilities wait for their text).
    fn event(&mut self, event: GenerateEvent) -> Option<Bytes> {
        let index = self.current;
        Some(match event {
            GenerateEvent::Choice(i) => {
                self.current = i.min(self.choices.len().saturating_sub(1));
                return None;
            }
            GenerateEvent::Text(piece) => {
                let choice = self.choice(index, json!({ "content": piece }), Value::Null);
                let choice = self.with_pending(choice);
                self.frame(choice, None)
            }
            GenerateEvent::Reasoning(piece) => {
                let delta = json!({ "reasoning_content": piece });
                let choice = self.choice(index, delta, Value::Null);
                let choice = self.with_pending(choice);
                self.frame(choice, None)
            }
            GenerateEvent::Logprobs(entries) => {
                if let Some(streamed) = self.choices.get_mut(index) {
                    streamed.pending.extend(entries);
                }
                return None;
            }
            // As OpenAI streams a call: its id, type and name with empty arguments, then its
            // arguments, under the call's index.
            GenerateEvent::ToolCall(call) => {
                let streamed = self.choices.get_mut(index)?;
                let at = streamed.calls;
                streamed.calls += 1;
                let head = json!({ "tool_calls": [{
                    "index": at, "id": call.id, "type": "function",
                    "function": { "name": call.name, "arguments": "" },
                }] });
                let arguments = json!({ "tool_calls": [{
                    "index": at, "function": { "arguments": call.arguments },
                }] });
                let mut bytes = self
                    .frame(self.choice(index, head, Value::Null), None)
                    .to_vec();
                bytes.extend_from_slice(
                    &self.frame(self.choice(index, arguments, Value::Null), None),
                );
                Bytes::from(bytes)
            }
            GenerateEvent::Done(done) => {
                let first_done = self.open == self.choices.len();
                self.meter.record(
                    if first_done { done.prompt_tokens } else { 0 },
                    done.completion_tokens,
                );
                self.usage = (done.prompt_tokens, self.usage.1 + done.completion_tokens);
                self.open = self.open.saturating_sub(1);
                let last = self.choice(index, json!({}), json!(done.finish_reason));
                let has_pending = self
                    .choices
                    .get(index)
                    .is_some_and(|s| !s.pending.is_empty());
                let last = if has_pending {
                    self.with_pending(last)
                } else {
                    last
                };
                if self.open > 0 {
                    return Some(self.frame(last, None));
                }
                // The last choice's end carries the request's usage, then the stream ends.
                let usage = usage(self.usage.0, self.usage.1);
                let mut bytes = self.frame(last, Some(usage)).to_vec();
                bytes.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(bytes)
            }
            // The status line is sent already: errors travel as an event, as upstream does.
            GenerateEvent::Error(e) => {
                let detail = SupervisorError::from(e).client_detail();
                Bytes::from(format!("data: {}\n\n", json!({ "error": detail })))
            }
        })
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}
