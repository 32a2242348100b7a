//! What a launch sends to its workers: where the model's files come from ([`model_files`])
//! and upstream's description of the model ([`description`], [`complete_description`]).

use std::path::PathBuf;

use serde_json::{json, Map, Value};
use xi_api::models::ModelType;
use xi_api::worker::{HubDownload, ReplicaInfo};

use super::plan::LaunchPlan;
use crate::error::SupervisorError;

/// Where the model's files come from: the launch's `model_path`, else the registration's
/// `model_uri`, else a download of the spec's hub files into the worker's cache. Paths are
/// checked here when the workers share this host's files (local mode); remote workers check
/// their own.
pub fn model_files(
    plan: &LaunchPlan,
    check_exists: bool,
) -> Result<(PathBuf, Option<HubDownload>), SupervisorError> {
    let bad = |m: String| SupervisorError::BadRequest(m);
    if let Some(path) = &plan.model_path {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(bad(format!(
                "model_path {} must be an absolute path",
                path.display()
            )));
        }
        if check_exists && !path.exists() {
            return Err(bad(format!("model_path {} does not exist", path.display())));
        }
        return Ok((path, None));
    }
    if let Some(uri) = plan.spec.get("model_uri").and_then(Value::as_str) {
        let path = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
        if check_exists && !path.exists() {
            return Err(bad(format!(
                "model_uri {uri} of model {} does not exist",
                plan.family.name
            )));
        }
        return Ok((path, None));
    }
    Ok((PathBuf::new(), Some(hub_download(plan)?)))
}

/// The hub files of the launched spec: GGUF specs name one file (`model_file_name_template`
/// with the quantization), other formats take the repository's model folder.
fn hub_download(plan: &LaunchPlan) -> Result<HubDownload, SupervisorError> {
    let bad = |m: String| SupervisorError::BadRequest(m);
    let hub = plan
        .download_hub
        .clone()
        .or_else(|| std::env::var("XINFERENCE_MODEL_SRC").ok())
        .unwrap_or_else(|| "huggingface".into());
    if hub != "huggingface" {
        return Err(bad(format!(
            "download_hub {hub:?} is not supported (huggingface is; set HF_ENDPOINT for a mirror)"
        )));
    }
    let field = |k: &str| plan.spec.get(k).and_then(Value::as_str);
    let repo = field("model_id").ok_or_else(|| {
        bad(format!(
            "Model {} has no local files and no hub id: pass `model_path` when launching, or \
             register it with a `model_uri`",
            plan.family.name
        ))
    })?;
    let format = field("model_format").unwrap_or("pytorch");
    let quantization = field("quantization").unwrap_or("none");
    let file = match field("model_file_name_template") {
        Some(template) if format == "ggufv2" => {
            Some(template.replace("{quantization}", quantization))
        }
        _ => None,
    };
    let cache_name = if plan.model_type == ModelType::Llm {
        let size = plan
            .spec
            .get("model_size_in_billions")
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            .unwrap_or_default()
            .replace('.', "_");
        format!(
            "{}-{format}-{size}b-{quantization}",
            plan.family.name.replace('.', "_")
        )
    } else {
        plan.family.name.clone()
    };
    Ok(HubDownload {
        repo: repo.to_string(),
        revision: field("model_revision").unwrap_or("main").to_string(),
        file,
        cache_name,
    })
}

/// Completes a plan's description with the worker's address and what loading found.
pub fn complete_description(
    mut d: Map<String, Value>,
    address: &str,
    info: &ReplicaInfo,
) -> Map<String, Value> {
    d.insert("address".into(), json!(address));
    if let Some(n) = info.dimensions.filter(|_| d.contains_key("dimensions")) {
        d.insert("dimensions".into(), json!(n));
    }
    if let Some(n) = info.max_tokens.filter(|_| d.contains_key("max_tokens")) {
        d.insert("max_tokens".into(), json!(n));
    }
    d
}

/// Upstream's description fields for a model of this plan, before loading (the address and
/// the loaded figures come in [`complete_description`]).
pub fn description(plan: &LaunchPlan) -> Map<String, Value> {
    let family = &plan.family.body;
    let spec = &plan.spec;
    let from = |map: &Map<String, Value>, key: &str| map.get(key).cloned().unwrap_or(Value::Null);
    let mut d = Map::new();
    d.insert("model_type".into(), json!(plan.model_type.as_str()));
    d.insert("address".into(), Value::Null);
    d.insert("accelerators".into(), json!([]));
    d.insert("model_name".into(), json!(plan.family.name));
    d.insert("model_engine".into(), json!("candle"));
    d.insert("model_format".into(), from(spec, "model_format"));
    d.insert("quantization".into(), from(spec, "quantization"));
    d.insert("model_hub".into(), from(spec, "model_hub"));
    d.insert("model_revision".into(), from(spec, "model_revision"));
    match plan.model_type {
        ModelType::Embedding => {
            d.insert("dimensions".into(), from(family, "dimensions"));
            d.insert("max_tokens".into(), from(family, "max_tokens"));
            d.insert("language".into(), from(family, "language"));
            d.insert("model_ability".into(), json!(["embed"]));
        }
        ModelType::Rerank => {
            d.insert("type".into(), from(family, "type"));
            d.insert("max_tokens".into(), from(family, "max_tokens"));
            d.insert("language".into(), from(family, "language"));
            d.insert("model_ability".into(), json!(["rerank"]));
        }
        ModelType::Audio => {
            d.insert("model_family".into(), from(family, "model_family"));
            d.insert("model_ability".into(), json!(["audio2text"]));
            d.insert("multilingual".into(), from(family, "multilingual"));
        }
        ModelType::Llm => {
            for key in [
                "model_lang",
                "model_ability",
                "model_description",
                "context_length",
            ] {
                d.insert(key.into(), from(family, key));
            }
            d.insert(
                "model_family".into(),
                family
                    .get("model_family")
                    .cloned()
                    .unwrap_or(json!(plan.family.name)),
            );
            d.insert(
                "model_size_in_billions".into(),
                from(spec, "model_size_in_billions"),
            );
        }
    }
    d
}
