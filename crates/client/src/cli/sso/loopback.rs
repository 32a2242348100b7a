//! The loopback half of the browser flow: a one-shot HTTP listener on 127.0.0.1 that waits
//! for the browser to come back with the one-time code (RFC 8252 7.3).

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

pub struct Loopback {
    listener: TcpListener,
    pub redirect: String,
}

/// What one request to the loopback port was.
#[derive(Debug, PartialEq)]
pub enum Callback {
    /// `GET /callback?code=...`: the one-time code.
    Code(String),
    /// `GET /callback?error=...`: the login failed (the error and its description).
    Failed(String),
    /// `/callback` without either.
    Malformed,
    /// Any other path or method (the browser's `/favicon.ico`, ...).
    Elsewhere,
}

impl Loopback {
    pub async fn bind() -> Result<Loopback, ClientError> {
        let fail = |e: std::io::Error| {
            ClientError::Invalid(format!("cannot listen on 127.0.0.1 for the browser: {e}"))
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
        let port = listener.local_addr().map_err(fail)?.port();
        Ok(Loopback {
            listener,
            redirect: format!("http://127.0.0.1:{port}/callback"),
        })
    }

    /// Answers requests until one brings the code (or the login's error), for at most `wait`.
    /// Each connection is served on its own task, so an idle one holds up nothing.
    pub async fn code(self, wait: Duration) -> Result<String, ClientError> {
        let (tx, mut rx) = mpsc::channel(4);
        let serve = async {
            loop {
                tokio::select! {
                    accepted = self.listener.accept() => match accepted {
                        Ok((socket, _)) => {
                            tokio::spawn(answer(socket, tx.clone()));
                        }
                        Err(e) => {
                            return Err(ClientError::Invalid(format!(
                                "waiting for the browser failed: {e}"
                            )))
                        }
                    },
                    Some(outcome) = rx.recv() => return outcome,
                }
            }
        };
        match tokio::time::timeout(wait, serve).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ClientError::Invalid(format!(
                "the browser did not come back within {} s: run `xinference login --sso` again",
                wait.as_secs()
            ))),
        }
    }
}

/// Reads one request, answers it with a small page and, for `/callback`, reports the outcome.
async fn answer(mut socket: TcpStream, outcome: mpsc::Sender<Result<String, ClientError>>) {
    let Ok(Some(head)) = tokio::time::timeout(REQUEST_WAIT, read_head(&mut socket)).await else {
        return;
    };
    let line = head.lines().next().unwrap_or_default();
    let (status, text, result) = match parse_callback(line) {
        Callback::Code(code) => (
            "200 OK",
            "You are logged in to xinference-rs. You can close this window and return to the terminal.",
            Some(Ok(code)),
        ),
        Callback::Failed(why) => (
            "400 Bad Request",
            "The login failed; the terminal says why. You can close this window.",
            Some(Err(ClientError::Invalid(format!("the login failed: {why}")))),
        ),
        Callback::Malformed => (
            "400 Bad Request",
            "This address expects a login code.",
            None,
        ),
        Callback::Elsewhere => ("404 Not Found", "Not found.", None),
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>xinference-rs login</title></head><body><p>{text}</p></body></html>\n"
    );
    // No scripts, styles or links: the page only has to be read. No referrer, no caching: the
    // address carried the code.
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         content-security-policy: default-src 'none'\r\nreferrer-policy: no-referrer\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if socket.write_all(response.as_bytes()).await.is_ok() {
        let _ = socket.shutdown().await;
    }
    if let Some(result) = result {
        // The page is written first: the process may end as soon as the code is used.
        let _ = outcome.send(result).await;
    }
}

/// The request's head (up to the blank line), or None when the client stops before it or
/// sends more than [`MAX_HEAD`]. Read whole, so that closing the socket does not reset it.
async fn read_head(socket: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&data[..end]).into_owned());
        }
        if data.len() > MAX_HEAD {
            return None;
        }
    }
}

/// Reads a request line such as `GET /callback?code=abc HTTP/1.1`.
pub fn parse_callback(line: &str) -> Callback {
    let mut parts = line.split_whitespace();
    let (Some("GET"), Some(target)) = (parts.next(), parts.next()) else {
        return Callback::Elsewhere;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/callback" {
        return Callback::Elsewhere;
    }
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return Callback::Malformed;
    };
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    if let Some(code) = get("code") {
        return Callback::Code(code);
    }
    // Anyone on this machine can reach the port: what they send is printed without control
    // characters, so it cannot drive the terminal.
    let printable =
        |text: String| -> String { text.chars().filter(|c| !c.is_control()).take(300).collect() };
    match (get("error"), get("error_description")) {
        (Some(error), Some(description)) => {
            Callback::Failed(printable(format!("{error}: {description}")))
        }
        (Some(error), None) => Callback::Failed(printable(error)),
        _ => Callback::Malformed,
    }
}
