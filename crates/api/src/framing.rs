//! Stream framing: cutting a byte stream that arrives in arbitrary chunks into the messages it
//! carries, with a bound on how much a peer can make us buffer.
//!
//! - [`LineFramer`]: newline-delimited JSON (the worker's generation stream to the supervisor).
//! - [`SseFramer`]: Server-Sent Events as the WHATWG spec frames them (lines end in LF, CRLF or
//!   CR; a blank line ends an event; `data:` lines are joined with LF; `:` lines are
//!   comments). Upstream Xinference's server (sse-starlette) ends its lines in CRLF, ours in LF.
//!
//! Both decode text only once a line is whole, so a multi-byte character split across two
//! chunks arrives intact, and both give the same messages however the stream is chunked (the
//! `stream_framing` fuzz target checks exactly that).

/// The most bytes one line or event may take unless a framer is told otherwise: far above any
/// generation event, far below what would hurt.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Why a framer gave up on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A line (or an SSE event) grew past the limit without ending.
    TooLong { limit: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong { limit } => {
                write!(f, "a stream message is longer than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Newline-delimited messages. Push chunks, then take lines until there are none; a stream's
/// unterminated tail is [`LineFramer::rest`].
#[derive(Debug)]
pub struct LineFramer {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for a newline.
    scanned: usize,
    limit: usize,
    failed: bool,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new(MAX_FRAME_BYTES)
    }
}

impl LineFramer {
    /// A framer refusing lines longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            scanned: 0,
            limit,
            failed: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if !self.failed {
            self.buffer.extend_from_slice(chunk);
        }
    }

    /// The next whole line, without its `\n`; `None` until more is pushed. After an error
    /// the framer yields nothing more.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        if self.failed {
            return None;
        }
        match self.buffer[self.scanned..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                if line.len() > self.limit {
                    self.failed = true;
                    return Some(Err(FrameError::TooLong { limit: self.limit }));
                }
                Some(Ok(line))
            }
            None => {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.limit {
                    self.failed = true;
                    self.buffer = Vec::new();
                    return Some(Err(FrameError::TooLong { limit: self.limit }));
                }
                None
            }
        }
    }

    /// What is left once the stream has ended: the bytes of a line that never ended (a stream
    /// cut mid-message), if any.
    pub fn rest(&self) -> &[u8] {
        &self.buffer
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the event names its type.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Server-Sent Events from a chunked byte stream.
#[derive(Debug)]
pub struct SseFramer {
    buffer: Vec<u8>,
    scanned: usize,
    /// The last line ended in CR: a LF at the start of the next chunk belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    limit: usize,
    failed: bool,
}

impl Default for SseFramer {
    fn default() -> Self {
        Self::new(MAX_FRAME_BYTES)
    }
}

impl SseFramer {
    /// A framer refusing events (or lines) longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            scanned: 0,
            after_cr: false,
            event: None,
            data: String::new(),
            has_data: false,
            limit,
            failed: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if !self.failed {
            self.buffer.extend_from_slice(chunk);
        }
    }

    /// The next whole event; `None` until more is pushed. Events without data are skipped, as
    /// the spec's dispatch does. After an error the framer yields nothing more.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, FrameError>> {
        while !self.failed {
            let line = match self.next_line()? {
                Ok(line) => line,
                Err(e) => return Some(Err(self.fail(e))),
            };
            if line.is_empty() {
                let event = self.event.take();
                let data = std::mem::take(&mut self.data);
                if std::mem::take(&mut self.has_data) {
                    return Some(Ok(SseEvent { event, data }));
                }
                continue;
            }
            if let Err(e) = self.field(&line) {
                return Some(Err(self.fail(e)));
            }
        }
        None
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = true;
        self.buffer = Vec::new();
        self.data = String::new();
        e
    }

    /// One non-empty line: a field of the event being built.
    fn field(&mut self, line: &[u8]) -> Result<(), FrameError> {
        if line.first() == Some(&b':') {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
                if self.data.len() > self.limit {
                    return Err(FrameError::TooLong { limit: self.limit });
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // `id`, `retry` and unknown fields mean nothing to our clients.
            _ => {}
        }
        Ok(())
    }

    /// The next line, without its end (LF, CRLF or CR).
    fn next_line(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        if self.after_cr && !self.buffer.is_empty() {
            self.after_cr = false;
            if self.buffer[0] == b'\n' {
                self.buffer.remove(0);
            }
        }
        let found = self.buffer[self.scanned..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r');
        match found {
            Some(i) => {
                let end = self.scanned + i;
                let cr = self.buffer[end] == b'\r';
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                self.scanned = 0;
                if cr {
                    // A CRLF may be split across chunks: the LF is eaten when it comes.
                    self.after_cr = true;
                    if self.buffer.first() == Some(&b'\n') {
                        self.buffer.remove(0);
                        self.after_cr = false;
                    }
                }
                if line.len() > self.limit {
                    return Some(Err(FrameError::TooLong { limit: self.limit }));
                }
                Some(Ok(line))
            }
            None => {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.limit {
                    return Some(Err(FrameError::TooLong { limit: self.limit }));
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut f = LineFramer::new(8);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(l) = f.next_line() {
                out.push(l);
            }
        }
        out
    }

    fn events(chunks: &[&[u8]]) -> Vec<Result<SseEvent, FrameError>> {
        let mut f = SseFramer::new(64);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(e) = f.next_event() {
                out.push(e);
            }
        }
        out
    }

    fn data(s: &str) -> Result<SseEvent, FrameError> {
        Ok(SseEvent {
            event: None,
            data: s.into(),
        })
    }

    #[test]
    fn lines_split_anywhere_come_out_whole() {
        let want = vec![Ok(b"ab".to_vec()), Ok(b"".to_vec()), Ok(b"cd".to_vec())];
        assert_eq!(lines(&[b"ab\n\ncd\n"]), want);
        assert_eq!(lines(&[b"a", b"b\n", b"\nc", b"d", b"\n"]), want);
    }

    #[test]
    fn a_line_past_the_limit_ends_the_stream() {
        let too_long = Err(FrameError::TooLong { limit: 8 });
        assert_eq!(lines(&[b"123456789"]), vec![too_long.clone()]);
        assert_eq!(
            lines(&[b"ok\n123456789\nmore\n"]),
            vec![Ok(b"ok".to_vec()), too_long]
        );
    }

    #[test]
    fn sse_line_ends_of_every_kind_split_anywhere() {
        let want = vec![data("a"), data("b\nc")];
        assert_eq!(events(&[b"data: a\n\ndata: b\ndata: c\n\n"]), want);
        assert_eq!(events(&[b"data: a\r\n\r\ndata: b\r\ndata:c\r\n\r\n"]), want);
        assert_eq!(events(&[b"data: a\r\rdata: b\rdata: c\r\r"]), want);
        assert_eq!(
            events(&[
                b"data: a\r",
                b"\n\r",
                b"\ndata: b\r",
                b"\ndata: c\r\n\r",
                b"\n"
            ]),
            want
        );
    }

    #[test]
    fn sse_comments_and_events_without_data_are_skipped() {
        let got = events(&[b": ping\n\nevent: x\n\nevent: y\ndata: {}\nid: 3\n\n"]);
        let want = SseEvent {
            event: Some("y".into()),
            data: "{}".into(),
        };
        assert_eq!(got, vec![Ok(want)]);
    }

    #[test]
    fn a_character_split_across_chunks_arrives_intact() {
        let text = "data: h\u{e9}llo \u{1f600}\n\n".as_bytes();
        for cut in 1..text.len() {
            let got = events(&[&text[..cut], &text[cut..]]);
            assert_eq!(got, vec![data("h\u{e9}llo \u{1f600}")], "cut at {cut}");
        }
    }

    #[test]
    fn an_event_past_the_limit_ends_the_stream() {
        let line = format!("data: {}\n", "x".repeat(40));
        let body = format!("{line}{line}\n");
        let got = events(&[body.as_bytes(), b"data: later\n\n"]);
        assert_eq!(got, vec![Err(FrameError::TooLong { limit: 64 })]);
    }
}
