//! safetensors files: the header read as the loader maps it, every shape checked against a
//! tiny Llama config.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static SCRATCH: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::TempDir::new_in(shm)
    } else {
        tempfile::TempDir::new()
    };
    dir.expect("a scratch folder")
});

fuzz_target!(|data: &[u8]| {
    if let Err(e) = xi_engine::fuzzing::safetensors(data, SCRATCH.path()) {
        assert!(e.is_client_error(), "{e}");
    }
});
