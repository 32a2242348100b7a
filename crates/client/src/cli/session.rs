//! The credentials a command runs with, and the one place a refused stored login is renewed:
//! on a 401, when the login came from the token store and a refresh token is stored, the CLI
//! refreshes once (`POST /v1/auth/refresh`), stores both new tokens and runs the command once
//! more. A second 401 is the command's error.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::Client;
use crate::error::ClientError;
use crate::token_store;

/// How long to wait for another process that is refreshing the same login.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Where a command's credentials come from.
#[derive(Debug, Clone)]
pub struct Session {
    endpoint: String,
    /// `$XINFERENCE_HOME`: the token store. `None` with `--api-key` (nothing to refresh).
    home: Option<PathBuf>,
    token: Option<String>,
}

impl Session {
    /// `--api-key`: sent as it is, never refreshed.
    pub fn with_key(endpoint: &str, key: String) -> Session {
        Session {
            endpoint: endpoint.to_string(),
            home: None,
            token: Some(key),
        }
    }

    /// The stored login of `endpoint` under `home` (none stored: no token is sent).
    pub fn stored(endpoint: &str, home: PathBuf) -> Session {
        Session {
            endpoint: endpoint.to_string(),
            token: token_store::load(&home, endpoint),
            home: Some(home),
        }
    }

    /// Whether a token (api key or stored login) is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the token sent is the stored login.
    pub fn uses_stored_login(&self) -> bool {
        self.home.is_some() && self.token.is_some()
    }

    /// Runs `call` with a client for this session; on a 401 with a stored refresh token,
    /// refreshes the login once and runs `call` once more with the new token.
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let first = call(Client::new(&self.endpoint, self.token.clone())).await;
        let refused = match first {
            Err(e) if e.is_unauthorized() => e,
            other => return other,
        };
        let Some(home) = &self.home else {
            return Err(refused);
        };
        match self.renew(home).await? {
            Some(token) => call(Client::new(&self.endpoint, Some(token))).await,
            None => Err(refused),
        }
    }

    /// A fresh access token for the stored login (stored, with its new refresh token), or
    /// `None` when there is nothing to refresh with or the server refused the refresh token
    /// (which is then removed: it is dead).
    async fn renew(&self, home: &Path) -> Result<Option<String>, ClientError> {
        if token_store::load_refresh(home, &self.endpoint).is_none() {
            return Ok(None);
        }
        let _lock = lock(home, &self.endpoint).await?;
        // Another process may have refreshed while this one waited: its token is the one to use
        // (the refresh token this one read is spent).
        let stored = token_store::load(home, &self.endpoint);
        if stored.is_some() && stored != self.token {
            return Ok(stored);
        }
        let Some(refresh_token) = token_store::load_refresh(home, &self.endpoint) else {
            return Ok(None);
        };
        let reply = match Client::new(&self.endpoint, None)
            .refresh(&refresh_token)
            .await
        {
            Ok(reply) => reply,
            // Expired, revoked or unknown: the stored refresh token is dead.
            Err(ClientError::Server {
                status: 400 | 401 | 403,
                ..
            }) => {
                token_store::remove_refresh(home, &self.endpoint)?;
                return Ok(None);
            }
            // Anything else (a server without the route, a passing failure): the command's
            // own 401 is the error to show; the refresh token stays for a later try.
            Err(ClientError::Server { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        token_store::save(home, &self.endpoint, &reply.access_token)?;
        match &reply.refresh_token {
            Some(next) => {
                token_store::save_refresh(home, &self.endpoint, next)?;
            }
            // The spent one is of no further use.
            None => {
                token_store::remove_refresh(home, &self.endpoint)?;
            }
        }
        Ok(Some(reply.access_token))
    }
}

/// Waits (up to [`LOCK_WAIT`]) for the refresh lock of `endpoint`.
async fn lock(home: &Path, endpoint: &str) -> Result<token_store::RefreshLock, ClientError> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        if let Some(lock) = token_store::try_lock(home, endpoint)? {
            return Ok(lock);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClientError::Invalid(format!(
                "another xinference is refreshing the login of {endpoint}; try again"
            )));
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::test_server::server;
    use super::*;

    fn refused() -> (u16, Value) {
        (401, json!({"detail": "Invalid token"}))
    }

    fn tokens(access: &str, refresh: &str) -> (u16, Value) {
        (
            200,
            json!({"access_token": access, "token_type": "bearer", "expires_in": 900,
                   "refresh_token": refresh}),
        )
    }

    /// A session logged in to `endpoint` with `old` / `r1` stored.
    fn logged_in(endpoint: &str) -> (tempfile::TempDir, Session) {
        let home = tempfile::tempdir().unwrap();
        token_store::save(home.path(), endpoint, "old").unwrap();
        token_store::save_refresh(home.path(), endpoint, "r1").unwrap();
        let session = Session::stored(endpoint, home.path().to_path_buf());
        (home, session)
    }

    async fn models(session: &Session) -> Result<Value, ClientError> {
        session
            .run(|client| async move { client.get("/v1/models").await })
            .await
    }

    #[tokio::test]
    async fn a_401_refreshes_once_stores_both_tokens_and_retries_once() {
        let (endpoint, seen) = server(vec![
            refused(),
            tokens("new", "r2"),
            (200, json!({"data": []})),
        ])
        .await;
        let (home, session) = logged_in(&endpoint);
        assert_eq!(models(&session).await.unwrap(), json!({"data": []}));

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0].line, "GET /v1/models HTTP/1.1");
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer old"));
        assert_eq!(seen[1].line, "POST /v1/auth/refresh HTTP/1.1");
        assert_eq!(
            serde_json::from_str::<Value>(&seen[1].body).unwrap(),
            json!({"refresh_token": "r1"})
        );
        assert_eq!(seen[2].line, "GET /v1/models HTTP/1.1");
        assert_eq!(seen[2].authorization.as_deref(), Some("Bearer new"));
        assert_eq!(
            token_store::load(home.path(), &endpoint).as_deref(),
            Some("new")
        );
        assert_eq!(
            token_store::load_refresh(home.path(), &endpoint).as_deref(),
            Some("r2")
        );
    }

    #[tokio::test]
    async fn a_second_401_is_the_error_and_there_is_no_second_refresh() {
        let (endpoint, seen) = server(vec![refused(), tokens("new", "r2"), refused()]).await;
        let (home, session) = logged_in(&endpoint);
        let err = models(&session).await.unwrap_err();
        assert!(err.is_unauthorized(), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 3);
        // The refresh itself worked: its tokens are kept.
        assert_eq!(
            token_store::load_refresh(home.path(), &endpoint).as_deref(),
            Some("r2")
        );
    }

    #[tokio::test]
    async fn a_refused_refresh_token_is_removed_and_the_first_401_returned() {
        let (endpoint, seen) = server(vec![refused(), refused()]).await;
        let (home, session) = logged_in(&endpoint);
        let err = models(&session).await.unwrap_err();
        assert!(err.is_unauthorized(), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(token_store::load_refresh(home.path(), &endpoint), None);
        assert_eq!(
            token_store::load(home.path(), &endpoint).as_deref(),
            Some("old")
        );
    }

    #[tokio::test]
    async fn without_a_refresh_token_or_with_an_api_key_a_401_is_returned_as_is() {
        let (endpoint, seen) = server(vec![refused(), refused()]).await;
        let (home, _) = logged_in(&endpoint);
        token_store::remove_refresh(home.path(), &endpoint).unwrap();
        let stored = Session::stored(&endpoint, home.path().to_path_buf());
        assert!(models(&stored).await.unwrap_err().is_unauthorized());

        token_store::save_refresh(home.path(), &endpoint, "r1").unwrap();
        let keyed = Session::with_key(&endpoint, "sk-x".into());
        assert!(models(&keyed).await.unwrap_err().is_unauthorized());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].authorization.as_deref(), Some("Bearer sk-x"));
    }

    #[tokio::test]
    async fn a_login_refreshed_by_another_process_is_used_without_refreshing() {
        let (endpoint, seen) = server(vec![refused(), (200, json!({"data": []}))]).await;
        let (home, session) = logged_in(&endpoint);
        // Another process refreshed after this session read "old".
        token_store::save(home.path(), &endpoint, "theirs").unwrap();
        token_store::save_refresh(home.path(), &endpoint, "r2").unwrap();
        models(&session).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].authorization.as_deref(), Some("Bearer theirs"));
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let (endpoint, seen) =
            server(vec![(403, json!({"detail": "Not enough permissions"}))]).await;
        let (_home, session) = logged_in(&endpoint);
        let err = models(&session).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Server { status: 403, .. }),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
