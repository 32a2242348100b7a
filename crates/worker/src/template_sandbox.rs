//! Rendering chat templates, which are untrusted code (a launch option or a registration can
//! carry one), off the model threads.
//!
//! The engine bounds every render's instructions (fuel), nesting and output size, but not its
//! memory: one `~` can double a string, and Rust aborts the whole process when an allocation
//! fails. So a worker given a [`TemplateSandbox`] renders in child processes: the same
//! executable started with [`TEMPLATE_SANDBOX_ENV`] set, whose `main` calls
//! [`serve_template_sandbox`]. A child caps its own memory (`RLIMIT_DATA`) and serves renders
//! one at a time over stdin/stdout; the worker keeps up to `processes` of them, reuses them,
//! kills one that runs past the time limit, and starts a fresh one after any death. A death
//! or a timeout is the request's 400, never the worker's crash. Without a sandbox (library
//! users, unit tests) renders run in-process on the blocking pool, bounded by fuel and the
//! output limit only.
//!
//! Protocol: each request is a little-endian `u32` length and that much JSON
//! ([`RenderRequest`]); each reply is a tag byte (0: the prompt, 1: an error message), a
//! little-endian `u32` length and that many bytes of UTF-8.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;
use xi_api::worker::{WorkerError, WorkerErrorKind};
use xi_engine::llm::template::{ChatMessage, ChatTemplate, TemplateLimits};

/// Set (to the memory limit in MiB) in a sandbox child's environment.
pub const TEMPLATE_SANDBOX_ENV: &str = "XINFERENCE_TEMPLATE_SANDBOX";

/// Longest error message a child may send back.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Where and how chat templates are rendered out of process.
#[derive(Debug, Clone)]
pub struct TemplateSandbox {
    /// The executable to start as a sandbox: its `main` must call [`serve_template_sandbox`]
    /// when [`TEMPLATE_SANDBOX_ENV`] is set (the launchers pass their own executable).
    pub executable: PathBuf,
    /// Memory (`RLIMIT_DATA`: heap and anonymous mappings) of one sandbox process, in MiB.
    pub memory_mib: u64,
    /// Wall-clock time one render may take.
    pub time_limit: Duration,
    /// Sandbox processes at most, so renders at once; more wait up to `time_limit`.
    pub processes: usize,
}

impl TemplateSandbox {
    /// Default limits: 512 MiB and 3 s per render (real templates render in milliseconds and
    /// a few MiB), and up to 4 processes (fewer on smaller machines).
    pub fn new(executable: PathBuf) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            executable,
            memory_mib: 512,
            time_limit: Duration::from_secs(3),
            processes: cores.clamp(2, 4),
        }
    }
}

/// One render, as the worker sends it to a child.
#[derive(Serialize, Deserialize)]
struct RenderRequest {
    source: String,
    bos: String,
    eos: String,
    limits: TemplateLimits,
    messages: Vec<ChatMessage>,
    /// The template's `tools` variable (undefined when `None`).
    #[serde(default)]
    tools: Option<Value>,
    /// Extra variables (`chat_template_kwargs`).
    #[serde(default)]
    extra: Option<Value>,
    add_generation_prompt: bool,
}

fn invalid(message: String) -> WorkerError {
    WorkerError::new(WorkerErrorKind::InvalidInput, message)
}

fn internal(message: String) -> WorkerError {
    WorkerError::new(WorkerErrorKind::Internal, message)
}

/// Renders chats: in sandbox processes when configured, else in-process.
pub(crate) enum Renderer {
    InProcess,
    Sandbox(SandboxPool),
}

impl Renderer {
    pub(crate) fn new(sandbox: Option<TemplateSandbox>) -> Self {
        match sandbox {
            Some(config) => Renderer::Sandbox(SandboxPool::new(config)),
            None => Renderer::InProcess,
        }
    }

    /// The prompt `template` makes of `messages` and `tools` (with the assistant's turn
    /// header); a template past a limit is an `InvalidInput` naming the limit.
    pub(crate) async fn render(
        &self,
        template: ChatTemplate,
        messages: Vec<ChatMessage>,
        tools: Option<Value>,
        extra: Option<Value>,
    ) -> Result<String, WorkerError> {
        match self {
            Renderer::InProcess => {
                let rendered = tokio::task::spawn_blocking(move || {
                    template.render_with(&messages, tools.as_ref(), extra.as_ref(), true)
                })
                .await;
                match rendered {
                    Ok(result) => result.map(|(prompt, _)| prompt).map_err(WorkerError::from),
                    Err(e) => Err(internal(format!("the chat template render failed: {e}"))),
                }
            }
            Renderer::Sandbox(pool) => pool.render(&template, messages, tools, extra).await,
        }
    }
}

/// A running sandbox child and its pipes.
struct Sandboxed {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// How one exchange with a child ended, short of a reply.
enum Broken {
    /// The pipe closed: the child died.
    Died,
    /// The child broke the protocol.
    Garbled(String),
}

/// Up to `processes` children, reused across renders.
pub(crate) struct SandboxPool {
    config: TemplateSandbox,
    idle: Mutex<Vec<Sandboxed>>,
    permits: Semaphore,
}

impl SandboxPool {
    fn new(config: TemplateSandbox) -> Self {
        let permits = Semaphore::new(config.processes.max(1));
        Self {
            config,
            idle: Mutex::new(Vec::new()),
            permits,
        }
    }

    async fn render(
        &self,
        template: &ChatTemplate,
        messages: Vec<ChatMessage>,
        tools: Option<Value>,
        extra: Option<Value>,
    ) -> Result<String, WorkerError> {
        let limit = self.config.time_limit;
        let _permit = match tokio::time::timeout(limit, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(WorkerError::new(
                    WorkerErrorKind::Busy,
                    "every chat template sandbox is busy, retry shortly",
                ))
            }
        };
        let limits = template.limits();
        let request = RenderRequest {
            source: template.source().to_string(),
            bos: template.bos().to_string(),
            eos: template.eos().to_string(),
            limits,
            messages,
            tools,
            extra,
            add_generation_prompt: true,
        };
        let request = serde_json::to_vec(&request)
            .map_err(|e| internal(format!("cannot encode a render request: {e}")))?;
        let max_reply = limits.output_bytes.max(MAX_ERROR_BYTES);
        // A reused child may have died while idle: its death is not this template's doing, so
        // the request gets another child.
        loop {
            let (mut sandboxed, reused) = match self.take_idle() {
                Some(idle) => (idle, true),
                None => (self.spawn()?, false),
            };
            let exchange =
                tokio::time::timeout(limit, exchange(&mut sandboxed, &request, max_reply));
            match exchange.await {
                Ok(Ok(reply)) => {
                    self.put_idle(sandboxed);
                    return reply.map_err(invalid);
                }
                Ok(Err(Broken::Died)) if reused => {
                    let status = reap(sandboxed).await;
                    tracing::debug!(?status, "an idle chat template sandbox had died");
                }
                Ok(Err(Broken::Died)) => {
                    let status = reap(sandboxed).await;
                    tracing::warn!(?status, "a chat template sandbox died while rendering");
                    return Err(self.death_error(status));
                }
                Ok(Err(Broken::Garbled(why))) => {
                    kill(sandboxed).await;
                    return Err(internal(format!("the chat template sandbox failed: {why}")));
                }
                Err(_) => {
                    kill(sandboxed).await;
                    tracing::warn!(
                        secs = limit.as_secs_f32(),
                        "a chat template render timed out"
                    );
                    return Err(invalid(format!(
                        "the chat template exceeded its time limit of {} ms",
                        limit.as_millis()
                    )));
                }
            }
        }
    }

    fn take_idle(&self) -> Option<Sandboxed> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.pop()
    }

    fn put_idle(&self, sandboxed: Sandboxed) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.push(sandboxed);
    }

    fn spawn(&self) -> Result<Sandboxed, WorkerError> {
        let mut child = Command::new(&self.config.executable)
            .env(TEMPLATE_SANDBOX_ENV, self.config.memory_mib.to_string())
            // An abort on the memory limit is expected: no backtrace in the worker's log.
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A render abandoned by its request (client gone) must not keep running.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                internal(format!(
                    "cannot start the chat template sandbox {}: {e}",
                    self.config.executable.display()
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(internal("the chat template sandbox has no pipes".into()));
        };
        Ok(Sandboxed {
            child,
            stdin,
            stdout,
        })
    }

    /// A child that died mid-render: aborted on a refused allocation (its memory limit), or
    /// something else the template made it do.
    fn death_error(&self, status: Option<std::process::ExitStatus>) -> WorkerError {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            let aborted = status.and_then(|s| s.signal()) == Some(libc::SIGABRT);
            if aborted {
                return invalid(format!(
                    "the chat template exceeded its memory limit of {} MiB",
                    self.config.memory_mib
                ));
            }
        }
        let status = status.map_or_else(|| "unknown status".to_string(), |s| s.to_string());
        invalid(format!(
            "the chat template crashed its sandbox ({status}; memory limit {} MiB)",
            self.config.memory_mib
        ))
    }
}

async fn kill(mut sandboxed: Sandboxed) {
    let _ = sandboxed.child.start_kill();
    let _ = sandboxed.child.wait().await;
}

/// The exit status of a child whose pipe closed (killed if it lingers).
async fn reap(mut sandboxed: Sandboxed) -> Option<std::process::ExitStatus> {
    let wait = sandboxed.child.wait();
    match tokio::time::timeout(Duration::from_secs(1), wait).await {
        Ok(status) => status.ok(),
        Err(_) => {
            kill(sandboxed).await;
            None
        }
    }
}

/// Sends one request and reads its reply: the prompt, or the template's error message.
async fn exchange(
    sandboxed: &mut Sandboxed,
    request: &[u8],
    max_reply: usize,
) -> Result<Result<String, String>, Broken> {
    let len = u32::try_from(request.len())
        .map_err(|_| Broken::Garbled("the render request is over 4 GiB".into()))?;
    let sent = async {
        sandboxed.stdin.write_all(&len.to_le_bytes()).await?;
        sandboxed.stdin.write_all(request).await?;
        sandboxed.stdin.flush().await
    };
    sent.await.map_err(|_| Broken::Died)?;
    let mut head = [0u8; 5];
    sandboxed
        .stdout
        .read_exact(&mut head)
        .await
        .map_err(|_| Broken::Died)?;
    let [tag, len @ ..] = head;
    let len = u32::from_le_bytes(len) as usize;
    if len > max_reply {
        return Err(Broken::Garbled(format!("a reply of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    sandboxed
        .stdout
        .read_exact(&mut body)
        .await
        .map_err(|_| Broken::Died)?;
    let text =
        String::from_utf8(body).map_err(|_| Broken::Garbled("a reply in bad UTF-8".into()))?;
    match tag {
        0 => Ok(Ok(text)),
        1 => Ok(Err(text)),
        other => Err(Broken::Garbled(format!("a reply tagged {other}"))),
    }
}

/// The sandbox child's `main`: caps its memory at `setting` MiB (the value of
/// [`TEMPLATE_SANDBOX_ENV`]), then renders requests from stdin until it closes. Exits when the
/// worker that started it is gone.
pub fn serve_template_sandbox(setting: &str) -> ExitCode {
    let memory_mib = match setting.trim().parse::<u64>() {
        Ok(mib) if mib > 0 => mib,
        _ => {
            eprintln!(
                "template sandbox: {TEMPLATE_SANDBOX_ENV} must be a size in MiB, got {setting:?}"
            );
            return ExitCode::FAILURE;
        }
    };
    // Before the memory limit: the watcher's stack counts against it.
    if let Err(e) = watch_parent() {
        eprintln!("template sandbox: cannot watch the worker: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = limit_memory(memory_mib) {
        eprintln!("template sandbox: cannot limit its memory: {e}");
        return ExitCode::FAILURE;
    }
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut cached: Option<(RenderRequest, ChatTemplate)> = None;
    loop {
        let request = match read_request(&mut input) {
            Ok(Some(request)) => request,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("template sandbox: bad request: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (tag, reply) = match render_request(request, &mut cached) {
            Ok(prompt) => (0u8, prompt),
            Err(message) => (1u8, message),
        };
        if write_reply(&mut output, tag, reply.as_bytes()).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

/// Renders one request, reusing the last template when it is the same one.
fn render_request(
    mut request: RenderRequest,
    cached: &mut Option<(RenderRequest, ChatTemplate)>,
) -> Result<String, String> {
    let messages = std::mem::take(&mut request.messages);
    let tools = request.tools.take();
    let extra = request.extra.take();
    let same = cached.as_ref().is_some_and(|(key, _)| {
        key.source == request.source
            && key.bos == request.bos
            && key.eos == request.eos
            && key.limits == request.limits
    });
    if !same {
        let template = ChatTemplate::with_limits(
            request.source.clone(),
            request.bos.clone(),
            request.eos.clone(),
            request.limits,
        )
        .map_err(|e| e.to_string())?;
        *cached = Some((request, template));
    }
    let Some((key, template)) = cached.as_ref() else {
        return Err("no chat template".into());
    };
    template
        .render_with(
            &messages,
            tools.as_ref(),
            extra.as_ref(),
            key.add_generation_prompt,
        )
        .map(|(prompt, _)| prompt)
        .map_err(|e| e.to_string())
}

fn read_request(input: &mut impl Read) -> io::Result<Option<RenderRequest>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(io::Error::other)
}

fn write_reply(output: &mut impl Write, tag: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    output.write_all(&[tag])?;
    output.write_all(&len.to_le_bytes())?;
    output.write_all(body)?;
    output.flush()
}

/// Exits once the worker is gone (the child is re-parented), so a render that outlives its
/// worker, however long it would run, stops within a second.
fn watch_parent() -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        std::thread::Builder::new()
            .name("sandbox-watch".into())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                if std::os::unix::process::parent_id() != parent {
                    std::process::exit(0);
                }
            })?;
    }
    Ok(())
}

/// Caps the heap and anonymous mappings (`RLIMIT_DATA`; allocations past it fail and the
/// process aborts) and turns off core dumps (an abort here is expected, not a bug).
fn limit_memory(mib: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        let set = |resource, value: u64| {
            let value = value as libc::rlim_t;
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: setrlimit reads the struct we pass and changes only this process's limits.
            match unsafe { libc::setrlimit(resource, &limit) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        };
        set(libc::RLIMIT_CORE, 0)?;
        set(libc::RLIMIT_DATA, mib.saturating_mul(1 << 20))
    }
    #[cfg(not(unix))]
    {
        let _ = mib;
        Err(io::Error::other("memory limits need a unix system"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(source: &str) -> RenderRequest {
        RenderRequest {
            source: source.into(),
            bos: "<s>".into(),
            eos: "</s>".into(),
            limits: TemplateLimits::default(),
            messages: vec![ChatMessage::new("user", "hi")],
            tools: None,
            extra: None,
            add_generation_prompt: true,
        }
    }

    /// One request through the child's framing and back through the worker's.
    fn round_trip(source: &str, cached: &mut Option<(RenderRequest, ChatTemplate)>) -> Vec<u8> {
        let body = serde_json::to_vec(&request(source)).unwrap();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut input = io::Cursor::new(frame);
        let got = read_request(&mut input).unwrap().unwrap();
        assert!(
            read_request(&mut input).unwrap().is_none(),
            "EOF ends the loop"
        );
        let (tag, reply) = match render_request(got, cached) {
            Ok(prompt) => (0, prompt),
            Err(message) => (1, message),
        };
        let mut out = Vec::new();
        write_reply(&mut out, tag, reply.as_bytes()).unwrap();
        out
    }

    #[test]
    fn the_child_renders_and_reports_limits_by_name() {
        let mut cached = None;
        let source =
            "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{% endfor %}";
        let out = round_trip(source, &mut cached);
        assert_eq!(out[0], 0);
        assert_eq!(u32::from_le_bytes([out[1], out[2], out[3], out[4]]), 11);
        assert_eq!(&out[5..], b"<s>user: hi");
        // The same template again comes from the cache.
        assert!(cached.is_some());
        assert_eq!(round_trip(source, &mut cached), out);

        let loops =
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        let out = round_trip(loops, &mut cached);
        assert_eq!(out[0], 1);
        assert_eq!(
            std::str::from_utf8(&out[5..]).unwrap(),
            "the chat template exceeded its instruction budget (fuel 2000000)"
        );
    }

    #[tokio::test]
    async fn in_process_renders_are_bounded_by_fuel() {
        let loops =
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        let template = ChatTemplate::new(loops.into(), String::new(), String::new()).unwrap();
        let err = Renderer::new(None)
            .render(template, request("").messages, None, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind, WorkerErrorKind::InvalidInput);
        assert_eq!(
            err.message,
            "the chat template exceeded its instruction budget (fuel 2000000)"
        );
    }
}
