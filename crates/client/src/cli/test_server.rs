//! A real HTTP/1.1 server for the CLI's tests: canned answers, one per connection, and a log of
//! what the client sent.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

/// One request as the test server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub authorization: Option<String>,
    pub body: String,
}

/// A real HTTP/1.1 server on 127.0.0.1:0 answering `answers` (status, JSON body) in order,
/// one per connection, then 500 to anything more; returns its endpoint and what it saw.
pub async fn server(answers: Vec<(u16, Value)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let request = read_request(&socket).await;
            log.lock().unwrap().push(request);
            let (status, body) = answers
                .next()
                .unwrap_or((500, json!({"detail": "unexpected request"})));
            let body = body.to_string();
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            write_all(&socket, response.as_bytes()).await;
            // Dropping the socket closes the connection.
        }
    });
    (endpoint, seen)
}

/// (The crate's tokio has no `io-util`: the readiness calls of `net` do.)
async fn read_some(socket: &TcpStream, buf: &mut [u8]) -> usize {
    loop {
        socket.readable().await.unwrap();
        match socket.try_read(buf) {
            Ok(n) => return n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

async fn write_all(socket: &TcpStream, mut data: &[u8]) {
    while !data.is_empty() {
        socket.writable().await.unwrap();
        match socket.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

async fn read_request(socket: &TcpStream) -> Seen {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = read_some(socket, &mut buf).await;
        assert!(n > 0, "the client closed before a whole request");
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    while data.len() < head_end + length {
        let n = read_some(socket, &mut buf).await;
        assert!(n > 0);
        data.extend_from_slice(&buf[..n]);
    }
    Seen {
        line: head.lines().next().unwrap_or_default().to_string(),
        authorization: header("authorization"),
        body: String::from_utf8_lossy(&data[head_end..head_end + length]).to_string(),
    }
}
