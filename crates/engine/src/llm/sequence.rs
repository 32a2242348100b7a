//! One generation in progress: its tokens and KV cache, its sampler, and the text it has let
//! out so far (stop strings are held back until they can no longer match, so they are never
//! streamed).

use std::collections::HashMap;

use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokenizers::Tokenizer;

use super::decoder::{Backend, CacheOf, KvLen};
use super::{FinishReason, GenerationParams};
use crate::error::EngineError;

/// One generation on a model of backend `B`; its KV cache is that backend's own kind.
pub struct Sequence<B: Backend> {
    pub(super) cache: CacheOf<B>,
    /// Prompt then generated tokens; those past `cache.len()` still have to be computed.
    pub(super) tokens: Vec<u32>,
    prompt_len: usize,
    max_new: usize,
    params: GenerationParams,
    sampler: LogitsProcessor,
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    /// Incremental detokenization offsets into the generated tokens.
    prefix_offset: usize,
    read_offset: usize,
    hold_back: usize,
    finished: Option<FinishReason>,
}

/// What one step produced for a sequence.
#[derive(Debug, Default)]
pub struct Update {
    /// Text that became final in this step (may be empty).
    pub text: String,
    /// Set when the sequence ended in this step.
    pub finished: Option<FinishReason>,
}

impl<B: Backend> Sequence<B> {
    pub(super) fn new(
        prompt: Vec<u32>,
        params: GenerationParams,
        max_new: usize,
        cache: CacheOf<B>,
    ) -> Sequence<B> {
        let sampling = match (params.temperature, params.top_k, params.top_p) {
            (t, _, _) if t < 1e-7 => Sampling::ArgMax,
            (t, Some(k), Some(p)) => Sampling::TopKThenTopP {
                k,
                p,
                temperature: t,
            },
            (t, Some(k), None) => Sampling::TopK { k, temperature: t },
            (t, None, Some(p)) => Sampling::TopP { p, temperature: t },
            (t, None, None) => Sampling::All { temperature: t },
        };
        let hold_back = params
            .stop
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        Sequence {
            cache,
            prompt_len: prompt.len(),
            tokens: prompt,
            max_new,
            sampler: LogitsProcessor::from_sampling(params.seed, sampling),
            params,
            text: String::new(),
            emitted: 0,
            prefix_offset: 0,
            read_offset: 0,
            hold_back,
            finished: None,
        }
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_len
    }

    pub fn completion_tokens(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// The text so far (final once the sequence has finished).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn finished(&self) -> Option<FinishReason> {
        self.finished
    }

    /// Tokens not yet run through the model.
    pub(super) fn pending(&self) -> usize {
        self.tokens.len() - self.cache.len()
    }

    /// Ends the sequence early (the client went away); the rest of the text is dropped.
    pub fn cancel(&mut self) {
        self.finished.get_or_insert(FinishReason::Stop);
    }

    /// Picks the next token from `logits` and updates the text.
    pub(super) fn advance(
        &mut self,
        mut logits: Vec<f32>,
        end_ids: &[u32],
        tokenizer: &Tokenizer,
    ) -> Result<Update, EngineError> {
        self.penalize(&mut logits);
        let n = logits.len();
        let logits = candle_core::Tensor::from_vec(logits, n, &candle_core::Device::Cpu)?;
        let next = self.sampler.sample(&logits)?;
        let at_end = !self.params.ignore_eos && end_ids.contains(&next);
        if at_end || self.params.stop_token_ids.contains(&next) {
            return Ok(self.finish(FinishReason::Stop));
        }
        self.tokens.push(next);
        let piece = self.decode_new(tokenizer)?;
        let from = self.emitted;
        self.text.push_str(&piece);
        // A stop string can only start in the part not yet let out (see `hold_back`).
        if let Some(at) = self
            .params
            .stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
        {
            self.text.truncate(at);
            return Ok(self.finish(FinishReason::Stop));
        }
        if self.completion_tokens() >= self.max_new {
            return Ok(self.finish(FinishReason::Length));
        }
        let mut safe = self.text.len().saturating_sub(self.hold_back);
        while !self.text.is_char_boundary(safe) {
            safe -= 1;
        }
        let mut update = Update::default();
        if safe > self.emitted {
            update.text = self.text[self.emitted..safe].to_string();
            self.emitted = safe;
        }
        Ok(update)
    }

    fn finish(&mut self, reason: FinishReason) -> Update {
        self.finished = Some(reason);
        let text = self.text[self.emitted.min(self.text.len())..].to_string();
        self.emitted = self.text.len();
        Update {
            text,
            finished: Some(reason),
        }
    }

    /// The text the newest token adds, once it decodes to whole characters.
    fn decode_new(&mut self, tokenizer: &Tokenizer) -> Result<String, EngineError> {
        let generated = &self.tokens[self.prompt_len..];
        let decode = |ids: &[u32]| {
            tokenizer
                .decode(ids, true)
                .map_err(|e| EngineError::InvalidInput(format!("cannot decode tokens: {e}")))
        };
        let before = decode(&generated[self.prefix_offset..self.read_offset])?;
        let now = decode(&generated[self.prefix_offset..])?;
        if now.len() > before.len() && !now.ends_with('\u{fffd}') {
            if let Some(piece) = now.get(before.len()..) {
                self.prefix_offset = self.read_offset;
                self.read_offset = generated.len();
                return Ok(piece.to_string());
            }
        }
        Ok(String::new())
    }

    /// Repetition penalty (over prompt and output, as transformers does) and OpenAI's presence
    /// and frequency penalties (over the output).
    fn penalize(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = std::collections::HashSet::new();
            for &t in &self.tokens {
                if seen.insert(t) {
                    if let Some(v) = logits.get_mut(t as usize) {
                        *v = if *v >= 0.0 {
                            *v / p.repetition_penalty
                        } else {
                            *v * p.repetition_penalty
                        };
                    }
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in self.generated() {
                *counts.entry(t).or_default() += 1;
            }
            for (t, count) in counts {
                if let Some(v) = logits.get_mut(t as usize) {
                    *v -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
    }
}
