//! [`Store`]: the database (SQLite or PostgreSQL) behind one sqlx `Any` pool, migrated on open.
//! Every query in this crate is written once, with `$n` placeholders both drivers accept, and
//! every value bound (no SQL is ever built from input).
//!
//! Writes go through [`Store::write`]: a transaction whose first statement bumps the store's
//! revision. That row lock serializes writers (across processes too: two supervisors on one
//! PostgreSQL), so checks such as "the last admin" run on data no one else is changing, and
//! the new revision tells every cache that something changed.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions, Transaction};

use crate::error::{IdentityError, Result};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a request waits for a database connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

/// A write transaction (see [`Store::write`]) and the revision it will publish on commit.
pub struct Write {
    pub tx: Transaction<'static, Any>,
    pub revision: i64,
}

impl Store {
    /// The URL of the SQLite file `path` (created when missing).
    pub fn sqlite_url(path: &Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies the migrations this
    /// build has that the database lacks. A database migrated by a newer build is refused.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(IdentityError::BadRequest(
                "database URL: expected sqlite://PATH or postgres://...".into(),
            ));
        };
        if dialect == Dialect::Sqlite {
            create_parent(url)?;
        }
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| IdentityError::BadRequest(format!("database URL: {}", redact(&e))))?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            // SQLite has one writer anyway; readers share the file through WAL.
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 10 })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        if dialect == Dialect::Sqlite {
            wal_mode(&pool).await?;
        }
        let migrator = match dialect {
            Dialect::Sqlite => &SQLITE,
            Dialect::Postgres => &POSTGRES,
        };
        migrate(migrator, &pool, dialect).await?;
        Ok(Store { pool, dialect })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a write: a transaction that has already bumped the revision (and holds its lock
    /// until it commits or rolls back).
    pub async fn write(&self) -> Result<Write> {
        let mut tx = self.pool.begin().await?;
        let value: String = sqlx::query_scalar(
            "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) \
             WHERE key = 'revision' RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok(Write {
            tx,
            revision: parse_revision(&value)?,
        })
    }

    /// The store's current revision (what the last committed write published).
    pub async fn revision(&self) -> Result<i64> {
        let value: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'revision'")
            .fetch_one(&self.pool)
            .await?;
        parse_revision(&value)
    }

    /// A value of the `meta` table, created with `init()` the first time (atomically: of two
    /// supervisors starting together, one value wins and both read it).
    pub async fn meta_or_init(&self, key: &str, init: impl FnOnce() -> String) -> Result<String> {
        let existing: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(value) = existing {
            return Ok(value);
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(init())
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Switches a SQLite file to WAL (persistent in the file: readers never block the writer, nor
/// it them). Switching needs the file to itself, and SQLite answers "database is locked" at
/// once, without waiting, while another pool switches or migrates it (supervisors starting
/// together on a new file): wait a little and ask again, for up to about 5 s.
async fn wal_mode(pool: &AnyPool) -> Result<()> {
    let mut attempts = 0;
    loop {
        match sqlx::query("PRAGMA journal_mode=WAL").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Applies the migrations the database lacks. PostgreSQL's migrator holds an advisory lock,
/// so of supervisors starting together on a new database one migrates and the others wait;
/// SQLite's has no lock, and a second process (or pool) migrating the same new file at once
/// fails when the first commits ("table meta already exists"). Its migrations each run in a
/// transaction, so that failure left nothing behind: run again, and the migrations the other
/// one applied are skipped.
async fn migrate(
    migrator: &sqlx::migrate::Migrator,
    pool: &AnyPool,
    dialect: Dialect,
) -> Result<()> {
    let mut attempts = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(
                sqlx::migrate::MigrateError::Execute(_)
                | sqlx::migrate::MigrateError::ExecuteMigration(..),
            ) if dialect == Dialect::Sqlite && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn parse_revision(value: &str) -> Result<i64> {
    value
        .parse()
        .map_err(|_| IdentityError::Internal(format!("meta.revision is not a number: {value:?}")))
}

/// Creates the folder of a `sqlite://PATH` database.
fn create_parent(url: &str) -> Result<()> {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            IdentityError::BadRequest(format!(
                "database URL: cannot create {}: {e}",
                parent.display()
            ))
        })?;
    }
    Ok(())
}

/// An error about a URL, without the URL's password.
fn redact(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    match (text.find("://"), text.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &text[..scheme], &text[at..])
        }
        _ => text,
    }
}
