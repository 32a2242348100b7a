//! Speech-to-text: the typed request of `/v1/audio/transcriptions` and `/translations` (parsed
//! once from OpenAI's multipart form), what a worker answers, and OpenAI's response shapes
//! (`json`, `text`, `srt`, `vtt`, `verbose_json`).

use serde::{Deserialize, Serialize};

use crate::worker::WorkerError;

/// Transcribe in the spoken language, or translate into English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AudioTask {
    Transcribe,
    Translate,
}

impl AudioTask {
    /// OpenAI's `task` value in `verbose_json`.
    pub fn as_str(self) -> &'static str {
        match self {
            AudioTask::Transcribe => "transcribe",
            AudioTask::Translate => "translate",
        }
    }
}

/// The answer's format (`response_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl TranscriptFormat {
    pub const NAMES: &'static str = "json, text, srt, verbose_json, vtt";

    pub fn parse(s: &str) -> Option<TranscriptFormat> {
        Some(match s {
            "json" => TranscriptFormat::Json,
            "text" => TranscriptFormat::Text,
            "srt" => TranscriptFormat::Srt,
            "vtt" => TranscriptFormat::Vtt,
            "verbose_json" => TranscriptFormat::VerboseJson,
            _ => return None,
        })
    }
}

/// What a worker is asked to transcribe: the audio file's bytes (any supported format; the
/// worker decodes it) and the options.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscribeRequest {
    /// The file, base64 in JSON on the internal API.
    #[serde(with = "base64_bytes")]
    pub audio: Vec<u8>,
    pub task: AudioTask,
    /// An ISO-639-1 code; `None` detects the language.
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    /// 0..=1; 0 is greedy with fallback to higher temperatures on a bad window.
    #[serde(default)]
    pub temperature: f32,
    /// Word-level timestamps (`timestamp_granularities[]=word`).
    #[serde(default)]
    pub word_timestamps: bool,
}

/// A word with its time (`verbose_json` `words`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// A timed segment (`verbose_json` `segments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptSegment {
    pub id: usize,
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
    /// The segment's words, when asked for (not part of OpenAI's segment: they are moved to the
    /// response's top-level `words`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<TranscriptWord>,
}

/// The end of a transcription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptSummary {
    pub text: String,
    /// The language's English name ("english"), as OpenAI reports it.
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
}

/// What a transcription stream yields: segments as they are decoded, then the summary or an
/// error.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub enum TranscribeEvent {
    Segment(TranscriptSegment),
    Done(TranscriptSummary),
    Error(WorkerError),
}

/// Events of one transcription; dropping it stops the work (within one token).
pub type TranscribeStream =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = TranscribeEvent> + Send>>;

/// OpenAI's `json` answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptionJson {
    pub text: String,
}

/// OpenAI's `verbose_json` answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptionVerbose {
    pub task: String,
    pub language: String,
    pub duration: f64,
    pub text: String,
    pub segments: Vec<TranscriptSegment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<TranscriptWord>>,
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT).
fn clock(seconds: f64, separator: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

/// The segments as SubRip subtitles.
pub fn to_srt(segments: &[TranscriptSegment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        out.push_str(&format!(
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            clock(s.start, ','),
            clock(s.end, ','),
            s.text.trim()
        ));
    }
    out
}

/// The segments as WebVTT subtitles.
pub fn to_vtt(segments: &[TranscriptSegment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            clock(s.start, '.'),
            clock(s.end, '.'),
            s.text.trim()
        ));
    }
    out
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("audio is not valid base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(start: f64, end: f64, text: &str) -> TranscriptSegment {
        TranscriptSegment {
            id: 0,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![],
            temperature: 0.0,
            avg_logprob: -0.2,
            compression_ratio: 1.2,
            no_speech_prob: 0.01,
            words: vec![],
        }
    }

    #[test]
    fn subtitles_have_the_formats_players_read() {
        let segments = [
            segment(0.0, 2.5, " Hello there."),
            segment(3661.02, 3662.999, " Bye."),
        ];
        assert_eq!(
            to_srt(&segments),
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,020 --> 01:01:02,999\nBye.\n\n"
        );
        assert_eq!(
            to_vtt(&segments),
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n01:01:01.020 --> 01:01:02.999\nBye.\n\n"
        );
    }

    #[test]
    fn audio_travels_as_base64_and_bad_base64_is_refused() {
        let req = TranscribeRequest {
            audio: vec![0, 1, 2, 255],
            task: AudioTask::Translate,
            language: None,
            prompt: None,
            temperature: 0.0,
            word_timestamps: false,
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["audio"], "AAEC/w==");
        assert_eq!(json["task"], "translate");
        let back: TranscribeRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back.audio, vec![0, 1, 2, 255]);
        let bad = serde_json::json!({"audio": "!!", "task": "transcribe"});
        let err = serde_json::from_value::<TranscribeRequest>(bad).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
    }

    #[test]
    fn formats_parse_by_openai_names() {
        for name in ["json", "text", "srt", "vtt", "verbose_json"] {
            assert!(TranscriptFormat::parse(name).is_some(), "{name}");
            assert!(TranscriptFormat::NAMES.contains(name));
        }
        assert_eq!(TranscriptFormat::parse("xml"), None);
    }
}
