//! The throwaway PostgreSQL server of `xi_testkit::postgres`, against the real PostgreSQL
//! binaries: queries go through `psql` with the harness's URLs (as sqlx will use them).
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xi_testkit::postgres::TempPostgres;

/// Runs `sql` with psql (as the test's own user) on the database at `url`: its output, trimmed,
/// or psql's error.
fn psql(pg: &TempPostgres, url: &str, sql: &str) -> Result<String, String> {
    let output = Command::new(pg.bin_dir().join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The postmaster's pid, from the first line of `data/postmaster.pid`.
fn postmaster_pid(dir: &Path) -> u32 {
    let file = std::fs::read_to_string(dir.join("data/postmaster.pid")).expect("postmaster.pid");
    file.lines().next().unwrap().trim().parse().expect("a pid")
}

/// Whether a process with this pid exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_until_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn fresh_databases_are_independent() {
    let pg = TempPostgres::start();
    assert!(pg.is_running());
    assert_eq!(
        psql(&pg, &pg.url(), "select current_database()").unwrap(),
        "postgres"
    );
    // No TCP: the socket in the temp dir is the only way in.
    assert_eq!(psql(&pg, &pg.url(), "show listen_addresses").unwrap(), "");

    let a = pg.fresh_database();
    let b = pg.fresh_database();
    assert_ne!(a, b);
    let name_a = a.split('/').nth(3).unwrap().split('?').next().unwrap();
    assert!(name_a.starts_with("t_"), "{a}");
    assert_eq!(psql(&pg, &a, "select current_database()").unwrap(), name_a);

    psql(
        &pg,
        &a,
        "create table items (id int primary key, name text not null)",
    )
    .unwrap();
    psql(&pg, &a, "insert into items values (1, 'one'), (2, 'two')").unwrap();
    assert_eq!(
        psql(
            &pg,
            &a,
            "select string_agg(name, ',' order by id) from items"
        )
        .unwrap(),
        "one,two"
    );
    // The other database is empty.
    let error = psql(&pg, &b, "select count(*) from items").unwrap_err();
    assert!(error.contains("does not exist"), "{error}");
    assert_eq!(
        psql(
            &pg,
            &b,
            "select count(*) from pg_tables where schemaname = 'public'"
        )
        .unwrap(),
        "0"
    );
}

#[test]
fn stop_and_restart_keep_the_data() {
    let mut pg = TempPostgres::start();
    let db = pg.fresh_database();
    psql(
        &pg,
        &db,
        "create table kept (v text); insert into kept values ('still here')",
    )
    .unwrap();
    let old_pid = postmaster_pid(pg.dir());

    pg.stop();
    assert!(!pg.is_running());
    assert!(
        wait_until_gone(old_pid),
        "postmaster {old_pid} outlived stop()"
    );
    let error = psql(&pg, &db, "select 1").unwrap_err();
    assert!(
        error.contains("connection") || error.contains("socket"),
        "{error}"
    );
    pg.stop(); // stopping a stopped server does nothing

    pg.restart();
    assert!(pg.is_running());
    assert_ne!(postmaster_pid(pg.dir()), old_pid);
    assert_eq!(psql(&pg, &db, "select v from kept").unwrap(), "still here");
    // A restart of a running server stops it first.
    pg.restart();
    assert_eq!(psql(&pg, &db, "select v from kept").unwrap(), "still here");
}

#[test]
fn drop_stops_the_server_and_removes_its_dir() {
    let pg = TempPostgres::start();
    let dir: PathBuf = pg.dir().to_path_buf();
    let pid = postmaster_pid(&dir);
    assert!(alive(pid));
    assert!(
        dir.join("sock").read_dir().unwrap().next().is_some(),
        "no socket"
    );

    drop(pg);
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(!alive(pid), "postmaster {pid} outlived the drop");
}

#[test]
fn a_server_outlives_the_thread_that_started_it() {
    // The death signal is tied to the thread that forks the postmaster; the harness forks it
    // from a thread of its own, so a server handed to another thread keeps running.
    let pg = std::thread::spawn(TempPostgres::start).join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(pg.is_running());
    assert_eq!(psql(&pg, &pg.url(), "select 41 + 1").unwrap(), "42");
}

/// Env var that makes [`child_process_starts_a_server`] run (in the child of
/// [`the_server_dies_with_a_killed_test_process`]).
const CHILD: &str = "XI_TESTKIT_POSTGRES_CHILD";

#[test]
fn the_server_dies_with_a_killed_test_process() {
    // This test binary, run again for the one test below, which starts a server, says where it
    // is, and waits to be killed.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_starts_a_server", "--nocapture"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the test binary again");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map(|line| line.unwrap())
        .find(|line| line.starts_with("server "))
        .expect("the child's server line");
    let dir = PathBuf::from(line.trim_start_matches("server "));
    let pid = postmaster_pid(&dir);
    assert!(alive(pid));

    child.kill().unwrap(); // SIGKILL: no unwinding, no drop
    child.wait().unwrap();
    let gone = wait_until_gone(pid);
    if !gone {
        // Not to leave it running after the failure below.
        let _ = Command::new("kill")
            .args(["-QUIT", &pid.to_string()])
            .status();
    }
    // A killed process cannot clean up: its temp dir is left for us to remove.
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(gone, "postmaster {pid} outlived its killed test process");
}

#[test]
fn child_process_starts_a_server() {
    if std::env::var_os(CHILD).is_none() {
        return; // only a helper of the test above
    }
    let pg = TempPostgres::start();
    println!("server {}", pg.dir().display());
    std::thread::sleep(Duration::from_secs(60));
    drop(pg);
}
