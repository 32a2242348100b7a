//! OpenAI-shaped inference routes. Each resolves `model` (a uid) first: unknown uids are 404,
//! models still loading 503 with `Retry-After`.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use xi_api::models::ModelType;
use xi_api::worker::{EmbedInput, EmbedRequest, RerankRequest};

use crate::authz::{Caller, ModelsRead, Require};
use crate::error::{ModelLookup, SupervisorError};
use crate::lifecycle::ModelEntry;
use crate::state::AppState;
use crate::usage::Meter;

/// Inputs accepted in one embeddings request.
const MAX_INPUTS: usize = 2048;
/// Documents accepted in one rerank request.
const MAX_DOCUMENTS: usize = 1024;

fn bad(message: impl Into<String>) -> SupervisorError {
    SupervisorError::BadRequest(message.into())
}

/// The model a request names, ready to serve and of the right type.
/// A model the caller may not use (an api key with a model list) does not exist for it: 404.
pub(super) fn resolve(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    wanted: ModelType,
    ability: &str,
) -> Result<Arc<ModelEntry>, SupervisorError> {
    let uid = body.get("model").and_then(Value::as_str).ok_or_else(|| {
        SupervisorError::Unprocessable("Field required: model (the model uid)".into())
    })?;
    if let Some(entry) = state.cluster.model(uid) {
        if !caller.may_use_model(&entry.uid, entry.model_type.as_str()) {
            return Err(SupervisorError::model_not_found(
                uid,
                ModelLookup::Inference,
            ));
        }
    }
    state.cluster.serving(uid, wanted, ability)
}

/// `POST /v1/embeddings` body: OpenAI's.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct EmbeddingsBody {
    /// The uid of a running embedding model.
    #[allow(dead_code)]
    model: String,
    /// A string, a list of strings, a list of token ids or a list of lists of token ids.
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// Beyond upstream: `false` refuses over-long inputs instead of cutting them.
    #[serde(default)]
    truncate: Option<bool>,
}

/// An embeddings body checked: the body, the worker's request and whether the answer is
/// base64. (The `dimensions` it asks for is checked against the model by the handler.)
pub(crate) fn embeddings_request(
    body: Value,
) -> Result<(EmbeddingsBody, EmbedRequest, bool), SupervisorError> {
    let request: EmbeddingsBody = serde_json::from_value(body)
        .map_err(|e| SupervisorError::Unprocessable(format!("Invalid embeddings request: {e}")))?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad(format!(
                "encoding_format must be \"float\" or \"base64\", got {other:?}"
            )))
        }
    };
    let embed = EmbedRequest {
        inputs: embed_inputs(&request.input)?,
        truncate: request.truncate.unwrap_or(true),
    };
    Ok((request, embed, base64))
}

fn embed_inputs(input: &Value) -> Result<Vec<EmbedInput>, SupervisorError> {
    let shape = "input must be a string, a list of strings, a list of token ids or a list of lists of token ids";
    let token_ids = |list: &[Value]| -> Option<Vec<u32>> {
        list.iter()
            .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    };
    let inputs = match input {
        Value::String(text) => vec![EmbedInput::Text(text.clone())],
        Value::Array(items) if items.is_empty() => return Err(bad("input must not be empty")),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|v| EmbedInput::Text(v.as_str().unwrap_or_default().to_string()))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![EmbedInput::Tokens(token_ids(items).ok_or_else(|| {
                bad("token ids must be non-negative integers")
            })?)]
        }
        Value::Array(items) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|v| {
                let ids = v.as_array().map(|l| token_ids(l)).unwrap_or_default();
                match ids {
                    Some(ids) if !ids.is_empty() => Ok(EmbedInput::Tokens(ids)),
                    _ => Err(bad(
                        "each list of token ids must be non-empty non-negative integers",
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad(shape)),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(bad(format!(
            "at most {MAX_INPUTS} inputs per request, got {}",
            inputs.len()
        )));
    }
    Ok(inputs)
}

#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "inference",
    summary = "Embeddings (OpenAI's API)",
    request_body = EmbeddingsBody,
    responses(
        (status = 200, description = "OpenAI's embeddings list", body = Object),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
        (status = 503, description = "The model is still loading (`Retry-After`)", body = xi_api::ErrorBody),
    )
)]
pub async fn embeddings(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = resolve(
        &state,
        &require.caller,
        &body,
        ModelType::Embedding,
        "embeddings",
    )?;
    let (request, embed, base64) = embeddings_request(body.into_inner())?;
    let dimensions = entry
        .snapshot()
        .description
        .get("dimensions")
        .and_then(Value::as_u64);
    if let (Some(asked), Some(has)) = (request.dimensions, dimensions) {
        if asked as u64 != has {
            return Err(bad(format!(
                "Model {} makes {has}-dimensional embeddings; dimensions={asked} is not supported",
                entry.uid
            )));
        }
    }
    let (replica, result) = state
        .cluster
        .dispatch(&entry, |replica, worker| {
            let embed = embed.clone();
            async move { worker.embed(replica, embed).await }
        })
        .await?;
    let data: Vec<Value> = result
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "index": index, "object": "embedding", "embedding": embedding })
        })
        .collect();
    Meter::of(&state, &require.caller).record(result.prompt_tokens, 0);
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "model": entry.uid,
        "model_replica": replica,
        "data": data,
        "usage": { "prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens },
    })))
}

/// `POST /v1/rerank` body: upstream's (Cohere's shape).
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct RerankBody {
    /// The uid of a running rerank model.
    #[allow(dead_code)]
    model: String,
    query: String,
    documents: Vec<String>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: Option<bool>,
    #[serde(default)]
    return_len: Option<bool>,
    #[serde(default)]
    truncate: Option<bool>,
}

#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "inference",
    summary = "Rerank documents for a query",
    request_body = RerankBody,
    responses(
        (status = 200, description = "Documents by relevance (upstream's and Cohere's shape)", body = Object),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
        (status = 503, description = "The model is still loading (`Retry-After`)", body = xi_api::ErrorBody),
    )
)]
pub async fn rerank(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = resolve(&state, &require.caller, &body, ModelType::Rerank, "rerank")?;
    let (request, rerank) = rerank_request(body.into_inner())?;
    let (_, result) = state
        .cluster
        .dispatch(&entry, |replica, worker| {
            let rerank = rerank.clone();
            async move { worker.rerank(replica, rerank).await }
        })
        .await?;
    let mut order: Vec<usize> = (0..result.scores.len()).collect();
    order.sort_by(|a, b| result.scores[*b].total_cmp(&result.scores[*a]));
    let top_n = request.top_n.unwrap_or(order.len()).min(order.len());
    let return_documents = request.return_documents.unwrap_or(false);
    let results: Vec<Value> = order[..top_n]
        .iter()
        .map(|i| {
            let document = if return_documents {
                json!({ "text": request.documents[*i] })
            } else {
                Value::Null
            };
            json!({ "index": i, "relevance_score": result.scores[*i], "document": document })
        })
        .collect();
    let tokens = if request.return_len.unwrap_or(false) {
        json!({ "input_tokens": result.input_tokens, "output_tokens": result.input_tokens })
    } else {
        Value::Null
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": format!("{:032x}", rand::random::<u128>()),
        "results": results,
        "meta": { "api_version": null, "billed_units": null, "tokens": tokens, "warnings": null },
    })))
}

/// A rerank body checked: the body and the worker's request.
pub(crate) fn rerank_request(body: Value) -> Result<(RerankBody, RerankRequest), SupervisorError> {
    let request: RerankBody = serde_json::from_value(body)
        .map_err(|e| SupervisorError::Unprocessable(format!("Invalid rerank request: {e}")))?;
    if request.documents.is_empty() {
        return Err(bad("documents must not be empty"));
    }
    if request.documents.len() > MAX_DOCUMENTS {
        return Err(bad(format!(
            "at most {MAX_DOCUMENTS} documents per request, got {}",
            request.documents.len()
        )));
    }
    let rerank = RerankRequest {
        query: request.query.clone(),
        documents: request.documents.clone(),
        truncate: request.truncate.unwrap_or(true),
    };
    Ok((request, rerank))
}
