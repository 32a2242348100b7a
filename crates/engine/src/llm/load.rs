//! Loading an LLM: a GGUF file or a Hugging Face folder becomes a [`LlmModel`] (config checked
//! against the file and the machine first, then the tokenizer, chat template, end tokens and
//! the decoder on its backend).

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::constraint::GrammarCompiler;
use super::cpu::CpuBackend;
use super::decoder::Decoder;
use super::portable::TensorBackend;
use super::weights::{self, GgufWeights, SafetensorsWeights};
use super::{gguf_tokenizer, validate, ChatTemplate, Llm, LlmConfig, LlmModel, LoadOptions};
use crate::checks::read_tokenizer;
use crate::error::EngineError;
use crate::files::{read_optional_json, ModelFiles};

/// Tokens that end a turn in common chat formats; generation stops at any the vocabulary has.
const END_OF_TURN: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
];

impl LlmModel {
    /// Loads `path`: a `.gguf` file, a folder holding one `.gguf` file, or a Hugging Face folder
    /// (`config.json`, `tokenizer.json`, `*.safetensors`). `on_progress` sees 0..1.
    pub fn load(
        path: &Path,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(f32),
    ) -> Result<LlmModel, EngineError> {
        if path.is_dir() && path.join("config.json").is_file() {
            return Self::load_safetensors(path, options, on_progress);
        }
        let file = gguf_file_in(path)?;
        Self::load_gguf_with(&file, options, on_progress)
    }

    /// Loads a GGUF file (see [`LoadOptions`]).
    pub fn load_gguf(
        path: &Path,
        fallback_template: Option<String>,
        requantize: Option<GgmlDType>,
    ) -> Result<LlmModel, EngineError> {
        let options = LoadOptions {
            requantize,
            fallback_template,
            ..Default::default()
        };
        Self::load_gguf_with(path, &options, &mut |_| {})
    }

    fn load_gguf_with(
        path: &Path,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(f32),
    ) -> Result<LlmModel, EngineError> {
        let bad = |e: &dyn std::fmt::Display| EngineError::bad_file(path, e);
        let mut file = std::fs::File::open(path).map_err(|e| bad(&format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| bad(&format!("cannot open: {e}")))?
            .len();
        let content = validate::read_gguf(&mut file, path)?;
        let (config, names) = LlmConfig::parse_gguf(&content, path)?;
        let catalogue = validate::Catalogue::gguf(&content, size, path)?;
        let on_cpu = options.placement.device.is_cpu();
        validate::check_model(
            &config,
            &names,
            &catalogue,
            options.requantize,
            on_cpu,
            path,
        )?;
        let (tokenizer, bos, eos) = gguf_tokenizer::from_gguf(&content)?;
        let name = |id: Option<u32>| {
            id.and_then(|i| tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let source = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .or_else(|| options.fallback_template.clone());
        let template = source
            .map(|s| ChatTemplate::new(s, name(bos), name(eos)))
            .transpose()?;
        let eot = content
            .metadata
            .get("tokenizer.ggml.eot_token_id")
            .and_then(|v| v.to_u32().ok());
        let end_ids = end_ids(&tokenizer, [eos, eot].into_iter().flatten());
        let mut weights = GgufWeights::new(content, file, options.requantize, path);
        let parts = (tokenizer, template, end_ids);
        Self::assemble(path, config, &mut weights, parts, options, on_progress)
    }

    /// Loads the weights and puts the model together (both formats end here).
    fn assemble(
        origin: &Path,
        config: LlmConfig,
        weights: &mut dyn weights::WeightSource,
        (tokenizer, template, end_ids): (Tokenizer, Option<ChatTemplate>, Vec<u32>),
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(f32),
    ) -> Result<LlmModel, EngineError> {
        let placement = options.placement.clone();
        let tokenizer = Arc::new(tokenizer);
        let grammars = GrammarCompiler::new(tokenizer.clone(), config.vocab_size, end_ids.clone());
        let mut on_layer = |done: usize, all: usize| on_progress(done as f32 / all as f32);
        tracing::info!(from = %origin.display(), arch = config.arch.name(),
            context = config.context_length, on = %placement.describe(), "loading LLM layers");
        let model = if placement.cpu_kernels() {
            let backend = CpuBackend::load(&config, weights)?;
            LlmModel::Cpu(Llm {
                decoder: Decoder::load(config, backend, weights, &mut on_layer)?,
                placement,
                tokenizer,
                template,
                end_ids,
                grammars: grammars.clone(),
            })
        } else {
            let backend = TensorBackend::load(&config, weights, &placement)?;
            LlmModel::Portable(Llm {
                decoder: Decoder::load(config, backend, weights, &mut on_layer)?,
                placement,
                tokenizer,
                template,
                end_ids,
                grammars,
            })
        };
        tracing::info!(from = %origin.display(), on = %model.placement().describe(), "LLM loaded");
        Ok(model)
    }

    /// Loads a Hugging Face folder: `config.json`, `tokenizer.json`, safetensors weights, and
    /// optionally `tokenizer_config.json` (chat template, special tokens) and
    /// `generation_config.json` (end tokens).
    pub fn load_safetensors(
        folder: &Path,
        options: &LoadOptions,
        on_progress: &mut dyn FnMut(f32),
    ) -> Result<LlmModel, EngineError> {
        let files = ModelFiles::resolve(folder)?;
        let config_path = folder.join("config.json");
        let (config, names) = LlmConfig::parse_hf(&files.config, &config_path)?;
        let mut weights = SafetensorsWeights::open(&files.weights, options.requantize)?;
        let origin = files.weights.first().cloned().unwrap_or_default();
        let catalogue = validate::Catalogue::safetensors(weights.shapes(&origin)?);
        let on_cpu = options.placement.device.is_cpu();
        let requantize = options.requantize.filter(|d| *d != GgmlDType::F32);
        validate::check_model(
            &config,
            &names,
            &catalogue,
            requantize,
            on_cpu,
            &config_path,
        )?;
        let tokenizer = read_tokenizer(&files.tokenizer)?;
        let tok_config =
            read_optional_json(&folder.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let generation =
            read_optional_json(&folder.join("generation_config.json"))?.unwrap_or(Value::Null);
        let special = |key: &str| -> String {
            let v = &tok_config[key];
            v.as_str()
                .or_else(|| v["content"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        let template_source = match &tok_config["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => None,
        }
        .or_else(|| options.fallback_template.clone());
        let (bos, eos) = (special("bos_token"), special("eos_token"));
        let mut ids: Vec<u32> = Vec::new();
        for source in [&generation["eos_token_id"], &files.config["eos_token_id"]] {
            match source {
                Value::Number(n) => ids.extend(n.as_u64().map(|v| v as u32)),
                Value::Array(list) => {
                    ids.extend(list.iter().filter_map(Value::as_u64).map(|v| v as u32))
                }
                _ => {}
            }
        }
        ids.extend(tokenizer.token_to_id(&eos));
        let end_ids = end_ids(&tokenizer, ids.into_iter());
        let template = template_source
            .map(|s| ChatTemplate::new(s, bos, eos))
            .transpose()?;
        let parts = (tokenizer, template, end_ids);
        Self::assemble(folder, config, &mut weights, parts, options, on_progress)
    }
}

/// The end ids given plus every end-of-turn token the vocabulary has.
fn end_ids(tokenizer: &Tokenizer, given: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = given.collect();
    ids.extend(END_OF_TURN.iter().filter_map(|t| tokenizer.token_to_id(t)));
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The GGUF file of an LLM path: the path itself, or the one `.gguf` file in a folder.
pub fn gguf_file_in(path: &Path) -> Result<std::path::PathBuf, EngineError> {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "gguf") {
            return Ok(path.to_path_buf());
        }
        return Err(EngineError::bad_file(
            path,
            "is not a .gguf file (LLMs load from a .gguf file or a Hugging Face folder with config.json)",
        ));
    }
    let found: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| EngineError::bad_file(path, format!("cannot read: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(EngineError::bad_file(
            path,
            "holds neither a .gguf file nor config.json + safetensors weights",
        )),
        _ => Err(EngineError::bad_file(
            path,
            "holds several .gguf files; pass the file itself as model_path",
        )),
    }
}
