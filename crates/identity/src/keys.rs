//! The `api_keys` and `api_key_models` tables, and the keys themselves: `xf-` and 48 random
//! letters and digits (upstream's format; 285 bits), stored only as their SHA-256 and a
//! 7-character display prefix.

use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};
use xi_api::identity::{KeyInfo, KeyLimits, KeyUsage, ModelPermission};
use xi_api::PermissionSet;

use crate::error::Result;
use crate::perms;

pub const KEY_PREFIX: &str = "xf-";
const KEY_RANDOM_LEN: usize = 48;
/// Characters of a key shown in listings (`xf-` and 4 more).
const DISPLAY_LEN: usize = 7;

/// A new key: (the key, its hash, its display prefix).
pub fn generate() -> (String, String, String) {
    let key = format!(
        "{KEY_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, KEY_RANDOM_LEN)
    );
    let hash = hash(&key);
    let prefix = key[..DISPLAY_LEN].to_string();
    (key, hash, prefix)
}

/// Whether `token` has the shape of one of our keys (checked before any lookup).
pub fn looks_like_key(token: &str) -> bool {
    token.len() == KEY_PREFIX.len() + KEY_RANDOM_LEN
        && token.starts_with(KEY_PREFIX)
        && token[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// SHA-256 hex of a key or token: what is stored and looked up.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// One key, with its owner's state (what authentication needs).
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: i64,
    pub user_id: i64,
    pub owner_username: String,
    pub owner_enabled: bool,
    pub owner_must_change_password: bool,
    pub owner_permissions: PermissionSet,
    pub key_prefix: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub expires_at: Option<i64>,
    pub permissions: Option<PermissionSet>,
    pub limits: KeyLimits,
    pub usage: KeyUsage,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub models: Vec<ModelPermission>,
}

impl KeyRow {
    pub fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id,
            user_id: self.user_id,
            owner_username: Some(self.owner_username.clone()),
            key_prefix: self.key_prefix.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            enabled: self.enabled,
            expires_at: self.expires_at,
            model_permissions: self.models.clone(),
            permissions: self.permissions.map(perms::names),
            limits: self.limits,
            usage: self.usage,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
        }
    }
}

const SELECT: &str = "SELECT k.id, k.user_id, u.username AS owner_username, \
    u.enabled AS owner_enabled, u.must_change_password AS owner_must_change, \
    u.permissions AS owner_permissions, k.key_prefix, k.name, k.description, k.enabled, \
    k.expires_at, k.permissions, k.requests_per_minute, k.tokens_per_minute, \
    k.concurrent_requests, k.tokens_per_day, k.tokens_per_month, k.requests, k.prompt_tokens, \
    k.completion_tokens, k.created_at, k.last_used_at \
    FROM api_keys k JOIN users u ON u.id = k.user_id";

fn limit<T: TryFrom<i64>>(row: &AnyRow, column: &str) -> Result<Option<T>> {
    let value: Option<i64> = row.try_get(column)?;
    Ok(value.and_then(|v| T::try_from(v).ok()))
}

fn from_row(row: &AnyRow) -> Result<KeyRow> {
    let counter = |column: &str| -> Result<u64> {
        Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
    };
    Ok(KeyRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        owner_username: row.try_get("owner_username")?,
        owner_enabled: row.try_get::<i64, _>("owner_enabled")? != 0,
        owner_must_change_password: row.try_get::<i64, _>("owner_must_change")? != 0,
        owner_permissions: perms::parse_stored(&row.try_get::<String, _>("owner_permissions")?),
        key_prefix: row.try_get("key_prefix")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        expires_at: row.try_get("expires_at")?,
        permissions: row
            .try_get::<Option<String>, _>("permissions")?
            .map(|p| perms::parse_stored(&p)),
        limits: KeyLimits {
            requests_per_minute: limit(row, "requests_per_minute")?,
            tokens_per_minute: limit(row, "tokens_per_minute")?,
            concurrent_requests: limit(row, "concurrent_requests")?,
            tokens_per_day: limit(row, "tokens_per_day")?,
            tokens_per_month: limit(row, "tokens_per_month")?,
        },
        usage: KeyUsage {
            requests: counter("requests")?,
            prompt_tokens: counter("prompt_tokens")?,
            completion_tokens: counter("completion_tokens")?,
        },
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        models: Vec::new(),
    })
}

async fn with_models(conn: &mut sqlx::AnyConnection, mut keys: Vec<KeyRow>) -> Result<Vec<KeyRow>> {
    for key in &mut keys {
        let rows = sqlx::query(
            "SELECT kind, value FROM api_key_models WHERE key_id = $1 ORDER BY kind, value",
        )
        .bind(key.id)
        .fetch_all(&mut *conn)
        .await?;
        key.models = rows
            .iter()
            .map(|r| {
                let value: String = r.try_get("value")?;
                Ok(ModelPermission {
                    permission_type: r.try_get("kind")?,
                    permission_value: (!value.is_empty()).then_some(value),
                })
            })
            .collect::<Result<_>>()?;
    }
    Ok(keys)
}

pub async fn by_hash(conn: &mut sqlx::AnyConnection, hash: &str) -> Result<Option<KeyRow>> {
    let sql = format!("{SELECT} WHERE k.key_hash = $1");
    let row = sqlx::query(&sql)
        .bind(hash)
        .fetch_optional(&mut *conn)
        .await?;
    with_models_of(conn, row).await
}

pub async fn by_id(conn: &mut sqlx::AnyConnection, id: i64) -> Result<Option<KeyRow>> {
    let sql = format!("{SELECT} WHERE k.id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    with_models_of(conn, row).await
}

/// The key of one looked-up row, with its model list.
async fn with_models_of(
    conn: &mut sqlx::AnyConnection,
    row: Option<AnyRow>,
) -> Result<Option<KeyRow>> {
    let keys = row
        .as_ref()
        .map(from_row)
        .transpose()?
        .into_iter()
        .collect();
    Ok(with_models(conn, keys).await?.pop())
}

/// Every key, or those of `owner`.
pub async fn list(conn: &mut sqlx::AnyConnection, owner: Option<i64>) -> Result<Vec<KeyRow>> {
    let rows = match owner {
        Some(owner) => {
            let sql = format!("{SELECT} WHERE k.user_id = $1 ORDER BY k.id");
            sqlx::query(&sql).bind(owner).fetch_all(&mut *conn).await?
        }
        None => {
            let sql = format!("{SELECT} ORDER BY k.id");
            sqlx::query(&sql).fetch_all(&mut *conn).await?
        }
    };
    let keys = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    with_models(conn, keys).await
}

/// What a new key row holds.
pub struct NewKey<'a> {
    pub user_id: i64,
    pub hash: &'a str,
    pub prefix: &'a str,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub permissions: Option<PermissionSet>,
    pub limits: KeyLimits,
    pub now: i64,
}

pub async fn insert(conn: &mut sqlx::AnyConnection, key: &NewKey<'_>) -> Result<i64> {
    let l = &key.limits;
    Ok(sqlx::query_scalar(
        "INSERT INTO api_keys (user_id, key_hash, key_prefix, name, description, enabled, \
         expires_at, permissions, requests_per_minute, tokens_per_minute, concurrent_requests, \
         tokens_per_day, tokens_per_month, created_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
    )
    .bind(key.user_id)
    .bind(key.hash)
    .bind(key.prefix)
    .bind(key.name)
    .bind(key.description)
    .bind(key.expires_at)
    .bind(key.permissions.map(perms::stored))
    .bind(l.requests_per_minute.map(i64::from))
    .bind(l.tokens_per_minute.map(to_i64))
    .bind(l.concurrent_requests.map(i64::from))
    .bind(l.tokens_per_day.map(to_i64))
    .bind(l.tokens_per_month.map(to_i64))
    .bind(key.now)
    .fetch_one(&mut *conn)
    .await?)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Replaces a key's model list.
pub async fn set_models(
    conn: &mut sqlx::AnyConnection,
    key_id: i64,
    models: &[ModelPermission],
) -> Result<()> {
    sqlx::query("DELETE FROM api_key_models WHERE key_id = $1")
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
    for m in models {
        sqlx::query(
            "INSERT INTO api_key_models (key_id, kind, value) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(key_id)
        .bind(&m.permission_type)
        .bind(m.permission_value.as_deref().unwrap_or_default())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The fields of an update; `None` leaves a field as it is.
#[derive(Default)]
pub struct KeyChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub expires_at: Option<Option<i64>>,
    pub permissions: Option<Option<PermissionSet>>,
    pub limits: Option<KeyLimits>,
}

pub async fn update(conn: &mut sqlx::AnyConnection, id: i64, c: &KeyChanges) -> Result<()> {
    if let Some(name) = &c.name {
        sqlx::query("UPDATE api_keys SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(description) = &c.description {
        sqlx::query("UPDATE api_keys SET description = $1 WHERE id = $2")
            .bind(description)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(enabled) = c.enabled {
        sqlx::query("UPDATE api_keys SET enabled = $1 WHERE id = $2")
            .bind(i64::from(enabled))
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(expires_at) = c.expires_at {
        sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
            .bind(expires_at)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(permissions) = c.permissions {
        sqlx::query("UPDATE api_keys SET permissions = $1 WHERE id = $2")
            .bind(permissions.map(perms::stored))
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(l) = &c.limits {
        sqlx::query(
            "UPDATE api_keys SET requests_per_minute = $1, tokens_per_minute = $2, \
             concurrent_requests = $3, tokens_per_day = $4, tokens_per_month = $5 WHERE id = $6",
        )
        .bind(l.requests_per_minute.map(i64::from))
        .bind(l.tokens_per_minute.map(to_i64))
        .bind(l.concurrent_requests.map(i64::from))
        .bind(l.tokens_per_day.map(to_i64))
        .bind(l.tokens_per_month.map(to_i64))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn delete<'e>(e: impl Executor<'e, Database = Any>, id: i64) -> Result<()> {
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn count<'e>(e: impl Executor<'e, Database = Any>) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
        .fetch_one(e)
        .await?)
}
