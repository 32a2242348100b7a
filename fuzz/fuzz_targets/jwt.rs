//! JWT verification with the algorithm pinned. Half the inputs are tokens as they come; the
//! other half are a header and claims (the input split at its first NUL) signed with the
//! server's own key, so the claim checks behind the signature are fuzzed too. Whatever the
//! input, a token is accepted only when it is HS256-signed with the key, unexpired and valid
//! already.
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use xi_auth::jwt::JwtCodec;
use xi_auth::{JwtAlgorithm, ManualClock, Secret};

const SECRET: &str = "7c1e4a9f0b3d6e8a2c5f7b9d1e3a6c8f0a2d4e6b8c1f3a5d7e9b0c2e4f6a8d1b";
const NOW: u64 = 1_700_000_000;

static CODEC: LazyLock<JwtCodec> = LazyLock::new(|| {
    JwtCodec::new(JwtAlgorithm::HS256, &Secret::new(SECRET)).expect("the codec builds")
});
static KEY: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key"));

fuzz_target!(|data: &[u8]| {
    let clock = ManualClock::new(NOW);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            if let Ok(claims) = CODEC.verify(token, &clock) {
                // Only our key signs: a raw input that verifies would be a forgery unless it
                // was signed with it, which the fuzzer cannot do; it must still be in date.
                assert!(claims.exp > NOW);
            }
        }
        return;
    }
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (header, claims) = rest.split_at(split);
    let claims = claims.get(1..).unwrap_or_default();
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let Ok(signature) = jsonwebtoken::crypto::sign(message.as_bytes(), &KEY, Algorithm::HS256)
    else {
        return;
    };
    let token = format!("{message}.{signature}");
    if let Ok(verified) = CODEC.verify(&token, &clock) {
        assert!(verified.exp > NOW, "an expired token was accepted");
        assert!(verified.nbf.is_none_or(|nbf| nbf <= NOW), "a future token was accepted");
        let header: serde_json::Value =
            serde_json::from_slice(header).expect("an accepted header is JSON");
        assert_eq!(header["alg"], "HS256", "a token of another algorithm was accepted");
    }
});
