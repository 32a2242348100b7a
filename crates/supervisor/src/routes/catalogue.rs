//! Catalogue views: `/v1/models/families`, `/v1/models/prompts`, `/v1/engines/...`.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use xi_api::models::ModelType;

use super::registrations::{family_of, not_found};
use crate::authz::{ModelsList, Require};
use crate::error::SupervisorError;
use crate::registry::Family;
use crate::state::AppState;

/// Our only engine.
pub const ENGINE: &str = "candle";

/// Built-in LLM family names by ability, in upstream's shape.
#[utoipa::path(
    get,
    path = "/v1/models/families",
    tag = "models",
    summary = "Built-in LLM families by ability",
    responses(
        (status = 200, description = "Built-in LLM family names by ability", body = Object),
    )
)]
pub async fn families(state: web::Data<AppState>) -> HttpResponse {
    let keys = [
        "chat",
        "generate",
        "tools",
        "vision",
        "reasoning",
        "audio",
        "omni",
        "hybrid",
    ];
    let mut by_ability: BTreeMap<&str, Vec<String>> =
        keys.iter().map(|k| (*k, Vec::new())).collect();
    for family in state
        .cluster
        .registry()
        .builtin()
        .iter()
        .filter(|f| f.model_type == ModelType::Llm)
    {
        for ability in family.abilities() {
            if let Some(names) = by_ability.get_mut(ability) {
                names.push(family.name.clone());
            }
        }
    }
    HttpResponse::Ok().json(by_ability)
}

/// Built-in chat templates by family name.
#[utoipa::path(
    get,
    path = "/v1/models/prompts",
    tag = "models",
    summary = "Built-in chat templates",
    responses(
        (status = 200, description = "Built-in chat templates by family name", body = Object),
    )
)]
pub async fn prompts(state: web::Data<AppState>) -> HttpResponse {
    let mut prompts = Map::new();
    for family in state
        .cluster
        .registry()
        .builtin()
        .iter()
        .filter(|f| f.model_type == ModelType::Llm)
    {
        if let Some(template) = family.body.get("chat_template") {
            prompts.insert(
                family.name.clone(),
                json!({
                    "chat_template": template,
                    "stop_token_ids": family.body.get("stop_token_ids").cloned().unwrap_or(json!([])),
                    "stop": family.body.get("stop").cloned().unwrap_or(json!([])),
                }),
            );
        }
    }
    HttpResponse::Ok().json(prompts)
}

#[utoipa::path(
    get,
    path = "/v1/engines/{model_name}",
    tag = "models",
    summary = "How a family can be launched, by engine",
    params(("model_name" = String, Path, description = "A family name")),
    responses(
        (status = 200, description = "The launch parameters of each engine that runs the family", body = Object),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
    )
)]
pub async fn engines(
    _: Require<ModelsList>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let name = path.into_inner();
    let family = state
        .cluster
        .registry()
        .find_any(&name)
        .ok_or_else(|| not_found(&name))?;
    Ok(HttpResponse::Ok().json(engine_matrix(&family)))
}

#[utoipa::path(
    get,
    path = "/v1/engines/{model_type}/{model_name}",
    tag = "models",
    summary = "How a family of a type can be launched, by engine",
    params(
        ("model_type" = String, Path, description = "`LLM`, `embedding`, `rerank` or `audio`"),
        ("model_name" = String, Path, description = "A family name"),
    ),
    responses(
        (status = 200, description = "The launch parameters of each engine that runs the family", body = Object),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
    )
)]
pub async fn engines_by_type(
    _: Require<ModelsList>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, SupervisorError> {
    let (raw_type, name) = path.into_inner();
    let family = family_of(&state, &raw_type, &name)?;
    Ok(HttpResponse::Ok().json(engine_matrix(&family)))
}

/// `{"candle": [{model_name, model_format, model_size_in_billions, quantizations}]}`: one entry
/// per (format, size), quantizations merged.
fn engine_matrix(family: &Family) -> Value {
    let mut entries: Vec<Map<String, Value>> = Vec::new();
    for spec in family.specs() {
        let format = spec
            .get("model_format")
            .cloned()
            .unwrap_or(json!("pytorch"));
        let size = spec
            .get("model_size_in_billions")
            .cloned()
            .unwrap_or(Value::Null);
        let quantization = spec.get("quantization").cloned().unwrap_or(json!("none"));
        let existing = entries
            .iter_mut()
            .find(|e| e["model_format"] == format && e["model_size_in_billions"] == size);
        match existing {
            Some(entry) => {
                if let Some(list) = entry.get_mut("quantizations").and_then(Value::as_array_mut) {
                    if !list.contains(&quantization) {
                        list.push(quantization);
                    }
                }
            }
            None => {
                let mut entry = Map::new();
                entry.insert("model_name".into(), json!(family.name));
                entry.insert("model_format".into(), format);
                entry.insert("model_size_in_billions".into(), size);
                entry.insert("quantizations".into(), json!([quantization]));
                entries.push(entry);
            }
        }
    }
    json!({ ENGINE: entries })
}
