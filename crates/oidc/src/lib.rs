//! OpenID Connect single sign-on for xinference-rs: an HTTP *client* of identity providers
//! (Keycloak, Entra ID, Okta, Google, Authentik, ...); no HTTP server here.
//!
//! Parts: [`config`] (providers from the auth config's `oidc` section, an `--oidc-config` file
//! or flags, each error naming its field), [`provider`] (discovery, JWKS cache with a
//! rate-limited refetch on an unknown `kid`, the token, userinfo, device and end-session
//! requests), [`verify`] (JWT checks with the algorithm pinned to the key), [`flow`] (state,
//! nonce, PKCE and one-time codes, bounded and expiring), [`mapping`] (claims to a user and
//! permissions) and [`sso`]: [`Sso`], what the supervisor calls.
//!
//! Invariants: only asymmetric signatures are accepted, from keys the provider's JWKS
//! publishes; every `state`, login code and device handle is used at most once; the client
//! secret is a [`xi_auth::Secret`] and no token is ever logged; a provider that cannot be
//! reached is [`OidcError::Unavailable`] (503), never a reason to stop the server.

pub mod config;
pub mod error;
pub mod flow;
pub mod http;
pub mod mapping;
pub mod provider;
pub mod sso;
pub mod verify;

pub use config::{OidcSettings, ProviderConfig};
pub use error::OidcError;
pub use flow::{CliReturn, Handoffs};
pub use mapping::FederatedUser;
pub use sso::{DeviceHandle, Finished, Sso};
