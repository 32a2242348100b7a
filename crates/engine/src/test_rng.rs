//! Reproducible pseudo-random inputs for the unit tests (a 64-bit LCG: no dependency, the
//! same numbers on every machine), and the comparison the kernel tests share.

use candle_core::{DType, Tensor};

/// `len` values in `[low, high)`, the same for the same `seed`.
pub fn uniform(len: usize, seed: u64, low: f32, high: f32) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let unit = (state >> 33) as f32 / (1u64 << 31) as f32;
            low + unit * (high - low)
        })
        .collect()
}

/// The largest absolute difference between two tensors of one shape (compared in f32).
pub fn max_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}
