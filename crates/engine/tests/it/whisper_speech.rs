//! Whisper tiny.en (real weights, `scripts/fetch-test-models.sh`) on speech synthesised by
//! espeak-ng: known sentences come back with a word error rate under 20%, alone and as one
//! long recording walked in 30 s windows with timestamps.

use xi_engine::audio::{decode_to_16k_mono, AudioLimits};
use xi_engine::whisper::{Task, TranscribeOptions, WhisperModel};
use xi_engine::{EngineError, Placement};
use xi_testkit::{speech, whisper_tiny_en, word_error_rate, SENTENCES};

fn samples(text: &str) -> Vec<f32> {
    decode_to_16k_mono(&speech(text), &AudioLimits::default())
        .unwrap()
        .samples
}

fn never() -> bool {
    false
}

#[test]
fn tiny_en_transcribes_synthesised_sentences() {
    let model = WhisperModel::load(&whisper_tiny_en(), &Placement::cpu()).unwrap();
    let mut reference = String::new();
    let mut hypothesis = String::new();
    let mut long = Vec::new();
    for sentence in SENTENCES {
        let audio = samples(sentence);
        let transcript = model
            .transcribe(&audio, TranscribeOptions::default(), &mut |_| {}, &never)
            .unwrap();
        let wer = word_error_rate(sentence, &transcript.text);
        eprintln!("{wer:.2} {sentence:?} -> {:?}", transcript.text);
        assert_eq!(transcript.language, "en");
        assert!(!transcript.segments.is_empty());
        reference.push_str(sentence);
        reference.push(' ');
        hypothesis.push_str(&transcript.text);
        hypothesis.push(' ');
        long.extend_from_slice(&audio);
        long.extend(std::iter::repeat_n(0.0, 8000));
    }
    let wer = word_error_rate(&reference, &hypothesis);
    eprintln!("word error rate, sentence by sentence: {:.1}%", wer * 100.0);
    assert!(wer < 0.20, "word error rate {wer}");

    // Twice through: ~50 s, so at least two windows, the second prompted by the first.
    let twice: Vec<f32> = long.iter().chain(&long).copied().collect();
    let seconds = twice.len() as f64 / 16000.0;
    let mut streamed = Vec::new();
    let transcript = model
        .transcribe(
            &twice,
            TranscribeOptions::default(),
            &mut |s| streamed.push(s.clone()),
            &never,
        )
        .unwrap();
    let wer = word_error_rate(&format!("{reference} {reference}"), &transcript.text);
    eprintln!(
        "long ({seconds:.1} s): {:.1}% -> {:?}",
        wer * 100.0,
        transcript.text
    );
    assert!(wer < 0.20, "long audio word error rate {wer}");
    assert_eq!(
        streamed, transcript.segments,
        "every segment is streamed once, in order"
    );
    assert!(
        transcript.segments.iter().any(|s| s.seek > 0),
        "more than one window"
    );
    let mut last = 0.0;
    for s in &transcript.segments {
        assert!(s.start >= last - 1e-6 && s.end >= s.start, "{s:?}");
        last = s.start;
    }
    assert!(last < seconds && last > seconds / 2.0);
    assert!((transcript.duration - seconds).abs() < 0.01);
}

#[test]
fn word_timestamps_follow_the_speech() {
    let model = WhisperModel::load(&whisper_tiny_en(), &Placement::cpu()).unwrap();
    // Two sentences with a 1 s pause between them.
    let first = samples(SENTENCES[1]);
    let second = samples(SENTENCES[4]);
    let pause_start = first.len() as f64 / 16000.0;
    let audio: Vec<f32> = first
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0.0, 16000))
        .chain(second.iter().copied())
        .collect();
    let options = TranscribeOptions {
        word_timestamps: true,
        ..Default::default()
    };
    let transcript = model
        .transcribe(&audio, options, &mut |_| {}, &never)
        .unwrap();
    let words: Vec<_> = transcript
        .segments
        .iter()
        .flat_map(|s| s.words.clone())
        .collect();
    eprintln!("{words:?}");
    // The words spell the text, in order, each inside its segment and the audio.
    let joined: String = words.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(joined.trim(), transcript.text);
    let duration = audio.len() as f64 / 16000.0;
    let mut last = 0.0;
    for w in &words {
        assert!(
            w.start >= last - 1e-6 && w.end >= w.start && w.end <= duration + 0.05,
            "{w:?}"
        );
        last = w.start;
    }
    for s in &transcript.segments {
        for w in &s.words {
            // OpenAI's rules may start a long first word up to its median length early.
            assert!(
                w.start >= s.start - 0.75 && w.end <= s.end + 1e-6,
                "{w:?} outside {s:?}"
            );
        }
    }
    // "budget." ends the first sentence before the pause; "weather" starts after it.
    let find = |needle: &str| {
        words
            .iter()
            .find(|w| w.word.to_lowercase().contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {words:?}"))
    };
    let budget = find("budget");
    let weather = find("weather");
    assert!(
        budget.end <= pause_start + 0.3,
        "{budget:?} vs pause at {pause_start}"
    );
    assert!(
        weather.start >= pause_start + 0.7,
        "{weather:?} vs pause at {pause_start}"
    );
    // Without the option, no words.
    let plain = model
        .transcribe(&audio, TranscribeOptions::default(), &mut |_| {}, &never)
        .unwrap();
    assert!(plain.segments.iter().all(|s| s.words.is_empty()));
}

#[test]
fn english_only_models_refuse_other_languages_and_translation() {
    let model = WhisperModel::load(&whisper_tiny_en(), &Placement::cpu()).unwrap();
    let audio = samples(SENTENCES[0]);
    for options in [
        TranscribeOptions {
            language: Some("de".into()),
            ..Default::default()
        },
        TranscribeOptions {
            task: Task::Translate,
            ..Default::default()
        },
    ] {
        match model.transcribe(&audio, options, &mut |_| {}, &never) {
            Err(EngineError::InvalidInput(m)) => assert!(m.contains("English"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // Cancelled before the first token: no transcript.
    let cancelled = model.transcribe(&audio, TranscribeOptions::default(), &mut |_| {}, &|| true);
    assert!(cancelled.is_err());
}
