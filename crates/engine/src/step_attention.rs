//! Attention of one new query per (sequence, head) over all of its keys: a decoder step,
//! where the new token sees every cached position (self-attention) or every encoder position
//! (cross-attention).
//!
//! candle computes it as two batched matmuls of one row each, which its GEMM runs as a
//! single-threaded matrix-vector product per head, plus a softmax with libm's `expf`: 2 ms per
//! layer for Whisper's 1500 encoder positions. Here each (sequence, head) is one task on the
//! rayon pool: the scores come from the AVX-512 dot kernel of [`crate::gemv`], the softmax
//! uses the vectorisable `exp` of [`crate::ops`], and the weighted sum of values runs over
//! contiguous rows.
//!
//! CPU and f32 only; [`attend_one`] says when it applies and the caller uses tensor ops
//! otherwise.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `softmax(q kᵀ · scale) v` for `q [b, heads, 1, head_dim]` and `k`, `v`
/// `[b, heads, keys, head_dim]`; `None` when the kernel does not apply (another device or
/// dtype, more than one query row).
pub fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Option<Tensor>> {
    let applies = q.device().is_cpu()
        && [q, k, v]
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.rank() == 4)
        && q.dim(2)? == 1;
    if !applies {
        return Ok(None);
    }
    let (b, h, _, d) = q.dims4()?;
    let (kb, kh, keys, kd) = k.dims4()?;
    if (kb, kh, kd) != (b, h, d) || v.dims() != k.dims() || keys == 0 {
        candle_core::bail!(
            "step attention: query {:?}, keys {:?}, values {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    q.apply_op3_no_bwd(&k, &v, &StepAttention { scale })
        .map(Some)
}

struct StepAttention {
    scale: f32,
}

fn slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("step attention: expected contiguous tensors"),
    }
}

impl CustomOp3 for StepAttention {
    fn name(&self) -> &'static str {
        "xi-step-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (_, _, keys, d) = l2.shape().dims4()?;
        let mut out = vec![0f32; q.len()];
        let work = |(task, out): (usize, &mut [f32])| {
            let q = &q[task * d..(task + 1) * d];
            let k = &k[task * keys * d..(task + 1) * keys * d];
            let v = &v[task * keys * d..(task + 1) * keys * d];
            head(q, k, v, self.scale, out);
        };
        // Small caches (the first tokens of self-attention) are not worth waking the pool.
        if keys * d * (out.len() / d) < 1 << 15 {
            out.chunks_mut(d).enumerate().for_each(work);
        } else {
            out.par_chunks_mut(d).enumerate().for_each(work);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// One head: `out = softmax(k q · scale) v`.
fn head(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
    let d = q.len();
    let keys = k.len() / d;
    let mut scores = vec![0f32; keys];
    crate::gemv::block(q, 1, crate::gemv::Weights::F32(k), keys, d, &mut scores);
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s)) * scale;
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = crate::ops::exp(*s * scale - max);
        sum += *s;
    }
    let inv = 1.0 / sum;
    weighted_sum(&scores, v, inv, out);
}

/// `out = inv · Σ_p weights[p] · v[p]`.
fn weighted_sum(weights: &[f32], v: &[f32], inv: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX512: OnceLock<bool> = OnceLock::new();
        if *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f")) {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { weighted_sum_avx512(weights, v, inv, out) };
        }
    }
    weighted_sum_body(weights, v, inv, out)
}

/// The same loop compiled for AVX-512 (the row updates vectorise 16 wide).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn weighted_sum_avx512(weights: &[f32], v: &[f32], inv: f32, out: &mut [f32]) {
    weighted_sum_body(weights, v, inv, out)
}

#[inline(always)]
fn weighted_sum_body(weights: &[f32], v: &[f32], inv: f32, out: &mut [f32]) {
    let d = out.len();
    out.fill(0.0);
    for (w, row) in weights.iter().zip(v.chunks_exact(d)) {
        for (o, x) in out.iter_mut().zip(row) {
            *o += w * x;
        }
    }
    for o in out.iter_mut() {
        *o *= inv;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn random(dims: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let len = dims.0 * dims.1 * dims.2 * dims.3;
        let values = crate::test_rng::uniform(len, seed, -2.0, 2.0);
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    /// Equal to candle's softmax(q kᵀ s) v for short and long key runs and odd head widths.
    #[test]
    fn matches_tensor_ops() {
        for (b, h, keys, d) in [(1, 1, 1, 1), (2, 3, 7, 5), (1, 6, 1500, 64), (5, 2, 40, 17)] {
            let q = random((b, h, 1, d), 1);
            let k = random((b, h, keys, d), 2);
            let v = random((b, h, keys, d), 3);
            let scale = 1.0 / (d as f32).sqrt();
            let scores = (q.matmul(&k.t().unwrap()).unwrap() * f64::from(scale)).unwrap();
            let want = candle_nn::ops::softmax_last_dim(&scores)
                .unwrap()
                .matmul(&v)
                .unwrap();
            let got = attend_one(&q, &k, &v, scale).unwrap().unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = crate::test_rng::max_diff(&got, &want).unwrap();
            assert!(diff < 1e-5, "{b} {h} {keys} {d}: {diff}");
        }
    }

    #[test]
    fn more_than_one_query_row_is_left_to_tensor_ops() {
        let q = random((1, 2, 3, 4), 1);
        let k = random((1, 2, 5, 4), 2);
        assert!(attend_one(&q, &k, &k, 0.5).unwrap().is_none());
    }
}
