//! The shape of a decoder-only transformer, read from GGUF metadata or a Hugging Face
//! `config.json`. One struct covers the llama family (Llama 2/3, Mistral, SmolLM) and
//! Qwen2/Qwen2.5/Qwen3: they differ only in biases, per-head norms and RoPE details.

use candle_core::quantized::gguf_file::Content;
use serde_json::Value;

use crate::error::EngineError;

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

    fn from_hf(name: &str) -> Option<Arch> {
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

impl LlmConfig {
    /// From GGUF metadata (`general.architecture` and its `{arch}.*` keys).
    pub fn from_gguf(ct: &Content) -> Result<LlmConfig, EngineError> {
        let arch_name = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let arch = Arch::from_gguf(&arch_name).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "GGUF architecture {arch_name:?} is not supported (llama, mistral, qwen2, qwen3 are)"
            ))
        })?;
        let get = |key: &str| ct.metadata.get(&format!("{arch_name}.{key}"));
        let int = |key: &str| -> Result<usize, EngineError> {
            get(key)
                .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
                .map(|v| v as usize)
                .ok_or_else(|| {
                    EngineError::Unsupported(format!("the GGUF file has no {arch_name}.{key}"))
                })
        };
        // Through the shortest decimal of the f32, so 1e-5 stays 1e-5 (not 9.99999974e-6).
        let float = |key: &str| {
            get(key)
                .and_then(|v| v.to_f32().ok())
                .and_then(|v| v.to_string().parse::<f64>().ok())
        };
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let vocab_size = match ct.metadata.get("tokenizer.ggml.tokens") {
            Some(v) => v.to_vec().map(|t| t.len()).unwrap_or(0),
            None => 0,
        };
        let vocab_size = ct
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .unwrap_or(vocab_size);
        Ok(LlmConfig {
            arch,
            vocab_size,
            hidden,
            intermediate: int("feed_forward_length")?,
            layers: int("block_count")?,
            heads,
            kv_heads: int("attention.head_count_kv").unwrap_or(heads),
            head_dim: int("attention.key_length").unwrap_or(hidden / heads),
            rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            rope_style: if arch == Arch::Llama {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Half
            },
            // GGUF Llama 3.1 files carry the scaled frequencies as a `rope_freqs` tensor.
            llama3_scaling: None,
            context_length: int("context_length").unwrap_or(2048),
            tie_embeddings: !ct.tensor_infos.contains_key("output.weight"),
        })
    }

    /// From a Hugging Face `config.json`.
    pub fn from_hf(config: &Value) -> Result<LlmConfig, EngineError> {
        let names: Vec<&str> = config["architectures"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let arch = names.iter().find_map(|n| Arch::from_hf(n)).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "config.json architectures {names:?} are not supported (LlamaForCausalLM, \
                     MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM are)"
            ))
        })?;
        let int = |key: &str| -> Result<usize, EngineError> {
            config[key].as_u64().map(|v| v as usize).ok_or_else(|| {
                EngineError::Unsupported(format!("config.json has no integer {key:?}"))
            })
        };
        let hidden = int("hidden_size")?;
        let heads = int("num_attention_heads")?;
        let scaling = &config["rope_scaling"];
        let llama3_scaling = match scaling["rope_type"].as_str().or(scaling["type"].as_str()) {
            None | Some("default") => None,
            Some("llama3") => Some(Llama3Scaling {
                factor: scaling["factor"].as_f64().unwrap_or(8.0),
                low_freq_factor: scaling["low_freq_factor"].as_f64().unwrap_or(1.0),
                high_freq_factor: scaling["high_freq_factor"].as_f64().unwrap_or(4.0),
                original_context: scaling["original_max_position_embeddings"]
                    .as_f64()
                    .unwrap_or(8192.0),
            }),
            Some(other) => {
                return Err(EngineError::Unsupported(format!(
                    "config.json rope_scaling type {other:?} is not supported (llama3 is)"
                )))
            }
        };
        Ok(LlmConfig {
            arch,
            vocab_size: int("vocab_size")?,
            hidden,
            intermediate: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads: int("num_key_value_heads").unwrap_or(heads),
            head_dim: config["head_dim"]
                .as_u64()
                .map_or(hidden / heads, |v| v as usize),
            rms_eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta: config["rope_theta"].as_f64().unwrap_or(10_000.0),
            rope_style: RopeStyle::Half,
            llama3_scaling,
            context_length: int("max_position_embeddings").unwrap_or(2048),
            tie_embeddings: config["tie_word_embeddings"].as_bool().unwrap_or(false),
        })
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
