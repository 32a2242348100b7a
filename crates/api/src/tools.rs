//! Tool calling: OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` on a chat request,
//! parsed and checked here ([`tools_of`], a 400 naming the field), and the shapes that cross to
//! the worker: the [`Tools`] a request offers, the [`ToolParser`] format a model calls them in,
//! and each [`ToolCall`] the worker found in the model's answer.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Functions one request may offer (OpenAI's own limit).
pub const MAX_TOOLS: usize = 128;
/// Bytes the offered functions may take together: they are rendered into the prompt and, for
/// a required call, compiled into a grammar, so they are bounded like any other input.
pub const MAX_TOOLS_BYTES: usize = 256 * 1024;
/// Longest function name (OpenAI's rule: letters, digits, `_` and `-`, at most 64).
pub const MAX_FUNCTION_NAME: usize = 64;

/// How a model writes its tool calls, and so how its answer is parsed (vLLM's
/// `--tool-call-parser`, upstream's `tool_parser`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolParser {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call:
    /// Hermes, Qwen2.5, Qwen3, and every model whose template takes no tools (our generic
    /// prompt asks for this format).
    Hermes,
    /// Llama 3.1+: the answer is `{"name": ..., "parameters": {...}}` (after
    /// `<|python_tag|>`, a special token), calls separated by `;`.
    Llama3Json,
    /// Mistral: `[TOOL_CALLS]` (a special token) then a JSON list of
    /// `{"name": ..., "arguments": {...}}`.
    Mistral,
}

impl ToolParser {
    /// The names a launch option or a catalogue entry may use: ours, vLLM's and upstream's.
    pub const NAMES: [&'static str; 8] = [
        "hermes",
        "qwen",
        "qwen2.5",
        "qwen3",
        "llama3",
        "llama3_json",
        "llama",
        "mistral",
    ];

    /// The parser a name stands for (see [`ToolParser::NAMES`]).
    pub fn from_name(name: &str) -> Option<ToolParser> {
        match name.to_ascii_lowercase().as_str() {
            "hermes" | "qwen" | "qwen2.5" | "qwen3" => Some(ToolParser::Hermes),
            "llama3" | "llama3_json" | "llama" => Some(ToolParser::Llama3Json),
            "mistral" => Some(ToolParser::Mistral),
            _ => None,
        }
    }

    /// The format a chat template renders tools in, when it takes tools (reads the `tools`
    /// variable) in one we parse; `None` for a template that takes no tools, which then gets
    /// our generic prompt (docs/llm.md).
    pub fn detect(template: &str) -> Option<ToolParser> {
        if !template.contains("tools") {
            return None;
        }
        if template.contains("<tool_call>") {
            Some(ToolParser::Hermes)
        } else if template.contains("[TOOL_CALLS]") {
            Some(ToolParser::Mistral)
        } else if template.contains("<|python_tag|>") || template.contains("\"parameters\"") {
            Some(ToolParser::Llama3Json)
        } else {
            None
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Function {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments (an object schema; `{}` when the request gives none).
    pub parameters: Value,
}

/// Whether and which function the answer must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides: text, or calls (OpenAI's default when tools are given).
    Auto,
    /// At least one call, of any offered function: decoding is constrained to calls.
    Required,
    /// A call of this function: decoding is constrained to it.
    Function(String),
}

/// The tools a chat request offers, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tools {
    pub functions: Vec<Function>,
    pub choice: ToolChoice,
    /// Several calls in one answer (`parallel_tool_calls`, default true); otherwise the first
    /// call is the answer's only one.
    pub parallel: bool,
}

impl Tools {
    /// Whether decoding is held to calls (`required` or a named function).
    pub fn constrained(&self) -> bool {
        !matches!(self.choice, ToolChoice::Auto)
    }

    /// The functions the answer may call: all of them, or the named one.
    pub fn callable(&self) -> impl Iterator<Item = &Function> {
        self.functions.iter().filter(|f| match &self.choice {
            ToolChoice::Function(name) => &f.name == name,
            _ => true,
        })
    }

    /// The `tools` variable of a chat template, in OpenAI's (and Hugging Face's) shape:
    /// `[{"type": "function", "function": {"name", "description", "parameters"}}]`.
    pub fn template_value(&self) -> Value {
        Value::Array(
            self.functions
                .iter()
                .map(|f| json!({ "type": "function", "function": f }))
                .collect(),
        )
    }
}

/// A call the model made, as OpenAI returns it: `arguments` is a JSON object as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The tool fields of a chat body, as a client sends them (any JSON: checked by [`tools_of`]).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct ToolFields {
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<Value>,
}

/// Whether `name` is a function name OpenAI accepts.
pub fn valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FUNCTION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The checked tools of a request; `None` when it offers none or says `tool_choice: "none"`
/// (then the model sees no tools and its answer is text). The error is the 400's detail.
pub fn tools_of(fields: &ToolFields) -> Result<Option<Tools>, String> {
    let given = |v: &Option<Value>| v.as_ref().filter(|v| !v.is_null()).cloned();
    let functions = match given(&fields.tools) {
        None => Vec::new(),
        Some(Value::Array(items)) => functions(&items)?,
        Some(_) => return Err("tools must be a list of {\"type\": \"function\", ...}".into()),
    };
    let parallel = match given(&fields.parallel_tool_calls) {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err("parallel_tool_calls must be true or false".into()),
    };
    let choice = match given(&fields.tool_choice) {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => Some(ToolChoice::Auto),
            "required" => Some(ToolChoice::Required),
            other => {
                return Err(format!(
                    "tool_choice must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {other:?}"
                ))
            }
        },
        Some(Value::Object(choice)) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| choice.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or("tool_choice must be {\"type\": \"function\", \"function\": {\"name\": ...}} when it is an object")?;
            if !functions.iter().any(|f| f.name == name) {
                return Err(format!(
                    "tool_choice names the function {name:?}, which tools does not list"
                ));
            }
            Some(ToolChoice::Function(name.to_string()))
        }
        Some(_) => return Err("tool_choice must be a string or an object".into()),
    };
    if functions.is_empty() {
        return match choice {
            Some(ToolChoice::Required) | Some(ToolChoice::Function(_)) => {
                Err("tool_choice requires tools: this request lists none".into())
            }
            _ => Ok(None),
        };
    }
    Ok(Some(Tools {
        functions,
        choice: choice.unwrap_or(ToolChoice::Auto),
        parallel,
    }))
}

fn functions(items: &[Value]) -> Result<Vec<Function>, String> {
    if items.len() > MAX_TOOLS {
        return Err(format!(
            "tools lists {} functions; at most {MAX_TOOLS} are allowed",
            items.len()
        ));
    }
    let bytes: usize = items.iter().map(|t| t.to_string().len()).sum();
    if bytes > MAX_TOOLS_BYTES {
        return Err(format!(
            "tools take {bytes} bytes; at most {MAX_TOOLS_BYTES} are allowed"
        ));
    }
    let mut out: Vec<Function> = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(format!("tools[{i}].type must be \"function\""));
        }
        let function = tool
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("tools[{i}].function must be an object"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| valid_function_name(n))
            .ok_or_else(|| {
                format!("tools[{i}].function.name must be 1 to {MAX_FUNCTION_NAME} letters, digits, '_' or '-'")
            })?;
        if out.iter().any(|f| f.name == name) {
            return Err(format!("tools[{i}].function.name {name:?} is listed twice"));
        }
        let description = match function.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => return Err(format!("tools[{i}].function.description must be a string")),
        };
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => json!({ "type": "object", "properties": {} }),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(format!(
                    "tools[{i}].function.parameters must be a JSON schema (an object)"
                ))
            }
        };
        out.push(Function {
            name: name.to_string(),
            description,
            parameters,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(body: Value) -> Result<Option<Tools>, String> {
        tools_of(&serde_json::from_value(body).unwrap())
    }

    fn weather() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }})
    }

    #[test]
    fn tools_and_choices_parse_as_openai_defines_them() {
        assert_eq!(tools(json!({})).unwrap(), None);
        assert_eq!(
            tools(json!({"tools": [], "tool_choice": "auto"})).unwrap(),
            None
        );
        let auto = tools(json!({"tools": [weather()]})).unwrap().unwrap();
        assert_eq!(auto.choice, ToolChoice::Auto);
        assert!(auto.parallel && !auto.constrained());
        assert_eq!(auto.functions[0].name, "get_weather");
        assert_eq!(
            tools(json!({"tools": [weather()], "tool_choice": "none"})).unwrap(),
            None,
            "none: the model sees no tools"
        );
        let required = tools(
            json!({"tools": [weather()], "tool_choice": "required", "parallel_tool_calls": false}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(required.choice, ToolChoice::Required);
        assert!(required.constrained() && !required.parallel);
        let named = tools(
            json!({"tools": [weather(), {"type": "function", "function": {"name": "now"}}],
            "tool_choice": {"type": "function", "function": {"name": "now"}}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(named.choice, ToolChoice::Function("now".into()));
        let callable: Vec<&str> = named.callable().map(|f| f.name.as_str()).collect();
        assert_eq!(callable, ["now"]);
        assert_eq!(
            named.functions[1].parameters,
            json!({"type": "object", "properties": {}}),
            "no parameters: an empty object schema"
        );
        assert_eq!(
            named.template_value()[0],
            json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                "parameters": weather()["function"]["parameters"]}})
        );
    }

    #[test]
    fn every_bad_tool_field_is_refused_naming_it() {
        for (body, starts) in [
            (json!({"tools": {}}), "tools must be a list"),
            (
                json!({"tools": [{"type": "code"}]}),
                "tools[0].type must be \"function\"",
            ),
            (
                json!({"tools": [{"type": "function"}]}),
                "tools[0].function must be an object",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
                "tools[0].function.name must be 1 to 64",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "x".repeat(65)}}]}),
                "tools[0].function.name must be 1 to 64",
            ),
            (
                json!({"tools": [weather(), weather()]}),
                "tools[1].function.name \"get_weather\" is listed twice",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
                "tools[0].function.parameters must be a JSON schema",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "description": 1}}]}),
                "tools[0].function.description must be a string",
            ),
            (
                json!({"tools": [weather()], "tool_choice": "always"}),
                "tool_choice must be \"none\"",
            ),
            (
                json!({"tools": [weather()], "tool_choice": 1}),
                "tool_choice must be a string or an object",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function"}}),
                "tool_choice must be {\"type\": \"function\"",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
                "tool_choice names the function \"nope\", which tools does not list",
            ),
            (
                json!({"tool_choice": "required"}),
                "tool_choice requires tools",
            ),
            (
                json!({"tools": [weather()], "parallel_tool_calls": "yes"}),
                "parallel_tool_calls must be true or false",
            ),
        ] {
            let err = tools(body.clone()).unwrap_err();
            assert!(err.starts_with(starts), "{body}: {err}");
        }
        let many: Vec<Value> = (0..=MAX_TOOLS)
            .map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}}))
            .collect();
        assert!(tools(json!({ "tools": many }))
            .unwrap_err()
            .contains("at most 128"));
        let huge = json!([{"type": "function", "function": {"name": "f", "description": "x".repeat(MAX_TOOLS_BYTES)}}]);
        assert!(tools(json!({ "tools": huge }))
            .unwrap_err()
            .contains("at most 262144"));
    }

    #[test]
    fn parsers_are_named_as_vllm_and_upstream_name_them_and_read_off_templates() {
        for name in ToolParser::NAMES {
            assert!(ToolParser::from_name(name).is_some(), "{name}");
        }
        assert_eq!(ToolParser::from_name("qwen"), Some(ToolParser::Hermes));
        assert_eq!(
            ToolParser::from_name("llama3"),
            Some(ToolParser::Llama3Json)
        );
        assert_eq!(ToolParser::from_name("glm4"), None);
        assert_eq!(
            ToolParser::detect("{% if tools %}<tool_call>{% endif %}"),
            Some(ToolParser::Hermes)
        );
        assert_eq!(
            ToolParser::detect("{% for t in tools %}[TOOL_CALLS]{% endfor %}"),
            Some(ToolParser::Mistral)
        );
        assert_eq!(
            ToolParser::detect("{% if tools %}\"parameters\": dictionary{% endif %}"),
            Some(ToolParser::Llama3Json)
        );
        assert_eq!(ToolParser::detect("<|im_start|>{{ m.content }}"), None);
        assert_eq!(ToolParser::detect("{{ tools }} in some other format"), None);
    }
}
