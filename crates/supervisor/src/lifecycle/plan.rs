//! Launch validation: [`plan_launch`] turns a `POST /v1/models` body into a checked
//! [`LaunchPlan`] (uid rules, model type, engine, replica count, family and spec, and the
//! launch options, parsed once into `xi_api::launch::LaunchOptions`).

use rand::seq::SliceRandom;
use serde_json::{Map, Value};
use xi_api::launch::{LaunchOptions, RawLaunchOptions};
use xi_api::models::{LaunchModelRequest, ModelType};
use xi_api::tools::ToolParser;

use super::table::ModelTable;
use crate::error::SupervisorError;
use crate::registry::{Family, Registry};

/// Upstream's limit on uid length.
const MAX_UID_LEN: usize = 100;

/// A launch request that passed every check.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub uid: String,
    pub model_type: ModelType,
    pub family: Family,
    pub spec: Map<String, Value>,
    pub replica: u32,
    pub model_path: Option<String>,
    /// Pins the launch to the worker at this IP (or `host:port`).
    pub worker_ip: Option<String>,
    /// The launch options, parsed once here; placement and the workers read them typed.
    pub options: LaunchOptions,
    /// `download_hub`: where a launch without local files downloads them from.
    pub download_hub: Option<String>,
}

fn bad(message: impl Into<String>) -> SupervisorError {
    SupervisorError::BadRequest(message.into())
}

/// Validates a launch request against the registry and the running models.
pub fn plan_launch(
    request: LaunchModelRequest,
    registry: &Registry,
    running: &ModelTable,
) -> Result<LaunchPlan, SupervisorError> {
    let name = request
        .model_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("Invalid input. Please specify the `model_name` field."))?
        .to_string();
    let model_type: ModelType = request
        .model_type
        .as_deref()
        .unwrap_or("LLM")
        .parse()
        .map_err(SupervisorError::BadRequest)?;
    if let Some(engine) = request.model_engine.as_deref() {
        check_engine(engine)?;
    }
    let replica = match request.replica {
        None => 1,
        Some(n) if (1..=64).contains(&n) => n as u32,
        Some(n) => return Err(bad(format!("replica must be between 1 and 64, got {n}"))),
    };
    if request.request_limits.is_some_and(|n| n < 0) {
        return Err(bad("request_limits must not be negative"));
    }
    let uid = match request.model_uid.as_deref() {
        Some(uid) => {
            let uid = uid.trim();
            if uid.is_empty() || uid.chars().count() > MAX_UID_LEN {
                return Err(bad(
                    "The model UID is invalid. Please specify the model UID by 0 < length <= 100.",
                ));
            }
            if running.contains(uid) {
                return Err(bad(format!(
                    "Model is already in the model list, uid: {uid}"
                )));
            }
            uid.to_string()
        }
        None => generate_uid(&name, running),
    };
    let family = registry
        .get(model_type, &name)
        .ok_or_else(|| bad(format!("Model not found, name: {name}, type: {model_type}")))?;
    let spec = match_spec(&family, &request)?;
    // The worker resolves the devices (`n_gpu` absent means "auto", null the CPU); a bad value
    // of any option is refused here, naming it.
    let mut options = LaunchOptions::parse(RawLaunchOptions {
        n_gpu: request.n_gpu.as_ref(),
        gpu_idx: request.gpu_idx.as_ref(),
        extra: &request.extra,
        replica: replica as usize,
    })
    .map_err(|e| bad(e.message))?;
    // The family's chat template serves model files that carry none (a GGUF without
    // `tokenizer.chat_template`, a folder without `tokenizer_config.json`).
    if options.chat_template.is_none() {
        options.chat_template = family
            .body
            .get("chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    // Likewise the family's tool-call format (the catalogue names upstream's parsers); one
    // this server does not parse leaves the format to be read off the template.
    if options.tool_parser.is_none() {
        options.tool_parser = family
            .body
            .get("tool_parser")
            .and_then(Value::as_str)
            .and_then(ToolParser::from_name);
    }
    // And the family's reasoning tags, for a launch that splits reasoning out.
    for (key, tag) in [
        ("reasoning_start_tag", &mut options.reasoning_start_tag),
        ("reasoning_end_tag", &mut options.reasoning_end_tag),
    ] {
        if tag.is_none() {
            *tag = family
                .body
                .get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
        }
    }
    Ok(LaunchPlan {
        uid,
        model_type,
        family,
        spec,
        replica,
        model_path: request.model_path,
        worker_ip: request
            .worker_ip
            .map(|ip| ip.trim().to_string())
            .filter(|ip| !ip.is_empty()),
        options,
        download_hub: request.download_hub,
    })
}

/// Upstream's CPU engine names, which scripts written for Xinference pass; they run on candle.
const CANDLE_ALIASES: [&str; 4] = ["transformers", "llama.cpp", "sentence_transformers", "flag"];

/// `candle`, or an upstream engine name candle stands in for; GPU-server engines (vLLM,
/// SGLang, ...) are refused rather than silently replaced.
fn check_engine(engine: &str) -> Result<(), SupervisorError> {
    let name = engine.to_ascii_lowercase();
    if name == "candle" {
        return Ok(());
    }
    if CANDLE_ALIASES.contains(&name.as_str()) {
        tracing::info!(
            engine,
            "model_engine is an upstream engine name; the model runs on candle"
        );
        return Ok(());
    }
    Err(bad(format!(
        "Model engine {engine:?} is not supported; xinference-rs runs models with `candle` \
         (upstream's Transformers, llama.cpp, sentence_transformers and flag are accepted as aliases)"
    )))
}

/// `model_name`, or `model_name-<8 distinct random alphanumerics>` when that uid is taken.
fn generate_uid(name: &str, running: &ModelTable) -> String {
    if !running.contains(name) {
        return name.to_string();
    }
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    loop {
        let suffix: String = alphabet
            .choose_multiple(&mut rand::thread_rng(), 8)
            .collect();
        let uid = format!("{name}-{suffix}");
        if !running.contains(&uid) {
            return uid;
        }
    }
}

/// Sizes compare as upstream writes them: `0.5`, `"0.5"` and `"0_5"` are the same.
fn size_key(value: &Value) -> String {
    match value {
        Value::String(s) => s.replace('.', "_"),
        other => other.to_string().replace('.', "_"),
    }
}

fn match_spec(
    family: &Family,
    request: &LaunchModelRequest,
) -> Result<Map<String, Value>, SupervisorError> {
    let wanted_size = request.model_size_in_billions.as_ref().map(size_key);
    let matches = |spec: &Map<String, Value>| {
        let format_ok = request
            .model_format
            .as_deref()
            .is_none_or(|f| spec.get("model_format").and_then(Value::as_str) == Some(f));
        let size_ok = wanted_size
            .as_deref()
            .is_none_or(|w| spec.get("model_size_in_billions").map(size_key).as_deref() == Some(w));
        let quant_ok = request.quantization.as_deref().is_none_or(|q| {
            spec.get("quantization")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(q))
        });
        format_ok && size_ok && quant_ok
    };
    if let Some(spec) = family.specs().find(|s| matches(s)) {
        return Ok(spec.clone());
    }
    let available: Vec<String> = family
        .specs()
        .map(|s| {
            let field = |k: &str| {
                s.get(k)
                    .map(|v| v.as_str().map_or(v.to_string(), String::from))
                    .unwrap_or_default()
            };
            format!(
                "{}/{}/{}",
                field("model_format"),
                field("model_size_in_billions"),
                field("quantization")
            )
        })
        .collect();
    Err(bad(format!(
        "Model {} has no spec matching format={}, size={}, quantization={}; available (format/size/quantization): {}",
        family.name,
        request.model_format.as_deref().unwrap_or("any"),
        wanted_size.as_deref().unwrap_or("any"),
        request.quantization.as_deref().unwrap_or("any"),
        available.join(", ")
    )))
}
