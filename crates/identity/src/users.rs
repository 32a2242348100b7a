//! The `users` table: rows in, rows out. Policy (who may do what) lives in `service`.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use xi_api::identity::UserInfo;
use xi_api::PermissionSet;

use crate::error::Result;
use crate::perms;

/// One user of the identity store.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    /// `local`, or `oidc` for a user of single sign-on.
    pub source: String,
    pub password_hash: Option<String>,
    pub enabled: bool,
    pub must_change_password: bool,
    pub permissions: PermissionSet,
    pub created_at: i64,
}

impl UserRow {
    pub fn info(&self) -> UserInfo {
        UserInfo {
            id: Some(self.id),
            username: self.username.clone(),
            source: self.source.clone(),
            enabled: self.enabled,
            must_change_password: self.must_change_password,
            permissions: perms::names(self.permissions),
            created_at: Some(self.created_at),
        }
    }
}

const COLUMNS: &str = "id, username, source, password_hash, enabled, must_change_password, \
     permissions, created_at";

fn from_row(row: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        source: row.try_get("source")?,
        password_hash: row.try_get("password_hash")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        must_change_password: row.try_get::<i64, _>("must_change_password")? != 0,
        permissions: perms::parse_stored(&row.try_get::<String, _>("permissions")?),
        created_at: row.try_get("created_at")?,
    })
}

pub async fn by_id<'e>(e: impl Executor<'e, Database = Any>, id: i64) -> Result<Option<UserRow>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(e).await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn by_name<'e>(
    e: impl Executor<'e, Database = Any>,
    username: &str,
) -> Result<Option<UserRow>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE username = $1");
    let row = sqlx::query(&sql).bind(username).fetch_optional(e).await?;
    row.as_ref().map(from_row).transpose()
}

/// The user a provider's issuer and subject name.
pub async fn by_oidc<'e>(
    e: impl Executor<'e, Database = Any>,
    issuer: &str,
    subject: &str,
) -> Result<Option<UserRow>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2");
    let row = sqlx::query(&sql)
        .bind(issuer)
        .bind(subject)
        .fetch_optional(e)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// A new user of single sign-on (no password); its id.
pub async fn insert_oidc<'e>(
    e: impl Executor<'e, Database = Any>,
    username: &str,
    issuer: &str,
    subject: &str,
    permissions: PermissionSet,
    now: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO users (username, source, enabled, must_change_password, permissions, \
         created_at, oidc_issuer, oidc_subject) VALUES ($1, 'oidc', 1, 0, $2, $3, $4, $5) \
         RETURNING id",
    )
    .bind(username)
    .bind(perms::stored(permissions))
    .bind(now)
    .bind(issuer)
    .bind(subject)
    .fetch_one(e)
    .await?)
}

pub async fn list<'e>(e: impl Executor<'e, Database = Any>) -> Result<Vec<UserRow>> {
    let sql = format!("SELECT {COLUMNS} FROM users ORDER BY id");
    let rows = sqlx::query(&sql).fetch_all(e).await?;
    rows.iter().map(from_row).collect()
}

pub async fn count<'e>(e: impl Executor<'e, Database = Any>) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(e)
        .await?)
}

/// The new user's id.
pub async fn insert<'e>(
    e: impl Executor<'e, Database = Any>,
    username: &str,
    password_hash: &str,
    permissions: PermissionSet,
    must_change_password: bool,
    now: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO users (username, source, password_hash, enabled, must_change_password, \
         permissions, created_at) VALUES ($1, 'local', $2, 1, $3, $4, $5) RETURNING id",
    )
    .bind(username)
    .bind(password_hash)
    .bind(i64::from(must_change_password))
    .bind(perms::stored(permissions))
    .bind(now)
    .fetch_one(e)
    .await?)
}

pub async fn set_enabled<'e>(
    e: impl Executor<'e, Database = Any>,
    id: i64,
    enabled: bool,
) -> Result<()> {
    sqlx::query("UPDATE users SET enabled = $1 WHERE id = $2")
        .bind(i64::from(enabled))
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn set_must_change<'e>(
    e: impl Executor<'e, Database = Any>,
    id: i64,
    must: bool,
) -> Result<()> {
    sqlx::query("UPDATE users SET must_change_password = $1 WHERE id = $2")
        .bind(i64::from(must))
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn set_permissions<'e>(
    e: impl Executor<'e, Database = Any>,
    id: i64,
    permissions: PermissionSet,
) -> Result<()> {
    sqlx::query("UPDATE users SET permissions = $1 WHERE id = $2")
        .bind(perms::stored(permissions))
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

/// Sets the password hash and clears `must_change_password`.
pub async fn set_password<'e>(
    e: impl Executor<'e, Database = Any>,
    id: i64,
    password_hash: &str,
) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = $1, must_change_password = 0 WHERE id = $2")
        .bind(password_hash)
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

/// Removes the user; its keys and sessions go with it (foreign keys cascade).
pub async fn delete<'e>(e: impl Executor<'e, Database = Any>, id: i64) -> Result<()> {
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}
