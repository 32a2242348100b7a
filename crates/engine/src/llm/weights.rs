//! Where a transformer's tensors come from: a GGUF file (quantized) or Hugging Face
//! safetensors (dense). Tensors are named the GGUF way (`blk.3.attn_q.weight`);
//! [`hf_name`] maps those names to Hugging Face's, for loading and for conversion.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::qlinear::QLinear;
use crate::checks::{open_safetensors, safetensors_shapes, Shapes};
use crate::error::{candle_message, EngineError};

/// A weight matrix for `x @ Wᵀ`: our integer kernel where the CPU and format allow, else
/// candle's matmul (dense, or its quantized kernels).
pub enum Matrix {
    Int8(QLinear),
    Candle(QMatMul),
}

impl Matrix {
    /// Set `XINFERENCE_INT8_KERNEL=0` to use candle's quantized kernels instead (benchmarks).
    pub fn from_qtensor(tensor: QTensor) -> Result<Matrix, EngineError> {
        let allowed = std::env::var("XINFERENCE_INT8_KERNEL").map_or(true, |v| v != "0");
        if allowed && QLinear::supported() {
            if let Some(linear) = QLinear::from_qtensor(&tensor) {
                return Ok(Matrix::Int8(linear));
            }
        }
        Ok(Matrix::Candle(QMatMul::from_qtensor(tensor)?))
    }
}

/// The Hugging Face name of a GGUF tensor name (`blk.N.attn_q.weight` →
/// `model.layers.N.self_attn.q_proj.weight`). Names without a counterpart come back unchanged.
pub fn hf_name(gguf: &str) -> String {
    let (stem, suffix) = match gguf.rsplit_once('.') {
        Some((stem, suffix @ ("weight" | "bias"))) => (stem, suffix),
        _ => return gguf.to_string(),
    };
    let fixed = match stem {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(name) = fixed {
        return format!("{name}.{suffix}");
    }
    let Some(rest) = stem.strip_prefix("blk.") else {
        return gguf.to_string();
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return gguf.to_string();
    };
    let part = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return gguf.to_string(),
    };
    format!("model.layers.{layer}.{part}.{suffix}")
}

/// A matrix as read from the file (after re-quantization), on the CPU, before it is placed.
pub enum RawMatrix {
    /// A quantized GGUF format (boxed: a QTensor is large in CUDA builds).
    Quantized(Box<QTensor>),
    /// f32 (GGUF float matrices, safetensors).
    Dense(Tensor),
}

impl RawMatrix {
    /// The matrices stacked by rows, when they are all dense or all of one quantized format
    /// with the same row length (quantized rows are whole blocks, so their bytes concatenate).
    pub fn concat(parts: &[RawMatrix]) -> Result<Option<RawMatrix>, EngineError> {
        let dense: Vec<&Tensor> = parts
            .iter()
            .filter_map(|p| match p {
                RawMatrix::Dense(t) => Some(t),
                RawMatrix::Quantized(_) => None,
            })
            .collect();
        if dense.len() == parts.len() {
            return Ok(Some(RawMatrix::Dense(Tensor::cat(&dense, 0)?)));
        }
        let quantized: Vec<&QTensor> = parts
            .iter()
            .filter_map(|p| match p {
                RawMatrix::Quantized(q) => Some(&**q),
                RawMatrix::Dense(_) => None,
            })
            .collect();
        let Some(first) = quantized.first() else {
            return Ok(None);
        };
        if quantized.len() != parts.len() {
            return Ok(None);
        }
        let (_, k) = first.shape().dims2()?;
        let mut rows = 0;
        let mut bytes = Vec::new();
        for q in &quantized {
            let (n, qk) = q.shape().dims2()?;
            if q.dtype() != first.dtype() || qk != k {
                return Ok(None);
            }
            rows += n;
            bytes.extend_from_slice(&q.data()?);
        }
        let storage = QStorage::from_data(bytes.into(), &Device::Cpu, first.dtype())?;
        let joined = QTensor::new(storage, (rows, k))?;
        Ok(Some(RawMatrix::Quantized(Box::new(joined))))
    }

    /// Output rows.
    pub fn rows(&self) -> Result<usize, EngineError> {
        Ok(match self {
            RawMatrix::Quantized(q) => q.shape().dims2()?.0,
            RawMatrix::Dense(t) => t.dims2()?.0,
        })
    }

    /// candle's matmul on `device`: quantized formats stay quantized, dense ones in `dtype`.
    pub fn place(self, device: &Device, dtype: DType) -> Result<QMatMul, EngineError> {
        Ok(match self {
            RawMatrix::Quantized(q) if device.is_cpu() => QMatMul::from_qtensor(*q)?,
            RawMatrix::Quantized(q) => {
                let storage = QStorage::from_data(q.data()?, device, q.dtype())?;
                QMatMul::from_qtensor(QTensor::new(storage, q.shape().clone())?)?
            }
            RawMatrix::Dense(t) => QMatMul::Tensor(t.to_dtype(dtype)?.to_device(device)?),
        })
    }
}

/// A source of named tensors (GGUF names).
pub trait WeightSource {
    fn has(&self, name: &str) -> bool;
    /// A matrix for `x @ Wᵀ`, quantized or dense as the source (and the requantize option) has it.
    fn matrix(&mut self, name: &str) -> Result<Matrix, EngineError>;
    /// Any tensor as dense f32 (norm weights, biases, the embedding table).
    fn dense(&mut self, name: &str) -> Result<Tensor, EngineError>;
    /// A matrix as the file (and the requantize option) has it, for the portable path.
    fn raw_matrix(&mut self, name: &str) -> Result<RawMatrix, EngineError>;
    /// Whether the matrices come quantized (then activations stay f32).
    fn quantized(&self) -> bool;
}

pub struct GgufWeights<R> {
    pub content: gguf_file::Content,
    reader: R,
    requantize: Option<GgmlDType>,
    path: PathBuf,
}

impl<R: Read + Seek> GgufWeights<R> {
    pub fn new(
        content: gguf_file::Content,
        reader: R,
        requantize: Option<GgmlDType>,
        path: &Path,
    ) -> Self {
        GgufWeights {
            content,
            reader,
            requantize,
            path: path.to_path_buf(),
        }
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor, EngineError> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| {
                EngineError::bad_file(&self.path, format!("tensor {name}: {}", candle_message(&e)))
            })
    }
}

impl<R: Read + Seek> WeightSource for GgufWeights<R> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn matrix(&mut self, name: &str) -> Result<Matrix, EngineError> {
        let tensor = self.qtensor(name)?;
        let tensor = match self.requantize {
            Some(target) if tensor.dtype() != target => {
                QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, target)?
            }
            _ => tensor,
        };
        Matrix::from_qtensor(tensor)
    }

    fn dense(&mut self, name: &str) -> Result<Tensor, EngineError> {
        Ok(self.qtensor(name)?.dequantize(&Device::Cpu)?)
    }

    fn raw_matrix(&mut self, name: &str) -> Result<RawMatrix, EngineError> {
        let tensor = self.qtensor(name)?;
        let tensor = match self.requantize {
            Some(target) if tensor.dtype() != target => {
                QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, target)?
            }
            _ => tensor,
        };
        Ok(match tensor.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                RawMatrix::Dense(tensor.dequantize(&Device::Cpu)?)
            }
            _ => RawMatrix::Quantized(Box::new(tensor)),
        })
    }

    fn quantized(&self) -> bool {
        true
    }
}

pub struct SafetensorsWeights {
    tensors: MmapedSafetensors,
    requantize: Option<GgmlDType>,
}

impl SafetensorsWeights {
    pub fn open(files: &[PathBuf], requantize: Option<GgmlDType>) -> Result<Self, EngineError> {
        let tensors = open_safetensors(files)?;
        Ok(SafetensorsWeights {
            tensors,
            requantize: requantize.filter(|d| *d != GgmlDType::F32),
        })
    }

    /// The shape of every tensor, under its Hugging Face name (nothing is read).
    pub(crate) fn shapes(&self, origin: &Path) -> Result<Shapes, EngineError> {
        safetensors_shapes(&self.tensors, origin)
    }
}

impl WeightSource for SafetensorsWeights {
    fn has(&self, name: &str) -> bool {
        self.tensors.get(&hf_name(name)).is_ok()
    }

    fn matrix(&mut self, name: &str) -> Result<Matrix, EngineError> {
        let tensor = self.dense(name)?;
        match self.requantize {
            Some(target) => Matrix::from_qtensor(QTensor::quantize(&tensor, target)?),
            None => Ok(Matrix::Candle(QMatMul::Tensor(tensor))),
        }
    }

    fn dense(&mut self, name: &str) -> Result<Tensor, EngineError> {
        let hf = hf_name(name);
        let tensor = self.tensors.load(&hf, &Device::Cpu).map_err(|e| {
            EngineError::Unsupported(format!(
                "the safetensors weights have no usable {hf}: {}",
                candle_message(&e)
            ))
        })?;
        Ok(tensor.to_dtype(DType::F32)?)
    }

    fn raw_matrix(&mut self, name: &str) -> Result<RawMatrix, EngineError> {
        let tensor = self.dense(name)?;
        Ok(match self.requantize {
            Some(target) => RawMatrix::Quantized(Box::new(QTensor::quantize(&tensor, target)?)),
            None => RawMatrix::Dense(tensor),
        })
    }

    fn quantized(&self) -> bool {
        self.requantize.is_some()
    }
}
