//! The xinference-rs model engine: candle models behind one trait per ability. No HTTP.
//!
//! Parts:
//! - [`audio`]: audio files (WAV, FLAC, MP3, OGG/Vorbis, M4A/AAC) decoded to 16 kHz mono
//!   samples for speech-to-text, with a length limit.
//! - [`files`]: finds what a model folder holds (config, tokenizer, safetensors weights,
//!   sentence-transformers pooling/normalisation, the real maximum length) and names what is
//!   missing.
//! - [`text`]: tokenization with the model's real truncation length and no padding (batches are
//!   padded to their longest member when they run).
//! - [`encoder`]: the transformer bodies: our BERT (`bert`, with the CPU kernels of `ops`:
//!   fused QKV, per-head parallel attention over real tokens only, parallel GELU), and
//!   candle-transformers' BERT / XLM-RoBERTa for everything else. Off the CPU (or in bf16/f16)
//!   our BERT runs tensor-op versions of those kernels.
//! - [`embedding`]: [`EmbeddingModel`] — pooling (mean/cls/last token) and L2 normalisation.
//! - [`rerank`]: [`CrossEncoder`] — BERT or XLM-RoBERTa sequence classification.
//! - [`placement`]: [`Placement`] — the device (CPU or a CUDA GPU), dtype, and whether the CPU
//!   kernels or the portable tensor-op path computes a model.
//! - [`llm`]: text generation (llama family, Qwen2, Qwen3) from GGUF files or Hugging Face
//!   safetensors folders: one decoder over two backends (CPU kernels, tensor ops for GPUs), the
//!   tokenizer from the GGUF metadata or `tokenizer.json`, bounded Jinja chat templates,
//!   sampling, stop conditions and continuous batching's sequences.
//! - `checks` (and `llm::validate`): every config field and tensor shape checked against the
//!   files, and the memory a load takes against the machine's, before anything is allocated.
//!
//! Invariants: nothing here panics on bad files or inputs (every failure is an
//! [`EngineError`]); models are `Send` so each can live on its own thread; inference takes
//! `&self`.

pub mod audio;
mod bert;
mod checks;
pub mod embedding;
pub mod encoder;
pub mod error;
pub mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gemv;
pub mod llm;
mod ops;
pub mod placement;
pub mod rerank;
mod softmax;
mod step_attention;
#[cfg(test)]
mod test_rng;
pub mod text;
pub mod whisper;

pub use candle_core::quantized as candle_quantized;
pub use checks::MAX_CONTEXT;
pub use embedding::{Embed, EmbeddingModel};
pub use error::EngineError;
pub use files::ModelFiles;
pub use placement::Placement;
pub use rerank::{CrossEncoder, Rerank};
pub use text::Encoded;

/// Padded tokens per forward pass when batching (sequences × longest length). Bounds memory
/// and keeps one huge request from starving the others.
pub const DEFAULT_BATCH_TOKENS: usize = 1_024;
