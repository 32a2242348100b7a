//! The GPUs of this worker, and the device a launch gets.
//!
//! [`gpus`] lists the CUDA devices the process sees (after `CUDA_VISIBLE_DEVICES`): name and
//! total memory from the CUDA driver, memory in use from NVML (every process's use, as
//! `nvidia-smi` shows it), in `cuda.rs`, the bindings; this file is the device policy. A build
//! without the `cuda` feature has none.
//!
//! [`choose`] resolves a launch's `n_gpu` and `gpu_idx` (upstream's launch fields) against
//! them: no GPU asked for, or `"auto"` on a worker without GPUs, is the CPU; `"auto"` or
//! `n_gpu: 1` takes the GPU with the most free memory; `gpu_idx` names the GPU. A replica runs
//! on one GPU: there is no tensor parallelism, so asking one replica for several GPUs is refused
//! (launch more replicas instead).

use candle_core::DType;
use xi_api::launch::{GpuRequest, GpuShare};
use xi_api::models::ModelType;
pub use xi_api::worker::GpuInfo;
use xi_api::worker::{ReplicaSpec, WorkerError, WorkerErrorKind};

/// Every GPU this worker can use, in CUDA ordinal order; empty without the `cuda` feature.
pub fn gpus() -> Vec<GpuInfo> {
    inventory().into_iter().map(|g| g.info).collect()
}

/// A GPU and what choosing its dtype needs.
#[derive(Debug, Clone)]
pub(crate) struct Gpu {
    pub info: GpuInfo,
    /// Compute capability (major, minor).
    pub capability: (u32, u32),
}

pub(crate) fn inventory() -> Vec<Gpu> {
    #[cfg(feature = "cuda")]
    {
        cuda::inventory()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Vec::new()
    }
}

/// Whether this build can run models on CUDA GPUs.
pub(crate) const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// Where a replica runs and in what precision (see [`xi_engine::Placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceChoice {
    /// The CUDA ordinal; `None` is the CPU.
    pub gpu: Option<usize>,
    pub dtype: DType,
}

/// What a launch asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Cpu,
    Auto,
    Count(usize),
    Indices(Vec<usize>),
}

fn invalid(message: String) -> WorkerError {
    WorkerError::new(WorkerErrorKind::InvalidModel, message)
}

/// `0: NVIDIA H200, 1: NVIDIA H200`.
fn listing(gpus: &[Gpu]) -> String {
    let named: Vec<String> = gpus
        .iter()
        .map(|g| format!("{}: {}", g.info.index, g.info.name))
        .collect();
    named.join(", ")
}

fn has(gpus: &[Gpu]) -> String {
    match gpus.len() {
        0 => "this worker has no GPU".to_string(),
        1 => format!("this worker has 1 GPU ({})", listing(gpus)),
        n => format!("this worker has {n} GPUs ({})", listing(gpus)),
    }
}

const NO_CUDA: &str = "this build has no CUDA support (build with scripts/build-cuda.sh)";

/// The GPU with the most free memory (the lowest index among equals).
fn most_free(gpus: &[Gpu]) -> Option<&Gpu> {
    gpus.iter().min_by_key(|g| {
        let free = g.info.memory_total.saturating_sub(g.info.memory_used);
        (std::cmp::Reverse(free), g.info.index)
    })
}

/// Resolves the launch options `n_gpu`, `gpu_idx` and `dtype` of replica `spec` against
/// `gpus`; `cuda_build` says whether this build can use them at all. The options arrive parsed
/// (the supervisor refused bad values); what is left is what this worker has. The default dtype
/// is f32 on the CPU; on a GPU f16 for embedding and rerank models, bf16 for LLMs (f16 before
/// Ampere).
pub(crate) fn choose(
    spec: &ReplicaSpec,
    gpus: &[Gpu],
    cuda_build: bool,
) -> Result<DeviceChoice, WorkerError> {
    let model_type = spec.model_type;
    let replica_uid = spec.replica_uid.as_str();
    let options = &spec.options;
    let request = match options.gpu_share(spec.replica_index) {
        GpuShare::Indices(indices) => Request::Indices(indices.to_vec()),
        GpuShare::Missing => {
            return Err(invalid(format!(
                "gpu_idx {:?} has no share for replica {replica_uid}",
                options.gpu_idx.as_deref().unwrap_or_default()
            )))
        }
        GpuShare::Unset => match options.n_gpu {
            GpuRequest::Auto => Request::Auto,
            GpuRequest::Cpu => Request::Cpu,
            GpuRequest::Count(n) => Request::Count(n),
        },
    };
    let gpu = match &request {
        Request::Cpu => None,
        Request::Auto if !cuda_build => None,
        Request::Auto => most_free(gpus),
        Request::Count(n) => {
            if !cuda_build {
                return Err(invalid(format!("n_gpu={n} asks for GPUs but {NO_CUDA}")));
            }
            if *n > gpus.len() {
                return Err(invalid(format!("n_gpu={n} but {}", has(gpus))));
            }
            if *n > 1 {
                return Err(invalid(format!(
                    "n_gpu={n}: a replica runs on one GPU (no tensor parallelism); launch with \
                     n_gpu=1 and replica={n} to use {n} GPUs"
                )));
            }
            most_free(gpus)
        }
        Request::Indices(indices) => {
            if !cuda_build {
                return Err(invalid(format!(
                    "gpu_idx={indices:?} asks for GPUs but {NO_CUDA}"
                )));
            }
            let [index] = indices.as_slice() else {
                return Err(invalid(format!(
                    "gpu_idx={indices:?} gives replica {replica_uid} {} GPUs, but a replica runs \
                     on one GPU (no tensor parallelism): give one index per replica",
                    indices.len()
                )));
            };
            let found = gpus.iter().find(|g| g.info.index == *index);
            if found.is_none() {
                return Err(invalid(format!(
                    "gpu_idx {index} does not exist: {}",
                    has(gpus)
                )));
            }
            found
        }
    };
    let dtype = options.dtype.map(xi_engine::placement::dtype_of);
    let dtype = dtype.unwrap_or(match gpu {
        None => DType::F32,
        // Encoders: f16 products on f32 activations are 8x closer to f32 than bf16 ones, and
        // their activations stay far inside f16's range.
        Some(_) if model_type != ModelType::Llm => DType::F16,
        // LLM residual streams outgrow f16: bf16, which needs Ampere (8.0) or newer.
        Some(g) if g.capability.0 >= 8 => DType::BF16,
        Some(_) => DType::F16,
    });
    Ok(DeviceChoice {
        gpu: gpu.map(|g| g.info.index),
        dtype,
    })
}

#[cfg(feature = "cuda")]
mod cuda;

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use xi_api::launch::{LaunchOptions, RawLaunchOptions};

    use super::*;

    fn gpu(index: usize, used_gib: u64) -> Gpu {
        Gpu {
            info: GpuInfo {
                index,
                name: "NVIDIA H200".into(),
                memory_total: 140 << 30,
                memory_used: used_gib << 30,
            },
            capability: (9, 0),
        }
    }

    /// Replica `index` of a launch of `replicas` with the launch fields `value`, parsed as the
    /// supervisor parses them (a bad value is the parse's message).
    fn spec(
        model_type: ModelType,
        value: Value,
        index: usize,
        replicas: usize,
    ) -> Result<ReplicaSpec, String> {
        let mut extra = value.as_object().cloned().unwrap();
        let n_gpu = extra.remove("n_gpu");
        let gpu_idx = extra.remove("gpu_idx");
        let options = LaunchOptions::parse(RawLaunchOptions {
            n_gpu: n_gpu.as_ref(),
            gpu_idx: gpu_idx.as_ref(),
            extra: &extra,
            replica: replicas,
        })
        .map_err(|e| e.message)?;
        Ok(ReplicaSpec {
            replica_uid: format!("m-{index}"),
            model_uid: "m".into(),
            replica_index: index,
            model_type,
            model_name: "m".into(),
            model_path: Default::default(),
            options,
            download: None,
            description: Default::default(),
        })
    }

    fn choose_for(spec: ReplicaSpec, gpus: &[Gpu], cuda: bool) -> Result<DeviceChoice, String> {
        choose(&spec, gpus, cuda).map_err(|e| {
            assert_eq!(e.kind, WorkerErrorKind::InvalidModel);
            e.message
        })
    }

    fn pick(value: Value, gpus: &[Gpu], cuda: bool) -> Result<DeviceChoice, String> {
        choose_for(spec(ModelType::Llm, value, 0, 1)?, gpus, cuda)
    }

    #[test]
    fn no_gpu_asked_for_or_none_present_is_the_cpu_in_f32() {
        let cpu = Ok(DeviceChoice {
            gpu: None,
            dtype: DType::F32,
        });
        for (value, gpus, cuda) in [
            (json!({}), vec![], false),
            (json!({"n_gpu": "auto"}), vec![], false),
            (json!({"n_gpu": "auto"}), vec![], true),
            (json!({"n_gpu": null}), vec![gpu(0, 0)], true),
            (json!({"n_gpu": "AUTO"}), vec![gpu(0, 0)], false),
        ] {
            assert_eq!(pick(value.clone(), &gpus, cuda), cpu, "{value}");
        }
    }

    #[test]
    fn auto_and_one_gpu_take_the_most_free_memory_in_bf16() {
        let gpus = [gpu(0, 100), gpu(1, 10), gpu(2, 10)];
        for value in [
            json!({}),
            json!({"n_gpu": "auto"}),
            json!({"n_gpu": 1}),
            json!({"n_gpu": "1"}),
        ] {
            let got = pick(value.clone(), &gpus, true).unwrap();
            assert_eq!(
                got.gpu,
                Some(1),
                "{value}: most free, lowest index among equals"
            );
            assert_eq!(got.dtype, DType::BF16);
        }
        let mut old = gpu(0, 0);
        old.capability = (7, 5);
        assert_eq!(
            pick(json!({}), &[old], true).unwrap().dtype,
            DType::F16,
            "no bf16 before Ampere"
        );
        let embedding = choose_for(
            spec(ModelType::Embedding, json!({}), 0, 1).unwrap(),
            &gpus,
            true,
        );
        assert_eq!(
            embedding.unwrap().dtype,
            DType::F16,
            "encoders default to f16"
        );
        let exact = pick(json!({"dtype": "float32"}), &gpus, true).unwrap();
        assert_eq!(exact.dtype, DType::F32);
        let bf16_cpu = pick(json!({"n_gpu": null, "dtype": "bf16"}), &gpus, true).unwrap();
        assert_eq!((bf16_cpu.gpu, bf16_cpu.dtype), (None, DType::BF16));
        let err = pick(json!({"dtype": "int4"}), &gpus, true).unwrap_err();
        assert!(err.contains("dtype must be"), "{err}");
    }

    #[test]
    fn gpu_requests_a_worker_cannot_serve_are_refused_naming_what_exists() {
        let one = [gpu(0, 0)];
        let err = pick(json!({"n_gpu": 1}), &[], false).unwrap_err();
        assert_eq!(
            err,
            "n_gpu=1 asks for GPUs but this build has no CUDA support (build with scripts/build-cuda.sh)"
        );
        let err = pick(json!({"gpu_idx": 0}), &[], false).unwrap_err();
        assert!(err.contains("this build has no CUDA support"), "{err}");
        let err = pick(json!({"n_gpu": 2}), &one, true).unwrap_err();
        assert_eq!(err, "n_gpu=2 but this worker has 1 GPU (0: NVIDIA H200)");
        let err = pick(json!({"n_gpu": 1}), &[], true).unwrap_err();
        assert_eq!(err, "n_gpu=1 but this worker has no GPU");
        let err = pick(json!({"n_gpu": 2}), &[gpu(0, 0), gpu(1, 0)], true).unwrap_err();
        assert!(
            err.contains("no tensor parallelism") && err.contains("replica=2"),
            "{err}"
        );
        let err = pick(json!({"gpu_idx": 3}), &one, true).unwrap_err();
        assert_eq!(
            err,
            "gpu_idx 3 does not exist: this worker has 1 GPU (0: NVIDIA H200)"
        );
        let err = pick(json!({"gpu_idx": [0, 1]}), &[gpu(0, 0), gpu(1, 0)], true).unwrap_err();
        assert!(err.contains("one index per replica"), "{err}");
        for bad in [
            json!({"n_gpu": 0}),
            json!({"n_gpu": -1}),
            json!({"n_gpu": "two"}),
            json!({"gpu_idx": "x"}),
        ] {
            assert!(pick(bad.clone(), &one, true).is_err(), "{bad}");
        }
    }

    /// `"n_gpu": "1"` is the integer 1 on the worker too (placement reads the same parsed value).
    #[test]
    fn a_numeric_n_gpu_string_is_that_integer() {
        let gpus = [gpu(0, 100), gpu(1, 10)];
        for (text, number) in [(json!("1"), json!(1)), (json!("2"), json!(2))] {
            let as_text = pick(json!({ "n_gpu": text }), &gpus, true);
            let as_number = pick(json!({ "n_gpu": number }), &gpus, true);
            assert_eq!(as_text, as_number, "{text}");
        }
        assert_eq!(
            pick(json!({"n_gpu": "1"}), &gpus, true).unwrap().gpu,
            Some(1)
        );
        let err = pick(json!({"n_gpu": "1"}), &[], false).unwrap_err();
        assert!(err.starts_with("n_gpu=1 asks for GPUs"), "{err}");
    }

    #[test]
    fn gpu_idx_names_the_gpu_and_per_replica_lists_split_it() {
        let gpus = [gpu(0, 0), gpu(1, 50)];
        assert_eq!(
            pick(json!({"gpu_idx": 1}), &gpus, true).unwrap().gpu,
            Some(1)
        );
        assert_eq!(
            pick(json!({"gpu_idx": [1], "n_gpu": null}), &gpus, true)
                .unwrap()
                .gpu,
            Some(1)
        );
        // `gpu_idx: [1, 0]` over two replicas: replica 0 takes [1], replica 1 takes [0].
        let replica = |index| {
            let spec = spec(ModelType::Llm, json!({"gpu_idx": [1, 0]}), index, 2).unwrap();
            choose_for(spec, &gpus, true)
        };
        assert_eq!(replica(0).unwrap().gpu, Some(1));
        assert_eq!(replica(1).unwrap().gpu, Some(0));
        let err = replica(2).unwrap_err();
        assert!(err.contains("no share for replica m-2"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_lists_no_gpus() {
        assert!(gpus().is_empty());
    }
}
