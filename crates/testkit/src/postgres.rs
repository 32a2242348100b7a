//! [`TempPostgres`]: a real PostgreSQL server of its own for a test, nothing mocked. Each one is
//! a fresh cluster (`initdb`) in a new temp dir, served by `postgres` on a Unix socket in that
//! dir only (no TCP), with durability off (`fsync`, `synchronous_commit`, `full_page_writes`)
//! since the data is thrown away; dropping it stops the server and deletes the dir.
//!
//! The binaries are found as `scripts/install-postgres.sh` finds them: `$XI_PG_BIN`, then
//! `initdb` on `PATH`, then the highest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
//! initdb and postgres refuse to run as root: when the tests run as root (as here and in CI),
//! the dir is handed to the `postgres` system user (made by Debian's package) and initdb,
//! postgres and psql run as that user (`setgid`/`setuid` in the forked child before `exec`).
//!
//! The server dies with the test process even when the test panics, aborts or is killed: the
//! postmaster is started with `PR_SET_PDEATHSIG` = `SIGQUIT` (Linux; PostgreSQL's immediate
//! shutdown). Linux sends that signal when the *thread* that forked the child exits, not the
//! process, and the test harness runs each test on a thread of its own; so the postmaster is
//! forked from a small thread of this module that lives until the server is stopped. Hence
//! a server can outlive the thread that started it, and a test binary may share one through a
//! `static` (e.g. a `LazyLock<TempPostgres>`); but statics are never dropped, so such a server
//! is only killed at exit (by the signal) and its temp dir is left behind. Prefer one
//! [`TempPostgres`] per test (a start takes about a second), with [`TempPostgres::fresh_database`]
//! for several independent databases in one test. After a `SIGKILL` of the test process the
//! server dies all the same, but its temp dir (`$TMPDIR/xi-pg-*`) stays.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// What to do when PostgreSQL is missing; part of every "not installed" panic.
const INSTALL_HINT: &str = "run scripts/install-postgres.sh (it installs Debian's postgresql \
     package), or set XI_PG_BIN to the directory holding initdb, postgres and psql";

/// How long a start may take before the test fails with the server's log.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fast shutdown may take before the postmaster is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes database names unique within the process (a random part makes them unique across).
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// A PostgreSQL server of its own for one test (or test binary): a fresh cluster in a temp dir,
/// listening only on a Unix socket in that dir (no TCP), stopped and deleted on drop.
///
/// The dir holds `data/` (the cluster), `sock/` (the socket, `.s.PGSQL.<port>`) and `log` (the
/// server's output, kept across restarts).
pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    /// Names the socket file only: no TCP port is opened.
    port: u16,
    /// The `postgres` user's uid and gid, when we are root and must not run the server as root.
    user: Option<(u32, u32)>,
    /// The running postmaster; behind a mutex so that a `static` server is `Sync`.
    server: Mutex<Option<Server>>,
}

/// A running postmaster.
struct Server {
    child: Child,
    /// Dropped once the postmaster has been reaped: that ends the thread that forked it, which
    /// had to outlive it (see the module doc on `PR_SET_PDEATHSIG`).
    _keeper: mpsc::Sender<()>,
}

impl TempPostgres {
    /// Starts one; panics with a clear message naming scripts/install-postgres.sh when
    /// PostgreSQL is not installed (never skips silently).
    pub fn start() -> TempPostgres {
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no initdb in $XI_PG_BIN, on PATH or in \
                 /usr/lib/postgresql/*/bin): {INSTALL_HINT}"
            )
        });
        for tool in ["postgres", "psql"] {
            assert!(
                bin.join(tool).is_file(),
                "{} has initdb but no {tool}: {INSTALL_HINT}",
                bin.display()
            );
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = (unsafe { libc::geteuid() } == 0).then(postgres_user);
        let pg = TempPostgres {
            dir: make_temp_dir(),
            bin,
            port: 20_000 + (random() % 40_000) as u16,
            user,
            server: Mutex::new(None),
        };
        // From here on a panic drops `pg`, which deletes the dir.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(pg.sock_dir())
            .unwrap_or_else(|e| panic!("create {}: {e}", pg.sock_dir().display()));
        File::create(pg.log_path())
            .unwrap_or_else(|e| panic!("create {}: {e}", pg.log_path().display()));
        if let Some((uid, gid)) = pg.user {
            for path in [pg.dir.as_path(), &pg.sock_dir(), &pg.log_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| {
                    panic!("hand {} to the postgres user: {e}", path.display())
                });
            }
        }
        pg.initdb();
        pg.spawn_server();
        pg
    }

    /// sqlx/libpq URL of the `postgres` database, e.g.
    /// `postgres://postgres@localhost/postgres?host=/tmp/xyz/sock&port=54321`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Creates a fresh empty database (unique name) and returns its URL, so tests sharing a
    /// server stay independent.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t_{}_{:08x}",
            DATABASES.fetch_add(1, Ordering::Relaxed),
            random() as u32
        );
        if let Err(e) = self.psql(&format!("CREATE DATABASE {name}")) {
            panic!("create database {name}: {e}");
        }
        self.database_url(&name)
    }

    /// Stops the server (fast shutdown), keeping its data: the database becomes unreachable.
    /// Does nothing when it is not running.
    pub fn stop(&mut self) {
        if let Some(server) = self.server().take() {
            shut_down(server);
        }
    }

    /// Starts it again on the same socket and port, with the same data (stopping it first if
    /// it is running).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_server();
    }

    /// Whether the postmaster is running (it may have been stopped, or have died).
    pub fn is_running(&self) -> bool {
        match self.server().as_mut() {
            Some(server) => matches!(server.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The temp dir: `data/`, `sock/` and `log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the PostgreSQL binaries in use (`initdb`, `postgres`, `psql`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    fn sock_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn database_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}&port={}",
            percent_encode(self.sock_dir().as_os_str()),
            self.port
        )
    }

    fn server(&self) -> MutexGuard<'_, Option<Server>> {
        // A panic while the lock was held leaves nothing half-done here.
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A command for one of the binaries, run in the temp dir (the test's working dir may be
    /// unreadable to the `postgres` user) and, when we are root, as the `postgres` user.
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        let user = self.user;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and makes only
        // async-signal-safe calls (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                if let Some((uid, gid)) = user {
                    let groups = [gid as libc::gid_t];
                    if libc::setgroups(1, groups.as_ptr()) != 0
                        || libc::setgid(gid as libc::gid_t) != 0
                        || libc::setuid(uid as libc::uid_t) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                // After the credential change, which clears the death signal.
                #[cfg(target_os = "linux")]
                {
                    let signal = libc::SIGQUIT as libc::c_ulong;
                    if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // The test process may have died before the prctl; then no signal would come.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        cmd
    }

    /// Makes the cluster. `trust` authentication is safe here: the only way in is the socket,
    /// in a 0700 dir owned by the server's user (and root).
    fn initdb(&self) {
        let data = self.dir.join("data");
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.join("initdb").display()));
        if !output.status.success() {
            panic!(
                "initdb -D {} failed ({}):\n{}{}",
                data.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Starts the postmaster and waits until it answers a query.
    fn spawn_server(&self) {
        let log = File::options()
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log_path().display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicate the log's file descriptor: {e}"));
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(self.sock_dir())
            .arg("-p")
            .arg(self.port.to_string());
        // No TCP at all: the socket in `sock/` is the only way in.
        for setting in [
            "listen_addresses=",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=200",
            "logging_collector=off",
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd.stdout(log).stderr(log_err);
        *self.server() = Some(spawn_kept(cmd));
        self.wait_until_ready();
    }

    /// Waits until the socket exists and `select 1` succeeds; panics with the log's tail when
    /// the postmaster exits or [`START_TIMEOUT`] passes.
    fn wait_until_ready(&self) {
        let socket = self.sock_dir().join(format!(".s.PGSQL.{}", self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::new();
        loop {
            if let Some(server) = self.server().as_mut() {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!(
                        "postgres exited while starting ({status}); the end of {}:\n{}",
                        self.log_path().display(),
                        self.log_tail()
                    );
                }
            }
            if socket.exists() {
                match self.psql("select 1") {
                    Ok(_) => return,
                    Err(e) => last_error = e,
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "postgres did not answer on {} within {START_TIMEOUT:?} (psql: {last_error}); \
                     the end of {}:\n{}",
                    socket.display(),
                    self.log_path().display(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one SQL command in the `postgres` database; its output, or psql's error.
    fn psql(&self, sql: &str) -> Result<String, String> {
        let output: Output = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.sock_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .map_err(|e| format!("run {}: {e}", self.bin.join("psql").display()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// The last few KiB of the server's log.
    fn log_tail(&self) -> String {
        let read = || -> io::Result<String> {
            let mut file = File::open(self.log_path())?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
            let mut tail = Vec::new();
            file.read_to_end(&mut tail)?;
            Ok(String::from_utf8_lossy(&tail).into_owned())
        };
        read().unwrap_or_else(|e| format!("(cannot read the log: {e})"))
    }
}

impl Drop for TempPostgres {
    /// Fast shutdown (SIGINT), up to 10 s, then SIGKILL; then the temp dir goes.
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            // No panic in drop (it may run while unwinding): say it and go on.
            eprintln!("xi-testkit: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Fast shutdown: SIGINT, then SIGKILL after [`STOP_TIMEOUT`]; reaps the postmaster.
fn shut_down(mut server: Server) {
    if let Ok(None) = server.child.try_wait() {
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child's.
        unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while let Ok(None) = server.child.try_wait() {
            if Instant::now() > deadline {
                let _ = server.child.kill();
                let _ = server.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    // Dropping `server` now ends its keeper thread.
}

/// Spawns `cmd` from a thread that lives until the returned [`Server`] is dropped, so that the
/// child's `PR_SET_PDEATHSIG` fires when the process dies, not when the calling thread does.
fn spawn_kept(mut cmd: Command) -> Server {
    let (child_tx, child_rx) = mpsc::channel();
    let (keeper, keep) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("xi-testkit-postgres".into())
        .spawn(move || {
            let spawned = cmd.spawn();
            let ok = spawned.is_ok();
            let _ = child_tx.send(spawned);
            if ok {
                // Returns once the sender is dropped.
                let _ = keep.recv();
            }
        })
        .unwrap_or_else(|e| panic!("spawn the thread that starts postgres: {e}"));
    let child = child_rx
        .recv()
        .unwrap_or_else(|e| panic!("the thread that starts postgres died: {e}"))
        .unwrap_or_else(|e| panic!("start postgres: {e}"));
    Server {
        child,
        _keeper: keeper,
    }
}

/// The directory of the first `initdb` in `$XI_PG_BIN`, on `PATH`, or in the highest
/// `/usr/lib/postgresql/<version>/bin`, with symlinks resolved (so that `postgres` and `psql`
/// of the same version are next to it).
fn find_bin_dir() -> Option<PathBuf> {
    let initdb_in = |dir: &Path| Some(dir.join("initdb")).filter(|f| f.is_file());
    let from_env = std::env::var_os("XI_PG_BIN").and_then(|d| initdb_in(Path::new(&d)));
    let on_path = || {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).find_map(|d| initdb_in(&d)))
    };
    let debian = || {
        let versions = fs::read_dir("/usr/lib/postgresql").ok()?;
        versions
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let name = path.file_name()?.to_str()?;
                let version: Vec<u32> = name
                    .split('.')
                    .map(|n| n.parse().ok())
                    .collect::<Option<_>>()?;
                Some((version, initdb_in(&path.join("bin"))?))
            })
            .max()
            .map(|(_, initdb)| initdb)
    };
    let initdb = from_env.or_else(on_path).or_else(debian)?;
    let initdb = fs::canonicalize(&initdb).unwrap_or(initdb);
    initdb.parent().map(Path::to_path_buf)
}

/// The `postgres` system user's uid and gid (Debian's package makes it).
fn postgres_user() -> (u32, u32) {
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids) for getpwnam_r to fill.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getpwnam_r (unlike getpwnam) is thread-safe.
    let rc = unsafe {
        libc::getpwnam_r(
            c"postgres".as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        panic!(
            "the tests run as root, and initdb and postgres refuse to: they run as the \
             `postgres` system user, which does not exist here (lookup: {}); {INSTALL_HINT}",
            if rc != 0 {
                io::Error::from_raw_os_error(rc).to_string()
            } else {
                "no such user".into()
            }
        );
    }
    (entry.pw_uid, entry.pw_gid)
}

/// A new 0700 dir for one server: `$TMPDIR/xi-pg-<pid>-<random>`, or under `/tmp` when
/// `$TMPDIR` is so long that the socket's path would pass the ~107-byte limit.
fn make_temp_dir() -> PathBuf {
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 64 {
        base = PathBuf::from("/tmp");
    }
    loop {
        let dir = base.join(format!(
            "xi-pg-{}-{:08x}",
            std::process::id(),
            random() as u32
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

/// A random number from the standard library's per-process random hash keys (no `rand` needed:
/// it only keeps names and port numbers apart).
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Percent-encodes a path for a URL's query: everything but unreserved characters and `/`.
fn percent_encode(path: &OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
