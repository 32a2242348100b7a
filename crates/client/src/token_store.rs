//! The CLI's stored tokens, as upstream keeps them: the raw access token in
//! `$XINFERENCE_HOME/auth/<sha256 hex of the endpoint as typed>`, mode 0600 (upstream's CLI reads
//! that file too: it stays exactly so). With an identity store the server also gives a refresh
//! token, kept beside it in `<same name>.refresh` (mode 0600; upstream ignores it).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::ClientError;

/// A refresh lock older than this was left by a process that died: it is taken over.
const STALE_LOCK: Duration = Duration::from_secs(30);

/// `$XINFERENCE_HOME`, else `~/.xinference`.
pub fn home() -> Result<PathBuf, ClientError> {
    if let Some(home) = std::env::var_os("XINFERENCE_HOME") {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".xinference"))
        .ok_or_else(|| ClientError::Invalid("HOME is not set; set XINFERENCE_HOME".into()))
}

/// The token file of `endpoint` under `home`.
pub fn token_path(home: &Path, endpoint: &str) -> PathBuf {
    home.join("auth")
        .join(hex::encode(Sha256::digest(endpoint.as_bytes())))
}

/// The refresh token file of `endpoint`: the token file's name + `.refresh`.
pub fn refresh_path(home: &Path, endpoint: &str) -> PathBuf {
    with_suffix(&token_path(home, endpoint), ".refresh")
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes `contents` to `path` atomically: a 0600 temp file (named by this process, so two
/// processes never share one) renamed into place.
fn write_private(path: &Path, contents: &str) -> Result<(), ClientError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let tmp = with_suffix(path, &format!(".{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| file_error(&tmp, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

/// The trimmed, non-empty contents of `path`, if any.
fn read_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// Removes `path`; whether it was there.
fn remove_file(path: &Path) -> Result<bool, ClientError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(file_error(path, e)),
    }
}

/// Writes the access token atomically (a 0600 temp file renamed into place).
pub fn save(home: &Path, endpoint: &str, token: &str) -> Result<PathBuf, ClientError> {
    let path = token_path(home, endpoint);
    write_private(&path, token)?;
    Ok(path)
}

/// The stored token of `endpoint`, if any.
pub fn load(home: &Path, endpoint: &str) -> Option<String> {
    read_token(&token_path(home, endpoint))
}

/// Writes the refresh token atomically, as [`save`] does the access token.
pub fn save_refresh(home: &Path, endpoint: &str, token: &str) -> Result<PathBuf, ClientError> {
    let path = refresh_path(home, endpoint);
    write_private(&path, token)?;
    Ok(path)
}

/// The stored refresh token of `endpoint`, if any.
pub fn load_refresh(home: &Path, endpoint: &str) -> Option<String> {
    read_token(&refresh_path(home, endpoint))
}

/// Removes the refresh token of `endpoint`; whether there was one.
pub fn remove_refresh(home: &Path, endpoint: &str) -> Result<bool, ClientError> {
    remove_file(&refresh_path(home, endpoint))
}

/// Removes both token files of `endpoint`; the paths that were there.
pub fn remove(home: &Path, endpoint: &str) -> Result<Vec<PathBuf>, ClientError> {
    let mut removed = Vec::new();
    for path in [token_path(home, endpoint), refresh_path(home, endpoint)] {
        if remove_file(&path)? {
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Held while one process refreshes the login of an endpoint (a refresh token is single use:
/// two processes refreshing with the same one would make the server revoke the session). The
/// lock file (`<token file>.lock`) is removed on drop.
#[derive(Debug)]
pub struct RefreshLock {
    path: PathBuf,
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes the refresh lock of `endpoint` if it is free (or stale); `None` while another process
/// holds it.
pub fn try_lock(home: &Path, endpoint: &str) -> Result<Option<RefreshLock>, ClientError> {
    let path = with_suffix(&token_path(home, endpoint), ".lock");
    let dir = path.parent().unwrap_or(home);
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => Ok(Some(RefreshLock { path })),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let age = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_some_and(|age| age > STALE_LOCK) {
                remove_file(&path)?;
                return try_lock(home, endpoint);
            }
            Ok(None)
        }
        Err(e) => Err(file_error(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn tokens_are_keyed_by_the_endpoint_as_typed_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), "http://127.0.0.1:9997", "tok").unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            // Python: hashlib.sha256(b"http://127.0.0.1:9997").hexdigest(), as upstream names it
            "873c6f9a04faad636477a99fe9389f2a6d00ba47ad8a1088a7a4063549c0cdf0"
        );
        assert_eq!(
            load(dir.path(), "http://127.0.0.1:9997").as_deref(),
            Some("tok")
        );
        assert_eq!(load(dir.path(), "http://127.0.0.1:9997/"), None);
        // The raw token and nothing else: upstream's CLI reads this file.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "tok");
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn the_refresh_token_lives_beside_the_access_token_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = "http://127.0.0.1:9997";
        assert_eq!(load_refresh(dir.path(), endpoint), None);
        let access = save(dir.path(), endpoint, "access").unwrap();
        let refresh = save_refresh(dir.path(), endpoint, "refresh-1").unwrap();
        assert_eq!(
            refresh.file_name().unwrap().to_str().unwrap(),
            "873c6f9a04faad636477a99fe9389f2a6d00ba47ad8a1088a7a4063549c0cdf0.refresh"
        );
        assert_eq!(refresh.parent(), access.parent());
        #[cfg(unix)]
        assert_eq!(mode(&refresh), 0o600);
        save_refresh(dir.path(), endpoint, "refresh-2").unwrap();
        assert_eq!(
            load_refresh(dir.path(), endpoint).as_deref(),
            Some("refresh-2")
        );
        // The access token file is untouched by the refresh token's.
        assert_eq!(load(dir.path(), endpoint).as_deref(), Some("access"));
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(access.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        assert!(remove_refresh(dir.path(), endpoint).unwrap());
        assert!(!remove_refresh(dir.path(), endpoint).unwrap());
        assert_eq!(load(dir.path(), endpoint).as_deref(), Some("access"));
        save_refresh(dir.path(), endpoint, "refresh-3").unwrap();
        assert_eq!(remove(dir.path(), endpoint).unwrap(), vec![access, refresh]);
        assert_eq!(load(dir.path(), endpoint), None);
        assert_eq!(load_refresh(dir.path(), endpoint), None);
        assert!(remove(dir.path(), endpoint).unwrap().is_empty());
    }

    #[test]
    fn the_refresh_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = "http://127.0.0.1:9997";
        let held = try_lock(dir.path(), endpoint).unwrap().expect("free");
        assert!(try_lock(dir.path(), endpoint).unwrap().is_none());
        // Another endpoint has its own lock.
        assert!(try_lock(dir.path(), "http://other:9997").unwrap().is_some());
        drop(held);
        assert!(try_lock(dir.path(), endpoint).unwrap().is_some());
    }
}
