//! [`LocalWorker`]: the in-process worker of `xinference-local`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use xi_api::audio::{AudioTask, TranscribeRequest, TranscribeStream};
use xi_api::models::ModelType;
use xi_api::worker::{
    BoxFuture, EmbedRequest, EmbedResponse, EventStream, GenerateEvent, GenerateRequest,
    GenerateSummary, Prompt, ReplicaInfo, ReplicaSpec, RerankRequest, RerankResponse, Worker,
    WorkerError, WorkerErrorKind,
};
use xi_engine::llm::tools::{
    call_grammar, prepare_chat, Piece, ReasoningPiece, ReasoningSplitter, ToolCallParser,
};
use xi_engine::llm::CompiledGrammar;
use xi_engine::whisper::{self, Task, TranscribeOptions};
use xi_engine::{audio, EngineError};

use xi_api::cluster::{RunningReplica, WorkerResources};

use crate::gpu;
use crate::replica::speech::SpeechJob;
use crate::replica::{Job, LlmTools, Replica, ReplicaOptions};
use crate::system::SystemProbe;
use crate::template_sandbox::{Renderer, TemplateSandbox};

/// Worker-wide settings (flags of the launcher).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `host:port` reported to the supervisor.
    pub address: String,
    /// Requests waiting per replica before new ones get 503.
    pub queue_capacity: usize,
    /// Embedding and rerank replicas: tokens merged from the queue into one round (the engine
    /// then runs the round in forward passes of `xi_engine::DEFAULT_BATCH_TOKENS` padded
    /// tokens). LLM replicas take theirs from the launch option `max_num_batched_tokens`.
    pub batch_tokens: usize,
    /// Where hub downloads go: `<XINFERENCE_HOME>/cache/v2`.
    pub cache_dir: PathBuf,
    /// Render chat templates in sandbox processes (memory and time limits). Without one they
    /// render in-process, bounded by fuel and an output limit only: a template can still
    /// exhaust the process's memory, so servers set this.
    pub template_sandbox: Option<TemplateSandbox>,
    /// Longest audio one speech-to-text request may carry (longer is 413).
    pub audio_limits: audio::AudioLimits,
}

impl WorkerConfig {
    pub fn new(address: String, home: &Path) -> Self {
        Self {
            address,
            queue_capacity: 256,
            batch_tokens: 8_192,
            cache_dir: home.join("cache").join("v2"),
            template_sandbox: None,
            audio_limits: audio::AudioLimits::default(),
        }
    }
}

pub struct LocalWorker {
    config: WorkerConfig,
    replicas: Arc<DashMap<String, Arc<Replica>>>,
    /// Ready replicas with the spec they were launched from (reported when joining a
    /// supervisor, so a restarted supervisor serves them again).
    ready: DashMap<String, RunningReplica>,
    /// Each ready LLM replica's chat template and grammar compiler.
    llms: DashMap<String, LlmTools>,
    renderer: Renderer,
    probe: SystemProbe,
}

impl LocalWorker {
    pub fn new(config: WorkerConfig) -> Self {
        if gpu::CUDA_BUILD {
            let gpus = gpu::gpus();
            let listed: Vec<String> = gpus
                .iter()
                .map(|g| {
                    format!(
                        "{}: {} ({} MiB, {} MiB used)",
                        g.index,
                        g.name,
                        g.memory_total >> 20,
                        g.memory_used >> 20
                    )
                })
                .collect();
            tracing::info!(count = gpus.len(), gpus = %listed.join("; "), "CUDA build: GPUs");
        }
        let renderer = Renderer::new(config.template_sandbox.clone());
        Self {
            config,
            replicas: Arc::new(DashMap::new()),
            ready: DashMap::new(),
            llms: DashMap::new(),
            renderer,
            probe: SystemProbe::default(),
        }
    }

    /// The ready replicas, in uid order.
    pub fn running(&self) -> Vec<RunningReplica> {
        let mut out: Vec<RunningReplica> = self.ready.iter().map(|r| r.value().clone()).collect();
        out.sort_by(|a, b| a.spec.replica_uid.cmp(&b.spec.replica_uid));
        out
    }

    /// Stops every replica (worker shutdown).
    pub async fn stop_all(&self) {
        let uids: Vec<String> = self.replicas.iter().map(|r| r.key().clone()).collect();
        for uid in uids {
            let _ = self.terminate(uid).await;
        }
    }

    fn replica(&self, uid: &str) -> Result<Arc<Replica>, WorkerError> {
        self.replicas
            .get(uid)
            .map(|r| r.value().clone())
            .ok_or_else(|| {
                WorkerError::new(
                    WorkerErrorKind::NotFound,
                    format!("Model not found in the model list, uid: {uid}"),
                )
            })
    }

    fn options(&self, spec: &ReplicaSpec) -> Result<ReplicaOptions, WorkerError> {
        // Parsed and checked by the supervisor: this only resolves them against the worker.
        let launch = &spec.options;
        let batching = launch.dynamic_batching;
        let llm = spec.model_type == ModelType::Llm;
        let max_seqs = if batching {
            launch.max_num_seqs.max(1)
        } else {
            1
        };
        let batch_tokens = if llm {
            launch.max_num_batched_tokens.max(1)
        } else {
            self.config.batch_tokens
        };
        let device = gpu::choose(spec, &gpu::inventory(), gpu::CUDA_BUILD)?;
        Ok(ReplicaOptions {
            queue_capacity: self.config.queue_capacity,
            batching,
            batch_tokens,
            max_seqs,
            device,
        })
    }

    async fn ask<T>(
        &self,
        uid: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, WorkerError>>) -> Job,
    ) -> Result<T, WorkerError> {
        let replica = self.replica(uid)?;
        let (tx, rx) = oneshot::channel();
        replica.submit(make(tx))?;
        drop(replica);
        rx.await.unwrap_or_else(|_| {
            Err(WorkerError::new(
                WorkerErrorKind::NotFound,
                "Model was terminated",
            ))
        })
    }
}

impl Worker for LocalWorker {
    fn address(&self) -> String {
        self.config.address.clone()
    }

    fn launch(&self, mut spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaInfo, WorkerError>> {
        Box::pin(async move {
            let options = self.options(&spec)?;
            if spec.download.is_none() && !spec.model_path.exists() {
                return Err(WorkerError::new(
                    WorkerErrorKind::InvalidModel,
                    format!(
                        "model_path {} does not exist on worker {}",
                        spec.model_path.display(),
                        self.config.address
                    ),
                ));
            }
            if let Some(download) = &spec.download {
                // Hub files go to this worker's cache; the replica fetches them before loading.
                spec.model_path = self.config.cache_dir.join(&download.cache_name);
            }
            let uid = spec.replica_uid.clone();
            if self.replicas.contains_key(&uid) {
                return Err(WorkerError::new(
                    WorkerErrorKind::InvalidModel,
                    format!("replica {uid} already exists"),
                ));
            }
            let (ready_tx, ready_rx) = oneshot::channel();
            let launched = spec.clone();
            let llm = spec.model_type == ModelType::Llm;
            let replica = Arc::new(Replica::spawn(spec, options, ready_tx)?);
            self.replicas.insert(uid.clone(), replica);
            let result = ready_rx.await.unwrap_or_else(|_| {
                Err(WorkerError::new(
                    WorkerErrorKind::Internal,
                    "the model thread ended unexpectedly",
                ))
            });
            let result = result.map(|ready| {
                // Chats are rendered and grammars compiled here, off the model thread.
                if let (true, Some(tools)) = (llm, ready.llm) {
                    self.llms.insert(uid.clone(), tools);
                }
                ready.info
            });
            match &result {
                // Still ours (not terminated while loading): remember how it was launched.
                Ok(info) if self.replicas.contains_key(&uid) => {
                    self.ready.insert(
                        uid.clone(),
                        RunningReplica {
                            spec: launched,
                            info: info.clone(),
                        },
                    );
                    // Terminated in between: forget it again.
                    if !self.replicas.contains_key(&uid) {
                        self.ready.remove(&uid);
                        self.llms.remove(&uid);
                    }
                }
                Ok(_) => drop(self.llms.remove(&uid)),
                Err(_) => {
                    if let Some((_, replica)) = self.replicas.remove(&uid) {
                        stop_when_unshared(replica).await;
                    }
                }
            }
            result
        })
    }

    fn terminate(&self, replica_uid: String) -> BoxFuture<'_, Result<(), WorkerError>> {
        Box::pin(async move {
            self.ready.remove(&replica_uid);
            self.llms.remove(&replica_uid);
            let (_, replica) = self.replicas.remove(&replica_uid).ok_or_else(|| {
                WorkerError::new(
                    WorkerErrorKind::NotFound,
                    format!("Model not found in the model list, uid: {replica_uid}"),
                )
            })?;
            replica
                .shared
                .stop
                .store(true, std::sync::atomic::Ordering::SeqCst);
            stop_when_unshared(replica).await;
            tracing::info!(replica = %replica_uid, "replica terminated");
            Ok(())
        })
    }

    fn progress(&self, replica_uid: String) -> BoxFuture<'_, Option<f32>> {
        let progress = self.replicas.get(&replica_uid).map(|r| r.shared.progress());
        Box::pin(async move { progress })
    }

    fn resources(&self) -> WorkerResources {
        let mut resources = self.probe.resources();
        resources.gpus = gpu::gpus();
        resources
    }

    fn embed(
        &self,
        replica_uid: String,
        request: EmbedRequest,
    ) -> BoxFuture<'_, Result<EmbedResponse, WorkerError>> {
        Box::pin(async move { self.ask(&replica_uid, |tx| Job::Embed(request, tx)).await })
    }

    fn rerank(
        &self,
        replica_uid: String,
        request: RerankRequest,
    ) -> BoxFuture<'_, Result<RerankResponse, WorkerError>> {
        Box::pin(async move { self.ask(&replica_uid, |tx| Job::Rerank(request, tx)).await })
    }

    fn transcribe(
        &self,
        replica_uid: String,
        request: TranscribeRequest,
    ) -> BoxFuture<'_, Result<TranscribeStream, WorkerError>> {
        Box::pin(async move {
            self.replica(&replica_uid)?;
            let limits = self.config.audio_limits;
            let job = tokio::task::spawn_blocking(move || speech_job(request, &limits))
                .await
                .map_err(|e| WorkerError::new(WorkerErrorKind::Internal, e.to_string()))??;
            let replica = self.replica(&replica_uid)?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            replica.submit(Job::Transcribe(Box::new(job), tx))?;
            drop(replica);
            let events = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|event| (event, rx))
            });
            Ok(Box::pin(events) as TranscribeStream)
        })
    }

    fn generate(
        &self,
        replica_uid: String,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<EventStream, WorkerError>> {
        Box::pin(async move {
            // The render holds no handle on the replica, so a terminate meanwhile goes ahead.
            self.replica(&replica_uid)?;
            let (style, reasoning) = match self.llms.get(&replica_uid) {
                Some(t) => (Some(t.tool_style), t.reasoning.clone()),
                None => (None, None),
            };
            let chat = matches!(request.prompt, Prompt::Chat(_));
            let request = self.rendered(&replica_uid, request).await?;
            // A prompt that opened the reasoning tags (DeepSeek-R1's) starts the answer in them.
            let splitters: Option<Vec<ReasoningSplitter>> = match (&reasoning, &request.prompt) {
                (Some((start, end)), Prompt::Text(prompt)) if chat => {
                    let opened = prompt.trim_end().ends_with(start.as_str());
                    let make = || ReasoningSplitter::new(start, end, opened);
                    Some((0..request.sampling.choices()).map(|_| make()).collect())
                }
                _ => None,
            };
            let grammar = self.grammar(&replica_uid, &request).await?;
            let parsers = match (&request.tools, style) {
                (Some(tools), Some(style)) => {
                    let make = || ToolCallParser::new(style.parser, tools.parallel);
                    Some((0..request.sampling.choices()).map(|_| make()).collect())
                }
                _ => None,
            };
            let replica = self.replica(&replica_uid)?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            replica.submit(Job::Generate(Box::new(request), grammar, tx))?;
            drop(replica);
            let events = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|event| (event, rx))
            });
            let events: EventStream = match splitters {
                Some(splitters) => Box::pin(filtered(events, splitters)),
                None => Box::pin(events),
            };
            Ok(match parsers {
                Some(parsers) => Box::pin(filtered(events, parsers)) as EventStream,
                None => events,
            })
        })
    }
}

impl LocalWorker {
    /// The request's output constraint (its `guided_*` or `response_format`, or the grammar of
    /// a required tool call) compiled for the replica's model, off the runtime's threads (the
    /// first grammar of a model also builds its token trie: about a second; a request with
    /// `logprobs` builds the trie too). A grammar that cannot be compiled is refused here,
    /// before anything is queued.
    async fn grammar(
        &self,
        uid: &str,
        request: &GenerateRequest,
    ) -> Result<Option<CompiledGrammar>, WorkerError> {
        let tools = request.tools.as_ref();
        let wants_bytes = request.sampling.logprobs.is_some();
        if tools.is_none() && request.sampling.guide.is_none() && !wants_bytes {
            return Ok(None);
        }
        let (compiler, style) = self
            .llms
            .get(uid)
            .map(|t| (t.grammars.clone(), t.tool_style))
            .ok_or_else(|| {
                WorkerError::new(
                    WorkerErrorKind::InvalidInput,
                    format!("model {uid} does not generate (not a ready LLM)"),
                )
            })?;
        // Calls are held to the functions' schemas in the model's format (with `auto`, an
        // answer that opens as a call); the supervisor refuses a request that also constrains
        // its text.
        let guide = match tools {
            Some(tools) => Some(call_grammar(style.parser, tools)),
            None => request.sampling.guide.clone(),
        };
        // `auto` calls are held to their grammar where the model's tokenizer allows one, and
        // free otherwise; what the request itself asks to constrain must be constrained.
        let best_effort = tools.is_some_and(|t| !t.constrained());
        // Log probabilities name tokens by their bytes, from the token trie the grammar
        // compiler builds once per model: built here, not on the model thread (a tokenizer
        // that llguidance cannot read gives them from its own decoder instead).
        tokio::task::spawn_blocking(move || match guide {
            Some(guide) => match compiler.compile(&guide) {
                Err(EngineError::Unsupported(why)) if best_effort => {
                    tracing::debug!(why, "auto tool calls go unconstrained");
                    Ok(None)
                }
                compiled => compiled.map(Some),
            },
            None => {
                let _ = compiler.prepare();
                Ok(None)
            }
        })
        .await
        .map_err(|e| {
            WorkerError::new(
                WorkerErrorKind::Internal,
                format!("compiling the output constraint failed: {e}"),
            )
        })?
        .map_err(WorkerError::from)
    }

    /// `request` with its chat rendered by the replica's template (in the sandbox when there is
    /// one), so the model thread only tokenizes and generates.
    async fn rendered(
        &self,
        uid: &str,
        request: GenerateRequest,
    ) -> Result<GenerateRequest, WorkerError> {
        let GenerateRequest {
            prompt,
            sampling,
            tools,
            chat_template_kwargs,
        } = request;
        let turns = match prompt {
            Prompt::Chat(turns) => turns,
            text => {
                return Ok(GenerateRequest {
                    prompt: text,
                    sampling,
                    tools: None,
                    chat_template_kwargs: None,
                })
            }
        };
        let llm = self
            .llms
            .get(uid)
            .map(|t| (t.template.clone(), t.tool_style));
        let (template, style) = match llm {
            Some((Some(template), style)) => (template, style),
            Some((None, _)) => {
                return Err(WorkerError::new(
                    WorkerErrorKind::InvalidInput,
                    "this model has no chat template; use completions",
                ))
            }
            None => {
                return Err(WorkerError::new(
                    WorkerErrorKind::InvalidInput,
                    format!("model {uid} does not chat (not a ready LLM)"),
                ))
            }
        };
        let (messages, tools_value) = prepare_chat(style, turns, tools.as_ref());
        let extra = chat_template_kwargs.map(serde_json::Value::Object);
        let prompt = self
            .renderer
            .render(template, messages, tools_value, extra)
            .await?;
        Ok(GenerateRequest {
            prompt: Prompt::Text(prompt),
            sampling,
            tools,
            chat_template_kwargs: None,
        })
    }
}

/// A rewrite of one choice's answer as it streams: its text, then its end.
trait AnswerFilter: Send + 'static {
    fn text(&mut self, text: &str) -> Vec<GenerateEvent>;
    /// The events before the choice's `Done` (which it may amend).
    fn done(&mut self, done: &mut GenerateSummary) -> Vec<GenerateEvent>;
}

/// Each choice's reasoning split from its answer.
impl AnswerFilter for ReasoningSplitter {
    fn text(&mut self, text: &str) -> Vec<GenerateEvent> {
        self.push(text).into_iter().map(reasoning_event).collect()
    }

    fn done(&mut self, _: &mut GenerateSummary) -> Vec<GenerateEvent> {
        self.finish().into_iter().map(reasoning_event).collect()
    }
}

fn reasoning_event(piece: ReasoningPiece) -> GenerateEvent {
    match piece {
        ReasoningPiece::Reasoning(text) => GenerateEvent::Reasoning(text),
        ReasoningPiece::Text(text) => GenerateEvent::Text(text),
    }
}

/// Each choice's tool calls parsed out of its text; a choice that made calls finishes with
/// `tool_calls`.
impl AnswerFilter for ToolCallParser {
    fn text(&mut self, text: &str) -> Vec<GenerateEvent> {
        self.push(text).into_iter().map(call_event).collect()
    }

    fn done(&mut self, done: &mut GenerateSummary) -> Vec<GenerateEvent> {
        let out = self.finish().into_iter().map(call_event).collect();
        if self.calls() > 0 && done.finish_reason == "stop" {
            done.finish_reason = "tool_calls".into();
        }
        out
    }
}

fn call_event(piece: Piece) -> GenerateEvent {
    match piece {
        Piece::Text(text) => GenerateEvent::Text(text),
        Piece::Call(call) => GenerateEvent::ToolCall(call),
    }
}

/// `events` with each choice's answer rewritten by its own filter (`filters[i]` for choice
/// `i`, following the events' `Choice` markers); other events pass as they are.
fn filtered<F: AnswerFilter>(
    events: impl futures_util::Stream<Item = GenerateEvent> + Send + 'static,
    filters: Vec<F>,
) -> impl futures_util::Stream<Item = GenerateEvent> + Send + 'static {
    events
        .scan((filters, 0usize), |(filters, current), event| {
            let out: Vec<GenerateEvent> = match (event, filters.get_mut(*current)) {
                (GenerateEvent::Choice(i), _) => {
                    *current = i;
                    vec![GenerateEvent::Choice(i)]
                }
                (GenerateEvent::Text(text), Some(filter)) => filter.text(&text),
                (GenerateEvent::Done(mut done), Some(filter)) => {
                    let mut out = filter.done(&mut done);
                    out.push(GenerateEvent::Done(done));
                    out
                }
                (other, _) => vec![other],
            };
            std::future::ready(Some(futures_util::stream::iter(out)))
        })
        .flatten()
}

/// Joins the replica's thread off the runtime once no request still holds it (requests only
/// hold it for the instant of queueing a job).
async fn stop_when_unshared(mut replica: Arc<Replica>) {
    loop {
        match Arc::try_unwrap(replica) {
            Ok(owned) => {
                let _ = tokio::task::spawn_blocking(move || owned.stop()).await;
                return;
            }
            Err(shared) => {
                replica = shared;
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Decodes a request's audio (off the async runtime and off the model thread) into the job a
/// Whisper replica runs. Audio over the length limit is 413, any other bad file 400.
fn speech_job(
    request: TranscribeRequest,
    limits: &audio::AudioLimits,
) -> Result<SpeechJob, WorkerError> {
    let pcm = audio::decode_to_16k_mono(&request.audio, limits).map_err(|e| {
        let kind = if audio::is_too_long(&e) {
            WorkerErrorKind::TooLarge
        } else {
            WorkerErrorKind::InvalidInput
        };
        WorkerError::new(kind, e.to_string())
    })?;
    let task = match request.task {
        AudioTask::Transcribe => Task::Transcribe,
        AudioTask::Translate => Task::Translate,
    };
    let language = match request.language.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) => Some(
            whisper::language_code(l)
                .ok_or_else(|| {
                    WorkerError::new(
                        WorkerErrorKind::InvalidInput,
                        format!(
                            "language '{}' is not one Whisper knows (use an ISO-639-1 code such as 'en')",
                            l.chars().take(32).collect::<String>()
                        ),
                    )
                })?
                .to_string(),
        ),
    };
    Ok(SpeechJob {
        samples: pcm.samples,
        options: TranscribeOptions {
            task,
            language,
            prompt: request.prompt,
            temperature: request.temperature,
            seed: 0,
            word_timestamps: request.word_timestamps,
        },
    })
}
