//! Speech-to-text through the real binary with auth on: Whisper tiny.en (real weights) behind
//! `/v1/audio/transcriptions` and `/translations` in every response format, streamed, and the
//! refusals (bad files, over-long audio, over-large bodies, wrong models, missing permissions).

use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;
use xi_testkit::{speech, whisper_tiny_en, word_error_rate, SENTENCES};

use crate::support::{config, post, sse_events, token, write_json, Local};

/// A route, its form fields, the file, the status wanted and a piece of its detail.
type Refusal<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<&'a [u8]>,
    u16,
    &'a str,
);

const BOUNDARY: &str = "xi-e2e-boundary-7f3a9c";

/// A multipart/form-data body: text `fields`, then `file` (if any) as the `file` field.
fn form(fields: &[(&str, &str)], file: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some(file) = file {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn send(
    client: &Client,
    url: String,
    auth: Option<&str>,
    fields: &[(&str, &str)],
    file: Option<&[u8]>,
) -> (u16, String, String) {
    let mut req = client
        .post(url)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form(fields, file));
    if let Some(auth) = auth {
        req = req.bearer_auth(auth);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, res.text().await.unwrap())
}

fn detail(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail: {body}"))
        .to_string()
}

#[tokio::test]
async fn whisper_transcribes_in_every_format_with_auth_and_limits() {
    let dir = TempDir::new().unwrap();
    let auth_path = dir.path().join("auth.json");
    write_json(
        &auth_path,
        &config(json!([
            { "username": "admin", "password": "admin-pass-123", "permissions": ["admin"] },
            { "username": "reader", "password": "reader-pass-1", "permissions": ["models:list", "models:read"] },
            { "username": "lister", "password": "lister-pass-1", "permissions": ["models:list"] },
        ])),
    );
    let local = Local::start(
        &dir.path().join("home"),
        &[
            "--auth-config",
            auth_path.to_str().unwrap(),
            "--max-audio-seconds",
            "12",
            "--max-body-bytes",
            "3000000",
        ],
    );
    let client = Client::new();
    let admin = token(&client, &local.url, "admin", "admin-pass-123").await;
    let reader = token(&client, &local.url, "reader", "reader-pass-1").await;
    let lister = token(&client, &local.url, "lister", "lister-pass-1").await;

    let launch = json!({
        "model_uid": "stt", "model_name": "whisper-tiny.en", "model_type": "audio",
        "model_path": whisper_tiny_en(),
    });
    let (status, body) = post(
        &client,
        local.url("/v1/models"),
        Some(&reader),
        launch.clone(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post(&client, local.url("/v1/models"), Some(&admin), launch).await;
    assert_eq!((status, &body), (200, &json!({ "model_uid": "stt" })));
    let res = client
        .get(local.url("/v1/models/stt"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let described: Value = res.json().await.unwrap();
    assert_eq!(described["model_type"], "audio", "{described}");
    assert_eq!(described["model_ability"], json!(["audio2text"]));

    let sentence = SENTENCES[4];
    let wav = speech(sentence);
    let url = local.url("/v1/audio/transcriptions");

    // Permissions: none is 401, models:list alone is 403.
    let (status, _, body) = send(&client, url.clone(), None, &[("model", "stt")], Some(&wav)).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = send(
        &client,
        url.clone(),
        Some(&lister),
        &[("model", "stt")],
        Some(&wav),
    )
    .await;
    assert_eq!(
        (status, detail(&body).as_str()),
        (403, "Not enough permissions")
    );

    // json (the default): the text and OpenAI's duration usage.
    let (status, _, body) = send(
        &client,
        url.clone(),
        Some(&reader),
        &[("model", "stt")],
        Some(&wav),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let text = json["text"].as_str().unwrap().to_string();
    let wer = word_error_rate(sentence, &text);
    assert!(wer < 0.2, "{text:?}: {wer}");
    assert_eq!(json["usage"]["type"], "duration");
    assert!(json["usage"]["seconds"].as_u64().unwrap() >= 3);

    // verbose_json: segments with times inside the audio.
    let (status, _, body) = send(
        &client,
        url.clone(),
        Some(&reader),
        &[
            ("model", "stt"),
            ("response_format", "verbose_json"),
            ("language", "en"),
        ],
        Some(&wav),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let verbose: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(verbose["task"], "transcribe");
    assert_eq!(verbose["language"], "english");
    assert_eq!(verbose["text"], text.as_str());
    let duration = verbose["duration"].as_f64().unwrap();
    let segments = verbose["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    for s in segments {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(start >= 0.0 && start <= end && end <= duration + 0.5, "{s}");
        assert!(
            s["tokens"].as_array().is_some() && s["avg_logprob"].as_f64().is_some(),
            "{s}"
        );
    }

    // Word timestamps (verbose_json only): OpenAI's top-level `words`, spelling the text.
    let (status, _, body) = send(
        &client,
        url.clone(),
        Some(&reader),
        &[
            ("model", "stt"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
        ],
        Some(&wav),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let timed: Value = serde_json::from_str(&body).unwrap();
    let words = timed["words"].as_array().unwrap();
    let spelled: String = words.iter().map(|w| w["word"].as_str().unwrap()).collect();
    assert_eq!(spelled.trim(), text);
    assert!(words
        .iter()
        .all(|w| w["start"].as_f64() <= w["end"].as_f64()));
    assert!(
        timed["segments"][0].get("words").is_none(),
        "words are top-level only"
    );
    assert!(verbose.get("words").is_none(), "no words unless asked");

    // text, srt, vtt.
    let (status, content_type, body) = send(
        &client,
        url.clone(),
        Some(&reader),
        &[("model", "stt"), ("response_format", "text")],
        Some(&wav),
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"));
    assert_eq!(body.trim(), text);
    let (_, _, srt) = send(
        &client,
        url.clone(),
        Some(&reader),
        &[("model", "stt"), ("response_format", "srt")],
        Some(&wav),
    )
    .await;
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert!(srt.contains(" --> ") && srt.contains(','), "{srt}");
    let (_, _, vtt) = send(
        &client,
        url.clone(),
        Some(&reader),
        &[("model", "stt"), ("response_format", "vtt")],
        Some(&wav),
    )
    .await;
    assert!(vtt.starts_with("WEBVTT\n\n00:"), "{vtt}");

    // Streamed: a delta per segment, then the whole text.
    let (status, content_type, body) = send(
        &client,
        url.clone(),
        Some(&reader),
        &[("model", "stt"), ("stream", "true")],
        Some(&wav),
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/event-stream"));
    let events = sse_events(&body);
    let (last, deltas) = events.split_last().unwrap();
    assert_eq!(last["type"], "transcript.text.done", "{body}");
    assert_eq!(last["text"], text.as_str());
    assert_eq!(deltas.len(), segments.len());
    assert!(deltas.iter().all(|d| d["type"] == "transcript.text.delta"));

    // Refusals, each a {"detail"} with the right status.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let long: Vec<u8> = {
        // Five sentences, ~22 s: over the 12 s limit.
        let mut all = Vec::new();
        for s in SENTENCES {
            let pcm =
                xi_engine::audio::decode_to_16k_mono(&speech(s), &Default::default()).unwrap();
            all.extend(pcm.samples);
        }
        xi_engine::audio::pcm_to_wav_16k(&all)
    };
    let huge = vec![0u8; 3_100_000];
    let cases: Vec<Refusal> = vec![
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt")],
            Some(&noise),
            400,
            "unrecognised format",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt")],
            Some(&long),
            413,
            "audio is longer than the limit of 12 s",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt")],
            Some(&huge),
            413,
            "--max-body-bytes",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt")],
            None,
            422,
            "Field required: file",
        ),
        (
            "/v1/audio/transcriptions",
            vec![],
            Some(&wav),
            422,
            "Field required: model",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "ghost")],
            Some(&wav),
            404,
            "Model not found",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt"), ("response_format", "mp4")],
            Some(&wav),
            400,
            "response_format",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt"), ("timestamp_granularities[]", "word")],
            Some(&wav),
            400,
            "needs response_format=verbose_json",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt"), ("temperature", "7")],
            Some(&wav),
            400,
            "temperature",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt"), ("language", "klingon")],
            Some(&wav),
            400,
            "language",
        ),
        (
            "/v1/audio/transcriptions",
            vec![("model", "stt"), ("language", "de")],
            Some(&wav),
            400,
            "English-only",
        ),
        (
            "/v1/audio/translations",
            vec![("model", "stt")],
            Some(&wav),
            400,
            "English-only",
        ),
    ];
    for (path, fields, file, want, needle) in cases {
        let (status, _, body) = send(&client, local.url(path), Some(&reader), &fields, file).await;
        assert_eq!(status, want, "{path} {fields:?}: {body}");
        let d = detail(&body);
        assert!(d.contains(needle), "{path} {fields:?}: {d}");
    }
    // Not multipart at all.
    let (status, body) = post(
        &client,
        url.clone(),
        Some(&reader),
        json!({ "model": "stt" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // The server still serves after all of that.
    let (status, _, _) = send(&client, url, Some(&reader), &[("model", "stt")], Some(&wav)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_registered_audio_model_launches_by_name() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("home"), &[]);
    let client = Client::new();
    // Upstream's flat shape: model_uri at the top level.
    let definition = json!({
        "model_name": "my-whisper", "model_family": "whisper", "multilingual": false,
        "model_uri": whisper_tiny_en(),
    });
    let (status, body) = post(
        &client,
        local.url("/v1/model_registrations/audio"),
        None,
        json!({ "model": definition.to_string(), "persist": false }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = client
        .get(local.url("/v1/model_registrations/audio"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["model_name"].as_str())
        .collect();
    assert!(
        names.contains(&"my-whisper") && names.contains(&"whisper-large-v3"),
        "{names:?}"
    );
    let (status, body) = post(
        &client,
        local.url("/v1/models"),
        None,
        json!({ "model_uid": "mine", "model_name": "my-whisper", "model_type": "audio" }),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({ "model_uid": "mine" })));
    let wav = speech(SENTENCES[4]);
    let (status, _, body) = send(
        &client,
        local.url("/v1/audio/transcriptions"),
        None,
        &[("model", "mine")],
        Some(&wav),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("weather today is sunny"), "{body}");

    // A definition that is not a speech model is refused naming the field.
    for (bad, needle) in [
        (
            json!({ "model_name": "x", "model_family": "sensevoice", "model_uri": whisper_tiny_en() }),
            "model_family",
        ),
        (
            json!({ "model_name": "x", "model_ability": ["text2audio"], "model_uri": whisper_tiny_en() }),
            "model_ability",
        ),
        (
            json!({ "model_name": "x", "multilingual": "yes", "model_uri": whisper_tiny_en() }),
            "multilingual",
        ),
        (json!({ "model_name": "x" }), "model_specs"),
    ] {
        let (status, body) = post(
            &client,
            local.url("/v1/model_registrations/audio"),
            None,
            json!({ "model": bad.to_string(), "persist": false }),
        )
        .await;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(needle),
            "{bad} -> {body}"
        );
    }
}
