//! Discovery: the document must name our issuer exactly; a provider that cannot be reached
//! is "unavailable" (503), never a panic or a hang.

use serde_json::json;
use xi_oidc::provider::Provider;
use xi_oidc::OidcError;
use xi_testkit::oidc::TestIdp;

use crate::support::{provider, settings};

#[tokio::test]
async fn discovery_names_the_endpoints_and_must_name_our_issuer() {
    let idp = TestIdp::start();
    let metadata = provider(&idp).metadata().await.unwrap();
    assert!(metadata.token_endpoint.starts_with(idp.issuer()));
    assert!(metadata.device_authorization_endpoint.is_some());
    assert!(metadata.end_session_endpoint.is_some());

    // The same provider under another spelling of its issuer (a trailing slash) is refused:
    // OpenID Connect Discovery 4.3 wants them equal, or tokens could be mixed up.
    let slash = format!("{}/", idp.issuer());
    let config = settings(&slash, idp.client_secret(), json!({}))
        .providers
        .remove(0);
    let err = Provider::new(config).unwrap().metadata().await.unwrap_err();
    assert!(
        matches!(&err, OidcError::Upstream(m) if m.contains("names another issuer")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_unavailable() {
    let config = settings("http://127.0.0.1:9", "s", json!({}))
        .providers
        .remove(0);
    let provider = Provider::new(config).unwrap();
    let started = std::time::Instant::now();
    let err = provider.metadata().await.unwrap_err();
    assert!(
        matches!(&err, OidcError::Unavailable(m) if m.contains("unreachable")),
        "{err:?}"
    );
    assert!(
        started.elapsed().as_secs() < 10,
        "bounded by the connect timeout"
    );
}
