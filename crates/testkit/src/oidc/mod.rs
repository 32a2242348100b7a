//! [`TestIdp`]: a real OpenID Connect identity provider for a test, nothing mocked: panva's
//! certified `oidc-provider` (npm), configured by `tests/oidc/provider.mjs` with the clients,
//! accounts and features the SSO code talks to (code flow with PKCE, device flow, client
//! credentials with JWT access tokens, RP-initiated logout), and the few helpers a test needs to
//! play the browser against it ([`browserless_login`], [`complete_device_login`],
//! [`browserless_logout`], ...).
//!
//! What the provider offers (see `tests/oidc/provider.mjs` for the why of each setting):
//! - issuer `http://127.0.0.1:PORT` (a free port, no trailing slash), discovery at
//!   `/.well-known/openid-configuration` with `device_authorization_endpoint` and
//!   `end_session_endpoint`;
//! - clients [`WEB_CLIENT`] (ID tokens RS256), [`WEB_CLIENT_ES256`] and [`WEB_CLIENT_EDDSA`]:
//!   confidential (client_secret_basic or client_secret_post), code flow with PKCE S256
//!   required, refresh tokens, device flow; redirect URI `http://127.0.0.1:<any port>/api/oidc/callback`
//!   and post-logout redirect URI `http://127.0.0.1:<any port>/ui/`;
//! - clients [`SERVICE_CLIENT`] (groups `xi-users`) and [`SERVICE_ADMIN_CLIENT`] (groups
//!   `xi-admins`): client credentials only, RS256 JWT access tokens with `aud` [`API_AUDIENCE`]
//!   and a `groups` claim;
//! - accounts: any login name with any password; `sub` = `preferred_username` = the login,
//!   `email` = `<login>@example.test`, `groups`: alice `["xi-admins"]`, bob `["xi-users"]`,
//!   anyone else `[]`; scopes `openid profile email groups` put these into the ID token.
//!
//! The node side is installed on first use: when `tests/oidc/node_modules` is missing or holds
//! another `oidc-provider` version than `tests/oidc/package.json` pins, [`TestIdp::start`] runs
//! `npm ci` there (offline from `$HOME/.cache/xinference-rs/npm` when it can), under a file lock
//! so parallel test binaries don't install over each other. Node.js 20 or later and npm must be
//! installed; a start panics naming the fix when they are not (never skips silently).
//!
//! The provider dies with the test: it exits when its stdin closes, and the write end of that
//! pipe belongs to the test process (close-on-exec, so no other child inherits it); so it goes
//! even when the test is killed. Dropping the [`TestIdp`] stops it at once. Its log (stderr:
//! every authorization, token or logout error with oidc-provider's description) is kept in a
//! temp dir, see [`TestIdp::log`]; start failures include its tail.
//!
//! The helpers drive the provider's development login, consent, device and logout pages with a
//! [`reqwest::Client`] that keeps cookies and does not follow redirects ([`browser_client`]):
//! they follow redirects themselves so they can stop at the redirect back to our server and
//! hand that URL to the test unrequested (the test requests it, replays it, tampers with it).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tempfile::TempDir;

/// The secret of every confidential client unless [`TestIdp::start_with_secret`] says otherwise.
pub const DEFAULT_CLIENT_SECRET: &str = "xi-test-secret";
/// Interactive client (code flow, device flow), ID tokens signed RS256.
pub const WEB_CLIENT: &str = "xi-web";
/// Like [`WEB_CLIENT`], ID tokens signed ES256 (P-256).
pub const WEB_CLIENT_ES256: &str = "xi-web-es";
/// Like [`WEB_CLIENT`], ID tokens signed EdDSA (Ed25519).
pub const WEB_CLIENT_EDDSA: &str = "xi-web-ed";
/// Client-credentials client whose access tokens carry `groups: ["xi-users"]`.
pub const SERVICE_CLIENT: &str = "xi-service";
/// Client-credentials client whose access tokens carry `groups: ["xi-admins"]`.
pub const SERVICE_ADMIN_CLIENT: &str = "xi-service-admin";
/// The resource indicator and `aud` of the provider's JWT access tokens for our API.
pub const API_AUDIENCE: &str = "urn:xinference:api";

/// The path of our server's callback: [`browserless_login`] stops at the redirect to it.
const CALLBACK_PATH: &str = "/api/oidc/callback";

/// The path our server's logout sends the IdP back to: [`browserless_logout`] stops there.
const POST_LOGOUT_PATH: &str = "/ui/";

/// The first line provider.mjs prints; the issuer follows it.
const LISTENING: &str = "oidc-provider listening on ";

/// How long a start (spawn to the listening line) may take; `npm ci` comes before and on top.
/// Generous: it is a second or two on an idle machine, but the end-to-end tests start
/// providers while models load and generate on every core.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the provider may take to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many requests one helper may make before it gives up (a login takes about 8).
const MAX_STEPS: usize = 30;

/// What to do when Node.js or npm is missing; part of every "not installed" panic.
const INSTALL_HINT: &str = "install Node.js 20 or later with npm (Debian: `apt-get install -y \
     nodejs npm`), or set XI_NODE / XI_NPM to the binaries";

/// A running test identity provider (`tests/oidc/provider.mjs`), stopped on drop.
pub struct TestIdp {
    issuer: String,
    client_secret: String,
    rsa: SigningKey,
    ec: SigningKey,
    ed25519: SigningKey,
    /// `keys/` (the `--keys-out` dir), `provider.log`, and `client_secret` once written.
    dir: TempDir,
    /// The node process; taken and stopped first in [`Drop`], before its dir goes.
    process: Option<Process>,
    http: reqwest::Client,
}

/// One of the provider's signing keys, as `--keys-out` wrote it.
struct SigningKey {
    kid: String,
    /// PKCS#8 PEM of the private key.
    pem: String,
    path: PathBuf,
}

/// The node process; stopping it is in its [`Drop`] so that a panic during the start (which
/// happens before there is a [`TestIdp`]) kills it too.
struct Process {
    child: Child,
    /// Held only to be closed: closing it tells provider.mjs to exit.
    stdin: Option<ChildStdin>,
}

impl TestIdp {
    /// Starts one with the [`DEFAULT_CLIENT_SECRET`]. Installs the npm packages first when
    /// needed; panics with a clear message when Node.js or npm is missing, `npm ci` fails, or
    /// the provider does not come up within 30 s.
    pub fn start() -> TestIdp {
        TestIdp::start_with_secret(DEFAULT_CLIENT_SECRET)
    }

    /// Starts one whose confidential clients all have `client_secret`.
    pub fn start_with_secret(client_secret: &str) -> TestIdp {
        let oidc_dir = oidc_dir();
        let node = node_binary();
        ensure_node_modules(&oidc_dir);

        let dir = tempfile::Builder::new()
            .prefix("xi-idp-")
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temp dir for the test IdP: {e}"));
        let keys_dir = dir.path().join("keys");
        let log_path = dir.path().join("provider.log");
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));

        let mut child = Command::new(&node)
            .arg(oidc_dir.join("provider.mjs"))
            .args(["--port", "0", "--keys-out"])
            .arg(&keys_dir)
            .args(["--client-secret", client_secret])
            .current_dir(&oidc_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}; {INSTALL_HINT}", node.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let mut process = Process { child, stdin };

        // The first line comes from a thread, so the wait can time out and notice an exit.
        let (line_tx, line_rx) = mpsc::channel();
        thread::Builder::new()
            .name("xi-testkit-idp-stdout".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                let first = reader.read_line(&mut line).map(|_| line);
                let _ = line_tx.send(first);
                // Nothing else is expected on stdout; drain it so the provider never blocks.
                let _ = io::copy(&mut reader, &mut io::sink());
            })
            .unwrap_or_else(|e| panic!("spawn the thread that reads the IdP's stdout: {e}"));

        let deadline = Instant::now() + START_TIMEOUT;
        let line = loop {
            match line_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(line)) => break line,
                Ok(Err(e)) => panic!("read the test IdP's stdout: {e}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the thread reading the test IdP's stdout died")
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "the test IdP exited while starting ({status}); the end of {}:\n{}",
                    log_path.display(),
                    file_tail(&log_path)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "the test IdP did not print its listening line within {START_TIMEOUT:?}; \
                     the end of {}:\n{}",
                    log_path.display(),
                    file_tail(&log_path)
                );
            }
        };
        let issuer = match line.trim_end().strip_prefix(LISTENING) {
            Some(issuer) if issuer.starts_with("http://127.0.0.1:") => issuer.to_owned(),
            _ => panic!(
                "the test IdP's first line is {line:?}, not `{LISTENING}http://127.0.0.1:PORT`; \
                 the end of {}:\n{}",
                log_path.display(),
                file_tail(&log_path)
            ),
        };

        let index_path = keys_dir.join("keys.json");
        let index: serde_json::Value = fs::read(&index_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("read {}: {e}", index_path.display()));
        let key = |name: &str| {
            let kid = index[name]["kid"]
                .as_str()
                .unwrap_or_else(|| panic!("{} has no {name}.kid", index_path.display()))
                .to_owned();
            let path = keys_dir.join(format!("{name}.pem"));
            let pem = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            SigningKey { kid, pem, path }
        };
        let (rsa, ec, ed25519) = (key("rsa"), key("ec"), key("ed25519"));

        TestIdp {
            issuer,
            client_secret: client_secret.to_owned(),
            rsa,
            ec,
            ed25519,
            dir,
            process: Some(process),
            http: reqwest::Client::new(),
        }
    }

    /// The issuer, `http://127.0.0.1:PORT` (no trailing slash): what the server's provider
    /// config names, and the `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The secret of every confidential client.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// Writes the client secret into a file of the temp dir (for the server's
    /// `client_secret_file`) and returns its path; the same path on every call.
    pub fn client_secret_file(&self) -> PathBuf {
        let path = self.dir.path().join("client_secret");
        fs::write(&path, &self.client_secret)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// `<issuer>/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The token endpoint (oidc-provider's default route, `<issuer>/token`).
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The RSA 2048 key that signs RS256 ID tokens (of [`WEB_CLIENT`]) and all JWT access
    /// tokens: `(kid, PKCS#8 PEM of the private key)`, for crafting tokens the provider could
    /// have signed (expired, wrong audience, wrong nonce ...).
    pub fn rsa_key(&self) -> (&str, &str) {
        (&self.rsa.kid, &self.rsa.pem)
    }

    /// The P-256 key of ES256 ID tokens ([`WEB_CLIENT_ES256`]): `(kid, PKCS#8 PEM)`.
    pub fn ec_key(&self) -> (&str, &str) {
        (&self.ec.kid, &self.ec.pem)
    }

    /// The Ed25519 key of EdDSA ID tokens ([`WEB_CLIENT_EDDSA`]): `(kid, PKCS#8 PEM)`.
    pub fn ed25519_key(&self) -> (&str, &str) {
        (&self.ed25519.kid, &self.ed25519.pem)
    }

    /// The PEM files of the keys: `[rsa.pem, ec.pem, ed25519.pem]`, in the dir that also holds
    /// `keys.json` (`{"rsa": {"kid", "alg"}, "ec": .., "ed25519": ..}`).
    pub fn key_paths(&self) -> [&Path; 3] {
        [&self.rsa.path, &self.ec.path, &self.ed25519.path]
    }

    /// The provider's log so far (its stderr): worth printing when a test fails, since
    /// oidc-provider answers most errors with a terse code and logs the description here.
    pub fn log(&self) -> String {
        let path = self.dir.path().join("provider.log");
        fs::read_to_string(&path)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
    }

    /// A client-credentials access token of `client_id` ([`SERVICE_CLIENT`] or
    /// [`SERVICE_ADMIN_CLIENT`]) for our API: an RS256 JWT with `aud` [`API_AUDIENCE`], `iss`
    /// the issuer, `client_id`, and the client's `groups`. Panics when the token endpoint
    /// refuses, with its answer and the provider's log.
    pub async fn client_credentials_token(&self, client_id: &str) -> String {
        let body = self
            .token_request(
                client_id,
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", API_AUDIENCE),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("client credentials token for {client_id}: {e}"));
        match body["access_token"].as_str() {
            Some(token) => token.to_owned(),
            None => panic!("the token endpoint's answer has no access_token: {body}"),
        }
    }

    /// POSTs `form` to the token endpoint with `client_id` and the client secret (HTTP Basic):
    /// the JSON answer on 200, else an error with the answer and the provider's log tail.
    pub async fn token_request(
        &self,
        client_id: &str,
        form: &[(&str, &str)],
    ) -> Result<serde_json::Value, String> {
        let url = self.token_endpoint();
        let response = self
            .http
            .post(&url)
            .basic_auth(client_id, Some(&self.client_secret))
            .form(form)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("POST {url}: read the answer: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!(
                "POST {url}: HTTP {status}: {text}; the IdP's log ends:\n{}",
                tail(&self.log(), 2048)
            ));
        }
        serde_json::from_str(&text).map_err(|e| format!("POST {url}: not JSON ({e}): {text}"))
    }
}

impl TestIdp {
    /// Stops the provider now (a test of what happens when it is gone); its keys stay.
    pub fn stop(&mut self) {
        self.process.take();
    }
}

impl Drop for TestIdp {
    /// Stops the provider (SIGTERM, then SIGKILL after 5 s) before the temp dir goes.
    fn drop(&mut self) {
        self.process.take();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Closing stdin alone would do; the signal makes it immediate.
        self.stdin.take();
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child's.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

mod browser;
pub use browser::{
    browser_client, browserless_deny, browserless_login, browserless_logout, complete_device_login,
    deny_device_login,
};

/// `tests/oidc` of this repository (this crate is `crates/testkit`).
fn oidc_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc");
    let dir = fs::canonicalize(&dir).unwrap_or_else(|e| panic!("find {}: {e}", dir.display()));
    assert!(
        dir.join("provider.mjs").is_file() && dir.join("package-lock.json").is_file(),
        "{} lacks provider.mjs or package-lock.json",
        dir.display()
    );
    dir
}

/// `$XI_NODE` or `node`, checked to be Node.js 20 or later.
fn node_binary() -> PathBuf {
    let node = PathBuf::from(std::env::var_os("XI_NODE").unwrap_or_else(|| "node".into()));
    let output = Command::new(&node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "Node.js is needed for the test IdP: run {}: {e}; {INSTALL_HINT}",
                node.display()
            )
        });
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let major: Option<u32> = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next()?.parse().ok());
    match major {
        Some(major) if output.status.success() && major >= 20 => node,
        _ => panic!(
            "the test IdP needs Node.js 20 or later; {} --version says {version:?}; {INSTALL_HINT}",
            node.display()
        ),
    }
}

/// Runs `npm ci` in `tests/oidc` unless its node_modules holds the pinned oidc-provider.
/// Under an exclusive lock on a file in the npm cache dir, so that parallel tests and test
/// binaries install once and never over each other (the first holds the lock, the others wait
/// and then find the packages installed).
fn ensure_node_modules(dir: &Path) {
    if node_modules_current(dir) {
        return;
    }
    let cache = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/xinference-rs/npm"))
        .unwrap_or_else(|| std::env::temp_dir().join("xinference-rs-npm"));
    fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("create {}: {e}", cache.display()));
    let lock_path = cache.join("xi-testkit-oidc.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
    // SAFETY: flock on a file descriptor we own; the lock goes when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        panic!(
            "lock {}: {}",
            lock_path.display(),
            io::Error::last_os_error()
        );
    }
    if node_modules_current(dir) {
        return;
    }
    let npm = PathBuf::from(std::env::var_os("XI_NPM").unwrap_or_else(|| "npm".into()));
    eprintln!(
        "xi-testkit: installing the test IdP's npm packages (npm ci in {})",
        dir.display()
    );
    let output = Command::new(&npm)
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
            "--cache",
        ])
        .arg(&cache)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "npm is needed to install the test IdP: run {}: {e}; {INSTALL_HINT}",
                npm.display()
            )
        });
    if !output.status.success() || !node_modules_current(dir) {
        panic!(
            "`npm ci` in {} failed ({}); run it there by hand to see why (it needs the npm \
             registry once, then works offline from {}):\n{}{}",
            dir.display(),
            output.status,
            cache.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Whether `node_modules/oidc-provider` is the version `package.json` pins.
fn node_modules_current(dir: &Path) -> bool {
    let version = |path: PathBuf, pointer: &str| -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        json.pointer(pointer)?.as_str().map(str::to_owned)
    };
    let pinned = version(dir.join("package.json"), "/dependencies/oidc-provider");
    let installed = version(
        dir.join("node_modules/oidc-provider/package.json"),
        "/version",
    );
    pinned.is_some() && pinned == installed
}

/// The last 4 KiB of a file, for panic messages.
fn file_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// The last `max` bytes of `s` (at a character boundary).
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests;
