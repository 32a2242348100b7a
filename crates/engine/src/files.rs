//! What a model folder holds, checked before anything is loaded.
//!
//! A Hugging Face / sentence-transformers folder: `config.json`, `tokenizer.json`, weights as
//! `model.safetensors` or shards listed in `model.safetensors.index.json` (any other
//! `*.safetensors` files as a fallback), optionally `modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json` and `tokenizer_config.json`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checks::json_problem;
use crate::error::EngineError;

/// The resolved files of one model folder.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub folder: PathBuf,
    pub config: Value,
    pub tokenizer: PathBuf,
    pub weights: Vec<PathBuf>,
    /// `1_Pooling/config.json` (or whichever folder `modules.json` names), if any.
    pub pooling: Option<Value>,
    /// `modules.json` lists a Normalize module.
    pub normalize: bool,
    /// `sentence_bert_config.json` `max_seq_length`, if any.
    pub max_seq_length: Option<usize>,
    /// `tokenizer_config.json` `model_max_length`, if any and sane.
    pub model_max_length: Option<usize>,
}

/// The largest JSON file read (configs are kilobytes; a chat template a few hundred).
const MAX_JSON_BYTES: u64 = 64 << 20;

fn read_json(path: &Path) -> Result<Value, EngineError> {
    let cannot = |e: std::io::Error| EngineError::bad_file(path, format!("cannot read: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    // Read through `take`: a special file (a pipe, /dev/zero) has no size to check first.
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(EngineError::bad_file(
            path,
            format!("is larger than {} MiB", MAX_JSON_BYTES >> 20),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| EngineError::bad_file(path, json_problem(&e)))
}

pub(crate) fn read_optional_json(path: &Path) -> Result<Option<Value>, EngineError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

impl ModelFiles {
    pub fn resolve(folder: &Path) -> Result<ModelFiles, EngineError> {
        if !folder.is_dir() {
            return Err(EngineError::bad_file(folder, "is not a folder (a model folder with config.json, tokenizer.json and *.safetensors is expected)"));
        }
        let missing = |file: &str, what: &'static str| EngineError::MissingFile {
            folder: folder.to_path_buf(),
            file: file.to_string(),
            what,
        };
        let config_path = folder.join("config.json");
        if !config_path.is_file() {
            return Err(missing("config.json", "the model configuration"));
        }
        let config = read_json(&config_path)?;
        let tokenizer = folder.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(missing(
                "tokenizer.json",
                "the tokenizer in Hugging Face format",
            ));
        }
        let weights = find_weights(folder)?;
        if weights.is_empty() {
            return Err(missing(
                "model.safetensors",
                "the weights; only safetensors files are loaded",
            ));
        }

        let modules = read_optional_json(&folder.join("modules.json"))?;
        let module_of = |kind: &str| {
            modules.as_ref().and_then(Value::as_array).and_then(|list| {
                list.iter().find(|m| {
                    m.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.ends_with(kind))
                })
            })
        };
        let pooling_dir = module_of(".Pooling")
            .and_then(|m| m.get("path").and_then(Value::as_str))
            .unwrap_or("1_Pooling");
        if !inside(pooling_dir) {
            return Err(EngineError::bad_file(
                folder.join("modules.json"),
                "names a Pooling folder outside the model folder",
            ));
        }
        let pooling = read_optional_json(&folder.join(pooling_dir).join("config.json"))?;
        let normalize = module_of(".Normalize").is_some();
        let max_seq_length = read_optional_json(&folder.join("sentence_bert_config.json"))?
            .and_then(|c| c.get("max_seq_length").and_then(Value::as_u64))
            .map(|n| n as usize);
        let model_max_length = read_optional_json(&folder.join("tokenizer_config.json"))?
            .and_then(|c| c.get("model_max_length").and_then(Value::as_u64))
            .filter(|n| *n < 1_000_000)
            .map(|n| n as usize);
        Ok(ModelFiles {
            folder: folder.to_path_buf(),
            config,
            tokenizer,
            weights,
            pooling,
            normalize,
            max_seq_length,
            model_max_length,
        })
    }

    /// `config.json` `model_type`, e.g. `bert`, `xlm-roberta`.
    pub fn model_type(&self) -> &str {
        self.config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Total size of the weight files in bytes.
    pub fn weights_bytes(&self) -> u64 {
        self.weights
            .iter()
            .filter_map(|p| p.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Whether a relative path from a model file stays inside the model folder (no absolute path,
/// no `..`): those files must not make the loader read files elsewhere.
fn inside(relative: &str) -> bool {
    Path::new(relative).components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    })
}

pub(crate) fn find_weights(folder: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let single = folder.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = folder.join("model.safetensors.index.json");
    if index.is_file() {
        let index_json = read_json(&index)?;
        let map = index_json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| EngineError::bad_file(&index, "has no weight_map"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for file in map.values().filter_map(Value::as_str) {
            if !inside(file) {
                return Err(EngineError::bad_file(
                    &index,
                    "names a weight shard outside the model folder",
                ));
            }
            let path = folder.join(file);
            if !path.is_file() {
                return Err(EngineError::MissingFile {
                    folder: folder.to_path_buf(),
                    file: file.to_string(),
                    what: "a weight shard named in model.safetensors.index.json",
                });
            }
            if !files.contains(&path) {
                files.push(path);
            }
        }
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| EngineError::bad_file(folder, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}
