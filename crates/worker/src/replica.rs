//! One replica: a model on its own thread, fed by a bounded queue. The thread loads the model
//! (`load`: download, checks, the engine's loaders) and then serves it: LLMs through the
//! continuous batcher (`crate::batcher`), embedding and rerank models in dynamically batched
//! rounds (`rounds`), Whisper models window by window with batched encoding (`speech`). A panic in either fails that launch or those requests, never the process.

mod load;
mod rounds;
pub mod speech;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use xi_api::audio::TranscribeEvent;
use xi_api::worker::{
    EmbedRequest, EmbedResponse, GenerateEvent, GenerateRequest, ReplicaInfo, ReplicaSpec,
    RerankRequest, RerankResponse, WorkerError, WorkerErrorKind,
};
use xi_engine::llm::tools::{ToolStyle, DEFAULT_REASONING_TAGS};
use xi_engine::llm::{ChatTemplate, CompiledGrammar, GrammarCompiler};

use self::load::Loaded;
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
    /// stops the generation. The grammar is the request's output constraint, compiled.
    Generate(
        Box<GenerateRequest>,
        Option<CompiledGrammar>,
        UnboundedSender<GenerateEvent>,
    ),
    /// Decoded audio to transcribe; segments go out as they are decoded, a closed channel
    /// (client gone) stops the work.
    Transcribe(Box<speech::SpeechJob>, UnboundedSender<TranscribeEvent>),
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

    pub(super) fn set_progress(&self, value: f32) {
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
    /// What the worker needs of an LLM in the request path (`None` for other models).
    pub llm: Option<LlmTools>,
}

/// An LLM's chat template (`None`: it has none), grammar compiler and way of taking tools:
/// the worker renders chats (in the sandbox), compiles output constraints and parses tool
/// calls in the request path, so none of it runs on the model thread.
#[derive(Clone)]
pub struct LlmTools {
    pub template: Option<ChatTemplate>,
    pub grammars: GrammarCompiler,
    pub tool_style: ToolStyle,
    /// The reasoning tags, for a launch that splits reasoning out (`reasoning_content`).
    pub reasoning: Option<(String, String)>,
}

/// The reasoning tags of a launch that splits reasoning out: its own, else its family's (the
/// supervisor filled those in), else `<think>` and `</think>`.
fn reasoning_tags(options: &xi_api::launch::LaunchOptions) -> Option<(String, String)> {
    let (start, end) = DEFAULT_REASONING_TAGS;
    options.reasoning_content.then(|| {
        (
            options
                .reasoning_start_tag
                .clone()
                .unwrap_or_else(|| start.into()),
            options
                .reasoning_end_tag
                .clone()
                .unwrap_or_else(|| end.into()),
        )
    })
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

fn run(
    spec: ReplicaSpec,
    options: ReplicaOptions,
    shared: Arc<ReplicaShared>,
    receiver: Receiver<Job>,
    ready: oneshot::Sender<Result<Ready, WorkerError>>,
) {
    let started = std::time::Instant::now();
    // A panic while loading (a loader bug, a file the checks missed) fails this launch only.
    let result = contained(|| load::load(&spec, options.device, &shared)).unwrap_or_else(|why| {
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
            let llm = match &model {
                Loaded::Llm(m) => Some(LlmTools {
                    template: m.chat_template().cloned(),
                    grammars: m.grammar_compiler(),
                    tool_style: ToolStyle::of(
                        m.chat_template().map(ChatTemplate::source),
                        spec.options.tool_parser,
                    ),
                    reasoning: reasoning_tags(&spec.options),
                }),
                Loaded::Encoder(_) | Loaded::Speech(_) => None,
            };
            let _ = ready.send(Ok(Ready { info, llm }));
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
            Loaded::Encoder(m) => rounds::serve(m, options, &shared, &receiver),
            Loaded::Speech(m) => speech::serve(m, options, &shared, &receiver),
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

pub(crate) fn terminated() -> WorkerError {
    WorkerError::new(WorkerErrorKind::NotFound, "Model was terminated")
}

pub(crate) fn refuse(jobs: Vec<Job>) {
    for job in jobs {
        match job {
            Job::Embed(_, reply) => drop(reply.send(Err(terminated()))),
            Job::Rerank(_, reply) => drop(reply.send(Err(terminated()))),
            Job::Generate(_, _, events) => drop(events.send(GenerateEvent::Error(terminated()))),
            Job::Transcribe(_, events) => drop(events.send(TranscribeEvent::Error(terminated()))),
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
