//! The browser's code flow, played through the provider's own pages: users and their
//! permissions, no takeover by name, every refused callback, and logout.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use xi_testkit::oidc::{browser_client, browserless_deny, browserless_login, browserless_logout};

use crate::support::get_json;

use super::*;

#[tokio::test]
async fn a_browser_login_creates_the_user_and_its_groups_decide_its_permissions() {
    let sso = Sso::start();
    let providers: Value = get_json(&Client::new(), sso.local.url("/v1/auth/sso/providers")).await;
    assert_eq!(
        providers,
        json!({"providers": [{"name": "testidp", "display_name": "Test IdP"}]})
    );

    let alice = sso.browser_login("alice").await;
    assert_eq!(alice["provider"], "testidp");
    let token = alice["access_token"].as_str().unwrap();
    let (status, me) = get_as(&sso.local, "/v1/auth/me", token).await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "alice");
    assert_eq!(
        me["permissions"],
        json!(["admin"]),
        "xi-admins maps to admin"
    );
    assert_eq!(me["source"], "oidc");

    // A second login is the same user (issuer + subject), not a new one.
    let again = sso.browser_login("alice").await;
    let admin = again["access_token"].as_str().unwrap().to_string();
    let (_, users) = get_as(&sso.local, "/v1/admin/users", &admin).await;
    let alices: Vec<&Value> = users
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["username"] == "alice")
        .collect();
    assert_eq!(alices.len(), 1, "{users}");
    assert_eq!(alices[0]["source"], "oidc");

    // bob's group grants model use only: no launches, no admin routes.
    let bob = sso.browser_login("bob").await;
    let bob_token = bob["access_token"].as_str().unwrap();
    let me = whoami(&sso.local, bob_token).await;
    assert_eq!(me["permissions"], json!(["models:list", "models:read"]));
    assert_eq!(get_as(&sso.local, "/v1/models", bob_token).await.0, 200);
    assert_eq!(
        get_as(&sso.local, "/v1/admin/users", bob_token).await.0,
        403
    );

    // carol is in no group and the defaults are empty: she is let in with nothing.
    let carol = sso.browser_login("carol").await;
    let carol_token = carol["access_token"].as_str().unwrap();
    assert_eq!(get_as(&sso.local, "/v1/models", carol_token).await.0, 403);

    // Our refresh tokens work as after a password login.
    let res = Client::new()
        .post(sso.local.url("/v1/auth/refresh"))
        .json(&json!({"refresh_token": bob["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // A password would be a second way into an account the provider vouches for.
    let bob_id = users_id(&sso.local, &admin, "bob").await;
    let res = Client::new()
        .put(sso.local.url(&format!("/v1/admin/users/{bob_id}/password")))
        .bearer_auth(&admin)
        .json(&json!({"new_password": "a-password-for-bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);

    // An admin disables bob here: the provider cannot log him in any more.
    let res = Client::new()
        .put(sso.local.url(&format!("/v1/admin/users/{bob_id}")))
        .bearer_auth(&admin)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let browser = browser_client();
    let callback = browserless_login(&browser, &sso.authorize(), "bob").await;
    let (status, message) = detail(browser.get(&callback).send().await.unwrap()).await;
    assert_eq!(status, 403);
    assert_eq!(message, "User account is disabled");
    // Nor can his own access tokens from the provider reach the API.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": sso.idp.issuer(), "sub": "bob", "aud": API_AUDIENCE,
        "iat": now, "exp": now + 300, "groups": ["xi-users"]});
    let (status, body) = get_as(&sso.local, "/v1/models", &signed(&sso.idp, &claims, None)).await;
    assert_eq!(status, 403, "{body}");
}

async fn users_id(local: &Local, admin: &str, name: &str) -> i64 {
    let (_, users) = get_as(local, "/v1/admin/users", admin).await;
    users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .and_then(|u| u["id"].as_i64())
        .unwrap_or_else(|| panic!("{name} in {users}"))
}

#[tokio::test]
async fn a_provider_user_never_takes_over_an_account_by_name() {
    let sso = Sso::start();
    let alice = sso.browser_login("alice").await;
    let alice = alice["access_token"].as_str().unwrap();
    let res = Client::new()
        .post(sso.local.url("/v1/admin/users"))
        .bearer_auth(alice)
        .json(&json!({"username": "bob", "password": "bob-local-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let bob = sso.browser_login("bob").await;
    let me = whoami(&sso.local, bob["access_token"].as_str().unwrap()).await;
    assert_eq!(
        me["username"], "bob@testidp",
        "the local bob stays the local bob"
    );
    // The provider's "admin" is not our bootstrap admin either.
    let provider_admin = sso.browser_login("admin").await;
    let me = whoami(&sso.local, provider_admin["access_token"].as_str().unwrap()).await;
    assert_eq!(me["username"], "admin@testidp");
}

#[tokio::test]
async fn callbacks_that_do_not_belong_to_this_login_are_refused() {
    let sso = Sso::start();
    let browser = browser_client();
    let callback = browserless_login(&browser, &sso.authorize(), "alice").await;

    // Another state than the one this browser's cookie holds (login CSRF).
    let forged = replace_param(&callback, "state", "forged-state-value");
    let (status, message) = detail(browser.get(&forged).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("state"), "{message}");
    // The right callback from a browser that did not start the login.
    let (status, message) = detail(browser_client().get(&callback).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("not started in this browser"), "{message}");
    // The real one works once ...
    let res = browser.get(&callback).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let code = location(&res).trim_start_matches("/ui/#/sso/").to_string();
    // ... and a replay of it does not.
    let (status, _) = detail(browser.get(&callback).send().await.unwrap()).await;
    assert_eq!(status, 400);
    // The one-time code works once too, and only in the browser it came back to: a code
    // sent to someone else (login CSRF) is useless there.
    let (status, message) = detail(exchange(&Client::new(), &sso.local, &code, None).await).await;
    assert_eq!(
        (status.as_u16(), message.as_str()),
        (400, "Invalid or expired login code")
    );
    let callback = browserless_login(&browser, &sso.authorize(), "alice").await;
    let res = browser.get(&callback).send().await.unwrap();
    let code = location(&res).trim_start_matches("/ui/#/sso/").to_string();
    assert_eq!(
        exchange(&browser, &sso.local, &code, None).await.status(),
        200
    );
    let (status, message) = detail(exchange(&browser, &sso.local, &code, None).await).await;
    assert_eq!(
        (status.as_u16(), message.as_str()),
        (400, "Invalid or expired login code")
    );

    // A used authorization code under a fresh login: the provider refuses it (invalid_grant).
    let used_code = param(&callback, "code");
    let fresh = browserless_login(&browser, &sso.authorize(), "alice").await;
    let replayed = replace_param(&fresh, "code", &used_code);
    let (status, message) = detail(browser.get(&replayed).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("invalid_grant"), "{message}");

    // An answer whose issuer was stripped (RFC 9207: this provider always names it) or
    // swapped: a mix-up with another provider.
    let fresh = browserless_login(&browser, &sso.authorize(), "alice").await;
    let mut stripped = reqwest::Url::parse(&fresh).unwrap();
    let kept: Vec<(String, String)> = stripped
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    stripped.query_pairs_mut().clear().extend_pairs(kept);
    let (status, message) = detail(browser.get(stripped.as_str()).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("does not name its issuer"), "{message}");
    let fresh = browserless_login(&browser, &sso.authorize(), "alice").await;
    let swapped = replace_param(&fresh, "iss", "https://other.example");
    let (status, message) = detail(browser.get(&swapped).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("another issuer"), "{message}");

    // The user says no at the provider.
    let denier = browser_client();
    let denied = browserless_deny(&denier, &sso.authorize(), "alice").await;
    let (status, message) = detail(denier.get(&denied).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(message.contains("access_denied"), "{message}");

    // Unknown provider.
    let res = Client::new()
        .get(sso.local.url("/api/oidc/authorize?provider=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn logout_ends_our_session_then_the_providers() {
    let sso = Sso::start();
    let browser = browser_client();
    let callback = browserless_login(&browser, &sso.authorize(), "alice").await;
    let res = browser.get(&callback).send().await.unwrap();
    let code = location(&res).trim_start_matches("/ui/#/sso/").to_string();
    let tokens: Value = exchange(&browser, &sso.local, &code, None)
        .await
        .json()
        .await
        .unwrap();
    let res = post_json(
        &sso.local,
        "/v1/auth/logout",
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(get_as(&sso.local, "/v1/auth/me", access).await.0, 401);

    let res = browser
        .get(sso.local.url("/api/oidc/logout?provider=testidp"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let to_provider = location(&res);
    assert!(to_provider.starts_with(sso.idp.issuer()), "{to_provider}");
    assert_eq!(param(&to_provider, "client_id"), WEB_CLIENT);
    let back = browserless_logout(&browser, &to_provider).await;
    assert!(back.starts_with(&sso.local.url("/ui/")), "{back}");
}
