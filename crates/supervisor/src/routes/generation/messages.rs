//! A chat's messages as the client sends them (OpenAI's shape, with tool calls and tool
//! answers), checked and turned into the turns a chat template gets.

use serde::Deserialize;
use serde_json::{json, Value};
use xi_api::worker::{ChatTurn, TurnFunction, TurnToolCall};

use super::bad;
use crate::error::SupervisorError;

/// One chat message, OpenAI's shape.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text, or a list of `{"type": "text", "text": ...}` parts.
    #[serde(default)]
    content: Option<Value>,
    /// An assistant message's calls: `{"id", "type": "function", "function": {"name",
    /// "arguments"}}`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// One message of the history as the template gets it; `i` names it in errors.
pub(super) fn turn_of(i: usize, m: &Message) -> Result<ChatTurn, SupervisorError> {
    let mut turn = ChatTurn::new(m.role.clone(), content_text(&m.content)?);
    if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
        if m.role != "assistant" {
            return Err(bad(format!(
                "messages[{i}]: only assistant messages carry tool_calls"
            )));
        }
        turn.tool_calls = calls
            .iter()
            .enumerate()
            .map(|(j, call)| history_call(i, j, call))
            .collect::<Result<_, _>>()?;
    }
    if m.role == "tool" {
        let id = m.tool_call_id.as_ref().filter(|id| !id.is_empty());
        let id = id.ok_or_else(|| {
            bad(format!(
                "messages[{i}]: a tool message needs the tool_call_id of the call it answers"
            ))
        })?;
        turn.tool_call_id = Some(id.clone());
    }
    turn.name = m.name.clone();
    Ok(turn)
}

/// A call of an assistant message in the history: OpenAI's shape, its `arguments` a JSON
/// string (or, as Hugging Face writes it, an object) that templates get as JSON.
fn history_call(i: usize, j: usize, call: &Value) -> Result<TurnToolCall, SupervisorError> {
    let at = || format!("messages[{i}].tool_calls[{j}]");
    let function = call
        .get("function")
        .ok_or_else(|| bad(format!("{}.function must be an object", at())))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{}.function.name must be a string", at())))?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(text)) => serde_json::from_str(text)
            .map_err(|e| bad(format!("{}.function.arguments is not JSON: {e}", at())))?,
        Some(object @ Value::Object(_)) => object.clone(),
        Some(_) => {
            return Err(bad(format!(
                "{}.function.arguments must be a JSON string",
                at()
            )))
        }
    };
    let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
    Ok(TurnToolCall {
        id: id.to_string(),
        kind: "function".into(),
        function: TurnFunction {
            name: name.to_string(),
            arguments,
        },
    })
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
