//! The identity store through the real binaries: `xinference-local --auth` creates the first
//! admin and prints its password once; the `xinference` CLI changes it, adds a user, hands out
//! and revokes a key, logs out.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::support::Local;

const CLI: &str = env!("CARGO_BIN_EXE_xinference");

/// Runs the CLI against `local` with `XINFERENCE_HOME=home`; (ok, stdout, stderr).
fn cli(home: &Path, local: &Local, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(CLI)
        .env("XINFERENCE_HOME", home)
        .env_remove("XINFERENCE_ENDPOINT")
        .env_remove("XINFERENCE_API_KEY")
        .args(args)
        .args(["-e", &local.url])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_first_admin_then_users_and_keys_through_the_cli() {
    let dir = TempDir::new().unwrap();
    let local = Local::start(&dir.path().join("server"), &["--auth"]);
    let password = local.bootstrap_password();
    assert!(password.len() >= 16, "a random password: {password}");
    let admin = dir.path().join("admin-home");
    let bob = dir.path().join("bob-home");

    let (ok, _, err) = cli(
        &admin,
        &local,
        &["login", "--username", "admin", "--password", &password],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&admin, &local, &["list"]);
    assert!(!ok);
    assert!(err.contains("Password change required"), "{err}");
    let (ok, _, err) = cli(
        &admin,
        &local,
        &[
            "user",
            "passwd",
            "--username",
            "admin",
            "--password",
            "admin-password-2",
            "--old-password",
            &password,
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&admin, &local, &["list"]);
    assert!(ok, "the same login goes on after the change: {err}");

    let (ok, _, err) = cli(
        &admin,
        &local,
        &[
            "user",
            "add",
            "--username",
            "bob",
            "--password",
            "bob-password",
            "--permission",
            "models:list",
            "--permission",
            "models:read",
            "--permission",
            "keys:create",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&admin, &local, &["user", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains("bob") && out.contains("admin"), "{out}");

    let (ok, _, err) = cli(
        &bob,
        &local,
        &["login", "--username", "bob", "--password", "bob-password"],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&bob, &local, &["key", "create", "--name", "app"]);
    assert!(ok, "{err}");
    let key = out.trim().to_string();
    assert!(
        key.starts_with("xf-") && key.len() == 51,
        "only the key on stdout: {out:?}"
    );
    assert!(err.contains("not be shown again"), "{err}");
    let (ok, _, err) = cli(&bob, &local, &["list", "--api-key", &key]);
    assert!(ok, "the key works: {err}");
    let (ok, out, _) = cli(&bob, &local, &["key", "list"]);
    assert!(
        ok && out.contains(&key[..7]) && !out.contains(&key),
        "{out}"
    );
    let (ok, _, err) = cli(&bob, &local, &["key", "revoke", "--id", "1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&bob, &local, &["list", "--api-key", &key]);
    assert!(
        !ok && err.contains("401"),
        "a revoked key is refused: {err}"
    );

    // Bob may not manage users.
    let (ok, _, err) = cli(&bob, &local, &["user", "list"]);
    assert!(!ok && err.contains("403"), "{err}");

    // Logout ends the session and forgets the tokens.
    let (ok, _, err) = cli(&bob, &local, &["logout"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&bob, &local, &["list"]);
    assert!(!ok && err.contains("login"), "{err}");

    // A disabled user cannot log in.
    let (ok, _, err) = cli(&admin, &local, &["user", "disable", "--username", "bob"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &bob,
        &local,
        &["login", "--username", "bob", "--password", "bob-password"],
    );
    assert!(
        !ok && err.contains("Incorrect username or password"),
        "{err}"
    );
}

#[test]
fn a_config_file_is_imported_into_the_store_and_its_logins_and_keys_keep_working() {
    let dir = TempDir::new().unwrap();
    let auth = dir.path().join("auth.json");
    crate::support::write_json(
        &auth,
        &crate::support::config(serde_json::json!([
            { "username": "admin", "password": "pw-admin-long", "permissions": ["admin"], "api_keys": ["sk-importadmin01"] },
            { "username": "reader", "password": "pw-reader-long", "permissions": ["models:list"] },
        ])),
    );
    let home = dir.path().join("server");
    let out = Command::new(env!("CARGO_BIN_EXE_xinference-local"))
        .args([
            "--home",
            home.to_str().unwrap(),
            "--auth-config",
            auth.to_str().unwrap(),
            "import-auth-config",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 2 users (admin, reader) and 1 api keys"),
        "{stdout}"
    );
    // Importing again changes nothing.
    let again = Command::new(env!("CARGO_BIN_EXE_xinference-local"))
        .args([
            "--home",
            home.to_str().unwrap(),
            "--auth-config",
            auth.to_str().unwrap(),
            "import-auth-config",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already in the store: admin, reader"));

    // Without the file: the same logins and key work from the store, no first admin is made.
    let local = Local::start(&home, &["--auth"]);
    assert!(!local.logs().contains("First admin"), "{}", local.logs());
    let cli_home = dir.path().join("cli");
    let (ok, _, err) = cli(
        &cli_home,
        &local,
        &[
            "login",
            "--username",
            "reader",
            "--password",
            "pw-reader-long",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&cli_home, &local, &["list"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &cli_home,
        &local,
        &["user", "list", "--api-key", "sk-importadmin01"],
    );
    assert!(ok, "the imported key acts for its admin: {err}");
}
