//! Integer matrix multiplication for Q8_0 and Q4_1 weights with AVX-512 VNNI (`vpdpbusd`).
//!
//! candle's CPU kernels for these formats are AVX2 dot products, one (row, column) pair at a
//! time, and Q4_1 has no SIMD path at all. Here the weights are unpacked once at load into
//! one byte per weight plus a scale and an offset per block of 32:
//! `w = scale · q + offset` with `q` unsigned (Q4_1: 0..15; Q8_0: stored `q + 128`, offset
//! `-128 · scale`). Activations are quantized per block of 32 to signed bytes
//! (`x = sx · qx`, as Q8_0 does). Then over one block
//! `Σ w·x = scale · sx · Σ q·qx + offset · sx · Σ qx`, where `Σ q·qx` is one `vpdpbusd`
//! (unsigned × signed bytes). A tile of up to 4 activation rows × 4 weight rows shares every
//! load, so batched decoding reads the weights once for all sequences.
//!
//! Every (row, column) result is computed by the same instructions in the same order whatever
//! the tile, so a sequence gets bit-identical logits alone or in a batch.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

const BLOCK: usize = 32;

/// A weight matrix `[n, k]` in the integer form of the module docs.
pub struct QLinear {
    n: usize,
    k: usize,
    /// Q4_1: two weights per byte (block bytes `j` hold elements `j` (low nibble) and `j + 16`
    /// (high nibble), ggml's order), half the memory traffic of bytes.
    nibbles: bool,
    /// `[n, k]` unsigned weights (`[n, k/2]` when `nibbles`).
    q: Vec<u8>,
    /// `[n, k / 32]` scales and offsets. Q8_0 keeps no offsets (each is `-128 · scale`): less
    /// memory traffic.
    /// Kept as f16, as in the GGUF blocks: less memory traffic, converted in registers.
    scale: Vec<f16>,
    offset: Vec<f16>,
}

/// Activations quantized per block of 32: `[m, k]` bytes, `[m, k/32]` scales, and
/// `sx · Σ qx` per block (for the offset term).
struct QActivations {
    q: Vec<i8>,
    scale: Vec<f32>,
    scaled_sum: Vec<f32>,
}

impl QLinear {
    /// Whether this CPU runs the kernel (else callers keep candle's matmul).
    pub fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Unpacks a Q8_0 or Q4_1 matrix; `None` for other formats or shapes.
    pub fn from_qtensor(tensor: &QTensor) -> Option<QLinear> {
        let (n, k) = tensor.shape().dims2().ok()?;
        if k % BLOCK != 0 {
            return None;
        }
        let data: Cow<'_, [u8]> = tensor.data().ok()?;
        let blocks = n * k / BLOCK;
        let nibbles = tensor.dtype() == GgmlDType::Q4_1;
        let mut q = vec![0u8; if nibbles { n * k / 2 } else { n * k }];
        let mut scale = vec![f16::ZERO; blocks];
        let mut offset = vec![f16::ZERO; if nibbles { blocks } else { 0 }];
        let half = |bytes: &[u8]| f16::from_le_bytes([bytes[0], bytes[1]]);
        match tensor.dtype() {
            GgmlDType::Q8_0 => {
                if data.len() != blocks * 34 {
                    return None;
                }
                for (b, raw) in data.chunks_exact(34).enumerate() {
                    let d = half(raw);
                    scale[b] = d;
                    for (dst, &v) in q[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(&raw[2..]) {
                        *dst = (v as i8 as i16 + 128) as u8;
                    }
                }
            }
            GgmlDType::Q4_1 => {
                if data.len() != blocks * 20 {
                    return None;
                }
                for (b, raw) in data.chunks_exact(20).enumerate() {
                    scale[b] = half(raw);
                    offset[b] = half(&raw[2..]);
                    q[b * BLOCK / 2..(b + 1) * BLOCK / 2].copy_from_slice(&raw[4..]);
                }
            }
            _ => return None,
        }
        Some(QLinear {
            n,
            k,
            nibbles,
            q,
            scale,
            offset,
        })
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// The matrices stacked by rows (`[n1 + n2 + ..., k]`), when they share `k` and layout: one
    /// pass then quantizes the input once and dispatches once.
    pub fn concat(parts: &[&QLinear]) -> Option<QLinear> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.k != first.k || p.nibbles != first.nibbles)
        {
            return None;
        }
        Some(QLinear {
            n: parts.iter().map(|p| p.n).sum(),
            k: first.k,
            nibbles: first.nibbles,
            q: parts.iter().flat_map(|p| p.q.iter().copied()).collect(),
            scale: parts.iter().flat_map(|p| p.scale.iter().copied()).collect(),
            offset: parts
                .iter()
                .flat_map(|p| p.offset.iter().copied())
                .collect(),
        })
    }

    /// `x @ Wᵀ` for `x` of shape `[m, k]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (m, k) = x.dims2()?;
        if k != self.k {
            candle_core::bail!("QLinear: input has {k} columns, the weights {}", self.k);
        }
        let x = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let acts = quantize(&x, m, k);
        let mut out = vec![0f32; m * self.n];
        self.matmul(&acts, m, &mut out);
        Tensor::from_vec(out, (m, self.n), &Device::Cpu)
    }

    fn matmul(&self, acts: &QActivations, m: usize, out: &mut [f32]) {
        let quads = self.n.div_ceil(4);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let n = self.n;
        // rayon, not a spin barrier: when another process holds a core, work-stealing lets
        // this thread finish the columns a descheduled worker never started.
        (0..quads).into_par_iter().with_min_len(8).for_each(|quad| {
            {
                let cols = quad * 4..(quad * 4 + 4).min(n);
                let mut row = 0;
                while row < m {
                    let rows = row..(row + 4).min(m);
                    let mut tile = [[0f32; 4]; 4];
                    self.tile(acts, rows.clone(), cols.clone(), &mut tile);
                    for (i, r) in rows.clone().enumerate() {
                        for (j, c) in cols.clone().enumerate() {
                            // SAFETY: every (r, c) is written by exactly one work item, and
                            // `out` outlives the pool call.
                            unsafe { *out_ptr.get().add(r * n + c) = tile[i][j] };
                        }
                    }
                    row = rows.end;
                }
            }
        });
    }

    /// One tile: rows × cols (each at most 4) of dot products.
    fn tile(
        &self,
        acts: &QActivations,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        out: &mut [[f32; 4]; 4],
    ) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: QLinear values are only built for use when `supported()` (checked by the
        // loader) and the slices are in bounds by construction.
        unsafe {
            vnni::tile(self, acts, rows.clone(), cols.clone(), out);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (acts, &rows, &cols, &out);
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint elements from the pool's workers.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Q8_0-style quantization of every row of `x` (`[m, k]`): per block of 32,
/// `sx = max|x| / 127`, values rounded half away from zero.
fn quantize(x: &[f32], m: usize, k: usize) -> QActivations {
    let kb = k / BLOCK;
    let mut acts = QActivations {
        q: vec![0i8; m * k],
        scale: vec![0f32; m * kb],
        scaled_sum: vec![0f32; m * kb],
    };
    for (r, row) in x.chunks_exact(k).take(m).enumerate() {
        for (b, block) in row.chunks_exact(BLOCK).enumerate() {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
            let q = &mut acts.q[r * k + b * BLOCK..r * k + (b + 1) * BLOCK];
            let mut sum = 0i32;
            for (dst, v) in q.iter_mut().zip(block) {
                let scaled = v * inv;
                // `round()` is a library call here; this is the same rounding, inline.
                let v = (scaled + 0.5f32.copysign(scaled)) as i8;
                *dst = v;
                sum += i32::from(v);
            }
            acts.scale[r * kb + b] = d;
            acts.scaled_sum[r * kb + b] = d * sum as f32;
        }
    }
    acts
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{QActivations, QLinear, BLOCK};

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vnni,avx512vl")]
    pub(super) unsafe fn tile(
        w: &QLinear,
        acts: &QActivations,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        out: &mut [[f32; 4]; 4],
    ) {
        // Fixed tile shapes keep every accumulator in a register.
        match (w.nibbles, rows.len(), cols.len()) {
            (true, 4, 4) => tile_impl::<true, 4, 4>(w, acts, rows.start, cols.start, out, 0),
            (false, 4, 4) => tile_impl::<false, 4, 4>(w, acts, rows.start, cols.start, out, 0),
            (nibbles, _, nc) => {
                for (i, r) in rows.enumerate() {
                    match (nibbles, nc) {
                        (true, 4) => tile_impl::<true, 1, 4>(w, acts, r, cols.start, out, i),
                        (false, 4) => tile_impl::<false, 1, 4>(w, acts, r, cols.start, out, i),
                        _ => {
                            for c in cols.clone() {
                                let mut one = [[0f32; 4]; 4];
                                if nibbles {
                                    tile_impl::<true, 1, 1>(w, acts, r, c, &mut one, 0);
                                } else {
                                    tile_impl::<false, 1, 1>(w, acts, r, c, &mut one, 0);
                                }
                                out[i][c - cols.start] = one[0][0];
                            }
                        }
                    }
                }
            }
        }
    }

    /// 32 weights of block `b` of column `c` as bytes.
    #[inline(always)]
    unsafe fn weights<const NIBBLES: bool>(w: &QLinear, c: usize, b: usize) -> __m256i {
        if NIBBLES {
            let packed =
                _mm_loadu_si128(w.q.as_ptr().add((c * w.k + b * BLOCK) / 2) as *const __m128i);
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(packed, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
            _mm256_set_m128i(hi, lo)
        } else {
            _mm256_loadu_si256(w.q.as_ptr().add(c * w.k + b * BLOCK) as *const __m256i)
        }
    }

    /// 64 weights: blocks `b` and `b + 1` of column `c`.
    #[inline(always)]
    unsafe fn weights2<const NIBBLES: bool>(w: &QLinear, c: usize, b: usize) -> __m512i {
        if NIBBLES {
            // [lo(b) | lo(b+1)] and [hi(b) | hi(b+1)] → [lo(b), hi(b), lo(b+1), hi(b+1)].
            let packed =
                _mm256_loadu_si256(w.q.as_ptr().add((c * w.k + b * BLOCK) / 2) as *const __m256i);
            let mask = _mm256_set1_epi8(0x0F);
            let lo = _mm256_and_si256(packed, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
            let v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            _mm512_shuffle_i64x2(v, v, 0b11_01_10_00)
        } else {
            _mm512_loadu_si512(w.q.as_ptr().add(c * w.k + b * BLOCK) as *const __m512i)
        }
    }

    /// Two scales, each repeated over the 8 lanes of its block.
    #[inline(always)]
    unsafe fn scales2(pair: *const f32) -> __m512 {
        let a = _mm256_set1_ps(*pair);
        let b = _mm256_set1_ps(*pair.add(1));
        _mm512_insertf32x8(_mm512_castps256_ps512(a), b, 1)
    }

    /// `out[i][j] = Σ_b scale[c][b] · sx[r][b] · Σ q[c]·qx[r]` for the tile's rows and columns:
    /// two blocks per 512-bit step, a last odd block in 256 bits.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vnni,avx512vl")]
    /// Rows `row0..row0 + R` by columns `col0..col0 + C`, written to `out[out_row + i][j]`.
    // Index loops over fixed-size register tiles read clearer than zipped iterators here.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile_impl<const NIBBLES: bool, const R: usize, const C: usize>(
        w: &QLinear,
        acts: &QActivations,
        row0: usize,
        col0: usize,
        out: &mut [[f32; 4]; 4],
        out_row: usize,
    ) {
        let kb = w.k / BLOCK;
        let (nr, nc) = (R, C);
        let rows = row0..row0 + R;
        let cols = col0..col0 + C;
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let zero = _mm512_setzero_si512();
        let mut b = 0;
        while b + 1 < kb {
            let mut wv = [zero; C];
            let mut ws = [_mm512_setzero_ps(); C];
            for j in 0..nc {
                let c = cols.start + j;
                wv[j] = weights2::<NIBBLES>(w, c, b);
                ws[j] = half_scales2(w.scale.as_ptr().add(c * kb + b));
            }
            for i in 0..nr {
                let r = rows.start + i;
                let xv =
                    _mm512_loadu_si512(acts.q.as_ptr().add(r * w.k + b * BLOCK) as *const __m512i);
                let xs = scales2(acts.scale.as_ptr().add(r * kb + b));
                for j in 0..nc {
                    let dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, wv[j], xv));
                    acc[i][j] = _mm512_fmadd_ps(_mm512_mul_ps(dot, ws[j]), xs, acc[i][j]);
                }
            }
            b += 2;
        }
        let mut tail = [[_mm256_setzero_ps(); C]; R];
        if b < kb {
            let zero = _mm256_setzero_si256();
            for j in 0..nc {
                let c = cols.start + j;
                let wv = weights::<NIBBLES>(w, c, b);
                let ws = _mm256_set1_ps(w.scale.get_unchecked(c * kb + b).to_f32());
                for i in 0..nr {
                    let r = rows.start + i;
                    let xv = _mm256_loadu_si256(
                        acts.q.as_ptr().add(r * w.k + b * BLOCK) as *const __m256i
                    );
                    let xs = _mm256_set1_ps(*acts.scale.get_unchecked(r * kb + b));
                    let dot = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, wv, xv));
                    tail[i][j] = _mm256_mul_ps(_mm256_mul_ps(dot, ws), xs);
                }
            }
        }
        for i in 0..nr {
            let sums = acts.scaled_sum.as_ptr().add((rows.start + i) * kb);
            for j in 0..nc {
                // The offset term: Σ_b offset_b · sx_b · Σ qx_b.
                let offset_term = if NIBBLES {
                    dot_half(w.offset.as_ptr().add((cols.start + j) * kb), sums, kb)
                } else {
                    -128.0 * dot_half(w.scale.as_ptr().add((cols.start + j) * kb), sums, kb)
                };
                out[out_row + i][j] =
                    _mm512_reduce_add_ps(acc[i][j]) + hsum(tail[i][j]) + offset_term;
            }
        }
    }

    /// `Σ a[i]·b[i]` over `n` values, `a` in f16.
    #[inline(always)]
    unsafe fn dot_half(a: *const f16, b: *const f32, n: usize) -> f32 {
        let a = a as *const u16;
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let av = _mm512_cvtph_ps(_mm256_loadu_si256(a.add(i) as *const __m256i));
            acc = _mm512_fmadd_ps(av, _mm512_loadu_ps(b.add(i)), acc);
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = (1u16 << (n - i)) - 1;
            let av = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, a.add(i) as *const i16));
            acc = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mask, b.add(i)), acc);
        }
        _mm512_reduce_add_ps(acc)
    }

    /// Two f16 scales, each repeated over the 8 lanes of its block.
    #[inline(always)]
    unsafe fn half_scales2(pair: *const f16) -> __m512 {
        let bits = (pair as *const u32).read_unaligned();
        let both = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        let index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_permutexvar_ps(index, _mm512_castps128_ps512(both))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_hadd_ps(s, s);
        let s = _mm_hadd_ps(s, s);
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-0.5, 0.5).
    fn random(len: usize, seed: u64) -> Vec<f32> {
        crate::test_rng::uniform(len, seed, -0.5, 0.5)
    }

    #[test]
    fn matches_the_dequantized_weights_and_is_the_same_alone_or_batched() {
        if !QLinear::supported() {
            eprintln!("no AVX-512 VNNI on this CPU: the kernel is not used here");
            return;
        }
        let (n, k, m) = (37, 96, 6);
        let w = Tensor::from_vec(random(n * k, 1), (n, k), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(random(m * k, 2), (m, k), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let qt = QTensor::quantize(&w, dtype).unwrap();
            let lin = QLinear::from_qtensor(&qt).unwrap();
            let want = x
                .matmul(&qt.dequantize(&Device::Cpu).unwrap().t().unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let got = lin.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            for (a, b) in got.iter().flatten().zip(want.iter().flatten()) {
                // Only the activations' 8-bit rounding differs from the exact product.
                assert!((a - b).abs() < 0.02, "{dtype:?}: {a} vs {b}");
            }
            for (r, batched) in got.iter().enumerate() {
                let alone = lin
                    .forward(&x.narrow(0, r, 1).unwrap())
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                assert_eq!(&alone[0], batched, "{dtype:?} row {r}: bit-identical alone");
            }
        }
    }
}
