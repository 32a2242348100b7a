//! The `sessions` and `refresh_tokens` tables. A login opens a session; its refresh tokens
//! rotate (each one works once); presenting a used one again is reuse (a stolen token raced
//! its owner), and ends the whole session (OAuth 2.0 Security BCP, refresh token rotation).

use rand::RngCore;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::error::Result;
use crate::keys::hash;

/// A random 128-bit id or 256-bit token, hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub user_id: Option<i64>,
    pub username: String,
    pub source: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

fn from_row(row: &AnyRow) -> Result<SessionRow> {
    Ok(SessionRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        source: row.try_get("source")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const COLUMNS: &str = "s.id, s.user_id, s.username, s.source, s.expires_at, s.revoked_at";

pub async fn by_id<'e>(
    e: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<Option<SessionRow>> {
    let sql = format!("SELECT {COLUMNS} FROM sessions s WHERE s.id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(e).await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn insert<'e>(
    e: impl Executor<'e, Database = Any>,
    s: &SessionRow,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, username, source, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&s.id)
    .bind(s.user_id)
    .bind(&s.username)
    .bind(&s.source)
    .bind(now)
    .bind(s.expires_at)
    .execute(e)
    .await?;
    Ok(())
}

/// Issues a refresh token of `session`; returns the token (only its hash is stored).
pub async fn new_refresh_token<'e>(
    e: impl Executor<'e, Database = Any>,
    session: &str,
    now: i64,
    expires_at: i64,
) -> Result<String> {
    let token = random_hex(32);
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash(&token))
    .bind(session)
    .bind(now)
    .bind(expires_at)
    .execute(e)
    .await?;
    Ok(token)
}

/// A refresh token's row with its session.
pub struct RefreshRow {
    pub token_expires_at: i64,
    pub used_at: Option<i64>,
    pub session: SessionRow,
}

pub async fn refresh_token<'e>(
    e: impl Executor<'e, Database = Any>,
    token: &str,
) -> Result<Option<RefreshRow>> {
    let sql = format!(
        "SELECT r.expires_at AS token_expires_at, r.used_at, {COLUMNS} \
         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = $1"
    );
    let row = sqlx::query(&sql)
        .bind(hash(token))
        .fetch_optional(e)
        .await?;
    row.as_ref()
        .map(|r| {
            Ok(RefreshRow {
                token_expires_at: r.try_get("token_expires_at")?,
                used_at: r.try_get("used_at")?,
                session: from_row(r)?,
            })
        })
        .transpose()
}

/// Marks a refresh token used; false when another request used it first.
pub async fn mark_used<'e>(
    e: impl Executor<'e, Database = Any>,
    token: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now)
    .bind(hash(token))
    .execute(e)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn revoke<'e>(e: impl Executor<'e, Database = Any>, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

/// Ends every session of a user but `keep` (the caller's own, on a password change).
pub async fn revoke_user<'e>(
    e: impl Executor<'e, Database = Any>,
    user_id: i64,
    keep: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE sessions SET revoked_at = $1 \
         WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3",
    )
    .bind(now)
    .bind(user_id)
    .bind(keep.unwrap_or_default())
    .execute(e)
    .await?;
    Ok(())
}

/// Deletes sessions that ended (expired or revoked) before `before`, with their tokens.
pub async fn prune<'e>(e: impl Executor<'e, Database = Any>, before: i64) -> Result<u64> {
    let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1")
        .bind(before)
        .execute(e)
        .await?;
    Ok(done.rows_affected())
}
