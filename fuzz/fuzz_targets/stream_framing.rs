//! Stream framing (the worker's NDJSON to the supervisor, Server-Sent Events to clients): the
//! messages are the same however the stream is cut into chunks, and the buffer stays bounded.
//! The first byte seeds the chunk sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xi_api::framing::{FrameError, LineFramer, SseEvent, SseFramer};

const LIMIT: usize = 256;

fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut state = u32::from(seed) | 1;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % 7 + 1).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

fn lines(parts: &[&[u8]]) -> (Vec<Result<Vec<u8>, FrameError>>, Vec<u8>) {
    let mut framer = LineFramer::new(LIMIT);
    let mut out = Vec::new();
    for part in parts {
        framer.push(part);
        while let Some(line) = framer.next_line() {
            out.push(line);
        }
    }
    (out, framer.rest().to_vec())
}

fn events(parts: &[&[u8]]) -> Vec<Result<SseEvent, FrameError>> {
    let mut framer = SseFramer::new(LIMIT);
    let mut out = Vec::new();
    for part in parts {
        framer.push(part);
        while let Some(event) = framer.next_event() {
            if let Ok(e) = &event {
                assert!(e.data.len() <= LIMIT);
            }
            out.push(event);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let parts = chunks(body, seed);
    let (whole, whole_rest) = lines(&[body]);
    let (cut, cut_rest) = lines(&parts);
    // A line past the limit is found as soon as the buffer holds more than the limit, so the
    // lines before the error are the same; after it both stop.
    assert_eq!(whole, cut);
    if !whole.iter().any(Result::is_err) {
        assert_eq!(whole_rest, cut_rest);
    }
    assert_eq!(events(&[body]), events(&parts));
});
