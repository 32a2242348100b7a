//! Serving a Whisper replica: every transcription in flight walks its audio window by window
//! ([`xi_engine::whisper::Job`]), and each round encodes the current window of every active
//! job in one batch, then decodes each window. A request that arrives mid-walk joins the next
//! round, so a long file does not hold short ones back by more than one window each. A job
//! whose client went away (its event channel closed) stops within one token.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};

use tokio::sync::mpsc::UnboundedSender;
use xi_api::audio::{TranscribeEvent, TranscriptSegment, TranscriptSummary, TranscriptWord};
use xi_api::worker::WorkerError;
use xi_engine::whisper::{
    language_name, step_jobs, Job as Walk, Segment, TranscribeOptions, WhisperModel,
};

use super::{refuse, terminated, Job, ReplicaOptions, ReplicaShared};

/// Windows encoded in one batch at most (memory: one window's encoder activations are about
/// 1500 x d_model x 4 bytes per layer).
pub const MAX_WINDOWS_PER_ROUND: usize = 8;

/// A decoded request waiting for, or in, a walk.
pub struct SpeechJob {
    /// 16 kHz mono samples.
    pub samples: Vec<f32>,
    pub options: TranscribeOptions,
}

struct Active {
    walk: Walk,
    events: UnboundedSender<TranscribeEvent>,
}

/// Serves until the queue closes.
pub(super) fn serve(
    model: &WhisperModel,
    options: ReplicaOptions,
    shared: &ReplicaShared,
    receiver: &Receiver<Job>,
) {
    let mut active: Vec<Active> = Vec::new();
    loop {
        // Idle: wait for work. Busy: take whatever queued up, without waiting.
        if active.is_empty() {
            match receiver.recv() {
                Ok(job) => admit(model, job, &mut active),
                Err(_) => return,
            }
        }
        loop {
            match receiver.try_recv() {
                Ok(job) => admit(model, job, &mut active),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if active.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            for a in active.drain(..) {
                let _ = a.events.send(TranscribeEvent::Error(terminated()));
            }
            continue;
        }
        active.retain(|a| !a.events.is_closed());
        let batch = if options.batching {
            MAX_WINDOWS_PER_ROUND
        } else {
            1
        };
        round(model, &mut active, batch);
    }
}

fn admit(model: &WhisperModel, job: Job, active: &mut Vec<Active>) {
    let Job::Transcribe(job, events) = job else {
        refuse(vec![job]);
        return;
    };
    let SpeechJob { samples, options } = *job;
    match Walk::new(model, &samples, options) {
        Ok(walk) => active.push(Active { walk, events }),
        Err(e) => {
            let _ = events.send(TranscribeEvent::Error(WorkerError::from(e)));
        }
    }
}

/// One round: the current windows of the first `batch` active jobs encoded together, then
/// decoded together (their greedy first passes step in lockstep, each weight read once per
/// token for all of them); finished or failed jobs leave.
fn round(model: &WhisperModel, active: &mut Vec<Active>, batch: usize) {
    let n = active.len().min(batch);
    if n == 0 {
        return;
    }
    let windows: Vec<Vec<f32>> = active[..n].iter().map(|a| a.walk.window()).collect();
    let cross = match model.encode_windows(&windows) {
        Ok(c) => c,
        Err(e) => {
            let err = WorkerError::from(e);
            for a in active.drain(..n) {
                let _ = a.events.send(TranscribeEvent::Error(err.clone()));
            }
            return;
        }
    };
    let mut finished = vec![false; n];
    // The windows whose audio row came out decode together; a failed row fails its job.
    let mut stepping = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    for (i, a) in active[..n].iter().enumerate() {
        match cross.row(i) {
            Ok(row) => {
                stepping.push(i);
                rows.push(row);
            }
            Err(e) => {
                let _ = a.events.send(TranscribeEvent::Error(WorkerError::from(e)));
                finished[i] = true;
            }
        }
    }
    let flags: Vec<_> = stepping
        .iter()
        .map(|&i| {
            let events = active[i].events.clone();
            move || events.is_closed()
        })
        .collect();
    let flags: Vec<&dyn Fn() -> bool> = flags.iter().map(|f| f as &dyn Fn() -> bool).collect();
    let crosses: Vec<_> = rows.iter().collect();
    let mut walks: Vec<&mut Walk> = active[..n]
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| stepping.contains(i))
        .map(|(_, a)| &mut a.walk)
        .collect();
    let steps = step_jobs(model, &mut walks, &crosses, &flags);
    drop(walks);
    for (&i, step) in stepping.iter().zip(steps) {
        let a = &active[i];
        match step {
            Ok(segments) => {
                for s in segments {
                    let _ = a.events.send(TranscribeEvent::Segment(wire_segment(s)));
                }
                if a.walk.is_done() {
                    let t = a.walk.transcript();
                    let language = language_name(&t.language).unwrap_or("english").to_string();
                    let _ = a.events.send(TranscribeEvent::Done(TranscriptSummary {
                        text: t.text,
                        language,
                        duration: t.duration,
                    }));
                    finished[i] = true;
                }
            }
            Err(e) => {
                let _ = a.events.send(TranscribeEvent::Error(WorkerError::from(e)));
                finished[i] = true;
            }
        }
    }
    // The jobs that ran go to the back, so more than `batch` jobs take turns.
    let ran: Vec<Active> = active.drain(..n).collect();
    for (a, done) in ran.into_iter().zip(finished) {
        if !done {
            active.push(a);
        }
    }
}

fn wire_segment(s: Segment) -> TranscriptSegment {
    TranscriptSegment {
        id: s.id,
        seek: s.seek,
        start: s.start,
        end: s.end,
        text: s.text,
        tokens: s.tokens,
        temperature: s.temperature,
        avg_logprob: s.avg_logprob,
        compression_ratio: s.compression_ratio,
        no_speech_prob: s.no_speech_prob,
        words: s
            .words
            .into_iter()
            .map(|w| TranscriptWord {
                word: w.word,
                start: w.start,
                end: w.end,
            })
            .collect(),
    }
}
