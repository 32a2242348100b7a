//! Whisper's log-mel front end, computed as `transformers`' `WhisperFeatureExtractor` does:
//! a periodic Hann window of 400 samples, a centred STFT (reflect padding) with a hop of 160,
//! the power spectrum through a Slaney mel filter bank, `log10`, then the dynamic range clamped
//! to 8 (in log10 units) below the loudest bin and scaled with `(x + 4) / 4`.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};

/// Samples per second the model hears.
pub const SAMPLE_RATE: usize = 16_000;
/// FFT size (25 ms).
pub const N_FFT: usize = 400;
/// Samples between frames (10 ms).
pub const HOP_LENGTH: usize = 160;
/// Samples in one 30 s window.
pub const CHUNK_SAMPLES: usize = 30 * SAMPLE_RATE;
/// Mel frames in one 30 s window.
pub const CHUNK_FRAMES: usize = CHUNK_SAMPLES / HOP_LENGTH;

const N_BINS: usize = N_FFT / 2 + 1;
const MAX_FREQUENCY: f64 = 8_000.0;
const LOG_FLOOR: f32 = 1e-10;

/// One triangular filter: its first non-zero frequency bin and weights from there.
#[derive(Clone, Debug)]
struct Filter {
    start: usize,
    weights: Vec<f32>,
}

/// The mel filter bank and the FFT plan, built once per model and shared by its requests.
#[derive(Clone)]
pub struct MelFilters {
    filters: Vec<Filter>,
    window: Arc<[f32]>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for MelFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelFilters")
            .field("n_mels", &self.filters.len())
            .finish()
    }
}

/// Hertz to mels on the Slaney scale (linear below 1 kHz, logarithmic above).
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let log_step = 6.4f64.ln() / 27.0;
    if hz < min_log_hz {
        hz / f_sp
    } else {
        min_log_mel + (hz / min_log_hz).ln() / log_step
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let log_step = 6.4f64.ln() / 27.0;
    if mel < min_log_mel {
        mel * f_sp
    } else {
        min_log_hz * ((mel - min_log_mel) * log_step).exp()
    }
}

impl MelFilters {
    /// A Slaney-normalised bank of `n_mels` triangular filters over 0-8 kHz.
    pub fn new(n_mels: usize) -> Self {
        let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(MAX_FREQUENCY));
        let edges: Vec<f64> = (0..n_mels + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
            .collect();
        let bin_hz = (SAMPLE_RATE as f64 / 2.0) / (N_BINS - 1) as f64;
        let filters = (0..n_mels)
            .map(|m| {
                let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
                let norm = 2.0 / (right - left);
                let dense: Vec<f32> = (0..N_BINS)
                    .map(|k| {
                        let f = k as f64 * bin_hz;
                        let down = (f - left) / (centre - left);
                        let up = (right - f) / (right - centre);
                        (down.min(up).max(0.0) * norm) as f32
                    })
                    .collect();
                let start = dense.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = dense
                    .iter()
                    .rposition(|&w| w != 0.0)
                    .map_or(start, |e| e + 1);
                Filter {
                    start,
                    weights: dense[start..end].to_vec(),
                }
            })
            .collect();
        let window: Arc<[f32]> = (0..N_FFT)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self {
            filters,
            window,
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.filters.len()
    }

    /// One frame's mel energies (before the log) from the `N_FFT` samples around its centre.
    fn frame(&self, samples: &[f32], centre: usize, scratch: &mut FrameScratch) -> Vec<f32> {
        let half = N_FFT / 2;
        for (i, slot) in scratch.input.iter_mut().enumerate() {
            let at = reflect(centre as isize + i as isize - half as isize, samples.len());
            *slot = samples[at] * self.window[i];
        }
        // The plan was made for exactly these lengths, so it cannot fail.
        let _ = self.fft.process_with_scratch(
            &mut scratch.input,
            &mut scratch.spectrum,
            &mut scratch.fft_scratch,
        );
        for (p, c) in scratch.power.iter_mut().zip(&scratch.spectrum) {
            *p = c.norm_sqr();
        }
        self.filters
            .iter()
            .map(|f| {
                f.weights
                    .iter()
                    .zip(&scratch.power[f.start..])
                    .map(|(w, p)| w * p)
                    .sum::<f32>()
            })
            .collect()
    }
}

struct FrameScratch {
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    fft_scratch: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
}

impl FrameScratch {
    fn new(filters: &MelFilters) -> Self {
        Self {
            input: filters.fft.make_input_vec(),
            spectrum: filters.fft.make_output_vec(),
            fft_scratch: filters.fft.make_scratch_vec(),
            power: vec![0.0; N_BINS],
        }
    }
}

/// numpy's `reflect` padding: index `i` mirrored into `0..len` (without repeating the edge).
pub(crate) fn reflect(i: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let r = i.rem_euclid(period);
    if r < len as isize {
        r as usize
    } else {
        (period - r) as usize
    }
}

/// The log-mel spectrogram of 16 kHz mono `samples`: `[n_mels][frames]` row-major and the
/// number of frames, `samples.len() / HOP_LENGTH` (the centred STFT's last frame is dropped).
pub fn log_mel(samples: &[f32], filters: &MelFilters) -> (Vec<f32>, usize) {
    let frames = samples.len() / HOP_LENGTH;
    if frames == 0 {
        return (Vec::new(), 0);
    }
    let per_frame: Vec<Vec<f32>> = (0..frames)
        .into_par_iter()
        .map_init(
            || FrameScratch::new(filters),
            |scratch, t| filters.frame(samples, t * HOP_LENGTH, scratch),
        )
        .collect();
    let n_mels = filters.n_mels();
    let mut out = vec![0f32; n_mels * frames];
    let mut max = f32::NEG_INFINITY;
    for (t, energies) in per_frame.iter().enumerate() {
        for (m, e) in energies.iter().enumerate() {
            let v = e.max(LOG_FLOOR).log10();
            max = max.max(v);
            out[m * frames + t] = v;
        }
    }
    let floor = max - 8.0;
    for v in &mut out {
        *v = (v.max(floor) + 4.0) / 4.0;
    }
    (out, frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_numpy() {
        // np.pad([0,1,2,3], 5, mode="reflect") -> [1 2 3 2 1 | 0 1 2 3 | 2 1 0 1 2]
        let left: Vec<usize> = (-5..0).map(|i| reflect(i, 4)).collect();
        assert_eq!(left, vec![1, 2, 3, 2, 1]);
        let right: Vec<usize> = (4..9).map(|i| reflect(i, 4)).collect();
        assert_eq!(right, vec![2, 1, 0, 1, 2]);
    }

    #[test]
    fn filters_cover_the_band_and_frames_follow_the_hop() {
        let filters = MelFilters::new(80);
        assert_eq!(filters.n_mels(), 80);
        assert!(filters.filters.iter().all(|f| !f.weights.is_empty()));
        let (mel, frames) = log_mel(&vec![0.0; 16_000], &filters);
        assert_eq!(frames, 100);
        assert_eq!(mel.len(), 80 * 100);
        assert_eq!(log_mel(&[], &filters), (Vec::new(), 0));
        // Shorter than one FFT still works (reflect padding repeats).
        assert_eq!(log_mel(&[0.5; 170], &filters).1, 1);
    }
}
