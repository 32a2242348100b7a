//! Password hashes: argon2id (what we make) and bcrypt (accepted from config files).
//!
//! Verification is deliberately slow (that is the point of these hashes); callers on an async
//! runtime must run it on a blocking thread.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{
    PasswordHash as ParsedHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

use crate::error::AuthError;

/// A stored password hash.
#[derive(Clone)]
pub enum PasswordHash {
    Argon2id(String),
    Bcrypt(String),
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordHash::Argon2id(_) => f.write_str("Argon2id(***)"),
            PasswordHash::Bcrypt(_) => f.write_str("Bcrypt(***)"),
        }
    }
}

/// The hasher for plain-text passwords: argon2id with the crate's defaults (OWASP's). Fuzz
/// builds (`cfg(fuzzing)`, set by `cargo fuzz`) use the smallest parameters instead, so the
/// `auth_config` target runs the config loader, not the hash, thousands of times a second.
fn plain_hasher() -> Argon2<'static> {
    #[cfg(fuzzing)]
    {
        let params = argon2::Params::new(8, 1, 1, None).unwrap_or_default();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
    }
    #[cfg(not(fuzzing))]
    {
        Argon2::default()
    }
}

impl PasswordHash {
    /// Reads a `password` value from the config file. A value that looks like an argon2 or
    /// bcrypt hash must be a valid one (`Err` says why); anything else is a plain password
    /// (`Ok(None)`), to be hashed by the caller.
    pub fn parse_stored(value: &str) -> Result<Option<PasswordHash>, String> {
        if value.starts_with("$argon2") {
            let parsed = ParsedHash::new(value)
                .map_err(|e| format!("looks like an argon2 hash but does not parse ({e})"))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(format!(
                    "argon2 variant {} is not accepted; use argon2id (`xinference-local hash-password`)",
                    parsed.algorithm
                ));
            }
            if parsed.salt.is_none() || parsed.hash.is_none() {
                return Err(
                    "looks like an argon2id hash but has no salt or no hash output".to_string(),
                );
            }
            argon2::Params::try_from(&parsed)
                .map_err(|e| format!("argon2id hash with unusable parameters ({e})"))?;
            return Ok(Some(PasswordHash::Argon2id(value.to_string())));
        }
        let is_bcrypt = ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|prefix| value.starts_with(prefix));
        if is_bcrypt {
            if value.len() != 60 || value.parse::<bcrypt::HashParts>().is_err() {
                return Err("looks like a bcrypt hash but is not a valid one".to_string());
            }
            return Ok(Some(PasswordHash::Bcrypt(value.to_string())));
        }
        Ok(None)
    }

    /// Hashes a plain password with argon2id (default parameters, random salt).
    pub fn hash_plain(plain: &str) -> Result<PasswordHash, AuthError> {
        let salt = SaltString::generate(&mut OsRng);
        let hash = plain_hasher()
            .hash_password(plain.as_bytes(), &salt)
            .map_err(|e| AuthError::Internal(format!("argon2 hashing failed: {e}")))?;
        Ok(PasswordHash::Argon2id(hash.to_string()))
    }

    /// A hash of a random password that costs what verifying against `self` costs (same kind
    /// and parameters), for unknown usernames.
    pub fn dummy_like(&self) -> Result<PasswordHash, AuthError> {
        let random = format!("{:x}", rand::random::<u128>());
        match self {
            PasswordHash::Argon2id(stored) => {
                let params = ParsedHash::new(stored)
                    .ok()
                    .and_then(|p| argon2::Params::try_from(&p).ok())
                    .unwrap_or_default();
                let hasher =
                    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
                let salt = SaltString::generate(&mut OsRng);
                let hash = hasher
                    .hash_password(random.as_bytes(), &salt)
                    .map_err(|e| AuthError::Internal(format!("argon2 hashing failed: {e}")))?;
                Ok(PasswordHash::Argon2id(hash.to_string()))
            }
            PasswordHash::Bcrypt(stored) => {
                let cost = stored
                    .parse::<bcrypt::HashParts>()
                    .map(|p| p.get_cost())
                    .unwrap_or(bcrypt::DEFAULT_COST);
                let hash = bcrypt::hash(random, cost)
                    .map_err(|e| AuthError::Internal(format!("bcrypt hashing failed: {e}")))?;
                Ok(PasswordHash::Bcrypt(hash))
            }
        }
    }

    /// Checks a candidate password. Constant-time in the candidate (the hash libraries compare
    /// digests in constant time).
    pub fn verify(&self, candidate: &str) -> bool {
        match self {
            PasswordHash::Argon2id(stored) => match ParsedHash::new(stored) {
                Ok(parsed) => Argon2::default()
                    .verify_password(candidate.as_bytes(), &parsed)
                    .is_ok(),
                Err(_) => false,
            },
            PasswordHash::Bcrypt(stored) => bcrypt::verify(candidate, stored).unwrap_or(false),
        }
    }

    /// The hash string, to print from `hash-password`.
    pub fn as_str(&self) -> &str {
        match self {
            PasswordHash::Argon2id(s) | PasswordHash::Bcrypt(s) => s,
        }
    }
}

/// Hashes a password for the config file (what `hash-password` prints).
pub fn hash_for_config(plain: &str) -> Result<String, AuthError> {
    PasswordHash::hash_plain(plain).map(|h| h.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip_and_stored_hash_is_recognised() {
        let hash = PasswordHash::hash_plain("s3cret").unwrap();
        assert!(hash.verify("s3cret"));
        assert!(!hash.verify("s3cret "));
        let again = PasswordHash::parse_stored(hash.as_str()).unwrap().unwrap();
        assert!(again.verify("s3cret"));
        assert_eq!(format!("{hash:?}"), "Argon2id(***)");
    }

    #[test]
    fn bcrypt_hash_is_accepted_and_verified() {
        let stored = bcrypt::hash("pw-b", 4).unwrap();
        let hash = PasswordHash::parse_stored(&stored).unwrap().unwrap();
        assert!(hash.verify("pw-b"));
        assert!(!hash.verify("pw-c"));
    }

    #[test]
    fn broken_hashes_are_refused_and_plain_text_passes_through() {
        assert!(PasswordHash::parse_stored("$argon2id$garbage").is_err());
        assert!(PasswordHash::parse_stored("$2b$12$short").is_err());
        assert!(PasswordHash::parse_stored("plain words").unwrap().is_none());
    }
}
