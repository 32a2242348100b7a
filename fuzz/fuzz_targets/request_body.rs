//! Every request body the REST API parses (the first byte picks the route, see
//! `xi_supervisor::fuzzing::ROUTES`): a client error or a request, never a panic, and every
//! refusal is a 4xx.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use xi_supervisor::fuzzing::Bodies;

static HOME: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::TempDir::new().expect("a home folder"));
static BODIES: LazyLock<Bodies> =
    LazyLock::new(|| Bodies::new(HOME.path()).expect("the built-in registry loads"));

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    if let Err((status, detail)) = BODIES.parse(route, body) {
        assert!((400..500).contains(&status), "{status} for {detail}");
    }
});
