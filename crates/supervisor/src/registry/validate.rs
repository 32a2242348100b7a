//! Validation of custom model definitions (upstream's name rules and required fields), with
//! defaults filled in so a stored definition is complete.

use std::path::Path;

use serde_json::{json, Map, Value};
use xi_api::models::ModelType;
use xi_api::names;

use super::Family;
use crate::error::SupervisorError;

const LLM_ABILITIES: [&str; 9] = [
    "embed",
    "generate",
    "chat",
    "tools",
    "vision",
    "audio",
    "omni",
    "reasoning",
    "hybrid",
];

fn bad(message: impl Into<String>) -> SupervisorError {
    SupervisorError::BadRequest(message.into())
}

/// Checks a definition and fills defaults. `builtins` supplies LLM families for `model_family`;
/// `check_paths` verifies that local `model_uri`s exist (off when re-loading stored files, so
/// a moved folder does not hide the registration).
pub fn custom_definition(
    model_type: ModelType,
    text: &str,
    builtins: &[Family],
    check_paths: bool,
) -> Result<Map<String, Value>, SupervisorError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(format!("Invalid model definition, not JSON: {e}")))?;
    let Value::Object(mut model) = value else {
        return Err(bad("Invalid model definition: it must be a JSON object"));
    };
    match model.get("version") {
        None => {
            model.insert("version".into(), json!(2));
        }
        Some(v) if v.as_u64() == Some(2) => {}
        Some(v) => {
            return Err(bad(format!(
                "Unsupported model definition version {v}; use 2"
            )))
        }
    }
    let name = model
        .get("model_name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Invalid model definition: `model_name` (a string) is required"))?
        .to_string();
    // Upstream's documented rule (start with a letter or a digit; letters, digits, `_`, `-`),
    // plus `.` as upstream's own built-in names use it.
    if !names::is_valid_model_name(&name) {
        return Err(bad(format!(
            "Invalid model name {name}. A model name starts with a letter or a digit and holds \
             only letters, digits, '.', '_' and '-' (at most {} characters).",
            names::MAX_MODEL_NAME_LEN
        )));
    }
    if model_type == ModelType::Audio {
        flat_audio_spec(&mut model);
    }
    specs(model_type, &mut model, check_paths)?;
    match model_type {
        ModelType::Llm => llm_fields(&mut model, builtins)?,
        ModelType::Embedding => {
            positive_int(&model, "dimensions")?;
            positive_int(&model, "max_tokens")?;
            string_list_or_default(&mut model, "language")?;
        }
        ModelType::Audio => audio_fields(&mut model)?,
        ModelType::Rerank => {
            model.entry("type").or_insert(json!("normal"));
            model.entry("max_tokens").or_insert(json!(512));
            positive_int(&model, "max_tokens")?;
            string_list_or_default(&mut model, "language")?;
        }
    }
    model.insert("is_builtin".into(), Value::Bool(false));
    Ok(model)
}

/// Upstream's custom audio models carry `model_uri` (or `model_id` and `model_revision`) at
/// the top level, without `model_specs`: that becomes the one spec.
fn flat_audio_spec(model: &mut Map<String, Value>) {
    if model.contains_key("model_specs") {
        return;
    }
    let mut spec = Map::new();
    spec.insert("model_format".into(), json!("pytorch"));
    spec.insert("quantization".into(), json!("none"));
    for key in ["model_uri", "model_id", "model_revision"] {
        if let Some(v) = model.remove(key) {
            spec.insert(key.into(), v);
        }
    }
    if spec.len() > 2 {
        model.insert("model_specs".into(), json!([spec]));
    }
}

/// An audio model: a speech-to-text family (`model_family` defaults to `whisper`, the only
/// one we run), `model_ability` `["audio2text"]`, `multilingual` a boolean (default true).
fn audio_fields(model: &mut Map<String, Value>) -> Result<(), SupervisorError> {
    let family = model.entry("model_family").or_insert(json!("whisper"));
    if family.as_str() != Some("whisper") {
        return Err(bad(
            "Invalid model definition: `model_family` of an audio model must be \"whisper\" (the speech-to-text models we run)",
        ));
    }
    let ability = model
        .entry("model_ability")
        .or_insert(json!(["audio2text"]));
    if ability != &json!(["audio2text"]) {
        return Err(bad(
            "Invalid model definition: `model_ability` of an audio model must be [\"audio2text\"]",
        ));
    }
    let multilingual = model.entry("multilingual").or_insert(json!(true));
    if !multilingual.is_boolean() {
        return Err(bad(
            "Invalid model definition: `multilingual` must be true or false",
        ));
    }
    Ok(())
}

fn positive_int(model: &Map<String, Value>, key: &str) -> Result<u64, SupervisorError> {
    model
        .get(key)
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            bad(format!(
                "Invalid model definition: `{key}` must be a positive integer"
            ))
        })
}

fn string_list_or_default(
    model: &mut Map<String, Value>,
    key: &str,
) -> Result<(), SupervisorError> {
    let value = model.entry(key).or_insert(json!(["en"]));
    let ok = value
        .as_array()
        .is_some_and(|l| l.iter().all(Value::is_string));
    if !ok {
        return Err(bad(format!(
            "Invalid model definition: `{key}` must be a list of strings"
        )));
    }
    Ok(())
}

fn specs(
    model_type: ModelType,
    model: &mut Map<String, Value>,
    check_paths: bool,
) -> Result<(), SupervisorError> {
    let formats: &[&str] = match model_type {
        ModelType::Llm => &["pytorch", "ggufv2"],
        ModelType::Embedding | ModelType::Rerank | ModelType::Audio => &["pytorch"],
    };
    let specs = model
        .get_mut("model_specs")
        .and_then(Value::as_array_mut)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("Invalid model definition: `model_specs` must be a non-empty list"))?;
    for (i, spec) in specs.iter_mut().enumerate() {
        let spec = spec.as_object_mut().ok_or_else(|| {
            bad(format!(
                "Invalid model definition: model_specs[{i}] must be an object"
            ))
        })?;
        let format = spec
            .get("model_format")
            .and_then(Value::as_str)
            .unwrap_or("pytorch")
            .to_string();
        if !formats.contains(&format.as_str()) {
            return Err(bad(format!(
                "model_specs[{i}]: model_format {format:?} is not supported for {model_type} models by the candle engine; use {}",
                formats.join(" or ")
            )));
        }
        spec.insert("model_format".into(), json!(format));
        spec.entry("model_hub").or_insert(json!("huggingface"));
        if format == "ggufv2" {
            if !spec
                .get("model_file_name_template")
                .is_some_and(Value::is_string)
            {
                return Err(bad(format!(
                    "model_specs[{i}]: ggufv2 specs need `model_file_name_template`"
                )));
            }
            if !spec.get("quantization").is_some_and(Value::is_string) {
                return Err(bad(format!(
                    "model_specs[{i}]: ggufv2 specs need `quantization`"
                )));
            }
        } else {
            spec.entry("quantization").or_insert(json!("none"));
        }
        path_fields(spec).map_err(|why| bad(format!("model_specs[{i}]: {why}")))?;
        if model_type == ModelType::Llm && !spec.contains_key("model_size_in_billions") {
            return Err(bad(format!(
                "model_specs[{i}]: `model_size_in_billions` is required"
            )));
        }
        if spec.get("model_id").is_none() && spec.get("model_uri").is_none() {
            return Err(bad(format!("model_specs[{i}]: give `model_uri` (a local folder) or `model_id` (a hub repository)")));
        }
        if let Some(uri) = spec.get("model_uri") {
            let uri = uri
                .as_str()
                .ok_or_else(|| bad(format!("model_specs[{i}]: `model_uri` must be a string")))?;
            check_model_uri(uri, check_paths)
                .map_err(|why| bad(format!("model_specs[{i}]: {why}")))?;
        }
    }
    Ok(())
}

/// The spec fields that become parts of file paths (the cache folder, the downloaded file) or
/// of hub URLs: each must be a path-safe name, so a download can only write under the model's
/// cache folder.
fn path_fields(spec: &Map<String, Value>) -> Result<(), String> {
    let text = |key: &str| -> Result<Option<&str>, String> {
        match spec.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    };
    if let Some(q) = text("quantization")? {
        if !names::is_safe_component(q) {
            return Err(format!(
                "`quantization` {q:?} may only hold letters, digits, '.', '_' and '-' (not '.' or '..')"
            ));
        }
    }
    if let Some(template) = text("model_file_name_template")? {
        // Check the template with a safe stand-in, then with the spec's own quantization.
        let quantization = text("quantization")?.unwrap_or("none");
        for file in [
            template.replace("{quantization}", "q"),
            template.replace("{quantization}", quantization),
        ] {
            if !names::is_safe_relative_path(&file) {
                return Err(format!(
                    "`model_file_name_template` {template:?} must be a relative file path of letters, digits, '.', '_', '-' and '/' without '.' or '..' parts"
                ));
            }
        }
    }
    if let Some(id) = text("model_id")? {
        if !names::is_hub_repo_id(id) {
            return Err(format!(
                "`model_id` {id:?} must be a hub repository id `owner/name` (letters, digits, '.', '_', '-')"
            ));
        }
    }
    if let Some(revision) = text("model_revision")? {
        if !names::is_hub_revision(revision) {
            return Err(format!(
                "`model_revision` {revision:?} must be a branch, tag or commit (letters, digits, '.', '_', '-', '/')"
            ));
        }
    }
    match spec.get("model_size_in_billions") {
        None | Some(Value::Null | Value::Number(_)) => {}
        Some(Value::String(size))
            if !size.is_empty()
                && size
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '_' || c == '.') => {}
        Some(other) => {
            return Err(format!(
                "`model_size_in_billions` must be a number or a string such as \"1_5\", not {other}"
            ))
        }
    }
    Ok(())
}

/// `file://` or plain absolute paths that exist. Remote schemes would need a downloader per
/// scheme; we refuse them clearly instead of failing at launch.
fn check_model_uri(uri: &str, check_paths: bool) -> Result<(), String> {
    let path = match uri.strip_prefix("file://") {
        Some(rest) => rest,
        None if uri.contains("://") => {
            return Err(format!(
                "model_uri {uri:?}: only local paths (absolute, or file://) are supported"
            ))
        }
        None => uri,
    };
    if !Path::new(path).is_absolute() {
        return Err(format!("model_uri {uri:?} must be an absolute path"));
    }
    if check_paths && !Path::new(path).exists() {
        return Err(format!("model_uri {uri:?} does not exist"));
    }
    Ok(())
}

fn llm_fields(model: &mut Map<String, Value>, builtins: &[Family]) -> Result<(), SupervisorError> {
    let llm_families = || builtins.iter().filter(|f| f.model_type == ModelType::Llm);
    let family_name = model
        .get("model_family")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad("Invalid LLM definition: `model_family` (a built-in LLM family name) is required")
        })?
        .to_string();
    let family = llm_families()
        .find(|f| f.name == family_name)
        .ok_or_else(|| {
            let names: Vec<&str> = llm_families().map(|f| f.name.as_str()).collect();
            bad(format!(
                "model_family {family_name:?} is not a built-in LLM family; choose one of: {}",
                names.join(", ")
            ))
        })?;

    let abilities = model.entry("model_ability").or_insert(json!(["generate"]));
    let abilities: Vec<String> = abilities
        .as_array()
        .ok_or_else(|| bad("`model_ability` must be a list"))?
        .iter()
        .map(|a| {
            a.as_str()
                .map(String::from)
                .ok_or_else(|| bad("`model_ability` must be a list of strings"))
        })
        .collect::<Result<_, _>>()?;
    if let Some(unknown) = abilities
        .iter()
        .find(|a| !LLM_ABILITIES.contains(&a.as_str()))
    {
        return Err(bad(format!(
            "Unknown model_ability {unknown:?}; known: {}",
            LLM_ABILITIES.join(", ")
        )));
    }
    model.entry("model_lang").or_insert(json!(["en"]));
    model.entry("context_length").or_insert(json!(2048));
    positive_int(model, "context_length")?;

    // A chat model takes its template and stop tokens from its family unless it brings its own;
    // a template that names a built-in family means that family's template.
    let template = model
        .get("chat_template")
        .and_then(Value::as_str)
        .map(String::from);
    let use_family = match &template {
        None => abilities.iter().any(|a| a == "chat"),
        Some(t) => llm_families().any(|f| &f.name == t),
    };
    if use_family {
        let source = match &template {
            Some(t) => llm_families().find(|f| &f.name == t).unwrap_or(family),
            None => family,
        };
        for key in ["chat_template", "stop_token_ids", "stop"] {
            if let Some(v) = source.body.get(key) {
                model.insert(key.into(), v.clone());
            }
        }
    }
    Ok(())
}
