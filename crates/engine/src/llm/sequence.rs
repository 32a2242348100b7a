//! One generation in progress: its tokens and KV cache, its sampler, and the text it has let
//! out so far (stop strings are held back until they can no longer match, so they are never
//! streamed). A sequence may be held to a grammar ([`Sequence::constrain`]): then it samples only
//! tokens the grammar allows and ends as soon as the grammar is complete.

use std::collections::HashMap;

use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokenizers::Tokenizer;

use super::constraint::{CompiledGrammar, Constraint, MaskStats};
use super::decoder::{Backend, CacheOf, KvLen};
use super::{FinishReason, GenerationParams, TokenLogprobs};
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
    /// The grammar the output must follow, if any.
    pub(super) constraint: Option<Constraint>,
    /// Log probabilities of tokens sampled since the last update (with `params.logprobs`).
    logprobs: Vec<TokenLogprobs>,
    /// The prompt's last token is held back (see [`Sequence::hold_for_forks`]).
    held: bool,
}

/// What one step produced for a sequence.
#[derive(Debug, Default)]
pub struct Update {
    /// Text that became final in this step (may be empty).
    pub text: String,
    /// Set when the sequence ended in this step.
    pub finished: Option<FinishReason>,
    /// With `logprobs` asked for: the tokens sampled in this step (not an end or stop token,
    /// which is not part of the answer). Their text may come in a later update.
    pub logprobs: Vec<TokenLogprobs>,
}

impl<B: Backend> Sequence<B> {
    pub(super) fn new(
        prompt: Vec<u32>,
        params: GenerationParams,
        max_new: usize,
        cache: CacheOf<B>,
    ) -> Sequence<B> {
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
            sampler: sampler(&params),
            params,
            text: String::new(),
            emitted: 0,
            prefix_offset: 0,
            read_offset: 0,
            hold_back,
            finished: None,
            constraint: None,
            logprobs: Vec::new(),
            held: false,
        }
    }

    /// Holds the prompt's last token back, so that the sequence reads its prompt but never
    /// samples: [`fork`](Self::fork) then gives sequences that share what it read (`n` > 1).
    pub fn hold_for_forks(&mut self) {
        self.held = self.generated().is_empty();
    }

    /// Whether the sequence has read all of its prompt but the held-back token.
    pub fn ready_to_fork(&self) -> bool {
        self.held && self.pending() == 0
    }

    /// Lets a held sequence go on (it reads its last prompt token and samples).
    pub fn release(&mut self) {
        self.held = false;
    }

    /// A new sequence with this one's prompt, the keys and values it has read so far, its
    /// grammar in its initial state, and its own `seed`; meant for a sequence that is
    /// [`ready_to_fork`](Self::ready_to_fork). It reads the last prompt token itself (one
    /// token, in the next step) and samples on its own.
    pub fn fork(&self, seed: u64) -> Result<Sequence<B>, EngineError> {
        let params = GenerationParams {
            seed,
            ..self.params.clone()
        };
        let keep = self.cache.len().min(self.prompt_len.saturating_sub(1));
        Ok(Sequence {
            cache: self.cache.fork(keep)?,
            tokens: self.tokens[..self.prompt_len].to_vec(),
            prompt_len: self.prompt_len,
            max_new: self.max_new,
            sampler: sampler(&params),
            params,
            text: String::new(),
            emitted: 0,
            prefix_offset: 0,
            read_offset: 0,
            hold_back: self.hold_back,
            finished: None,
            constraint: self.constraint.as_ref().map(Constraint::fresh),
            logprobs: Vec::new(),
            held: false,
        })
    }

    /// Holds the rest of the output to `grammar` (compiled by the same model: see
    /// [`Llm::compile_grammar`](super::Llm::compile_grammar)). Meant before the first step;
    /// tokens already generated are fed to the grammar first. With a grammar the sequence ends
    /// (`Stop`) once the grammar is complete, even with `ignore_eos`; its end tokens can only
    /// be sampled where the grammar could end.
    pub fn constrain(&mut self, grammar: CompiledGrammar) {
        let mut constraint = Constraint::new(grammar);
        if let Err(e) = constraint.consume_all(self.generated()) {
            tracing::warn!(error = %e, "the output so far does not fit the grammar");
        }
        self.constraint = Some(constraint);
    }

    /// Whether the sequence is held to a grammar.
    pub fn is_constrained(&self) -> bool {
        self.constraint.is_some()
    }

    /// What computing this sequence's token masks has cost so far.
    pub fn mask_stats(&self) -> MaskStats {
        self.constraint
            .as_ref()
            .map(Constraint::stats)
            .unwrap_or_default()
    }

    /// Tokens whose keys and values the sequence holds.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// The seed its sampler started from.
    pub fn seed(&self) -> u64 {
        self.params.seed
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

    /// Tokens to run through the model (a held-back prompt token is not one yet).
    pub(super) fn pending(&self) -> usize {
        (self.tokens.len() - self.cache.len()).saturating_sub(usize::from(self.held))
    }

    /// Whether the next pass's last token of this sequence gives logits to sample from.
    pub(super) fn samples_after(&self, take: usize) -> bool {
        !self.held && take == self.pending()
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
        if let Some(constraint) = &mut self.constraint {
            if constraint.is_stopped() {
                return Ok(self.finish(FinishReason::Stop));
            }
        }
        // Of the model's own distribution, before anything below changes the logits.
        let likely = self.params.logprobs.map(|k| Likely::of(&logits, k));
        if let Some(constraint) = &mut self.constraint {
            if let Err(e) = constraint.mask_logits(&mut logits) {
                return Ok(self.grammar_failed(&e));
            }
        }
        self.penalize(&mut logits);
        let n = logits.len();
        let logits = candle_core::Tensor::from_vec(logits, n, &candle_core::Device::Cpu)?;
        let next = self.sampler.sample(&logits)?;
        // With a grammar, an end token is only allowed where the grammar is complete: it ends
        // the sequence whatever `ignore_eos` says.
        let constrained = self.constraint.is_some();
        let at_end = (constrained || !self.params.ignore_eos) && end_ids.contains(&next);
        if at_end || self.params.stop_token_ids.contains(&next) {
            return Ok(self.finish(FinishReason::Stop));
        }
        if let Some(constraint) = &mut self.constraint {
            if let Err(e) = constraint.consume(next) {
                return Ok(self.grammar_failed(&e));
            }
        }
        if let Some(likely) = likely {
            self.logprobs.push(likely.entry(next));
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
        // A grammar that nothing more can extend ends the sequence, even on its last token.
        if self.constraint.as_ref().is_some_and(Constraint::is_stopped) {
            return Ok(self.finish(FinishReason::Stop));
        }
        if self.completion_tokens() >= self.max_new {
            return Ok(self.finish(FinishReason::Length));
        }
        let mut safe = self.text.len().saturating_sub(self.hold_back);
        while !self.text.is_char_boundary(safe) {
            safe -= 1;
        }
        let mut update = Update {
            logprobs: std::mem::take(&mut self.logprobs),
            ..Update::default()
        };
        if safe > self.emitted {
            update.text = self.text[self.emitted..safe].to_string();
            self.emitted = safe;
        }
        Ok(update)
    }

    /// The grammar failed mid-generation (a bug of llguidance's or a grammar it cannot follow
    /// on): the sequence ends with what it has rather than failing the whole step.
    fn grammar_failed(&mut self, error: &str) -> Update {
        tracing::warn!(error, "constrained decoding failed; ending the sequence");
        self.finish(FinishReason::Stop)
    }

    fn finish(&mut self, reason: FinishReason) -> Update {
        self.finished = Some(reason);
        let text = self.text[self.emitted.min(self.text.len())..].to_string();
        self.emitted = self.text.len();
        Update {
            text,
            finished: Some(reason),
            logprobs: std::mem::take(&mut self.logprobs),
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

/// One position's log-softmax normaliser and most likely tokens, from the raw logits.
struct Likely {
    log_total: f32,
    logits_at: Vec<(u32, f32)>,
    /// The raw logits: the sampled token's is read from them once it is known.
    raw: Vec<f32>,
}

impl Likely {
    fn of(logits: &[f32], k: usize) -> Likely {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&v| f64::from((v - max).exp())).sum();
        let log_total = max + sum.ln() as f32;
        let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        for (i, &v) in logits.iter().enumerate() {
            if top.len() < k || top.last().is_some_and(|&(_, low)| v > low) {
                let at = top.partition_point(|&(_, w)| w >= v);
                top.insert(at, (i as u32, v));
                top.truncate(k);
            }
        }
        Likely {
            log_total,
            logits_at: top,
            raw: logits.to_vec(),
        }
    }

    fn entry(&self, token: u32) -> TokenLogprobs {
        let logit = self
            .raw
            .get(token as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        TokenLogprobs {
            token,
            logprob: logit - self.log_total,
            top: self
                .logits_at
                .iter()
                .map(|&(t, v)| (t, v - self.log_total))
                .collect(),
        }
    }
}

/// The sampler `params` asks for.
fn sampler(params: &GenerationParams) -> LogitsProcessor {
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
    LogitsProcessor::from_sampling(params.seed, sampling)
}
