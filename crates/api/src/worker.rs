//! The supervisor's view of a worker: one trait, two implementations (in-process for
//! `xinference-local`, HTTP for cluster workers). Plain types only: no runtime, no candle.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::models::ModelType;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a worker needs to load one replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaSpec {
    /// `<model_uid>-<i>`.
    pub replica_uid: String,
    pub model_type: ModelType,
    pub model_name: String,
    /// A local model folder (or file, for GGUF).
    pub model_path: PathBuf,
    /// Engine options from the launch request (unknown launch keys).
    #[serde(default)]
    pub options: Map<String, Value>,
}

/// What the loaded replica turned out to be.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub dimensions: Option<usize>,
    pub max_tokens: Option<usize>,
}

/// Why a worker call failed; the supervisor maps each kind to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerErrorKind {
    /// The model files or launch options are wrong (400).
    InvalidModel,
    /// The request cannot be served as sent (400).
    InvalidInput,
    /// No such replica, or it was terminated meanwhile (404).
    NotFound,
    /// The replica's queue is full (503 with Retry-After).
    Busy,
    /// The launch was cancelled (499).
    Cancelled,
    /// Our fault (500).
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerError {
    pub kind: WorkerErrorKind,
    pub message: String,
}

impl WorkerError {
    pub fn new(kind: WorkerErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WorkerError {}

/// One input of an embedding request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub inputs: Vec<EmbedInput>,
    /// Cut over-long inputs at the model's limit (upstream's behaviour) instead of refusing them.
    pub truncate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedResponse {
    pub embeddings: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankRequest {
    pub query: String,
    pub documents: Vec<String>,
    pub truncate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankResponse {
    /// One relevance score per document, in request order.
    pub scores: Vec<f32>,
    pub input_tokens: usize,
}

/// A worker as the supervisor drives it.
pub trait Worker: Send + Sync + 'static {
    /// `host:port` the worker is known by.
    fn address(&self) -> String;
    /// Loads a replica; resolves when it is ready to serve (or failed, or was cancelled).
    fn launch(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaInfo, WorkerError>>;
    /// Stops a replica (cancelling it if still loading) and frees its memory.
    fn terminate(&self, replica_uid: String) -> BoxFuture<'_, Result<(), WorkerError>>;
    /// Loading progress in [0, 1]; `None` for an unknown replica.
    fn progress(&self, replica_uid: &str) -> Option<f32>;
    fn embed(
        &self,
        replica_uid: String,
        request: EmbedRequest,
    ) -> BoxFuture<'_, Result<EmbedResponse, WorkerError>>;
    fn rerank(
        &self,
        replica_uid: String,
        request: RerankRequest,
    ) -> BoxFuture<'_, Result<RerankResponse, WorkerError>>;
}
