//! Writing the keys' use to the store: totals on `api_keys` (shown on a key's `GET`) and the
//! day and month counts of `key_usage` (read back for budgets shared between supervisors).

use sqlx::Row;

use crate::error::Result;
use crate::limits::Pending;
use crate::store::Store;

pub fn day_period(day: i64) -> String {
    format!("d:{day}")
}

pub fn month_period(month: i64) -> String {
    format!("m:{month}")
}

/// Adds `p` to key `key`'s totals and to its day and month counts, in one transaction.
pub async fn write(store: &Store, key: i64, p: &Pending, (day, month): (i64, i64)) -> Result<()> {
    let mut tx = store.pool().begin().await?;
    let updated = sqlx::query(
        "UPDATE api_keys SET requests = requests + $1, prompt_tokens = prompt_tokens + $2, \
         completion_tokens = completion_tokens + $3, last_used_at = $4 WHERE id = $5",
    )
    .bind(to_i64(p.requests))
    .bind(to_i64(p.prompt_tokens))
    .bind(to_i64(p.completion_tokens))
    .bind(p.last_used_at)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        // Revoked meanwhile: its use goes with it.
        return Ok(());
    }
    let tokens = to_i64(p.prompt_tokens + p.completion_tokens);
    if tokens > 0 {
        for period in [day_period(day), month_period(month)] {
            sqlx::query(
                "INSERT INTO key_usage (key_id, period, tokens) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id, period) DO UPDATE SET tokens = key_usage.tokens + $3",
            )
            .bind(key)
            .bind(period)
            .bind(tokens)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Key `key`'s stored token counts for the day and the month.
pub async fn read(store: &Store, key: i64, (day, month): (i64, i64)) -> Result<(u64, u64)> {
    let rows = sqlx::query(
        "SELECT period, tokens FROM key_usage WHERE key_id = $1 AND period IN ($2, $3)",
    )
    .bind(key)
    .bind(day_period(day))
    .bind(month_period(month))
    .fetch_all(store.pool())
    .await?;
    let mut out = (0, 0);
    for row in rows {
        let period: String = row.try_get("period")?;
        let tokens = u64::try_from(row.try_get::<i64, _>("tokens")?).unwrap_or(0);
        if period.starts_with("d:") {
            out.0 = tokens;
        } else {
            out.1 = tokens;
        }
    }
    Ok(out)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
