//! The public values of text generation: how to pick and when to stop, what came out, how to
//! load.

use candle_core::quantized::GgmlDType;

use crate::placement::Placement;

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
    /// Report each sampled token's log probability and this many most likely alternatives
    /// ([`Update::logprobs`](super::Update::logprobs)); `None`: none.
    pub logprobs: Option<usize>,
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
        logprobs: None,
    };
}

/// A sampled token's log probability under the model (the log-softmax of its logits, before
/// penalties, temperature, cuts and grammar masks, as vLLM reports them) and the most likely
/// tokens at its position, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
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
