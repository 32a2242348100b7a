//! Where a model runs: the candle device, the precision of its dense weights and activations,
//! and which forward pass computes it.
//!
//! Two backends exist for each model kind. The CPU kernels (our packed BERT with the custom
//! ops of `ops`, the LLM's integer matmuls and `Vec<f32>` KV caches) are the fastest on a CPU
//! and the default there. The portable path is built only from candle tensor ops (KV caches as
//! device tensors, candle-nn norms, RoPE and softmax), so it runs on any candle device: it is
//! what CUDA GPUs run, and the CPU can run it too, which is how the tests keep the GPU path
//! honest on machines without a GPU. For LLMs both are one decoder (`llm::decoder`) over two
//! backends (`llm::cpu`, `llm::portable`).

use candle_core::{DType, Device, DeviceLocation};

use crate::error::{candle_message, EngineError};

#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    /// Dense weights and activations of the portable path: F32, BF16 or F16. Quantized GGUF
    /// matrices stay quantized (their activations are f32 either way). The CPU kernels are f32.
    pub dtype: DType,
    /// Run the portable path even on the CPU (tests compare it with the CPU kernels).
    pub portable: bool,
}

impl Default for Placement {
    fn default() -> Self {
        Placement::cpu()
    }
}

impl Placement {
    /// The CPU with its own kernels, in f32.
    pub fn cpu() -> Placement {
        Placement {
            device: Device::Cpu,
            dtype: DType::F32,
            portable: false,
        }
    }

    /// The portable path on the CPU, in `dtype`.
    pub fn cpu_portable(dtype: DType) -> Placement {
        Placement {
            device: Device::Cpu,
            dtype,
            portable: true,
        }
    }

    /// CUDA GPU `ordinal`, in `dtype`. Fails when this build has no CUDA support or the GPU
    /// cannot be opened.
    pub fn cuda(ordinal: usize, dtype: DType) -> Result<Placement, EngineError> {
        let device = Device::new_cuda(ordinal).map_err(|e| {
            EngineError::Unsupported(format!(
                "cannot use CUDA GPU {ordinal}: {}",
                candle_message(&e)
            ))
        })?;
        Ok(Placement {
            device,
            dtype,
            portable: true,
        })
    }

    /// Whether the CPU kernels compute (a CPU placement in f32 that did not ask for the
    /// portable path); otherwise the portable path does.
    pub fn cpu_kernels(&self) -> bool {
        self.device.is_cpu() && !self.portable && self.dtype == DType::F32
    }

    /// `cpu`, `cpu (portable, bf16)`, `cuda:0 (bf16)`: for logs and model descriptions.
    pub fn describe(&self) -> String {
        let dtype = self.dtype.as_str();
        match self.device.location() {
            DeviceLocation::Cpu if self.cpu_kernels() => "cpu".to_string(),
            DeviceLocation::Cpu => format!("cpu (portable, {dtype})"),
            DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id} ({dtype})"),
            DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id} ({dtype})"),
        }
    }
}

/// candle's dtype for a `dtype` launch option (parsed once, by `xi_api::launch::Dtype::parse`).
pub fn dtype_of(dtype: xi_api::launch::Dtype) -> DType {
    match dtype {
        xi_api::launch::Dtype::Float32 => DType::F32,
        xi_api::launch::Dtype::Bfloat16 => DType::BF16,
        xi_api::launch::Dtype::Float16 => DType::F16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_kernels_run_only_a_plain_f32_cpu_placement() {
        assert!(Placement::cpu().cpu_kernels());
        assert!(!Placement::cpu_portable(DType::F32).cpu_kernels());
        let bf16_cpu = Placement {
            dtype: DType::BF16,
            ..Placement::cpu()
        };
        assert!(!bf16_cpu.cpu_kernels(), "the CPU kernels are f32 only");
        assert_eq!(Placement::cpu().describe(), "cpu");
        assert_eq!(
            Placement::cpu_portable(DType::BF16).describe(),
            "cpu (portable, bf16)"
        );
        let parse = |name| xi_api::launch::Dtype::parse(name).map(dtype_of);
        assert_eq!(parse("BFloat16"), Some(DType::BF16));
        assert_eq!(parse("half"), Some(DType::F16));
        assert_eq!(parse("int8"), None);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_build_without_cuda_refuses_a_gpu_placement() {
        let err = Placement::cuda(0, DType::BF16).unwrap_err().to_string();
        assert!(err.contains("cannot use CUDA GPU 0"), "{err}");
    }
}
