//! Whisper tiny.en (real weights, `scripts/fetch-test-models.sh`) on speech synthesised by
//! espeak-ng: known sentences come back with a word error rate under 20%, alone and as one
//! long recording walked in 30 s windows with timestamps.

use xi_engine::audio::{decode_to_16k_mono, AudioLimits};
use xi_engine::whisper::{step_jobs, CrossKv, Job, Task, TranscribeOptions, WhisperModel};
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

/// Several requests walked together, as a replica walks them (their windows encoded in one
/// batch, their greedy decodes stepped in lockstep by `step_jobs`), give each exactly the
/// transcript it gets alone: audio of different lengths (one, two and three windows, so jobs
/// drop out of the batch at different rounds), one with word timestamps and one sampling (which
/// `step_jobs` decodes on its own). A job cancelled mid-walk fails alone.
#[test]
fn jobs_walked_together_equal_each_walked_alone() {
    let model = WhisperModel::load(&whisper_tiny_en(), &Placement::cpu()).unwrap();
    let pause = || std::iter::repeat_n(0.0f32, 8000);
    let mut clips: Vec<Vec<f32>> = Vec::new();
    let mut long = Vec::new();
    for sentence in SENTENCES {
        long.extend(samples(sentence));
        long.extend(pause());
    }
    clips.push(samples(SENTENCES[1]));
    clips.push(long.iter().chain(&long).copied().collect());
    clips.push(long.iter().chain(&long).chain(&long).copied().collect());
    clips.push(samples(SENTENCES[4]));
    clips.push(samples(SENTENCES[2]));
    let options = |i: usize| TranscribeOptions {
        word_timestamps: i == 1,
        temperature: if i == 3 { 0.4 } else { 0.0 },
        seed: 7,
        ..TranscribeOptions::default()
    };
    let alone: Vec<_> = clips
        .iter()
        .enumerate()
        .map(|(i, clip)| {
            model
                .transcribe(clip, options(i), &mut |_| {}, &never)
                .unwrap()
        })
        .collect();

    let mut jobs: Vec<Job> = clips
        .iter()
        .enumerate()
        .map(|(i, clip)| Job::new(&model, clip, options(i)).unwrap())
        .collect();
    let cancel_at = 1;
    let mut cancelled_job = Job::new(&model, &clips[2], options(2)).unwrap();
    let mut outcome = Vec::new();
    for round in 0.. {
        let mut walking: Vec<&mut Job> = jobs.iter_mut().filter(|j| !j.is_done()).collect();
        let with_cancel = !cancelled_job.is_done() && outcome.is_empty();
        if walking.is_empty() && !with_cancel {
            break;
        }
        if with_cancel {
            walking.push(&mut cancelled_job);
        }
        let windows: Vec<Vec<f32>> = walking.iter().map(|j| j.window()).collect();
        let cross = model.encode_windows(&windows).unwrap();
        let rows: Vec<CrossKv> = (0..walking.len()).map(|i| cross.row(i).unwrap()).collect();
        let crosses: Vec<&CrossKv> = rows.iter().collect();
        let cancel_now = move || round == cancel_at;
        let mut flags: Vec<&dyn Fn() -> bool> = vec![&never; walking.len()];
        if with_cancel {
            *flags.last_mut().unwrap() = &cancel_now;
        }
        let steps = step_jobs(&model, &mut walking, &crosses, &flags);
        for (k, step) in steps.into_iter().enumerate() {
            if with_cancel && k + 1 == walking.len() {
                if let Err(e) = step {
                    outcome.push(e);
                }
            } else {
                step.unwrap();
            }
        }
    }
    for (i, (job, want)) in jobs.iter().zip(&alone).enumerate() {
        let got = job.transcript();
        assert_eq!(got.segments, want.segments, "clip {i}");
        assert_eq!(got.text, want.text, "clip {i}");
    }
    assert!(
        alone[2].segments.iter().map(|s| s.seek).max()
            > alone[1].segments.iter().map(|s| s.seek).max()
    );
    assert!(
        !alone[1].segments[0].words.is_empty(),
        "word timestamps were asked"
    );
    assert!(
        matches!(outcome.as_slice(), [EngineError::InvalidInput(m)] if m.contains("cancelled")),
        "{outcome:?}"
    );
}
