//! An LLM's `config.json`: parsed and checked (dimensions, heads, rope) before anything is
//! sized from it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = xi_engine::fuzzing::llm_config(data) {
        assert!(e.is_client_error(), "{e}");
    }
});
