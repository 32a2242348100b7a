//! The `xinference` CLI binary against the real server with auth on: login and its token file,
//! launch, list, embed, chat, generate, rerank, registrations, terminate, and the errors a
//! person sees.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use tempfile::TempDir;

use crate::support::{build_cross_encoder, config, minilm, write_json, Local};

const CLI: &str = env!("CARGO_BIN_EXE_xinference");

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs the CLI with `XINFERENCE_HOME=home`, the endpoint of `local`, and `args`.
fn cli(home: &Path, local: &Local, args: &[&str]) -> Out {
    let out = Command::new(CLI)
        .env("XINFERENCE_HOME", home)
        .env_remove("XINFERENCE_ENDPOINT")
        .env_remove("XINFERENCE_API_KEY")
        .args(args)
        .args(["-e", &local.url])
        .output()
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

#[test]
fn the_cli_logs_in_and_drives_models() {
    let dir = TempDir::new().unwrap();
    let auth = dir.path().join("auth.json");
    write_json(
        &auth,
        &config(json!([
            { "username": "admin", "password": "pw-admin", "permissions": ["admin"], "api_keys": ["sk-cliadminkey01"] },
            { "username": "reader", "password": "pw-reader", "permissions": ["models:list", "models:read"] },
        ])),
    );
    let local = Local::start(
        &dir.path().join("server"),
        &["--auth-config", auth.to_str().unwrap()],
    );
    let home = dir.path().join("cli-home");
    let reader_home = dir.path().join("reader-home");

    // Not logged in: one readable line saying what to do.
    let out = cli(&home, &local, &["list"]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("requires a login: run `xinference login"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let out = cli(
        &home,
        &local,
        &["login", "--username", "admin", "--password", "wrong"],
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("Incorrect username or password (HTTP 401)"),
        "{}",
        out.stderr
    );

    let out = cli(
        &home,
        &local,
        &["login", "--username", "admin", "--password", "pw-admin"],
    );
    assert!(out.ok, "{}", out.stderr);
    let auth_dir = home.join("auth");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&auth_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".lock"))
        .collect();
    files.sort();
    // Upstream's token file (the raw access token, named by the endpoint's sha256 hex) and,
    // beside it, the identity store's refresh token.
    assert_eq!(
        files.len(),
        2,
        "the token file and its refresh token: {files:?}"
    );
    assert_eq!(
        files[0].file_name().unwrap().len(),
        64,
        "sha256 hex of the endpoint"
    );
    assert!(
        files[1].to_string_lossy().ends_with(".refresh"),
        "{files:?}"
    );
    #[cfg(unix)]
    for path in &files {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            path.display()
        );
    }

    // Launch an embedding model and an LLM (engine options pass through as --key value).
    let out = cli(
        &home,
        &local,
        &[
            "launch",
            "-n",
            "all-MiniLM-L6-v2",
            "-t",
            "embedding",
            "-en",
            "candle",
            "--model-path",
            minilm().to_str().unwrap(),
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "Model uid: all-MiniLM-L6-v2");
    let gguf = xi_testkit::smollm2_gguf();
    let out = cli(
        &home,
        &local,
        &[
            "launch",
            "-n",
            "smollm2-instruct",
            "-f",
            "ggufv2",
            "-q",
            "Q4_1",
            "-u",
            "smol",
            "--model-path",
            gguf.to_str().unwrap(),
            "--requantize",
            "F32",
        ],
    );
    assert!(out.ok, "{}", out.stderr);

    let out = cli(&home, &local, &["list"]);
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("UID"), "{}", out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("smol ") && l.contains("LLM") && l.contains("ggufv2")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("all-MiniLM-L6-v2") && l.contains("embedding")),
        "{}",
        out.stdout
    );

    let out = cli(
        &home,
        &local,
        &["embed", "-u", "all-MiniLM-L6-v2", "hello", "world"],
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout.matches("384 dimensions").count(),
        2,
        "{}",
        out.stdout
    );

    let out = cli(
        &home,
        &local,
        &[
            "chat",
            "-u",
            "smol",
            "-m",
            "What is the capital of France?",
            "--temperature",
            "0",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "The capital of France is Paris.");

    let out = cli(
        &home,
        &local,
        &[
            "generate",
            "-u",
            "smol",
            "-p",
            "The capital of France is",
            "--max-tokens",
            "3",
            "--temperature",
            "0",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stdout.trim().is_empty());

    // The api key works instead of the stored login.
    let out = cli(&reader_home, &local, &["-ak", "sk-cliadminkey01", "list"]);
    assert!(out.ok, "{}", out.stderr);

    // A user without permission sees the server's reason.
    let out = cli(
        &reader_home,
        &local,
        &["login", "--username", "reader", "--password", "pw-reader"],
    );
    assert!(out.ok, "{}", out.stderr);
    let out = cli(&reader_home, &local, &["terminate", "-u", "smol"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Not enough permissions (HTTP 403)"),
        "{}",
        out.stderr
    );

    // Registrations: register a cross-encoder folder, rerank with it, unregister.
    let model_dir = dir.path().join("cross-encoder");
    std::fs::create_dir_all(&model_dir).unwrap();
    build_cross_encoder(&model_dir);
    let spec = dir.path().join("my-ce.json");
    write_json(
        &spec,
        &json!({
            "model_name": "my-ce", "type": "normal", "language": ["en"], "max_tokens": 512,
            "model_specs": [{ "model_format": "pytorch", "model_uri": model_dir, "quantization": "none" }],
        }),
    );
    let out = cli(
        &home,
        &local,
        &["register", "-t", "rerank", "--file", spec.to_str().unwrap()],
    );
    assert!(out.ok, "{}", out.stderr);
    let out = cli(&home, &local, &["registrations", "-t", "rerank"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("my-ce") && l.contains("custom")),
        "{}",
        out.stdout
    );
    let out = cli(&home, &local, &["launch", "-n", "my-ce", "-t", "rerank"]);
    assert!(out.ok, "{}", out.stderr);
    let out = cli(
        &home,
        &local,
        &[
            "rerank",
            "-u",
            "my-ce",
            "-q",
            "What is the capital of France?",
            "Paris is the capital of France.",
            "Bananas are yellow.",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    let rows: Vec<&str> = out.stdout.lines().skip(2).collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert!(
        rows[0].contains("Paris"),
        "the relevant document ranks first: {}",
        out.stdout
    );
    let out = cli(&home, &local, &["terminate", "-u", "my-ce"]);
    assert!(out.ok, "{}", out.stderr);
    let out = cli(
        &home,
        &local,
        &["unregister", "-t", "rerank", "-n", "my-ce"],
    );
    assert!(out.ok, "{}", out.stderr);

    let out = cli(&home, &local, &["terminate", "-u", "smol"]);
    assert!(
        out.ok && out.stdout.contains("terminated smol"),
        "{}",
        out.stderr
    );
    let out = cli(&home, &local, &["terminate", "-u", "smol"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("(HTTP 400)") && out.stderr.contains("smol"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_cli_says_when_the_server_is_unreachable_and_hashes_passwords() {
    let dir = TempDir::new().unwrap();
    let out = Command::new(CLI)
        .env("XINFERENCE_HOME", dir.path())
        .args(["list", "-e", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach http://127.0.0.1:9"),
        "{stderr}"
    );

    let mut child = Command::new(CLI)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("$argon2id$"));
}
