//! `/v1/chat/completions` and `/v1/completions`, plain or streamed (SSE), in OpenAI's shapes.
//!
//! Parts: `messages` (a chat's history as the template gets it), `answer` (the worker's events
//! as OpenAI's response or chunks) and `logprobs` (OpenAI's two log-probability shapes).

mod answer;
mod logprobs;
mod messages;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use xi_api::generation::SamplingFields;
use xi_api::models::ModelType;
use xi_api::tools::{tools_of, ToolFields};
use xi_api::worker::{GenerateRequest, Prompt, Sampling};

use self::answer::{run, Kind};
use self::messages::{turn_of, Message};
use super::inference::resolve;
use crate::authz::{ModelsRead, Require};
use crate::error::SupervisorError;
use crate::state::AppState;
use crate::usage::Meter;

pub(super) fn bad(message: impl Into<String>) -> SupervisorError {
    SupervisorError::BadRequest(message.into())
}

/// The checked sampling of a request (the fields both routes share, parsed in `xi-api`): a 400
/// naming the bad field.
fn sampling_of(body: &SamplingFields) -> Result<Sampling, SupervisorError> {
    body.sampling().map_err(SupervisorError::BadRequest)
}

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "inference",
    summary = "Chat completion (OpenAI's API)",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "OpenAI's chat completion, or its chunks as Server-Sent Events with `stream: true`", content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
        (status = 503, description = "The model is still loading (`Retry-After`)", body = xi_api::ErrorBody),
    )
)]
pub async fn chat(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = resolve(&state, &require.caller, &body, ModelType::Llm, "chat")?;
    let (request, stream) = chat_request(body.into_inner())?;
    let meter = Meter::of(&state, &require.caller);
    run(&state.cluster, &entry, request, stream, Kind::Chat, meter).await
}

/// `POST /v1/chat/completions` body: OpenAI's, with vLLM's `guided_*` fields, `top_k`,
/// `repetition_penalty`, `ignore_eos` and the template's `chat_template_kwargs`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ChatCompletionRequest {
    /// The uid of a running LLM.
    #[allow(dead_code)]
    model: String,
    /// The conversation; the last message is the user's (or a system or tool message).
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(flatten)]
    sampling: SamplingFields,
    #[serde(flatten)]
    tools: ToolFields,
    /// Variables for the chat template (e.g. `{"enable_thinking": false}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    chat_template_kwargs: Option<Value>,
}

/// `POST /v1/completions` body: OpenAI's legacy completions (one prompt string).
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct CompletionRequest {
    /// The uid of a running LLM.
    #[allow(dead_code)]
    model: String,
    #[serde(default)]
    #[schema(value_type = String)]
    prompt: Option<Value>,
    #[serde(flatten)]
    sampling: SamplingFields,
    /// Not supported (501).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    logit_bias: Option<Value>,
}

/// A chat body checked into the worker's request, and whether it asks for a stream: 422 for
/// a body of the wrong shape, 400 naming the field for a bad value.
pub(crate) fn chat_request(body: Value) -> Result<(GenerateRequest, bool), SupervisorError> {
    let chat: ChatCompletionRequest = serde_json::from_value(body)
        .map_err(|e| SupervisorError::Unprocessable(format!("Invalid chat request: {e}")))?;
    let (messages, sampling) = (&chat.messages, &chat.sampling);
    let last_ok = messages
        .last()
        .is_some_and(|m| ["user", "system", "tool"].contains(&m.role.as_str()));
    if !last_ok {
        return Err(bad("Invalid input. Please specify the prompt."));
    }
    let turns = messages
        .iter()
        .enumerate()
        .map(|(i, m)| turn_of(i, m))
        .collect::<Result<Vec<_>, SupervisorError>>()?;
    let tools = tools_of(&chat.tools).map_err(SupervisorError::BadRequest)?;
    let sampling_checked = sampling_of(sampling)?;
    if tools.is_some() && sampling_checked.guide.is_some() {
        return Err(bad(
            "tools cannot be combined with response_format or guided_* on one request (only with tool_choice \"none\")",
        ));
    }
    let chat_template_kwargs = match &chat.chat_template_kwargs {
        None | Some(Value::Null) => None,
        Some(Value::Object(kwargs)) => Some(kwargs.clone()),
        Some(_) => {
            return Err(bad(
                "chat_template_kwargs must be an object of template variables",
            ))
        }
    };
    let request = GenerateRequest {
        prompt: Prompt::Chat(turns),
        sampling: sampling_checked,
        tools,
        chat_template_kwargs,
    };
    Ok((request, sampling.stream))
}

#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "inference",
    summary = "Text completion (OpenAI's legacy API)",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "OpenAI's completion, or its chunks as Server-Sent Events with `stream: true`", content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
        (status = 501, description = "`logit_bias`", body = xi_api::ErrorBody),
        (status = 503, description = "The model is still loading (`Retry-After`)", body = xi_api::ErrorBody),
    )
)]
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
    let (request, stream) = completion_request(body.into_inner())?;
    let meter = Meter::of(&state, &require.caller);
    run(
        &state.cluster,
        &entry,
        request,
        stream,
        Kind::Completion,
        meter,
    )
    .await
}

/// A completion body checked into the worker's request, and whether it asks for a stream.
pub(crate) fn completion_request(body: Value) -> Result<(GenerateRequest, bool), SupervisorError> {
    let completion: CompletionRequest = serde_json::from_value(body)
        .map_err(|e| SupervisorError::Unprocessable(format!("Invalid completion request: {e}")))?;
    if completion.logit_bias.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(SupervisorError::NotImplemented(
            "logit_bias is not supported".into(),
        ));
    }
    let sampling = &completion.sampling;
    let prompt = match &completion.prompt {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        _ => return Err(bad("Invalid input. Please specify the prompt.")),
    };
    let request = GenerateRequest {
        prompt: Prompt::Text(prompt),
        sampling: sampling_of(sampling)?,
        tools: None,
        chat_template_kwargs: None,
    };
    Ok((request, sampling.stream))
}
