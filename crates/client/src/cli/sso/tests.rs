//! Tests of `login --sso`: PKCE, the loopback listener over real TCP, the poll loop.

use super::*;
use crate::cli::test_server::server;
use crate::token_store;
use serde_json::json;

#[test]
fn the_challenge_of_rfc_7636_appendix_b() {
    // The verifier there is the base64url of these 32 octets.
    let octets = [
        116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37,
        77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121u8,
    ];
    let verifier = URL_SAFE_NO_PAD.encode(octets);
    assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    assert_eq!(
        challenge(&verifier),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn verifiers_are_43_url_safe_characters_and_differ() {
    let a = Pkce::generate();
    let b = Pkce::generate();
    assert_eq!(a.verifier.len(), 43);
    assert!(a
        .verifier
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    assert_ne!(a.verifier, b.verifier);
    assert_eq!(a.challenge, challenge(&a.verifier));
}

#[test]
fn the_authorize_address_encodes_its_parameters() {
    let url = authorize_url(
        "http://h:9997/",
        "my idp",
        "http://127.0.0.1:4242/callback",
        "abc-_",
    );
    assert_eq!(
        url,
        "http://h:9997/api/oidc/authorize?provider=my+idp\
         &cli_redirect=http%3A%2F%2F127.0.0.1%3A4242%2Fcallback&cli_challenge=abc-_"
    );
}

fn provider(name: &str) -> SsoProvider {
    SsoProvider {
        name: name.into(),
        display_name: format!("{name} IdP"),
    }
}

#[test]
fn the_provider_is_the_one_named_or_the_only_one() {
    let one = [provider("a")];
    let two = [provider("a"), provider("b")];
    assert_eq!(pick_provider(&one, None, "E").unwrap().name, "a");
    assert_eq!(pick_provider(&two, Some("b"), "E").unwrap().name, "b");
    let err = pick_provider(&two, None, "E").unwrap_err().to_string();
    assert!(err.contains("a, b") && err.contains("--provider"), "{err}");
    let err = pick_provider(&two, Some("c"), "E").unwrap_err().to_string();
    assert!(err.contains("\"c\"") && err.contains("a, b"), "{err}");
    let err = pick_provider(&[], None, "E").unwrap_err().to_string();
    assert!(err.contains("no single sign-on"), "{err}");
}

#[test]
fn callback_requests_are_read() {
    assert_eq!(
        parse_callback("GET /callback?code=a%2Bb&state=x HTTP/1.1"),
        Callback::Code("a+b".into())
    );
    assert_eq!(
        parse_callback("GET /callback?error=access_denied&error_description=no+way HTTP/1.1"),
        Callback::Failed("access_denied: no way".into())
    );
    assert_eq!(
        parse_callback("GET /callback?error=x%1b%5b2Jy HTTP/1.1"),
        Callback::Failed("x[2Jy".into()),
        "no escape sequences reach the terminal"
    );
    assert_eq!(
        parse_callback("GET /callback HTTP/1.1"),
        Callback::Malformed
    );
    assert_eq!(
        parse_callback("GET /callback?code= HTTP/1.1"),
        Callback::Malformed
    );
    assert_eq!(
        parse_callback("GET /favicon.ico HTTP/1.1"),
        Callback::Elsewhere
    );
    assert_eq!(
        parse_callback("POST /callback?code=x HTTP/1.1"),
        Callback::Elsewhere
    );
    assert_eq!(parse_callback(""), Callback::Elsewhere);
}

/// Sends `request` over a real TCP connection and returns the whole answer.
async fn send(addr: &str, request: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    answer
}

fn host_of(redirect: &str) -> String {
    redirect
        .trim_start_matches("http://")
        .trim_end_matches("/callback")
        .to_string()
}

#[tokio::test]
async fn the_loopback_port_answers_other_paths_404_and_takes_the_code() {
    let listener = Loopback::bind().await.unwrap();
    assert!(listener.redirect.starts_with("http://127.0.0.1:"));
    let addr = host_of(&listener.redirect);
    let waiting = tokio::spawn(listener.code(Duration::from_secs(10)));
    // A spare connection that never sends anything holds up nothing.
    let _idle = TcpStream::connect(&addr).await.unwrap();
    let answer = send(
        &addr,
        "GET /favicon.ico HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let answer = send(&addr, "GET /callback HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let answer = send(
        &addr,
        "GET /callback?code=hand%2Foff HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("text/html"), "{answer}");
    assert!(answer.contains("You can close this window"), "{answer}");
    assert_eq!(waiting.await.unwrap().unwrap(), "hand/off");
}

#[tokio::test]
async fn the_loopback_port_reports_a_failed_login_and_gives_up_after_the_wait() {
    let listener = Loopback::bind().await.unwrap();
    let addr = host_of(&listener.redirect);
    let waiting = tokio::spawn(listener.code(Duration::from_secs(10)));
    let answer = send(
        &addr,
        "GET /callback?error=access_denied HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let err = waiting.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("access_denied"), "{err}");

    let listener = Loopback::bind().await.unwrap();
    let err = listener
        .code(Duration::from_millis(50))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not come back"), "{err}");
}

fn server_error(detail: &str) -> ClientError {
    ClientError::Server {
        status: 400,
        detail: detail.into(),
    }
}

#[test]
fn poll_errors_wait_longer_or_stop() {
    assert_eq!(
        next_interval(server_error("authorization_pending"), 5).unwrap(),
        5
    );
    assert_eq!(next_interval(server_error("slow_down"), 5).unwrap(), 10);
    let err = next_interval(server_error("expired_token"), 5).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    let err = next_interval(server_error("access_denied"), 5).unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    let err = next_interval(server_error("Unknown device login"), 5).unwrap_err();
    assert!(
        matches!(err, ClientError::Server { status: 400, .. }),
        "{err}"
    );
    let other = ClientError::Server {
        status: 503,
        detail: "authorization_pending".into(),
    };
    assert!(next_interval(other, 5).is_err());
}

fn device(expires_in: u64, interval: u64) -> DeviceLoginStarted {
    DeviceLoginStarted {
        handle: "h1".into(),
        user_code: "ABCD-EFGH".into(),
        verification_uri: "http://idp/device".into(),
        verification_uri_complete: None,
        expires_in,
        interval,
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test]
async fn polling_waits_through_pending_and_slow_down_then_takes_the_tokens() {
    let (endpoint, seen) = server(vec![
        (400, json!({"detail": "authorization_pending"})),
        (400, json!({"detail": "slow_down"})),
        (
            200,
            json!({"access_token": "a", "token_type": "bearer", "expires_in": 60,
                   "refresh_token": "r", "must_change_password": false, "provider": "p"}),
        ),
    ])
    .await;
    let client = Client::new(&endpoint, None);
    let started = Instant::now();
    let reply = poll_device(&client, &device(600, 1), MS * 10)
        .await
        .unwrap();
    assert_eq!(reply.access_token, "a");
    assert_eq!(reply.refresh_token.as_deref(), Some("r"));
    // 1 + 1 + (1 + 5) intervals of 10 ms.
    assert!(started.elapsed() >= MS * 80, "{:?}", started.elapsed());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_eq!(request.line, "POST /v1/auth/sso/device/token HTTP/1.1");
        assert_eq!(
            serde_json::from_str::<Value>(&request.body).unwrap(),
            json!({"handle": "h1"})
        );
    }
}

#[tokio::test]
async fn polling_stops_on_a_denial_and_at_the_expiry() {
    let (endpoint, _) = server(vec![
        (400, json!({"detail": "authorization_pending"})),
        (400, json!({"detail": "access_denied"})),
    ])
    .await;
    let client = Client::new(&endpoint, None);
    let err = poll_device(&client, &device(600, 1), MS).await.unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");

    let pending = vec![(400, json!({"detail": "authorization_pending"})); 20];
    let (endpoint, seen) = server(pending).await;
    let client = Client::new(&endpoint, None);
    // Polls at 2 and 4 "seconds" of 50 ms; the next would be past the 5.
    let err = poll_device(&client, &device(5, 2), MS * 50)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("within 5 s"), "{err}");
    let polls = seen.lock().unwrap().len();
    assert!((1..=2).contains(&polls), "{polls}");
}

fn jwt(sub: &str) -> String {
    let payload = URL_SAFE_NO_PAD.encode(json!({ "sub": sub }).to_string());
    format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig")
}

#[test]
fn the_subject_is_read_from_a_jwt() {
    assert_eq!(token_subject(&jwt("ann")).as_deref(), Some("ann"));
    assert_eq!(token_subject("sk-123"), None);
}

fn test_options(urls: std::rc::Rc<std::cell::RefCell<Vec<String>>>) -> Options {
    Options {
        second: MS,
        callback_wait: Duration::from_secs(10),
        show_url: Box::new(move |url: &str| urls.borrow_mut().push(url.to_string())),
    }
}

fn providers_body() -> Value {
    json!({"providers": [{"name": "testidp", "display_name": "Test IdP"}]})
}

fn tokens(access: &str) -> Value {
    json!({"access_token": access, "token_type": "bearer", "expires_in": 60,
           "refresh_token": "r1", "must_change_password": false, "provider": "testidp"})
}

#[tokio::test]
async fn a_device_login_stores_the_tokens_like_a_password_login() {
    let (endpoint, seen) = server(vec![
        (200, json!({"auth": true})),
        (200, providers_body()),
        (
            200,
            json!({"handle": "h1", "user_code": "ABCD-EFGH",
                   "verification_uri": "http://idp/device",
                   "verification_uri_complete": null, "expires_in": 600, "interval": 1}),
        ),
        (400, json!({"detail": "authorization_pending"})),
        (200, tokens(&jwt("ann"))),
        (404, json!({"detail": "Not Found"})),
    ])
    .await;
    let home = tempfile::tempdir().unwrap();
    let urls = Default::default();
    login(&endpoint, home.path(), None, test_options(urls))
        .await
        .unwrap();
    assert_eq!(token_store::load(home.path(), &endpoint), Some(jwt("ann")));
    assert_eq!(
        token_store::load_refresh(home.path(), &endpoint).as_deref(),
        Some("r1")
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[1].line, "GET /v1/auth/sso/providers HTTP/1.1");
    assert_eq!(seen[2].line, "POST /v1/auth/sso/device HTTP/1.1");
    assert_eq!(
        serde_json::from_str::<Value>(&seen[2].body).unwrap(),
        json!({"provider": "testidp"})
    );
    assert_eq!(seen[5].line, "GET /v1/auth/me HTTP/1.1");
    assert_eq!(
        seen[5].authorization,
        Some(format!("Bearer {}", jwt("ann")))
    );
}

#[tokio::test]
async fn without_device_authorization_the_browser_comes_back_to_the_loopback_port() {
    let (endpoint, seen) = server(vec![
        (200, json!({"auth": true})),
        (200, providers_body()),
        (
            400,
            json!({"detail": "Provider testidp does not offer device authorization"}),
        ),
        (200, tokens("a2")),
        (
            200,
            json!({"id": 3, "username": "bob", "source": "oidc", "permissions": [],
                   "must_change_password": false, "credential": "token"}),
        ),
    ])
    .await;
    let home = tempfile::tempdir().unwrap();
    // An old refresh token is replaced.
    token_store::save_refresh(home.path(), &endpoint, "old").unwrap();
    let urls: std::rc::Rc<std::cell::RefCell<Vec<String>>> = Default::default();
    let logging_in = login(
        &endpoint,
        home.path(),
        Some("testidp"),
        test_options(urls.clone()),
    );
    // The browser: once the address is shown, the server's redirect lands on our port.
    let browser = async {
        let url = loop {
            if let Some(url) = urls.borrow().first().cloned() {
                break url;
            }
            tokio::time::sleep(MS).await;
        };
        let query = url.split_once('?').unwrap().1;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        let redirect = &pairs.iter().find(|p| p.0 == "cli_redirect").unwrap().1;
        let addr = host_of(redirect);
        let answer = send(
            &addr,
            "GET /callback?code=handoff1 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        pairs
    };
    let (result, pairs) = tokio::join!(logging_in, browser);
    result.unwrap();
    assert!(urls.borrow()[0].starts_with(&format!("{endpoint}/api/oidc/authorize?")));
    assert_eq!(pairs[0], ("provider".into(), "testidp".into()));
    assert_eq!(pairs[2].0, "cli_challenge");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[3].line, "POST /v1/auth/sso/exchange HTTP/1.1");
    let exchange: Value = serde_json::from_str(&seen[3].body).unwrap();
    assert_eq!(exchange["code"], "handoff1");
    let verifier = exchange["code_verifier"].as_str().unwrap();
    assert_eq!(challenge(verifier), pairs[2].1);
    assert_eq!(
        token_store::load(home.path(), &endpoint).as_deref(),
        Some("a2")
    );
    assert_eq!(
        token_store::load_refresh(home.path(), &endpoint).as_deref(),
        Some("r1")
    );
}

#[tokio::test]
async fn other_device_errors_are_not_a_reason_for_the_browser() {
    let (endpoint, _) = server(vec![
        (200, json!({"auth": true})),
        (200, providers_body()),
        (
            503,
            json!({"detail": "The identity provider is unreachable"}),
        ),
    ])
    .await;
    let home = tempfile::tempdir().unwrap();
    let urls: std::rc::Rc<std::cell::RefCell<Vec<String>>> = Default::default();
    let err = login(&endpoint, home.path(), None, test_options(urls.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(urls.borrow().is_empty());
    assert_eq!(token_store::load(home.path(), &endpoint), None);
}
