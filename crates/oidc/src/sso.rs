//! [`Sso`]: what the supervisor calls. The code flow (`begin`, `finish`), the device flow
//! (`start_device`, `poll_device`), provider access tokens on the API (`bearer`), and
//! RP-initiated logout. It knows nothing of sessions: the supervisor gives a
//! [`FederatedUser`] to the identity store, which opens the session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use xi_auth::Clock;

use crate::config::{OidcSettings, ProviderConfig};
use crate::error::{OidcError, Result};
use crate::flow::{
    pkce_challenge, random_token, same_secret, CliReturn, DeviceLogin, Expiring, PendingLogin,
    LOGIN_TTL,
};
use crate::mapping::{self, FederatedUser};
use crate::provider::{DeviceStart, Provider};

/// Longest a device login may last, whatever the provider says.
const MAX_DEVICE_TTL: Duration = Duration::from_secs(900);
/// RFC 8628 3.5: each `slow_down` adds this to the interval.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// The start of a device login as the CLI sees it: our handle, never the provider's code.
#[derive(Debug, Clone)]
pub struct DeviceHandle {
    pub handle: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

/// The start of a code-flow login.
#[derive(Debug, Clone)]
pub struct Begun {
    /// Where to send the browser: the provider's authorization endpoint.
    pub url: String,
    /// The login's `state`, to bind to the browser (a cookie).
    pub state: String,
    /// The redirect URI in force (the configured one, else the caller's).
    pub redirect_uri: String,
}

/// The end of a code-flow login.
#[derive(Debug, Clone)]
pub struct Finished {
    pub user: FederatedUser,
    /// Set when a CLI started the login: where the browser goes next.
    pub cli: Option<CliReturn>,
}

pub struct Sso {
    providers: Vec<Arc<Provider>>,
    logins: Expiring<PendingLogin>,
    devices: Expiring<DeviceLogin>,
    clock: Arc<dyn Clock>,
}

impl Sso {
    pub fn new(settings: OidcSettings, clock: Arc<dyn Clock>) -> Result<Sso> {
        let providers = settings
            .providers
            .into_iter()
            .map(|config| Provider::new(config).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Sso {
            providers,
            logins: Expiring::new(LOGIN_TTL),
            devices: Expiring::new(MAX_DEVICE_TTL),
            clock,
        })
    }

    /// The providers, in configured order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderConfig> {
        self.providers.iter().map(|p| &p.config)
    }

    /// A provider by name; without a name, the first (upstream's routes take none).
    pub fn provider(&self, name: Option<&str>) -> Result<&Arc<Provider>> {
        let found = match name {
            None | Some("") => self.providers.first(),
            Some(name) => self.providers.iter().find(|p| p.config.name == name),
        };
        found.ok_or_else(|| OidcError::UnknownProvider(name.unwrap_or_default().to_string()))
    }

    /// Lets tests shorten the unknown-`kid` refetch interval.
    pub fn provider_mut(&mut self, name: &str) -> Option<&mut Provider> {
        self.providers
            .iter_mut()
            .find(|p| p.config.name == name)
            .and_then(Arc::get_mut)
    }

    /// Starts a code-flow login for a caller at `address`: the provider's authorization URL
    /// and the `state`, which the caller also binds to the browser (a cookie) so that only
    /// this browser can finish it.
    pub async fn begin(
        &self,
        provider: Option<&str>,
        redirect_uri: &str,
        cli: Option<CliReturn>,
        address: &str,
    ) -> Result<Begun> {
        let provider = self.provider(provider)?;
        self.logins.has_room(address)?;
        let redirect_uri = provider
            .config
            .redirect_uri
            .clone()
            .unwrap_or_else(|| redirect_uri.to_string());
        let verifier = random_token();
        let nonce = random_token();
        let challenge = pkce_challenge(&verifier);
        // Discovery first: a provider that is down answers 503 before a state is kept.
        provider.metadata().await?;
        let pending = PendingLogin {
            provider: provider.config.name.clone(),
            verifier,
            nonce: nonce.clone(),
            redirect_uri: redirect_uri.clone(),
            cli,
        };
        let state = self.logins.put_for(pending, LOGIN_TTL, address)?;
        match provider
            .authorization_url(&state, &nonce, &challenge, &redirect_uri)
            .await
        {
            Ok(url) => Ok(Begun {
                url,
                state,
                redirect_uri,
            }),
            Err(e) => {
                self.logins.remove(&state);
                Err(e)
            }
        }
    }

    /// Whether `state` is a login in progress that this browser (`browser_state`, its
    /// cookie) started. Only then may a callback tell its CLI or abandon it.
    pub fn is_ours(&self, state: &str, browser_state: Option<&str>) -> bool {
        browser_state.is_some_and(|b| same_secret(b, state)) && self.logins.contains(state)
    }

    /// Where the CLI that started this browser's login `state` waits, if a CLI started it (so
    /// that a failure can be told to it as well as to the browser).
    pub fn cli_return(&self, state: &str, browser_state: Option<&str>) -> Option<CliReturn> {
        if !self.is_ours(state, browser_state) {
            return None;
        }
        self.logins.peek(state).and_then(|login| login.cli)
    }

    /// Forgets this browser's login that the provider refused (its callback carried an
    /// `error`).
    pub fn abandon(&self, state: &str, browser_state: Option<&str>) {
        if self.is_ours(state, browser_state) {
            self.logins.remove(state);
        }
    }

    /// Finishes a code-flow login at the callback: `state` must be one we issued, not used
    /// before, and the one bound to this browser (`browser_state`, from its cookie); `iss`,
    /// when the provider sends it (RFC 9207), must be the provider's issuer.
    pub async fn finish(
        &self,
        state: &str,
        browser_state: Option<&str>,
        code: &str,
        iss: Option<&str>,
    ) -> Result<Finished> {
        let bound = browser_state.is_some_and(|b| same_secret(b, state));
        if !bound {
            return Err(OidcError::BadRequest(
                "This login was not started in this browser (state mismatch); start it again"
                    .into(),
            ));
        }
        let pending = self.logins.take(state).ok_or_else(|| {
            OidcError::BadRequest("Invalid or expired login state; start the login again".into())
        })?;
        if code.is_empty() {
            return Err(OidcError::BadRequest("Missing authorization code".into()));
        }
        let provider = self.provider(Some(&pending.provider))?;
        if iss.is_some_and(|iss| iss != provider.config.issuer) {
            return Err(OidcError::BadRequest(
                "The login answer names another issuer (iss); start the login again".into(),
            ));
        }
        if iss.is_none() && provider.metadata().await?.iss_parameter_supported {
            return Err(OidcError::BadRequest(
                "The login answer does not name its issuer (iss), which this provider always \
                 does; start the login again"
                    .into(),
            ));
        }
        let tokens = provider
            .exchange_code(code, &pending.verifier, &pending.redirect_uri)
            .await?;
        let claims = provider
            .verify_id_token(&tokens.id_token, Some(&pending.nonce), self.now())
            .await?;
        let claims = self
            .with_userinfo(provider, claims, tokens.access_token.as_deref())
            .await?;
        let user = mapping::user_of(&provider.config, &claims)?;
        Ok(Finished {
            user,
            cli: pending.cli,
        })
    }

    /// Adds what the userinfo endpoint says when the ID token does not name the user or
    /// their groups (many providers keep groups out of ID tokens).
    async fn with_userinfo(
        &self,
        provider: &Provider,
        mut claims: Map<String, Value>,
        access_token: Option<&str>,
    ) -> Result<Map<String, Value>> {
        let Some(access_token) = access_token else {
            return Ok(claims);
        };
        if mapping::is_complete(&provider.config, &claims) {
            return Ok(claims);
        }
        let Some(info) = provider.userinfo(access_token).await? else {
            return Ok(claims);
        };
        // OpenID Connect Core 5.3.2: userinfo of another subject must not be used.
        if info.get("sub") != claims.get("sub") {
            return Err(OidcError::Upstream(
                "The userinfo answer is about another subject".into(),
            ));
        }
        for (key, value) in info {
            claims.entry(key).or_insert(value);
        }
        Ok(claims)
    }

    /// Starts a device login at the provider (RFC 8628) for a caller at `address`; the
    /// provider's device code stays here.
    pub async fn start_device(
        &self,
        provider: Option<&str>,
        address: &str,
    ) -> Result<DeviceHandle> {
        let provider = self.provider(provider)?;
        // Room first: a refused caller costs the provider nothing.
        self.devices.has_room(address)?;
        let DeviceStart {
            device_code,
            user_code,
            verification_uri,
            verification_uri_complete,
            expires_in,
            interval,
        } = provider.start_device().await?;
        let ttl = Duration::from_secs(expires_in.max(1)).min(MAX_DEVICE_TTL);
        let interval = interval.clamp(1, 60);
        let login = DeviceLogin {
            provider: provider.config.name.clone(),
            device_code,
            interval: Duration::from_secs(interval),
            last_poll: None,
        };
        let handle = self.devices.put_for(login, ttl, address)?;
        Ok(DeviceHandle {
            handle,
            user_code,
            verification_uri,
            verification_uri_complete,
            expires_in: ttl.as_secs(),
            interval,
        })
    }

    /// Whether `handle` is a device login in progress.
    pub fn has_device(&self, handle: &str) -> bool {
        self.devices.contains(handle)
    }

    /// One poll of a device login. Polls faster than the interval are answered `slow_down`
    /// here, without troubling the provider.
    pub async fn poll_device(&self, handle: &str) -> Result<FederatedUser> {
        let now = Instant::now();
        let due = self.devices.update(handle, |login| {
            let early = login
                .last_poll
                .is_some_and(|at| now.duration_since(at) < login.interval);
            if !early {
                login.last_poll = Some(now);
            }
            (!early).then(|| (login.provider.clone(), login.device_code.clone()))
        });
        let (provider_name, device_code) = match due {
            None => return Err(OidcError::Pending("expired_token")),
            Some(None) => return Err(OidcError::Pending("slow_down")),
            Some(Some(due)) => due,
        };
        let provider = self.provider(Some(&provider_name))?;
        let tokens = match provider.poll_device(&device_code).await {
            Ok(tokens) => tokens,
            Err(OidcError::Pending("slow_down")) => {
                self.devices
                    .update(handle, |login| login.interval += SLOW_DOWN_STEP);
                return Err(OidcError::Pending("slow_down"));
            }
            // Waiting, or the provider briefly away: the login goes on.
            Err(e @ (OidcError::Pending("authorization_pending") | OidcError::Unavailable(_))) => {
                return Err(e)
            }
            Err(e) => {
                self.devices.remove(handle);
                return Err(e);
            }
        };
        self.devices.remove(handle);
        let claims = provider
            .verify_id_token(&tokens.id_token, None, self.now())
            .await?;
        let claims = self
            .with_userinfo(provider, claims, tokens.access_token.as_deref())
            .await?;
        mapping::user_of(&provider.config, &claims)
    }

    /// A provider's JWT access token presented as a bearer token. `None`: not a JWT with an
    /// issuer (an api key or one of our own tokens); an issuer we do not accept is an error.
    pub async fn bearer(&self, token: &str) -> Option<Result<FederatedUser>> {
        let issuer = match crate::verify::peek(token)? {
            Ok(seen) => seen.issuer,
            Err(e) => return Some(Err(e)),
        };
        let provider = self
            .providers
            .iter()
            .find(|p| p.config.issuer == issuer && p.config.api_audience.is_some());
        let Some(provider) = provider else {
            return Some(Err(OidcError::invalid(
                "Tokens of this issuer are not accepted here",
            )));
        };
        let claims = match provider.verify_access_token(token, self.now()).await {
            Ok(claims) => claims,
            Err(e) => return Some(Err(e)),
        };
        // An ID token (it has a nonce) is not an access token, even where the API's audience
        // is the client's own id.
        if claims.contains_key("nonce") {
            return Some(Err(OidcError::invalid(
                "An ID token is not an access token",
            )));
        }
        Some(mapping::user_of(&provider.config, &claims))
    }

    /// Where to send the browser to end its session at the provider; `None`: the provider
    /// has no `end_session_endpoint`.
    pub async fn logout_url(
        &self,
        provider: Option<&str>,
        default_return: &str,
    ) -> Result<Option<String>> {
        let provider = self.provider(provider)?;
        let back = provider
            .config
            .post_logout_redirect_uri
            .as_deref()
            .unwrap_or(default_return);
        provider.end_session_url(back).await
    }

    fn now(&self) -> u64 {
        self.clock.now_unix()
    }
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso")
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}
