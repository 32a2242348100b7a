//! Text generation with decoder-only transformers (llama family, Qwen2, Qwen3) from GGUF files
//! (quantized) or Hugging Face safetensors folders.
//!
//! Parts: [`config`] (the model's shape), [`weights`] (GGUF / safetensors tensors under one
//! naming), `decoder` (the transformer, written once over two seams: a `Backend` with its
//! linear layers, `linear`, and an `AttentionBackend` whose KV cache is an associated type),
//! its two backends `cpu` (our integer kernels; attention and KV caches in `attention`) and
//! `portable` (candle tensor ops, for GPUs: see [`crate::Placement`]), `plan` (the step
//! planner: which sequences advance by how many tokens, a pure function), `load` (files into
//! a model), [`sequence`] (sampling, stop conditions, streamed text), [`gguf_tokenizer`] (the
//! tokenizer rebuilt from GGUF metadata), [`template`] (Jinja chat templates), [`convert`]
//! (GGUF → safetensors folder) and `validate` (the config checked against the file's tensors
//! and the machine's memory before anything is allocated). [`LlmModel::step`] advances any
//! number of sequences by one forward pass: that is what continuous batching is built on.

mod attention;
pub mod config;
pub mod convert;
mod cpu;
mod decoder;
pub mod gguf_tokenizer;
mod linear;
mod load;
mod plan;
mod portable;
mod qlinear;
mod sequence;
pub mod template;
mod types;
mod validate;
pub mod weights;

use tokenizers::Tokenizer;
use xi_api::launch::DEFAULT_MAX_NUM_BATCHED_TOKENS;

use crate::error::EngineError;
use crate::placement::Placement;
pub use config::LlmConfig;
use cpu::CpuBackend;
use decoder::{Backend, CacheOf, Decoder};
pub use load::gguf_file_in;
use portable::TensorBackend;
use sequence::{Cache, CacheKind};
pub use sequence::{Sequence, Update};
pub use template::{ChatMessage, ChatTemplate};
pub use types::{FinishReason, Generated, GenerationParams, LoadOptions};

/// The decoder a model runs, on its backend.
enum Body {
    Cpu(Decoder<CpuBackend>),
    Portable(Decoder<TensorBackend>),
}

impl Body {
    fn config(&self) -> &LlmConfig {
        match self {
            Body::Cpu(d) => &d.config,
            Body::Portable(d) => &d.config,
        }
    }

    fn new_cache(&self) -> Cache {
        match self {
            Body::Cpu(d) => d.new_cache().wrap(),
            Body::Portable(d) => d.new_cache().wrap(),
        }
    }

    /// One forward pass (see [`Decoder::forward`]); every cache must be of this body's kind.
    fn forward(
        &self,
        tokens: &[u32],
        spans: &[usize],
        caches: Vec<&mut Cache>,
        wanted: &[u32],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        match self {
            Body::Cpu(d) => forward_on(d, tokens, spans, caches, wanted),
            Body::Portable(d) => forward_on(d, tokens, spans, caches, wanted),
        }
    }
}

/// `decoder`'s forward pass over the sequences' caches, each unwrapped to the backend's own
/// kind: a sequence started by a model on another backend is refused.
fn forward_on<B: Backend>(
    decoder: &Decoder<B>,
    tokens: &[u32],
    spans: &[usize],
    caches: Vec<&mut Cache>,
    wanted: &[u32],
) -> Result<Vec<Vec<f32>>, EngineError>
where
    CacheOf<B>: CacheKind,
{
    let mut own = Vec::with_capacity(caches.len());
    for cache in caches {
        let cache = CacheOf::<B>::unwrap_mut(cache)
            .ok_or_else(|| EngineError::internal("a sequence of a model on another backend"))?;
        own.push(cache);
    }
    decoder.forward(tokens, spans, &mut own, wanted)
}

pub struct LlmModel {
    body: Body,
    placement: Placement,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    end_ids: Vec<u32>,
}

impl LlmModel {
    pub fn context_length(&self) -> usize {
        self.body.config().context_length
    }

    pub fn config(&self) -> &LlmConfig {
        self.body.config()
    }

    /// Where the model runs.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The model's chat template, if it has one (cheap to clone: the worker renders chats with
    /// it off the model's thread, or hands its source to a sandbox).
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Renders a chat with the model's template.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let template = self.template.as_ref().ok_or_else(|| {
            EngineError::InvalidInput("this model has no chat template; use completions".into())
        })?;
        template.render(messages, true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EngineError::InvalidInput(format!("cannot tokenize the prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// A new sequence for `prompt`; refused when the prompt leaves no room in the context.
    pub fn start(
        &self,
        prompt: Vec<u32>,
        params: GenerationParams,
    ) -> Result<Sequence, EngineError> {
        let context = self.context_length();
        if prompt.is_empty() {
            return Err(EngineError::InvalidInput("the prompt is empty".into()));
        }
        if prompt.len() >= context {
            return Err(EngineError::InvalidInput(format!(
                "the prompt has {} tokens but the model's context is {context} tokens",
                prompt.len()
            )));
        }
        let vocab = self.body.config().vocab_size as u32;
        if let Some(bad) = prompt.iter().find(|&&t| t >= vocab) {
            return Err(EngineError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let max_new = params.max_tokens.min(context - prompt.len());
        Ok(Sequence::new(
            prompt,
            params,
            max_new,
            self.body.new_cache(),
        ))
    }

    /// Advances every unfinished sequence in `seqs` by one forward pass: sequences that are
    /// decoding add one token each; sequences still reading their prompt add up to what is left
    /// of `token_budget` (chunked prefill, so a long prompt never stalls the others for long).
    /// Returns one update per sequence, in order.
    pub fn step(
        &self,
        seqs: &mut [&mut Sequence],
        token_budget: usize,
    ) -> Result<Vec<Update>, EngineError> {
        let pending: Vec<usize> = seqs
            .iter()
            .map(|s| match s.finished() {
                Some(_) => 0,
                None => s.pending(),
            })
            .collect();
        let take = plan::plan(&pending, token_budget);
        let used = take.iter().sum();
        let mut tokens = Vec::with_capacity(used);
        let mut spans = Vec::new();
        let mut wanted = Vec::new();
        let mut members = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            if take[i] == 0 {
                continue;
            }
            let from = s.cache.len();
            tokens.extend_from_slice(&s.tokens[from..from + take[i]]);
            spans.push(take[i]);
            if take[i] == s.pending() {
                wanted.push(tokens.len() as u32 - 1);
            }
            members.push(i);
        }
        let mut updates: Vec<Update> = seqs.iter().map(|_| Update::default()).collect();
        if tokens.is_empty() {
            return Ok(updates);
        }
        let logits = {
            let mut caches: Vec<&mut Cache> = Vec::with_capacity(members.len());
            for (i, s) in seqs.iter_mut().enumerate() {
                if take[i] > 0 {
                    caches.push(&mut s.cache);
                }
            }
            self.body.forward(&tokens, &spans, caches, &wanted)?
        };
        let mut logits = logits.into_iter();
        for &i in &members {
            if seqs[i].pending() == 0 {
                let row = logits
                    .next()
                    .ok_or_else(|| EngineError::internal("missing logits row"))?;
                updates[i] = seqs[i].advance(row, &self.end_ids, &self.tokenizer)?;
            }
        }
        Ok(updates)
    }

    /// The logits of the token that would follow `prompt` (one forward pass, no sampling).
    pub fn next_token_logits(&self, prompt: &[u32]) -> Result<Vec<f32>, EngineError> {
        let seq = self.start(prompt.to_vec(), GenerationParams::GREEDY)?;
        let mut cache = seq.cache;
        let last = prompt.len() as u32 - 1;
        let mut rows = self
            .body
            .forward(prompt, &[prompt.len()], vec![&mut cache], &[last])?;
        rows.pop().ok_or_else(|| EngineError::internal("no logits"))
    }

    /// Generates one sequence from `prompt`. `on_text` receives the text as it becomes final
    /// (never a piece of a stop string) and returns false to stop early (the client went away).
    /// Steps take a replica's default token budget (`max_num_batched_tokens`).
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, EngineError> {
        let mut seq = self.start(prompt.to_vec(), params.clone())?;
        while seq.finished().is_none() {
            let update = self
                .step(&mut [&mut seq], DEFAULT_MAX_NUM_BATCHED_TOKENS)?
                .pop()
                .unwrap_or_default();
            if !update.text.is_empty() && !on_text(&update.text) {
                seq.cancel();
            }
        }
        Ok(Generated {
            text: seq.text().to_string(),
            token_ids: seq.generated().to_vec(),
            prompt_tokens: seq.prompt_tokens(),
            completion_tokens: seq.completion_tokens(),
            finish_reason: seq.finished().unwrap_or(FinishReason::Stop),
        })
    }
}
