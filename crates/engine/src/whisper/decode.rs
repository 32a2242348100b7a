//! Decoding one 30 s window: greedy at temperature 0, sampling above it (`best_of` candidates
//! decoded as one batch), with OpenAI Whisper's logit rules.
//!
//! The rules, applied to every step's logits in this order (they are what makes the output
//! parse into timed segments, and what faster-whisper and transformers apply too):
//! - suppress blank: at the first step, no space and no end of text;
//! - suppressed tokens: the non-speech symbols and the task tokens, always;
//! - timestamps (when on): `<|notimestamps|>` never; timestamps come in pairs (after a pair
//!   a text token or the end must follow; after a lone one, another timestamp or the end);
//!   they never go backwards; the first token is a timestamp of at most 1.0 s; and when the
//!   timestamps' total probability beats every text token, a timestamp is taken.

use candle_core::Tensor;
use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;
use rayon::prelude::*;

use crate::error::EngineError;
use crate::whisper::model::{CrossKv, SelfCache, Whisper};
use crate::whisper::tokens::SpecialTokens;

/// Most tokens one window may generate (half the decoder's 448 positions, as OpenAI).
pub const SAMPLE_LEN: usize = 224;
/// Latest first timestamp, in 0.02 s steps (1.0 s).
const MAX_INITIAL_TIMESTAMP: u32 = 50;

/// What to decode in one window.
pub struct WindowRequest<'a> {
    /// The full prompt: `<|startofprev|>` + previous text (if any), then the start sequence
    /// (and `<|notimestamps|>` without timestamps).
    pub prompt: &'a [u32],
    /// Index of `<|startoftranscript|>` in `prompt` (where the no-speech probability is read).
    pub sot_index: usize,
    pub temperature: f32,
    /// Candidates sampled at a non-zero temperature (the most likely is kept).
    pub best_of: usize,
    pub timestamps: bool,
    /// Token ids never emitted.
    pub suppress: &'a [u32],
    /// Tokens generated at most (also bounded by the decoder's positions).
    pub max_tokens: usize,
}

/// The decoded window.
#[derive(Debug, Clone)]
pub struct WindowResult {
    /// Generated tokens, without the end of text.
    pub tokens: Vec<u32>,
    /// The sum of the tokens' log-probabilities over `tokens + 1`, OpenAI's measure for the temperature fallback.
    pub avg_logprob: f64,
    /// Probability of `<|nocaptions|>` at the start token.
    pub no_speech_prob: f64,
    pub temperature: f32,
}

struct Candidate {
    tokens: Vec<u32>,
    sum_logprob: f64,
    done: bool,
}

/// The most tokens `req` may generate, or an error for a prompt that leaves no room.
fn token_budget(model: &Whisper, req: &WindowRequest) -> Result<usize, EngineError> {
    let positions = model.config().max_target_positions;
    let max_tokens = req
        .max_tokens
        .min(SAMPLE_LEN)
        .min(positions.saturating_sub(req.prompt.len()));
    if req.prompt.is_empty() || req.sot_index >= req.prompt.len() || max_tokens == 0 {
        return Err(EngineError::internal(
            "a window prompt that leaves no room to decode",
        ));
    }
    Ok(max_tokens)
}

/// Runs the prompt of `n` candidates (`cross` holds `n` rows) into a new cache: the
/// no-speech probability and the last position's logits `[n, vocab]`.
fn prefill(
    model: &Whisper,
    cross: &CrossKv,
    special: &SpecialTokens,
    req: &WindowRequest,
    n: usize,
) -> Result<(SelfCache, f64, Tensor), EngineError> {
    let device = model.device();
    let mut cache = model.new_cache();
    let prompt: Vec<u32> = (0..n).flat_map(|_| req.prompt.iter().copied()).collect();
    let input = Tensor::from_vec(prompt, (n, req.prompt.len()), device)?;
    let out = model.decode(&input, cross, &mut cache, false)?;
    let last = req.prompt.len() - 1;
    // The no-speech probability, from the first candidate's logits at the start token.
    let no_speech_prob = match special.no_speech {
        Some(id) => {
            let at_sot =
                model.logits(&out.hidden.narrow(0, 0, 1)?.narrow(1, req.sot_index, 1)?)?;
            let row: Vec<f32> = at_sot.flatten_all()?.to_vec1()?;
            softmax_at(&row, id as usize)
        }
        None => 0.0,
    };
    let logits = model
        .logits(&out.hidden.narrow(1, last, 1)?)?
        .reshape((n, ()))?;
    Ok((cache, no_speech_prob, logits))
}

impl Candidate {
    fn new() -> Candidate {
        Candidate {
            tokens: Vec::new(),
            sum_logprob: 0.0,
            done: false,
        }
    }

    /// Applies the rules to this step's `row`, takes the token `pick` chooses from it and
    /// records it (the end of text finishes the candidate); returns the token.
    fn advance(
        &mut self,
        mut row: Vec<f32>,
        step: usize,
        req: &WindowRequest,
        special: &SpecialTokens,
        pick: impl FnOnce(&[f32]) -> u32,
    ) -> u32 {
        apply_rules(&mut row, &self.tokens, step, req, special);
        let logprobs = log_softmax(&row);
        let token = pick(&row);
        self.sum_logprob += f64::from(logprobs[token as usize]);
        if token == special.eot {
            self.done = true;
        } else {
            self.tokens.push(token);
        }
        token
    }
}

fn cancelled_error() -> EngineError {
    EngineError::InvalidInput("the request was cancelled".into())
}

/// OpenAI's measure over the candidates: the best by length-normalised log probability
/// (length penalty None: divide by the length), reported as the sum over `tokens + 1`.
fn best_result(
    candidates: Vec<Candidate>,
    no_speech_prob: f64,
    temperature: f32,
) -> Result<WindowResult, EngineError> {
    let best = candidates
        .into_iter()
        .max_by(|a, b| {
            let score = |c: &Candidate| c.sum_logprob / c.tokens.len().max(1) as f64;
            score(a).total_cmp(&score(b))
        })
        .ok_or_else(|| EngineError::internal("no candidate was decoded"))?;
    let avg_logprob = best.sum_logprob / (best.tokens.len() + 1) as f64;
    Ok(WindowResult {
        tokens: best.tokens,
        avg_logprob,
        no_speech_prob,
        temperature,
    })
}

/// Decodes one window of encoder output (`cross`: one batch row).
pub fn decode_window(
    model: &Whisper,
    cross: &CrossKv,
    special: &SpecialTokens,
    req: &WindowRequest,
    rng: &mut impl Rng,
    cancelled: &dyn Fn() -> bool,
) -> Result<WindowResult, EngineError> {
    let n = if req.temperature > 0.0 {
        req.best_of.max(1)
    } else {
        1
    };
    let device = model.device().clone();
    let max_tokens = token_budget(model, req)?;
    let repeated;
    let cross = if n > 1 {
        repeated = cross.repeat(n)?;
        &repeated
    } else {
        cross
    };
    let (mut cache, no_speech_prob, mut logits) = prefill(model, cross, special, req, n)?;
    let mut candidates: Vec<Candidate> = (0..n).map(|_| Candidate::new()).collect();
    for step in 0..max_tokens {
        if cancelled() {
            return Err(cancelled_error());
        }
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut next = Vec::with_capacity(n);
        for (cand, row) in candidates.iter_mut().zip(rows) {
            if cand.done {
                next.push(special.eot);
                continue;
            }
            next.push(cand.advance(row, step, req, special, |row| {
                if req.temperature > 0.0 {
                    sample(row, req.temperature, rng)
                } else {
                    argmax(row)
                }
            }));
        }
        if candidates.iter().all(|c| c.done) {
            break;
        }
        if step + 1 == max_tokens {
            break;
        }
        let input = Tensor::from_vec(next, (n, 1), &device)?;
        let out = model.decode(&input, cross, &mut cache, false)?;
        logits = model.logits(&out.hidden)?.reshape((n, ()))?;
    }
    best_result(candidates, no_speech_prob, req.temperature)
}

/// One window of [`decode_windows_greedy`] on its way.
struct GreedyRow {
    cache: SelfCache,
    candidate: Candidate,
    no_speech_prob: f64,
    max_tokens: usize,
    logits: Vec<f32>,
}

/// Decodes several windows greedily (temperature 0) in lockstep: each step runs every
/// unfinished window's next token through [`Whisper::decode_rows`] at once, so the weights
/// are read once per step for all of them. Window `i` is `windows[i]` (its own audio row
/// and request) and may be cancelled on its own by `cancelled[i]`; each result is exactly
/// what [`decode_window`] gives that window alone.
pub fn decode_windows_greedy(
    model: &Whisper,
    special: &SpecialTokens,
    windows: &[(&CrossKv, &WindowRequest)],
    cancelled: &[&dyn Fn() -> bool],
) -> Vec<Result<WindowResult, EngineError>> {
    let mut results: Vec<Option<Result<WindowResult, EngineError>>> =
        windows.iter().map(|_| None).collect();
    let mut rows: Vec<Option<GreedyRow>> = Vec::with_capacity(windows.len());
    for (i, (cross, req)) in windows.iter().enumerate() {
        let started = if req.temperature > 0.0 {
            Err(EngineError::internal(
                "a sampled window in the greedy batch",
            ))
        } else {
            token_budget(model, req).and_then(|max_tokens| {
                let (cache, no_speech_prob, logits) = prefill(model, cross, special, req, 1)?;
                Ok(GreedyRow {
                    cache,
                    candidate: Candidate::new(),
                    no_speech_prob,
                    max_tokens,
                    logits: logits.flatten_all()?.to_vec1()?,
                })
            })
        };
        match started {
            Ok(row) => rows.push(Some(row)),
            Err(e) => {
                results[i] = Some(Err(e));
                rows.push(None);
            }
        }
    }
    for step in 0.. {
        for (i, slot) in rows.iter_mut().enumerate() {
            if slot.is_some() && cancelled.get(i).is_some_and(|c| c()) {
                results[i] = Some(Err(cancelled_error()));
                *slot = None;
            }
        }
        // The logit rules run over the whole vocabulary for each row: on the pool.
        let tokens: Vec<Option<u32>> = rows
            .par_iter_mut()
            .enumerate()
            .map(|(i, slot)| {
                let row = slot.as_mut()?;
                let logits = std::mem::take(&mut row.logits);
                Some(
                    row.candidate
                        .advance(logits, step, windows[i].1, special, argmax),
                )
            })
            .collect();
        let mut stepping = Vec::new();
        for (i, token) in tokens.into_iter().enumerate() {
            let Some(token) = token else { continue };
            let finished = rows[i]
                .as_ref()
                .is_some_and(|row| row.candidate.done || step + 1 == row.max_tokens);
            if finished {
                if let Some(row) = rows[i].take() {
                    let result = best_result(vec![row.candidate], row.no_speech_prob, 0.0);
                    results[i] = Some(result);
                }
                continue;
            }
            stepping.push((i, token));
        }
        if stepping.is_empty() {
            break;
        }
        let tokens: Vec<u32> = stepping.iter().map(|&(_, t)| t).collect();
        let crosses: Vec<&CrossKv> = stepping.iter().map(|&(i, _)| windows[i].0).collect();
        let mut caches: Vec<&mut SelfCache> = Vec::with_capacity(stepping.len());
        for (i, slot) in rows.iter_mut().enumerate() {
            if let Some(row) = slot
                .as_mut()
                .filter(|_| stepping.iter().any(|&(s, _)| s == i))
            {
                caches.push(&mut row.cache);
            }
        }
        let logits = model
            .decode_rows(&tokens, &crosses, &mut caches)
            .and_then(|hidden| model.logits(&hidden))
            .and_then(|l| Ok(l.reshape((stepping.len(), ()))?.to_vec2::<f32>()?));
        match logits {
            Ok(all) => {
                for (&(i, _), l) in stepping.iter().zip(all) {
                    if let Some(row) = rows[i].as_mut() {
                        row.logits = l;
                    }
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for &(i, _) in &stepping {
                    results[i] = Some(Err(EngineError::internal(format!(
                        "a batched decoder step failed: {reason}"
                    ))));
                    rows[i] = None;
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(EngineError::internal("a window was not decoded"))))
        .collect()
}

/// Applies the logit rules of the module doc to one candidate's `row`.
fn apply_rules(
    row: &mut [f32],
    sampled: &[u32],
    step: usize,
    req: &WindowRequest,
    s: &SpecialTokens,
) {
    let vocab = row.len();
    let ban = |row: &mut [f32], t: u32| {
        if let Some(x) = row.get_mut(t as usize) {
            *x = f32::NEG_INFINITY;
        }
    };
    if step == 0 {
        for t in [220u32, s.eot] {
            // 220 is the byte-level BPE's lone space in every Whisper vocabulary.
            ban(row, t);
        }
    }
    for &t in req.suppress {
        ban(row, t);
    }
    if !req.timestamps {
        return;
    }
    ban(row, s.no_timestamps);
    let tb = (s.timestamp_begin as usize).min(vocab);
    let eot = (s.eot as usize).min(vocab);
    let is_ts = |t: u32| t >= s.timestamp_begin;
    let last_ts = sampled.last().is_some_and(|&t| is_ts(t));
    let penultimate_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
    if last_ts {
        if penultimate_ts {
            row[tb..].fill(f32::NEG_INFINITY);
        } else {
            row[..eot].fill(f32::NEG_INFINITY);
        }
    }
    if let Some(&latest) = sampled.iter().rev().find(|&&t| is_ts(t)) {
        // A timestamp may repeat only to close the pair it opened.
        let floor = if last_ts && !penultimate_ts {
            latest
        } else {
            latest + 1
        };
        row[tb..(floor as usize).min(vocab)].fill(f32::NEG_INFINITY);
    }
    if sampled.is_empty() {
        row[..tb].fill(f32::NEG_INFINITY);
        let latest_start = (tb + MAX_INITIAL_TIMESTAMP as usize + 1).min(vocab);
        row[latest_start..].fill(f32::NEG_INFINITY);
    }
    let logprobs = log_softmax(row);
    let ts_total = log_sum_exp(&logprobs[tb..]);
    let text_best = logprobs[..tb]
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    if ts_total > text_best {
        row[..tb].fill(f32::NEG_INFINITY);
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(row: &[f32], temperature: f32, rng: &mut impl Rng) -> u32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = row
        .iter()
        .map(|&x| f64::from((x - max) / temperature).exp())
        .collect();
    match WeightedIndex::new(&weights) {
        Ok(dist) => dist.sample(rng) as u32,
        Err(_) => argmax(row),
    }
}

fn log_sum_exp(xs: &[f32]) -> f32 {
    crate::softmax::log_sum_exp(xs)
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(row);
    row.iter().map(|&x| x - lse).collect()
}

fn softmax_at(row: &[f32], index: usize) -> f64 {
    let lse = log_sum_exp(row);
    row.get(index).map_or(0.0, |&x| f64::from((x - lse).exp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special() -> SpecialTokens {
        SpecialTokens {
            eot: 10,
            sot: 11,
            sot_prev: 12,
            no_timestamps: 13,
            timestamp_begin: 14,
            transcribe: None,
            translate: None,
            sot_lm: None,
            no_speech: None,
            languages: vec![],
        }
    }

    fn request(suppress: &[u32]) -> WindowRequest<'_> {
        WindowRequest {
            prompt: &[11],
            sot_index: 0,
            temperature: 0.0,
            best_of: 1,
            timestamps: true,
            suppress,
            max_tokens: 10,
        }
    }

    #[test]
    fn the_first_token_is_an_early_timestamp() {
        let s = special();
        let mut row = vec![5.0f32; 80];
        row[3] = 50.0; // a strong text token
        apply_rules(&mut row, &[], 0, &request(&[]), &s);
        assert!(row[..14].iter().all(|x| x.is_infinite()));
        assert!(row[14 + 51..].iter().all(|x| x.is_infinite()));
        assert!(row[14].is_finite() && row[14 + 50].is_finite());
    }

    #[test]
    fn after_a_pair_of_timestamps_text_follows_and_time_moves_on() {
        let s = special();
        let mut row = vec![0.0f32; 80];
        row[2] = 1.0;
        apply_rules(&mut row, &[14, 3, 20, 20], 4, &request(&[]), &s);
        assert!(
            row[14..].iter().all(|x| x.is_infinite()),
            "no third timestamp"
        );
        assert!(row[2].is_finite() && row[10].is_finite());
        let mut row = vec![0.0f32; 80];
        row[2] = 30.0;
        apply_rules(&mut row, &[14, 3, 20], 3, &request(&[]), &s);
        assert!(
            row[14..20].iter().all(|x| x.is_infinite()),
            "time never goes back"
        );
        assert!(
            row[20].is_finite(),
            "a pair may close on the same timestamp"
        );
    }

    #[test]
    fn a_lone_timestamp_after_text_is_followed_by_another_or_the_end() {
        let s = special();
        let mut row = vec![0.0f32; 80];
        row[10] = 10.0; // the end of text beats all timestamps together
        apply_rules(&mut row, &[14, 3, 4, 20], 4, &request(&[7]), &s);
        assert!(
            row[..10].iter().all(|x| x.is_infinite()),
            "no text right after"
        );
        assert!(row[10].is_finite(), "the end of text may follow");
        assert!(row[20].is_finite() && row[40].is_finite());
    }
}
