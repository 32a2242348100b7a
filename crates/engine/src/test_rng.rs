//! Reproducible pseudo-random inputs for the unit tests (a 64-bit LCG: no dependency, the
//! same numbers on every machine).

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
