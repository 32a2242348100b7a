//! Times Whisper alone (no HTTP) on espeak-ng speech of the test sentences, to profile it:
//! the encoder, the decoder and the whole transcription, separately.
//!
//!     cargo run -p xi-engine --example whisper_timing -- [model folder] [rounds]

use std::time::Instant;

use candle_core::Tensor;
use xi_engine::audio::{decode_to_16k_mono, AudioLimits};
use xi_engine::whisper::{TranscribeOptions, Whisper, WhisperModel};
use xi_engine::Placement;
use xi_testkit::{speech, whisper_tiny_en, SENTENCES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().map(Into::into).unwrap_or_else(whisper_tiny_en);
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let model = WhisperModel::load(&folder, &Placement::cpu())?;
    parts(&WhisperModel::load_network(&folder, &Placement::cpu())?)?;
    let text = SENTENCES.join(" ");
    let mut samples = Vec::new();
    for _ in 0..3 {
        samples.extend(decode_to_16k_mono(&speech(&text), &AudioLimits::default())?.samples);
    }
    let seconds = samples.len() as f64 / 16000.0;
    let never = || false;
    for round in 0..rounds {
        let start = Instant::now();
        let window = vec![0f32; 80 * 3000];
        let cross = model.encode_windows(&[window])?;
        let encode = start.elapsed().as_secs_f64();
        drop(cross);
        let start = Instant::now();
        let transcript =
            model.transcribe(&samples, TranscribeOptions::default(), &mut |_| {}, &never)?;
        let total = start.elapsed().as_secs_f64();
        let windows = transcript
            .segments
            .iter()
            .map(|s| s.seek)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let tokens: usize = transcript.segments.iter().map(|s| s.tokens.len()).sum();
        println!(
            "round {round}: {seconds:.1} s of audio in {total:.3} s (RTF {:.4}); one encoder window {encode:.3} s; {windows} windows, {tokens} tokens",
            total / seconds
        );
    }
    Ok(())
}

/// The encoder on one window, then 200 decoder steps with and without the vocabulary
/// projection, each timed apart.
fn parts(net: &Whisper) -> Result<(), Box<dyn std::error::Error>> {
    let mel = Tensor::zeros((1, 80, 3000), candle_core::DType::F32, net.device())?;
    for _ in 0..2 {
        let start = Instant::now();
        let encoded = net.encode(&mel)?;
        let encode = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let cross = net.cross_kv(&encoded)?;
        let cross_time = start.elapsed().as_secs_f64();
        let mut cache = net.new_cache();
        let token = Tensor::from_vec(vec![50257u32], (1, 1), net.device())?;
        let steps = 200;
        let (mut decode, mut logits) = (0.0, 0.0);
        for _ in 0..steps {
            let start = Instant::now();
            let out = net.decode(&token, &cross, &mut cache, false)?;
            decode += start.elapsed().as_secs_f64();
            let start = Instant::now();
            let l: Vec<f32> = net.logits(&out.hidden)?.flatten_all()?.to_vec1()?;
            logits += start.elapsed().as_secs_f64();
            std::hint::black_box(l);
        }
        println!(
            "encoder {encode:.3} s, cross kv {cross_time:.4} s, decoder step {:.2} ms, logits {:.2} ms",
            decode * 1e3 / steps as f64,
            logits * 1e3 / steps as f64
        );
    }
    Ok(())
}
