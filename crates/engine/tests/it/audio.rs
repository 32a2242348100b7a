//! Audio input: every supported format decodes to 16 kHz mono with the right pitch, level and
//! length; damaged, empty, unsupported and over-long files are refused with a reason, never a
//! panic. Fixtures: `bench/make_audio_fixtures.sh` (a 440 Hz sine at amplitude 0.5 in each).

use xi_engine::audio::{decode_to_16k_mono, is_too_long, pcm_to_wav_16k, AudioLimits, TARGET_RATE};
use xi_engine::EngineError;

use crate::support::fixture_path;

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path("audio").join(name)).unwrap()
}

/// Frequency from zero crossings and RMS level over the middle of the signal (codec priming
/// and fades stay out).
fn pitch_and_level(samples: &[f32]) -> (f64, f64) {
    let n = samples.len();
    let mid = &samples[n / 5..n - n / 5];
    let crossings = mid
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    let seconds = mid.len() as f64 / f64::from(TARGET_RATE);
    let rms = (mid.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / mid.len() as f64).sqrt();
    (crossings as f64 / 2.0 / seconds, rms)
}

fn refusal(name: &str) -> String {
    match decode_to_16k_mono(&bytes(name), &AudioLimits::default()) {
        Err(EngineError::InvalidInput(m)) => m,
        other => panic!("{name}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_supported_format_decodes_to_16k_mono() {
    // file, format, source rate, channels, seconds
    let table = [
        ("sine_16k_mono_s16.wav", "WAV", 16000, 1, 0.5),
        ("sine_44k1_stereo_s16.wav", "WAV", 44100, 2, 0.2),
        ("sine_48k_mono_f32.wav", "WAV", 48000, 1, 0.35),
        ("sine_22k05_mono.flac", "FLAC", 22050, 1, 0.5),
        ("sine_44k1_mono.mp3", "MP3", 44100, 1, 1.0),
        ("sine_48k_stereo.ogg", "OGG/Vorbis", 48000, 2, 1.0),
        ("sine_44k1_mono.m4a", "AAC", 44100, 1, 1.0),
    ];
    for (name, format, rate, channels, seconds) in table {
        let pcm = decode_to_16k_mono(&bytes(name), &AudioLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(pcm.format, format, "{name}");
        assert_eq!(pcm.source_rate, rate, "{name}");
        assert_eq!(pcm.channels, channels, "{name}");
        // Lossy codecs pad to whole frames (AAC's priming is not in the container here).
        assert!(
            (pcm.duration_s - seconds).abs() < 0.05,
            "{name}: {} s, want {seconds}",
            pcm.duration_s
        );
        let want_len = (pcm.duration_s * f64::from(TARGET_RATE)).round() as usize;
        assert!(pcm.samples.len().abs_diff(want_len) <= 1, "{name}");
        let (hz, rms) = pitch_and_level(&pcm.samples);
        assert!((hz - 440.0).abs() < 5.0, "{name}: {hz} Hz");
        // 0.5 amplitude sine: RMS 0.354; lossy codecs at low bit rates move it a little.
        assert!((rms - 0.3536).abs() < 0.03, "{name}: RMS {rms}");
        assert!(pcm.samples.iter().all(|s| (-1.0..=1.0).contains(s)));
    }
}

#[test]
fn damaged_and_unsupported_files_are_refused_with_a_reason() {
    assert!(refusal("random.bin").contains("unrecognised format"));
    let opus = refusal("sine_48k.opus.ogg");
    assert!(opus.contains("Opus is not supported"), "{opus}");
    assert!(refusal("empty_data.wav").contains("no audio samples"));
    match decode_to_16k_mono(&[], &AudioLimits::default()) {
        Err(EngineError::InvalidInput(m)) => assert!(m.contains("empty"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Every message names what is supported or what is wrong, and never carries file bytes.
    for name in ["random.bin", "sine_48k.opus.ogg", "empty_data.wav"] {
        let m = refusal(name);
        assert!(m.len() < 300 && m.starts_with("audio"), "{name}: {m}");
    }
}

#[test]
fn damaged_but_readable_files_decode_what_is_there() {
    // A header claiming 4 GB of data over 0.5 s: symphonia refuses the chunk sizes, and we
    // say so (nothing is allocated from the claimed length).
    let m = refusal("huge_header.wav");
    assert!(m.contains("corrupt header"), "{m}");
    // Any bytes are valid PCM: noise, full length.
    let pcm = decode_to_16k_mono(&bytes("garbled_data.wav"), &AudioLimits::default()).unwrap();
    assert!((pcm.duration_s - 0.1).abs() < 0.01);
    // A download cut at 40%: the part that arrived.
    let pcm = decode_to_16k_mono(&bytes("truncated_mp3.mp3"), &AudioLimits::default()).unwrap();
    assert!(
        pcm.duration_s > 0.2 && pcm.duration_s < 0.6,
        "{}",
        pcm.duration_s
    );
    // Random bytes or cut files at every length: an answer, never a panic.
    let mp3 = bytes("sine_44k1_mono.mp3");
    for cut in (0..mp3.len()).step_by(97) {
        let _ = decode_to_16k_mono(&mp3[..cut], &AudioLimits::default());
    }
    let mut flipped = bytes("sine_22k05_mono.flac");
    for i in (64..flipped.len()).step_by(131) {
        flipped[i] ^= 0x5a;
    }
    let _ = decode_to_16k_mono(&flipped, &AudioLimits::default());
}

#[test]
fn audio_past_the_limit_is_refused_as_too_long() {
    let limits = AudioLimits { max_seconds: 0.4 };
    let err = decode_to_16k_mono(&bytes("sine_44k1_mono.mp3"), &limits).unwrap_err();
    assert!(is_too_long(&err), "{err}");
    assert!(err.to_string().contains("0.4 s"), "{err}");
    // Under the limit is fine, and other refusals are not "too long".
    assert!(decode_to_16k_mono(
        &bytes("sine_16k_mono_s16.wav"),
        &AudioLimits { max_seconds: 0.6 }
    )
    .is_ok());
    let other = decode_to_16k_mono(&bytes("random.bin"), &limits).unwrap_err();
    assert!(!is_too_long(&other));
}

#[test]
fn written_wav_reads_back() {
    let samples: Vec<f32> = (0..8000)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16000.0).sin())
        .collect();
    let pcm = decode_to_16k_mono(&pcm_to_wav_16k(&samples), &AudioLimits::default()).unwrap();
    assert_eq!(pcm.samples.len(), samples.len());
    let diff = pcm
        .samples
        .iter()
        .zip(&samples)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "{diff}");
}
