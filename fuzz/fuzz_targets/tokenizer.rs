//! `tokenizer.json` files, loaded and used as an embedding model uses them. The input is the
//! file, then (after the first NUL) a text to encode.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (json, text) = data.split_at(split);
    let text = String::from_utf8_lossy(text.get(1..).unwrap_or_default());
    if let Err(e) = xi_engine::fuzzing::tokenizer(json, &text) {
        assert!(e.is_client_error(), "{e}");
    }
});
