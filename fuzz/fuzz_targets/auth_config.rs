//! The auth config loader (`--auth-config`): any text is a valid config or an error naming
//! the field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = xi_auth::AuthSettings::parse("fuzz.json", text);
    }
});
