//! GGUF files: header, config, tensor table, tokenizer and chat template, checked as a load
//! checks them before it reads a weight.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = xi_engine::fuzzing::gguf(data) {
        assert!(e.is_client_error(), "{e}");
    }
});
