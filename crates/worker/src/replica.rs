//! One replica: a model on its own thread, a bounded queue, dynamic batching.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc as mpsc_events;
use tokio::sync::oneshot;
use xi_api::models::ModelType;
use xi_api::worker::{
    EmbedInput, EmbedRequest, EmbedResponse, GenerateEvent, GenerateRequest, GenerateSummary,
    Prompt, ReplicaInfo, ReplicaSpec, RerankRequest, RerankResponse, WorkerError, WorkerErrorKind,
};
use xi_engine::candle_quantized::GgmlDType;
use xi_engine::embedding::EmbedInput as EngineInput;
use xi_engine::llm::{ChatMessage, GenerationParams, LlmModel};
use xi_engine::{CrossEncoder, Embed, EmbeddingModel, Encoded, EngineError, Rerank};

/// A request and the channel its answer goes back on.
pub enum Job {
    Embed(
        EmbedRequest,
        oneshot::Sender<Result<EmbedResponse, WorkerError>>,
    ),
    Rerank(
        RerankRequest,
        oneshot::Sender<Result<RerankResponse, WorkerError>>,
    ),
    /// Events go out as they happen; a closed channel (client gone) stops the generation.
    Generate(GenerateRequest, mpsc_events::Sender<GenerateEvent>),
}

enum Loaded {
    Embedding(Box<dyn Embed>),
    Rerank(Box<dyn Rerank>),
    Llm(Box<LlmModel>),
}

/// Shared between the replica thread and the worker.
pub struct ReplicaShared {
    /// Loading progress as f32 bits.
    progress: AtomicU32,
    /// Set by terminate/cancel: loading stops at the next step; queued jobs are refused.
    pub stop: AtomicBool,
}

impl ReplicaShared {
    pub fn progress(&self) -> f32 {
        f32::from_bits(self.progress.load(Ordering::Relaxed))
    }

    fn set_progress(&self, value: f32) {
        self.progress.store(value.to_bits(), Ordering::Relaxed);
    }
}

pub struct Replica {
    pub uid: String,
    pub shared: Arc<ReplicaShared>,
    sender: SyncSender<Job>,
    thread: Option<JoinHandle<()>>,
}

/// Options a replica takes from the launch request.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaOptions {
    pub queue_capacity: usize,
    /// Merge queued requests into one forward pass.
    pub batching: bool,
    /// Tokens gathered from the queue into one round before it runs.
    pub batch_tokens: usize,
}

fn engine_error(e: EngineError) -> WorkerError {
    let kind = if e.is_client_error() {
        WorkerErrorKind::InvalidInput
    } else {
        WorkerErrorKind::Internal
    };
    WorkerError::new(kind, e.to_string())
}

impl Replica {
    /// Starts the thread, which loads the model and then serves. `ready` gets the load result.
    pub fn spawn(
        spec: ReplicaSpec,
        options: ReplicaOptions,
        ready: oneshot::Sender<Result<ReplicaInfo, WorkerError>>,
    ) -> Result<Replica, WorkerError> {
        let shared = Arc::new(ReplicaShared {
            progress: AtomicU32::new(0f32.to_bits()),
            stop: AtomicBool::new(false),
        });
        let (sender, receiver) = mpsc::sync_channel(options.queue_capacity.max(1));
        let thread_shared = shared.clone();
        let uid = spec.replica_uid.clone();
        let thread = std::thread::Builder::new()
            .name(format!("model-{uid}"))
            .spawn(move || run(spec, options, thread_shared, receiver, ready))
            .map_err(|e| {
                WorkerError::new(
                    WorkerErrorKind::Internal,
                    format!("cannot start a model thread: {e}"),
                )
            })?;
        Ok(Replica {
            uid,
            shared,
            sender,
            thread: Some(thread),
        })
    }

    /// Queues a job; a full queue is refused at once.
    pub fn submit(&self, job: Job) -> Result<(), WorkerError> {
        match self.sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(WorkerError::new(
                WorkerErrorKind::Busy,
                format!(
                    "Model {} is busy: its request queue is full, retry shortly",
                    self.uid
                ),
            )),
            Err(TrySendError::Disconnected(_)) => Err(WorkerError::new(
                WorkerErrorKind::NotFound,
                format!("Model {} has stopped", self.uid),
            )),
        }
    }

    /// Stops the thread and waits for it, so the model's memory is freed on return.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take();
        drop(self); // closes the queue: the thread's recv() ends once the queue is drained
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn load(spec: &ReplicaSpec, shared: &ReplicaShared) -> Result<(Loaded, ReplicaInfo), WorkerError> {
    shared.set_progress(0.1);
    let invalid = |e: EngineError| {
        let kind = if e.is_client_error() {
            WorkerErrorKind::InvalidModel
        } else {
            WorkerErrorKind::Internal
        };
        WorkerError::new(kind, e.to_string())
    };
    let loaded = match spec.model_type {
        ModelType::Embedding => {
            let model = EmbeddingModel::load(&spec.model_path).map_err(invalid)?;
            let info = ReplicaInfo {
                dimensions: Some(model.dimensions()),
                max_tokens: Some(model.max_tokens()),
            };
            (Loaded::Embedding(Box::new(model)), info)
        }
        ModelType::Rerank => {
            let model = CrossEncoder::load(&spec.model_path).map_err(invalid)?;
            let info = ReplicaInfo {
                dimensions: None,
                max_tokens: Some(model.max_tokens()),
            };
            (Loaded::Rerank(Box::new(model)), info)
        }
        ModelType::Llm => {
            let file = gguf_file(&spec.model_path)?;
            let requantize = requantize_option(spec)?;
            let model = LlmModel::load_gguf(&file, None, requantize).map_err(invalid)?;
            let info = ReplicaInfo {
                dimensions: None,
                max_tokens: Some(model.context_length()),
            };
            (Loaded::Llm(Box::new(model)), info)
        }
    };
    shared.set_progress(1.0);
    Ok(loaded)
}

/// The GGUF file of an LLM launch: the path itself, or the one `.gguf` file in a folder.
fn gguf_file(path: &std::path::Path) -> Result<std::path::PathBuf, WorkerError> {
    let invalid = |m: String| WorkerError::new(WorkerErrorKind::InvalidModel, m);
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "gguf") {
            return Ok(path.to_path_buf());
        }
        return Err(invalid(format!(
            "{} is not a .gguf file; this build serves LLMs in the ggufv2 format only",
            path.display()
        )));
    }
    let found: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(invalid(format!(
            "{} holds no .gguf file (this build serves LLMs in the ggufv2 format only)",
            path.display()
        ))),
        _ => Err(invalid(format!(
            "{} holds several .gguf files; pass the file itself as model_path",
            path.display()
        ))),
    }
}

/// The `requantize` launch option: `Q8_0` (faster on CPU) or `F32` (exact), default none.
fn requantize_option(spec: &ReplicaSpec) -> Result<Option<GgmlDType>, WorkerError> {
    match spec.options.get("requantize").and_then(|v| v.as_str()) {
        None | Some("none") => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("q8_0") => Ok(Some(GgmlDType::Q8_0)),
        Some(v) if v.eq_ignore_ascii_case("f32") => Ok(Some(GgmlDType::F32)),
        Some(other) => Err(WorkerError::new(
            WorkerErrorKind::InvalidModel,
            format!("requantize must be \"Q8_0\", \"F32\" or \"none\", got {other:?}"),
        )),
    }
}

fn run(
    spec: ReplicaSpec,
    options: ReplicaOptions,
    shared: Arc<ReplicaShared>,
    receiver: Receiver<Job>,
    ready: oneshot::Sender<Result<ReplicaInfo, WorkerError>>,
) {
    let started = std::time::Instant::now();
    let result = load(&spec, &shared);
    if shared.stop.load(Ordering::SeqCst) {
        let _ = ready.send(Err(WorkerError::new(
            WorkerErrorKind::Cancelled,
            "Launch cancelled",
        )));
        return;
    }
    let mut model = match result {
        Ok((model, info)) => {
            tracing::info!(replica = %spec.replica_uid, secs = started.elapsed().as_secs_f32(), "replica ready");
            let _ = ready.send(Ok(info));
            model
        }
        Err(e) => {
            tracing::warn!(replica = %spec.replica_uid, error = %e, "replica failed to load");
            let _ = ready.send(Err(e));
            return;
        }
    };
    serve(&mut model, options, &shared, &receiver);
    tracing::info!(replica = %spec.replica_uid, "replica stopped");
}

fn serve(
    model: &mut Loaded,
    options: ReplicaOptions,
    shared: &ReplicaShared,
    receiver: &Receiver<Job>,
) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        if options.batching {
            // Everything that queued up while the last round ran joins this one, up to the budget.
            let mut tokens = 0usize;
            while tokens < options.batch_tokens {
                match receiver.try_recv() {
                    Ok(job) => {
                        tokens += estimate_tokens(&job);
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            refuse(jobs);
            continue;
        }
        match model {
            Loaded::Embedding(m) => embed_round(m.as_ref(), jobs),
            Loaded::Rerank(m) => rerank_round(m.as_ref(), jobs),
            Loaded::Llm(m) => {
                for job in jobs {
                    generate_job(m, job);
                }
            }
        }
    }
}

/// A cheap upper bound (one token per 3 bytes, plus specials) used only to size a round.
fn estimate_tokens(job: &Job) -> usize {
    match job {
        Job::Embed(r, _) => r
            .inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => t.len() / 3 + 2,
                EmbedInput::Tokens(ids) => ids.len(),
            })
            .sum(),
        Job::Rerank(r, _) => r
            .documents
            .iter()
            .map(|d| (d.len() + r.query.len()) / 3 + 3)
            .sum(),
        Job::Generate(..) => 0,
    }
}

fn refuse(jobs: Vec<Job>) {
    let gone = || WorkerError::new(WorkerErrorKind::NotFound, "Model was terminated");
    for job in jobs {
        match job {
            Job::Embed(_, reply) => drop(reply.send(Err(gone()))),
            Job::Rerank(_, reply) => drop(reply.send(Err(gone()))),
            Job::Generate(_, events) => drop(events.blocking_send(GenerateEvent::Error(gone()))),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, WorkerError>>;
/// A request's tokenized sequences (or why it could not be tokenized) and its reply channel.
type Tokenized<T> = (Result<Vec<Encoded>, EngineError>, Reply<T>);

fn embed_round(model: &dyn Embed, jobs: Vec<Job>) {
    let requests = jobs
        .into_iter()
        .filter_map(|job| match job {
            Job::Embed(request, reply) => {
                let encoded = request
                    .inputs
                    .iter()
                    .map(|input| {
                        let input = match input {
                            EmbedInput::Text(t) => EngineInput::Text(t.clone()),
                            EmbedInput::Tokens(ids) => EngineInput::Tokens(ids.clone()),
                        };
                        model.tokenize(&input, request.truncate)
                    })
                    .collect();
                Some((encoded, reply))
            }
            other => {
                refuse(vec![other]);
                None
            }
        })
        .collect();
    round(
        "embedding",
        requests,
        |all| model.embed(all),
        |embeddings, prompt_tokens| EmbedResponse {
            embeddings,
            prompt_tokens,
        },
    );
}

fn rerank_round(model: &dyn Rerank, jobs: Vec<Job>) {
    let requests = jobs
        .into_iter()
        .filter_map(|job| match job {
            Job::Rerank(request, reply) => {
                let encoded = request
                    .documents
                    .iter()
                    .map(|doc| model.tokenize_pair(&request.query, doc, request.truncate))
                    .collect();
                Some((encoded, reply))
            }
            other => {
                refuse(vec![other]);
                None
            }
        })
        .collect();
    round(
        "rerank",
        requests,
        |all| model.score(all),
        |scores, input_tokens| RerankResponse {
            scores,
            input_tokens,
        },
    );
}

/// One round of the model: every request's sequences go through `compute` together, then
/// each request gets its share of the outputs (and its own token count). A request that failed
/// to tokenize fails alone.
fn round<Out, Resp>(
    kind: &str,
    requests: Vec<Tokenized<Resp>>,
    compute: impl FnOnce(&[&Encoded]) -> Result<Vec<Out>, EngineError>,
    respond: impl Fn(Vec<Out>, usize) -> Resp,
) {
    let mut accepted = Vec::with_capacity(requests.len());
    for (encoded, reply) in requests {
        match encoded {
            Ok(encoded) => accepted.push((encoded, reply)),
            Err(e) => drop(reply.send(Err(engine_error(e)))),
        }
    }
    if accepted.is_empty() {
        return;
    }
    let all: Vec<&Encoded> = accepted.iter().flat_map(|(enc, _)| enc.iter()).collect();
    tracing::debug!(
        kind,
        requests = accepted.len(),
        sequences = all.len(),
        "{kind} round"
    );
    match compute(&all) {
        Ok(outputs) => {
            let mut outputs = outputs.into_iter();
            for (encoded, reply) in accepted {
                let tokens = encoded.iter().map(Encoded::len).sum();
                let mine = outputs.by_ref().take(encoded.len()).collect();
                let _ = reply.send(Ok(respond(mine, tokens)));
            }
        }
        Err(e) => {
            tracing::error!(kind, error = %e, "round failed");
            let err = engine_error(e);
            for (_, reply) in accepted {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Default `max_tokens` when the request gives none (capped by the context).
const DEFAULT_MAX_TOKENS: usize = 1024;

fn generate_job(model: &mut LlmModel, job: Job) {
    let Job::Generate(request, events) = job else {
        refuse(vec![job]);
        return;
    };
    let prompt = match &request.prompt {
        Prompt::Text(text) => Ok(text.clone()),
        Prompt::Chat(turns) => {
            let messages: Vec<ChatMessage> = turns
                .iter()
                .map(|t| ChatMessage {
                    role: t.role.clone(),
                    content: t.content.clone(),
                })
                .collect();
            model.chat_prompt(&messages)
        }
    };
    let ids = prompt.and_then(|p| model.encode(&p));
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => {
            let _ = events.blocking_send(GenerateEvent::Error(engine_error(e)));
            return;
        }
    };
    let s = &request.sampling;
    // OpenAI's defaults: temperature 1, no nucleus cut.
    let params = GenerationParams {
        max_tokens: s.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        temperature: s.temperature.unwrap_or(1.0),
        top_p: s.top_p.filter(|p| *p < 1.0),
        top_k: s.top_k.filter(|k| *k > 0),
        repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        seed: s.seed.unwrap_or_else(rand_seed),
        stop: s.stop.clone(),
        stop_token_ids: s.stop_token_ids.clone(),
    };
    let mut on_text = |text: &str| {
        events
            .blocking_send(GenerateEvent::Text(text.to_string()))
            .is_ok()
    };
    match model.generate(&ids, &params, &mut on_text) {
        Ok(done) => {
            let _ = events.blocking_send(GenerateEvent::Done(GenerateSummary {
                prompt_tokens: done.prompt_tokens,
                completion_tokens: done.completion_tokens,
                finish_reason: done.finish_reason.as_str().to_string(),
            }));
        }
        Err(e) => {
            let _ = events.blocking_send(GenerateEvent::Error(engine_error(e)));
        }
    }
}

/// A seed for requests that give none, from the clock (sampling needs no cryptographic seed).
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
