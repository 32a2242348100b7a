//! The grammar of a required call (`tool_choice: "required"` or a named function): the
//! model's answer is held to calls written in its format, of the functions it may call, with
//! arguments that validate against each function's `parameters` schema.

use serde_json::{json, Value};
use xi_api::guide::Guide;
use xi_api::tools::{ToolParser, Tools};

/// How a call's JSON is laid out: one space after `:` and `,`, no newlines, as the formats'
/// own examples write it. A fixed layout also keeps a weak model from spending its tokens on
/// whitespace.
fn layout() -> Value {
    json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": " })
}

/// One call of one function: `{"name": <name>, <key>: <arguments>}`, `key` being the format's
/// name for the arguments.
fn call_schema(name: &str, parameters: &Value, key: &str) -> Value {
    json!({
        "type": "object",
        "properties": { "name": { "const": name }, key: parameters },
        "required": ["name", key],
        "additionalProperties": false,
    })
}

/// The Lark grammar (llguidance's dialect, with `%json` schemas) for a required call of
/// `tools` in `parser`'s format; one call, or one or more when `tools.parallel`.
pub fn call_grammar(parser: ToolParser, tools: &Tools) -> Guide {
    let key = match parser {
        ToolParser::Llama3Json => "parameters",
        ToolParser::Hermes | ToolParser::Mistral => "arguments",
    };
    let options: Vec<Value> = tools
        .callable()
        .map(|f| call_schema(&f.name, &f.parameters, key))
        .collect();
    let mut call = match <[Value; 1]>::try_from(options) {
        Ok([one]) => one,
        Err(options) => json!({ "anyOf": options }),
    };
    let lark = match parser {
        ToolParser::Hermes => {
            call["x-guidance"] = layout();
            let calls = if tools.parallel {
                "call (\"\\n\" call)*"
            } else {
                "call"
            };
            format!("start: {calls}\ncall: \"<tool_call>\\n\" body \"\\n</tool_call>\"\nbody: %json {call}\n")
        }
        ToolParser::Llama3Json => {
            call["x-guidance"] = layout();
            let calls = if tools.parallel {
                "body (\"; \" body)*"
            } else {
                "body"
            };
            format!("start: {calls}\nbody: %json {call}\n")
        }
        ToolParser::Mistral => {
            let mut list = json!({ "type": "array", "items": call, "minItems": 1 });
            if !tools.parallel {
                list["maxItems"] = json!(1);
            }
            list["x-guidance"] = layout();
            format!("start: body\nbody: %json {list}\n")
        }
    };
    Guide::Grammar { lark }
}

#[cfg(test)]
mod tests {
    use xi_api::tools::{Function, ToolChoice};

    use super::*;

    fn tools(choice: ToolChoice, parallel: bool) -> Tools {
        let f = |name: &str| Function {
            name: name.into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"x": {"type": "integer"}}}),
        };
        Tools {
            functions: vec![f("a"), f("b")],
            choice,
            parallel,
        }
    }

    fn lark(guide: Guide) -> String {
        match guide {
            Guide::Grammar { lark } => lark,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_named_function_is_the_only_call_the_grammar_allows() {
        let grammar = lark(call_grammar(
            ToolParser::Hermes,
            &tools(ToolChoice::Function("b".into()), false),
        ));
        assert!(grammar.starts_with("start: call\n"), "{grammar}");
        assert!(grammar.contains("\"const\":\"b\""), "{grammar}");
        assert!(!grammar.contains("\"const\":\"a\"") && !grammar.contains("anyOf"));
    }

    #[test]
    fn required_offers_every_function_in_the_formats_shape() {
        let grammar = lark(call_grammar(
            ToolParser::Hermes,
            &tools(ToolChoice::Required, true),
        ));
        assert!(
            grammar.starts_with("start: call (\"\\n\" call)*\n"),
            "{grammar}"
        );
        assert!(grammar.contains("anyOf") && grammar.contains("\"arguments\""));
        let grammar = lark(call_grammar(
            ToolParser::Llama3Json,
            &tools(ToolChoice::Required, false),
        ));
        assert!(grammar.starts_with("start: body\n") && grammar.contains("\"parameters\""));
        let grammar = lark(call_grammar(
            ToolParser::Mistral,
            &tools(ToolChoice::Required, false),
        ));
        assert!(grammar.contains("\"maxItems\":1") && grammar.contains("\"type\":\"array\""));
    }
}
