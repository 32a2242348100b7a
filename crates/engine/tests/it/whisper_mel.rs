//! Whisper's log-mel front end against transformers' `WhisperFeatureExtractor`
//! (`bench/make_whisper_mel_fixture.py`): 80 and 128 mel bins, an odd length, and a signal
//! shorter than one FFT window.

use xi_engine::whisper::mel::{log_mel, MelFilters};

use crate::support::fixture;

#[test]
fn log_mel_matches_transformers() {
    let expected = fixture("whisper_mel.json");
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let n_mels = case["n_mels"].as_u64().unwrap() as usize;
        let samples: Vec<f32> = case["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let filters = MelFilters::new(n_mels);
        let (mel, frames) = log_mel(&samples, &filters);
        assert_eq!(frames, case["frames"].as_u64().unwrap() as usize, "{name}");
        let want: Vec<f32> = case["mel"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        assert_eq!(mel.len(), want.len(), "{name}");
        let diff = mel
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff < 1e-4,
            "{name}: log-mel differs from transformers by {diff}"
        );
    }
}
