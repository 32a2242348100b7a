//! Speech-to-text: `POST /v1/audio/transcriptions` and `/v1/audio/translations`, OpenAI's
//! multipart forms (`file`, `model`, `language`, `prompt`, `response_format`, `temperature`,
//! `timestamp_granularities[]`, `stream`, and upstream Xinference's `kwargs`).
//!
//! The form is parsed once, here, into a [`TranscribeRequest`]; the audio itself is decoded by
//! the worker (400 for a file it cannot read, 413 for audio over its length limit). The whole
//! form may be at most `--max-body-bytes`; its text fields at most [`MAX_FIELD_BYTES`] each.

use actix_multipart::Multipart;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};
use xi_api::audio::{
    to_srt, to_vtt, AudioTask, TranscribeEvent, TranscribeRequest, TranscriptFormat,
    TranscriptionVerbose,
};
use xi_api::models::ModelType;

use super::inference::resolve;
use crate::authz::{ModelsRead, Require};
use crate::error::SupervisorError;
use crate::state::AppState;

/// Longest text field (a prompt is at most a few hundred tokens).
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Most form fields accepted.
const MAX_FIELDS: usize = 32;

fn bad(message: impl Into<String>) -> SupervisorError {
    SupervisorError::BadRequest(message.into())
}

/// The multipart form of both audio routes, as OpenAI's SDK sends it (what the OpenAPI
/// document shows; [`parse_form`] reads the fields).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct TranscriptionForm {
    /// The audio: WAV, FLAC, MP3, Ogg Vorbis or M4A/AAC.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// The uid of a running audio model.
    model: String,
    /// ISO 639-1 code; detected when absent (transcriptions only).
    language: Option<String>,
    /// Text the speech continues from (names, spellings).
    prompt: Option<String>,
    /// `json` (default), `text`, `srt`, `verbose_json` or `vtt`.
    response_format: Option<String>,
    /// 0 (default: greedy, with fallback) to 1.
    temperature: Option<f64>,
    /// `word` and/or `segment`, with `verbose_json`.
    #[schema(rename = "timestamp_granularities[]")]
    timestamp_granularities: Option<Vec<String>>,
    /// Server-Sent Events of the text as it is recognised.
    stream: Option<bool>,
}

/// A parsed form.
struct Form {
    model: String,
    request: TranscribeRequest,
    format: TranscriptFormat,
    stream: bool,
    /// `timestamp_granularities[]` asked for words.
    request_words: bool,
}

#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    tag = "inference",
    summary = "Transcribe speech (OpenAI's audio API)",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcript in `response_format` (json, text, srt, verbose_json, vtt), or Server-Sent Events with `stream`", content((Object = "application/json"), (String = "text/plain"), (String = "text/event-stream"))),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
        (status = 413, description = "The file is too large", body = xi_api::ErrorBody),
        (status = 503, description = "The model is still loading (`Retry-After`)", body = xi_api::ErrorBody),
    )
)]
pub async fn transcriptions(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, SupervisorError> {
    serve(AudioTask::Transcribe, require, state, req, payload).await
}

#[utoipa::path(
    post,
    path = "/v1/audio/translations",
    tag = "inference",
    summary = "Translate speech into English text",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The English translation in `response_format`", content((Object = "application/json"), (String = "text/plain"), (String = "text/event-stream"))),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
        (status = 413, description = "The file is too large", body = xi_api::ErrorBody),
        (status = 503, description = "The model is still loading (`Retry-After`)", body = xi_api::ErrorBody),
    )
)]
pub async fn translations(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, SupervisorError> {
    serve(AudioTask::Translate, require, state, req, payload).await
}

async fn serve(
    task: AudioTask,
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, SupervisorError> {
    let form = read_form(task, &req, payload, state.config.max_body_bytes).await?;
    let ability = match task {
        AudioTask::Transcribe => "audio transcriptions",
        AudioTask::Translate => "audio translations",
    };
    let entry = resolve(
        &state,
        &require.caller,
        &json!({ "model": form.model }),
        ModelType::Audio,
        ability,
    )?;
    let request = form.request;
    let (_, events) = state
        .cluster
        .dispatch(&entry, |replica, worker| {
            let request = request.clone();
            async move { worker.transcribe(replica, request).await }
        })
        .await?;
    if form.stream {
        return Ok(streamed(events));
    }
    let mut segments = Vec::new();
    let mut events = events;
    let summary = loop {
        match events.next().await {
            Some(TranscribeEvent::Segment(s)) => segments.push(s),
            Some(TranscribeEvent::Done(summary)) => break summary,
            Some(TranscribeEvent::Error(e)) => return Err(e.into()),
            None => {
                return Err(SupervisorError::internal(
                    "a transcription stream ended without its summary",
                ))
            }
        }
    };
    let text_body = |body: String| {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(body)
    };
    Ok(match form.format {
        TranscriptFormat::Json => HttpResponse::Ok().json(json!({
            "text": summary.text,
            "usage": { "type": "duration", "seconds": summary.duration.ceil() as u64 },
        })),
        TranscriptFormat::Text => text_body(format!("{}\n", summary.text)),
        TranscriptFormat::Srt => text_body(to_srt(&segments)),
        TranscriptFormat::Vtt => text_body(to_vtt(&segments)),
        TranscriptFormat::VerboseJson => {
            // OpenAI lists the words at the top level, not in their segments.
            let words = form.request_words.then(|| {
                segments
                    .iter_mut()
                    .flat_map(|s| std::mem::take(&mut s.words))
                    .collect()
            });
            HttpResponse::Ok().json(TranscriptionVerbose {
                task: task.as_str().to_string(),
                language: summary.language,
                duration: summary.duration,
                text: summary.text,
                segments,
                words,
            })
        }
    })
}

/// Segments as OpenAI's streamed transcription events: a `transcript.text.delta` per segment
/// (with the segment's times), then `transcript.text.done` with the whole text, or an
/// `error` event. The connection closing stops the work on the worker.
fn streamed(events: xi_api::audio::TranscribeStream) -> HttpResponse {
    let frames = events.map(|event| {
        let value = match event {
            TranscribeEvent::Segment(s) => json!({
                "type": "transcript.text.delta",
                "delta": s.text,
                "segment": { "id": s.id, "start": s.start, "end": s.end },
            }),
            TranscribeEvent::Done(summary) => json!({
                "type": "transcript.text.done",
                "text": summary.text,
                "language": summary.language,
                "duration": summary.duration,
            }),
            TranscribeEvent::Error(e) => {
                let status = SupervisorError::from(e).client_detail();
                json!({ "type": "error", "error": { "message": status } })
            }
        };
        Ok::<_, actix_web::Error>(Bytes::from(format!("data: {value}\n\n")))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(frames)
}

async fn read_form(
    task: AudioTask,
    req: &HttpRequest,
    payload: web::Payload,
    max_bytes: usize,
) -> Result<Form, SupervisorError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("multipart/form-data") {
        return Err(bad(
            "expected a multipart/form-data body with the audio in a field named 'file'",
        ));
    }
    let mut multipart = Multipart::new(req.headers(), payload);
    let mut file: Option<Vec<u8>> = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut total = 0usize;
    let mut count = 0usize;
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(|e| bad(format!("malformed multipart body: {e}")))?;
        count += 1;
        if count > MAX_FIELDS {
            return Err(bad(format!("at most {MAX_FIELDS} form fields")));
        }
        let name = field.name().unwrap_or_default().to_string();
        let is_file = name == "file";
        let limit = if is_file { max_bytes } else { MAX_FIELD_BYTES };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| bad(format!("malformed multipart body: {e}")))?;
            total += chunk.len();
            if total > max_bytes {
                return Err(SupervisorError::PayloadTooLarge(format!(
                    "the request body is larger than the limit of {max_bytes} bytes (--max-body-bytes)"
                )));
            }
            if bytes.len() + chunk.len() > limit {
                return Err(bad(format!(
                    "form field '{name}' is longer than {limit} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if is_file {
            file = Some(bytes);
        } else {
            let text = String::from_utf8(bytes)
                .map_err(|_| bad(format!("form field '{name}' is not UTF-8 text")))?;
            fields.push((name, text));
        }
    }
    parse_form(task, file, &fields)
}

/// The typed request of a form's fields (the rules of the module doc).
fn parse_form(
    task: AudioTask,
    file: Option<Vec<u8>>,
    fields: &[(String, String)],
) -> Result<Form, SupervisorError> {
    let get = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let audio = file.ok_or_else(|| {
        SupervisorError::Unprocessable("Field required: file (the audio file)".into())
    })?;
    if audio.is_empty() {
        return Err(bad("the audio file is empty"));
    }
    let model = get("model")
        .ok_or_else(|| {
            SupervisorError::Unprocessable("Field required: model (the model uid)".into())
        })?
        .to_string();
    let format = match get("response_format") {
        None => TranscriptFormat::Json,
        Some(f) => TranscriptFormat::parse(f).ok_or_else(|| {
            bad(format!(
                "response_format must be one of {}, got {f:?}",
                TranscriptFormat::NAMES
            ))
        })?,
    };
    let temperature = match get("temperature") {
        None => 0.0,
        Some(t) => match t.parse::<f32>() {
            Ok(v) if (0.0..=1.0).contains(&v) => v,
            _ => {
                return Err(bad(format!(
                    "temperature must be a number from 0 to 1, got {t:?}"
                )))
            }
        },
    };
    let stream = match get("stream") {
        None => false,
        Some(s) if s.eq_ignore_ascii_case("true") => true,
        Some(s) if s.eq_ignore_ascii_case("false") => false,
        Some(s) => return Err(bad(format!("stream must be true or false, got {s:?}"))),
    };
    let mut word_timestamps = false;
    for (key, value) in fields {
        if key != "timestamp_granularities[]" && key != "timestamp_granularities" {
            continue;
        }
        match value.trim() {
            "segment" => {}
            "word" => word_timestamps = true,
            other => {
                return Err(bad(format!(
                    "timestamp_granularities[] takes word or segment, got {other:?}"
                )))
            }
        }
    }
    if word_timestamps && format != TranscriptFormat::VerboseJson {
        return Err(bad(
            "timestamp_granularities[] needs response_format=verbose_json",
        ));
    }
    if let Some(kwargs) = get("kwargs") {
        match serde_json::from_str::<Value>(kwargs) {
            Ok(Value::Object(_)) | Ok(Value::Null) => {}
            _ => return Err(bad("kwargs must be a JSON object")),
        }
    }
    let language = get("language").map(str::to_string);
    Ok(Form {
        model,
        request: TranscribeRequest {
            audio,
            task,
            language,
            prompt: get("prompt").map(str::to_string),
            temperature,
            word_timestamps,
        },
        format,
        stream,
        request_words: word_timestamps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn detail(e: SupervisorError) -> String {
        e.to_string()
    }

    #[test]
    fn a_form_parses_into_the_typed_request() {
        let form = parse_form(
            AudioTask::Transcribe,
            Some(vec![1, 2, 3]),
            &fields(&[
                ("model", "w1"),
                ("language", "en"),
                ("prompt", "Kubernetes"),
                ("response_format", "srt"),
                ("temperature", "0.4"),
                ("stream", "true"),
                ("timestamp_granularities[]", "segment"),
                ("kwargs", "{}"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(form.model, "w1");
        assert_eq!(form.format, TranscriptFormat::Srt);
        assert!(form.stream);
        assert_eq!(form.request.language.as_deref(), Some("en"));
        assert_eq!(form.request.prompt.as_deref(), Some("Kubernetes"));
        assert!((form.request.temperature - 0.4).abs() < 1e-6);
        assert_eq!(form.request.audio, vec![1, 2, 3]);
    }

    #[test]
    fn bad_fields_are_refused_naming_them() {
        let audio = || Some(vec![0u8; 4]);
        type Case<'a> = (Option<Vec<u8>>, Vec<(String, String)>, &'a str);
        let cases: Vec<Case> = vec![
            (None, fields(&[("model", "m")]), "Field required: file"),
            (
                Some(vec![]),
                fields(&[("model", "m")]),
                "audio file is empty",
            ),
            (audio(), fields(&[]), "Field required: model"),
            (
                audio(),
                fields(&[("model", "m"), ("response_format", "xml")]),
                "response_format must be one of",
            ),
            (
                audio(),
                fields(&[("model", "m"), ("temperature", "2")]),
                "temperature must be a number from 0 to 1",
            ),
            (
                audio(),
                fields(&[("model", "m"), ("temperature", "warm")]),
                "temperature must be",
            ),
            (
                audio(),
                fields(&[("model", "m"), ("stream", "yes")]),
                "stream must be true or false",
            ),
            (
                audio(),
                fields(&[("model", "m"), ("timestamp_granularities[]", "char")]),
                "takes word or segment",
            ),
            (
                audio(),
                fields(&[("model", "m"), ("timestamp_granularities[]", "word")]),
                "needs response_format=verbose_json",
            ),
            (
                audio(),
                fields(&[("model", "m"), ("kwargs", "[1]")]),
                "kwargs must be a JSON object",
            ),
        ];
        for (file, f, needle) in cases {
            let err = parse_form(AudioTask::Transcribe, file, &f)
                .err()
                .map(detail);
            assert!(
                err.as_deref().is_some_and(|e| e.contains(needle)),
                "{f:?}: {err:?}"
            );
        }
    }
}
