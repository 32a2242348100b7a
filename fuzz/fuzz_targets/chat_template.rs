//! Hostile chat templates: parsed and rendered with tools and kwargs under the server's
//! default limits (fuel, recursion, output size), so none can hang or run away. The input is
//! the template, then (after the first NUL) a chat as JSON messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use xi_engine::llm::template::TemplateLimits;
use xi_engine::llm::{ChatMessage, ChatTemplate};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (source, chat) = data.split_at(split);
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let messages: Vec<ChatMessage> = serde_json::from_slice(chat.get(1..).unwrap_or_default())
        .unwrap_or_else(|_| {
            vec![
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hello?"),
            ]
        });
    let limits = TemplateLimits::default();
    let Ok(template) =
        ChatTemplate::with_limits(source.into(), "<s>".into(), "</s>".into(), limits)
    else {
        return;
    };
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let kwargs = json!({"enable_thinking": false});
    if let Ok((prompt, fuel)) = template.render_with(&messages, Some(&tools), Some(&kwargs), true)
    {
        assert!(prompt.len() <= limits.output_bytes);
        assert!(fuel <= limits.fuel);
    }
});
