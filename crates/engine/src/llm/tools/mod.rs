//! Tool calling for any model: how a model takes tools ([`ToolStyle`], read off its chat
//! template or named by its launch), the prompt that offers them ([`prepare_chat`]: the
//! template's own `tools` variable, or our generic prompt for templates that take none), the
//! grammar that holds a required call to the functions' schemas ([`call_grammar`]), and the
//! parser that turns the model's answer back into OpenAI tool calls as it streams
//! ([`ToolCallParser`]); and the splitter that separates a reasoning model's thinking from its
//! answer ([`ReasoningSplitter`]).
//!
//! Pure text logic: no model, no runtime. The worker runs the prompt and grammar parts before
//! a request is queued and the parser over the replica's text events.

mod grammar;
mod parse;
mod prompt;
mod reasoning;

pub use grammar::call_grammar;
pub use parse::{Piece, ToolCallParser};
pub use prompt::{prepare_chat, GENERIC_TOOL_PROMPT};
pub use reasoning::{ReasoningPiece, ReasoningSplitter, DEFAULT_REASONING_TAGS};
pub use xi_api::tools::ToolParser;

/// How one model takes tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolStyle {
    /// The format its calls are written in (and parsed from).
    pub parser: ToolParser,
    /// Its template renders tools itself (the `tools` variable); otherwise the chat gets our
    /// generic prompt, in the Hermes format.
    pub native: bool,
}

impl ToolStyle {
    /// The style of a model with this chat template (`None`: it has none) and this launch's
    /// or catalogue's `tool_parser`. A template that reads `tools` renders them itself, in
    /// the configured format or else the one it shows; any other template (or one whose
    /// format is neither configured nor recognised) gets the generic prompt.
    pub fn of(template: Option<&str>, configured: Option<ToolParser>) -> ToolStyle {
        let takes_tools = template.is_some_and(|t| t.contains("tools"));
        match configured.or_else(|| template.and_then(ToolParser::detect)) {
            Some(parser) if takes_tools => ToolStyle {
                parser,
                native: true,
            },
            _ => ToolStyle {
                parser: ToolParser::Hermes,
                native: false,
            },
        }
    }
}

/// `text` in pieces of about `step` bytes, cut at character boundaries: how the stream
/// parsers' tests feed an answer.
#[cfg(test)]
pub(crate) fn pieces_of(text: &str, step: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + step.max(1)).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[at..end]);
        at = end;
    }
    out
}

/// A fresh call id in the format's convention: Mistral's templates insist on 9 letters and
/// digits; everyone else gets OpenAI's `call_` and 24 of them.
pub fn call_id(parser: ToolParser) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    let mut rng = rand::thread_rng();
    match parser {
        ToolParser::Mistral => Alphanumeric.sample_string(&mut rng, 9),
        _ => format!("call_{}", Alphanumeric.sample_string(&mut rng, 24)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_style_comes_from_the_launch_or_the_template_else_the_generic_prompt() {
        let qwen = "{% if tools %}<tool_call>{% endif %}";
        let plain = "<|im_start|>{{ m.content }}";
        assert_eq!(
            ToolStyle::of(Some(qwen), None),
            ToolStyle {
                parser: ToolParser::Hermes,
                native: true
            }
        );
        assert_eq!(
            ToolStyle::of(Some(qwen), Some(ToolParser::Llama3Json)).parser,
            ToolParser::Llama3Json,
            "the launch's tool_parser wins"
        );
        for (template, configured) in [
            (Some(plain), None),
            (Some(plain), Some(ToolParser::Mistral)),
            (None, Some(ToolParser::Llama3Json)),
            (Some("{{ tools }} in a format of its own"), None),
        ] {
            assert_eq!(
                ToolStyle::of(template, configured),
                ToolStyle {
                    parser: ToolParser::Hermes,
                    native: false
                },
                "{template:?} {configured:?}"
            );
        }
    }

    #[test]
    fn call_ids_follow_the_formats_conventions() {
        let id = call_id(ToolParser::Hermes);
        assert!(id.starts_with("call_") && id.len() == 29, "{id}");
        let id = call_id(ToolParser::Mistral);
        assert!(
            id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{id}"
        );
        assert_ne!(call_id(ToolParser::Hermes), call_id(ToolParser::Hermes));
    }
}
