//! Model shapes: types, launch requests, registrations, instances.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// The model types xinference-rs serves. Path values are case-sensitive, as upstream:
/// `LLM` upper-case, the others lower-case.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum ModelType {
    #[serde(rename = "LLM")]
    Llm,
    #[serde(rename = "embedding")]
    Embedding,
    #[serde(rename = "rerank")]
    Rerank,
    /// Speech-to-text (Whisper), upstream's `audio` type.
    #[serde(rename = "audio")]
    Audio,
}

impl ModelType {
    pub const ALL: [ModelType; 4] = [
        ModelType::Llm,
        ModelType::Embedding,
        ModelType::Rerank,
        ModelType::Audio,
    ];

    /// The value used in URLs and request bodies.
    pub const fn as_str(self) -> &'static str {
        match self {
            ModelType::Llm => "LLM",
            ModelType::Embedding => "embedding",
            ModelType::Rerank => "rerank",
            ModelType::Audio => "audio",
        }
    }

    /// The lower-case folder name under `$XINFERENCE_HOME/model/v2/`.
    pub const fn dir_name(self) -> &'static str {
        match self {
            ModelType::Llm => "llm",
            ModelType::Embedding => "embedding",
            ModelType::Rerank => "rerank",
            ModelType::Audio => "audio",
        }
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match ModelType::ALL.into_iter().find(|t| t.as_str() == s) {
            Some(t) => Ok(t),
            None => Err(format!(
                "Model type {s:?} is not supported; supported types: LLM, embedding, rerank, audio"
            )),
        }
    }
}

/// `POST /v1/models` body (upstream section 4). Unknown keys are kept in `extra` and passed to
/// the engine as launch options. Absent fields are left out when it is sent (upstream reads
/// some of them with a default that a `null` would not get).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LaunchModelRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_format: Option<String>,
    /// An int, or a string such as `"0_5"` for fractional sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_size_in_billions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<i64>,
    /// An int, `"auto"` or null (CPU only). Absent is `None` (upstream's default, `"auto"`); an
    /// explicit null is `Some(Value::Null)`.
    #[serde(
        default,
        deserialize_with = "keep_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub n_gpu: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_worker: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_limits: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_idx: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_hub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Reads an explicit `null` as `Some(Value::Null)` (plain `Option` reads it as absent).
fn keep_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `POST /v1/models` success body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelUidResponse {
    pub model_uid: String,
}

/// `POST /v1/model_registrations/{type}` body. `model` is the model definition as a JSON
/// *string* (double-encoded, as upstream).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterModelRequest {
    pub model: String,
    #[serde(default)]
    pub worker_ip: Option<String>,
    #[serde(default)]
    pub persist: bool,
}

/// Launch status of a model instance or replica (upstream `status_guard.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum LaunchStatus {
    Creating,
    Updating,
    Terminating,
    Terminated,
    Ready,
    Error,
    Loading,
}
