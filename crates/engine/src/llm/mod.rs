//! Text generation with decoder-only transformers (llama family, Qwen2, Qwen3) from GGUF files
//! (quantized) or Hugging Face safetensors folders.
//!
//! Parts: [`config`] (the model's shape), [`weights`] (GGUF / safetensors tensors under one
//! naming), `decoder` (the transformer, written once over two seams: a `Backend` with its
//! linear layers, `linear`, and an `AttentionBackend` whose KV cache is an associated type),
//! its two backends `cpu` (our integer kernels; attention and KV caches in `attention`) and
//! `portable` (candle tensor ops, for GPUs: see [`crate::Placement`]), `plan` (the step
//! planner: which sequences advance by how many tokens, a pure function), `load` (files into
//! a model), `sequence` (sampling, stop conditions, streamed text), [`constraint`]
//! (grammar-constrained decoding: JSON schemas, regexes, choices, Lark, with llguidance; the
//! token masks are computed while the forward pass runs), [`gguf_tokenizer`] (the
//! tokenizer rebuilt from GGUF metadata), [`template`] (Jinja chat templates), [`tools`] (tool
//! calling: the prompt that offers tools, the grammar of a required call, the parser of the
//! calls in an answer), [`convert`]
//! (GGUF → safetensors folder) and `validate` (the config checked against the file's tensors
//! and the machine's memory before anything is allocated). [`Llm::step`] advances any number
//! of sequences by one forward pass: that is what continuous batching is built on.
//!
//! A loaded model is an [`LlmModel`]: an [`Llm`] on one of the two backends. Sequences are
//! typed by their backend ([`Sequence<B>`]), so a sequence can only ever be stepped by a model
//! of its own kind; that is checked by the compiler, not at run time. Code that batches is
//! written once, generic over [`Backend`], and reached through [`with_llm!`](crate::with_llm).

mod attention;
pub mod config;
pub mod constraint;
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
pub mod tools;
mod types;
pub(crate) mod validate;
pub mod weights;

use std::sync::Arc;

use tokenizers::Tokenizer;
use xi_api::launch::DEFAULT_MAX_NUM_BATCHED_TOKENS;

use crate::error::EngineError;
use crate::placement::Placement;
pub use config::LlmConfig;
pub use constraint::{CompiledGrammar, GrammarCompiler, MaskStats};
pub use cpu::CpuBackend;
pub use decoder::Backend;
use decoder::{CacheOf, Decoder, KvLen};
pub use load::gguf_file_in;
pub use portable::TensorBackend;
pub use sequence::{Sequence, Update};
pub use template::{ChatMessage, ChatTemplate};
pub use types::{FinishReason, Generated, GenerationParams, LoadOptions, TokenLogprobs};
pub use xi_api::guide::Guide;

/// A loaded LLM, on the backend its placement chose. What needs no sequence of its own (the
/// config, the chat template, tokenizing, one-off generation) is here; batched generation goes
/// to the typed [`Llm`] through [`with_llm!`](crate::with_llm).
pub enum LlmModel {
    /// Our integer kernels.
    Cpu(Llm<CpuBackend>),
    /// candle tensor ops on the placement's device (the GPU path).
    Portable(Llm<TensorBackend>),
}

/// Runs `$body` with `$m` bound to the [`Llm`] inside an [`LlmModel`], whichever its backend;
/// `$body` is compiled once per backend, so it may call generic code over [`Backend`].
///
/// ```no_run
/// # fn demo(model: &xi_engine::llm::LlmModel) {
/// let context = xi_engine::with_llm!(model, m => m.context_length());
/// # }
/// ```
///
/// A sequence started on one backend cannot be stepped by a model of the other:
///
/// ```compile_fail
/// use xi_engine::llm::{CpuBackend, GenerationParams, Llm, TensorBackend};
/// fn mix(cpu: &Llm<CpuBackend>, portable: &Llm<TensorBackend>) {
///     let mut seq = portable.start(vec![1], GenerationParams::GREEDY).unwrap();
///     cpu.step(&mut [&mut seq], 32).unwrap();
/// }
/// ```
///
/// while the same code on one backend compiles:
///
/// ```no_run
/// use xi_engine::llm::{GenerationParams, Llm, TensorBackend};
/// fn same(portable: &Llm<TensorBackend>) {
///     let mut seq = portable.start(vec![1], GenerationParams::GREEDY).unwrap();
///     portable.step(&mut [&mut seq], 32).unwrap();
/// }
/// ```
#[macro_export]
macro_rules! with_llm {
    ($model:expr, $m:ident => $body:expr) => {
        match $model {
            $crate::llm::LlmModel::Cpu($m) => $body,
            $crate::llm::LlmModel::Portable($m) => $body,
        }
    };
}

/// An LLM on backend `B`: its decoder, tokenizer, chat template and end tokens.
pub struct Llm<B: Backend> {
    decoder: Decoder<B>,
    placement: Placement,
    tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
    end_ids: Vec<u32>,
    /// The grammar compiler (shares the tokenizer; builds nothing until the first grammar).
    grammars: GrammarCompiler,
}

impl LlmModel {
    pub fn context_length(&self) -> usize {
        with_llm!(self, m => m.context_length())
    }

    pub fn config(&self) -> &LlmConfig {
        with_llm!(self, m => m.config())
    }

    /// Where the model runs.
    pub fn placement(&self) -> &Placement {
        with_llm!(self, m => m.placement())
    }

    /// The model's chat template, if it has one (cheap to clone: the worker renders chats with
    /// it off the model's thread, or hands its source to a sandbox).
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        with_llm!(self, m => m.chat_template())
    }

    /// Renders a chat with the model's template.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        with_llm!(self, m => m.chat_prompt(messages))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        with_llm!(self, m => m.encode(text))
    }

    /// See [`Llm::compile_grammar`].
    pub fn compile_grammar(&self, grammar: &Guide) -> Result<CompiledGrammar, EngineError> {
        with_llm!(self, m => m.compile_grammar(grammar))
    }

    /// See [`Llm::grammar_compiler`].
    pub fn grammar_compiler(&self) -> GrammarCompiler {
        with_llm!(self, m => m.grammar_compiler())
    }

    /// See [`Llm::next_token_logits`].
    pub fn next_token_logits(&self, prompt: &[u32]) -> Result<Vec<f32>, EngineError> {
        with_llm!(self, m => m.next_token_logits(prompt))
    }

    /// See [`Llm::generate`].
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, EngineError> {
        with_llm!(self, m => m.generate(prompt, params, on_text))
    }
}

impl<B: Backend> Llm<B> {
    pub fn context_length(&self) -> usize {
        self.decoder.config.context_length
    }

    pub fn config(&self) -> &LlmConfig {
        &self.decoder.config
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

    /// Compiles `grammar` for this model, to hold a sequence to it
    /// ([`Sequence::constrain`]). Safe to call from any thread while the model steps; the
    /// first call builds the model's grammar compiler (its token trie), which takes a while.
    /// A grammar llguidance cannot compile is `InvalidInput` ("invalid grammar: ...").
    pub fn compile_grammar(&self, grammar: &Guide) -> Result<CompiledGrammar, EngineError> {
        self.grammars.compile(grammar)
    }

    /// The model's grammar compiler, to compile grammars where the model is not (the worker
    /// compiles a request's grammar before it queues the request).
    pub fn grammar_compiler(&self) -> GrammarCompiler {
        self.grammars.clone()
    }

    /// A new sequence for `prompt`; refused when the prompt leaves no room in the context.
    pub fn start(
        &self,
        prompt: Vec<u32>,
        params: GenerationParams,
    ) -> Result<Sequence<B>, EngineError> {
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
        let vocab = self.decoder.config.vocab_size as u32;
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
            self.decoder.new_cache(),
        ))
    }

    /// Advances every unfinished sequence in `seqs` by one forward pass: sequences that are
    /// decoding add one token each; sequences still reading their prompt add up to what is left
    /// of `token_budget` (chunked prefill, so a long prompt never stalls the others for long).
    /// Returns one update per sequence, in order. The token masks of constrained sequences that
    /// sample in this step are computed on a second thread while the forward pass runs.
    pub fn step(
        &self,
        seqs: &mut [&mut Sequence<B>],
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
            if s.samples_after(take[i]) {
                wanted.push(tokens.len() as u32 - 1);
            }
            members.push(i);
        }
        let mut updates: Vec<Update> = seqs.iter().map(|_| Update::default()).collect();
        if tokens.is_empty() {
            return Ok(updates);
        }
        let logits = {
            let mut caches: Vec<&mut CacheOf<B>> = Vec::with_capacity(members.len());
            let mut masks: Vec<&mut constraint::Constraint> = Vec::new();
            for (i, s) in seqs.iter_mut().enumerate() {
                if take[i] == 0 {
                    continue;
                }
                let samples = s.samples_after(take[i]);
                let s: &mut Sequence<B> = s;
                caches.push(&mut s.cache);
                if let (true, Some(c)) = (samples, s.constraint.as_mut()) {
                    masks.push(c);
                }
            }
            self.forward_with_masks(&tokens, &spans, &mut caches, &wanted, masks)?
        };
        let mut logits = logits.into_iter();
        for &i in &members {
            if seqs[i].pending() == 0 && !seqs[i].ready_to_fork() {
                let row = logits
                    .next()
                    .ok_or_else(|| EngineError::internal("missing logits row"))?;
                updates[i] = seqs[i].advance(row, &self.end_ids, &self.tokenizer)?;
            }
        }
        Ok(updates)
    }

    /// One forward pass, with the given sequences' token masks computed on a scoped thread
    /// meanwhile (a slow mask then costs no more than the pass itself).
    fn forward_with_masks(
        &self,
        tokens: &[u32],
        spans: &[usize],
        caches: &mut [&mut CacheOf<B>],
        wanted: &[u32],
        masks: Vec<&mut constraint::Constraint>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        if masks.is_empty() {
            return self.decoder.forward(tokens, spans, caches, wanted);
        }
        std::thread::scope(|scope| {
            let masker = scope.spawn(move || {
                for c in masks {
                    c.prepare_mask();
                }
            });
            let rows = self.decoder.forward(tokens, spans, caches, wanted);
            masker
                .join()
                .map_err(|_| EngineError::internal("the token mask thread panicked"))?;
            rows
        })
    }

    /// The logits of the token that would follow `prompt` (one forward pass, no sampling).
    pub fn next_token_logits(&self, prompt: &[u32]) -> Result<Vec<f32>, EngineError> {
        let seq = self.start(prompt.to_vec(), GenerationParams::GREEDY)?;
        let mut cache = seq.cache;
        let last = prompt.len() as u32 - 1;
        let mut rows = self
            .decoder
            .forward(prompt, &[prompt.len()], &mut [&mut cache], &[last])?;
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
