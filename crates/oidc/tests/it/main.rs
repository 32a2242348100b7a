//! xi-oidc against a real identity provider (`oidc-provider`, started per test by xi-testkit):
//! discovery, JWKS and every refusal of a token, with tokens signed by the provider's own keys
//! (or another provider's) so that each check is the only one that fails.

mod discovery;
mod support;
mod tokens;
