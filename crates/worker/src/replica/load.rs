//! Loading a replica's model on its thread: the hub download (the first 80% of the progress),
//! the device, then the engine's loader for the model type (which checks the files before it
//! allocates).

use xi_api::launch::Requantize;
use xi_api::models::ModelType;
use xi_api::worker::{ReplicaInfo, ReplicaSpec, WorkerError, WorkerErrorKind};
use xi_engine::candle_quantized::GgmlDType;
use xi_engine::llm::{LlmModel, LoadOptions};
use xi_engine::whisper::WhisperModel;
use xi_engine::{CrossEncoder, Embed, EmbeddingModel, Placement, Rerank};

use super::ReplicaShared;
use crate::gpu::DeviceChoice;

/// A loaded model, as its thread serves it.
pub(super) enum Loaded {
    Encoder(Encoder),
    Llm(Box<LlmModel>),
    Speech(Box<WhisperModel>),
}

/// The models served in dynamically batched rounds.
pub(super) enum Encoder {
    Embedding(Box<dyn Embed>),
    Rerank(Box<dyn Rerank>),
}

/// The engine's placement of a device choice (opening the GPU).
fn placement(choice: DeviceChoice) -> Result<Placement, WorkerError> {
    let Some(ordinal) = choice.gpu else {
        return Ok(Placement {
            dtype: choice.dtype,
            ..Placement::cpu()
        });
    };
    Placement::cuda(ordinal, choice.dtype)
        .map_err(|e| WorkerError::new(WorkerErrorKind::Unavailable, e.to_string()))
}

pub(super) fn load(
    spec: &ReplicaSpec,
    device: DeviceChoice,
    shared: &ReplicaShared,
) -> Result<(Loaded, ReplicaInfo), WorkerError> {
    let mut spec = spec.clone();
    if let Some(download) = &spec.download {
        // Downloading is the first 80% of the progress, loading the rest.
        spec.model_path = crate::download::fetch(
            download,
            &spec.model_path,
            &mut |p| shared.set_progress(0.8 * p),
            &shared.stop,
        )?;
    }
    let spec = &spec;
    shared.set_progress(shared.progress().max(0.1));
    let placement = placement(device)?;
    tracing::info!(replica = %spec.replica_uid, on = %placement.describe(), "loading");
    let loaded = match spec.model_type {
        ModelType::Embedding => {
            let model = EmbeddingModel::load_on(&spec.model_path, &placement)?;
            let info = ReplicaInfo {
                dimensions: Some(model.dimensions()),
                max_tokens: Some(model.max_tokens()),
            };
            (Loaded::Encoder(Encoder::Embedding(Box::new(model))), info)
        }
        ModelType::Rerank => {
            let model = CrossEncoder::load_on(&spec.model_path, &placement)?;
            let info = ReplicaInfo {
                dimensions: None,
                max_tokens: Some(model.max_tokens()),
            };
            (Loaded::Encoder(Encoder::Rerank(Box::new(model))), info)
        }
        ModelType::Audio => {
            let model = WhisperModel::load(&spec.model_path, &placement)?;
            (Loaded::Speech(Box::new(model)), ReplicaInfo::default())
        }
        ModelType::Llm => {
            let options = LoadOptions {
                requantize: requantize_option(spec),
                fallback_template: spec.options.chat_template.clone(),
                placement,
            };
            let base = shared.progress();
            let model = LlmModel::load(&spec.model_path, &options, &mut |p| {
                shared.set_progress(base + (1.0 - base) * p)
            })?;
            let info = ReplicaInfo {
                dimensions: None,
                max_tokens: Some(model.context_length()),
            };
            (Loaded::Llm(Box::new(model)), info)
        }
    };
    shared.set_progress(1.0);
    Ok(loaded)
}

/// The `requantize` launch option: `Q8_0` (faster on CPU) or `F32` (exact), default none.
fn requantize_option(spec: &ReplicaSpec) -> Option<GgmlDType> {
    spec.options.requantize.map(|r| match r {
        Requantize::Q8_0 => GgmlDType::Q8_0,
        Requantize::F32 => GgmlDType::F32,
    })
}
