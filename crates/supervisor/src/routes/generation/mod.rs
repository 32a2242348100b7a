//! `/v1/chat/completions` and `/v1/completions`, plain or streamed (SSE), in OpenAI's shapes.
//!
//! Parts: `messages` (a chat's history as the template gets it), `answer` (the worker's events
//! as OpenAI's response or chunks) and `logprobs` (OpenAI's two log-probability shapes).

mod answer;
mod logprobs;
mod messages;

use actix_web::{web, HttpResponse};
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
        .enumerate()
        .map(|(i, m)| turn_of(i, m))
        .collect::<Result<Vec<_>, SupervisorError>>()?;
    let tool_fields: ToolFields = serde_json::from_value(body.clone())
        .map_err(|e| SupervisorError::Unprocessable(format!("Invalid chat request: {e}")))?;
    let tools = tools_of(&tool_fields).map_err(SupervisorError::BadRequest)?;
    let sampling_checked = sampling_of(&sampling)?;
    if tools.is_some() && sampling_checked.guide.is_some() {
        return Err(bad(
            "tools cannot be combined with response_format or guided_* on one request (only with tool_choice \"none\")",
        ));
    }
    let chat_template_kwargs = match body.get("chat_template_kwargs") {
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
        tools: None,
        chat_template_kwargs: None,
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
