//! Audio input for speech-to-text: any supported file's bytes to 16 kHz mono `f32` samples.
//!
//! Formats (decoded by `symphonia`, pure Rust, probed from the bytes, no file name needed):
//! WAV (PCM), FLAC, MP3, OGG/Vorbis and M4A/MP4 AAC. Ogg/Opus is refused with a clear message:
//! symphonia has no Opus decoder.
//!
//! Why 16 kHz mono: Whisper (and most speech models) take 16 kHz single-channel audio, so
//! channels are averaged and the result resampled with `rubato`'s FFT resampler (skipped when
//! the input is 16 kHz already).
//!
//! Limits: audio longer than [`AudioLimits::max_seconds`] is refused as soon as decoding passes
//! the limit (a 10-hour file is never decoded whole); nothing is allocated from a file's declared
//! length, only from the samples actually decoded. Every failure is an
//! [`EngineError::InvalidInput`] naming the problem, never echoing file bytes; the too-long case
//! is told apart by [`is_too_long`] (its message starts with [`TOO_LONG_PREFIX`]).

use std::io::Cursor;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_OPUS};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::EngineError;

/// The sample rate every decoded file is brought to (what Whisper expects).
pub const TARGET_RATE: u32 = 16_000;
/// Default longest audio accepted: one hour. At 16 kHz mono f32 that is 230 MB of samples,
/// the most one request should hold in memory; longer recordings should be split by the client.
pub const MAX_AUDIO_SECONDS: f64 = 3600.0;
/// Highest source sample rate accepted (above any real audio format's, 768 kHz).
pub const MAX_SOURCE_RATE: u32 = 768_000;
/// The start of the too-long error's message (see [`is_too_long`]).
pub const TOO_LONG_PREFIX: &str = "audio is longer than";
const SUPPORTED: &str = "supported: WAV, FLAC, MP3, OGG/Vorbis, M4A/AAC";

/// Limits on one decoded input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioLimits {
    /// Longest audio accepted, in seconds.
    pub max_seconds: f64,
}

impl Default for AudioLimits {
    fn default() -> Self {
        AudioLimits {
            max_seconds: MAX_AUDIO_SECONDS,
        }
    }
}

/// Decoded audio: 16 kHz mono samples in [-1, 1] and what the source was.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    /// 16 kHz mono samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Duration of the audio in seconds.
    pub duration_s: f64,
    /// The source's sample rate.
    pub source_rate: u32,
    /// The source's channel count.
    pub channels: usize,
    /// The source's container/codec, e.g. "MP3".
    pub format: &'static str,
}

/// Why audio could not be decoded. Becomes [`EngineError::InvalidInput`]; the lead maps
/// `TooLong` (recognised again by [`is_too_long`]) to HTTP 413.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioError {
    /// The audio runs past the limit (`seconds`: how far decoding got before stopping).
    TooLong { seconds: f64, limit: f64 },
    /// Anything else wrong with the file.
    Invalid(String),
}

impl std::fmt::Display for AudioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AudioError::TooLong { seconds, limit } => write!(
                f,
                "{TOO_LONG_PREFIX} the limit of {limit} s (at least {seconds:.1} s)"
            ),
            AudioError::Invalid(m) => f.write_str(m),
        }
    }
}

impl From<AudioError> for EngineError {
    fn from(e: AudioError) -> Self {
        EngineError::InvalidInput(e.to_string())
    }
}

/// Whether an error is the too-long refusal of [`decode_to_16k_mono`].
pub fn is_too_long(err: &EngineError) -> bool {
    matches!(err, EngineError::InvalidInput(m) if m.starts_with(TOO_LONG_PREFIX))
}

fn invalid(m: impl Into<String>) -> AudioError {
    AudioError::Invalid(m.into())
}

/// Decodes a whole audio file to 16 kHz mono (see the module doc).
pub fn decode_to_16k_mono(bytes: &[u8], limits: &AudioLimits) -> Result<Pcm, EngineError> {
    // symphonia's decoders index into attacker-controlled bitstreams; a panic on a malformed
    // upload must become a 400 for that request, not take a worker thread down with it.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(bytes, limits))) {
        Ok(r) => Ok(r?),
        Err(_) => Err(invalid("audio file: the decoder failed on malformed data").into()),
    }
}

/// Whether the bytes open like an Ogg stream carrying Opus: the first Ogg page holds the
/// `OpusHead` identification packet (RFC 7845). Used so Opus is named in the refusal even on
/// a path where symphonia itself does not get as far as reporting the codec.
fn looks_like_ogg_opus(bytes: &[u8]) -> bool {
    bytes.starts_with(b"OggS")
        && bytes[..bytes.len().min(512)]
            .windows(8)
            .any(|w| w == b"OpusHead")
}

fn opus_refused() -> AudioError {
    invalid(format!("audio file: Opus is not supported ({SUPPORTED})"))
}

/// Lowest source sample rate accepted. Real formats start at 8 kHz; below ~1 kHz the FFT
/// resampler's output block (16 kHz / gcd per input block) grows into the millions of samples.
pub const MIN_SOURCE_RATE: u32 = 1_000;
/// Consecutive container read errors after which the stream is taken to be over: a reader that
/// fails without advancing would otherwise be retried forever.
const MAX_READ_ERRORS_IN_A_ROW: usize = 16;

fn decode(bytes: &[u8], limits: &AudioLimits) -> Result<Pcm, AudioError> {
    if bytes.is_empty() {
        return Err(invalid("audio is empty (0 bytes)"));
    }
    let opus = looks_like_ogg_opus(bytes);
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    // Gapless: MP3 (LAME/Xing tag) and Ogg (granule positions) then trim the encoder's delay
    // and padding, so durations and timestamps match the original recording.
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let mut format = symphonia::default::get_probe()
        .format(&Hint::new(), mss, &format_opts, &MetadataOptions::default())
        .map_err(|e| match e {
            _ if opus => opus_refused(),
            // IoError: the probe ran out of bytes while scanning for a marker.
            SymError::Unsupported(_) | SymError::IoError(_) => {
                invalid(format!("audio file: unrecognised format ({SUPPORTED})"))
            }
            // A marker was found but its header did not parse: most often noise that happened
            // to contain a marker (MP3's is just two bytes), sometimes a damaged header.
            e => invalid(format!(
                "audio file: unrecognised format or corrupt header ({}; {SUPPORTED})",
                short(&e)
            )),
        })?
        .format;
    let track = format
        .default_track()
        .filter(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .or_else(|| {
            format
                .tracks()
                .iter()
                .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        });
    let Some(track) = track else {
        return Err(if opus {
            opus_refused()
        } else {
            invalid("audio file has no audio track")
        });
    };
    let params = track.codec_params.clone();
    let track_id = track.id;
    if params.codec == CODEC_TYPE_OPUS || opus {
        return Err(opus_refused());
    }
    let name = codec_name(params.codec);
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|_| invalid(format!("audio file: unsupported codec ({SUPPORTED})")))?;

    let mut out: Option<To16k> = None;
    let mut channels = 0usize;
    let mut sample_buf: Option<SampleBuffer<f32>> = None;
    let mut mono: Vec<f32> = Vec::new();
    // Packets of our track that decoded / failed; a lossy stream loses the odd packet to damage
    // and still makes sense, one that fails more often than not is not this codec's audio.
    let (mut good, mut bad) = (0usize, 0usize);
    let mut read_errors_in_a_row = 0usize;
    let mut last_error = String::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // symphonia reports the end of the bytes as an unexpected-EOF I/O error.
            Err(SymError::IoError(_)) => break,
            // A chained Ogg stream (a second recording glued on): keep the first.
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                bad += 1;
                last_error = short(&e);
                read_errors_in_a_row += 1;
                if read_errors_in_a_row >= MAX_READ_ERRORS_IN_A_ROW {
                    break;
                }
                continue;
            }
        };
        read_errors_in_a_row = 0;
        if packet.track_id() != track_id {
            continue;
        }
        // Any decoder error, an I/O one included (a packet shorter than its bitstream says),
        // is one bad packet: the next packet may well decode, so the stream goes on.
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(e) => {
                bad += 1;
                last_error = short(&e);
                continue;
            }
        };
        good += 1;
        let spec = *decoded.spec();
        let ch = spec.channels.count();
        if ch == 0 {
            return Err(invalid("audio file declares 0 channels"));
        }
        match &out {
            None => {
                if !(MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&spec.rate) {
                    return Err(invalid(format!(
                        "audio file: sample rate {} Hz is out of range \
                         ({MIN_SOURCE_RATE}..={MAX_SOURCE_RATE})",
                        spec.rate
                    )));
                }
                out = Some(To16k::new(spec.rate)?);
                channels = ch;
            }
            Some(o) if o.rate != spec.rate || channels != ch => {
                return Err(invalid(
                    "audio file changes sample rate or channels mid-stream",
                ));
            }
            Some(_) => {}
        }
        let frames = decoded.frames();
        if frames == 0 {
            continue;
        }
        // One buffer for the whole stream, regrown only if a packet is bigger than any before:
        // its size comes from decoded packets, never from a header.
        if sample_buf
            .as_ref()
            .is_none_or(|b| b.capacity() < decoded.capacity() * ch)
        {
            sample_buf = None;
        }
        let buf =
            sample_buf.get_or_insert_with(|| SampleBuffer::new(decoded.capacity() as u64, spec));
        buf.copy_interleaved_ref(decoded);
        mono.clear();
        mono.extend(buf.samples().chunks_exact(ch).map(|frame| {
            let s = frame.iter().sum::<f32>() / ch as f32;
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }));
        // Set by the first decoded packet, above.
        let Some(o) = out.as_mut() else {
            continue;
        };
        o.push(&mono)?;
        let seconds = o.seconds_in();
        // A NaN limit refuses rather than disabling the check.
        if seconds > limits.max_seconds || limits.max_seconds.is_nan() {
            return Err(AudioError::TooLong {
                seconds,
                limit: limits.max_seconds,
            });
        }
    }
    let out = match out {
        Some(o) if o.frames_in > 0 => o,
        _ if good == 0 && bad > 0 => {
            return Err(invalid(format!(
                "audio file: unrecognised format or corrupt {name} stream \
                 (no packet decoded: {last_error})"
            )))
        }
        _ => return Err(invalid("audio file contains no audio samples")),
    };
    if bad > good {
        return Err(invalid(format!(
            "audio file: corrupt {name} stream ({bad} of {} packets undecodable: {last_error})",
            good + bad
        )));
    }
    let duration_s = out.seconds_in();
    let source_rate = out.rate;
    let samples = out.finish()?;
    Ok(Pcm {
        samples,
        duration_s,
        source_rate,
        channels,
        format: name,
    })
}

/// The first line of a symphonia error, without any file content.
fn short(e: &SymError) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(120)
        .collect()
}

fn codec_name(codec: symphonia::core::codecs::CodecType) -> &'static str {
    use symphonia::core::codecs::*;
    match codec {
        CODEC_TYPE_FLAC => "FLAC",
        CODEC_TYPE_MP3 => "MP3",
        CODEC_TYPE_VORBIS => "OGG/Vorbis",
        CODEC_TYPE_AAC => "AAC",
        // PCM: WAV is the only enabled container that carries it (and no other codec is
        // enabled, so nothing else gets this far).
        _ => "WAV",
    }
}

fn resample_error(e: &dyn std::fmt::Display) -> AudioError {
    invalid(format!("audio file: cannot resample ({e})"))
}

/// Streaming conversion of mono source-rate samples to [`TARGET_RATE`]: samples are resampled
/// as they are decoded, so only the 16 kHz result is held (an hour of 48 kHz audio would
/// otherwise sit in memory three times over before resampling).
struct To16k {
    rate: u32,
    /// `None` when the source is 16 kHz already.
    rs: Option<FftFixedIn<f32>>,
    /// Source samples not yet fed (less than one resampler chunk).
    pending: Vec<f32>,
    /// Scratch output of one resampler call.
    chunk_out: Vec<f32>,
    /// Resampler output still to drop: its delay, so output sample 0 is input time 0.
    skip: usize,
    out: Vec<f32>,
    frames_in: u64,
}

impl To16k {
    fn new(rate: u32) -> Result<Self, AudioError> {
        let rs = if rate == TARGET_RATE {
            None
        } else {
            // FftFixedIn works in FFT blocks of a multiple of rate/gcd input frames; a chunk
            // of at least two such blocks' worth (sub_chunks = 2) makes every call emit output,
            // which the end-of-stream flush below relies on. 44.1 kHz: 441-frame blocks.
            let block = (rate / gcd(rate, TARGET_RATE)) as usize;
            let chunk = 1024.max(2 * block);
            Some(
                FftFixedIn::<f32>::new(rate as usize, TARGET_RATE as usize, chunk, 2, 1)
                    .map_err(|e| resample_error(&e))?,
            )
        };
        let skip = rs.as_ref().map_or(0, |r| r.output_delay());
        let chunk_out = vec![0.0; rs.as_ref().map_or(0, |r| r.output_frames_max())];
        Ok(To16k {
            rate,
            rs,
            pending: Vec::new(),
            chunk_out,
            skip,
            out: Vec::new(),
            frames_in: 0,
        })
    }

    fn seconds_in(&self) -> f64 {
        self.frames_in as f64 / self.rate as f64
    }

    fn push(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.frames_in += samples.len() as u64;
        let Some(rs) = self.rs.as_mut() else {
            self.out.extend_from_slice(samples);
            return Ok(());
        };
        self.pending.extend_from_slice(samples);
        let n = rs.input_frames_next();
        let mut pos = 0;
        while self.pending.len() - pos >= n {
            let (_, got) = rs
                .process_into_buffer(
                    &[&self.pending[pos..pos + n]],
                    &mut [&mut self.chunk_out],
                    None,
                )
                .map_err(|e| resample_error(&e))?;
            keep(&mut self.out, &mut self.skip, &self.chunk_out[..got]);
            pos += n;
        }
        self.pending.drain(..pos);
        Ok(())
    }

    /// Flushes the resampler and returns exactly `round(frames_in * 16000 / rate)` samples.
    fn finish(mut self) -> Result<Vec<f32>, AudioError> {
        let Some(rs) = self.rs.as_mut() else {
            return Ok(self.out);
        };
        let want = (self.frames_in as f64 * TARGET_RATE as f64 / self.rate as f64).round() as usize;
        // The last partial chunk (zero-padded by rubato). Skipped when empty: rubato rejects an
        // empty input slice as too short rather than padding it.
        if !self.pending.is_empty() {
            let (_, got) = rs
                .process_partial_into_buffer(
                    Some(&[&self.pending[..]]),
                    &mut [&mut self.chunk_out],
                    None,
                )
                .map_err(|e| resample_error(&e))?;
            keep(&mut self.out, &mut self.skip, &self.chunk_out[..got]);
        }
        // Then zeros until the delayed tail is out. Each call emits at least one FFT block
        // (see `new`), and delay + held input is under two chunks, so a few calls suffice;
        // the bound is only against an arithmetic slip looping forever.
        for _ in 0..16 {
            if self.out.len() >= want {
                break;
            }
            let (_, got) = rs
                .process_partial_into_buffer(None::<&[&[f32]]>, &mut [&mut self.chunk_out], None)
                .map_err(|e| resample_error(&e))?;
            keep(&mut self.out, &mut self.skip, &self.chunk_out[..got]);
        }
        debug_assert!(self.out.len() >= want, "resampler flush came up short");
        self.out.resize(want, 0.0);
        for s in &mut self.out {
            // The FFT filter rings slightly past full scale on clipped input.
            *s = s.clamp(-1.0, 1.0);
        }
        Ok(self.out)
    }
}

/// Appends resampler output, first dropping what is left of the delay.
fn keep(out: &mut Vec<f32>, skip: &mut usize, got: &[f32]) {
    let k = (*skip).min(got.len());
    *skip -= k;
    out.extend_from_slice(&got[k..]);
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Writes 16 kHz mono samples as a 16-bit PCM WAV file (samples clamped to [-1, 1]).
pub fn pcm_to_wav_16k(samples: &[f32]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::with_capacity(44 + samples.len() * 2);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&TARGET_RATE.to_le_bytes());
    w.extend_from_slice(&(TARGET_RATE * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16;
        w.extend_from_slice(&v.to_le_bytes());
    }
    w
}
