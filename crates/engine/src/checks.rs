//! Checks that run before a model allocates anything, so a hostile or broken file is refused
//! with a client error naming the field or tensor at fault (never an abort on a giant
//! allocation, never a panic): config fields, tensor shapes against the config, the memory a
//! load will take against what the machine has, and JSON errors described without echoing the
//! file.
//!
//! The LLM-specific rules live in `llm::validate`; the BERT / XLM-RoBERTa ones here.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use serde_json::Value;

use crate::encoder::Architecture;
use crate::error::{candle_message, candle_root, EngineError};
use crate::files::ModelFiles;
use crate::placement::Placement;

/// The longest context (positions) a model may declare.
pub const MAX_CONTEXT: usize = 1 << 20;

/// A tensor's shape as a file declares it, before anything is read.
#[derive(Debug, Clone)]
pub(crate) struct TensorMeta {
    pub dims: Vec<usize>,
    /// The element count (checked: it fits in a `u64`).
    pub elems: u64,
}

/// Tensor shapes by name.
pub(crate) type Shapes = HashMap<String, TensorMeta>;

/// The product of `dims`, or `None` when it overflows.
pub(crate) fn elem_count(dims: &[usize]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

/// `want` holds each dimension with the config field(s) it comes from. `Err` names the field
/// whose value the tensor contradicts, or says the tensor is missing.
pub(crate) fn expect_shape(
    shapes: &Shapes,
    name: &str,
    want: &[(usize, &str)],
) -> Result<(), String> {
    let Some(meta) = shapes.get(name) else {
        return Err(format!("the weights have no {name}"));
    };
    let expected: Vec<usize> = want.iter().map(|(size, _)| *size).collect();
    if meta.dims.len() != want.len() {
        return Err(format!(
            "{name} is {:?} but the config makes it {expected:?}",
            meta.dims
        ));
    }
    for (&actual, &(size, field)) in meta.dims.iter().zip(want) {
        if actual != size {
            return Err(format!(
                "{field} is {size} but {name} is {:?} (the config makes it {expected:?})",
                meta.dims
            ));
        }
    }
    Ok(())
}

/// The distinct layer indices among tensor names `{prefix}{N}.…`.
pub(crate) fn layer_indices<'a>(
    names: impl Iterator<Item = &'a String>,
    prefix: &str,
) -> BTreeSet<usize> {
    names
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| rest.split_once('.'))
        .filter_map(|(index, _)| index.parse().ok())
        .collect()
}

/// What a JSON parse error says, without the text it failed on.
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {}, column {}", e.line(), e.column());
    match e.classify() {
        Category::Io => "cannot be read".into(),
        Category::Syntax => format!("is not valid JSON ({at})"),
        Category::Eof => format!("is not valid JSON (it ends early, {at})"),
        Category::Data => format!("does not have the expected structure ({at})"),
    }
}

/// What a typed deserialization error says, without the values it failed on: serde's messages
/// quote the offending value first and describe the expected type last.
pub(crate) fn schema_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if let Some(field) = text.strip_prefix("missing field ") {
        return format!("has no {field}");
    }
    match text.rfind(", expected ") {
        Some(i) => format!(
            "has a field of the wrong type or value ({})",
            &text[i + 2..]
        ),
        None => "has a field of the wrong type or value".into(),
    }
}

/// Why a `tokenizer.json` did not load, without echoing it (the tokenizers crate's errors are
/// mostly serde's, which quote the offending value).
pub(crate) fn tokenizer_problem(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(json) = e.downcast_ref::<serde_json::Error>() {
        return format!("is not a usable tokenizer: it {}", json_problem(json));
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return format!("cannot read: {io}");
    }
    "is not a usable tokenizer".into()
}

/// Reads the `tokenizer.json` at `path` (see [`tokenizer_from_json`]).
pub(crate) fn read_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer, EngineError> {
    let json = std::fs::read(path)
        .map_err(|e| EngineError::bad_file(path, format!("cannot read: {e}")))?;
    tokenizer_from_json(&json, path)
}

/// A `tokenizer.json` (`path` names it in errors). The JSON is checked first: tokenizers 0.23
/// panics (`expect("Helper")`) on a syntax error inside `decoder`, which fuzzing found; any
/// other panic of its loader becomes an error too.
pub(crate) fn tokenizer_from_json(
    json: &[u8],
    path: &Path,
) -> Result<tokenizers::Tokenizer, EngineError> {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(json) {
        return Err(EngineError::bad_file(
            path,
            format!("is not a usable tokenizer: it {}", json_problem(&e)),
        ));
    }
    let loaded = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(json));
    match loaded {
        Ok(Ok(tokenizer)) => Ok(tokenizer),
        Ok(Err(e)) => Err(EngineError::bad_file(path, tokenizer_problem(&*e))),
        Err(_) => Err(EngineError::bad_file(path, "is not a usable tokenizer")),
    }
}

/// The problem with a field of a JSON config: `None` when it is a positive integer.
fn positive_problem(value: &Value, key: &str) -> Option<String> {
    match value {
        Value::Null => Some(format!("has no {key}")),
        Value::Number(n) if n.as_u64() == Some(0) => Some(format!("{key} must be > 0")),
        Value::Number(n) if n.as_u64().is_some() => None,
        _ => Some(format!("{key} must be a positive integer")),
    }
}

/// A positive integer field of `config.json` at `path`.
pub(crate) fn positive(config: &Value, key: &str, path: &Path) -> Result<usize, EngineError> {
    let value = &config[key];
    if let Some(problem) = positive_problem(value, key) {
        return Err(EngineError::bad_file(path, problem));
    }
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| EngineError::bad_file(path, format!("{key} is too large")))
}

/// Like [`positive`], `None` when the field is absent or null.
pub(crate) fn optional_positive(
    config: &Value,
    key: &str,
    path: &Path,
) -> Result<Option<usize>, EngineError> {
    if config[key].is_null() {
        return Ok(None);
    }
    positive(config, key, path).map(Some)
}

/// Opens safetensors files, describing a failure without echoing their content.
pub(crate) fn open_safetensors(files: &[PathBuf]) -> Result<MmapedSafetensors, EngineError> {
    // SAFETY: the files are memory-mapped read-only; like every safetensors loader we rely on
    // them not being truncated while the model loads.
    unsafe { MmapedSafetensors::multi(files) }.map_err(|e| {
        tracing::debug!(error = %candle_message(&e), "cannot open the safetensors weights");
        let reason = match candle_root(&e) {
            candle_core::Error::Io(io) => format!("cannot read the safetensors weights: {io}"),
            _ => "is not a valid safetensors file".to_string(),
        };
        EngineError::bad_file(files.first().cloned().unwrap_or_default(), reason)
    })
}

/// The shapes of every tensor in opened safetensors files.
pub(crate) fn safetensors_shapes(
    tensors: &MmapedSafetensors,
    origin: &Path,
) -> Result<Shapes, EngineError> {
    let mut shapes = Shapes::new();
    for (name, view) in tensors.tensors() {
        let dims = view.shape().to_vec();
        let elems = elem_count(&dims).ok_or_else(|| {
            EngineError::bad_file(origin, format!("tensor {name} has an impossible shape"))
        })?;
        shapes.insert(name, TensorMeta { dims, elems });
    }
    Ok(shapes)
}

/// Bytes of memory the machine can still give: `MemAvailable`, and the cgroup's limit minus
/// its usage where one is set. `None` where neither can be read (then nothing is checked).
pub(crate) fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let host = meminfo.as_deref().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib.saturating_mul(1024))
    });
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let cgroup = match (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(current)) => Some(max.saturating_sub(current)),
        _ => None,
    };
    match (host, cgroup) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    }
}

fn human(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// Refuses a load that needs more memory than `available` (unknown: allowed).
pub(crate) fn memory_verdict(
    needed: u64,
    available: Option<u64>,
    what: &str,
) -> Result<(), EngineError> {
    match available {
        Some(free) if needed > free => Err(EngineError::Unsupported(format!(
            "loading {what} needs about {} of memory but only {} is available",
            human(needed),
            human(free)
        ))),
        _ => Ok(()),
    }
}

/// [`memory_verdict`] against this machine's available memory.
pub(crate) fn ensure_memory(needed: u64, what: &str) -> Result<(), EngineError> {
    memory_verdict(needed, available_memory(), what)
}

/// Validates a BERT / XLM-RoBERTa `config.json` against its safetensors weights, and the memory
/// the load will take, before anything is allocated.
pub(crate) fn check_encoder(
    files: &ModelFiles,
    arch: Architecture,
    placement: &Placement,
) -> Result<(), EngineError> {
    let path = files.folder.join("config.json");
    let c = &files.config;
    let vocab = positive(c, "vocab_size", &path)?;
    let hidden = positive(c, "hidden_size", &path)?;
    let layers = positive(c, "num_hidden_layers", &path)?;
    let heads = positive(c, "num_attention_heads", &path)?;
    let inter = positive(c, "intermediate_size", &path)?;
    let positions = positive(c, "max_position_embeddings", &path)?;
    let types = optional_positive(c, "type_vocab_size", &path)?;
    let bad = |reason: String| EngineError::bad_file(&path, reason);
    if !hidden.is_multiple_of(heads) {
        return Err(bad(format!(
            "hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads})"
        )));
    }
    match &c["pad_token_id"] {
        Value::Null => {}
        v => match v.as_u64() {
            Some(pad) if pad < vocab as u64 => {}
            Some(pad) => {
                return Err(bad(format!(
                    "pad_token_id ({pad}) must be below vocab_size ({vocab})"
                )))
            }
            None => return Err(bad("pad_token_id must be a non-negative integer".into())),
        },
    }
    if arch == Architecture::XlmRoberta {
        let pad = c["pad_token_id"].as_u64().unwrap_or(0);
        if pad.saturating_add(1) >= positions as u64 {
            return Err(bad(format!(
                "max_position_embeddings ({positions}) leaves no positions after pad_token_id ({pad})"
            )));
        }
    }
    for key in ["layer_norm_eps", "hidden_dropout_prob", "initializer_range"] {
        if !c[key].is_null() && !c[key].is_number() {
            return Err(bad(format!("{key} must be a number")));
        }
    }
    for key in ["hidden_act", "position_embedding_type", "model_type"] {
        if !c[key].is_null() && !c[key].is_string() {
            return Err(bad(format!("{key} must be a string")));
        }
    }

    let tensors = open_safetensors(&files.weights)?;
    let weights_path = files.weights.first().cloned().unwrap_or_default();
    let shapes = safetensors_shapes(&tensors, &weights_path)?;
    let probe = "embeddings.word_embeddings.weight";
    let model_prefix = format!("{}.", files.model_type());
    let prefix = ["", "bert.", "roberta.", model_prefix.as_str()]
        .into_iter()
        .find(|p| shapes.contains_key(&format!("{p}{probe}")))
        .ok_or_else(|| {
            EngineError::bad_file(
                &weights_path,
                format!("has no {probe} (the weights do not match config.json)"),
            )
        })?;
    let shape = |name: &str, want: &[(usize, &str)]| {
        expect_shape(&shapes, &format!("{prefix}{name}"), want).map_err(&bad)
    };
    shape(probe, &[(vocab, "vocab_size"), (hidden, "hidden_size")])?;
    shape(
        "embeddings.position_embeddings.weight",
        &[
            (positions, "max_position_embeddings"),
            (hidden, "hidden_size"),
        ],
    )?;
    if let Some(types) = types {
        shape(
            "embeddings.token_type_embeddings.weight",
            &[(types, "type_vocab_size"), (hidden, "hidden_size")],
        )?;
    }
    let present = layer_indices(shapes.keys(), &format!("{prefix}encoder.layer.")).len();
    if layers > present {
        return Err(bad(format!(
            "num_hidden_layers is {layers} but the weights hold {present} layers"
        )));
    }
    let square = [(hidden, "hidden_size"), (hidden, "hidden_size")];
    for i in 0..layers {
        let l = format!("encoder.layer.{i}");
        for part in ["query", "key", "value"] {
            shape(&format!("{l}.attention.self.{part}.weight"), &square)?;
        }
        shape(&format!("{l}.attention.output.dense.weight"), &square)?;
        shape(
            &format!("{l}.intermediate.dense.weight"),
            &[(inter, "intermediate_size"), (hidden, "hidden_size")],
        )?;
        shape(
            &format!("{l}.output.dense.weight"),
            &[(hidden, "hidden_size"), (inter, "intermediate_size")],
        )?;
    }
    if placement.device.is_cpu() {
        // Every tensor becomes an f32 copy; our BERT also stacks q, k and v into one matrix.
        let all: u64 = shapes.values().map(|m| m.elems).sum();
        let stacked = 3 * (hidden as u64).pow(2) * layers as u64;
        let needed = all.saturating_add(stacked).saturating_mul(4);
        ensure_memory(needed, "the model")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_beyond_what_is_available_is_refused_with_the_numbers() {
        let err = memory_verdict(3 << 30, Some(1 << 30), "the model").unwrap_err();
        assert!(err.is_client_error());
        let text = err.to_string();
        assert!(
            text.contains("3.0 GiB") && text.contains("1.0 GiB"),
            "{text}"
        );
        assert!(memory_verdict(1 << 20, Some(1 << 30), "x").is_ok());
        assert!(memory_verdict(u64::MAX, None, "x").is_ok());
        assert!(available_memory().is_some_and(|m| m > 0));
    }

    #[test]
    fn element_counts_that_overflow_are_none() {
        assert_eq!(elem_count(&[2, 3, 4]), Some(24));
        assert_eq!(elem_count(&[]), Some(1));
        assert_eq!(elem_count(&[usize::MAX, 2]), None);
    }

    #[test]
    fn serde_messages_lose_the_values_they_quote() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct C {
            a: usize,
        }
        let e = serde_json::from_value::<C>(serde_json::json!({"a": "secret, expected x"}))
            .unwrap_err();
        let text = schema_problem(&e);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("expected usize"), "{text}");
        let e = serde_json::from_value::<C>(serde_json::json!({})).unwrap_err();
        assert_eq!(schema_problem(&e), "has no `a`");
        let e = serde_json::from_str::<Value>("{\"k\": secret}").unwrap_err();
        let text = json_problem(&e);
        assert!(
            !text.contains("secret") && text.contains("line 1"),
            "{text}"
        );
    }
}
