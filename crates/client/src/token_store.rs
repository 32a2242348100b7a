//! The CLI's stored tokens, as upstream keeps them: the raw access token in
//! `$XINFERENCE_HOME/auth/<sha256 hex of the endpoint as typed>`, mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::ClientError;

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

fn file_error(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes the token atomically (a 0600 temp file renamed into place).
pub fn save(home: &Path, endpoint: &str, token: &str) -> Result<PathBuf, ClientError> {
    let path = token_path(home, endpoint);
    let dir = path.parent().unwrap_or(home);
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| file_error(&tmp, e))?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| file_error(&path, e))?;
    Ok(path)
}

/// The stored token of `endpoint`, if any.
pub fn load(home: &Path, endpoint: &str) -> Option<String> {
    let text = std::fs::read_to_string(token_path(home, endpoint)).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
