//! The chat a template renders when a request offers tools: for a template that takes tools,
//! the messages as they are and the `tools` variable; for any other, our generic prompt (the
//! functions in a system message, in the Hermes format) and the history's calls and tool
//! answers written out as text, so a template that knows nothing of tools still renders them.

use serde_json::Value;
use xi_api::tools::Tools;
use xi_api::worker::TurnToolCall;

use super::ToolStyle;
use crate::llm::template::{python_json, ChatMessage};

/// What a chat without tool support in its template is told (docs/llm.md): the functions,
/// one JSON object per line, replace `{tools}`.
pub const GENERIC_TOOL_PROMPT: &str = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>";

/// The messages and the `tools` variable to render for a chat in `style` (`tools`: what the
/// request offers, `None` for none).
pub fn prepare_chat(
    style: ToolStyle,
    mut messages: Vec<ChatMessage>,
    tools: Option<&Tools>,
) -> (Vec<ChatMessage>, Option<Value>) {
    if style.native {
        return (messages, tools.map(Tools::template_value));
    }
    if let Some(tools) = tools {
        let listed: Vec<String> = tools
            .template_value()
            .as_array()
            .map(|all| all.iter().map(python_json).collect())
            .unwrap_or_default();
        let offer = GENERIC_TOOL_PROMPT.replace("{tools}", &listed.join("\n"));
        match messages.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = if first.content.is_empty() {
                    offer
                } else {
                    format!("{}\n\n{offer}", first.content)
                };
            }
            _ => messages.insert(0, ChatMessage::new("system", offer)),
        }
    }
    (written_out(messages), None)
}

/// The history with each assistant's calls appended to its text as `<tool_call>` blocks and
/// each run of tool answers merged into one user message of `<tool_response>` blocks.
fn written_out(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    let mut answers_open = false;
    for message in messages {
        if message.role == "tool" {
            let block = format!("<tool_response>\n{}\n</tool_response>", message.content);
            match out.last_mut() {
                Some(last) if answers_open => {
                    last.content.push('\n');
                    last.content.push_str(&block);
                }
                _ => out.push(ChatMessage::new("user", block)),
            }
            answers_open = true;
            continue;
        }
        answers_open = false;
        let mut message = message;
        if !message.tool_calls.is_empty() {
            let calls: Vec<String> = message.tool_calls.iter().map(call_block).collect();
            let mut content = std::mem::take(&mut message.content);
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&calls.join("\n"));
            message = ChatMessage::new(message.role, content);
        }
        out.push(message);
    }
    out
}

fn call_block(call: &TurnToolCall) -> String {
    let body =
        serde_json::json!({ "name": call.function.name, "arguments": call.function.arguments });
    format!("<tool_call>\n{}\n</tool_call>", python_json(&body))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use xi_api::tools::{Function, ToolChoice, ToolParser};
    use xi_api::worker::TurnFunction;

    use super::*;

    fn tools() -> Tools {
        Tools {
            functions: vec![Function {
                name: "get_weather".into(),
                description: Some("Weather in a city".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
            choice: ToolChoice::Auto,
            parallel: true,
        }
    }

    fn history() -> Vec<ChatMessage> {
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = vec![TurnToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: TurnFunction {
                name: "get_weather".into(),
                arguments: json!({"city": "Paris"}),
            },
        }];
        let mut answer = ChatMessage::new("tool", "{\"temp\": 21}");
        answer.tool_call_id = Some("call_1".into());
        let mut second = answer.clone();
        second.content = "{\"temp\": 22}".into();
        vec![
            ChatMessage::new("user", "Weather in Paris?"),
            call,
            answer,
            second,
        ]
    }

    const GENERIC: ToolStyle = ToolStyle {
        parser: ToolParser::Hermes,
        native: false,
    };

    #[test]
    fn a_native_template_gets_the_messages_and_the_tools_variable() {
        let style = ToolStyle {
            parser: ToolParser::Hermes,
            native: true,
        };
        let (messages, value) = prepare_chat(style, history(), Some(&tools()));
        assert_eq!(messages, history());
        assert_eq!(value.unwrap(), tools().template_value());
        let (_, value) = prepare_chat(style, history(), None);
        assert_eq!(value, None, "no tools: the variable stays undefined");
    }

    #[test]
    fn the_generic_prompt_offers_the_tools_and_writes_the_history_out() {
        let (messages, value) = prepare_chat(GENERIC, history(), Some(&tools()));
        assert_eq!(value, None);
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert_eq!(messages[0].role, "system");
        assert!(messages[0].content.starts_with("# Tools\n"));
        assert!(messages[0].content.contains(
            "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather in a city\""
        ));
        assert_eq!(messages[1].content, "Weather in Paris?");
        assert_eq!(
            messages[2].content,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
        );
        assert!(messages[2].tool_calls.is_empty());
        assert_eq!(
            messages[3].role, "user",
            "tool answers become one user message"
        );
        assert_eq!(
            messages[3].content,
            "<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\n{\"temp\": 22}\n</tool_response>"
        );
    }

    #[test]
    fn the_generic_prompt_joins_an_existing_system_message() {
        let chat = vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "hi"),
        ];
        let (messages, _) = prepare_chat(GENERIC, chat.clone(), Some(&tools()));
        assert_eq!(messages.len(), 2);
        assert!(messages[0].content.starts_with("Be brief.\n\n# Tools\n"));
        let (messages, _) = prepare_chat(GENERIC, chat.clone(), None);
        assert_eq!(messages, chat, "no tools, no calls: unchanged");
    }
}
