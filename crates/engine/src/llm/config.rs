//! The shape of a decoder-only transformer, read from GGUF metadata or a Hugging Face
//! `config.json`. One struct covers the llama family (Llama 2/3, Mistral, SmolLM) and
//! Qwen2/Qwen2.5/Qwen3: they differ only in biases, per-head norms and RoPE details.

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use serde_json::Value;

use crate::checks::{optional_positive, positive, MAX_CONTEXT};
use crate::error::EngineError;

/// A name from a file, cut short for an error message.
fn short(name: &str) -> String {
    name.chars().take(64).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
}

impl Arch {
    fn from_gguf(name: &str) -> Option<Arch> {
        match name {
            "llama" | "mistral" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            _ => None,
        }
    }

    /// The architecture a Hugging Face `config.json` names (`architectures`), if we run it.
    pub fn from_hf(name: &str) -> Option<Arch> {
        match name {
            "LlamaForCausalLM" | "MistralForCausalLM" => Some(Arch::Llama),
            "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            "Qwen3ForCausalLM" => Some(Arch::Qwen3),
            _ => None,
        }
    }

    /// The GGUF / `model_type` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// Qwen2 has biases on the q/k/v projections.
    pub fn qkv_bias(self) -> bool {
        self == Arch::Qwen2
    }

    /// Qwen3 RMS-normalises each query and key head.
    pub fn qk_norm(self) -> bool {
        self == Arch::Qwen3
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` with `i + d/2` (Hugging Face, and GGUF qwen2/qwen3).
    Half,
    /// Dimension `2i` with `2i + 1` (GGUF llama: llama.cpp permutes q/k rows at conversion).
    Interleaved,
}

/// Llama 3.1's frequency-dependent RoPE scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_context: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub rope_style: RopeStyle,
    pub llama3_scaling: Option<Llama3Scaling>,
    pub context_length: usize,
    pub tie_embeddings: bool,
}

/// How a config's source spells each field, so errors name the field the file has.
#[derive(Debug, Clone)]
pub struct FieldNames {
    pub vocab: String,
    pub hidden: String,
    pub intermediate: String,
    pub layers: String,
    pub heads: String,
    pub kv_heads: String,
    pub head_dim: String,
    pub context: String,
    pub rms_eps: String,
    pub rope_theta: String,
    /// The head size is the hidden size over the heads (no field gives it).
    pub head_dim_derived: bool,
}

impl FieldNames {
    fn gguf(arch: &str, explicit_head_dim: bool) -> FieldNames {
        let key = |k: &str| format!("{arch}.{k}");
        FieldNames {
            vocab: "the vocabulary (token_embd.weight rows)".into(),
            hidden: key("embedding_length"),
            intermediate: key("feed_forward_length"),
            layers: key("block_count"),
            heads: key("attention.head_count"),
            kv_heads: key("attention.head_count_kv"),
            head_dim: if explicit_head_dim {
                key("attention.key_length")
            } else {
                format!(
                    "the head size ({} / {})",
                    key("embedding_length"),
                    key("attention.head_count")
                )
            },
            context: key("context_length"),
            rms_eps: key("attention.layer_norm_rms_epsilon"),
            rope_theta: key("rope.freq_base"),
            head_dim_derived: !explicit_head_dim,
        }
    }

    fn hf(explicit_head_dim: bool) -> FieldNames {
        FieldNames {
            vocab: "vocab_size".into(),
            hidden: "hidden_size".into(),
            intermediate: "intermediate_size".into(),
            layers: "num_hidden_layers".into(),
            heads: "num_attention_heads".into(),
            kv_heads: "num_key_value_heads".into(),
            head_dim: if explicit_head_dim {
                "head_dim".into()
            } else {
                "the head size (hidden_size / num_attention_heads)".into()
            },
            context: "max_position_embeddings".into(),
            rms_eps: "rms_norm_eps".into(),
            rope_theta: "rope_theta".into(),
            head_dim_derived: !explicit_head_dim,
        }
    }
}

/// A GGUF metadata integer: `Ok(None)` when absent, an error when negative or not an integer.
fn gguf_int(ct: &Content, key: &str) -> Result<Option<u64>, String> {
    use candle_core::quantized::gguf_file::Value as V;
    let Some(value) = ct.metadata.get(key) else {
        return Ok(None);
    };
    let signed = |v: i64| u64::try_from(v).ok();
    let v = match value {
        V::U8(v) => Some(u64::from(*v)),
        V::U16(v) => Some(u64::from(*v)),
        V::U32(v) => Some(u64::from(*v)),
        V::U64(v) => Some(*v),
        V::I8(v) => signed(i64::from(*v)),
        V::I16(v) => signed(i64::from(*v)),
        V::I32(v) => signed(i64::from(*v)),
        V::I64(v) => signed(*v),
        _ => None,
    };
    v.map(Some)
        .ok_or_else(|| format!("{key} must be a non-negative integer"))
}

impl LlmConfig {
    /// From GGUF metadata (`general.architecture` and its `{arch}.*` keys), checked (see
    /// [`LlmConfig::check`]); errors name the file `model.gguf`.
    pub fn from_gguf(ct: &Content) -> Result<LlmConfig, EngineError> {
        Self::parse_gguf(ct, Path::new("model.gguf")).map(|(config, _)| config)
    }

    /// [`LlmConfig::from_gguf`] for the file at `path`, with the names of its fields.
    pub(crate) fn parse_gguf(
        ct: &Content,
        path: &Path,
    ) -> Result<(LlmConfig, FieldNames), EngineError> {
        let bad = |reason: String| EngineError::bad_file(path, reason);
        let arch_name = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let arch = Arch::from_gguf(&arch_name).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "GGUF architecture {:?} is not supported (llama, mistral, qwen2, qwen3 are)",
                short(&arch_name)
            ))
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let optional = |k: &str| -> Result<Option<usize>, EngineError> {
            match gguf_int(ct, &key(k)).map_err(bad)? {
                None => Ok(None),
                Some(v) => usize::try_from(v)
                    .map(Some)
                    .map_err(|_| bad(format!("{} is too large", key(k)))),
            }
        };
        let int = |k: &str| -> Result<usize, EngineError> {
            optional(k)?.ok_or_else(|| bad(format!("has no {}", key(k))))
        };
        // Through the shortest decimal of the f32, so 1e-5 stays 1e-5 (not 9.99999974e-6).
        let float = |k: &str| {
            ct.metadata
                .get(&key(k))
                .and_then(|v| v.to_f32().ok())
                .and_then(|v| v.to_string().parse::<f64>().ok())
        };
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        if heads == 0 {
            return Err(bad(format!("{} must be > 0", key("attention.head_count"))));
        }
        let explicit_head_dim = optional("attention.key_length")?;
        let tokens = match ct.metadata.get("tokenizer.ggml.tokens") {
            Some(v) => v.to_vec().map(|t| t.len()).unwrap_or(0),
            None => 0,
        };
        let rows = ct
            .tensor_infos
            .get("token_embd.weight")
            .and_then(|t| t.shape.dims().first().copied());
        if let Some(rows) = rows {
            // More tokens than embedding rows: the tokenizer would produce ids the model lacks.
            if tokens > rows {
                return Err(bad(format!(
                    "tokenizer.ggml.tokens holds {tokens} tokens but token_embd.weight has \
                     {rows} rows"
                )));
            }
        }
        let vocab_size = rows.unwrap_or(tokens);
        let config = LlmConfig {
            arch,
            vocab_size,
            hidden,
            intermediate: int("feed_forward_length")?,
            layers: int("block_count")?,
            heads,
            kv_heads: optional("attention.head_count_kv")?.unwrap_or(heads),
            head_dim: explicit_head_dim.unwrap_or(hidden / heads),
            rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            rope_style: if arch == Arch::Llama {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Half
            },
            // GGUF Llama 3.1 files carry the scaled frequencies as a `rope_freqs` tensor.
            llama3_scaling: None,
            context_length: optional("context_length")?.unwrap_or(2048),
            tie_embeddings: !ct.tensor_infos.contains_key("output.weight"),
        };
        let names = FieldNames::gguf(&arch_name, explicit_head_dim.is_some());
        config.check(&names).map_err(bad)?;
        Ok((config, names))
    }

    /// From a Hugging Face `config.json`, checked (see [`LlmConfig::check`]).
    pub fn from_hf(config: &Value) -> Result<LlmConfig, EngineError> {
        Self::parse_hf(config, Path::new("config.json")).map(|(config, _)| config)
    }

    /// [`LlmConfig::from_hf`] for the `config.json` at `path`, with the names of its fields.
    pub(crate) fn parse_hf(
        config: &Value,
        path: &Path,
    ) -> Result<(LlmConfig, FieldNames), EngineError> {
        let bad = |reason: String| EngineError::bad_file(path, reason);
        let names: Vec<String> = config["architectures"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(short).collect())
            .unwrap_or_default();
        let arch = names.iter().find_map(|n| Arch::from_hf(n)).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "config.json architectures {names:?} are not supported (LlamaForCausalLM, \
                     MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM are)"
            ))
        })?;
        let int = |key: &str| positive(config, key, path);
        let optional = |key: &str| optional_positive(config, key, path);
        let hidden = int("hidden_size")?;
        let heads = int("num_attention_heads")?;
        let explicit_head_dim = optional("head_dim")?;
        let number = |key: &str, default: f64| -> Result<f64, EngineError> {
            match &config[key] {
                Value::Null => Ok(default),
                v => v
                    .as_f64()
                    .ok_or_else(|| bad(format!("{key} must be a number"))),
            }
        };
        let scaling = &config["rope_scaling"];
        let scaling_number = |key: &str, default: f64| -> Result<f64, EngineError> {
            match &scaling[key] {
                Value::Null => Ok(default),
                v => match v.as_f64() {
                    Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                    _ => Err(bad(format!("rope_scaling.{key} must be a positive number"))),
                },
            }
        };
        let llama3_scaling = match scaling["rope_type"].as_str().or(scaling["type"].as_str()) {
            None | Some("default") => None,
            Some("llama3") => Some(Llama3Scaling {
                factor: scaling_number("factor", 8.0)?,
                low_freq_factor: scaling_number("low_freq_factor", 1.0)?,
                high_freq_factor: scaling_number("high_freq_factor", 4.0)?,
                original_context: scaling_number("original_max_position_embeddings", 8192.0)?,
            }),
            Some(other) => {
                return Err(EngineError::Unsupported(format!(
                    "config.json rope_scaling type {:?} is not supported (llama3 is)",
                    short(other)
                )))
            }
        };
        let config = LlmConfig {
            arch,
            vocab_size: int("vocab_size")?,
            hidden,
            intermediate: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads: optional("num_key_value_heads")?.unwrap_or(heads),
            head_dim: explicit_head_dim.unwrap_or(hidden / heads),
            rms_eps: number("rms_norm_eps", 1e-6)?,
            rope_theta: number("rope_theta", 10_000.0)?,
            rope_style: RopeStyle::Half,
            llama3_scaling,
            context_length: optional("max_position_embeddings")?.unwrap_or(2048),
            tie_embeddings: config["tie_word_embeddings"].as_bool().unwrap_or(false),
        };
        let names = FieldNames::hf(explicit_head_dim.is_some());
        config.check(&names).map_err(bad)?;
        Ok((config, names))
    }

    /// The rules every model's shape must keep, whatever its tensors: counts above zero, query
    /// heads a multiple of key/value heads, an even head size (RoPE rotates pairs), head
    /// products that fit a `usize`, a context of at most `MAX_CONTEXT` and finite norms and
    /// frequencies. `Err` names the field (as `names` spell it).
    pub fn check(&self, names: &FieldNames) -> Result<(), String> {
        let positive = [
            (self.vocab_size, &names.vocab),
            (self.hidden, &names.hidden),
            (self.intermediate, &names.intermediate),
            (self.layers, &names.layers),
            (self.heads, &names.heads),
            (self.kv_heads, &names.kv_heads),
            (self.head_dim, &names.head_dim),
            (self.context_length, &names.context),
        ];
        for (value, name) in positive {
            if value == 0 {
                return Err(format!("{name} must be > 0"));
            }
        }
        if u32::try_from(self.vocab_size).is_err() {
            return Err(format!(
                "{} is {}; at most {} tokens are supported",
                names.vocab,
                self.vocab_size,
                u32::MAX
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "{} ({}) must be a multiple of {} ({})",
                names.heads, self.heads, names.kv_heads, self.kv_heads
            ));
        }
        if names.head_dim_derived && !self.hidden.is_multiple_of(self.heads) {
            return Err(format!(
                "{} ({}) must be a multiple of {} ({})",
                names.hidden, self.hidden, names.heads, self.heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "{} is {}; it must be even (RoPE rotates pairs of dimensions)",
                names.head_dim, self.head_dim
            ));
        }
        if self.heads.checked_mul(self.head_dim).is_none() {
            return Err(format!("{} × {} overflows", names.heads, names.head_dim));
        }
        if self.context_length > MAX_CONTEXT {
            return Err(format!(
                "{} is {}; at most {MAX_CONTEXT} is supported",
                names.context, self.context_length
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return Err(format!("{} must be a non-negative number", names.rms_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("{} must be a positive number", names.rope_theta));
        }
        Ok(())
    }

    /// A `config.json` that Hugging Face transformers (and [`LlmConfig::from_hf`]) load.
    pub fn to_hf(&self, bos: Option<u32>, eos: Option<u32>) -> Value {
        let architecture = match self.arch {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        };
        serde_json::json!({
            "architectures": [architecture],
            "model_type": self.arch.name(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.context_length,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": self.arch.qkv_bias(),
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        })
    }

    /// Inverse frequencies of RoPE, one per rotated pair.
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim;
        (0..d / 2)
            .map(|i| {
                let f = 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64);
                match self.llama3_scaling {
                    None => f,
                    Some(s) => llama3_scaled(f, s),
                }
            })
            .collect()
    }
}

fn llama3_scaled(freq: f64, s: Llama3Scaling) -> f64 {
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    let low_wavelen = s.original_context / s.low_freq_factor;
    let high_wavelen = s.original_context / s.high_freq_factor;
    if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / s.factor
    } else {
        let smooth = (s.original_context / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}
