//! One replica: a model on its own thread, a bounded queue, dynamic batching.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use xi_api::launch::Requantize;
use xi_api::models::ModelType;
use xi_api::worker::{
    EmbedInput, EmbedRequest, EmbedResponse, GenerateEvent, GenerateRequest, ReplicaInfo,
    ReplicaSpec, RerankRequest, RerankResponse, WorkerError, WorkerErrorKind,
};
use xi_engine::candle_quantized::GgmlDType;
use xi_engine::embedding::EmbedInput as EngineInput;
use xi_engine::llm::{ChatTemplate, LlmModel, LoadOptions};
use xi_engine::{CrossEncoder, Embed, EmbeddingModel, Encoded, EngineError, Placement, Rerank};

use crate::gpu::DeviceChoice;

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
    /// Events go out as they happen (never blocking the batch: the channel is unbounded, and a
    /// generation's events are bounded by its `max_tokens`); a closed channel (client gone)
    /// stops the generation.
    Generate(GenerateRequest, UnboundedSender<GenerateEvent>),
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

/// What a replica reports once its model is loaded.
pub struct Ready {
    pub info: ReplicaInfo,
    /// An LLM's chat template: the worker renders chats with it in the request path (in the
    /// sandbox), so templates never run on the model thread.
    pub template: Option<ChatTemplate>,
}

/// Options a replica takes from the launch request.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaOptions {
    pub queue_capacity: usize,
    /// Merge queued requests into one forward pass.
    pub batching: bool,
    /// Tokens gathered from the queue into one round before it runs (for LLMs: tokens per
    /// forward pass, prompt chunks included).
    pub batch_tokens: usize,
    /// LLMs: sequences generating at once (the rest wait in the queue).
    pub max_seqs: usize,
    /// The device and dtype (from `n_gpu`, `gpu_idx` and `dtype`).
    pub device: DeviceChoice,
}

impl Replica {
    /// Starts the thread, which loads the model and then serves. `ready` gets the load result.
    pub fn spawn(
        spec: ReplicaSpec,
        options: ReplicaOptions,
        ready: oneshot::Sender<Result<Ready, WorkerError>>,
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

/// The engine's placement of a device choice (opening the GPU).
fn placement(choice: DeviceChoice) -> Result<Placement, WorkerError> {
    let Some(ordinal) = choice.gpu else {
        return Ok(Placement {
            dtype: choice.dtype,
            ..Placement::cpu()
        });
    };
    Placement::cuda(ordinal, choice.dtype)
        .map_err(|e| WorkerError::new(WorkerErrorKind::Unavailable, e.to_string()))
}

fn load(
    spec: &ReplicaSpec,
    device: DeviceChoice,
    shared: &ReplicaShared,
) -> Result<(Loaded, ReplicaInfo), WorkerError> {
    let mut spec = spec.clone();
    if let Some(download) = &spec.download {
        // Downloading is the first 80% of the progress, loading the rest.
        spec.model_path = crate::download::fetch(
            download,
            &spec.model_path,
            &mut |p| shared.set_progress(0.8 * p),
            &shared.stop,
        )?;
    }
    let spec = &spec;
    shared.set_progress(shared.progress().max(0.1));
    let placement = placement(device)?;
    tracing::info!(replica = %spec.replica_uid, on = %placement.describe(), "loading");
    let loaded = match spec.model_type {
        ModelType::Embedding => {
            let model = EmbeddingModel::load_on(&spec.model_path, &placement)?;
            let info = ReplicaInfo {
                dimensions: Some(model.dimensions()),
                max_tokens: Some(model.max_tokens()),
            };
            (Loaded::Embedding(Box::new(model)), info)
        }
        ModelType::Rerank => {
            let model = CrossEncoder::load_on(&spec.model_path, &placement)?;
            let info = ReplicaInfo {
                dimensions: None,
                max_tokens: Some(model.max_tokens()),
            };
            (Loaded::Rerank(Box::new(model)), info)
        }
        ModelType::Llm => {
            let options = LoadOptions {
                requantize: requantize_option(spec),
                fallback_template: spec.options.chat_template.clone(),
                placement,
            };
            let base = shared.progress();
            let model = LlmModel::load(&spec.model_path, &options, &mut |p| {
                shared.set_progress(base + (1.0 - base) * p)
            })?;
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

/// The `requantize` launch option: `Q8_0` (faster on CPU) or `F32` (exact), default none.
fn requantize_option(spec: &ReplicaSpec) -> Option<GgmlDType> {
    spec.options.requantize.map(|r| match r {
        Requantize::Q8_0 => GgmlDType::Q8_0,
        Requantize::F32 => GgmlDType::F32,
    })
}

fn run(
    spec: ReplicaSpec,
    options: ReplicaOptions,
    shared: Arc<ReplicaShared>,
    receiver: Receiver<Job>,
    ready: oneshot::Sender<Result<Ready, WorkerError>>,
) {
    let started = std::time::Instant::now();
    // A panic while loading (a loader bug, a file the checks missed) fails this launch only.
    let result = contained(|| load(&spec, options.device, &shared)).unwrap_or_else(|why| {
        tracing::error!(replica = %spec.replica_uid, panic = %why, "the model loader panicked");
        Err(WorkerError::new(
            WorkerErrorKind::InvalidModel,
            format!("the model files could not be loaded: the loader stopped on an internal error ({why})"),
        ))
    });
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
            let template = match &model {
                Loaded::Llm(m) => m.chat_template().cloned(),
                _ => None,
            };
            let _ = ready.send(Ok(Ready { info, template }));
            model
        }
        Err(e) => {
            tracing::warn!(replica = %spec.replica_uid, error = %e, "replica failed to load");
            let _ = ready.send(Err(e));
            return;
        }
    };
    // A panic while serving fails the requests in flight (their reply channels close), never
    // the process: the loop serves the queue again with the same (immutable) weights. It ends
    // when the queue closes.
    loop {
        let served = contained(|| match &mut model {
            Loaded::Llm(m) => crate::batcher::serve(m, options, &shared, &receiver),
            _ => serve(&mut model, options, &shared, &receiver),
        });
        match served {
            Ok(()) => break,
            Err(why) => {
                tracing::error!(replica = %spec.replica_uid, panic = %why, "a request round panicked; serving on");
            }
        }
    }
    tracing::info!(replica = %spec.replica_uid, "replica stopped");
}

/// Runs `f`, turning a panic into its message (the panic hook has logged where it happened).
fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
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
            // LLM replicas are served by the batcher (see `run`).
            Loaded::Llm(_) => refuse(jobs),
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

pub(crate) fn terminated() -> WorkerError {
    WorkerError::new(WorkerErrorKind::NotFound, "Model was terminated")
}

pub(crate) fn refuse(jobs: Vec<Job>) {
    for job in jobs {
        match job {
            Job::Embed(_, reply) => drop(reply.send(Err(terminated()))),
            Job::Rerank(_, reply) => drop(reply.send(Err(terminated()))),
            Job::Generate(_, events) => drop(events.send(GenerateEvent::Error(terminated()))),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, WorkerError>>;
/// A request's tokenized sequences (or why it could not be tokenized) and its reply channel.
type Tokenized<T> = (Result<Vec<Encoded>, EngineError>, Reply<T>);

/// The jobs `take` accepts, tokenized; any other kind of job is refused.
fn tokenized<Resp>(
    jobs: Vec<Job>,
    take: impl Fn(Job) -> Result<Tokenized<Resp>, Box<Job>>,
) -> Vec<Tokenized<Resp>> {
    let mut accepted = Vec::with_capacity(jobs.len());
    for job in jobs {
        match take(job) {
            Ok(request) => accepted.push(request),
            Err(other) => refuse(vec![*other]),
        }
    }
    accepted
}

fn embed_round(model: &dyn Embed, jobs: Vec<Job>) {
    let requests = tokenized(jobs, |job| match job {
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
            Ok((encoded, reply))
        }
        other => Err(Box::new(other)),
    });
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
    let requests = tokenized(jobs, |job| match job {
        Job::Rerank(request, reply) => {
            let encoded = request
                .documents
                .iter()
                .map(|doc| model.tokenize_pair(&request.query, doc, request.truncate))
                .collect();
            Ok((encoded, reply))
        }
        other => Err(Box::new(other)),
    });
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
            Err(e) => drop(reply.send(Err(e.into()))),
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
            let err = WorkerError::from(e);
            for (_, reply) in accepted {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::contained;

    #[test]
    fn a_panic_is_contained_with_its_message() {
        assert_eq!(contained(|| 7), Ok(7));
        let owned = contained(|| -> u8 { panic!("index {} out of range", 3) });
        assert_eq!(owned, Err("index 3 out of range".to_string()));
        assert_eq!(
            contained(|| -> u8 { panic!("plain") }),
            Err("plain".to_string())
        );
    }
}
