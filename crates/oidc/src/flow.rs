//! What a login in progress remembers, in memory: the code flow's `state` (with its PKCE
//! verifier and `nonce`), one-time login codes handed to the browser or the CLI, and device
//! logins. Each store is bounded (a flood of `/api/oidc/authorize` cannot exhaust memory) and
//! forgets entries when they expire; every entry is taken at most once.
//!
//! In memory on purpose: a login starts and ends on the same supervisor within minutes. Behind
//! a load balancer with several supervisors, make the OIDC routes sticky.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{OidcError, Result};

/// How long a browser may take at the provider's login page.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long a one-time login code lives between our callback and its exchange.
pub const HANDOFF_TTL: Duration = Duration::from_secs(60);
/// Logins in progress at once (per store), beyond which new ones get 503.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Logins in progress at once from one client address (per store): one address cannot fill a
/// store and lock everyone else out.
pub const MAX_PER_ADDRESS: usize = 20;

/// 32 random bytes, base64url: states, nonces, PKCE verifiers, one-time codes.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Equality of two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Where a CLI waits for the end of a browser login, and the challenge it must answer.
#[derive(Debug, Clone)]
pub struct CliReturn {
    /// `http://127.0.0.1:PORT/PATH` (loopback only).
    pub redirect: url::Url,
    /// PKCE S256 challenge of the CLI's own verifier.
    pub challenge: String,
}

impl CliReturn {
    /// Checks what a CLI asked for: a loopback `http` URL with a port (RFC 8252 7.3; never
    /// another host, or the login would hand its code to someone else) and an S256 challenge.
    pub fn parse(redirect: &str, challenge: Option<&str>) -> Result<CliReturn> {
        let bad = |m: &str| OidcError::BadRequest(format!("cli_redirect: {m}"));
        let url = url::Url::parse(redirect).map_err(|_| bad("not a URL"))?;
        // RFC 8252 8.3: loopback IP literals, not `localhost` (which a resolver may send
        // elsewhere).
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        };
        if url.scheme() != "http" || !loopback || url.port().is_none() {
            return Err(bad(
                "must be http://127.0.0.1:PORT/... or http://[::1]:PORT/...",
            ));
        }
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry a fragment or credentials"));
        }
        let challenge = challenge.unwrap_or("");
        let valid = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(OidcError::BadRequest(
                "cli_challenge: required with cli_redirect, the base64url SHA-256 of a verifier"
                    .into(),
            ));
        }
        Ok(CliReturn {
            redirect: url,
            challenge: challenge.to_string(),
        })
    }
}

/// A code-flow login between `/api/oidc/authorize` and `/api/oidc/callback`.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub provider: String,
    pub verifier: String,
    pub nonce: String,
    pub redirect_uri: String,
    pub cli: Option<CliReturn>,
}

/// A device login between `/v1/auth/sso/device` and its last poll.
#[derive(Debug, Clone)]
pub struct DeviceLogin {
    pub provider: String,
    pub device_code: String,
    pub interval: Duration,
    pub last_poll: Option<Instant>,
}

/// One entry: when it expires, which client address made it ("" for none), the value.
type Entry<T> = (Instant, String, T);

/// Entries that expire and are taken once, keyed by a random token.
pub struct Expiring<T> {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T> Expiring<T> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `value` under a new random key, which is returned.
    pub fn put(&self, value: T) -> Result<String> {
        self.put_for(value, self.ttl, "")
    }

    /// Whether `address` may add one more entry now (checked before asking a provider for
    /// anything, so that a refused caller costs the provider nothing).
    pub fn has_room(&self, address: &str) -> Result<()> {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_IN_FLIGHT {
            entries.retain(|_, (expires, _, _)| *expires > now);
        }
        if entries.len() >= MAX_IN_FLIGHT {
            return Err(OidcError::Busy(
                "Too many single sign-on logins in progress; try again in a minute".into(),
            ));
        }
        let mine = || {
            entries
                .values()
                .filter(|(expires, owner, _)| owner == address && *expires > now)
                .count()
        };
        if !address.is_empty() && mine() >= MAX_PER_ADDRESS {
            return Err(OidcError::Busy(
                "Too many single sign-on logins in progress from this address; finish or wait \
                 for one"
                    .into(),
            ));
        }
        Ok(())
    }

    /// [`Expiring::put`] with its own time to live, counted against `address` ("" for none).
    pub fn put_for(&self, value: T, ttl: Duration, address: &str) -> Result<String> {
        self.has_room(address)?;
        let key = random_token();
        let expires = Instant::now() + ttl;
        self.lock()
            .insert(key.clone(), (expires, address.to_string(), value));
        Ok(key)
    }

    /// Removes and returns the entry, if it is there and alive.
    pub fn take(&self, key: &str) -> Option<T> {
        let (expires, _, value) = self.lock().remove(key)?;
        (expires > Instant::now()).then_some(value)
    }

    /// A copy of a live entry, left in place.
    pub fn peek(&self, key: &str) -> Option<T>
    where
        T: Clone,
    {
        let entries = self.lock();
        let (expires, _, value) = entries.get(key)?;
        (*expires > Instant::now()).then(|| value.clone())
    }

    /// Whether a live entry has this key.
    pub fn contains(&self, key: &str) -> bool {
        let entries = self.lock();
        entries
            .get(key)
            .is_some_and(|(expires, _, _)| *expires > Instant::now())
    }

    /// Changes a live entry in place; `None` when it is gone or expired (and then removed).
    pub fn update<R>(&self, key: &str, change: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut entries = self.lock();
        let alive = entries
            .get(key)
            .is_some_and(|(expires, _, _)| *expires > Instant::now());
        if !alive {
            entries.remove(key);
            return None;
        }
        entries.get_mut(key).map(|(_, _, value)| change(value))
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A one-time login code: what it hands over, and the challenge its exchange must answer (the
/// CLI's PKCE verifier, or the browser's binding cookie).
pub struct Handoff<T> {
    pub value: T,
    pub challenge: String,
}

/// One-time login codes: the tokens of a finished login, waiting for their exchange.
pub struct Handoffs<T> {
    codes: Expiring<Handoff<T>>,
}

impl<T> Default for Handoffs<T> {
    fn default() -> Self {
        Self {
            codes: Expiring::new(HANDOFF_TTL),
        }
    }
}

impl<T> Handoffs<T> {
    /// Keeps `value` under a new code that only the holder of `challenge`'s verifier can use.
    pub fn put(&self, value: T, challenge: String) -> Result<String> {
        self.codes.put(Handoff { value, challenge })
    }

    /// The value of a live code, once, for the verifier of its challenge. A wrong try spends
    /// the code too.
    pub fn exchange(&self, code: &str, verifier: Option<&str>) -> Result<T> {
        let invalid = || OidcError::BadRequest("Invalid or expired login code".into());
        let handoff = self.codes.take(code).ok_or_else(invalid)?;
        let answered =
            verifier.is_some_and(|v| same_secret(&pkce_challenge(v), &handoff.challenge));
        match answered {
            true => Ok(handoff.value),
            false => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let token = random_token();
        assert_eq!(token.len(), 43);
        assert_ne!(token, random_token());
    }

    #[test]
    fn codes_are_taken_once_and_bound_to_their_challenge() {
        let handoffs = Handoffs::default();
        let verifier = random_token();
        let code = handoffs.put(1, pkce_challenge(&verifier)).unwrap();
        assert_eq!(handoffs.exchange(&code, Some(&verifier)).unwrap(), 1);
        assert!(
            handoffs.exchange(&code, Some(&verifier)).is_err(),
            "a code works once"
        );
        let bound = handoffs.put(2, pkce_challenge(&verifier)).unwrap();
        assert!(handoffs.exchange(&bound, Some("wrong")).is_err());
        assert!(
            handoffs.exchange(&bound, Some(&verifier)).is_err(),
            "spent by the wrong try"
        );
        let bound = handoffs.put(3, pkce_challenge(&verifier)).unwrap();
        assert!(handoffs.exchange(&bound, None).is_err());
    }

    #[test]
    fn only_loopback_cli_redirects_are_taken() {
        let challenge = pkce_challenge("v");
        for ok in ["http://127.0.0.1:5000/callback", "http://[::1]:1/"] {
            assert!(CliReturn::parse(ok, Some(&challenge)).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example:80/",
            "https://127.0.0.1:5000/",
            "http://127.0.0.1/",
            "http://127.0.0.1.evil.example:5/",
            "http://localhost:9/x",
            "http://u@127.0.0.1:5/",
            "javascript:alert(1)",
        ] {
            assert!(CliReturn::parse(bad, Some(&challenge)).is_err(), "{bad}");
        }
        assert!(CliReturn::parse("http://127.0.0.1:5/", None).is_err());
        assert!(CliReturn::parse("http://127.0.0.1:5/", Some("short")).is_err());
    }

    #[test]
    fn one_address_cannot_fill_a_store() {
        let store = Expiring::new(Duration::from_secs(60));
        for _ in 0..MAX_PER_ADDRESS {
            store
                .put_for((), Duration::from_secs(60), "10.0.0.1")
                .unwrap();
        }
        let err = store
            .put_for((), Duration::from_secs(60), "10.0.0.1")
            .unwrap_err();
        assert!(err.to_string().contains("from this address"), "{err}");
        store
            .put_for((), Duration::from_secs(60), "10.0.0.2")
            .unwrap();
    }

    #[test]
    fn expired_entries_are_gone() {
        let store = Expiring::new(Duration::from_millis(1));
        let key = store.put("x").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.take(&key), None);
        assert_eq!(store.update(&key, |_| ()), None);
    }
}
