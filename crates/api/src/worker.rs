//! The supervisor's view of a worker: one trait, two implementations (in-process for
//! `xinference-local`, HTTP for cluster workers). Plain types only: no runtime, no candle.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::launch::LaunchOptions;
use crate::models::ModelType;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a worker needs to load one replica.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaSpec {
    /// `<model_uid>-<i>`: a name only; read `model_uid` and `replica_index`, never parse it.
    pub replica_uid: String,
    /// The model this replica serves.
    pub model_uid: String,
    /// `i`: which replica of the launch this is (its `gpu_idx` share).
    pub replica_index: usize,
    pub model_type: ModelType,
    pub model_name: String,
    /// A local model folder (or file, for GGUF).
    #[schema(value_type = String)]
    pub model_path: PathBuf,
    /// The launch options, parsed and checked by the supervisor.
    #[serde(default)]
    pub options: LaunchOptions,
    /// Files to fetch from a model hub first (a launch that named no local files); the worker
    /// downloads them into its cache and loads from there.
    #[serde(default)]
    pub download: Option<HubDownload>,
    /// What the supervisor shows for the model (upstream's description fields), kept by the
    /// worker so a restarted supervisor can list the model again.
    #[serde(default)]
    pub description: Map<String, Value>,
}

/// Model files on a hub (Hugging Face's URL layout, at `HF_ENDPOINT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubDownload {
    /// `owner/name`.
    pub repo: String,
    pub revision: String,
    /// One file (a GGUF model); `None` for the files a Hugging Face model folder needs.
    pub file: Option<String>,
    /// The folder under `<XINFERENCE_HOME>/cache/v2/` (upstream's naming).
    pub cache_name: String,
}

/// What the loaded replica turned out to be.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaInfo {
    pub dimensions: Option<usize>,
    pub max_tokens: Option<usize>,
}

/// Why a worker call failed; the supervisor maps each kind to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum WorkerErrorKind {
    /// The model files or launch options are wrong (400).
    InvalidModel,
    /// The request cannot be served as sent (400).
    InvalidInput,
    /// The request's input is over a limit (audio longer than the longest accepted): 413.
    TooLarge,
    /// No such replica, or it was terminated meanwhile (404).
    NotFound,
    /// The replica's queue is full (503 with Retry-After).
    Busy,
    /// Something the model needs is unreachable or failed (a hub download): 503.
    Unavailable,
    /// The worker itself cannot be reached (gone, or declared dead): 503. The request may be
    /// tried on another replica.
    Unreachable,
    /// The launch was cancelled (499).
    Cancelled,
    /// Our fault (500).
    Internal,
}

impl WorkerErrorKind {
    /// Every kind, for tables and their tests.
    pub const ALL: [WorkerErrorKind; 9] = [
        WorkerErrorKind::InvalidModel,
        WorkerErrorKind::InvalidInput,
        WorkerErrorKind::TooLarge,
        WorkerErrorKind::NotFound,
        WorkerErrorKind::Busy,
        WorkerErrorKind::Unavailable,
        WorkerErrorKind::Unreachable,
        WorkerErrorKind::Cancelled,
        WorkerErrorKind::Internal,
    ];

    /// The HTTP status of this kind on the worker's internal API: the one table, used by the
    /// worker to answer and (in reverse, [`WorkerErrorKind::from_status`]) by the supervisor
    /// when an answer carries no [`WorkerError`] body. The supervisor's public statuses come
    /// from its own table (its `From<WorkerError>`), which agrees with this one.
    pub fn status(self) -> u16 {
        match self {
            WorkerErrorKind::InvalidModel | WorkerErrorKind::InvalidInput => 400,
            WorkerErrorKind::TooLarge => 413,
            WorkerErrorKind::NotFound => 404,
            WorkerErrorKind::Busy | WorkerErrorKind::Unavailable | WorkerErrorKind::Unreachable => {
                503
            }
            WorkerErrorKind::Cancelled => 499,
            WorkerErrorKind::Internal => 500,
        }
    }

    /// The kind of a failed answer whose body is not a [`WorkerError`] (the worker's
    /// cluster-secret check, an unknown route, a proxy in between). Only a refused cluster
    /// secret means something: the worker cannot be used, so the call may go to another
    /// replica. Anything else is a fault between us and the worker.
    pub fn from_status(status: u16) -> WorkerErrorKind {
        match status {
            401 => WorkerErrorKind::Unreachable,
            _ => WorkerErrorKind::Internal,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbedRequest {
    pub inputs: Vec<EmbedInput>,
    /// Cut over-long inputs at the model's limit (upstream's behaviour) instead of refusing them.
    pub truncate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbedResponse {
    pub embeddings: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RerankRequest {
    pub query: String,
    pub documents: Vec<String>,
    pub truncate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// CPU, memory and GPUs (as last reported, for a remote worker).
    fn resources(&self) -> crate::cluster::WorkerResources;
    /// Loading progress in [0, 1]; `None` for an unknown replica (or an unreachable worker).
    fn progress(&self, replica_uid: String) -> BoxFuture<'_, Option<f32>>;
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
    /// Starts a transcription (or translation) of an audio file; the stream yields segments
    /// as they are decoded and ends after `Done` or `Error`. Dropping it stops the work.
    fn transcribe(
        &self,
        replica_uid: String,
        request: crate::audio::TranscribeRequest,
    ) -> BoxFuture<'_, Result<crate::audio::TranscribeStream, WorkerError>>;
    /// Starts a generation; the stream ends after `Done` or `Error`. Dropping the stream stops
    /// the generation (within one token).
    fn generate(
        &self,
        replica_uid: String,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<EventStream, WorkerError>>;
}

/// A chat message of a generation request, as a chat template sees it (Hugging Face's
/// convention): fields a message does not have are left out, so templates that test
/// `message.tool_calls is defined` work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatTurn {
    pub role: String,
    /// Text (an assistant message that only calls tools has none: empty).
    pub content: String,
    /// The calls of an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<TurnToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The function a `tool` message answers for (optional in OpenAI's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatTurn {
    /// A message with text only.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// A call in an assistant message of the history: `{"id", "type": "function", "function":
/// {"name", "arguments"}}`, with `arguments` as a JSON value (templates write it with
/// `tojson`; OpenAI clients send it as a string, which the supervisor parses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TurnToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: TurnFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TurnFunction {
    pub name: String,
    pub arguments: Value,
}

/// What to generate from: a chat (rendered with the model's template) or a raw prompt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Prompt {
    Chat(Vec<ChatTurn>),
    Text(String),
}

pub use crate::generation::Sampling;
pub use crate::tools::{ToolCall, Tools};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub sampling: Sampling,
    /// The tools a chat offers (never with a text prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Tools>,
    /// Extra variables for the chat template (`chat_template_kwargs`, e.g. Qwen3's
    /// `enable_thinking`); they never replace the template's own (`messages`, `tools`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template_kwargs: Option<Map<String, Value>>,
}

/// The end of a generation.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GenerateSummary {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: String,
}

/// What a generation stream yields: text and tool calls as they become final, then a summary
/// or an error.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub enum GenerateEvent {
    Text(String),
    /// Reasoning text (between the model's reasoning tags, with a launch that splits it out):
    /// chat's `reasoning_content`.
    Reasoning(String),
    /// A complete tool call, parsed out of the model's answer (its markup is not in the text).
    ToolCall(ToolCall),
    /// The events that follow, up to the next `Choice`, are choice `i`'s (a request with
    /// `n` > 1; without one, every event is choice 0's). Each choice ends with its own `Done`.
    Choice(usize),
    /// The log probabilities of tokens just generated (with `logprobs` asked for), sent before
    /// the text they make, which may come later (text is let out once it is final).
    Logprobs(Vec<TokenLogprob>),
    Done(GenerateSummary),
    Error(WorkerError),
}

/// One generated token and how likely the model found it (OpenAI's `logprobs` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenLogprob {
    /// The token's text (its bytes as UTF-8, lossily: a token can end mid-character).
    pub token: String,
    pub bytes: Vec<u8>,
    /// Natural log of its probability under the model (before sampling's adjustments).
    pub logprob: f32,
    /// The most likely tokens at this position, most likely first.
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative at one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// Events of one generation; dropping it stops the generation.
pub type EventStream = std::pin::Pin<Box<dyn futures_core::Stream<Item = GenerateEvent> + Send>>;

/// One GPU of a worker, as it reports it (`/status`, `/v1/cluster/info`) and placement reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GpuInfo {
    /// The CUDA device ordinal (after `CUDA_VISIBLE_DEVICES`): what `gpu_idx` names.
    pub index: usize,
    /// The device name, e.g. `NVIDIA H200`.
    pub name: String,
    /// Bytes of device memory.
    pub memory_total: u64,
    /// Bytes in use by every process on the device.
    pub memory_used: u64,
}
