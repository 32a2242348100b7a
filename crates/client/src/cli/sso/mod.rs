//! `xinference login --sso`: a login through one of the server's OpenID Connect providers.
//!
//! The server holds the client secret and talks to the identity provider; the CLI only ever
//! receives the server's own tokens, stored exactly as a password login's. Two ways, in order:
//!
//! - the device flow (RFC 8628, relayed by `POST /v1/auth/sso/device`): works over SSH and on
//!   machines without a browser; the user opens the address anywhere and enters the code;
//! - when the provider offers no device authorization, the loopback flow (RFC 8252): the
//!   browser goes through `/api/oidc/authorize`, and the server sends it back, with a one-time
//!   code, to a port of ours on 127.0.0.1. That code is only good together with the PKCE
//!   verifier that never leaves this process, so a code someone else sends to the port (to log
//!   us in as them) is useless.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use xi_api::auth::TokenResponse;
use xi_api::sso::{
    DeviceLoginRequest, DeviceLoginStarted, DeviceTokenRequest, SsoExchange, SsoProvider,
    SsoProviders,
};

use super::commands;
use crate::client::Client;
use crate::error::ClientError;

/// The server's 400 detail when the provider has no device authorization endpoint.
const NO_DEVICE: &str = "does not offer device authorization";
/// RFC 8628 §3.5: each `slow_down` adds five seconds to the interval.
const SLOW_DOWN_STEP: u64 = 5;
/// How long the loopback flow waits for the browser.
const CALLBACK_WAIT: Duration = Duration::from_secs(5 * 60);
/// How long one connection to the loopback port may take to send its request: browsers open
/// spare connections that never send anything, and those must not hold up the real one.
const REQUEST_WAIT: Duration = Duration::from_secs(30);
/// The most a request head to the loopback port may be (the browser's headers fit easily).
const MAX_HEAD: usize = 16 * 1024;

/// What the messages call a provider: its display name, else its name.
fn label(provider: &SsoProvider) -> &str {
    match provider.display_name.is_empty() {
        true => &provider.name,
        false => &provider.display_name,
    }
}

/// How `login` talks to the user; tests shorten the waits and catch the loopback address.
pub struct Options {
    /// What one of the server's seconds (`interval`, `expires_in`) is here.
    pub second: Duration,
    /// How long the loopback flow waits for the browser.
    pub callback_wait: Duration,
    /// Shows the loopback flow's address to the user.
    pub show_url: Box<dyn FnMut(&str)>,
}

impl Options {
    /// For a terminal: the address goes to standard error, and to the browser unless
    /// `--no-browser`.
    pub fn terminal(open_browser: bool) -> Options {
        Options {
            second: Duration::from_secs(1),
            callback_wait: CALLBACK_WAIT,
            show_url: Box::new(move |url: &str| {
                eprintln!("To log in, open this address in your browser:\n\n    {url}\n");
                if open_browser {
                    open_in_browser(url);
                }
                eprintln!("Waiting for the browser to come back (up to 5 minutes)...");
            }),
        }
    }
}

/// `xinference login --sso [--provider NAME]`: picks the provider, runs the device flow (or
/// the loopback flow when the provider has none), stores the tokens and says who logged in.
pub async fn login(
    endpoint: &str,
    home: &Path,
    wanted: Option<&str>,
    mut options: Options,
) -> Result<(), ClientError> {
    let client = Client::new(endpoint, None);
    if !client.auth_enabled().await? {
        println!("{endpoint} has auth off: no login needed, nothing stored");
        return Ok(());
    }
    let providers = providers(&client).await?;
    let provider = pick_provider(&providers, wanted, endpoint)?;
    let reply = match device_start(&client, &provider.name).await {
        Ok(start) => {
            let address = start
                .verification_uri_complete
                .as_deref()
                .filter(|u| !u.is_empty())
                .unwrap_or(&start.verification_uri);
            eprintln!(
                "To log in, open {address} and enter the code {}",
                start.user_code
            );
            poll_device(&client, &start, options.second).await?
        }
        Err(ClientError::Server {
            status: 400,
            detail,
        }) if detail.contains(NO_DEVICE) => loopback(&client, &provider.name, &mut options).await?,
        Err(e) => return Err(e),
    };
    let stored = commands::save_login(home, endpoint, &reply)?;
    let who = who(endpoint, &reply.access_token).await;
    println!(
        "logged in to {endpoint} as {who} through {} ({stored})",
        label(&provider)
    );
    Ok(())
}

/// `GET /v1/auth/sso/providers`; a server without the route has no single sign-on.
async fn providers(client: &Client) -> Result<Vec<SsoProvider>, ClientError> {
    let request = client.request(reqwest::Method::GET, "/v1/auth/sso/providers");
    match client.typed::<SsoProviders>(request).await {
        Ok(list) => Ok(list.providers),
        Err(ClientError::Server { status: 404, .. }) => Err(ClientError::Invalid(format!(
            "{} has no single sign-on (no /v1/auth/sso/providers)",
            client.endpoint()
        ))),
        Err(e) => Err(e),
    }
}

/// `--provider`'s entry, or the only one; otherwise an error naming the choices.
pub fn pick_provider(
    providers: &[SsoProvider],
    wanted: Option<&str>,
    endpoint: &str,
) -> Result<SsoProvider, ClientError> {
    let names = || {
        providers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if providers.is_empty() {
        return Err(ClientError::Invalid(format!(
            "{endpoint} has no single sign-on provider configured"
        )));
    }
    match wanted {
        Some(name) => providers
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| {
                ClientError::Invalid(format!(
                    "{endpoint} has no provider {name:?}; its providers: {}",
                    names()
                ))
            }),
        None if providers.len() == 1 => Ok(providers[0].clone()),
        None => Err(ClientError::Invalid(format!(
            "{endpoint} has several providers ({}): choose one with --provider NAME",
            names()
        ))),
    }
}

async fn device_start(client: &Client, provider: &str) -> Result<DeviceLoginStarted, ClientError> {
    let body = DeviceLoginRequest {
        provider: Some(provider.to_string()),
    };
    client
        .typed(client.post_json("/v1/auth/sso/device", &body))
        .await
}

/// Polls `POST /v1/auth/sso/device/token` every `interval` (in units of `second`) until the
/// server gives the tokens, refuses, or `expires_in` has passed.
pub async fn poll_device(
    client: &Client,
    start: &DeviceLoginStarted,
    second: Duration,
) -> Result<TokenResponse, ClientError> {
    let deadline = Instant::now() + seconds(second, start.expires_in);
    // An interval of 0 would poll as fast as the network allows.
    let mut interval = start.interval.max(1);
    let body = DeviceTokenRequest {
        handle: start.handle.clone(),
    };
    loop {
        let wait = seconds(second, interval);
        if Instant::now() + wait > deadline {
            return Err(ClientError::Invalid(format!(
                "the login was not approved within {} s: run `xinference login --sso` again",
                start.expires_in
            )));
        }
        tokio::time::sleep(wait).await;
        let request = client.post_json("/v1/auth/sso/device/token", &body);
        match client.typed(request).await {
            Ok(reply) => return Ok(reply),
            Err(e) => interval = next_interval(e, interval)?,
        }
    }
}

/// What a failed poll means (RFC 8628 §3.5, the code as the server's detail): the interval to
/// wait before the next one, or the error to stop with.
pub fn next_interval(err: ClientError, interval: u64) -> Result<u64, ClientError> {
    let ClientError::Server {
        status: 400,
        detail,
    } = &err
    else {
        return Err(err);
    };
    match detail.trim() {
        "authorization_pending" => Ok(interval),
        "slow_down" => Ok(interval + SLOW_DOWN_STEP),
        "expired_token" => Err(ClientError::Invalid(
            "the login code expired before the login was approved: run `xinference login --sso` again"
                .into(),
        )),
        "access_denied" => Err(ClientError::Invalid(
            "the login was denied at the identity provider".into(),
        )),
        _ => Err(err),
    }
}

fn seconds(second: Duration, n: u64) -> Duration {
    second.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The loopback flow: the browser logs in at the provider and comes back to our port with a
/// one-time code, exchanged (with the PKCE verifier) for the tokens.
async fn loopback(
    client: &Client,
    provider: &str,
    options: &mut Options,
) -> Result<TokenResponse, ClientError> {
    let listener = Loopback::bind().await?;
    let pkce = Pkce::generate();
    let url = authorize_url(
        client.endpoint(),
        provider,
        &listener.redirect,
        &pkce.challenge,
    );
    (options.show_url)(&url);
    let code = listener.code(options.callback_wait).await?;
    let body = SsoExchange {
        code,
        code_verifier: Some(pkce.verifier),
    };
    client
        .typed(client.post_json("/v1/auth/sso/exchange", &body))
        .await
}

/// A PKCE pair (RFC 7636): the verifier stays here, the challenge goes to the server.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    /// 32 random bytes, base64url without padding (43 characters), and its S256 challenge.
    pub fn generate() -> Pkce {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        Pkce {
            challenge: challenge(&verifier),
            verifier,
        }
    }
}

/// `BASE64URL(SHA256(verifier))`, no padding (the S256 method).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `<endpoint>/api/oidc/authorize?provider=..&cli_redirect=..&cli_challenge=..`.
pub fn authorize_url(endpoint: &str, provider: &str, redirect: &str, challenge: &str) -> String {
    let query = serde_urlencoded::to_string([
        ("provider", provider),
        ("cli_redirect", redirect),
        ("cli_challenge", challenge),
    ])
    .unwrap_or_default();
    format!(
        "{}/api/oidc/authorize?{query}",
        endpoint.trim_end_matches('/')
    )
}

/// Tries the desktop's opener; the address is printed anyway, so a failure is ignored.
fn open_in_browser(url: &str) {
    let program = match cfg!(target_os = "macos") {
        true => "open",
        false => "xdg-open",
    };
    let spawned = std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = spawned {
        // Reaped in the background: xdg-open may wait for the browser to start.
        std::thread::spawn(move || child.wait());
    }
}

/// The loopback flow's port on 127.0.0.1 (chosen by the system) and its redirect address.
mod loopback;
pub use loopback::Loopback;
#[cfg(test)]
use loopback::{parse_callback, Callback};

/// Who the new token belongs to: `GET /v1/auth/me`, else the token's `sub` claim.
async fn who(endpoint: &str, token: &str) -> String {
    if let Ok(me) = Client::new(endpoint, Some(token.to_string())).me().await {
        return me.username;
    }
    token_subject(token).unwrap_or_else(|| "an unnamed account".into())
}

/// The `sub` claim of a JWT (read, not verified: only for the message).
fn token_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests;
