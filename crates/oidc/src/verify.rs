//! Verification of a provider's JWTs (ID tokens and access tokens) against its JWKS.
//!
//! The algorithm is pinned to the key: only asymmetric algorithms are accepted (never `none`,
//! never HMAC, so a public key can never serve as an HMAC secret), and the header's `alg` must
//! belong to the family and curve of the JWK that `kid` names (and equal the JWK's own `alg`
//! when it has one). The claims are checked here, against the caller's clock: `iss` exactly,
//! `aud` (and `azp` when there are several audiences), `exp` and `nbf` with a small leeway,
//! and the `nonce` of an ID token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::error::{OidcError, Result};

/// Largest token we look at; real ones are a few KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;

/// The asymmetric algorithms we verify.
const ALLOWED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What a token must say besides a good signature.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// An ID token of the code flow: its `nonce` must be this one.
    pub nonce: Option<&'a str>,
    /// An ID token: its `azp`, when present, must be `audience` (our client id). An access
    /// token's `azp` names the client that asked for it, which may be anyone.
    pub id_token: bool,
    /// Now, in Unix seconds.
    pub now: u64,
}

/// The parts of a token read before its signature is checked (to pick the key and the
/// provider); nothing here may be trusted.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub issuer: String,
}

/// Reads the header and the `iss` claim of a compact JWS. `None`: not a JWT with an issuer
/// (an api key, or one of our own tokens, which carry no `iss`).
pub fn peek(token: &str) -> Option<std::result::Result<Unverified, OidcError>> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let header: Value = decode_part(head)?;
    let claims: Value = decode_part(body)?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .map(String::from)?;
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let alg = match alg_name.parse::<Algorithm>() {
        Ok(alg) if ALLOWED.contains(&alg) => alg,
        _ => {
            return Some(Err(OidcError::invalid(format!(
                "Token algorithm {alg_name:?} is not accepted (asymmetric signatures only)"
            ))))
        }
    };
    let kid = header.get("kid").and_then(Value::as_str).map(String::from);
    Some(Ok(Unverified { alg, kid, issuer }))
}

fn decode_part(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// Whether `jwk` is a signing key for `alg`: right key type and curve, its `alg` (when given)
/// equal, its `use` (when given) `sig`.
pub fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return false;
    }
    if let Some(declared) = jwk.common.key_algorithm {
        if key_algorithm(declared) != Some(alg) {
            return false;
        }
    }
    match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

fn key_algorithm(declared: KeyAlgorithm) -> Option<Algorithm> {
    Some(match declared {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Checks the signature of `token` with `jwk` (which must fit `alg`: [`key_fits`]) and then
/// its claims; the claims when all hold.
pub fn verify(
    token: &str,
    alg: Algorithm,
    jwk: &Jwk,
    expect: &Expect<'_>,
) -> Result<Map<String, Value>> {
    if !key_fits(jwk, alg) {
        return Err(OidcError::invalid("Token key does not match its algorithm"));
    }
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| OidcError::invalid(format!("Provider key unusable: {e}")))?;
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| OidcError::invalid(format!("Token signature invalid: {e}")))?;
    check_claims(&data.claims, expect)?;
    Ok(data.claims)
}

/// The claim checks of OpenID Connect Core 3.1.3.7 that apply to us.
fn check_claims(claims: &Map<String, Value>, expect: &Expect<'_>) -> Result<()> {
    let iss = claims.get("iss").and_then(Value::as_str);
    if iss != Some(expect.issuer) {
        return Err(OidcError::invalid(
            "Token issuer does not match the provider",
        ));
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(OidcError::invalid("Token has no subject"));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&expect.audience) {
        return Err(OidcError::invalid(
            "Token audience does not include this server",
        ));
    }
    let azp = claims.get("azp").and_then(Value::as_str);
    if expect.id_token && azp.is_some_and(|azp| azp != expect.audience) {
        return Err(OidcError::invalid(
            "Token was issued to another party (azp)",
        ));
    }
    let time = |name: &str| claims.get(name).and_then(Value::as_f64).map(|t| t as u64);
    let Some(exp) = time("exp") else {
        return Err(OidcError::invalid("Token has no expiry"));
    };
    if exp.saturating_add(LEEWAY_SECS) <= expect.now {
        return Err(OidcError::invalid("Token has expired"));
    }
    if time("nbf").is_some_and(|nbf| nbf > expect.now.saturating_add(LEEWAY_SECS)) {
        return Err(OidcError::invalid("Token is not valid yet"));
    }
    if time("iat").is_some_and(|iat| iat > expect.now.saturating_add(LEEWAY_SECS)) {
        return Err(OidcError::invalid("Token was issued in the future"));
    }
    if let Some(nonce) = expect.nonce {
        let given = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !crate::flow::same_secret(given, nonce) {
            return Err(OidcError::invalid(
                "ID token nonce does not match this login",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_refuses_none_and_hmac_and_skips_non_jwts() {
        let part = |v: &str| URL_SAFE_NO_PAD.encode(v);
        let claims = part(r#"{"iss":"https://id.example","sub":"a"}"#);
        for alg in ["none", "HS256", "XX"] {
            let token = format!("{}.{claims}.", part(&format!(r#"{{"alg":"{alg}"}}"#)));
            let err = peek(&token).unwrap().unwrap_err();
            assert!(err.to_string().contains("not accepted"), "{alg}: {err}");
        }
        let token = format!("{}.{claims}.sig", part(r#"{"alg":"RS256","kid":"k1"}"#));
        let seen = peek(&token).unwrap().unwrap();
        assert_eq!(seen.alg, Algorithm::RS256);
        assert_eq!(seen.kid.as_deref(), Some("k1"));
        assert_eq!(seen.issuer, "https://id.example");
        let ours = format!(
            "{}.{}.sig",
            part(r#"{"alg":"HS256"}"#),
            part(r#"{"sub":"a"}"#)
        );
        assert!(peek(&ours).is_none(), "our own tokens carry no issuer");
        assert!(peek("xf-not-a-jwt").is_none());
        assert!(peek("a.b.c").is_none());
    }
}
