//! Whisper speech-to-text: a Hugging Face whisper folder (config.json, tokenizer.json,
//! safetensors, optionally generation_config.json) loaded into our own network and decoded
//! as OpenAI Whisper and faster-whisper decode it.
//!
//! Parts:
//! - `config`: the dimensions, bounded and checked against the weights before any allocation;
//! - [`mel`]: the log-mel front end (transformers' `WhisperFeatureExtractor`, numerically);
//! - [`model`]: encoder and decoder (with KV caches and the cross-attention weights);
//! - `tokens`: the tokenizer, special tokens and languages;
//! - `decode`: one 30 s window, greedy or sampled, with the timestamp rules;
//! - [`transcribe`]: long audio as a walk over windows ([`Job`]), segments, temperature fallback.
//!
//! Invariants: nothing panics on a bad folder or bad audio; the model is `Send + Sync` and
//! inference takes `&self`, so a replica thread can run several jobs' windows in one batch
//! ([`WhisperModel::encode_windows`]).

mod config;
mod decode;
pub mod mel;
pub mod model;
mod timing;
mod tokens;
pub mod transcribe;

use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::Value;

use crate::checks::ensure_memory;
use crate::encoder::var_builder_for;
use crate::error::EngineError;
use crate::files::{find_weights, read_optional_json};
use crate::placement::Placement;

pub use config::WhisperConfig;
pub use mel::MelFilters;
pub use model::{CrossKv, Whisper};
pub use timing::Word;
pub use tokens::{language_code, language_name, SpecialTokens, WhisperTokenizer, LANGUAGES};
pub use transcribe::{step_jobs, Job, Segment, Task, TranscribeOptions, Transcript};

/// A loaded Whisper model with its tokenizer and front end.
pub struct WhisperModel {
    pub net: Whisper,
    pub tokenizer: WhisperTokenizer,
    pub filters: MelFilters,
    /// Token ids never emitted.
    pub suppress: Vec<u32>,
    /// (decoder layer, head) pairs whose cross-attention follows the audio, for word
    /// timestamps: `alignment_heads` of generation_config.json, else every head of the
    /// second half of the layers (OpenAI's default).
    pub alignment_heads: Vec<(usize, usize)>,
}

impl WhisperModel {
    /// Loads the network alone (no tokenizer): the folder needs config.json and safetensors.
    pub fn load_network(folder: &Path, placement: &Placement) -> Result<Whisper, EngineError> {
        let config_path = folder.join("config.json");
        let config = read_optional_json(&config_path)?.ok_or_else(|| EngineError::MissingFile {
            folder: folder.to_path_buf(),
            file: "config.json".into(),
            what: "the model configuration",
        })?;
        let cfg = WhisperConfig::from_json(&config, &config_path)?;
        let weights = find_weights(folder)?;
        if weights.is_empty() {
            return Err(EngineError::MissingFile {
                folder: folder.to_path_buf(),
                file: "model.safetensors".into(),
                what: "the weights; only safetensors files are loaded",
            });
        }
        let stored = config::check_files(&cfg, &weights, folder)?;
        let file_bytes: u64 = weights
            .iter()
            .filter_map(|p| p.metadata().ok())
            .map(|m| m.len())
            .sum();
        // Half-precision files double when loaded as f32.
        let factor = if placement.dtype == DType::F32 { 2 } else { 1 };
        if placement.device.is_cpu() {
            ensure_memory(file_bytes.saturating_mul(factor), "this Whisper model")?;
        }
        let vb = var_builder_for(&weights, &placement.device, placement.dtype)?;
        // Half-precision decoder matrices stay half on the CPU (f32 arithmetic, half the
        // bytes per step); everywhere else they take the placement's dtype.
        let keep_half = placement.device.is_cpu()
            && placement.dtype == DType::F32
            && stored == Some(DType::F16);
        let decoder_weights = if keep_half {
            DType::F16
        } else {
            placement.dtype
        };
        Whisper::from_var_builder(cfg, vb, decoder_weights)
    }

    /// Loads a Hugging Face whisper folder onto `placement`.
    pub fn load(folder: &Path, placement: &Placement) -> Result<WhisperModel, EngineError> {
        let net = Self::load_network(folder, placement)?;
        let tokenizer_path = folder.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(EngineError::MissingFile {
                folder: folder.to_path_buf(),
                file: "tokenizer.json".into(),
                what: "the tokenizer in Hugging Face format",
            });
        }
        let tokenizer = WhisperTokenizer::load(&tokenizer_path, net.config().vocab_size)?;
        let generation = read_optional_json(&folder.join("generation_config.json"))?;
        let config = read_optional_json(&folder.join("config.json"))?;
        let listed = [generation.as_ref(), config.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|c| token_list(c.get("suppress_tokens")?));
        let suppress = tokenizer.suppressed(listed.as_deref());
        let alignment_heads = alignment_heads(generation.as_ref(), net.config(), folder)?;
        let filters = MelFilters::new(net.config().num_mel_bins);
        tracing::info!(folder = %folder.display(), d_model = net.config().d_model, layers = net.config().encoder_layers, multilingual = net.config().is_multilingual(), on = %placement.describe(), "whisper model loaded");
        Ok(WhisperModel {
            net,
            tokenizer,
            filters,
            suppress,
            alignment_heads,
        })
    }

    /// Encodes several windows' features (`[n_mels][3000]` each) in one batch; row `i` of the
    /// result belongs to window `i` ([`CrossKv::row`]).
    pub fn encode_windows(&self, windows: &[Vec<f32>]) -> Result<CrossKv, EngineError> {
        let n_mels = self.filters.n_mels();
        let frames = mel::CHUNK_FRAMES.min(self.net.config().input_frames());
        let mut flat = Vec::with_capacity(windows.len() * n_mels * frames);
        for w in windows {
            if w.len() != n_mels * frames {
                return Err(EngineError::internal("a window of the wrong size"));
            }
            flat.extend_from_slice(w);
        }
        let mel = Tensor::from_vec(flat, (windows.len(), n_mels, frames), self.net.device())?;
        let encoded = self.net.encode(&mel)?;
        self.net.cross_kv(&encoded)
    }

    /// The most likely language of a window (`cross`: one row), as a code.
    pub fn detect_language(&self, cross: &CrossKv) -> Result<String, EngineError> {
        let special = &self.tokenizer.special;
        if special.languages.is_empty() {
            return Ok("en".into());
        }
        let mut cache = self.net.new_cache();
        let input = Tensor::from_vec(vec![special.sot], (1, 1), self.net.device())?;
        let out = self.net.decode(&input, cross, &mut cache, false)?;
        let logits: Vec<f32> = self.net.logits(&out.hidden)?.flatten_all()?.to_vec1()?;
        let best = special
            .languages
            .iter()
            .filter(|(_, id)| (*id as usize) < logits.len())
            .max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))
            .map(|(code, _)| code.to_string());
        best.ok_or_else(|| EngineError::internal("no language token"))
    }

    /// Transcribes (or translates) 16 kHz mono samples in one go; `on_segment` sees each
    /// segment as it is decoded, `cancelled` is polled between tokens.
    pub fn transcribe(
        &self,
        samples: &[f32],
        options: TranscribeOptions,
        on_segment: &mut dyn FnMut(&Segment),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Transcript, EngineError> {
        let mut job = Job::new(self, samples, options)?;
        while !job.is_done() {
            let cross = self.encode_windows(&[job.window()])?;
            for segment in job.step(self, &cross, cancelled)? {
                on_segment(&segment);
            }
        }
        Ok(job.transcript())
    }
}

/// A JSON list of token ids.
fn token_list(v: &Value) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// The alignment heads of generation_config.json, each checked against the network's shape.
fn alignment_heads(
    generation: Option<&Value>,
    cfg: &WhisperConfig,
    folder: &Path,
) -> Result<Vec<(usize, usize)>, EngineError> {
    let (layers, heads) = (cfg.decoder_layers, cfg.decoder_heads);
    let listed = generation.and_then(|g| g.get("alignment_heads"));
    let Some(listed) = listed.filter(|v| !v.is_null()) else {
        return Ok((layers / 2..layers)
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .collect());
    };
    let bad = || {
        EngineError::bad_file(
            folder.join("generation_config.json"),
            format!(
                "alignment_heads must be a list of [layer, head] pairs within {layers} layers of {heads} heads"
            ),
        )
    };
    let pairs = listed.as_array().ok_or_else(bad)?;
    if pairs.is_empty() || pairs.len() > layers * heads {
        return Err(bad());
    }
    pairs
        .iter()
        .map(|p| {
            let pair = p.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
            let layer = pair[0].as_u64().map(|v| v as usize).filter(|&l| l < layers);
            let head = pair[1].as_u64().map(|v| v as usize).filter(|&h| h < heads);
            layer.zip(head).ok_or_else(bad)
        })
        .collect()
}
