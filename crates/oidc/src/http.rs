//! Requests to a provider: bounded in time and size, no redirects followed (a provider's
//! endpoints come from its discovery document; following redirects elsewhere would let a
//! compromised document point us anywhere twice).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;

use crate::error::{OidcError, Result};

/// Largest answer we read from a provider (discovery, JWKS, token, userinfo).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Time to connect to a provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole request to a provider.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP client for one provider (`name` labels its errors).
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    name: String,
}

/// How a request authenticates us as the client.
pub enum ClientCredentials<'a> {
    Basic {
        id: &'a str,
        secret: &'a str,
    },
    /// In the body (`client_secret_post`), or the id alone for a public client.
    Body {
        id: &'a str,
        secret: Option<&'a str>,
    },
}

impl Http {
    pub fn new(name: &str) -> Result<Http> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("xinference-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OidcError::Unavailable(format!("cannot make an HTTP client: {e}")))?;
        Ok(Http {
            client,
            name: name.to_string(),
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> OidcError {
        // reqwest's message names the URL but never a body or a header.
        tracing::warn!(provider = %self.name, error = %e, "identity provider unreachable");
        self.unavailable()
    }

    /// What callers are told while the provider cannot be reached.
    pub fn unavailable(&self) -> OidcError {
        OidcError::Unavailable(format!(
            "Identity provider {:?} is unreachable; try again later, or log in with a password",
            self.name
        ))
    }

    /// GET a JSON object; 2xx only.
    pub async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value> {
        let mut request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = self.read(response).await?;
        if !status.is_success() {
            return Err(self.failing(status, url));
        }
        self.json(&body, url)
    }

    /// POST a form; the status and the JSON object answered (any status).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        credentials: ClientCredentials<'_>,
    ) -> Result<(StatusCode, Value)> {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json");
        match credentials {
            ClientCredentials::Basic { id, secret } => {
                // RFC 6749 2.3.1: both parts form-urlencoded before the Basic encoding.
                let pair = format!("{}:{}", form_encode(id), form_encode(secret));
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(pair)),
                );
            }
            ClientCredentials::Body { id, secret } => {
                fields.push(("client_id", id));
                if let Some(secret) = secret {
                    fields.push(("client_secret", secret));
                }
            }
        }
        let body = serde_urlencoded::to_string(&fields)
            .map_err(|e| OidcError::BadRequest(format!("cannot encode the form: {e}")))?;
        let response = request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = self.read(response).await?;
        if status.is_server_error() {
            return Err(self.failing(status, url));
        }
        Ok((status, self.json(&body, url)?))
    }

    async fn read(&self, mut response: reqwest::Response) -> Result<Vec<u8>> {
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(self.too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(self.too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn too_big(&self) -> OidcError {
        OidcError::Upstream(format!(
            "Identity provider {:?} sent more than {MAX_RESPONSE_BYTES} bytes",
            self.name
        ))
    }

    fn failing(&self, status: StatusCode, url: &str) -> OidcError {
        tracing::warn!(provider = %self.name, %status, url, "identity provider answered an error");
        match status.is_server_error() {
            true => OidcError::Unavailable(format!(
                "Identity provider {:?} is failing ({status}); try again later",
                self.name
            )),
            false => OidcError::Upstream(format!(
                "Identity provider {:?} answered {status}",
                self.name
            )),
        }
    }

    fn json(&self, body: &[u8], url: &str) -> Result<Value> {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) if value.is_object() => Ok(value),
            _ => {
                tracing::warn!(provider = %self.name, url, "identity provider sent no JSON object");
                Err(OidcError::Upstream(format!(
                    "Identity provider {:?} did not answer with a JSON object",
                    self.name
                )))
            }
        }
    }
}

fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
