//! Softmax of one row of attention scores, vectorised: the max, the exponentials and their sum
//! run over 16 lanes (one AVX-512 register), with the polynomial `exp` of [`crate::ops`].
//! A plain `fold(f32::max)` and a running sum do not vectorise (NaN rules and the order of
//! additions), and were a third of the encoder's attention time for Whisper.

const LANES: usize = 16;

/// Whether this CPU runs the AVX-512 build of [`row`]; detected once.
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX512: OnceLock<bool> = OnceLock::new();
        *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `r = softmax(r)` in place; `avx512` comes from [`avx512`].
pub(crate) fn row(r: &mut [f32], avx512: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx512 {
        // SAFETY: the caller passes `avx512()`, so the CPU has AVX-512F.
        return unsafe { row_avx512(r) };
    }
    let _ = avx512;
    row_body(r)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_avx512(r: &mut [f32]) {
    row_body(r)
}

#[inline(always)]
fn row_body(r: &mut [f32]) {
    let max = max_of(r);
    let mut sums = [0f32; LANES];
    let mut chunks = r.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c.iter_mut()) {
            *x = crate::ops::exp(*x - max);
            *s += *x;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = crate::ops::exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in r.iter_mut() {
        *x *= inv;
    }
}

/// `ln Σ e^x` over `r` (`-inf` for an empty or all `-inf` row), vectorised as [`row`]: the
/// decoder's logit rules take it over the whole vocabulary at every step.
pub(crate) fn log_sum_exp(r: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: `avx512()` says the CPU has AVX-512F.
        return unsafe { log_sum_exp_avx512(r) };
    }
    log_sum_exp_body(r)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn log_sum_exp_avx512(r: &[f32]) -> f32 {
    log_sum_exp_body(r)
}

#[inline(always)]
fn log_sum_exp_body(r: &[f32]) -> f32 {
    let max = max_of(r);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let mut sums = [0f32; LANES];
    let mut chunks = r.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &x) in sums.iter_mut().zip(c) {
            *s += crate::ops::exp(x - max);
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for &x in chunks.remainder() {
        sum += crate::ops::exp(x - max);
    }
    max + sum.ln()
}

#[inline(always)]
fn max_of(r: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = r.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

#[cfg(test)]
mod tests {
    /// Equal to a plain f64 softmax for row lengths around the lane width, both builds.
    #[test]
    fn matches_a_plain_softmax() {
        for len in [1usize, 5, 16, 17, 33, 1500] {
            let x = crate::test_rng::uniform(len, len as u64, -30.0, 30.0);
            let max = x
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |m, v| m.max(v as f64));
            let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
            for avx512 in [false, super::avx512()] {
                let mut r = x.clone();
                super::row(&mut r, avx512);
                for (got, &v) in r.iter().zip(&x) {
                    let want = (v as f64 - max).exp() / sum;
                    assert!(
                        (*got as f64 - want).abs() < 1e-6,
                        "len {len}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Equal to a plain f64 log-sum-exp, with `-inf` entries (masked tokens) among the
    /// values, and `-inf` for a row with nothing left.
    #[test]
    fn log_sum_exp_matches_a_plain_one() {
        for len in [1usize, 5, 16, 17, 33, 51864] {
            let mut x = crate::test_rng::uniform(len, len as u64, -30.0, 30.0);
            for v in x.iter_mut().skip(1).step_by(3) {
                *v = f32::NEG_INFINITY;
            }
            let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let want = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            let got = super::log_sum_exp(&x) as f64;
            assert!(
                (got - want).abs() < 1e-5 * want.abs().max(1.0),
                "len {len}: {got} vs {want}"
            );
            assert_eq!(got, super::log_sum_exp_body(&x) as f64, "both builds agree");
        }
        assert_eq!(super::log_sum_exp(&[]), f32::NEG_INFINITY);
        assert_eq!(
            super::log_sum_exp(&[f32::NEG_INFINITY; 20]),
            f32::NEG_INFINITY
        );
    }
}
