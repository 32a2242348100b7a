//! `x @ Wᵀ (+ b)` in f32 for a few rows of activations: the decoder steps of Whisper, where
//! each new token is one row and the whole cost is reading the weights once.
//!
//! candle hands such products to the `gemm` crate, whose matrix-vector path for a row-major
//! `W` (`[out, in]`, as checkpoints store it) runs on one thread and at well under the memory
//! bandwidth: a 51864 x 384 vocabulary projection took 11 ms where `W` streams from memory in
//! under 4. Here the output rows are split over the rayon pool, each task walks its weight
//! rows in memory order (one row against every activation row, so `W` is read once whatever
//! the row count) in 16-wide lanes, AVX-512 where the CPU has it (detected at run time).
//!
//! The weights may be f16 (a checkpoint's own half-precision values, see `whisper::model`):
//! the kernel widens them to f32 as it loads them, so the products are those of f32 weights
//! holding the same values, for half the bytes.
//!
//! [`Dense`] takes this path on the CPU for f32 inputs of at most [`FEW_ROWS`] rows and
//! candle's matmul everywhere else (long prompts, the encoder, other devices and dtypes).

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use half::f16;
use rayon::prelude::*;

/// Most activation rows the kernel takes; above this candle's blocked GEMM reuses each
/// weight tile across enough rows to win.
pub const FEW_ROWS: usize = 16;
/// Weights (floats) below which one thread does it all.
const PARALLEL_FROM: usize = 1 << 16;
/// Lanes per accumulator: one AVX-512 register of f32.
const LANES: usize = 16;

/// A weight matrix `[out, in]` and optional bias `[out]`, applied as `x @ Wᵀ + b`.
#[derive(Clone)]
pub struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Dense {
        Dense { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `x [.., in]` → `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&k, lead)) = dims.split_last() else {
            candle_core::bail!("dense: a scalar input");
        };
        let rows: usize = lead.iter().product();
        let (n, wk) = self.weight.dims2()?;
        if wk != k {
            candle_core::bail!("dense: input width {k}, weight [{n}, {wk}]");
        }
        let fast = x.device().is_cpu()
            && x.dtype() == DType::F32
            && matches!(self.weight.dtype(), DType::F32 | DType::F16)
            && self.bias.as_ref().is_none_or(|b| b.dtype() == DType::F32)
            && rows > 0
            && rows <= FEW_ROWS;
        let mut out_dims = lead.to_vec();
        out_dims.push(n);
        if !fast {
            // Weights kept in the checkpoint's half precision are widened for this product
            // only (a prompt's rows, once per window).
            let weight = if self.weight.dtype() == x.dtype() {
                self.weight.clone()
            } else {
                self.weight.to_dtype(x.dtype())?
            };
            let y = x.broadcast_matmul(&weight.t()?)?;
            return match &self.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        let x = x.reshape((rows, k))?;
        let y = match &self.bias {
            Some(b) => x.apply_op3_no_bwd(&self.weight, b, &Gemv)?,
            None => x.apply_op2_no_bwd(&self.weight, &Gemv)?,
        };
        y.reshape(out_dims)
    }
}

struct Gemv;

fn contiguous<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("dense: expected a contiguous tensor"),
    }
}

/// The weights as the kernel reads them: f32, or the checkpoint's f16 values widened to f32
/// as they are loaded (the same products as f32 weights holding those values, at half the
/// bytes streamed from memory).
#[derive(Clone, Copy)]
pub(crate) enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl<'a> Weights<'a> {
    /// Rows `first..first + count` of a row-major `[_, k]` matrix.
    fn rows(self, first: usize, count: usize, k: usize) -> Weights<'a> {
        let range = first * k..(first + count) * k;
        match self {
            Weights::F32(w) => Weights::F32(&w[range]),
            Weights::F16(w) => Weights::F16(&w[range]),
        }
    }
}

impl Gemv {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = x.1.shape().dims2()?;
        let (n, _) = w.1.shape().dims2()?;
        let xs = contiguous::<f32>(x.0, x.1)?;
        let ws = match w.0 {
            CpuStorage::F16(_) => Weights::F16(contiguous(w.0, w.1)?),
            _ => Weights::F32(contiguous(w.0, w.1)?),
        };
        let bias = match bias {
            Some((s, l)) if l.shape().elem_count() == n => Some(contiguous(s, l)?),
            Some(_) => candle_core::bail!("dense: the bias must have one value per output"),
            None => None,
        };
        Ok((
            CpuStorage::F32(matmul_t(xs, m, ws, n, k, bias)),
            Shape::from((m, n)),
        ))
    }
}

impl CustomOp2 for Gemv {
    fn name(&self) -> &'static str {
        "xi-gemv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for Gemv {
    fn name(&self) -> &'static str {
        "xi-gemv-bias"
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
        self.run((s1, l1), (s2, l2), Some((s3, l3)))
    }
}

/// `x [m, k] @ w[n, k]ᵀ + bias` as `[m, n]`, row-major.
pub(crate) fn matmul_t(
    x: &[f32],
    m: usize,
    w: Weights,
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    // Column-major scratch (`[n, m]`): each task owns a contiguous run of output columns.
    let mut cols = vec![0f32; n * m];
    if n * k < PARALLEL_FROM || n < 8 {
        block(x, m, w, n, k, &mut cols);
    } else {
        let threads = rayon::current_num_threads().max(1);
        let per_task = n.div_ceil(threads * 4).div_ceil(4) * 4;
        cols.par_chunks_mut(per_task * m)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * per_task;
                let rows = out.len() / m;
                block(x, m, w.rows(first, rows, k), rows, k, out);
            });
    }
    if let Some(bias) = bias {
        for (c, b) in cols.chunks_mut(m).zip(bias) {
            c.iter_mut().for_each(|v| *v += b);
        }
    }
    if m == 1 {
        return cols;
    }
    let mut out = vec![0f32; m * n];
    for (j, c) in cols.chunks(m).enumerate() {
        for (i, v) in c.iter().enumerate() {
            out[i * n + j] = *v;
        }
    }
    out
}

/// One task's share: `out[j * m + i] = x[i] · w[j]` for its `rows` weight rows.
pub(crate) fn block(x: &[f32], m: usize, w: Weights, rows: usize, k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX512: OnceLock<bool> = OnceLock::new();
        if *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f")) {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { avx512::block(x, m, w, rows, k, out) };
        }
    }
    match w {
        Weights::F32(w) => block_portable(x, m, w, rows, k, out, |v| v),
        Weights::F16(w) => block_portable(x, m, w, rows, k, out, f16::to_f32),
    }
}

/// One weight row at a time in 16-lane accumulators (vectorised by the compiler where it
/// can; the AVX-512 path is written out).
fn block_portable<T: Copy>(
    x: &[f32],
    m: usize,
    w: &[T],
    rows: usize,
    k: usize,
    out: &mut [f32],
    widen: impl Fn(T) -> f32,
) {
    for j in 0..rows {
        let wj = &w[j * k..][..k];
        for i in 0..m {
            let xi = &x[i * k..][..k];
            let mut acc = [0f32; LANES];
            let whole = k / LANES * LANES;
            for (xs, ws) in xi[..whole]
                .chunks_exact(LANES)
                .zip(wj[..whole].chunks_exact(LANES))
            {
                for l in 0..LANES {
                    acc[l] += xs[l] * widen(ws[l]);
                }
            }
            let mut sum: f32 = acc.iter().sum();
            for c in whole..k {
                sum += xi[c] * widen(wj[c]);
            }
            out[j * m + i] = sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{Weights, LANES};

    /// [`super::block_portable`] in AVX-512, one weight row at a time: the weights stream
    /// through memory in order (interleaving several rows' loads halves the bandwidth the
    /// prefetchers give on this class of CPU), and the row stays in L1 for every `x` row.
    /// Slices and iterators rather than pointer arithmetic, so that debug builds (whose
    /// pointer methods check their preconditions) run the same loop.
    #[target_feature(enable = "avx512f")]
    pub(super) fn block(x: &[f32], m: usize, w: Weights, rows: usize, k: usize, out: &mut [f32]) {
        let x = &x[..m * k];
        match w {
            Weights::F32(w) => {
                for (j, wj) in w[..rows * k].chunks_exact(k).enumerate() {
                    for (i, xi) in x.chunks_exact(k).enumerate() {
                        out[j * m + i] = dot(xi, wj, |w| load(w), |w| load_tail(w));
                    }
                }
            }
            Weights::F16(w) => {
                for (j, wj) in w[..rows * k].chunks_exact(k).enumerate() {
                    for (i, xi) in x.chunks_exact(k).enumerate() {
                        out[j * m + i] = dot(xi, wj, |w| load_half(w), |w| load_half_tail(w));
                    }
                }
            }
        }
    }

    /// `x · w` over equal-length slices: four independent accumulators (FMA latency), then
    /// single lanes, then a masked tail. `load`/`tail` widen sixteen (or fewer) weights.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn dot<T>(
        x: &[f32],
        w: &[T],
        load_w: impl Fn(&[T]) -> __m512,
        tail_w: impl Fn(&[T]) -> __m512,
    ) -> f32 {
        const WIDE: usize = 4 * LANES;
        let k = x.len().min(w.len());
        let wide = k / WIDE * WIDE;
        let mut acc = [_mm512_setzero_ps(); 4];
        for (xs, ws) in x[..wide]
            .chunks_exact(WIDE)
            .zip(w[..wide].chunks_exact(WIDE))
        {
            let lanes = xs.chunks_exact(LANES).zip(ws.chunks_exact(LANES));
            for (a, (xl, wl)) in acc.iter_mut().zip(lanes) {
                *a = _mm512_fmadd_ps(load(xl), load_w(wl), *a);
            }
        }
        let whole = k / LANES * LANES;
        for (xs, ws) in x[wide..whole]
            .chunks_exact(LANES)
            .zip(w[wide..whole].chunks_exact(LANES))
        {
            acc[0] = _mm512_fmadd_ps(load(xs), load_w(ws), acc[0]);
        }
        if whole < k {
            acc[1] = _mm512_fmadd_ps(load_tail(&x[whole..k]), tail_w(&w[whole..k]), acc[1]);
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(sum)
    }

    /// Sixteen floats (the slice is exactly `LANES` long).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(xs: &[f32]) -> __m512 {
        debug_assert_eq!(xs.len(), LANES);
        // SAFETY: `xs` holds LANES floats; the load is unaligned.
        unsafe { _mm512_loadu_ps(xs.as_ptr()) }
    }

    /// Fewer than sixteen floats, zeros after them.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_tail(xs: &[f32]) -> __m512 {
        let mask = ((1u32 << xs.len()) - 1) as __mmask16;
        // SAFETY: the mask reads only the slice's own elements.
        unsafe { _mm512_maskz_loadu_ps(mask, xs.as_ptr()) }
    }

    /// Sixteen halves widened to f32 (the slice is exactly `LANES` long).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_half(ws: &[f16]) -> __m512 {
        debug_assert_eq!(ws.len(), LANES);
        // SAFETY: `ws` holds LANES halves (32 bytes); the load is unaligned.
        let raw = unsafe { _mm256_loadu_si256(ws.as_ptr().cast()) };
        _mm512_cvtph_ps(raw)
    }

    /// Fewer than sixteen halves, zeros after them (copied out: a masked 16-bit load needs
    /// AVX-512BW).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_half_tail(ws: &[f16]) -> __m512 {
        let mut lanes = [f16::ZERO; LANES];
        lanes[..ws.len()].copy_from_slice(ws);
        load_half(&lanes)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        crate::test_rng::uniform(len, seed, -1.0, 1.0)
    }

    /// Every row count up to FEW_ROWS and past it, odd widths and heights (remainders of the
    /// 64- and 16-wide lanes), with and without bias, with f32 weights and with f16 ones:
    /// equal to candle's f32 matmul of the same values within f32 rounding.
    #[test]
    fn matches_candle_matmul() {
        for half in [false, true] {
            matches_candle_matmul_with(half);
        }
    }

    fn matches_candle_matmul_with(half: bool) {
        let dev = Device::Cpu;
        for (n, k) in [(1, 1), (5, 17), (67, 384), (1031, 97), (9, 200)] {
            let w = Tensor::from_vec(random(n * k, 1), (n, k), &dev).unwrap();
            let (w, stored) = if half {
                let h = w.to_dtype(DType::F16).unwrap();
                (h.to_dtype(DType::F32).unwrap(), h)
            } else {
                (w.clone(), w)
            };
            let b = Tensor::from_vec(random(n, 2), n, &dev).unwrap();
            for m in [1, 2, 3, 5, 16, 17] {
                let x = Tensor::from_vec(random(m * k, m as u64), (1, m, k), &dev).unwrap();
                for bias in [None, Some(b.clone())] {
                    let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
                    let want = match &bias {
                        Some(b) => want.broadcast_add(b).unwrap(),
                        None => want,
                    };
                    let got = Dense::new(stored.clone(), bias).forward(&x).unwrap();
                    assert_eq!(got.dims(), want.dims());
                    let diff = crate::test_rng::max_diff(&got, &want).unwrap();
                    assert!(
                        diff < 1e-4 * (k as f32).sqrt(),
                        "half {half} n {n} k {k} m {m}: {diff}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_width_mismatch_is_an_error() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((4, 8), candle_core::DType::F32, &dev).unwrap();
        let x = Tensor::zeros((1, 7), candle_core::DType::F32, &dev).unwrap();
        assert!(Dense::new(w, None).forward(&x).is_err());
    }
}
