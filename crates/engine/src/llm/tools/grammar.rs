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

/// The Lark grammar (llguidance's dialect, with `%json` schemas) of an answer to `tools` in
/// `parser`'s format: for a required or named call, one call (one or more when
/// `tools.parallel`); for `auto`, text or such calls.
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
    // `calls`: the answer's calls in the format; then the rules they use.
    let (calls, rules, opener) = match parser {
        ToolParser::Hermes => {
            call["x-guidance"] = layout();
            let calls = if tools.parallel {
                "call (\"\\n\" call)*"
            } else {
                "call"
            };
            let rules =
                format!("call: \"<tool_call>\\n\" body \"\\n</tool_call>\"\nbody: %json {call}\n");
            (calls, rules, "<tool_call>")
        }
        ToolParser::Llama3Json => {
            call["x-guidance"] = layout();
            let calls = if tools.parallel {
                "body (\"; \" body)*"
            } else {
                "body"
            };
            (calls, format!("body: %json {call}\n"), "{")
        }
        ToolParser::Mistral => {
            let mut list = json!({ "type": "array", "items": call, "minItems": 1 });
            if !tools.parallel {
                list["maxItems"] = json!(1);
            }
            list["x-guidance"] = layout();
            ("body", format!("body: %json {list}\n"), "[")
        }
    };
    // A required call is nothing but calls. With `auto` the answer is text, or calls: an
    // answer that opens as a call (its first characters are the format's opener) is held to
    // valid calls, any other is free text (a call later in it is still parsed, unchecked).
    let lark = if tools.constrained() {
        format!("start: {calls}\n{rules}")
    } else {
        format!(
            "start: (TEXT | {calls})?\nTEXT: /{}/\n{rules}",
            not_starting_with(opener)
        )
    };
    Guide::Grammar { lark }
}

/// A regex (Rust syntax, inside Lark's slashes) of every text that does not start with `tag`:
/// text whose first difference from `tag` comes before its end, or a proper prefix of it.
fn not_starting_with(tag: &str) -> String {
    let chars: Vec<char> = tag.chars().collect();
    let mut options = Vec::new();
    for i in 0..chars.len() {
        let head: String = chars[..i].iter().map(|&c| escape(c)).collect();
        options.push(format!("{head}[^{}](.|\\n)*", escape(chars[i])));
        if i > 0 {
            options.push(head);
        }
    }
    options.join("|")
}

/// `c` as a literal in a regex or a character class.
fn escape(c: char) -> String {
    if "\\.+*?()|[]{}^$#&-~/\"".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
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

    #[test]
    fn auto_allows_text_that_does_not_open_as_a_call() {
        let grammar = lark(call_grammar(
            ToolParser::Hermes,
            &tools(ToolChoice::Auto, true),
        ));
        assert!(
            grammar.starts_with("start: (TEXT | call (\"\\n\" call)*)?\nTEXT: /[^<]"),
            "{grammar}"
        );
        assert_eq!(not_starting_with("{"), "[^\\{](.|\\n)*");
        assert_eq!(
            not_starting_with("<ab"),
            "[^<](.|\\n)*|<[^a](.|\\n)*|<|<a[^b](.|\\n)*|<a"
        );
    }
}
