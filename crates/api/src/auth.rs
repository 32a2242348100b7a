//! Login and token shapes (`POST /token`, `GET /v1/cluster/auth`).

use serde::{Deserialize, Serialize};

/// `POST /token` body, as JSON (SDK, CLI, web UI) or as the OAuth2 password form.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// `POST /token` success body.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `"bearer"`.
    #[serde(default)]
    pub token_type: String,
    /// Seconds until the token expires (upstream Xinference does not send it: 0 then).
    #[serde(default)]
    pub expires_in: u64,
    /// With an identity store: the refresh token (`POST /v1/auth/refresh`), single use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Set when the account must change its password before anything else.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_change_password: bool,
    /// A single sign-on login: the provider's name (its logout goes through it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"***")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("must_change_password", &self.must_change_password)
            .finish()
    }
}

/// `GET /v1/cluster/auth` body.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuthStatus {
    pub auth: bool,
}
