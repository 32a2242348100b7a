//! Single sign-on through the real binary and a real OpenID provider (`oidc-provider`, started
//! per test by xi-testkit): the browser's code flow (played by a cookie-keeping client through
//! the provider's own login and consent pages), its refusals, the CLI's loopback and device
//! flows, the provider's access tokens on the API, and a provider that is down.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use xi_testkit::oidc::{browser_client, browserless_login, TestIdp, API_AUDIENCE, WEB_CLIENT};

use crate::support::{write_json, Local};

mod browser;
mod cli;
mod setup;

/// A server with single sign-on at a fresh provider.
struct Sso {
    idp: TestIdp,
    local: Local,
    _dir: TempDir,
}

fn provider_config(issuer: &str, secret_file: &str) -> Value {
    json!({"providers": [{
        "name": "testidp",
        "display_name": "Test IdP",
        "issuer": issuer,
        "client_id": WEB_CLIENT,
        "client_secret_file": secret_file,
        "scopes": ["openid", "profile", "email", "groups"],
        "group_permissions": {"xi-admins": ["admin"], "xi-users": ["models:list", "models:read"]},
        "default_permissions": [],
        "api_audience": API_AUDIENCE,
    }]})
}

impl Sso {
    fn start() -> Sso {
        let idp = TestIdp::start();
        let dir = TempDir::new().unwrap();
        let config = dir.path().join("oidc.json");
        let secret = idp.client_secret_file();
        write_json(
            &config,
            &provider_config(idp.issuer(), secret.to_str().unwrap()),
        );
        let local = Local::start(
            &dir.path().join("home"),
            &["--auth", "--oidc-config", config.to_str().unwrap()],
        );
        Sso {
            idp,
            local,
            _dir: dir,
        }
    }

    fn authorize(&self) -> String {
        self.local.url("/api/oidc/authorize?provider=testidp")
    }

    /// A whole browser login as `login`: the provider's pages, our callback, the exchange.
    async fn browser_login(&self, login: &str) -> Value {
        let browser = browser_client();
        let callback = browserless_login(&browser, &self.authorize(), login).await;
        let res = browser.get(&callback).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND, "{}", self.local.logs());
        let location = location(&res);
        let code = location
            .strip_prefix("/ui/#/sso/")
            .unwrap_or_else(|| panic!("to the UI with a one-time code: {location}"));
        let res = exchange(&browser, &self.local, code, None).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

fn location(res: &reqwest::Response) -> String {
    res.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string()
}

/// `POST /v1/auth/sso/exchange` from `client` (a browser's carries its binding cookie).
async fn exchange(
    client: &Client,
    local: &Local,
    code: &str,
    verifier: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({ "code": code });
    if let Some(verifier) = verifier {
        body["code_verifier"] = json!(verifier);
    }
    client
        .post(local.url("/v1/auth/sso/exchange"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get_as(local: &Local, path: &str, token: &str) -> (StatusCode, Value) {
    let res = Client::new()
        .get(local.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/auth/me` with `token`.
async fn whoami(local: &Local, token: &str) -> Value {
    let (status, me) = get_as(local, "/v1/auth/me", token).await;
    assert_eq!(status, 200, "{me}");
    me
}

async fn detail(res: reqwest::Response) -> (StatusCode, String) {
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (status, body["detail"].as_str().unwrap_or("").to_string())
}

fn param(url: &str, name: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn replace_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

async fn post_json(local: &Local, path: &str, body: Value) -> reqwest::Response {
    Client::new()
        .post(local.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A token signed with one of the provider's keys.
fn signed(idp: &TestIdp, claims: &Value, kid: Option<&str>) -> String {
    let (own_kid, pem) = idp.rsa_key();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.unwrap_or(own_kid).to_string());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}
