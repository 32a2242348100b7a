//! Text generation with quantized (GGUF) llama-architecture models.
//!
//! Parts: [`gguf_tokenizer`] (the tokenizer rebuilt from GGUF metadata), [`template`] (Jinja
//! chat templates with minijinja) and [`LlmModel`] (load, encode, generate with sampling and
//! stop conditions). One model generates one sequence at a time (candle's quantized llama keeps
//! one KV cache).

pub mod gguf_tokenizer;
pub mod template;

use std::path::Path;

use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::Tokenizer;

use crate::error::EngineError;
pub use template::{ChatMessage, ChatTemplate};

/// How to pick and when to stop.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_tokens: usize,
    /// 0 (or below 1e-7) is greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub repetition_penalty: f32,
    /// OpenAI's: subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// OpenAI's: subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    pub seed: u64,
    /// Strings that end generation; they are not part of the output.
    pub stop: Vec<String>,
    /// Token ids that end generation, besides the model's own end tokens.
    pub stop_token_ids: Vec<u32>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: None,
            top_k: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub text: String,
    /// The generated token ids (stop tokens excluded).
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
}

pub struct LlmModel {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    end_ids: Vec<u32>,
    context_length: usize,
    device: Device,
}

impl LlmModel {
    /// Loads a GGUF file. The chat template comes from the file's metadata, else `fallback`
    /// (the catalogue family's template). `requantize` converts the weights at load: `F32`
    /// computes like the unquantized model; `Q8_0` decodes faster than `Q4_1` on CPUs, whose
    /// candle kernels have no SIMD path.
    pub fn load_gguf(
        path: &Path,
        fallback_template: Option<String>,
        requantize: Option<GgmlDType>,
    ) -> Result<LlmModel, EngineError> {
        let bad = |e: &dyn std::fmt::Display| EngineError::bad_file(path, e);
        let mut file = std::fs::File::open(path).map_err(|e| bad(&format!("cannot open: {e}")))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| bad(&format!("is not a GGUF file: {e}")))?;
        match requantize {
            None => Self::from_content(path, content, &mut file, fallback_template),
            Some(target) => {
                let (content, mut buffer) =
                    requantized(content, &mut file, target).map_err(|e| bad(&e))?;
                Self::from_content(path, content, &mut buffer, fallback_template)
            }
        }
    }

    fn from_content<R: Read + Seek>(
        path: &Path,
        content: gguf_file::Content,
        reader: &mut R,
        fallback_template: Option<String>,
    ) -> Result<LlmModel, EngineError> {
        let bad = |e: &dyn std::fmt::Display| EngineError::bad_file(path, e);
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(EngineError::Unsupported(format!(
                "GGUF architecture {arch:?} is not supported yet (llama is)"
            )));
        }
        let (tokenizer, bos, eos) = gguf_tokenizer::from_gguf(&content)?;
        let token = |id: Option<u32>| {
            id.and_then(|i| tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let source = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .or(fallback_template);
        let template = source
            .map(|s| ChatTemplate::new(s, token(bos), token(eos)))
            .transpose()?;
        let context_length = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(2048) as usize;
        let device = Device::Cpu;
        let weights = ModelWeights::from_gguf(content, reader, &device)
            .map_err(|e| bad(&format!("cannot load the weights: {e}")))?;
        tracing::info!(file = %path.display(), context_length, "LLM loaded");
        Ok(LlmModel {
            weights,
            tokenizer,
            template,
            end_ids: eos.into_iter().collect(),
            context_length,
            device,
        })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Renders a chat with the model's template.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let template = self.template.as_ref().ok_or_else(|| {
            EngineError::InvalidInput("this model has no chat template; use completions".into())
        })?;
        template.render(messages, true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EngineError::InvalidInput(format!("cannot tokenize the prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| EngineError::InvalidInput(format!("cannot decode tokens: {e}")))
    }

    /// Generates from `prompt`. `on_text` receives the text as it becomes final (never a piece
    /// of a stop string) and returns false to stop early (the client went away).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::InvalidInput("the prompt is empty".into()));
        }
        if prompt.len() >= self.context_length {
            return Err(EngineError::InvalidInput(format!(
                "the prompt has {} tokens but the model's context is {} tokens",
                prompt.len(),
                self.context_length
            )));
        }
        let max_tokens = params.max_tokens.min(self.context_length - prompt.len());
        let sampling = match (params.temperature, params.top_k, params.top_p) {
            (t, _, _) if t < 1e-7 => Sampling::ArgMax,
            (t, Some(k), Some(p)) => Sampling::TopKThenTopP {
                k,
                p,
                temperature: t,
            },
            (t, Some(k), None) => Sampling::TopK { k, temperature: t },
            (t, None, Some(p)) => Sampling::TopP { p, temperature: t },
            (t, None, None) => Sampling::All { temperature: t },
        };
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
        self.weights.clear_kv_cache();

        let mut tokens: Vec<u32> = prompt.to_vec();
        let mut generated: Vec<u32> = Vec::new();
        let mut emitted = 0usize;
        let hold_back = params
            .stop
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let mut finish = FinishReason::Length;
        let mut text = String::new();
        let mut input = Tensor::new(prompt, &self.device)?.unsqueeze(0)?;
        let mut position = 0;
        while generated.len() < max_tokens {
            let logits = self.weights.forward(&input, position)?.squeeze(0)?;
            position += input.dim(1)?;
            let logits = if params.repetition_penalty != 1.0 {
                candle_transformers::utils::apply_repeat_penalty(
                    &logits,
                    params.repetition_penalty,
                    &tokens,
                )?
            } else {
                logits
            };
            let logits = if params.presence_penalty != 0.0 || params.frequency_penalty != 0.0 {
                penalize(
                    &logits,
                    &generated,
                    params.presence_penalty,
                    params.frequency_penalty,
                )?
            } else {
                logits
            };
            let next = sampler.sample(&logits)?;
            if self.end_ids.contains(&next) || params.stop_token_ids.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            tokens.push(next);
            generated.push(next);
            text = self.decode(&generated)?;
            if let Some(at) = params
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(at);
                finish = FinishReason::Stop;
                break;
            }
            // Hold back what could still become a stop string, and half-decoded characters.
            let mut safe = text.len().saturating_sub(hold_back);
            while !text.is_char_boundary(safe) {
                safe -= 1;
            }
            if safe > emitted && !text[..safe].ends_with('\u{fffd}') {
                if !on_text(&text[emitted..safe]) {
                    finish = FinishReason::Stop;
                    emitted = safe;
                    break;
                }
                emitted = safe;
            }
            input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
        }
        if text.len() > emitted {
            on_text(&text[emitted..]);
        }
        Ok(Generated {
            text,
            prompt_tokens: prompt.len(),
            completion_tokens: generated.len(),
            token_ids: generated,
            finish_reason: finish,
        })
    }
}

/// Applies OpenAI's presence and frequency penalties for the tokens generated so far.
fn penalize(
    logits: &Tensor,
    generated: &[u32],
    presence: f32,
    frequency: f32,
) -> candle_core::Result<Tensor> {
    let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for token in generated {
        *counts.entry(*token).or_default() += 1;
    }
    let mut values = logits.to_vec1::<f32>()?;
    for (token, count) in counts {
        if let Some(v) = values.get_mut(token as usize) {
            *v -= presence + frequency * count as f32;
        }
    }
    Tensor::new(values, logits.device())
}

/// Rewrites every matrix of a GGUF file as `target` into an in-memory GGUF (vectors, such as
/// norm weights, stay as they are).
fn requantized<R: Read + Seek>(
    content: gguf_file::Content,
    reader: &mut R,
    target: GgmlDType,
) -> candle_core::Result<(gguf_file::Content, std::io::Cursor<Vec<u8>>)> {
    let device = Device::Cpu;
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let tensor = info.read(reader, content.tensor_data_offset, &device)?;
        let tensor = if tensor.dtype() == target || tensor.rank() < 2 {
            tensor
        } else {
            QTensor::quantize(&tensor.dequantize(&device)?, target)?
        };
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buffer = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &refs)?;
    buffer.set_position(0);
    let content = gguf_file::Content::read(&mut buffer)?;
    Ok((content, buffer))
}
