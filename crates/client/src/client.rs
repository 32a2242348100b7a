//! [`Client`]: the REST API of an xinference-rs (or Xinference) server, async. Requests and
//! answers that `xi-api` has a type for (login, auth status, launch body and answer,
//! registration, error bodies) go through those types; the OpenAI-shaped answers stay JSON
//! values. The identity store's routes (users, api keys, sessions) are in `identity.rs`.

use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use xi_api::auth::{AuthStatus, LoginRequest, TokenResponse};
use xi_api::framing::SseFramer;
use xi_api::models::{LaunchModelRequest, ModelUidResponse, RegisterModelRequest};
use xi_api::ErrorBody;

use crate::error::ClientError;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    /// Sent as `Authorization: Bearer` (a JWT from `/token` or an `sk-` api key).
    token: Option<String>,
}

impl Client {
    /// `endpoint` like `http://127.0.0.1:9997` (a trailing slash is ignored).
    pub fn new(endpoint: &str, token: Option<String>) -> Client {
        Client {
            http: reqwest::Client::new(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{path}", self.endpoint));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        let response = builder.send().await.map_err(|e| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            reason: root_cause(&e),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Err(ClientError::Server {
            status,
            detail: error_detail(text),
        })
    }

    /// The answer as `T` (a wire type of `xi-api`).
    pub(crate) async fn typed<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(builder).await?;
        let text = response.text().await.map_err(|e| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            reason: root_cause(&e),
        })?;
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Invalid(format!("the server's answer is not what was expected: {e}"))
        })
    }

    pub(crate) fn post_json(&self, path: &str, body: &impl Serialize) -> RequestBuilder {
        self.request(Method::POST, path).json(body)
    }

    async fn json(&self, builder: RequestBuilder) -> Result<Value, ClientError> {
        let response = self.send(builder).await?;
        let text = response.text().await.map_err(|e| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            reason: root_cause(&e),
        })?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Invalid(format!("the server's answer is not JSON: {e}")))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.json(self.request(Method::DELETE, path)).await
    }

    /// Whether the server has auth on (`GET /v1/cluster/auth`, public).
    pub async fn auth_enabled(&self) -> Result<bool, ClientError> {
        let status: AuthStatus = self
            .typed(self.request(Method::GET, "/v1/cluster/auth"))
            .await?;
        Ok(status.auth)
    }

    /// `POST /token`; returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> Result<String, ClientError> {
        Ok(self.login_full(username, password).await?.access_token)
    }

    /// `POST /token`; the whole answer (with an identity store: the refresh token too, and
    /// whether the account must change its password).
    pub async fn login_full(
        &self,
        username: &str,
        password: &str,
    ) -> Result<TokenResponse, ClientError> {
        let body = LoginRequest {
            username: username.to_string(),
            password: password.to_string(),
        };
        self.typed(self.post_json("/token", &body)).await
    }

    /// Running models (`GET /v1/models`): the `data` list.
    pub async fn list_models(&self) -> Result<Vec<Value>, ClientError> {
        let reply = self.get("/v1/models").await?;
        Ok(reply["data"].as_array().cloned().unwrap_or_default())
    }

    /// `POST /v1/models`; returns the model uid. Engine options beyond the typed fields go in
    /// `extra`; the server validates them (it names the field at fault).
    pub async fn launch(&self, body: &LaunchModelRequest) -> Result<String, ClientError> {
        let reply: ModelUidResponse = self.typed(self.post_json("/v1/models", body)).await?;
        Ok(reply.model_uid)
    }

    pub async fn terminate(&self, uid: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/models/{}", encode(uid))).await?;
        Ok(())
    }

    /// Registers a custom model from its JSON description.
    pub async fn register(
        &self,
        model_type: &str,
        model: &str,
        persist: bool,
    ) -> Result<(), ClientError> {
        let body = RegisterModelRequest {
            model: model.to_string(),
            worker_ip: None,
            persist,
        };
        let path = format!("/v1/model_registrations/{}", encode(model_type));
        self.json(self.post_json(&path, &body)).await?;
        Ok(())
    }

    pub async fn unregister(&self, model_type: &str, name: &str) -> Result<(), ClientError> {
        self.delete(&format!(
            "/v1/model_registrations/{}/{}",
            encode(model_type),
            encode(name)
        ))
        .await?;
        Ok(())
    }

    pub async fn registrations(&self, model_type: &str) -> Result<Vec<Value>, ClientError> {
        let reply = self
            .get(&format!("/v1/model_registrations/{}", encode(model_type)))
            .await?;
        Ok(reply.as_array().cloned().unwrap_or_default())
    }

    /// A streamed `POST` (`stream: true` is set): each `data:` event as JSON, until `[DONE]`.
    /// An `{"error": ...}` event becomes an error.
    pub async fn stream(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<impl Stream<Item = Result<Value, ClientError>>, ClientError> {
        let mut body = body.clone();
        body["stream"] = json!(true);
        let response = self
            .send(self.request(Method::POST, path).json(&body))
            .await?;
        let endpoint = self.endpoint.clone();
        let bytes = response.bytes_stream();
        let events = futures_util::stream::unfold(
            (bytes, SseFramer::default(), false),
            move |(mut bytes, mut framer, done)| {
                let endpoint = endpoint.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        match framer.next_event() {
                            Some(Ok(event)) if event.data == "[DONE]" => return None,
                            Some(Ok(event)) => {
                                let item = match serde_json::from_str::<Value>(&event.data) {
                                    Ok(v) if v.get("error").is_some() => Err(ClientError::Server {
                                        status: 500,
                                        detail: error_text(&v["error"]),
                                    }),
                                    Ok(v) => Ok(v),
                                    Err(e) => Err(ClientError::Invalid(format!(
                                        "a stream event is not JSON: {e}"
                                    ))),
                                };
                                let stop = item.is_err();
                                return Some((item, (bytes, framer, stop)));
                            }
                            Some(Err(e)) => {
                                let err = ClientError::Invalid(e.to_string());
                                return Some((Err(err), (bytes, framer, true)));
                            }
                            None => {}
                        }
                        match bytes.next().await {
                            Some(Ok(chunk)) => framer.push(&chunk),
                            Some(Err(e)) => {
                                let err = ClientError::Connect {
                                    endpoint,
                                    reason: root_cause(&e),
                                };
                                return Some((Err(err), (bytes, framer, true)));
                            }
                            None => return None,
                        }
                    }
                }
            },
        );
        Ok(events)
    }
}

/// The `detail` of an error body (`{"detail": "..."}`); upstream's validation errors carry a
/// list there, shown as JSON; a body that is not JSON is shown as it is.
fn error_detail(text: String) -> String {
    if let Ok(body) = serde_json::from_str::<ErrorBody>(&text) {
        return body.detail;
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if !v["detail"].is_null() => v["detail"].to_string(),
        _ if text.is_empty() => "no detail".into(),
        _ => text,
    }
}

fn error_text(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        other => other["message"]
            .as_str()
            .or(other["detail"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| other.to_string()),
    }
}

/// The innermost cause of a reqwest error ("Connection refused (os error 111)").
fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_detail;

    #[test]
    fn error_details_are_read_from_any_body() {
        let cases = [
            (
                r#"{"detail": "Not enough permissions"}"#,
                "Not enough permissions",
            ),
            (
                r#"{"detail": [{"loc": ["body"], "msg": "field required"}]}"#,
                r#"[{"loc":["body"],"msg":"field required"}]"#,
            ),
            (r#"{"error": "x"}"#, r#"{"error": "x"}"#),
            ("Bad Gateway", "Bad Gateway"),
            ("", "no detail"),
        ];
        for (body, want) in cases {
            assert_eq!(error_detail(body.to_string()), want, "{body}");
        }
    }
}
