//! The web UI's static files: public even with auth on, strict security headers, every module
//! the page imports is served, unknown files are JSON 404s.

use reqwest::{redirect, Client, StatusCode};

use crate::support::{auth_config, json_of, TestServer};

fn client() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

fn server() -> TestServer {
    TestServer::with_auth(&auth_config(&[("admin", "pw", &["admin"], &[])]))
}

/// The files `text` refers to: `src="x"`/`href="x"` in HTML, `from './x.js'` in modules.
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (open, close) in [("src=\"", '"'), ("href=\"", '"'), ("from './", '\'')] {
        for piece in text.split(open).skip(1) {
            let name = piece.split(close).next().unwrap().trim_start_matches("./");
            if !name.starts_with('#') && !name.is_empty() {
                found.push(name.to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn the_root_redirects_to_the_ui_which_is_served_without_credentials() {
    let server = server();
    let client = client();
    for path in ["/", "/ui"] {
        let res = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT, "{path}");
        assert_eq!(res.headers()["location"], "ui/", "{path}");
    }

    // Auth is on, yet the page needs no token (and a bad one does not matter): it logs in itself.
    for auth in [None, Some("Bearer not-a-token")] {
        let mut req = client.get(server.url("/ui/"));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        let headers = res.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-cache");
        let body = res.text().await.unwrap();
        assert!(body.contains("<script type=\"module\" src=\"app.js\"></script>"));
    }

    // Being logged out does not open anything else.
    let res = client.get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn every_file_the_page_refers_to_is_served_with_its_content_type() {
    let server = server();
    let client = client();
    let mut todo = vec!["index.html".to_string()];
    let mut seen: Vec<String> = Vec::new();
    while let Some(name) = todo.pop() {
        if seen.contains(&name) {
            continue;
        }
        let path = match name.as_str() {
            "index.html" => "/ui/".to_string(),
            other => format!("/ui/{other}"),
        };
        let res = client.get(server.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let want = match name.rsplit_once('.').unwrap().1 {
            "html" => "text/html; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("{name}: unexpected extension {other}"),
        };
        assert_eq!(res.headers()["content-type"], want, "{path}");
        assert!(res.headers().contains_key("content-security-policy"));
        let text = res.text().await.unwrap();
        todo.extend(references(&text));
        seen.push(name);
    }
    for module in [
        "app.js",
        "api.js",
        "session.js",
        "page-login.js",
        "page-chat.js",
    ] {
        assert!(
            seen.iter().any(|s| s == module),
            "{module} not reached: {seen:?}"
        );
    }
}

#[tokio::test]
async fn unknown_files_are_json_404s_and_unchanged_files_are_not_resent() {
    let server = server();
    let client = client();
    for path in ["/ui/nope.js", "/ui/..%2FCargo.toml", "/ui/index.htm"] {
        let (status, body) = json_of(client.get(server.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    // Only GET is open: any other method is an API call like the rest, so it needs a login.
    let (status, body) = json_of(client.post(server.url("/ui/")).send().await.unwrap()).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("Not authenticated"))
    );

    let res = client.get(server.url("/ui/app.js")).send().await.unwrap();
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let res = client
        .get(server.url("/ui/app.js"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    assert!(res.bytes().await.unwrap().is_empty());
    let res = client
        .get(server.url("/ui/app.js"))
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
