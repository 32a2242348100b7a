//! A reasoning model's thinking split from its answer, as it streams: the text between the
//! reasoning tags (`<think>` and `</think>` unless the model's family names others) is
//! reasoning, the rest is the answer. A prompt that already opened the tags (DeepSeek-R1's
//! template ends with `<think>`) starts the answer inside them.

use super::parse::partial_suffix;

/// The tags Qwen3, QwQ and the DeepSeek-R1 distills write.
pub const DEFAULT_REASONING_TAGS: (&str, &str) = ("<think>", "</think>");

/// What the splitter lets out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasoningPiece {
    Reasoning(String),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet: the answer may still open the tags.
    Start,
    Inside,
    /// After the reasoning (or an answer without any): text.
    Answer,
}

/// Splits one answer; feed it with [`push`](Self::push), then [`finish`](Self::finish).
pub struct ReasoningSplitter {
    start: String,
    end: String,
    state: State,
    buf: String,
    /// The reasoning just closed: whitespace that follows it is not answer.
    closed: bool,
}

impl ReasoningSplitter {
    /// A splitter for the tags `start` and `end`; `opened` when the prompt ends with `start`.
    pub fn new(start: &str, end: &str, opened: bool) -> Self {
        Self {
            start: start.to_string(),
            end: end.to_string(),
            state: if opened { State::Inside } else { State::Start },
            buf: String::new(),
            closed: false,
        }
    }

    /// The pieces that `text` completes.
    pub fn push(&mut self, text: &str) -> Vec<ReasoningPiece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.buf.trim_start();
                    if trimmed.starts_with(self.start.as_str()) {
                        let at = self.buf.len() - trimmed.len() + self.start.len();
                        self.buf.drain(..at);
                        self.state = State::Inside;
                        continue;
                    }
                    if !trimmed.is_empty() && !self.start.starts_with(trimmed) {
                        self.state = State::Answer;
                        continue;
                    }
                    break;
                }
                State::Inside => {
                    if let Some(at) = self.buf.find(self.end.as_str()) {
                        let thought: String = self.buf.drain(..at).collect();
                        self.buf.drain(..self.end.len());
                        push(&mut out, ReasoningPiece::Reasoning(thought));
                        self.state = State::Answer;
                        self.closed = true;
                        continue;
                    }
                    let keep = partial_suffix(&self.buf, &self.end);
                    let ready: String = self.buf.drain(..self.buf.len() - keep).collect();
                    push(&mut out, ReasoningPiece::Reasoning(ready));
                    break;
                }
                State::Answer => {
                    let mut text = std::mem::take(&mut self.buf);
                    if self.closed {
                        let kept = text.trim_start().len();
                        text.drain(..text.len() - kept);
                        self.closed = text.is_empty();
                    }
                    push(&mut out, ReasoningPiece::Text(text));
                    break;
                }
            }
        }
        out
    }

    /// The pieces the end of the answer completes: an answer that never closed its reasoning
    /// is all reasoning.
    pub fn finish(&mut self) -> Vec<ReasoningPiece> {
        let rest = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        match self.state {
            State::Inside => push(&mut out, ReasoningPiece::Reasoning(rest)),
            _ => push(&mut out, ReasoningPiece::Text(rest)),
        }
        out
    }
}

fn push(out: &mut Vec<ReasoningPiece>, piece: ReasoningPiece) {
    match &piece {
        ReasoningPiece::Reasoning(t) | ReasoningPiece::Text(t) if t.is_empty() => {}
        _ => out.push(piece),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(answer: &str, opened: bool, step: usize) -> (String, String) {
        let mut s = ReasoningSplitter::new("<think>", "</think>", opened);
        let mut pieces = Vec::new();
        for piece in crate::llm::tools::pieces_of(answer, step) {
            pieces.extend(s.push(piece));
        }
        pieces.extend(s.finish());
        let (mut thought, mut text) = (String::new(), String::new());
        for piece in pieces {
            match piece {
                ReasoningPiece::Reasoning(t) => thought.push_str(&t),
                ReasoningPiece::Text(t) => text.push_str(&t),
            }
        }
        (thought, text)
    }

    #[test]
    fn thinking_is_split_from_the_answer_whatever_the_chunking() {
        for step in [1, 2, 5, 100] {
            assert_eq!(
                split(
                    "<think>\nTwo plus two is four.\n</think>\n\nIt is 4.",
                    false,
                    step
                ),
                (
                    "\nTwo plus two is four.\n".to_string(),
                    "It is 4.".to_string()
                ),
                "step {step}"
            );
            assert_eq!(
                split("Let me see.</think>4", true, step),
                ("Let me see.".to_string(), "4".to_string()),
                "a prompt that opened the tags, step {step}"
            );
            assert_eq!(
                split("Just an answer, <think> later is text.", false, step),
                (
                    String::new(),
                    "Just an answer, <think> later is text.".to_string()
                )
            );
        }
        assert_eq!(
            split("<think>cut short", false, 3),
            ("cut short".to_string(), String::new()),
            "unclosed reasoning is all reasoning"
        );
        assert_eq!(
            split("  <thi", false, 1),
            (String::new(), "  <thi".to_string())
        );
    }
}
