//! A decoder's config checked against the tensors its file holds, before anything is read or
//! allocated: every tensor's bytes lie inside the file, the layer count is bounded by the layers
//! whose tensors exist, every tensor the forward pass reads exists with the shape the config
//! gives it, and the memory the load will take fits in what the machine has. Errors name the
//! field (as the file spells it) and the tensor.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType};

use super::config::{FieldNames, LlmConfig};
use super::weights::hf_name;
use crate::checks::{elem_count, ensure_memory, expect_shape, layer_indices, Shapes, TensorMeta};
use crate::error::{candle_message, EngineError};

/// Reads a GGUF header. A file that is not GGUF is refused on its magic number (without
/// echoing its bytes); a header that makes candle's parser panic is an error too.
pub(crate) fn read_gguf(
    file: &mut std::fs::File,
    path: &Path,
) -> Result<gguf_file::Content, EngineError> {
    let size = file
        .metadata()
        .map_err(|e| EngineError::bad_file(path, format!("cannot read: {e}")))?
        .len();
    read_gguf_from(file, size, path)
}

/// [`read_gguf`] over any reader of `size` bytes (the fuzz target reads from memory).
pub(crate) fn read_gguf_from<R: Read + Seek>(
    file: &mut R,
    size: u64,
    path: &Path,
) -> Result<gguf_file::Content, EngineError> {
    let bad = |reason: &str| EngineError::bad_file(path, reason);
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(bad("is not a GGUF file (bad magic number)"));
    }
    // candle's parser divides by `general.alignment`, which a file may set to 0.
    file.seek(SeekFrom::Start(0))
        .map_err(|e| bad(&format!("cannot read: {e}")))?;
    let alignment = gguf_alignment(file, size);
    match alignment {
        Ok(Some(0)) => return Err(bad("general.alignment must be > 0")),
        Ok(_) => {}
        Err(e) => return Err(bad(&format!("is not a valid GGUF file ({e})"))),
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| bad(&format!("cannot read: {e}")))?;
    // Anything else in candle's parser that panics on a hostile header becomes an error too.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        gguf_file::Content::read(file)
    }));
    match read {
        Ok(Ok(content)) => Ok(content),
        Ok(Err(e)) => Err(bad(&format!(
            "is not a valid GGUF file ({})",
            candle_message(&e)
        ))),
        Err(_) => Err(bad("is not a valid GGUF file (its header is inconsistent)")),
    }
}

/// A forward-only reader of a GGUF header that skips without allocating and never goes past
/// the file's end.
struct Header<'a, R: Read + Seek> {
    r: std::io::BufReader<&'a mut R>,
    pos: u64,
    size: u64,
    /// GGUF v1 writes lengths as u32, later versions as u64.
    v1: bool,
}

impl<R: Read + Seek> Header<'_, R> {
    fn invalid(what: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
    }

    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> std::io::Result<u32> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }

    fn length(&mut self) -> std::io::Result<u64> {
        if self.v1 {
            self.u32().map(u64::from)
        } else {
            self.bytes::<8>().map(u64::from_le_bytes)
        }
    }

    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.size);
        let (Some(end), Ok(step)) = (end, i64::try_from(n)) else {
            return Err(Self::invalid("metadata runs past the end of the file"));
        };
        self.r.seek_relative(step)?;
        self.pos = end;
        Ok(())
    }

    /// Skips `count` metadata values of type `kind`; `depth` bounds nested arrays.
    fn skip_values(&mut self, kind: u32, count: u64, depth: usize) -> std::io::Result<()> {
        let width = match kind {
            0 | 1 | 7 => 1u64,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                for _ in 0..count {
                    let len = self.length()?;
                    self.skip(len)?;
                }
                return Ok(());
            }
            9 if depth < 8 => {
                for _ in 0..count {
                    let inner = self.u32()?;
                    let n = self.length()?;
                    self.skip_values(inner, n, depth + 1)?;
                }
                return Ok(());
            }
            9 => return Err(Self::invalid("metadata arrays nest too deep")),
            _ => return Err(Self::invalid("unknown metadata value type")),
        };
        let bytes = count
            .checked_mul(width)
            .ok_or_else(|| Self::invalid("metadata array too long"))?;
        self.skip(bytes)
    }
}

/// The `general.alignment` a GGUF header sets (as candle reads it: an integer of up to 32
/// bits; a negative one means the default), found by skipping every other metadata value.
fn gguf_alignment<R: Read + Seek>(file: &mut R, size: u64) -> std::io::Result<Option<u64>> {
    let mut h = Header {
        r: std::io::BufReader::new(file),
        pos: 0,
        size,
        v1: false,
    };
    let _magic = h.u32()?;
    h.v1 = h.u32()? == 1;
    let _tensors = h.length()?;
    let entries = h.length()?;
    for _ in 0..entries {
        let key_len = h.length()?;
        let is_alignment = key_len == b"general.alignment".len() as u64;
        let mut key = [0u8; 17];
        if is_alignment {
            key = h.bytes::<17>()?;
        } else {
            h.skip(key_len)?;
        }
        let kind = h.u32()?;
        if is_alignment && &key == b"general.alignment" && kind <= 5 {
            let value = match kind {
                0 => i64::from(h.bytes::<1>()?[0]),
                1 => i64::from(i8::from_le_bytes(h.bytes::<1>()?)),
                2 => i64::from(u16::from_le_bytes(h.bytes::<2>()?)),
                3 => i64::from(i16::from_le_bytes(h.bytes::<2>()?)),
                4 => i64::from(u32::from_le_bytes(h.bytes::<4>()?)),
                _ => i64::from(i32::from_le_bytes(h.bytes::<4>()?)),
            };
            return Ok(u64::try_from(value).ok());
        }
        h.skip_values(kind, 1, 0)?;
    }
    Ok(None)
}

/// The tensors a file declares: shapes under the file's own names, and (GGUF) their formats.
pub(crate) struct Catalogue {
    shapes: Shapes,
    dtypes: std::collections::HashMap<String, GgmlDType>,
    /// Names are Hugging Face's (safetensors), not GGUF's.
    hf: bool,
}

impl Catalogue {
    /// A GGUF file's tensors, each checked to lie inside the file (`file_size` bytes) with a
    /// shape whose size is computable, so no read can allocate beyond the file.
    pub fn gguf(
        content: &gguf_file::Content,
        file_size: u64,
        path: &Path,
    ) -> Result<Catalogue, EngineError> {
        let bad = |reason: String| EngineError::bad_file(path, reason);
        let mut shapes = Shapes::new();
        let mut dtypes = std::collections::HashMap::new();
        for (name, info) in &content.tensor_infos {
            let dims = info.shape.dims().to_vec();
            let dtype = info.ggml_dtype;
            let elems = elem_count(&dims).ok_or_else(|| {
                bad(format!(
                    "tensor {name} declares shape {dims:?}, too many elements"
                ))
            })?;
            let block = dtype.block_size() as u64;
            let row = dims.last().copied().unwrap_or(1) as u64;
            if block > 1 && (dims.is_empty() || !row.is_multiple_of(block)) {
                return Err(bad(format!(
                    "tensor {name} declares shape {dims:?}, whose rows are not whole {dtype:?} \
                     blocks of {block}"
                )));
            }
            let bytes = (elems / block).checked_mul(dtype.type_size() as u64);
            let start = content.tensor_data_offset.checked_add(info.offset);
            let end = bytes.zip(start).and_then(|(b, s)| s.checked_add(b));
            match end {
                Some(end) if end <= file_size => {}
                _ => {
                    return Err(bad(format!(
                        "tensor {name} declares shape {dims:?} ({dtype:?}) at offset {}, which \
                         runs past the end of the file ({file_size} bytes)",
                        info.offset
                    )))
                }
            }
            shapes.insert(name.clone(), TensorMeta { dims, elems });
            dtypes.insert(name.clone(), dtype);
        }
        Ok(Catalogue {
            shapes,
            dtypes,
            hf: false,
        })
    }

    /// Safetensors tensors under Hugging Face names.
    pub fn safetensors(shapes: Shapes) -> Catalogue {
        Catalogue {
            shapes,
            dtypes: Default::default(),
            hf: true,
        }
    }

    /// The file's name for a GGUF tensor name.
    fn name(&self, gguf: &str) -> String {
        if self.hf {
            hf_name(gguf)
        } else {
            gguf.to_string()
        }
    }

    fn has(&self, gguf: &str) -> bool {
        self.shapes.contains_key(&self.name(gguf))
    }

    fn meta(&self, gguf: &str) -> Option<&TensorMeta> {
        self.shapes.get(&self.name(gguf))
    }

    fn require(&self, gguf: &str, want: &[(usize, &str)]) -> Result<(), String> {
        expect_shape(&self.shapes, &self.name(gguf), want)
    }

    fn layers_present(&self) -> usize {
        let prefix = if self.hf { "model.layers." } else { "blk." };
        layer_indices(self.shapes.keys(), prefix).len()
    }
}

/// The weight matrices of a layer (multiplied, so quantized or converted at load).
const MATRICES: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// Checks `config` against the tensors in `cat` (see the module doc); `Err` names the field
/// as `names` spell it and the tensor. `requantize` matrices must have rows of whole blocks.
pub(crate) fn check_tensors(
    config: &LlmConfig,
    names: &FieldNames,
    cat: &Catalogue,
    requantize: Option<GgmlDType>,
) -> Result<(), String> {
    let c = config;
    let q_rows = c.heads.checked_mul(c.head_dim);
    let kv_rows = c.kv_heads.checked_mul(c.head_dim);
    let (Some(q_rows), Some(kv_rows)) = (q_rows, kv_rows) else {
        return Err(format!("{} × {} overflows", names.heads, names.head_dim));
    };
    let q_field = format!("{} × {}", names.heads, names.head_dim);
    let kv_field = format!("{} × {}", names.kv_heads, names.head_dim);
    let hidden = (c.hidden, names.hidden.as_str());
    let inter = (c.intermediate, names.intermediate.as_str());
    let vocab = (c.vocab_size, names.vocab.as_str());
    let q = (q_rows, q_field.as_str());
    let kv = (kv_rows, kv_field.as_str());
    let head = (c.head_dim, names.head_dim.as_str());

    cat.require("token_embd.weight", &[vocab, hidden])?;
    let present = cat.layers_present();
    if c.layers > present {
        return Err(format!(
            "{} is {} but the file holds tensors for {present} layers",
            names.layers, c.layers
        ));
    }
    for i in 0..c.layers {
        let t = |n: &str| format!("blk.{i}.{n}.weight");
        cat.require(&t("attn_norm"), &[hidden])?;
        cat.require(&t("ffn_norm"), &[hidden])?;
        cat.require(&t("attn_q"), &[q, hidden])?;
        cat.require(&t("attn_k"), &[kv, hidden])?;
        cat.require(&t("attn_v"), &[kv, hidden])?;
        cat.require(&t("attn_output"), &[hidden, q])?;
        cat.require(&t("ffn_gate"), &[inter, hidden])?;
        cat.require(&t("ffn_up"), &[inter, hidden])?;
        cat.require(&t("ffn_down"), &[hidden, inter])?;
        if c.arch.qk_norm() {
            cat.require(&t("attn_q_norm"), &[head])?;
            cat.require(&t("attn_k_norm"), &[head])?;
        }
        if c.arch.qkv_bias() {
            for (part, rows) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
                let bias = format!("blk.{i}.{part}.bias");
                if cat.has(&bias) {
                    cat.require(&bias, &[rows])?;
                }
            }
        }
    }
    cat.require("output_norm.weight", &[hidden])?;
    if cat.has("output.weight") {
        cat.require("output.weight", &[vocab, hidden])?;
    }
    if cat.has("rope_freqs.weight") {
        let pairs = format!("{} / 2", names.head_dim);
        cat.require("rope_freqs.weight", &[(c.head_dim / 2, pairs.as_str())])?;
    }
    if let Some(target) = requantize {
        let block = target.block_size();
        for name in model_matrices(c) {
            let row = cat
                .meta(&name)
                .and_then(|m| m.dims.last().copied())
                .unwrap_or(0);
            if !row.is_multiple_of(block) {
                return Err(format!(
                    "{} has rows of {row} values, which cannot be re-quantized to {target:?} \
                     (blocks of {block})",
                    cat.name(&name)
                ));
            }
        }
    }
    Ok(())
}

/// The GGUF names of every matrix the model multiplies by.
fn model_matrices(c: &LlmConfig) -> Vec<String> {
    let mut names: Vec<String> = (0..c.layers)
        .flat_map(|i| MATRICES.iter().map(move |m| format!("blk.{i}.{m}.weight")))
        .collect();
    names.push(if c.tie_embeddings {
        "token_embd.weight".into()
    } else {
        "output.weight".into()
    });
    names
}

/// Bytes of a matrix of `elems` values in `dtype` (float formats are converted to f32).
fn matrix_bytes(elems: u64, dtype: Option<GgmlDType>) -> u64 {
    match dtype {
        None | Some(GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) => elems.saturating_mul(4),
        Some(q) => (elems / q.block_size() as u64).saturating_mul(q.type_size() as u64),
    }
}

/// About how much memory loading takes on the CPU: matrices in their (re-quantized) format,
/// everything else as f32, plus one matrix dequantized on the way.
pub(crate) fn load_bytes(c: &LlmConfig, cat: &Catalogue, requantize: Option<GgmlDType>) -> u64 {
    let mut total = 0u64;
    let mut largest = 0u64;
    let mut add = |bytes: u64| total = total.saturating_add(bytes);
    for name in model_matrices(c) {
        let Some(meta) = cat.meta(&name) else {
            continue;
        };
        let format = requantize.or_else(|| cat.dtypes.get(&name).copied());
        add(matrix_bytes(meta.elems, format));
        largest = largest.max(meta.elems.saturating_mul(4));
    }
    let mut vectors = vec!["token_embd.weight".to_string(), "output_norm.weight".into()];
    for i in 0..c.layers {
        for n in ["attn_norm", "ffn_norm", "attn_q_norm", "attn_k_norm"] {
            vectors.push(format!("blk.{i}.{n}.weight"));
        }
        for n in ["attn_q", "attn_k", "attn_v"] {
            vectors.push(format!("blk.{i}.{n}.bias"));
        }
    }
    for name in vectors {
        if let Some(meta) = cat.meta(&name) {
            add(meta.elems.saturating_mul(4));
        }
    }
    total.saturating_add(largest)
}

/// Checks the tensors and, on the CPU, the memory the load takes; errors name `path`.
pub(crate) fn check_model(
    config: &LlmConfig,
    names: &FieldNames,
    cat: &Catalogue,
    requantize: Option<GgmlDType>,
    on_cpu: bool,
    path: &Path,
) -> Result<(), EngineError> {
    check_tensors(config, names, cat, requantize).map_err(|r| EngineError::bad_file(path, r))?;
    if on_cpu {
        ensure_memory(load_bytes(config, cat, requantize), "the model")?;
    }
    Ok(())
}
