//! Word timestamps, as OpenAI Whisper finds them: the decoder is run once more over a window's
//! text, the cross-attention of the model's alignment heads (which follow the audio closely)
//! is normalised, median-filtered and averaged into a token-by-frame matrix, and dynamic time
//! warping through it gives the frame where each token starts. Tokens are grouped into words
//! (a word starts at a leading space or a punctuation mark), punctuation is merged into its
//! neighbour, and over-long words at pauses and sentence ends are trimmed.

use candle_core::Tensor;

use crate::error::EngineError;
use crate::whisper::mel::reflect;
use crate::whisper::model::CrossKv;
use crate::whisper::transcribe::{round2, Segment};
use crate::whisper::WhisperModel;

/// Time of one encoder position (two mel frames): 20 ms.
const SECONDS_PER_POSITION: f64 = 0.02;
/// Width of the median filter over encoder positions.
const MEDIAN_WIDTH: usize = 7;
const PREPENDED: &str = "\"'“¿([{-";
const APPENDED: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_ENDS: &str = ".。!！?？";

/// A word and when it is spoken, in seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone)]
struct Timed {
    word: String,
    tokens: Vec<u32>,
    start: f64,
    end: f64,
}

/// Gives each of `segments` (all from one window, whose decoding started with `sot_sequence`
/// and which covers `positions` encoder positions) its words, and pulls the segment's start
/// and end to its first and last word as OpenAI does. `last_speech` is the end of the speech
/// before this window; returns the new one.
pub(crate) fn add_word_timestamps(
    model: &WhisperModel,
    cross: &CrossKv,
    sot_sequence: &[u32],
    segments: &mut [Segment],
    positions: usize,
    last_speech: f64,
) -> Result<f64, EngineError> {
    let eot = model.tokenizer.special.eot;
    let per_segment: Vec<Vec<u32>> = segments
        .iter()
        .map(|s| s.tokens.iter().copied().filter(|&t| t < eot).collect())
        .collect();
    let text: Vec<u32> = per_segment.concat();
    if text.is_empty() || positions == 0 {
        return Ok(last_speech);
    }
    let mut alignment = align(model, cross, sot_sequence, &text, positions)?;
    if alignment.is_empty() {
        return Ok(last_speech);
    }
    let durations: Vec<f64> = alignment
        .iter()
        .map(|w| w.end - w.start)
        .filter(|d| *d != 0.0)
        .collect();
    let median = median(&durations).min(0.7);
    let max_duration = median * 2.0;
    if !durations.is_empty() {
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if SENTENCE_ENDS.contains(alignment[i].word.as_str())
                    && !alignment[i].word.is_empty()
                {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if SENTENCE_ENDS.contains(alignment[i - 1].word.as_str())
                    && !alignment[i - 1].word.is_empty()
                {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuation(&mut alignment);

    let offset = segments[0].seek as f64 * SECONDS_PER_POSITION / 2.0;
    let mut last_speech = last_speech;
    let mut index = 0;
    for (segment, tokens) in segments.iter_mut().zip(&per_segment) {
        let mut saved = 0;
        let mut words: Vec<Word> = Vec::new();
        while index < alignment.len() && saved < tokens.len() {
            let timed = &alignment[index];
            if !timed.word.is_empty() {
                words.push(Word {
                    word: timed.word.clone(),
                    start: round2(offset + timed.start),
                    end: round2(offset + timed.end),
                });
            }
            saved += timed.tokens.len();
            index += 1;
        }
        if let Some(first) = words.first().cloned() {
            // The first (and second) word after a pause is no longer than twice the median.
            let long_first = first.end - first.start > max_duration
                || (words.len() > 1 && words[1].end - first.start > max_duration * 2.0);
            if first.end - last_speech > median * 4.0 && long_first {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = (words[0].end - max_duration).max(0.0);
            }
            // Prefer the segment's own start or end where the first or last word is too long.
            if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median).min(segment.start).max(0.0);
            } else {
                segment.start = words[0].start;
            }
            let last = words.len() - 1;
            if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median).max(segment.end);
            } else {
                segment.end = words[last].end;
            }
            last_speech = segment.end;
        }
        segment.words = words;
    }
    Ok(last_speech)
}

/// The words of `text` with their times within the window (seconds from its start).
fn align(
    model: &WhisperModel,
    cross: &CrossKv,
    sot_sequence: &[u32],
    text: &[u32],
    positions: usize,
) -> Result<Vec<Timed>, EngineError> {
    let special = &model.tokenizer.special;
    let mut tokens = sot_sequence.to_vec();
    tokens.push(special.no_timestamps);
    tokens.extend_from_slice(text);
    tokens.push(special.eot);
    let net = &model.net;
    let input = Tensor::new(tokens.as_slice(), net.device())?.unsqueeze(0)?;
    let mut cache = net.new_cache();
    let out = net.decode(&input, cross, &mut cache, true)?;
    let t = tokens.len();
    let mut heads: Vec<Vec<f32>> = Vec::new();
    for &(layer, head) in &model.alignment_heads {
        let weights = out
            .cross_attention
            .get(layer)
            .ok_or_else(|| EngineError::internal("an alignment head's layer is missing"))?;
        let source = weights.dim(3)?;
        let used = positions.min(source);
        let w: Vec<f32> = weights
            .get(0)?
            .get(head)?
            .narrow(1, 0, used)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        heads.push(normalise_and_filter(w, t, used));
    }
    let frames = positions.min(heads.first().map_or(0, |h| h.len() / t));
    if heads.is_empty() || frames == 0 {
        return Ok(Vec::new());
    }
    // Mean over heads; the rows that predict the text tokens and the end of text.
    let first = sot_sequence.len();
    let rows = t - 1 - first;
    let mut cost = vec![0f32; rows * frames];
    for h in &heads {
        for r in 0..rows {
            for f in 0..frames {
                cost[r * frames + f] -= h[(first + r) * frames + f] / heads.len() as f32;
            }
        }
    }
    let (text_rows, times) = dtw(&cost, rows, frames);
    let mut jumps = Vec::with_capacity(rows);
    for i in 0..text_rows.len() {
        if i == 0 || text_rows[i] != text_rows[i - 1] {
            jumps.push(times[i] as f64 * SECONDS_PER_POSITION);
        }
    }
    let mut with_end = text.to_vec();
    with_end.push(special.eot);
    let words = split_words(model, &with_end)?;
    if words.len() <= 1 {
        return Ok(Vec::new());
    }
    let mut boundaries = vec![0usize];
    for (_, toks) in &words[..words.len() - 1] {
        boundaries.push(boundaries.last().unwrap_or(&0) + toks.len());
    }
    let mut out = Vec::new();
    for (i, (word, toks)) in words[..words.len() - 1].iter().enumerate() {
        let (Some(&start), Some(&end)) = (jumps.get(boundaries[i]), jumps.get(boundaries[i + 1]))
        else {
            break;
        };
        out.push(Timed {
            word: word.clone(),
            tokens: toks.clone(),
            start,
            end,
        });
    }
    Ok(out)
}

/// One head's `[tokens][frames]` weights standardised over tokens (per frame), then median
/// filtered over frames (reflect padding), as OpenAI does.
fn normalise_and_filter(mut w: Vec<f32>, tokens: usize, frames: usize) -> Vec<f32> {
    for f in 0..frames {
        let mean = (0..tokens).map(|r| w[r * frames + f]).sum::<f32>() / tokens as f32;
        let var = (0..tokens)
            .map(|r| (w[r * frames + f] - mean).powi(2))
            .sum::<f32>()
            / tokens as f32;
        let std = var.sqrt().max(1e-10);
        for r in 0..tokens {
            w[r * frames + f] = (w[r * frames + f] - mean) / std;
        }
    }
    let pad = MEDIAN_WIDTH / 2;
    if frames <= pad {
        return w;
    }
    let mut out = vec![0f32; w.len()];
    let mut window = [0f32; MEDIAN_WIDTH];
    for r in 0..tokens {
        let row = &w[r * frames..(r + 1) * frames];
        for f in 0..frames {
            for (k, slot) in window.iter_mut().enumerate() {
                *slot = row[reflect(f as isize + k as isize - pad as isize, frames)];
            }
            window.sort_by(f32::total_cmp);
            out[r * frames + f] = window[pad];
        }
    }
    out
}

/// The cheapest monotonic path through `cost` (`[rows][cols]`) from the top-left to the
/// bottom-right corner, as (row, column) index lists.
fn dtw(cost: &[f32], rows: usize, cols: usize) -> (Vec<usize>, Vec<usize>) {
    let w = cols + 1;
    let mut acc = vec![f32::INFINITY; (rows + 1) * w];
    let mut trace = vec![0u8; (rows + 1) * w];
    acc[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let c0 = acc[(i - 1) * w + j - 1];
            let c1 = acc[(i - 1) * w + j];
            let c2 = acc[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[i * w + j] = cost[(i - 1) * cols + j - 1] + c;
            trace[i * w + j] = t;
        }
    }
    trace[..=cols].fill(2);
    for i in 0..=rows {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (rows, cols);
    let (mut r, mut c) = (Vec::new(), Vec::new());
    while i > 0 || j > 0 {
        r.push(i.saturating_sub(1));
        c.push(j.saturating_sub(1));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    r.reverse();
    c.reverse();
    (r, c)
}

/// Tokens grouped into words: pieces that decode to whole characters, joined until a piece
/// starts with a space or is punctuation (or is a special token). Languages written without
/// spaces (Chinese, Japanese, Thai, Lao, Burmese, Cantonese) would split per character; the
/// space rule still holds for their Latin text.
fn split_words(
    model: &WhisperModel,
    tokens: &[u32],
) -> Result<Vec<(String, Vec<u32>)>, EngineError> {
    let eot = model.tokenizer.special.eot;
    let mut pieces: Vec<(String, Vec<u32>)> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for &t in tokens {
        if t >= eot {
            if !current.is_empty() {
                let text = model.tokenizer.decode(&current)?;
                pieces.push((text, std::mem::take(&mut current)));
            }
            pieces.push((String::new(), vec![t]));
            continue;
        }
        current.push(t);
        let text = model.tokenizer.decode(&current)?;
        if !text.contains('\u{fffd}') || current.len() >= 8 {
            pieces.push((text, std::mem::take(&mut current)));
        }
    }
    if !current.is_empty() {
        let text = model.tokenizer.decode(&current)?;
        pieces.push((text, current));
    }
    let mut words: Vec<(String, Vec<u32>)> = Vec::new();
    for (text, toks) in pieces {
        let special = toks[0] >= eot;
        let spaced = text.starts_with(' ');
        let trimmed = text.trim();
        let punctuation = !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_punctuation());
        match words.last_mut() {
            Some(last) if !(special || spaced || punctuation) && last.1[0] < eot => {
                last.0.push_str(&text);
                last.1.extend(toks);
            }
            _ => words.push((text, toks)),
        }
    }
    Ok(words)
}

/// Leading punctuation joins the next word, trailing punctuation the previous one.
fn merge_punctuation(words: &mut [Timed]) {
    if words.len() < 2 {
        return;
    }
    let (mut i, mut j) = (words.len() as isize - 2, words.len() - 1);
    while i >= 0 {
        let iu = i as usize;
        let previous = words[iu].word.clone();
        if previous.starts_with(' ') && is_in(PREPENDED, previous.trim()) {
            let tokens = std::mem::take(&mut words[iu].tokens);
            words[j].word = previous + &words[j].word;
            words[j].tokens.splice(0..0, tokens);
            words[iu].word.clear();
        } else {
            j = iu;
        }
        i -= 1;
    }
    let (mut i, mut j) = (0, 1);
    while j < words.len() {
        let following = words[j].word.clone();
        if !words[i].word.ends_with(' ') && is_in(APPENDED, &following) {
            let tokens = std::mem::take(&mut words[j].tokens);
            words[i].word.push_str(&following);
            words[i].tokens.extend(tokens);
            words[j].word.clear();
        } else {
            i = j;
        }
        j += 1;
    }
}

/// Whether `s` is one of the characters of `set` (an empty `s` is not).
fn is_in(set: &str, s: &str) -> bool {
    let mut chars = s.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if set.contains(c))
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // 3 tokens over 6 frames, cheap where token r is spoken (frames 2r, 2r+1).
        let mut cost = vec![1f32; 18];
        for r in 0..3 {
            cost[r * 6 + 2 * r] = 0.0;
            cost[r * 6 + 2 * r + 1] = 0.0;
        }
        let (rows, cols) = dtw(&cost, 3, 6);
        assert_eq!(rows, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(cols, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn punctuation_joins_its_neighbours() {
        let timed = |w: &str, t: u32| Timed {
            word: w.into(),
            tokens: vec![t],
            start: 0.0,
            end: 0.0,
        };
        let mut words = vec![
            timed(" \"", 1),
            timed("Hello", 2),
            timed(",", 3),
            timed(" world", 4),
            timed(".", 5),
        ];
        merge_punctuation(&mut words);
        let texts: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(texts, vec!["", " \"Hello,", "", " world.", ""]);
        assert_eq!(words[1].tokens, vec![1, 2, 3]);
        assert_eq!(words[3].tokens, vec![4, 5]);
    }

    #[test]
    fn the_median_filter_removes_a_spike() {
        // Two token rows, a spike at frame 4 of the first: standardised over the tokens it
        // is +1 / -1 there (0 elsewhere), and the median over 7 frames removes it.
        let mut row = vec![0f32; 10];
        row[4] = 100.0;
        let mut w = row.clone();
        w.extend(vec![0f32; 10]);
        let out = normalise_and_filter(w, 2, 10);
        assert_eq!((out[4], out[14]), (0.0, 0.0), "{out:?}");
    }
}
