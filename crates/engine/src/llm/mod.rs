//! Text generation with decoder-only transformers (llama family, Qwen2, Qwen3) from GGUF files
//! (quantized) or Hugging Face safetensors folders.
//!
//! Parts: [`config`] (the model's shape), [`weights`] (GGUF / safetensors tensors under one
//! naming), [`transformer`] + [`attention`] (our CPU forward pass over packed batches with one KV
//! cache per sequence), [`portable`] (the same forward pass from candle tensor ops, for GPUs:
//! see [`crate::Placement`]), [`sequence`] (sampling, stop conditions, streamed text),
//! [`gguf_tokenizer`] (the tokenizer rebuilt from GGUF metadata), [`template`] (Jinja chat
//! templates), [`convert`] (GGUF → safetensors folder) and `validate` (the config checked
//! against the file's tensors and the machine's memory before anything is allocated).
//! [`LlmModel::step`] advances any number of sequences by one forward pass: that is what
//! continuous batching is built on.

mod attention;
pub mod config;
pub mod convert;
pub mod gguf_tokenizer;
mod portable;
mod qlinear;
mod sequence;
pub mod template;
mod transformer;
mod validate;
pub mod weights;

use std::path::Path;

use candle_core::quantized::GgmlDType;
use serde_json::Value;
use tokenizers::Tokenizer;
use xi_api::launch::DEFAULT_MAX_NUM_BATCHED_TOKENS;

use crate::checks::tokenizer_problem;
use crate::error::EngineError;
use crate::files::{read_optional_json, ModelFiles};
use crate::placement::Placement;
pub use config::LlmConfig;
use portable::PortableTransformer;
use sequence::Cache;
pub use sequence::{Sequence, Update};
pub use template::{ChatMessage, ChatTemplate};
use transformer::Transformer;
use weights::{GgufWeights, SafetensorsWeights};

/// How to pick and when to stop.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_tokens: usize,
    /// 0 (or below 1e-7) is greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub repetition_penalty: f32,
    /// OpenAI's: subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// OpenAI's: subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    pub seed: u64,
    /// Strings that end generation; they are not part of the output.
    pub stop: Vec<String>,
    /// Token ids that end generation, besides the model's own end tokens.
    pub stop_token_ids: Vec<u32>,
    /// Keep going past the model's end tokens (vLLM's `ignore_eos`; for benchmarks).
    pub ignore_eos: bool,
}

impl GenerationParams {
    /// Greedy decoding of at most 256 tokens with no penalties and no stop strings: a preset for
    /// tests and benchmarks (`..GenerationParams::GREEDY`). It is not the API's defaults: a
    /// request's defaults live in `xi_api::generation` (temperature 1, max_tokens 1024), which
    /// the worker applies before it starts a sequence.
    pub const GREEDY: GenerationParams = GenerationParams {
        max_tokens: 256,
        temperature: 0.0,
        top_p: None,
        top_k: None,
        repetition_penalty: 1.0,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        seed: 0,
        stop: Vec::new(),
        stop_token_ids: Vec::new(),
        ignore_eos: false,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub text: String,
    /// The generated token ids (stop tokens excluded).
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
}

/// How to load: optional re-quantisation and a chat template for files that carry none.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Converts every matrix at load: `Q8_0` (fast on CPU, a quarter of f32's memory) or `F32`
    /// (exact). `None` keeps the file's format.
    pub requantize: Option<GgmlDType>,
    /// The chat template to use when the model files have none (the catalogue family's).
    pub fallback_template: Option<String>,
    /// Where the model runs: the CPU kernels by default; a GPU (or the portable path on the
    /// CPU) otherwise.
    pub placement: Placement,
}

/// Tokens that end a turn in common chat formats; generation stops at any the vocabulary has.
const END_OF_TURN: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
];

/// The forward pass a model runs.
enum Body {
    Cpu(Transformer),
    Portable(PortableTransformer),
}

impl Body {
    fn config(&self) -> &LlmConfig {
        match self {
            Body::Cpu(t) => &t.config,
            Body::Portable(t) => &t.config,
        }
    }

    fn new_cache(&self) -> Cache {
        match self {
            Body::Cpu(t) => Cache::Cpu(attention::KvCache::new(t.config.layers)),
            Body::Portable(t) => Cache::Portable(t.new_cache()),
        }
    }

    /// One forward pass (see [`Transformer::forward`]); every cache must be of this body's kind.
    fn forward(
        &self,
        tokens: &[u32],
        spans: &[usize],
        caches: Vec<&mut Cache>,
        wanted: &[u32],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let mismatch = || EngineError::internal("a KV cache of another kind");
        match self {
            Body::Cpu(t) => {
                let mut own = Vec::with_capacity(caches.len());
                for cache in caches {
                    match cache {
                        Cache::Cpu(c) => own.push(c),
                        Cache::Portable(_) => return Err(mismatch()),
                    }
                }
                t.forward(tokens, spans, &mut own, wanted)
            }
            Body::Portable(t) => {
                let mut own = Vec::with_capacity(caches.len());
                for cache in caches {
                    match cache {
                        Cache::Portable(c) => own.push(c),
                        Cache::Cpu(_) => return Err(mismatch()),
                    }
                }
                t.forward(tokens, spans, &mut own, wanted)
            }
        }
    }
}

pub struct LlmModel {
    body: Body,
    placement: Placement,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    end_ids: Vec<u32>,
}

impl LlmModel {
    /// Loads `path`: a `.gguf` file, a folder holding one `.gguf` file, or a Hugging Face folder
    /// (`config.json`, `tokenizer.json`, `*.safetensors`). `on_progress` sees 0..1.
    pub fn load(
        path: &Path,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(f32),
    ) -> Result<LlmModel, EngineError> {
        if path.is_dir() && path.join("config.json").is_file() {
            return Self::load_safetensors(path, options, on_progress);
        }
        let file = gguf_file_in(path)?;
        Self::load_gguf_with(&file, options, on_progress)
    }

    /// Loads a GGUF file (see [`LoadOptions`]).
    pub fn load_gguf(
        path: &Path,
        fallback_template: Option<String>,
        requantize: Option<GgmlDType>,
    ) -> Result<LlmModel, EngineError> {
        let options = LoadOptions {
            requantize,
            fallback_template,
            ..Default::default()
        };
        Self::load_gguf_with(path, &options, &mut |_| {})
    }

    fn load_gguf_with(
        path: &Path,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(f32),
    ) -> Result<LlmModel, EngineError> {
        let bad = |e: &dyn std::fmt::Display| EngineError::bad_file(path, e);
        let mut file = std::fs::File::open(path).map_err(|e| bad(&format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| bad(&format!("cannot open: {e}")))?
            .len();
        let content = validate::read_gguf(&mut file, path)?;
        let (config, names) = LlmConfig::parse_gguf(&content, path)?;
        let catalogue = validate::Catalogue::gguf(&content, size, path)?;
        let on_cpu = options.placement.device.is_cpu();
        validate::check_model(
            &config,
            &names,
            &catalogue,
            options.requantize,
            on_cpu,
            path,
        )?;
        let (tokenizer, bos, eos) = gguf_tokenizer::from_gguf(&content)?;
        let name = |id: Option<u32>| {
            id.and_then(|i| tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let source = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .or_else(|| options.fallback_template.clone());
        let template = source
            .map(|s| ChatTemplate::new(s, name(bos), name(eos)))
            .transpose()?;
        let eot = content
            .metadata
            .get("tokenizer.ggml.eot_token_id")
            .and_then(|v| v.to_u32().ok());
        let end_ids = end_ids(&tokenizer, [eos, eot].into_iter().flatten());
        let mut weights = GgufWeights::new(content, file, options.requantize, path);
        let parts = (tokenizer, template, end_ids);
        Self::assemble(path, config, &mut weights, parts, options, on_progress)
    }

    /// Loads the weights and puts the model together (both formats end here).
    fn assemble(
        origin: &Path,
        config: LlmConfig,
        weights: &mut dyn weights::WeightSource,
        (tokenizer, template, end_ids): (Tokenizer, Option<ChatTemplate>, Vec<u32>),
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(f32),
    ) -> Result<LlmModel, EngineError> {
        let placement = options.placement.clone();
        let mut on_layer = |done: usize, all: usize| on_progress(done as f32 / all as f32);
        let body = if placement.cpu_kernels() {
            Body::Cpu(Transformer::load(config, weights, &mut on_layer)?)
        } else {
            Body::Portable(PortableTransformer::load(
                config,
                weights,
                &placement,
                &mut on_layer,
            )?)
        };
        tracing::info!(from = %origin.display(), arch = body.config().arch.name(),
            context = body.config().context_length, on = %placement.describe(), "LLM loaded");
        Ok(LlmModel {
            body,
            placement,
            tokenizer,
            template,
            end_ids,
        })
    }

    /// Loads a Hugging Face folder: `config.json`, `tokenizer.json`, safetensors weights, and
    /// optionally `tokenizer_config.json` (chat template, special tokens) and
    /// `generation_config.json` (end tokens).
    pub fn load_safetensors(
        folder: &Path,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(f32),
    ) -> Result<LlmModel, EngineError> {
        let files = ModelFiles::resolve(folder)?;
        let config_path = folder.join("config.json");
        let (config, names) = LlmConfig::parse_hf(&files.config, &config_path)?;
        let mut weights = SafetensorsWeights::open(&files.weights, options.requantize)?;
        let origin = files.weights.first().cloned().unwrap_or_default();
        let catalogue = validate::Catalogue::safetensors(weights.shapes(&origin)?);
        let on_cpu = options.placement.device.is_cpu();
        let requantize = options.requantize.filter(|d| *d != GgmlDType::F32);
        validate::check_model(
            &config,
            &names,
            &catalogue,
            requantize,
            on_cpu,
            &config_path,
        )?;
        let tokenizer = Tokenizer::from_file(&files.tokenizer)
            .map_err(|e| EngineError::bad_file(&files.tokenizer, tokenizer_problem(&*e)))?;
        let tok_config =
            read_optional_json(&folder.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let generation =
            read_optional_json(&folder.join("generation_config.json"))?.unwrap_or(Value::Null);
        let special = |key: &str| -> String {
            let v = &tok_config[key];
            v.as_str()
                .or_else(|| v["content"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        let template_source = match &tok_config["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => None,
        }
        .or_else(|| options.fallback_template.clone());
        let (bos, eos) = (special("bos_token"), special("eos_token"));
        let mut ids: Vec<u32> = Vec::new();
        for source in [&generation["eos_token_id"], &files.config["eos_token_id"]] {
            match source {
                Value::Number(n) => ids.extend(n.as_u64().map(|v| v as u32)),
                Value::Array(list) => {
                    ids.extend(list.iter().filter_map(Value::as_u64).map(|v| v as u32))
                }
                _ => {}
            }
        }
        ids.extend(tokenizer.token_to_id(&eos));
        let end_ids = end_ids(&tokenizer, ids.into_iter());
        let template = template_source
            .map(|s| ChatTemplate::new(s, bos, eos))
            .transpose()?;
        let parts = (tokenizer, template, end_ids);
        Self::assemble(folder, config, &mut weights, parts, options, on_progress)
    }

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
        let mut take = vec![0usize; seqs.len()];
        let mut used = 0;
        for (i, s) in seqs.iter().enumerate() {
            if s.finished().is_none() && s.pending() == 1 {
                take[i] = 1;
                used += 1;
            }
        }
        for (i, s) in seqs.iter().enumerate() {
            if s.finished().is_none() && s.pending() > 1 {
                let room = token_budget.saturating_sub(used);
                let room = if used == 0 { room.max(1) } else { room };
                take[i] = s.pending().min(room);
                used += take[i];
            }
        }
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

/// The end ids given plus every end-of-turn token the vocabulary has.
fn end_ids(tokenizer: &Tokenizer, given: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = given.collect();
    ids.extend(END_OF_TURN.iter().filter_map(|t| tokenizer.token_to_id(t)));
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The GGUF file of an LLM path: the path itself, or the one `.gguf` file in a folder.
pub fn gguf_file_in(path: &Path) -> Result<std::path::PathBuf, EngineError> {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "gguf") {
            return Ok(path.to_path_buf());
        }
        return Err(EngineError::bad_file(
            path,
            "is not a .gguf file (LLMs load from a .gguf file or a Hugging Face folder with config.json)",
        ));
    }
    let found: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| EngineError::bad_file(path, format!("cannot read: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(EngineError::bad_file(
            path,
            "holds neither a .gguf file nor config.json + safetensors weights",
        )),
        _ => Err(EngineError::bad_file(
            path,
            "holds several .gguf files; pass the file itself as model_path",
        )),
    }
}
