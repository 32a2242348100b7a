//! Long audio in 30 s windows, as OpenAI Whisper and faster-whisper walk it: each window is
//! decoded with the previous windows' text as its prompt; timestamp pairs cut it into
//! segments; the next window starts where the last complete segment ended. A window whose
//! output looks wrong (too repetitive, or too unlikely) is decoded again at the next
//! temperature; one that is probably silence is skipped.
//!
//! A [`Job`] is one request's walk. It is a state machine rather than a loop so that a replica
//! can encode the current windows of several jobs in one batch: [`Job::window`] gives the next
//! window's features, [`Job::step`] decodes it from its encoder output, and [`step_jobs`]
//! decodes the windows of several jobs together.

use std::io::Write;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::EngineError;
use crate::whisper::decode::{
    decode_window, decode_windows_greedy, WindowRequest, WindowResult, SAMPLE_LEN,
};
use crate::whisper::mel::{log_mel, CHUNK_FRAMES, HOP_LENGTH, SAMPLE_RATE};
use crate::whisper::model::CrossKv;
use crate::whisper::timing::{add_word_timestamps, Word};
use crate::whisper::WhisperModel;

/// Seconds per mel frame (10 ms) and per timestamp step (20 ms).
const FRAME_SECONDS: f64 = HOP_LENGTH as f64 / SAMPLE_RATE as f64;
const TIMESTAMP_SECONDS: f64 = 0.02;
/// A window is decoded again when its text compresses better than this (repetition)...
const COMPRESSION_RATIO_THRESHOLD: f64 = 2.4;
/// ...or its average token log probability is below this.
const LOGPROB_THRESHOLD: f64 = -1.0;
/// A window whose no-speech probability is above this (and whose text is unlikely) is silence.
const NO_SPEECH_THRESHOLD: f64 = 0.6;
/// Above this temperature the next window is not prompted with the text so far.
const PROMPT_RESET_TEMPERATURE: f32 = 0.5;
/// Candidates sampled per window at a non-zero temperature.
const BEST_OF: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Transcribe,
    /// Into English.
    Translate,
}

/// What the caller asks of a transcription.
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    pub task: Task,
    /// A language code ("en"); `None` detects it from the first window (multilingual models).
    pub language: Option<String>,
    /// Text that came before (names, spelling, style): the first window's prompt.
    pub prompt: Option<String>,
    /// 0 decodes greedily and falls back to 0.2, 0.4, ... 1.0 on a bad window; a higher value
    /// starts sampling there and falls back upward the same way.
    pub temperature: f32,
    /// Seed of the sampler (temperatures above 0); fixed for reproducible output.
    pub seed: u64,
    /// Time every word (one more decoder pass per window; see `timing`).
    pub word_timestamps: bool,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            task: Task::Transcribe,
            language: None,
            prompt: None,
            temperature: 0.0,
            seed: 0,
            word_timestamps: false,
        }
    }
}

/// A timed piece of the transcript (OpenAI's `verbose_json` segment).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub id: usize,
    /// The window's start, in mel frames (10 ms).
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// The segment's tokens, timestamps included.
    pub tokens: Vec<u32>,
    /// Its words with their times, when [`TranscribeOptions::word_timestamps`] asked for them.
    pub words: Vec<Word>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

/// The whole transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// The language code spoken (or asked for).
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub segments: Vec<Segment>,
}

/// The current window's prompt: `<|startofprev|>` and the text so far (if any), then the
/// start sequence from `sot_index`.
struct WindowPlan {
    prompt: Vec<u32>,
    sot_index: usize,
}

/// One request's walk through its audio (see the module doc).
pub struct Job {
    options: TranscribeOptions,
    /// Log-mel features `[n_mels][frames]`.
    mel: Vec<f32>,
    frames: usize,
    content_frames: usize,
    n_mels: usize,
    seek: usize,
    all_tokens: Vec<u32>,
    prompt_reset_since: usize,
    segments: Vec<Segment>,
    /// End of the last word timed (word timestamps only), in seconds.
    last_speech: f64,
    language: Option<String>,
    duration: f64,
    rng: StdRng,
}

impl Job {
    /// Computes the features of `samples` (16 kHz mono) and checks the options against the
    /// model.
    pub fn new(
        model: &WhisperModel,
        samples: &[f32],
        options: TranscribeOptions,
    ) -> Result<Job, EngineError> {
        let multilingual = model.net.config().is_multilingual();
        let language = match options.language.as_deref() {
            Some(code) if !multilingual && code != "en" => {
                return Err(EngineError::InvalidInput(format!(
                    "this Whisper model is English-only; language '{code}' needs a multilingual one"
                )))
            }
            Some(code) => {
                if multilingual && model.tokenizer.language_token(code).is_none() {
                    return Err(EngineError::InvalidInput(format!(
                        "language '{code}' is not one this model knows"
                    )));
                }
                Some(code.to_string())
            }
            None if !multilingual => Some("en".to_string()),
            None => None,
        };
        if options.task == Task::Translate
            && (!multilingual || model.tokenizer.special.translate.is_none())
        {
            return Err(EngineError::InvalidInput(
                "this Whisper model is English-only and cannot translate; use a multilingual one"
                    .into(),
            ));
        }
        let mut all_tokens = Vec::new();
        if let Some(prompt) = options.prompt.as_deref().map(str::trim) {
            if !prompt.is_empty() {
                all_tokens = model.tokenizer.encode(&format!(" {prompt}"))?;
            }
        }
        // As faster-whisper: 10 ms of zeros after the audio, so the last real frame is whole.
        let mut padded = Vec::with_capacity(samples.len() + HOP_LENGTH);
        padded.extend_from_slice(samples);
        padded.resize(samples.len() + HOP_LENGTH, 0.0);
        let (mel, frames) = log_mel(&padded, &model.filters);
        let seed = options.seed;
        Ok(Job {
            options,
            mel,
            frames,
            content_frames: frames.saturating_sub(1),
            n_mels: model.filters.n_mels(),
            seek: 0,
            all_tokens,
            prompt_reset_since: 0,
            last_speech: 0.0,
            segments: Vec::new(),
            language,
            duration: samples.len() as f64 / SAMPLE_RATE as f64,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// Whether every window has been decoded.
    pub fn is_done(&self) -> bool {
        self.seek >= self.content_frames
    }

    fn window_frames(&self) -> usize {
        CHUNK_FRAMES.min(self.content_frames.saturating_sub(self.seek))
    }

    /// The next window's features `[n_mels][3000]`: the frames from `seek`, zeros after the
    /// audio's end (as OpenAI Whisper and faster-whisper pad).
    pub fn window(&self) -> Vec<f32> {
        let take = self.window_frames();
        let mut out = vec![0f32; self.n_mels * CHUNK_FRAMES];
        for m in 0..self.n_mels {
            let from = m * self.frames + self.seek;
            out[m * CHUNK_FRAMES..m * CHUNK_FRAMES + take]
                .copy_from_slice(&self.mel[from..from + take]);
        }
        out
    }

    /// Decodes the current window from its encoder output (`cross`, one batch row) and moves
    /// on; returns the segments it produced.
    pub fn step(
        &mut self,
        model: &WhisperModel,
        cross: &CrossKv,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Segment>, EngineError> {
        let Some(plan) = self.plan(model, cross)? else {
            return Ok(Vec::new());
        };
        let req = self.request(model, &plan, self.first_temperature());
        let special = &model.tokenizer.special;
        let first = decode_window(&model.net, cross, special, &req, &mut self.rng, cancelled)?;
        self.finish(model, cross, &plan, first, cancelled)
    }

    /// The temperature each window is first decoded at.
    fn first_temperature(&self) -> f32 {
        self.options.temperature.clamp(0.0, 1.0)
    }

    /// Whether windows are first decoded greedily (so [`step_jobs`] can batch them).
    fn starts_greedy(&self) -> bool {
        self.first_temperature() == 0.0
    }

    /// The prompt of the current window (detecting the language first where none is set);
    /// `None` once every window is done.
    fn plan(
        &mut self,
        model: &WhisperModel,
        cross: &CrossKv,
    ) -> Result<Option<WindowPlan>, EngineError> {
        if self.is_done() {
            return Ok(None);
        }
        let special = &model.tokenizer.special;
        let language = match &self.language {
            Some(l) => l.clone(),
            None => {
                let code = model.detect_language(cross)?;
                self.language = Some(code.clone());
                code
            }
        };
        let mut prompt = Vec::new();
        let previous = &self.all_tokens[self.prompt_reset_since..];
        if !previous.is_empty() {
            prompt.push(special.sot_prev);
            let keep = previous.len().min(SAMPLE_LEN - 1);
            prompt.extend_from_slice(&previous[previous.len() - keep..]);
        }
        let sot_index = prompt.len();
        prompt.push(special.sot);
        if model.net.config().is_multilingual() {
            prompt.extend(model.tokenizer.language_token(&language));
            let task = match self.options.task {
                Task::Transcribe => special.transcribe,
                Task::Translate => special.translate,
            };
            prompt.extend(task);
        }
        Ok(Some(WindowPlan { prompt, sot_index }))
    }

    fn request<'a>(
        &self,
        model: &'a WhisperModel,
        plan: &'a WindowPlan,
        temperature: f32,
    ) -> WindowRequest<'a> {
        WindowRequest {
            prompt: &plan.prompt,
            sot_index: plan.sot_index,
            temperature,
            best_of: BEST_OF,
            timestamps: true,
            suppress: &model.suppress,
            max_tokens: SAMPLE_LEN,
        }
    }

    /// Takes the current window's first decoding (`first`), decodes it again at higher
    /// temperatures while it looks wrong, then cuts it into segments (timing the words when
    /// asked) and moves on.
    fn finish(
        &mut self,
        model: &WhisperModel,
        cross: &CrossKv,
        plan: &WindowPlan,
        first: WindowResult,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Segment>, EngineError> {
        let segment_size = self.window_frames();
        let (result, compression_ratio) = self.fall_back(model, cross, plan, first, cancelled)?;
        if result.no_speech_prob > NO_SPEECH_THRESHOLD && result.avg_logprob <= LOGPROB_THRESHOLD {
            self.seek += segment_size;
            return Ok(Vec::new());
        }
        let seek = self.seek;
        let mut made = self.cut_segments(model, &result, compression_ratio, segment_size, seek)?;
        if self.options.word_timestamps && !made.is_empty() {
            let sot_sequence = &plan.prompt[plan.sot_index..];
            self.last_speech = add_word_timestamps(
                model,
                cross,
                sot_sequence,
                &mut made,
                segment_size / 2,
                self.last_speech,
            )?;
        }
        self.segments.extend(made.iter().cloned());
        if result.temperature > PROMPT_RESET_TEMPERATURE {
            self.prompt_reset_since = self.all_tokens.len();
        }
        Ok(made)
    }

    /// The temperature fallback: `result` is kept when it is probably silence or looks
    /// right, else the window is decoded again 0.2 hotter, up to 1.0. Returns the result
    /// kept and its text's compression ratio.
    fn fall_back(
        &mut self,
        model: &WhisperModel,
        cross: &CrossKv,
        plan: &WindowPlan,
        mut result: WindowResult,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(WindowResult, f64), EngineError> {
        loop {
            let text = model.tokenizer.decode(&result.tokens)?;
            let ratio = compression_ratio(&text);
            let silent = result.no_speech_prob > NO_SPEECH_THRESHOLD
                && result.avg_logprob <= LOGPROB_THRESHOLD;
            let bad = ratio > COMPRESSION_RATIO_THRESHOLD || result.avg_logprob < LOGPROB_THRESHOLD;
            let next = result.temperature + 0.2;
            if silent || !bad || next > 1.0 + 1e-6 {
                return Ok((result, ratio));
            }
            tracing::debug!(
                temperature = result.temperature,
                ratio,
                avg_logprob = result.avg_logprob,
                "window decoded again at a higher temperature"
            );
            let req = self.request(model, plan, next);
            let special = &model.tokenizer.special;
            result = decode_window(&model.net, cross, special, &req, &mut self.rng, cancelled)?;
        }
    }

    /// Cuts a decoded window into segments at its timestamp pairs and advances `seek`.
    fn cut_segments(
        &mut self,
        model: &WhisperModel,
        result: &WindowResult,
        compression_ratio: f64,
        segment_size: usize,
        seek: usize,
    ) -> Result<Vec<Segment>, EngineError> {
        let tb = model.tokenizer.special.timestamp_begin;
        let tokens = &result.tokens;
        let is_ts = |t: u32| t >= tb;
        let offset = self.seek as f64 * FRAME_SECONDS;
        let n = tokens.len();
        let single_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
        let consecutive: Vec<usize> = (1..n)
            .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
            .collect();
        let mut pieces: Vec<(f64, f64, &[u32])> = Vec::new();
        let advance;
        if !consecutive.is_empty() {
            let mut cuts = consecutive.clone();
            if single_ending {
                cuts.push(n);
            }
            let mut last = 0;
            for &cut in &cuts {
                let slice = &tokens[last..cut];
                let start = offset + f64::from(slice[0].saturating_sub(tb)) * TIMESTAMP_SECONDS;
                let end = offset
                    + f64::from(slice[slice.len() - 1].saturating_sub(tb)) * TIMESTAMP_SECONDS;
                pieces.push((start, end, slice));
                last = cut;
            }
            advance = if single_ending {
                segment_size
            } else {
                // Up to the last complete segment's end (2 frames per timestamp step).
                2 * tokens[last - 1].saturating_sub(tb) as usize
            };
        } else {
            let mut duration = segment_size as f64 * FRAME_SECONDS;
            if let Some(&last_ts) = tokens.iter().rev().find(|&&t| is_ts(t)) {
                if last_ts != tb {
                    duration = f64::from(last_ts - tb) * TIMESTAMP_SECONDS;
                }
            }
            pieces.push((offset, offset + duration, tokens.as_slice()));
            advance = segment_size;
        }
        let mut made = Vec::new();
        for (start, end, slice) in pieces {
            self.all_tokens.extend_from_slice(slice);
            let text = model.tokenizer.decode(slice)?;
            if start >= end || text.trim().is_empty() {
                continue;
            }
            let segment = Segment {
                id: self.segments.len() + made.len(),
                seek,
                start: round2(start),
                end: round2(end.min(self.duration.max(start))),
                text,
                tokens: slice.to_vec(),
                temperature: result.temperature,
                avg_logprob: result.avg_logprob,
                compression_ratio,
                no_speech_prob: result.no_speech_prob,
                words: Vec::new(),
            };
            made.push(segment);
        }
        // A window always moves the walk on, even when its only pair sits at 0.00.
        self.seek += if advance == 0 {
            segment_size
        } else {
            advance.min(segment_size)
        };
        Ok(made)
    }

    /// The transcript so far (the whole one once [`Job::is_done`]).
    pub fn transcript(&self) -> Transcript {
        let text: String = self.segments.iter().map(|s| s.text.as_str()).collect();
        Transcript {
            text: text.trim().to_string(),
            language: self.language.clone().unwrap_or_else(|| "en".into()),
            duration: self.duration,
            segments: self.segments.clone(),
        }
    }
}

/// Steps several jobs by one window each: `crosses[i]` is job `i`'s encoder output (one batch
/// row) and `cancelled[i]` its cancel flag. The first decoding of every window that starts
/// greedy runs as one batch ([`decode_windows_greedy`]: each step reads the weights once for
/// all of them); sampling, the temperature fallback and word timing run job by job. Each
/// job's result (its new segments, or its error) is exactly what [`Job::step`] gives it alone.
pub fn step_jobs(
    model: &WhisperModel,
    jobs: &mut [&mut Job],
    crosses: &[&CrossKv],
    cancelled: &[&dyn Fn() -> bool],
) -> Vec<Result<Vec<Segment>, EngineError>> {
    let n = jobs.len();
    if crosses.len() != n || cancelled.len() != n {
        let e = || {
            Err(EngineError::internal(
                "step_jobs: one audio row and flag per job",
            ))
        };
        return (0..n).map(|_| e()).collect();
    }
    let mut results: Vec<Option<Result<Vec<Segment>, EngineError>>> =
        (0..n).map(|_| None).collect();
    let mut plans = Vec::new();
    for (i, job) in jobs.iter_mut().enumerate() {
        if !job.starts_greedy() {
            results[i] = Some(job.step(model, crosses[i], cancelled[i]));
            continue;
        }
        match job.plan(model, crosses[i]) {
            Ok(Some(plan)) => plans.push((i, plan)),
            Ok(None) => results[i] = Some(Ok(Vec::new())),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let requests: Vec<WindowRequest> = plans
        .iter()
        .map(|(i, plan)| jobs[*i].request(model, plan, 0.0))
        .collect();
    let windows: Vec<(&CrossKv, &WindowRequest)> = plans
        .iter()
        .zip(&requests)
        .map(|((i, _), req)| (crosses[*i], req))
        .collect();
    let flags: Vec<&dyn Fn() -> bool> = plans.iter().map(|(i, _)| cancelled[*i]).collect();
    let special = &model.tokenizer.special;
    let firsts = decode_windows_greedy(&model.net, special, &windows, &flags);
    drop(windows);
    drop(requests);
    for ((i, plan), first) in plans.iter().zip(firsts) {
        let result =
            first.and_then(|first| jobs[*i].finish(model, crosses[*i], plan, first, cancelled[*i]));
        results[*i] = Some(result);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(EngineError::internal("a job was not stepped"))))
        .collect()
}

/// Seconds to the hundredth, as OpenAI reports times.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// How well `text` compresses with zlib (bytes / compressed bytes): above 2.4 the decoder is
/// usually repeating itself.
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    if z.write_all(text.as_bytes()).is_err() {
        return 0.0;
    }
    match z.finish() {
        Ok(compressed) if !compressed.is_empty() => text.len() as f64 / compressed.len() as f64,
        _ => 0.0,
    }
}
