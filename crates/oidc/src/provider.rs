//! One identity provider at run time: its discovery document and signing keys (fetched on
//! first use, cached, refreshed), and the protocol requests we make to it.
//!
//! Nothing is fetched at startup, so a provider that is down never stops the server: its logins
//! answer 503 until it is back, and password logins go on. An unknown `kid` refetches the JWKS
//! (the provider rotated its keys), at most once per [`Provider::refetch_interval`], so a flood
//! of forged tokens cannot turn into a flood of requests to the provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use serde_json::{Map, Value};

use crate::config::{check_url, ClientAuth, ProviderConfig};
use crate::error::{OidcError, Result};
use crate::http::{ClientCredentials, Http};
use crate::verify::{self, Expect};

/// How long a discovery document and a JWKS are used before they are fetched again.
pub const CACHE_TTL: Duration = Duration::from_secs(3600);
/// The shortest time between two JWKS fetches caused by an unknown `kid`.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// What discovery tells us (OpenID Connect Discovery 1.0, section 3).
#[derive(Debug, Clone)]
pub struct Metadata {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
    pub device_authorization_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    /// RFC 9207: the provider names itself (`iss`) in every authorization answer, so an
    /// answer without it is refused (a mix-up attack would strip it).
    pub iss_parameter_supported: bool,
}

/// Tokens from the token endpoint.
#[derive(Clone)]
pub struct TokenSet {
    pub id_token: String,
    pub access_token: Option<String>,
}

/// The start of a device login (RFC 8628 3.2).
#[derive(Debug, Clone)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

#[derive(Default)]
struct Keys {
    set: Vec<(Option<String>, Jwk)>,
    fetched: Option<Instant>,
    /// The last fetch started (succeeded or not): what the refetch interval counts from.
    attempted: Option<Instant>,
}

/// How long a failed discovery is remembered: callers during that time get 503 at once
/// instead of each waiting for the connect timeout.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Discovered {
    current: Option<(Arc<Metadata>, Instant)>,
    failed_at: Option<Instant>,
}

pub struct Provider {
    pub config: ProviderConfig,
    http: Http,
    metadata: tokio::sync::Mutex<Discovered>,
    /// Held only to read or replace the key set, never across a fetch.
    keys: std::sync::Mutex<Keys>,
    /// See the module docs; a field so tests can shorten it.
    pub refetch_interval: Duration,
}

impl Provider {
    pub fn new(config: ProviderConfig) -> Result<Provider> {
        Ok(Provider {
            http: Http::new(&config.name)?,
            config,
            metadata: tokio::sync::Mutex::new(Discovered::default()),
            keys: std::sync::Mutex::new(Keys::default()),
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
        })
    }

    fn credentials(&self) -> ClientCredentials<'_> {
        let id = self.config.client_id.as_str();
        let secret = self.config.client_secret.as_ref().map(|s| s.expose());
        match (self.config.client_auth, secret) {
            (ClientAuth::Basic, Some(secret)) => ClientCredentials::Basic { id, secret },
            (ClientAuth::Post, secret) => ClientCredentials::Body { id, secret },
            _ => ClientCredentials::Body { id, secret: None },
        }
    }

    /// The discovery document: cached for [`CACHE_TTL`]; a stale one serves while the
    /// provider cannot be reached.
    pub async fn metadata(&self) -> Result<Arc<Metadata>> {
        // One discovery at a time (the others wait for its answer instead of asking too).
        let mut cached = self.metadata.lock().await;
        if let Some((metadata, at)) = cached.current.as_ref() {
            if at.elapsed() < CACHE_TTL {
                return Ok(metadata.clone());
            }
        }
        let stale = cached.current.as_ref().map(|(m, _)| m.clone());
        let failed_recently = cached
            .failed_at
            .is_some_and(|at| at.elapsed() < FAILURE_MEMORY);
        if failed_recently {
            return stale.ok_or_else(|| self.http.unavailable());
        }
        match self.discover().await {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                cached.current = Some((metadata.clone(), Instant::now()));
                cached.failed_at = None;
                Ok(metadata)
            }
            Err(e) => {
                cached.failed_at = Some(Instant::now());
                match (stale, &e) {
                    (Some(stale), OidcError::Unavailable(_)) => Ok(stale),
                    _ => Err(e),
                }
            }
        }
    }

    async fn discover(&self) -> Result<Metadata> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let doc = self.http.get_json(&url, None).await?;
        let bad = |what: String| {
            OidcError::Upstream(format!(
                "Identity provider {:?}: discovery document {what}",
                self.config.name
            ))
        };
        // Discovery 4.3: the document must name the issuer we asked, exactly.
        if doc.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err(bad(format!(
                "names another issuer than {:?}",
                self.config.issuer
            )));
        }
        let endpoint = |key: &str| -> Result<Option<String>> {
            match doc.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(url)) => match check_url(url) {
                    Ok(()) => Ok(Some(url.clone())),
                    Err(m) => Err(bad(format!("{key}: {m}"))),
                },
                Some(_) => Err(bad(format!("{key} is not a string"))),
            }
        };
        let required = |key: &str| -> Result<String> {
            endpoint(key)?.ok_or_else(|| bad(format!("has no {key}")))
        };
        Ok(Metadata {
            authorization_endpoint: required("authorization_endpoint")?,
            token_endpoint: required("token_endpoint")?,
            jwks_uri: required("jwks_uri")?,
            userinfo_endpoint: endpoint("userinfo_endpoint")?,
            device_authorization_endpoint: endpoint("device_authorization_endpoint")?,
            end_session_endpoint: endpoint("end_session_endpoint")?,
            iss_parameter_supported: doc
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// The signing key `kid` names (or the only key fitting `alg` when there is no `kid`).
    async fn key(&self, kid: Option<&str>, alg: jsonwebtoken::Algorithm) -> Result<Jwk> {
        let unknown =
            || OidcError::invalid("Token is signed with a key this provider does not publish");
        {
            let mut keys = self.lock_keys();
            let fresh = keys.fetched.is_some_and(|at| at.elapsed() < CACHE_TTL);
            if fresh {
                if let Some(jwk) = pick(&keys.set, kid, alg) {
                    return Ok(jwk);
                }
            }
            // A fresh set is fetched again for an unknown kid once the interval has passed
            // since the last attempt; a stale (or missing) one a few seconds after a failed
            // attempt. This caller claims the attempt; the others use what is there.
            let wait = match fresh {
                true => self.refetch_interval,
                false => FAILURE_MEMORY,
            };
            let may_fetch = keys.attempted.is_none_or(|at| at.elapsed() >= wait);
            if !may_fetch {
                return match (pick(&keys.set, kid, alg), fresh) {
                    (Some(jwk), _) => Ok(jwk),
                    (None, true) => Err(unknown()),
                    (None, false) => Err(self.http.unavailable()),
                };
            }
            keys.attempted = Some(Instant::now());
        }
        let fetched = match self.metadata().await {
            Ok(metadata) => self.http.get_json(&metadata.jwks_uri, None).await,
            Err(e) => Err(e),
        };
        let doc = match fetched {
            Ok(doc) => doc,
            // While the provider is away, the keys it published last still verify.
            Err(e) => {
                return pick(&self.lock_keys().set, kid, alg).ok_or(e);
            }
        };
        let set = parse_jwks(&doc);
        tracing::debug!(provider = %self.config.name, keys = set.len(), "fetched the JWKS");
        let found = pick(&set, kid, alg);
        let mut keys = self.lock_keys();
        keys.set = set;
        keys.fetched = Some(Instant::now());
        found.ok_or_else(unknown)
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn verify_token(&self, token: &str, expect: Expect<'_>) -> Result<Map<String, Value>> {
        let seen = match verify::peek(token) {
            Some(seen) => seen?,
            None => return Err(OidcError::invalid("Token is not a JWT with an issuer")),
        };
        if seen.issuer != self.config.issuer {
            return Err(OidcError::invalid(
                "Token issuer does not match the provider",
            ));
        }
        let jwk = self.key(seen.kid.as_deref(), seen.alg).await?;
        verify::verify(token, seen.alg, &jwk, &expect)
    }

    /// An ID token's claims, all checks done (`nonce`: the code flow's; `None` for the device
    /// flow, which has none).
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<Map<String, Value>> {
        let expect = Expect {
            issuer: &self.config.issuer,
            audience: &self.config.client_id,
            nonce,
            id_token: true,
            now,
        };
        let claims = self.verify_token(token, expect).await?;
        if claims.get("iat").and_then(Value::as_f64).is_none() {
            return Err(OidcError::invalid("ID token has no iat"));
        }
        Ok(claims)
    }

    /// A provider access token's claims, when this provider's tokens are accepted on the API.
    pub async fn verify_access_token(&self, token: &str, now: u64) -> Result<Map<String, Value>> {
        let Some(audience) = self.config.api_audience.as_deref() else {
            return Err(OidcError::invalid(
                "This provider's access tokens are not accepted here",
            ));
        };
        let expect = Expect {
            issuer: &self.config.issuer,
            audience,
            nonce: None,
            id_token: false,
            now,
        };
        self.verify_token(token, expect).await
    }

    /// Where to send the browser to log in.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        challenge: &str,
        redirect_uri: &str,
    ) -> Result<String> {
        let metadata = self.metadata().await?;
        let mut url = url::Url::parse(&metadata.authorization_endpoint)
            .map_err(|e| OidcError::Upstream(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Trades an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet> {
        let metadata = self.metadata().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let (status, body) = self
            .http
            .post_form(&metadata.token_endpoint, &form, self.credentials())
            .await?;
        if !status.is_success() {
            let error = oauth_error(&body);
            tracing::info!(provider = %self.config.name, %status, error, "code exchange refused");
            return Err(match error {
                "invalid_grant" => OidcError::BadRequest(format!(
                    "The identity provider refused the authorization code ({error}); log in again"
                )),
                _ => OidcError::Upstream(format!(
                    "The identity provider refused the code exchange ({error})"
                )),
            });
        }
        self.token_set(&body)
    }

    fn token_set(&self, body: &Value) -> Result<TokenSet> {
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OidcError::Upstream(
                    "The identity provider sent no ID token (is the openid scope allowed?)".into(),
                )
            })?;
        Ok(TokenSet {
            id_token: id_token.to_string(),
            access_token: body
                .get("access_token")
                .and_then(Value::as_str)
                .map(String::from),
        })
    }

    /// Claims of the userinfo endpoint, for what the ID token leaves out.
    pub async fn userinfo(&self, access_token: &str) -> Result<Option<Map<String, Value>>> {
        let metadata = self.metadata().await?;
        let Some(url) = &metadata.userinfo_endpoint else {
            return Ok(None);
        };
        match self.http.get_json(url, Some(access_token)).await? {
            Value::Object(map) => Ok(Some(map)),
            _ => Ok(None),
        }
    }

    /// Starts a device login (RFC 8628 3.1).
    pub async fn start_device(&self) -> Result<DeviceStart> {
        if !self.config.device_flow {
            return Err(OidcError::BadRequest(format!(
                "Provider {} does not offer device authorization here (device_flow is off)",
                self.config.name
            )));
        }
        let metadata = self.metadata().await?;
        let Some(endpoint) = &metadata.device_authorization_endpoint else {
            return Err(OidcError::BadRequest(format!(
                "Provider {} does not offer device authorization",
                self.config.name
            )));
        };
        let scope = self.config.scopes.join(" ");
        let (status, body) = self
            .http
            .post_form(endpoint, &[("scope", scope.as_str())], self.credentials())
            .await?;
        if !status.is_success() {
            let error = oauth_error(&body);
            // Keycloak lists the endpoint in every realm and refuses clients without the
            // grant: the same answer as no endpoint, so the CLI falls back to the browser.
            if matches!(
                error,
                "unauthorized_client" | "unsupported_grant_type" | "invalid_client"
            ) {
                return Err(OidcError::BadRequest(format!(
                    "Provider {} does not offer device authorization to this client ({error})",
                    self.config.name
                )));
            }
            return Err(OidcError::Upstream(format!(
                "The identity provider refused the device login ({error})"
            )));
        }
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(String::from);
        let missing = |key: &str| {
            OidcError::Upstream(format!("The device authorization answer has no {key}"))
        };
        let verification_uri =
            text("verification_uri").ok_or_else(|| missing("verification_uri"))?;
        check_url(&verification_uri).map_err(OidcError::Upstream)?;
        Ok(DeviceStart {
            device_code: text("device_code").ok_or_else(|| missing("device_code"))?,
            user_code: text("user_code").ok_or_else(|| missing("user_code"))?,
            verification_uri,
            verification_uri_complete: text("verification_uri_complete")
                .filter(|u| check_url(u).is_ok()),
            expires_in: body
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(600),
            interval: body.get("interval").and_then(Value::as_u64).unwrap_or(5),
        })
    }

    /// One poll of a device login: the tokens, or the RFC 8628 3.5 code to wait on.
    pub async fn poll_device(&self, device_code: &str) -> Result<TokenSet> {
        let metadata = self.metadata().await?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ];
        let (status, body) = self
            .http
            .post_form(&metadata.token_endpoint, &form, self.credentials())
            .await?;
        if status.is_success() {
            return self.token_set(&body);
        }
        Err(match oauth_error(&body) {
            "authorization_pending" => OidcError::Pending("authorization_pending"),
            "slow_down" => OidcError::Pending("slow_down"),
            "expired_token" => OidcError::Pending("expired_token"),
            "access_denied" => OidcError::Pending("access_denied"),
            other => OidcError::Upstream(format!(
                "The identity provider refused the device login ({other})"
            )),
        })
    }

    /// RP-initiated logout at the provider, when it offers it.
    pub async fn end_session_url(&self, post_logout_redirect_uri: &str) -> Result<Option<String>> {
        let metadata = self.metadata().await?;
        let Some(endpoint) = &metadata.end_session_endpoint else {
            return Ok(None);
        };
        let mut url = url::Url::parse(endpoint)
            .map_err(|e| OidcError::Upstream(format!("end_session_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        Ok(Some(url.into()))
    }
}

/// The `error` of an OAuth error answer (RFC 6749 5.2), limited to the characters it allows.
fn oauth_error(body: &Value) -> &str {
    body.get("error")
        .and_then(Value::as_str)
        .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("no error code")
}

/// The keys of a JWKS that we can use; others (encryption keys, unknown types) are skipped.
fn parse_jwks(doc: &Value) -> Vec<(Option<String>, Jwk)> {
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .map(|jwk| (jwk.common.key_id.clone(), jwk))
        .collect()
}

fn pick(
    keys: &[(Option<String>, Jwk)],
    kid: Option<&str>,
    alg: jsonwebtoken::Algorithm,
) -> Option<Jwk> {
    let mut fitting = keys
        .iter()
        .filter(|(id, jwk)| (kid.is_none() || id.as_deref() == kid) && verify::key_fits(jwk, alg));
    let first = fitting.next()?;
    // Without a kid, only an unambiguous key will do.
    match kid.is_none() && fitting.next().is_some() {
        true => None,
        false => Some(first.1.clone()),
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.config.name)
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}
