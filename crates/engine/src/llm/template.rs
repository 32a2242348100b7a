//! Chat templates: the Jinja templates of Hugging Face / GGUF metadata, rendered with minijinja.
//!
//! A template comes from the model files or from whoever launches or registers the model, so
//! it is untrusted code. Every render is bounded by [`TemplateLimits`]: an instruction budget
//! (minijinja's fuel), a recursion limit and a cap on the output's size, each refused with an
//! error that names the limit. Memory is *not* bounded here: one instruction can double a
//! string, and Rust aborts the whole process when an allocation fails. Callers that render
//! templates they do not trust in a long-lived process do so in a child process with a memory
//! limit (the worker's template sandbox); [`ChatTemplate::source`] and friends are what such a
//! child needs to rebuild the template.

use std::io;
use std::sync::Arc;

use minijinja::value::Kwargs;
use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EngineError;

/// One chat message as the template sees it: the API's turn, with its tool calls and the
/// call a tool's answer belongs to.
pub use xi_api::worker::ChatTurn as ChatMessage;

/// What one render may spend. The defaults leave real templates far inside them: measured on
/// the catalogue's templates, a chat of 120 messages takes 2,800 (SmolLM2), 3,800 (Qwen2.5)
/// and 4,200 (Llama 3.2) fuel, 23 to 34 per message, so [`DEFAULT_FUEL`] covers chats of over
/// 50,000 messages, while three nested `range(1000)` loops run out of it in under 0.1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateLimits {
    /// Instructions per render (minijinja's fuel: about one per instruction executed).
    pub fuel: u64,
    /// Nesting depth: a loop or block counts 1, a macro call 4 plus its caller's depth.
    /// minijinja caps this at 500 whatever is asked.
    pub recursion: usize,
    /// Bytes of rendered prompt.
    pub output_bytes: usize,
}

/// Default instruction budget per render.
pub const DEFAULT_FUEL: u64 = 2_000_000;
/// Default recursion limit (minijinja's own default is 500).
pub const DEFAULT_RECURSION: usize = 200;
/// Default output limit: 32 MiB, twice the default request body limit, and far more than any
/// model's context holds.
pub const DEFAULT_OUTPUT_BYTES: usize = 32 << 20;

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            fuel: DEFAULT_FUEL,
            recursion: DEFAULT_RECURSION,
            output_bytes: DEFAULT_OUTPUT_BYTES,
        }
    }
}

/// A parsed chat template with its special tokens and limits; cheap to clone (shared).
#[derive(Clone)]
pub struct ChatTemplate {
    inner: Arc<Inner>,
}

struct Inner {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
    limits: TemplateLimits,
}

fn raise_exception(message: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// Parses `source` with the default limits; a template that does not parse is refused.
    pub fn new(source: String, bos: String, eos: String) -> Result<ChatTemplate, EngineError> {
        Self::with_limits(source, bos, eos, TemplateLimits::default())
    }

    /// Parses `source`; every render is bounded by `limits`.
    pub fn with_limits(
        source: String,
        bos: String,
        eos: String,
        limits: TemplateLimits,
    ) -> Result<ChatTemplate, EngineError> {
        let mut env = Environment::new();
        // Hugging Face's environment: blocks eat their newline and leading indentation, Python's
        // string methods work, and `tojson` writes JSON as Python's `json.dumps` does (the
        // prompts models were trained on).
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(limits.fuel));
        env.set_recursion_limit(limits.recursion);
        env.add_template_owned("chat", source.clone())
            .map_err(|e| {
                EngineError::Unsupported(format!("the chat template does not parse: {e}"))
            })?;
        let inner = Inner {
            env,
            source,
            bos,
            eos,
            limits,
        };
        Ok(ChatTemplate {
            inner: Arc::new(inner),
        })
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// `bos_token` as the template sees it.
    pub fn bos(&self) -> &str {
        &self.inner.bos
    }

    /// `eos_token` as the template sees it.
    pub fn eos(&self) -> &str {
        &self.inner.eos
    }

    pub fn limits(&self) -> TemplateLimits {
        self.inner.limits
    }

    /// The prompt for `messages`, ending with the assistant's turn header when
    /// `add_generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        self.render_metered(messages, add_generation_prompt)
            .map(|(prompt, _)| prompt)
    }

    /// Like [`render`](Self::render), with the fuel the render used.
    pub fn render_metered(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<(String, u64), EngineError> {
        self.render_chat(messages, None, add_generation_prompt)
    }

    /// The prompt for `messages` with `tools` (the template's `tools` variable, in OpenAI's
    /// shape; left undefined when `None`, as templates expect of a chat without tools), and
    /// the fuel the render used.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<(String, u64), EngineError> {
        self.render_with(messages, tools, None, add_generation_prompt)
    }

    /// Like [`render_chat`](Self::render_chat), with `extra` variables (a request's
    /// `chat_template_kwargs`: an object); the template's own variables win over them.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Value>,
        extra: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<(String, u64), EngineError> {
        let inner = &self.inner;
        let template = inner
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Unsupported(e.to_string()))?;
        let mut out = CappedWriter {
            buf: Vec::new(),
            cap: inner.limits.output_bytes,
            full: false,
        };
        let base = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => inner.bos,
            eos_token => inner.eos,
        };
        let ctx = match tools {
            Some(tools) => context! { tools => tools, ..base },
            None => base,
        };
        let ctx = match extra {
            Some(extra) => context! { ..ctx, ..minijinja::Value::from_serialize(extra) },
            None => ctx,
        };
        let fuel = match template.render_captured_to(ctx, &mut out) {
            Ok(captured) => captured.state().fuel_levels().map_or(0, |(used, _)| used),
            Err(e) => return Err(self.limit_error(&e, out.full)),
        };
        let prompt = String::from_utf8(out.buf).map_err(|e| {
            EngineError::InvalidInput(format!("the chat template rendered invalid UTF-8: {e}"))
        })?;
        Ok((prompt, fuel))
    }

    /// The error for a failed render: a limit by name when one was hit, else minijinja's.
    fn limit_error(&self, e: &Error, output_full: bool) -> EngineError {
        let limits = self.inner.limits;
        let message = if output_full {
            format!(
                "the chat template exceeded its output limit of {} bytes",
                limits.output_bytes
            )
        } else if caused_by(e, |e| e.kind() == ErrorKind::OutOfFuel) {
            format!(
                "the chat template exceeded its instruction budget (fuel {})",
                limits.fuel
            )
        } else if caused_by(e, |e| e.detail() == Some("recursion limit exceeded")) {
            format!(
                "the chat template exceeded its recursion limit ({})",
                limits.recursion
            )
        } else {
            format!("cannot apply the chat template: {e}")
        };
        EngineError::InvalidInput(message)
    }
}

/// `tojson` as Hugging Face's templates know it: Python's `json.dumps(value,
/// ensure_ascii=False, indent=indent)`, so `", "` and `": "` between items without an indent,
/// one item per line with one (minijinja's own filter writes compact JSON and escapes HTML).
fn tojson(value: minijinja::Value, kwargs: Kwargs) -> Result<minijinja::Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let unit = vec![b' '; n.min(16)];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&unit),
            );
            value.serialize(&mut ser)
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
            value.serialize(&mut ser)
        }
    };
    written.map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    let text = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    Ok(minijinja::Value::from_safe_string(text))
}

/// `value` as Python's `json.dumps(value, ensure_ascii=False)` writes it (what `tojson`
/// renders): the layout models see their tools and calls in.
pub fn python_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing a JSON value to memory cannot fail, and the output is UTF-8.
    let _ = value.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// Python's default `json.dumps` layout: `, ` between items and `: ` after keys.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: io::Write + ?Sized>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        python_separator(w, first)
    }

    fn begin_object_key<W: io::Write + ?Sized>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        python_separator(w, first)
    }

    fn begin_object_value<W: io::Write + ?Sized>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// `, ` before every item but the first.
fn python_separator<W: io::Write + ?Sized>(w: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

/// Whether `e` or an error it wraps (a macro called from a filter, say) matches.
fn caused_by(e: &Error, test: impl Fn(&Error) -> bool) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if err.downcast_ref::<Error>().is_some_and(&test) {
            return true;
        }
        current = err.source();
    }
    false
}

/// Collects the output and refuses to grow past `cap` bytes (minijinja stops the render at
/// the first failed write).
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    full: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.cap {
            self.full = true;
            return Err(io::Error::other("the chat template's output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
