//! Structured output: the constraint a chat or completion request puts on its answer, from
//! OpenAI's `response_format` or vLLM's (and Xinference's) `guided_json`, `guided_regex`,
//! `guided_choice` and `guided_grammar`. Parsed and checked here ([`guide_of`], a 400 naming the
//! field); the worker compiles it into a token mask (llguidance) before the request is queued.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most bytes a constraint may take (a schema, regex, grammar or the choices together): it
/// is compiled per request, so it is bounded like any other input.
pub const MAX_GUIDE_BYTES: usize = 64 * 1024;
/// The most strings `guided_choice` may list.
pub const MAX_GUIDE_CHOICES: usize = 1024;

/// What the answer must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Guide {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON that validates against `schema` (`json_schema`, `guided_json`).
    JsonSchema { schema: Value },
    /// Text that fully matches `pattern` (`guided_regex`); `\d` and `\w` are ASCII, as in JSON
    /// Schema patterns.
    Regex { pattern: String },
    /// Exactly one of `choices` (`guided_choice`).
    Choice { choices: Vec<String> },
    /// Text in the language of a Lark grammar (`guided_grammar`).
    Grammar { lark: String },
}

/// The request's constraint fields, as a client sends them (any JSON: checked by [`guide_of`]).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct GuideFields {
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub guided_json: Option<Value>,
    #[serde(default)]
    pub guided_regex: Option<Value>,
    #[serde(default)]
    pub guided_choice: Option<Value>,
    #[serde(default)]
    pub guided_grammar: Option<Value>,
}

/// The checked constraint of a request, if it asks for one; the error is the 400's detail.
pub fn guide_of(fields: &GuideFields) -> Result<Option<Guide>, String> {
    let given = |v: &Option<Value>| v.as_ref().filter(|v| !v.is_null()).cloned();
    let mut found: Vec<(&str, Guide)> = Vec::new();
    if let Some(format) = given(&fields.response_format) {
        if let Some(guide) = response_format(&format)? {
            found.push(("response_format", guide));
        }
    }
    if let Some(schema) = given(&fields.guided_json) {
        found.push(("guided_json", guided_json(schema)?));
    }
    if let Some(pattern) = given(&fields.guided_regex) {
        let pattern = pattern
            .as_str()
            .ok_or("guided_regex must be a string (a regular expression)")?;
        found.push((
            "guided_regex",
            Guide::Regex {
                pattern: pattern.to_string(),
            },
        ));
    }
    if let Some(choices) = given(&fields.guided_choice) {
        found.push(("guided_choice", guided_choice(&choices)?));
    }
    if let Some(lark) = given(&fields.guided_grammar) {
        let lark = lark
            .as_str()
            .ok_or("guided_grammar must be a string (a Lark grammar)")?;
        found.push((
            "guided_grammar",
            Guide::Grammar {
                lark: lark.to_string(),
            },
        ));
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(name, _)| *name).collect();
        return Err(format!(
            "give at most one output constraint; this request gives {}",
            names.join(", ")
        ));
    }
    let guide = found.pop().map(|(_, guide)| guide);
    if let Some(guide) = &guide {
        let bytes = match guide {
            Guide::JsonObject => 0,
            Guide::JsonSchema { schema } => schema.to_string().len(),
            Guide::Regex { pattern } => pattern.len(),
            Guide::Choice { choices } => choices.iter().map(String::len).sum(),
            Guide::Grammar { lark } => lark.len(),
        };
        if bytes > MAX_GUIDE_BYTES {
            return Err(format!(
                "the output constraint takes {bytes} bytes; at most {MAX_GUIDE_BYTES} are allowed"
            ));
        }
    }
    Ok(guide)
}

/// OpenAI's `response_format`: `text` (no constraint), `json_object`, or `json_schema` with
/// `json_schema.schema`.
fn response_format(format: &Value) -> Result<Option<Guide>, String> {
    let kind = format
        .get("type")
        .and_then(Value::as_str)
        .ok_or("response_format must be an object with a type: text, json_object or json_schema")?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Guide::JsonObject)),
        "json_schema" => {
            let spec = format
                .get("json_schema")
                .filter(|v| v.is_object())
                .ok_or("response_format.json_schema must be an object with a schema")?;
            if spec.get("name").is_some_and(|n| !n.is_string()) {
                return Err("response_format.json_schema.name must be a string".into());
            }
            if spec
                .get("strict")
                .is_some_and(|s| !s.is_boolean() && !s.is_null())
            {
                return Err("response_format.json_schema.strict must be a boolean".into());
            }
            let schema = match spec.get("schema") {
                Some(schema @ (Value::Object(_) | Value::Bool(_))) => schema.clone(),
                // OpenAI lets the schema out: then any JSON object will do.
                None | Some(Value::Null) => return Ok(Some(Guide::JsonObject)),
                Some(_) => {
                    return Err(
                        "response_format.json_schema.schema must be a JSON schema object".into(),
                    )
                }
            };
            Ok(Some(Guide::JsonSchema { schema }))
        }
        other => Err(format!(
            "response_format.type must be text, json_object or json_schema, got {other:?}"
        )),
    }
}

/// vLLM's `guided_json`: a schema, or a string holding one.
fn guided_json(schema: Value) -> Result<Guide, String> {
    let schema = match schema {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| format!("guided_json is a string but not JSON: {e}"))?,
        schema => schema,
    };
    match schema {
        Value::Object(_) | Value::Bool(_) => Ok(Guide::JsonSchema { schema }),
        _ => Err("guided_json must be a JSON schema (an object)".into()),
    }
}

fn guided_choice(choices: &Value) -> Result<Guide, String> {
    let error = || "guided_choice must be a non-empty list of strings".to_string();
    let choices: Vec<String> = choices
        .as_array()
        .ok_or_else(error)?
        .iter()
        .map(|c| c.as_str().map(String::from).ok_or_else(error))
        .collect::<Result<_, _>>()?;
    if choices.is_empty() || choices.iter().all(String::is_empty) {
        return Err(error());
    }
    if choices.len() > MAX_GUIDE_CHOICES {
        return Err(format!(
            "guided_choice lists {} strings; at most {MAX_GUIDE_CHOICES} are allowed",
            choices.len()
        ));
    }
    Ok(Guide::Choice { choices })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn guide(body: Value) -> Result<Option<Guide>, String> {
        guide_of(&serde_json::from_value(body).unwrap())
    }

    #[test]
    fn each_field_gives_its_constraint() {
        assert_eq!(guide(json!({})).unwrap(), None);
        assert_eq!(
            guide(json!({"response_format": {"type": "text"}})).unwrap(),
            None
        );
        assert_eq!(
            guide(json!({"response_format": {"type": "json_object"}})).unwrap(),
            Some(Guide::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            guide(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": true}}}))
            .unwrap(),
            Some(Guide::JsonSchema {
                schema: schema.clone()
            })
        );
        assert_eq!(
            guide(json!({"guided_json": schema.to_string()})).unwrap(),
            Some(Guide::JsonSchema {
                schema: schema.clone()
            }),
            "vLLM takes the schema as a string too"
        );
        assert_eq!(
            guide(json!({"guided_regex": "\\d+"})).unwrap(),
            Some(Guide::Regex {
                pattern: "\\d+".into()
            })
        );
        assert_eq!(
            guide(json!({"guided_choice": ["yes", "no"]})).unwrap(),
            Some(Guide::Choice {
                choices: vec!["yes".into(), "no".into()]
            })
        );
        assert_eq!(
            guide(json!({"guided_grammar": "start: \"a\""})).unwrap(),
            Some(Guide::Grammar {
                lark: "start: \"a\"".into()
            })
        );
        assert_eq!(
            guide(json!({"guided_json": null, "response_format": null})).unwrap(),
            None
        );
    }

    #[test]
    fn every_bad_constraint_is_refused_naming_its_field() {
        for (body, starts) in [
            (json!({"response_format": "json"}), "response_format must be an object"),
            (json!({"response_format": {"type": "yaml"}}), "response_format.type must be"),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format.json_schema must be an object",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}),
                "response_format.json_schema.schema must be",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": 1, "schema": {}}}}),
                "response_format.json_schema.name must be a string",
            ),
            (json!({"guided_json": "{not json"}), "guided_json is a string but not JSON"),
            (json!({"guided_json": [1]}), "guided_json must be a JSON schema"),
            (json!({"guided_regex": 5}), "guided_regex must be a string"),
            (json!({"guided_choice": []}), "guided_choice must be a non-empty list"),
            (json!({"guided_choice": ["a", 2]}), "guided_choice must be a non-empty list"),
            (json!({"guided_grammar": {}}), "guided_grammar must be a string"),
            (
                json!({"guided_regex": "a", "guided_choice": ["a"]}),
                "give at most one output constraint; this request gives guided_regex, guided_choice",
            ),
        ] {
            let err = guide(body.clone()).unwrap_err();
            assert!(err.starts_with(starts), "{body}: {err}");
        }
        let huge = "a".repeat(MAX_GUIDE_BYTES + 1);
        let err = guide(json!({ "guided_regex": huge })).unwrap_err();
        assert!(err.contains("at most 65536"), "{err}");
        let many: Vec<String> = (0..=MAX_GUIDE_CHOICES).map(|i| i.to_string()).collect();
        let err = guide(json!({ "guided_choice": many })).unwrap_err();
        assert!(err.contains("at most 1024"), "{err}");
    }
}
