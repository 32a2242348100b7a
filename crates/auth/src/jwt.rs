//! JWT issue and verification, with the algorithm pinned to the configured one.
//!
//! Expiry and not-before are checked here against the injected [`Clock`] (not inside the JWT
//! library) so tests can move time; the library checks the signature and the algorithm.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::JwtAlgorithm;
use crate::error::AuthError;
use crate::secret::Secret;

/// The claims we issue and accept. `exp` and `sub` are required; `nbf` is honoured when present.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The identity store's session this token belongs to (logout, a password change or a
    /// disabled user end it at once). Tokens of config-only servers have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Signs and verifies tokens for one (algorithm, secret) pair.
pub struct JwtCodec {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtCodec {
    pub fn new(algorithm: JwtAlgorithm, secret: &Secret) -> Result<Self, AuthError> {
        let algorithm = match algorithm {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::HS384 => Algorithm::HS384,
            JwtAlgorithm::HS512 => Algorithm::HS512,
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let key_error = |e: jsonwebtoken::errors::Error| {
            AuthError::Internal(format!("cannot use the secret key: {e}"))
        };
        Ok(Self {
            algorithm,
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()).map_err(key_error)?,
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()).map_err(key_error)?,
            validation,
        })
    }

    /// Signs `claims` with the configured algorithm.
    pub fn issue(&self, claims: &Claims) -> Result<String, AuthError> {
        encode(&Header::new(self.algorithm), claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies signature, algorithm, `exp` and `nbf`. Every failure is the same
    /// [`AuthError::InvalidCredentials`]: the client learns nothing about why.
    pub fn verify(&self, token: &str, clock: &dyn Clock) -> Result<Claims, AuthError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            tracing::debug!(reason = %e, "token rejected");
            AuthError::InvalidCredentials
        })?;
        let claims = data.claims;
        let now = clock.now_unix();
        if claims.exp <= now {
            tracing::debug!(sub = %claims.sub, "token rejected: expired");
            return Err(AuthError::InvalidCredentials);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            tracing::debug!(sub = %claims.sub, "token rejected: not valid yet (nbf)");
            return Err(AuthError::InvalidCredentials);
        }
        Ok(claims)
    }
}
