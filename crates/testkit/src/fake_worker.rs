//! [`FakeWorker`]: an in-process implementation of the supervisor's [`Worker`] trait without
//! model weights, so the supervisor's dispatch, streaming, failover and error mapping can be
//! tested in-process. Launches succeed or fail as scripted; embeddings and rerank scores are
//! deterministic functions of the input ([`embedding_of`], [`score_of`]); generations stream
//! scripted [`GenerateEvent`]s; the worker can be told to fail every call with a
//! [`WorkerErrorKind`] or to be unreachable (as a dead remote worker is).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use xi_api::audio::{
    TranscribeEvent, TranscribeRequest, TranscribeStream, TranscriptSegment, TranscriptSummary,
};
use xi_api::cluster::WorkerResources;
use xi_api::worker::{
    BoxFuture, EmbedInput, EmbedRequest, EmbedResponse, EventStream, GenerateEvent,
    GenerateRequest, GenerateSummary, ReplicaInfo, ReplicaSpec, RerankRequest, RerankResponse,
    Worker, WorkerError, WorkerErrorKind,
};

/// Dimensions of the fake embeddings.
pub const DIMENSIONS: usize = 4;

/// Free memory the fake worker reports: enough for any launch's estimate.
const MEMORY: u64 = 1 << 40;

/// One call the worker served (or refused), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `launch`, `terminate`, `embed`, `rerank` or `generate`.
    pub op: &'static str,
    pub replica_uid: String,
}

#[derive(Default)]
struct Script {
    /// Loaded replicas.
    replicas: BTreeMap<String, ReplicaSpec>,
    /// Every launch fails with this.
    launch_error: Option<WorkerError>,
    /// Every embed, rerank and generate call fails with this.
    call_error: Option<WorkerError>,
    /// Every call fails as `Unreachable`.
    unreachable: bool,
    /// What a generation streams; `None`: [`FakeWorker::default_generation`].
    generation: Option<Vec<GenerateEvent>>,
    calls: Vec<Call>,
    /// The request of the latest generation.
    last_generate: Option<GenerateRequest>,
}

/// A worker that runs no model; see the module docs.
pub struct FakeWorker {
    address: String,
    script: Mutex<Script>,
}

impl FakeWorker {
    /// A healthy worker known as `address` (`host:port`).
    pub fn new(address: &str) -> Arc<FakeWorker> {
        Arc::new(FakeWorker {
            address: address.to_string(),
            script: Mutex::new(Script::default()),
        })
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every later launch fails with `kind` and `message` (`None`: launches succeed again).
    pub fn fail_launches(&self, failure: Option<(WorkerErrorKind, &str)>) {
        self.script().launch_error = failure.map(|(kind, m)| WorkerError::new(kind, m));
    }

    /// Every later embed, rerank and generate call fails with `kind` and `message` (`None`:
    /// they succeed again).
    pub fn fail_calls(&self, failure: Option<(WorkerErrorKind, &str)>) {
        self.script().call_error = failure.map(|(kind, m)| WorkerError::new(kind, m));
    }

    /// Whether every call fails as `Unreachable` (a worker that is gone).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.script().unreachable = unreachable;
    }

    /// What later generations stream, in order.
    pub fn script_generation(&self, events: Vec<GenerateEvent>) {
        self.script().generation = Some(events);
    }

    /// The generation streamed when none is scripted: `"Hello"`, `" world"`, then `stop`.
    pub fn default_generation() -> Vec<GenerateEvent> {
        vec![
            GenerateEvent::Text("Hello".into()),
            GenerateEvent::Text(" world".into()),
            GenerateEvent::Done(GenerateSummary {
                prompt_tokens: 3,
                completion_tokens: 2,
                finish_reason: "stop".into(),
            }),
        ]
    }

    /// The calls served so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.script().calls.clone()
    }

    /// How many calls of `op` this worker got.
    pub fn count(&self, op: &str) -> usize {
        self.script().calls.iter().filter(|c| c.op == op).count()
    }

    /// The request of the latest generation this worker started.
    pub fn last_generate_request(&self) -> Option<GenerateRequest> {
        self.script().last_generate.clone()
    }

    /// The uids of the replicas loaded now.
    pub fn replicas(&self) -> Vec<String> {
        self.script().replicas.keys().cloned().collect()
    }

    /// The spec a loaded replica was launched with.
    pub fn spec(&self, replica_uid: &str) -> Option<ReplicaSpec> {
        self.script().replicas.get(replica_uid).cloned()
    }

    /// Records the call, then answers what the script says about serving it: the
    /// unreachable or scripted failure, `NotFound` for a replica that is not loaded.
    fn begin(&self, op: &'static str, replica_uid: &str) -> Result<(), WorkerError> {
        let mut script = self.script();
        script.calls.push(Call {
            op,
            replica_uid: replica_uid.to_string(),
        });
        if script.unreachable {
            return Err(self.unreachable_error());
        }
        if let Some(e) = &script.call_error {
            return Err(e.clone());
        }
        if !script.replicas.contains_key(replica_uid) {
            return Err(WorkerError::new(
                WorkerErrorKind::NotFound,
                format!("Replica {replica_uid} not found"),
            ));
        }
        Ok(())
    }

    fn unreachable_error(&self) -> WorkerError {
        WorkerError::new(
            WorkerErrorKind::Unreachable,
            format!("Worker {} is unreachable", self.address),
        )
    }
}

/// The fake embedding of a text: [`DIMENSIONS`] numbers from its bytes, the same every time.
pub fn embedding_of(text: &str) -> Vec<f32> {
    let bytes = text.as_bytes();
    let sum: u32 = bytes.iter().map(|b| u32::from(*b)).sum();
    vec![
        bytes.len() as f32,
        (sum % 97) as f32,
        f32::from(bytes.first().copied().unwrap_or(0)),
        f32::from(bytes.last().copied().unwrap_or(0)),
    ]
}

/// The fake relevance of a document to a query: the fraction of the query's words it
/// contains.
pub fn score_of(query: &str, document: &str) -> f32 {
    let words: Vec<&str> = query.split_whitespace().collect();
    if words.is_empty() {
        return 0.0;
    }
    let hits = words.iter().filter(|w| document.contains(**w)).count();
    hits as f32 / words.len() as f32
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

impl Worker for FakeWorker {
    fn address(&self) -> String {
        self.address.clone()
    }

    fn launch(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaInfo, WorkerError>> {
        let result = {
            let mut script = self.script();
            script.calls.push(Call {
                op: "launch",
                replica_uid: spec.replica_uid.clone(),
            });
            if script.unreachable {
                Err(self.unreachable_error())
            } else if let Some(e) = &script.launch_error {
                Err(e.clone())
            } else {
                script.replicas.insert(spec.replica_uid.clone(), spec);
                Ok(ReplicaInfo {
                    dimensions: Some(DIMENSIONS),
                    max_tokens: Some(512),
                })
            }
        };
        Box::pin(async move { result })
    }

    fn terminate(&self, replica_uid: String) -> BoxFuture<'_, Result<(), WorkerError>> {
        let result = {
            let mut script = self.script();
            script.calls.push(Call {
                op: "terminate",
                replica_uid: replica_uid.clone(),
            });
            if script.unreachable {
                Err(self.unreachable_error())
            } else if script.replicas.remove(&replica_uid).is_none() {
                Err(WorkerError::new(
                    WorkerErrorKind::NotFound,
                    format!("Replica {replica_uid} not found"),
                ))
            } else {
                Ok(())
            }
        };
        Box::pin(async move { result })
    }

    fn resources(&self) -> WorkerResources {
        WorkerResources {
            cpu_count: 2,
            cpu_usage: 0.0,
            memory_total: MEMORY,
            memory_available: MEMORY,
            memory_used: 0,
            gpus: Vec::new(),
        }
    }

    fn progress(&self, replica_uid: String) -> BoxFuture<'_, Option<f32>> {
        let script = self.script();
        let known = !script.unreachable && script.replicas.contains_key(&replica_uid);
        drop(script);
        Box::pin(async move { known.then_some(1.0) })
    }

    fn embed(
        &self,
        replica_uid: String,
        request: EmbedRequest,
    ) -> BoxFuture<'_, Result<EmbedResponse, WorkerError>> {
        let result = self.begin("embed", &replica_uid).map(|()| {
            let mut prompt_tokens = 0;
            let embeddings = request
                .inputs
                .iter()
                .map(|input| match input {
                    EmbedInput::Text(text) => {
                        prompt_tokens += words(text);
                        embedding_of(text)
                    }
                    EmbedInput::Tokens(ids) => {
                        prompt_tokens += ids.len();
                        let text: String = ids.iter().map(|id| format!("{id} ")).collect();
                        embedding_of(text.trim_end())
                    }
                })
                .collect();
            EmbedResponse {
                embeddings,
                prompt_tokens,
            }
        });
        Box::pin(async move { result })
    }

    fn rerank(
        &self,
        replica_uid: String,
        request: RerankRequest,
    ) -> BoxFuture<'_, Result<RerankResponse, WorkerError>> {
        let result = self.begin("rerank", &replica_uid).map(|()| RerankResponse {
            scores: request
                .documents
                .iter()
                .map(|d| score_of(&request.query, d))
                .collect(),
            input_tokens: words(&request.query)
                + request.documents.iter().map(|d| words(d)).sum::<usize>(),
        });
        Box::pin(async move { result })
    }

    fn generate(
        &self,
        replica_uid: String,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<EventStream, WorkerError>> {
        let result = self.begin("generate", &replica_uid).map(|()| {
            let events = self
                .script()
                .generation
                .clone()
                .unwrap_or_else(FakeWorker::default_generation);
            self.script().last_generate = Some(request);
            let stream: EventStream = Box::pin(futures_util::stream::iter(events));
            stream
        });
        Box::pin(async move { result })
    }

    /// A transcript that depends on the audio's bytes: one segment saying how many bytes came
    /// (so a test sees its upload arrived whole), the language asked for or "english".
    fn transcribe(
        &self,
        replica_uid: String,
        request: TranscribeRequest,
    ) -> BoxFuture<'_, Result<TranscribeStream, WorkerError>> {
        let result = self.begin("transcribe", &replica_uid).map(|()| {
            let text = format!("{} bytes of audio", request.audio.len());
            let events = vec![
                TranscribeEvent::Segment(TranscriptSegment {
                    id: 0,
                    seek: 0,
                    start: 0.0,
                    end: 1.5,
                    text: format!(" {text}"),
                    tokens: vec![1, 2, 3],
                    temperature: request.temperature,
                    avg_logprob: -0.25,
                    compression_ratio: 1.1,
                    no_speech_prob: 0.01,
                    words: Vec::new(),
                }),
                TranscribeEvent::Done(TranscriptSummary {
                    text,
                    language: request.language.unwrap_or_else(|| "english".into()),
                    duration: 1.5,
                }),
            ];
            let stream: TranscribeStream = Box::pin(futures_util::stream::iter(events));
            stream
        });
        Box::pin(async move { result })
    }
}
