//! The model's answer back into OpenAI tool calls, as it streams.
//!
//! Hermes: text passes through until `<tool_call>`; the block up to `</tool_call>` is one
//! call (a block whose JSON is not a call is given back as text). Text that could be the start
//! of the tag is held back until it cannot; whitespace around calls is dropped.
//!
//! Llama 3 JSON and Mistral: an answer whose first character opens JSON (`{`, `[`, or
//! Mistral's `[TOOL_CALLS]`) is held until the end and is calls if it parses as calls, else
//! its text; any other answer streams as text.

use serde_json::{Deserializer, Value};
use xi_api::tools::{ToolCall, ToolParser};

use super::call_id;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const MISTRAL_TAG: &str = "[TOOL_CALLS]";

/// What the parser lets out: text, or a complete call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Call(ToolCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace so far (JSON formats decide on the first character).
    Start,
    /// Text, passed through.
    Text,
    /// Hermes: inside a `<tool_call>` block.
    InCall,
    /// JSON formats: the answer is held until the end.
    Held,
}

/// Parses one answer; feed it text with [`push`](Self::push), then [`finish`](Self::finish).
pub struct ToolCallParser {
    parser: ToolParser,
    parallel: bool,
    state: State,
    buf: String,
    /// Whitespace held back: let out before more text, dropped before a call.
    blank: String,
    /// The whitespace before the open block: dropped if it is a call, text if not.
    blank_before: String,
    /// A call was just let out: whitespace that follows it is not text.
    after_call: bool,
    calls: usize,
}

impl ToolCallParser {
    /// A parser for answers in `parser`'s format; without `parallel`, calls after the first
    /// are dropped.
    pub fn new(parser: ToolParser, parallel: bool) -> Self {
        Self {
            parser,
            parallel,
            state: State::Start,
            buf: String::new(),
            blank: String::new(),
            blank_before: String::new(),
            after_call: false,
            calls: 0,
        }
    }

    /// Calls let out so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The pieces that `text` (the answer's next part) completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.buf.trim_start();
                    let Some(first) = trimmed.chars().next() else {
                        break;
                    };
                    // (Every prefix of Mistral's tag starts with `[` too.)
                    let json = matches!(self.parser, ToolParser::Llama3Json) && first == '{'
                        || matches!(self.parser, ToolParser::Mistral) && first == '[';
                    self.state = if json { State::Held } else { State::Text };
                }
                State::Text if self.parser == ToolParser::Hermes => {
                    if let Some(at) = self.buf.find(OPEN) {
                        let before: String = self.buf.drain(..at + OPEN.len()).collect();
                        self.text(&before[..at], &mut out);
                        self.blank_before = std::mem::take(&mut self.blank);
                        self.state = State::InCall;
                        continue;
                    }
                    // Keep what could still become the tag.
                    let keep = partial_suffix(&self.buf, OPEN);
                    let ready: String = self.buf.drain(..self.buf.len() - keep).collect();
                    self.text(&ready, &mut out);
                    break;
                }
                State::Text => {
                    let ready = std::mem::take(&mut self.buf);
                    self.text(&ready, &mut out);
                    break;
                }
                State::InCall => {
                    let Some(at) = self.buf.find(CLOSE) else {
                        break;
                    };
                    let body: String = self.buf.drain(..at + CLOSE.len()).collect();
                    self.block(&body[..at], true, &mut out);
                    self.state = State::Text;
                }
                State::Held => break,
            }
        }
        out
    }

    /// The pieces the end of the answer completes.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            State::Start | State::Text => self.text(&rest, &mut out),
            // A block cut short (by `max_tokens`, or a model that ends without the closing
            // tag) is a call if its JSON is complete.
            State::InCall => self.block(&rest, false, &mut out),
            State::Held => match held_calls(self.parser, &rest) {
                Some(calls) => {
                    for (name, arguments) in calls {
                        self.call(name, arguments, &mut out);
                    }
                }
                None => self.text(&rest, &mut out),
            },
        }
        if self.calls == 0 && !self.blank.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut self.blank)));
        }
        out
    }

    /// Lets `text` out, holding back its trailing whitespace (and, after a call, dropping its
    /// leading whitespace).
    fn text(&mut self, text: &str, out: &mut Vec<Piece>) {
        let text = if self.after_call {
            text.trim_start()
        } else {
            text
        };
        if text.is_empty() {
            return;
        }
        self.after_call = false;
        let body = text.trim_end();
        if body.is_empty() {
            self.blank.push_str(text);
            return;
        }
        let mut piece = std::mem::take(&mut self.blank);
        piece.push_str(body);
        self.blank.push_str(&text[body.len()..]);
        match out.last_mut() {
            Some(Piece::Text(last)) => last.push_str(&piece),
            _ => out.push(Piece::Text(piece)),
        }
    }

    /// A Hermes block's body: a call, or (not one) the block given back as text.
    fn block(&mut self, body: &str, closed: bool, out: &mut Vec<Piece>) {
        match hermes_call(body) {
            Some((name, arguments)) => {
                self.blank_before.clear();
                self.call(name, arguments, out)
            }
            None => {
                let mut raw = format!("{}{OPEN}{body}", std::mem::take(&mut self.blank_before));
                if closed {
                    raw.push_str(CLOSE);
                }
                self.text(&raw, out);
            }
        }
    }

    fn call(&mut self, name: String, arguments: String, out: &mut Vec<Piece>) {
        if self.calls > 0 && !self.parallel {
            tracing::debug!(
                name,
                "a further tool call dropped: parallel_tool_calls is false"
            );
            return;
        }
        self.calls += 1;
        self.after_call = true;
        out.push(Piece::Call(ToolCall {
            id: call_id(self.parser),
            name,
            arguments,
        }));
    }
}

/// How many bytes at the end of `text` are a proper prefix of `tag`.
pub(crate) fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// `{"name": ..., <key>: {...}}` as a call, its arguments as compact JSON text; arguments
/// given as a string of JSON are taken as that JSON.
fn call_of(value: &Value, keys: &[&str]) -> Option<(String, String)> {
    let object = value.as_object()?;
    let name = object.get("name")?.as_str()?;
    if !xi_api::tools::valid_function_name(name) {
        return None;
    }
    let arguments = keys.iter().find_map(|k| object.get(*k));
    let arguments = match arguments {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => v.to_string(),
            _ => return None,
        },
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return None,
    };
    Some((name.to_string(), arguments))
}

fn hermes_call(body: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    call_of(&value, &["arguments", "parameters"])
}

/// The calls of a whole held answer: Llama 3's objects separated by `;`, or Mistral's list.
fn held_calls(parser: ToolParser, text: &str) -> Option<Vec<(String, String)>> {
    let text = text.trim();
    match parser {
        ToolParser::Mistral => {
            let list = text.strip_prefix(MISTRAL_TAG).unwrap_or(text).trim_start();
            let value: Value = serde_json::from_str(list).ok()?;
            let calls: Option<Vec<_>> = value
                .as_array()?
                .iter()
                .map(|v| call_of(v, &["arguments", "parameters"]))
                .collect();
            calls.filter(|c| !c.is_empty())
        }
        _ => {
            let mut calls = Vec::new();
            let mut rest = text;
            while !rest.is_empty() {
                let mut values = Deserializer::from_str(rest).into_iter::<Value>();
                let value = values.next()?.ok()?;
                calls.push(call_of(&value, &["parameters", "arguments"])?);
                rest = rest[values.byte_offset()..].trim_start();
                rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
            }
            Some(calls).filter(|c| !c.is_empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `parser` makes of `answer` fed in pieces of `step` bytes (at char
    /// boundaries).
    fn parse(parser: ToolParser, parallel: bool, answer: &str, step: usize) -> Vec<Piece> {
        let mut p = ToolCallParser::new(parser, parallel);
        let mut out = Vec::new();
        for piece in crate::llm::tools::pieces_of(answer, step) {
            out.extend(p.push(piece));
        }
        out.extend(p.finish());
        // Adjacent text pieces are one piece of text.
        let mut merged: Vec<Piece> = Vec::new();
        for piece in out {
            match (merged.last_mut(), piece) {
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (_, piece) => merged.push(piece),
            }
        }
        merged
    }

    fn calls(pieces: &[Piece]) -> Vec<(String, String)> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Call(c) => Some((c.name.clone(), c.arguments.clone())),
                _ => None,
            })
            .collect()
    }

    fn text(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hermes_blocks_become_calls_whatever_the_chunking() {
        let answer = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        for step in [1, 2, 3, 7, 1000] {
            let pieces = parse(ToolParser::Hermes, true, answer, step);
            assert_eq!(text(&pieces), "Let me check.", "step {step}");
            assert_eq!(
                calls(&pieces),
                [
                    (
                        "get_weather".to_string(),
                        "{\"city\":\"Paris\"}".to_string()
                    ),
                    ("now".to_string(), "{}".to_string())
                ],
                "step {step}"
            );
        }
        let one = parse(ToolParser::Hermes, false, answer, 5);
        assert_eq!(
            calls(&one).len(),
            1,
            "parallel_tool_calls false: the first call only"
        );
    }

    #[test]
    fn text_that_only_looks_like_a_tag_streams_as_text() {
        let answer = "a < b and <tool is not a tag; <tool_call> never closes";
        let pieces = parse(
            ToolParser::Hermes,
            true,
            "a < b and <tool is not a tag.  ",
            1,
        );
        assert_eq!(
            pieces,
            [Piece::Text("a < b and <tool is not a tag.  ".into())]
        );
        let pieces = parse(ToolParser::Hermes, true, answer, 4);
        assert_eq!(
            text(&pieces),
            answer,
            "an unclosed block that is no call is text"
        );
        let bad = "<tool_call>\n{\"name\": \"x y\"}\n</tool_call> done";
        let pieces = parse(ToolParser::Hermes, true, bad, 3);
        assert!(calls(&pieces).is_empty());
        assert_eq!(text(&pieces), bad, "a block that is no call is text");
    }

    #[test]
    fn a_block_cut_short_is_a_call_when_its_json_is_complete() {
        let answer = "<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}";
        let pieces = parse(ToolParser::Hermes, true, answer, 6);
        assert_eq!(calls(&pieces), [("f".to_string(), "{\"a\":1}".to_string())]);
        assert_eq!(text(&pieces), "");
    }

    #[test]
    fn the_text_before_a_call_streams_before_the_call_ends() {
        let mut p = ToolCallParser::new(ToolParser::Hermes, true);
        assert_eq!(p.push("Sure"), [Piece::Text("Sure".into())]);
        assert_eq!(
            p.push(", one moment. <tool"),
            [Piece::Text(", one moment.".into())]
        );
        assert_eq!(p.push("_call>{\"name\": \"f\""), []);
        let done = p.push(", \"arguments\": {}}</tool_call>");
        assert!(
            matches!(&done[..], [Piece::Call(c)] if c.name == "f" && c.id.starts_with("call_"))
        );
        assert_eq!(p.finish(), []);
        assert_eq!(p.calls(), 1);
    }

    #[test]
    fn llama_and_mistral_answers_are_calls_when_they_are_json_calls() {
        let llama =
            " {\"name\": \"f\", \"parameters\": {\"a\": 1}}; {\"name\": \"g\", \"parameters\": {}}";
        let pieces = parse(ToolParser::Llama3Json, true, llama, 4);
        assert_eq!(
            calls(&pieces),
            [
                ("f".to_string(), "{\"a\":1}".to_string()),
                ("g".to_string(), "{}".to_string())
            ]
        );
        assert_eq!(text(&pieces), "");
        let prose = "{curly} is not JSON";
        assert_eq!(text(&parse(ToolParser::Llama3Json, true, prose, 3)), prose);
        assert_eq!(
            text(&parse(ToolParser::Llama3Json, true, "Hello {x}", 3)),
            "Hello {x}"
        );
        let mistral = "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": 1}}]";
        let pieces = parse(ToolParser::Mistral, true, mistral, 2);
        assert_eq!(calls(&pieces), [("f".to_string(), "{\"a\":1}".to_string())]);
        let bare = "[{\"name\": \"f\", \"arguments\": {}}]";
        let pieces = parse(ToolParser::Mistral, true, bare, 5);
        assert!(matches!(&pieces[..], [Piece::Call(c)] if c.id.len() == 9));
        assert_eq!(
            text(&parse(ToolParser::Mistral, true, "[1] a source", 3)),
            "[1] a source"
        );
    }
}
