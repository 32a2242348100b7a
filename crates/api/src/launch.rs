//! Launch options: the engine and device keys of a `POST /v1/models` body, parsed once (by the
//! supervisor, when the launch arrives) into [`LaunchOptions`]. Placement and the worker read the
//! typed fields; nothing below the supervisor's edge reads the untyped map again.
//!
//! Each default lives here: [`DEFAULT_MAX_NUM_SEQS`], [`DEFAULT_MAX_NUM_BATCHED_TOKENS`], and the
//! `Default` of [`LaunchOptions`] (device `"auto"`, dtype `"auto"`, no requantisation, dynamic
//! batching on).
//!
//! `n_gpu` is upstream's: an integer, `"auto"` or `null`. A numeric string (`"1"`, as web forms
//! and some SDK versions send it) is the same integer, here and therefore everywhere: placement
//! and the worker read the one parsed value, so they cannot disagree about a launch.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tools::ToolParser;

/// LLM sequences generating at once per replica (vLLM's `max_num_seqs`).
pub const DEFAULT_MAX_NUM_SEQS: usize = 16;
/// LLM tokens per forward pass: decode steps plus prompt chunks (vLLM's
/// `max_num_batched_tokens`). Bounds how long a new long prompt pauses running streams.
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: usize = 512;
/// The largest `max_num_seqs` / `max_num_batched_tokens` accepted.
pub const MAX_COUNT_OPTION: usize = 1_000_000;

/// What `n_gpu` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum GpuRequest {
    /// Absent or `"auto"` (upstream's default): the freest GPU, else the CPU.
    #[default]
    Auto,
    /// `null`: the CPU only.
    Cpu,
    /// A positive integer (or a string holding one).
    Count(usize),
}

impl GpuRequest {
    /// GPUs this asks placement for (`Auto` asks for none: the worker uses one if it has one).
    pub fn count(self) -> usize {
        match self {
            GpuRequest::Count(n) => n,
            GpuRequest::Auto | GpuRequest::Cpu => 0,
        }
    }
}

/// `dtype`: the precision of the weights and activations (`None` in [`LaunchOptions`] is
/// `"auto"`: the worker picks one for the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Dtype {
    Float32,
    Bfloat16,
    Float16,
}

impl Dtype {
    /// `float32`/`f32`/`float`, `bfloat16`/`bf16`, `float16`/`f16`/`half` (any case).
    pub fn parse(name: &str) -> Option<Dtype> {
        match name.to_ascii_lowercase().as_str() {
            "float32" | "f32" | "float" => Some(Dtype::Float32),
            "bfloat16" | "bf16" => Some(Dtype::Bfloat16),
            "float16" | "f16" | "half" => Some(Dtype::Float16),
            _ => None,
        }
    }
}

/// `requantize`: convert every weight matrix at load (`None` in [`LaunchOptions`] is `"none"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Requantize {
    Q8_0,
    F32,
}

/// A launch option with a bad value: a 400 whose detail names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOptionError {
    /// The launch field, e.g. `n_gpu`.
    pub field: &'static str,
    /// The whole detail, starting with the field's name.
    pub message: String,
}

impl std::fmt::Display for LaunchOptionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LaunchOptionError {}

fn error(field: &'static str, message: String) -> LaunchOptionError {
    LaunchOptionError { field, message }
}

/// The typed launch options of one launch, as the supervisor hands them to every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LaunchOptions {
    pub n_gpu: GpuRequest,
    /// `gpu_idx` split evenly over the replicas, as upstream: replica `i` takes share `i`.
    /// `None`: no `gpu_idx` (then `n_gpu` decides).
    pub gpu_idx: Option<Vec<Vec<usize>>>,
    /// `None` is `"auto"`.
    pub dtype: Option<Dtype>,
    /// `None` is `"none"`.
    pub requantize: Option<Requantize>,
    /// Merge concurrent requests (`false`: one sequence at a time).
    pub dynamic_batching: bool,
    /// LLMs: sequences generating at once per replica.
    pub max_num_seqs: usize,
    /// LLMs: tokens per forward pass.
    pub max_num_batched_tokens: usize,
    /// A Jinja chat template for model files that carry none.
    pub chat_template: Option<String>,
    /// How the model writes tool calls; `None`: read off its chat template.
    #[serde(default)]
    pub tool_parser: Option<ToolParser>,
    /// Split the model's reasoning (between the reasoning tags) from its answer into
    /// `reasoning_content` (upstream's `reasoning_content` launch option).
    #[serde(default)]
    pub reasoning_content: bool,
    /// The tags around the reasoning; `None`: the family's, else `<think>` and `</think>`.
    #[serde(default)]
    pub reasoning_start_tag: Option<String>,
    #[serde(default)]
    pub reasoning_end_tag: Option<String>,
    /// Launch keys this server does not know (upstream clients send engine kwargs for other
    /// engines); kept and passed along, never read.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            n_gpu: GpuRequest::Auto,
            gpu_idx: None,
            dtype: None,
            requantize: None,
            dynamic_batching: true,
            max_num_seqs: DEFAULT_MAX_NUM_SEQS,
            max_num_batched_tokens: DEFAULT_MAX_NUM_BATCHED_TOKENS,
            chat_template: None,
            tool_parser: None,
            reasoning_content: false,
            reasoning_start_tag: None,
            reasoning_end_tag: None,
            extra: Map::new(),
        }
    }
}

/// One replica's part of `gpu_idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuShare<'a> {
    /// The launch gave no `gpu_idx` (`n_gpu` decides).
    Unset,
    /// The GPU indices of this replica.
    Indices(&'a [usize]),
    /// The list has no share for this replica (a replica index past the launch's count).
    Missing,
}

/// The raw values of a launch's option fields: the named fields of the launch body and its
/// unknown keys (`extra`, where `requantize`, `dtype`, ... arrive).
#[derive(Debug, Clone, Copy)]
pub struct RawLaunchOptions<'a> {
    /// `None`: absent; `Some(Value::Null)`: an explicit null.
    pub n_gpu: Option<&'a Value>,
    pub gpu_idx: Option<&'a Value>,
    pub extra: &'a Map<String, Value>,
    /// The launch's replica count (`gpu_idx` is split over them).
    pub replica: usize,
}

impl LaunchOptions {
    /// Parses and checks every option; the first bad one is the error, naming its field.
    pub fn parse(raw: RawLaunchOptions<'_>) -> Result<LaunchOptions, LaunchOptionError> {
        let mut extra = raw.extra.clone();
        let mut take = |name: &str| extra.remove(name).filter(|v| !v.is_null());
        let requantize = take("requantize");
        let dtype = take("dtype");
        let dynamic_batching = take("dynamic_batching");
        let max_num_seqs = take("max_num_seqs");
        let max_num_batched_tokens = take("max_num_batched_tokens");
        let chat_template = take("chat_template");
        let tool_parser = take("tool_parser");
        let reasoning_content = take("reasoning_content");
        let reasoning_start_tag = take("reasoning_start_tag");
        let reasoning_end_tag = take("reasoning_end_tag");
        Ok(LaunchOptions {
            n_gpu: parse_n_gpu(raw.n_gpu)?,
            gpu_idx: parse_gpu_idx(raw.gpu_idx, raw.replica)?,
            dtype: parse_dtype(dtype.as_ref())?,
            requantize: parse_requantize(requantize.as_ref())?,
            dynamic_batching: match dynamic_batching {
                None => true,
                Some(Value::Bool(b)) => b,
                Some(other) => {
                    return Err(error(
                        "dynamic_batching",
                        format!("dynamic_batching must be true or false, got {other}"),
                    ))
                }
            },
            max_num_seqs: count("max_num_seqs", max_num_seqs.as_ref(), DEFAULT_MAX_NUM_SEQS)?,
            max_num_batched_tokens: count(
                "max_num_batched_tokens",
                max_num_batched_tokens.as_ref(),
                DEFAULT_MAX_NUM_BATCHED_TOKENS,
            )?,
            chat_template: match chat_template {
                None => None,
                Some(Value::String(s)) => Some(s),
                Some(other) => {
                    return Err(error(
                        "chat_template",
                        format!("chat_template must be a string, got {other}"),
                    ))
                }
            },
            tool_parser: tool_parser.as_ref().map(parse_tool_parser).transpose()?,
            reasoning_content: match reasoning_content {
                None => false,
                Some(Value::Bool(b)) => b,
                // The CLI passes extra launch options as strings.
                Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
                Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
                Some(other) => {
                    return Err(error(
                        "reasoning_content",
                        format!("reasoning_content must be true or false, got {other}"),
                    ))
                }
            },
            reasoning_start_tag: tag("reasoning_start_tag", reasoning_start_tag)?,
            reasoning_end_tag: tag("reasoning_end_tag", reasoning_end_tag)?,
            extra,
        })
    }

    /// The `gpu_idx` share of replica `index`.
    pub fn gpu_share(&self, index: usize) -> GpuShare<'_> {
        match &self.gpu_idx {
            None => GpuShare::Unset,
            Some(shares) => match shares.get(index) {
                Some(share) => GpuShare::Indices(share),
                None => GpuShare::Missing,
            },
        }
    }

    /// GPUs one replica asks placement for: `n_gpu`, or the size of its `gpu_idx` share.
    pub fn gpus_per_replica(&self) -> usize {
        let from_idx = self
            .gpu_idx
            .as_ref()
            .and_then(|shares| shares.first())
            .map_or(0, Vec::len);
        from_idx.max(self.n_gpu.count())
    }
}

/// `n_gpu`: absent or `"auto"` is auto, null the CPU, else a positive integer (or a string
/// holding one).
fn parse_n_gpu(value: Option<&Value>) -> Result<GpuRequest, LaunchOptionError> {
    let bad = |v: &Value| {
        error(
            "n_gpu",
            format!("n_gpu must be a positive integer, \"auto\" or null, got {v}"),
        )
    };
    match value {
        None => Ok(GpuRequest::Auto),
        Some(Value::Null) => Ok(GpuRequest::Cpu),
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("auto") => Ok(GpuRequest::Auto),
        Some(v @ Value::String(s)) => match s.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(GpuRequest::Count(n)),
            _ => Err(bad(v)),
        },
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(GpuRequest::Count(n as usize)),
            _ => Err(bad(v)),
        },
    }
}

/// `gpu_idx` (an index or a list) split evenly over `replica` replicas: its length must be a
/// multiple of `replica`.
fn parse_gpu_idx(
    value: Option<&Value>,
    replica: usize,
) -> Result<Option<Vec<Vec<usize>>>, LaunchOptionError> {
    let list: Vec<Value> = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list.clone(),
        Some(one) => vec![one.clone()],
    };
    let indices: Option<Vec<usize>> = list
        .iter()
        .map(|i| i.as_u64().map(|i| i as usize))
        .collect();
    let indices = match indices {
        Some(indices) if !indices.is_empty() => indices,
        _ => {
            return Err(error(
                "gpu_idx",
                format!(
                    "gpu_idx must be a GPU index or a list of them, got {}",
                    value.cloned().unwrap_or_default()
                ),
            ))
        }
    };
    let replica = replica.max(1);
    if !indices.len().is_multiple_of(replica) {
        return Err(error(
            "gpu_idx",
            format!(
                "The length of gpu_idx ({}) must be a multiple of replica ({replica})",
                indices.len()
            ),
        ));
    }
    let each = indices.len() / replica;
    Ok(Some(indices.chunks(each).map(<[usize]>::to_vec).collect()))
}

/// A reasoning tag: a short non-empty string.
fn tag(field: &'static str, value: Option<Value>) -> Result<Option<String>, LaunchOptionError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 64 => Ok(Some(s)),
        Some(other) => Err(error(
            field,
            format!("{field} must be a non-empty string of at most 64 bytes, got {other}"),
        )),
    }
}

fn parse_tool_parser(value: &Value) -> Result<ToolParser, LaunchOptionError> {
    value
        .as_str()
        .and_then(ToolParser::from_name)
        .ok_or_else(|| {
            error(
                "tool_parser",
                format!(
                    "tool_parser must be one of {}, got {value}",
                    ToolParser::NAMES.join(", ")
                ),
            )
        })
}

fn parse_dtype(value: Option<&Value>) -> Result<Option<Dtype>, LaunchOptionError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("auto") => Ok(None),
        Some(v) => match v.as_str().and_then(Dtype::parse) {
            Some(dtype) => Ok(Some(dtype)),
            None => Err(error(
                "dtype",
                format!(
                    "dtype must be \"auto\", \"float32\", \"bfloat16\" or \"float16\", got {v}"
                ),
            )),
        },
    }
}

fn parse_requantize(value: Option<&Value>) -> Result<Option<Requantize>, LaunchOptionError> {
    let name = match value {
        None => return Ok(None),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(error(
                "requantize",
                format!("requantize must be \"Q8_0\", \"F32\" or \"none\", got {other}"),
            ))
        }
    };
    match name {
        v if v.eq_ignore_ascii_case("none") => Ok(None),
        v if v.eq_ignore_ascii_case("q8_0") => Ok(Some(Requantize::Q8_0)),
        v if v.eq_ignore_ascii_case("f32") => Ok(Some(Requantize::F32)),
        other => Err(error(
            "requantize",
            format!("requantize must be \"Q8_0\", \"F32\" or \"none\", got {other:?}"),
        )),
    }
}

/// A positive integer option (at most [`MAX_COUNT_OPTION`]), or its default.
fn count(
    field: &'static str,
    value: Option<&Value>,
    default: usize,
) -> Result<usize, LaunchOptionError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match v.as_u64() {
        Some(n) if (1..=MAX_COUNT_OPTION as u64).contains(&n) => Ok(n as usize),
        _ => Err(error(
            field,
            format!("{field} must be a positive integer, got {v}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<LaunchOptions, LaunchOptionError> {
        parse_with(body, 1)
    }

    fn parse_with(body: Value, replica: usize) -> Result<LaunchOptions, LaunchOptionError> {
        let mut extra = body.as_object().cloned().unwrap_or_default();
        let n_gpu = extra.remove("n_gpu");
        let gpu_idx = extra.remove("gpu_idx");
        LaunchOptions::parse(RawLaunchOptions {
            n_gpu: n_gpu.as_ref(),
            gpu_idx: gpu_idx.as_ref(),
            extra: &extra,
            replica,
        })
    }

    #[test]
    fn absent_options_are_the_defaults_and_unknown_keys_pass_through() {
        let got = parse(json!({"enable_thinking": true, "dtype": null})).unwrap();
        let mut want = LaunchOptions::default();
        want.extra.insert("enable_thinking".into(), json!(true));
        assert_eq!(got, want);
        assert_eq!(got.max_num_seqs, 16);
        assert_eq!(got.max_num_batched_tokens, 512);
        assert!(got.dynamic_batching);
    }

    #[test]
    fn every_option_parses_its_good_values() {
        let got = parse(json!({
            "n_gpu": 1, "gpu_idx": [0, 1], "dtype": "BF16", "requantize": "q8_0",
            "dynamic_batching": false, "max_num_seqs": 4, "max_num_batched_tokens": 64,
            "chat_template": "{{ x }}", "tool_parser": "qwen", "reasoning_content": "true",
            "reasoning_start_tag": "<r>",
        }))
        .unwrap();
        assert_eq!(got.n_gpu, GpuRequest::Count(1));
        assert_eq!(got.gpu_idx, Some(vec![vec![0, 1]]));
        assert_eq!(got.dtype, Some(Dtype::Bfloat16));
        assert_eq!(got.requantize, Some(Requantize::Q8_0));
        assert!(!got.dynamic_batching);
        assert_eq!((got.max_num_seqs, got.max_num_batched_tokens), (4, 64));
        assert_eq!(got.chat_template.as_deref(), Some("{{ x }}"));
        assert_eq!(got.tool_parser, Some(ToolParser::Hermes));
        assert!(got.reasoning_content);
        assert_eq!(got.reasoning_start_tag.as_deref(), Some("<r>"));
        assert_eq!(got.reasoning_end_tag, None);
        assert!(got.extra.is_empty());
        assert_eq!(
            parse(json!({"n_gpu": null})).unwrap().n_gpu,
            GpuRequest::Cpu
        );
        assert_eq!(
            parse(json!({"n_gpu": "AUTO"})).unwrap().n_gpu,
            GpuRequest::Auto
        );
        assert_eq!(
            parse(json!({"requantize": "none"})).unwrap().requantize,
            None
        );
        assert_eq!(parse(json!({"dtype": "auto"})).unwrap().dtype, None);
    }

    #[test]
    fn a_numeric_n_gpu_string_is_that_integer() {
        for value in [json!("1"), json!(" 1 "), json!(1)] {
            let got = parse(json!({ "n_gpu": value })).unwrap();
            assert_eq!(got.n_gpu, GpuRequest::Count(1), "{value}");
            assert_eq!(got.gpus_per_replica(), 1, "{value}");
        }
        assert_eq!(
            parse(json!({"n_gpu": "2"})).unwrap().n_gpu,
            GpuRequest::Count(2)
        );
    }

    #[test]
    fn gpu_idx_is_split_evenly_over_the_replicas() {
        let shares = |v: Value, r| parse_with(json!({ "gpu_idx": v }), r).map(|o| o.gpu_idx);
        assert_eq!(parse_with(json!({}), 2).unwrap().gpu_idx, None);
        assert_eq!(shares(json!(null), 2).unwrap(), None);
        assert_eq!(shares(json!(1), 1).unwrap(), Some(vec![vec![1]]));
        assert_eq!(
            shares(json!([0, 1, 2, 3]), 2).unwrap(),
            Some(vec![vec![0, 1], vec![2, 3]])
        );
        let two = parse_with(json!({"gpu_idx": [1, 0]}), 2).unwrap();
        assert_eq!(two.gpu_share(1), GpuShare::Indices(&[0]));
        assert_eq!(two.gpu_share(2), GpuShare::Missing);
        assert_eq!(two.gpus_per_replica(), 1);
        assert_eq!(LaunchOptions::default().gpu_share(3), GpuShare::Unset);
        let err = shares(json!([0, 1, 2]), 2).unwrap_err();
        assert_eq!(
            err.message,
            "The length of gpu_idx (3) must be a multiple of replica (2)"
        );
    }

    /// One bad value per option: each is refused with a message that starts with its field.
    #[test]
    fn every_bad_value_is_refused_naming_its_field() {
        for (body, field, message) in [
            (
                json!({"n_gpu": 0}),
                "n_gpu",
                "n_gpu must be a positive integer, \"auto\" or null, got 0",
            ),
            (
                json!({"n_gpu": -1}),
                "n_gpu",
                "n_gpu must be a positive integer, \"auto\" or null, got -1",
            ),
            (
                json!({"n_gpu": "two"}),
                "n_gpu",
                "n_gpu must be a positive integer, \"auto\" or null, got \"two\"",
            ),
            (
                json!({"n_gpu": "0"}),
                "n_gpu",
                "n_gpu must be a positive integer, \"auto\" or null, got \"0\"",
            ),
            (
                json!({"n_gpu": 1.5}),
                "n_gpu",
                "n_gpu must be a positive integer, \"auto\" or null, got 1.5",
            ),
            (
                json!({"n_gpu": [1]}),
                "n_gpu",
                "n_gpu must be a positive integer, \"auto\" or null, got [1]",
            ),
            (
                json!({"gpu_idx": "0"}),
                "gpu_idx",
                "gpu_idx must be a GPU index or a list of them, got \"0\"",
            ),
            (
                json!({"gpu_idx": []}),
                "gpu_idx",
                "gpu_idx must be a GPU index or a list of them, got []",
            ),
            (
                json!({"gpu_idx": [0, -1]}),
                "gpu_idx",
                "gpu_idx must be a GPU index or a list of them, got [0,-1]",
            ),
            (
                json!({"gpu_idx": [[0]]}),
                "gpu_idx",
                "gpu_idx must be a GPU index or a list of them, got [[0]]",
            ),
            (
                json!({"dtype": "int4"}),
                "dtype",
                "dtype must be \"auto\", \"float32\", \"bfloat16\" or \"float16\", got \"int4\"",
            ),
            (
                json!({"dtype": 16}),
                "dtype",
                "dtype must be \"auto\", \"float32\", \"bfloat16\" or \"float16\", got 16",
            ),
            (
                json!({"requantize": "Q4_0"}),
                "requantize",
                "requantize must be \"Q8_0\", \"F32\" or \"none\", got \"Q4_0\"",
            ),
            (
                json!({"requantize": 8}),
                "requantize",
                "requantize must be \"Q8_0\", \"F32\" or \"none\", got 8",
            ),
            (
                json!({"dynamic_batching": "yes"}),
                "dynamic_batching",
                "dynamic_batching must be true or false, got \"yes\"",
            ),
            (
                json!({"max_num_seqs": 0}),
                "max_num_seqs",
                "max_num_seqs must be a positive integer, got 0",
            ),
            (
                json!({"max_num_seqs": "8"}),
                "max_num_seqs",
                "max_num_seqs must be a positive integer, got \"8\"",
            ),
            (
                json!({"max_num_seqs": 1_000_001}),
                "max_num_seqs",
                "max_num_seqs must be a positive integer, got 1000001",
            ),
            (
                json!({"max_num_batched_tokens": -5}),
                "max_num_batched_tokens",
                "max_num_batched_tokens must be a positive integer, got -5",
            ),
            (
                json!({"chat_template": 3}),
                "chat_template",
                "chat_template must be a string, got 3",
            ),
            (
                json!({"reasoning_content": 1}),
                "reasoning_content",
                "reasoning_content must be true or false, got 1",
            ),
            (
                json!({"reasoning_end_tag": ""}),
                "reasoning_end_tag",
                "reasoning_end_tag must be a non-empty string of at most 64 bytes, got \"\"",
            ),
            (
                json!({"tool_parser": "glm4"}),
                "tool_parser",
                "tool_parser must be one of hermes, qwen, qwen2.5, qwen3, llama3, llama3_json, llama, mistral, got \"glm4\"",
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(
                (err.field, err.message.as_str()),
                (field, message),
                "{body}"
            );
        }
    }

    #[test]
    fn the_typed_options_cross_the_wire_unchanged() {
        let options = parse_with(
            json!({"n_gpu": "1", "gpu_idx": [2, 3], "dtype": "f16", "requantize": "F32", "x": 1}),
            2,
        )
        .unwrap();
        let wire = serde_json::to_string(&options).unwrap();
        let back: LaunchOptions = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, options);
    }
}
