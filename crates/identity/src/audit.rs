//! The audit log: every login (success and failure), refresh, logout, admin change and denied
//! request, in the `audit_events` table. Events name who, what and from where; never a
//! password, token or key (keys appear only as their display prefix).

use serde::Serialize;
use sqlx::{Any, Executor, Row};

use crate::error::Result;

/// One event to record.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    /// `login`, `refresh`, `logout`, `user.create`, `key.revoke`, `denied`, ...
    pub action: &'a str,
    /// `ok`, or why not (`bad_password`, `reuse`, `forbidden`, ...).
    pub outcome: &'a str,
    pub username: Option<&'a str>,
    pub key_prefix: Option<&'a str>,
    /// What an admin action acted on (`user:7`, `key:3`).
    pub target: Option<String>,
    pub address: Option<&'a str>,
    pub detail: Option<String>,
}

pub async fn record<'e>(
    e: impl Executor<'e, Database = Any>,
    at: i64,
    ev: &Event<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, action, outcome, username, key_prefix, target, address, \
         detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(at)
    .bind(ev.action)
    .bind(ev.outcome)
    .bind(ev.username)
    .bind(ev.key_prefix)
    .bind(ev.target.as_deref())
    .bind(ev.address)
    .bind(ev.detail.as_deref())
    .execute(e)
    .await?;
    Ok(())
}

/// A recorded event, as `GET /v1/admin/audit` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub action: String,
    pub outcome: String,
    pub username: Option<String>,
    pub key_prefix: Option<String>,
    pub target: Option<String>,
    pub address: Option<String>,
    pub detail: Option<String>,
}

/// What to list: every field optional; newest first, `limit` at most (100 by default), before
/// the id `before_id` (for paging).
#[derive(Debug, Clone)]
pub struct Filter {
    pub username: Option<String>,
    pub key_prefix: Option<String>,
    pub action: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            username: None,
            key_prefix: None,
            action: None,
            since: None,
            until: None,
            before_id: None,
            limit: 100,
        }
    }
}

pub async fn list<'e>(e: impl Executor<'e, Database = Any>, f: &Filter) -> Result<Vec<AuditEvent>> {
    // Every condition is always present and bound; a missing filter binds NULL and matches all.
    let rows = sqlx::query(
        "SELECT id, at, action, outcome, username, key_prefix, target, address, detail \
         FROM audit_events \
         WHERE ($1 IS NULL OR username = $1) AND ($2 IS NULL OR key_prefix = $2) \
           AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR at >= $4) \
           AND ($5 IS NULL OR at <= $5) AND ($6 IS NULL OR id < $6) \
         ORDER BY id DESC LIMIT $7",
    )
    .bind(f.username.as_deref())
    .bind(f.key_prefix.as_deref())
    .bind(f.action.as_deref())
    .bind(f.since)
    .bind(f.until)
    .bind(f.before_id)
    .bind(f.limit)
    .fetch_all(e)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEvent {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                action: r.try_get("action")?,
                outcome: r.try_get("outcome")?,
                username: r.try_get("username")?,
                key_prefix: r.try_get("key_prefix")?,
                target: r.try_get("target")?,
                address: r.try_get("address")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
}

/// Deletes events older than `before`.
pub async fn prune<'e>(e: impl Executor<'e, Database = Any>, before: i64) -> Result<u64> {
    let done = sqlx::query("DELETE FROM audit_events WHERE at < $1")
        .bind(before)
        .execute(e)
        .await?;
    Ok(done.rows_affected())
}
