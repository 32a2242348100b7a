//! CPU kernels candle runs poorly for small encoder batches, as candle custom ops:
//!
//! - [`gelu_erf`]: candle's erf GELU is scalar and single-threaded; this one splits the work
//!   over the rayon pool and uses a vectorisable `erf` (absolute error <= 1.5e-7).
//! - [`attention`]: candle's batched matmul calls a rayon-parallel GEMM once per (sequence,
//!   head); for short sequences the synchronisation costs more than the arithmetic. Here each
//!   (sequence, head) is one task on the pool, running single-threaded GEMMs over only the
//!   sequence's own tokens, on packed (unpadded) rows.
//!
//! Both are CPU-only and f32-only. [`gelu_erf_any`] and [`attention_tensors`] compute the same
//! with candle tensor ops on any device and dtype (the GPU path; the CPU runs them in tests).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::softmax;

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: expected a contiguous f32 tensor"),
    }
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "xi-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous(storage, layout, "gelu")?;
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(4096)
            .zip(input.par_chunks(4096))
            .for_each(|(out, input)| {
                for (y, x) in out.iter_mut().zip(input) {
                    *y = (erf(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x;
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `e^x` for f32 without a libm call, so loops over it vectorise: Cody-Waite range reduction
/// and a degree-6 polynomial (Cephes' `expf`), about 1 ulp. Every step is a plain float or
/// integer operation (no saturating float-to-int cast, no `clamp` assertion), which is what
/// lets LLVM compile a loop of it 16 lanes wide.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer with a plain add, and leaves that
    // integer in the low mantissa bits: `ROUND_BITS + n`.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    // `max`/`min`, not `clamp` (which asserts its bounds and keeps NaN): see the doc above.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5e-1;
    let e = p * r * r + r + 1.0;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND_BITS);
    let scale = f32::from_bits((n.wrapping_add(127) as u32) << 23);
    e * scale
}

/// `erf` (Abramowitz & Stegun 7.1.26, absolute error <= 1.5e-7), branch-free so it
/// vectorises; `erff` from libm is scalar and dominated GELU's cost.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// `0.5 * x * (1 + erf(x / sqrt 2))`, elementwise, in parallel.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&GeluErf)
}

/// Self-attention over a fused QKV matrix `[rows, 3 * hidden]` (Q, K, V side by side), where
/// each sequence is a run of rows `(start, len)`.
struct Attention {
    heads: usize,
    segments: Vec<(usize, usize)>,
}

/// Query rows per attention task: 128 rows of scores for a 1500-token Whisper window are
/// 768 KB, within L2.
const QUERY_BLOCK: usize = 128;

/// Lets tasks write disjoint parts of one output buffer.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint (sequence, head) block of the buffer, and the buffer
// outlives the parallel loop.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "xi-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        _s3: &CpuStorage,
        _l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous(s1, l1, "attention")?;
        let (rows, width) = l1.shape().dims2()?;
        let hidden = width / 3;
        let head_dim = hidden / self.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        if self.segments.iter().any(|(start, n)| start + n > rows) {
            candle_core::bail!("attention: a segment runs past the {rows} rows");
        }
        let mut out = vec![0f32; rows * hidden];
        let out_ptr = OutPtr(out.as_mut_ptr());
        let row = width as isize;
        // Each task is a block of query rows of one (sequence, head): its scores
        // (`QUERY_BLOCK x n`) stay in cache, and a long sequence gives the pool many tasks.
        let mut tasks = Vec::new();
        for (segment, &(_, n)) in self.segments.iter().enumerate() {
            for h in 0..self.heads {
                for first in (0..n).step_by(QUERY_BLOCK) {
                    tasks.push((segment, h, first, QUERY_BLOCK.min(n - first)));
                }
            }
        }
        let avx512 = softmax::avx512();
        tasks.into_par_iter().for_each(|(segment, h, first, m)| {
            let (start, n) = self.segments[segment];
            let base = start * width;
            let q = &qkv[base + first * width + h * head_dim..];
            let k = &qkv[base + hidden + h * head_dim..];
            let v = &qkv[base + 2 * hidden + h * head_dim..];
            let mut scores = vec![0f32; m * n];
            // SAFETY: the strided reads stay within the segment's rows (checked above) and the
            // head's columns; `scores` is m x n; only this task writes its rows of the output
            // block of (segment, head).
            unsafe {
                gemm(
                    m,
                    n,
                    head_dim,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr(),
                    1,
                    row,
                    k.as_ptr(),
                    row,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            for r in scores.chunks_mut(n) {
                softmax::row(r, avx512);
            }
            let dst = out_ptr;
            unsafe {
                gemm(
                    m,
                    head_dim,
                    n,
                    dst.0.add((start + first) * hidden + h * head_dim),
                    1,
                    hidden as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr(),
                    1,
                    row,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, hidden))))
    }
}

/// Multi-head attention of a fused QKV projection `[rows, 3 * hidden]`; `segments` are the
/// sequences' `(first row, length)`. Rows outside every segment (padding) come out zero.
pub fn attention(qkv: &Tensor, heads: usize, segments: Vec<(usize, usize)>) -> Result<Tensor> {
    let qkv = qkv.contiguous()?;
    let op = Attention { heads, segments };
    qkv.apply_op3_no_bwd(&qkv, &qkv, &op)
}

/// `0.5 * x * (1 + erf(x / sqrt 2))` with candle's own op: any device and dtype.
pub fn gelu_erf_any(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// [`attention`] from candle tensor ops, for any device and dtype: the sequences are gathered
/// into a right-padded batch `[sequences, longest, ...]`, attend with padded keys masked out
/// (scores and softmax in f32), and are packed back. `segments` must tile the rows in order.
pub fn attention_tensors(
    qkv: &Tensor,
    heads: usize,
    segments: &[(usize, usize)],
) -> Result<Tensor> {
    let (rows, width) = qkv.dims2()?;
    let hidden = width / 3;
    let head_dim = hidden / heads;
    let mut next = 0;
    for &(start, len) in segments {
        if start != next || len == 0 {
            candle_core::bail!("attention: the segments must tile the rows in order");
        }
        next = start + len;
    }
    if next != rows {
        candle_core::bail!("attention: the segments cover {next} of {rows} rows");
    }
    let (batch, longest) = (
        segments.len(),
        segments.iter().map(|s| s.1).max().unwrap_or(0),
    );
    let device = qkv.device();
    // Row `rows` of the extended matrix is zeros: the padding of every short sequence.
    let extended = Tensor::cat(&[qkv, &Tensor::zeros((1, width), qkv.dtype(), device)?], 0)?;
    let mut gather = Vec::with_capacity(batch * longest);
    let mut scatter = Vec::with_capacity(rows);
    let mut mask = Vec::with_capacity(batch * longest);
    for (s, &(start, len)) in segments.iter().enumerate() {
        for j in 0..longest {
            let real = j < len;
            gather.push(if real {
                (start + j) as u32
            } else {
                rows as u32
            });
            mask.push(if real { 0f32 } else { f32::NEG_INFINITY });
        }
        scatter.extend((0..len).map(|j| (s * longest + j) as u32));
    }
    let gather = Tensor::from_vec(gather, batch * longest, device)?;
    let padded = extended
        .index_select(&gather, 0)?
        .reshape((batch, longest, 3, heads, head_dim))?;
    let part = |i: usize| -> Result<Tensor> {
        padded
            .narrow(2, i, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
    let mask = Tensor::from_vec(mask, (batch, 1, 1, longest), device)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
    let context = probs
        .to_dtype(v.dtype())?
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((batch * longest, hidden))?;
    let scatter = Tensor::from_vec(scatter, rows, device)?;
    context.index_select(&scatter, 0)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    /// Values in [-2, 2).
    fn random(len: usize, seed: u64) -> Vec<f32> {
        crate::test_rng::uniform(len, seed, -2.0, 2.0)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::test_rng::max_diff(a, b).unwrap()
    }

    #[test]
    fn tensor_op_attention_and_gelu_match_the_cpu_kernels() {
        let (heads, head_dim) = (4, 8);
        // The last sequence spans three query blocks, the third one partial.
        let segments = vec![(0, 5), (5, 1), (6, 9), (15, 2 * super::QUERY_BLOCK + 7)];
        let rows = 15 + 2 * super::QUERY_BLOCK + 7;
        let qkv = Tensor::from_vec(
            random(rows * 3 * heads * head_dim, 7),
            (rows, 3 * heads * head_dim),
            &Device::Cpu,
        )
        .unwrap();
        let kernel = super::attention(&qkv, heads, segments.clone()).unwrap();
        let tensors = super::attention_tensors(&qkv, heads, &segments).unwrap();
        assert_eq!(kernel.dims(), tensors.dims());
        let diff = max_diff(&kernel, &tensors);
        assert!(diff < 1e-5, "f32 attention differs by {diff}");
        // bf16 keeps about 3 significant digits.
        let half = qkv.to_dtype(DType::BF16).unwrap();
        let diff = max_diff(
            &kernel,
            &super::attention_tensors(&half, heads, &segments).unwrap(),
        );
        assert!(diff < 0.05, "bf16 attention differs by {diff}");
        // A sequence sees only its own rows: changing another sequence's rows leaves it as is.
        let mut other = random(rows * 3 * heads * head_dim, 7);
        for x in &mut other[5 * 3 * heads * head_dim..15 * 3 * heads * head_dim] {
            *x += 1.0;
        }
        let other = Tensor::from_vec(other, qkv.dims(), &Device::Cpu).unwrap();
        let moved = super::attention_tensors(&other, heads, &segments).unwrap();
        assert_eq!(
            max_diff(
                &moved.narrow(0, 0, 5).unwrap(),
                &tensors.narrow(0, 0, 5).unwrap()
            ),
            0.0
        );
        let bad = super::attention_tensors(&qkv, heads, &[(0, 5), (6, 9)]);
        assert!(bad.is_err(), "segments with a gap are refused");

        let x = Tensor::from_vec(random(1000, 3), (10, 100), &Device::Cpu).unwrap();
        let diff = max_diff(
            &super::gelu_erf(&x).unwrap(),
            &super::gelu_erf_any(&x).unwrap(),
        );
        assert!(diff < 1e-6, "gelu differs by {diff}");
    }

    #[test]
    fn fast_exp_and_erf_stay_close_to_libm() {
        let mut worst_exp: f32 = 0.0;
        let mut worst_erf: f32 = 0.0;
        for i in -20_000..=20_000 {
            let x = i as f32 / 1000.0;
            let rel = ((super::exp(x) - x.exp()) / x.exp()).abs();
            worst_exp = worst_exp.max(rel);
            worst_erf = worst_erf.max((super::erf(x) - candle_core::cpu::erf::erf_f32(x)).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 6e-7, "erf absolute error {worst_erf}");
    }
}
