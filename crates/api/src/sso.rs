//! Single sign-on shapes (`/v1/auth/sso/*`, `/v1/cluster/ui_config`). The browser's part
//! (`/api/oidc/authorize`, `/callback`, `/logout`) is redirects, with query parameters only.

use serde::{Deserialize, Serialize};

/// One provider as the login page and the CLI see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SsoProvider {
    pub name: String,
    pub display_name: String,
}

/// `GET /v1/auth/sso/providers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SsoProviders {
    pub providers: Vec<SsoProvider>,
}

/// `POST /v1/auth/sso/exchange`: a one-time login code for the session's tokens.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoExchange {
    pub code: String,
    /// Required when the login was started with `cli_challenge` (the CLI's loopback flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<String>,
}

impl std::fmt::Debug for SsoExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SsoExchange { *** }")
    }
}

/// `POST /v1/auth/sso/device`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceLoginRequest {
    /// The provider's name; `None`: the first configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// `POST /v1/auth/sso/device` answer (RFC 8628 3.2, with our handle for the device code).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceLoginStarted {
    /// What to poll `/v1/auth/sso/device/token` with (the provider's device code stays on
    /// the server, with the client secret).
    pub handle: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

impl std::fmt::Debug for DeviceLoginStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLoginStarted")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/auth/sso/device/token`.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTokenRequest {
    pub handle: String,
}

impl std::fmt::Debug for DeviceTokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceTokenRequest { *** }")
    }
}

/// `GET /v1/cluster/ui_config` (upstream's shape; it adds monitoring settings we do not have).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UiConfig {
    /// Users, keys and sessions live in the identity store.
    pub auth_advanced: bool,
    pub oidc_enabled: bool,
    /// `POST /token` (password logins) is served.
    pub token_router_enabled: bool,
}
