//! `xinference user ...`, `xinference key ...`: the identity store's users and api keys.
//!
//! Each command is first turned into an action with its request body built and its passwords
//! read ([`UserAction::read`], [`KeyAction::build`]), then run against the server
//! ([`run_user`], [`run_key`]): a command retried after a refreshed login is not asked its
//! passwords twice.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use xi_api::identity::{
    ChangePasswordRequest, CreateKeyRequest, CreateUserRequest, Expiry, KeyInfo, KeyLimits,
    ModelPermission, UpdateUserRequest, UserInfo,
};

use super::{prompt, table};
use crate::client::Client;
use crate::error::ClientError;

#[derive(Subcommand, Debug, Clone)]
pub enum UserCommand {
    /// Create a user (the password is read from the terminal, or standard input, when
    /// --password is not given).
    Add {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: Option<String>,
        /// A permission (`models:list`, `models:start`, `users:manage`, `admin`, ...); repeat it.
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Make the user choose a new password at the first login.
        #[arg(long)]
        must_change_password: bool,
    },
    /// List the users (those of the auth config file have no id).
    List,
    /// Change a user's password (read from the terminal, or standard input, when --password is
    /// not given).
    Passwd {
        #[arg(long)]
        username: String,
        /// The new password.
        #[arg(long)]
        password: Option<String>,
        /// Send the current password too (needed to change your own password, admins
        /// included); read like the new one when given without a value.
        #[arg(long = "old-password", num_args = 0..=1, default_missing_value = "")]
        old_password: Option<String>,
    },
    /// Stop a user from logging in (and their api keys from working).
    Disable {
        #[arg(long)]
        username: String,
    },
    /// Let a disabled user log in again.
    Enable {
        #[arg(long)]
        username: String,
    },
    /// Delete a user.
    Remove {
        #[arg(long)]
        username: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeyCommand {
    /// Create an api key; it is printed once and never shown again.
    Create(KeyCreateArgs),
    /// List the api keys you may see.
    List,
    /// Show one api key: its models, permissions, limits and usage.
    Show {
        #[arg(long)]
        id: i64,
    },
    /// Revoke an api key.
    Revoke {
        #[arg(long)]
        id: i64,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct KeyCreateArgs {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// The user the key belongs to (needs `keys:manage`); default yourself.
    #[arg(long = "owner-id")]
    pub owner_id: Option<i64>,
    /// The key stops working this many days from now.
    #[arg(long = "expires-in-days", conflicts_with = "expires_at")]
    pub expires_in_days: Option<u32>,
    /// The key stops working at this time (ISO 8601, e.g. `2027-01-31T00:00:00Z`, or Unix
    /// seconds).
    #[arg(long = "expires-at")]
    pub expires_at: Option<String>,
    /// A model uid the key may use; repeat it. Default: every model.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// A permission of the key (a subset of its owner's); repeat it. Default: the owner's
    /// model-use permissions.
    #[arg(long = "permission")]
    pub permissions: Vec<String>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Requests at the same time.
    #[arg(long)]
    pub concurrency: Option<u32>,
    #[arg(long = "tokens-per-day")]
    pub tokens_per_day: Option<u64>,
    #[arg(long = "tokens-per-month")]
    pub tokens_per_month: Option<u64>,
}

/// A user command, ready to send.
#[derive(Debug, Clone)]
pub enum UserAction {
    Add(CreateUserRequest),
    List,
    Passwd {
        username: String,
        request: ChangePasswordRequest,
    },
    /// `disable` / `enable`.
    Update {
        username: String,
        request: UpdateUserRequest,
    },
    Remove {
        username: String,
    },
}

impl UserAction {
    /// Builds the request, reading the passwords the flags did not give.
    pub fn read(command: UserCommand) -> Result<UserAction, ClientError> {
        Ok(match command {
            UserCommand::Add {
                username,
                password,
                permissions,
                must_change_password,
            } => UserAction::Add(CreateUserRequest {
                password: given_or_read(password, &format!("Password for {username}"))?,
                username,
                permissions,
                must_change_password,
            }),
            UserCommand::List => UserAction::List,
            UserCommand::Passwd {
                username,
                password,
                old_password,
            } => {
                let old_password = match old_password {
                    Some(p) if p.is_empty() => Some(prompt::password("Current password")?),
                    other => other,
                };
                let new_password =
                    given_or_read(password, &format!("New password for {username}"))?;
                UserAction::Passwd {
                    username,
                    request: ChangePasswordRequest {
                        new_password,
                        old_password,
                    },
                }
            }
            UserCommand::Disable { username } => enabled(username, false),
            UserCommand::Enable { username } => enabled(username, true),
            UserCommand::Remove { username } => UserAction::Remove { username },
        })
    }
}

fn enabled(username: String, enabled: bool) -> UserAction {
    UserAction::Update {
        username,
        request: UpdateUserRequest {
            enabled: Some(enabled),
            ..Default::default()
        },
    }
}

/// A new password: the flag's, else read.
fn given_or_read(given: Option<String>, label: &str) -> Result<String, ClientError> {
    match given {
        Some(p) if !p.is_empty() => Ok(p),
        Some(_) => Err(ClientError::Invalid("the password is empty".into())),
        None => prompt::new_password(label),
    }
}

pub async fn run_user(client: &Client, action: UserAction) -> Result<(), ClientError> {
    match action {
        UserAction::Add(request) => {
            let created = client.create_user(&request).await?;
            println!("created user {} (id {})", created.username, created.id);
        }
        UserAction::List => {
            let users = client.users().await?;
            println!("{}", user_table(&users));
        }
        UserAction::Passwd { username, request } => {
            let id = own_or_listed_id(client, &username).await?;
            client.change_password(id, &request).await?;
            println!("changed the password of {username}");
        }
        UserAction::Update { username, request } => {
            let id = user_id(client, &username).await?;
            client.update_user(id, &request).await?;
            let done = match request.enabled {
                Some(false) => "disabled",
                _ => "enabled",
            };
            println!("{done} {username}");
        }
        UserAction::Remove { username } => {
            let id = user_id(client, &username).await?;
            client.delete_user(id).await?;
            println!("removed {username}");
        }
    }
    Ok(())
}

/// The id of `username`, from the user list (`users:manage`).
async fn user_id(client: &Client, username: &str) -> Result<i64, ClientError> {
    let users = client.users().await?;
    let user = users
        .iter()
        .find(|u| u.username == username)
        .ok_or_else(|| ClientError::Invalid(format!("no user {username:?}")))?;
    store_id(user.id, username)
}

/// The id of `username`: one's own from `/v1/auth/me` (no `users:manage` needed), else from
/// the user list.
async fn own_or_listed_id(client: &Client, username: &str) -> Result<i64, ClientError> {
    match client.me().await {
        Ok(me) if me.username == username => store_id(me.id, username),
        _ => user_id(client, username).await,
    }
}

/// Config-file users have no id: the API cannot change them.
fn store_id(id: Option<i64>, username: &str) -> Result<i64, ClientError> {
    id.ok_or_else(|| {
        ClientError::Invalid(format!(
            "{username} comes from the server's auth config file: change it there"
        ))
    })
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn or_dash(s: Option<String>) -> String {
    s.unwrap_or_else(|| "-".into())
}

fn user_table(users: &[UserInfo]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                or_dash(u.id.map(|id| id.to_string())),
                u.username.clone(),
                u.source.clone(),
                yes_no(u.enabled),
                yes_no(u.must_change_password),
                u.permissions.join(","),
            ]
        })
        .collect();
    let header = [
        "ID",
        "Username",
        "Source",
        "Enabled",
        "Must change password",
        "Permissions",
    ];
    table::render(&header, &rows)
}

/// A key command, ready to send.
#[derive(Debug, Clone)]
pub enum KeyAction {
    Create(Box<CreateKeyRequest>),
    List,
    Show { id: i64 },
    Revoke { id: i64 },
}

impl KeyAction {
    /// Builds the request body.
    pub fn build(command: KeyCommand) -> Result<KeyAction, ClientError> {
        Ok(match command {
            KeyCommand::Create(args) => {
                KeyAction::Create(Box::new(create_key_request(args, unix_now())?))
            }
            KeyCommand::List => KeyAction::List,
            KeyCommand::Show { id } => KeyAction::Show { id },
            KeyCommand::Revoke { id } => KeyAction::Revoke { id },
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The flags of `key create` as the request body; `now` is the current Unix time.
fn create_key_request(args: KeyCreateArgs, now: i64) -> Result<CreateKeyRequest, ClientError> {
    let expires_at = match (args.expires_in_days, args.expires_at) {
        (Some(0), _) => {
            return Err(ClientError::Invalid(
                "--expires-in-days must be at least 1".into(),
            ))
        }
        (Some(days), _) => Some(Expiry::Unix(now + i64::from(days) * 86_400)),
        (None, Some(at)) => Some(match at.trim().parse::<i64>() {
            Ok(unix) => Expiry::Unix(unix),
            Err(_) => Expiry::Text(at),
        }),
        (None, None) => None,
    };
    let limits = KeyLimits {
        requests_per_minute: args.rpm,
        tokens_per_minute: args.tpm,
        concurrent_requests: args.concurrency,
        tokens_per_day: args.tokens_per_day,
        tokens_per_month: args.tokens_per_month,
    };
    Ok(CreateKeyRequest {
        name: args.name,
        description: args.description,
        owner: args.owner_id,
        expires_at,
        model_permissions: None,
        models: non_empty(args.models),
        permissions: non_empty(args.permissions),
        limits: (limits != KeyLimits::default()).then_some(limits),
    })
}

fn non_empty(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

pub async fn run_key(client: &Client, action: KeyAction) -> Result<(), ClientError> {
    match action {
        KeyAction::Create(request) => {
            let created = client.create_key(&request).await?;
            // The key alone on standard output (`KEY=$(xinference key create)`), the rest on
            // standard error.
            eprintln!(
                "created api key {} ({}{}):",
                created.id,
                created.key_prefix,
                created
                    .name
                    .as_deref()
                    .map(|n| format!(", {n:?}"))
                    .unwrap_or_default()
            );
            println!("{}", created.key);
            eprintln!("store it now: it will not be shown again");
        }
        KeyAction::List => {
            let keys = client.keys().await?;
            println!("{}", key_table(&keys));
        }
        KeyAction::Show { id } => {
            let key = client.key(id).await?;
            println!("{}", key_details(&key));
        }
        KeyAction::Revoke { id } => {
            client.delete_key(id).await?;
            println!("revoked api key {id}");
        }
    }
    Ok(())
}

fn owner(key: &KeyInfo) -> String {
    match &key.owner_username {
        Some(name) => name.clone(),
        None => format!("user {}", key.user_id),
    }
}

/// A key's model list: `all`, model uids, `type:LLM`.
fn models(list: &[ModelPermission]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(
            |m| match (m.permission_type.as_str(), &m.permission_value) {
                ("all", _) => "all".to_string(),
                ("model_id", Some(uid)) => uid.clone(),
                (kind, Some(value)) => format!("{}:{value}", kind.trim_start_matches("model_")),
                (kind, None) => kind.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join(",")
}

fn key_table(keys: &[KeyInfo]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.key_prefix.clone(),
                or_dash(k.name.clone()),
                owner(k),
                yes_no(k.enabled),
                k.expires_at.map(utc).unwrap_or_else(|| "never".into()),
                models(&k.model_permissions),
            ]
        })
        .collect();
    let header = [
        "ID", "Prefix", "Name", "Owner", "Enabled", "Expires", "Models",
    ];
    table::render(&header, &rows)
}

fn limit(value: Option<u64>) -> String {
    value.map_or_else(|| "unlimited".into(), |v| v.to_string())
}

/// Every field of a key, one `name: value` line each.
fn key_details(key: &KeyInfo) -> String {
    let l = &key.limits;
    let lines = [
        ("ID", key.id.to_string()),
        ("Prefix", key.key_prefix.clone()),
        ("Name", or_dash(key.name.clone())),
        ("Description", or_dash(key.description.clone())),
        ("Owner", format!("{} (id {})", owner(key), key.user_id)),
        ("Enabled", yes_no(key.enabled)),
        ("Created", utc(key.created_at)),
        (
            "Last used",
            key.last_used_at.map_or_else(|| "never".into(), utc),
        ),
        (
            "Expires",
            key.expires_at.map_or_else(|| "never".into(), utc),
        ),
        ("Models", models(&key.model_permissions)),
        (
            "Permissions",
            key.permissions
                .as_ref()
                .map_or_else(|| "the owner's model permissions".into(), |p| p.join(",")),
        ),
        (
            "Requests per minute",
            limit(l.requests_per_minute.map(u64::from)),
        ),
        ("Tokens per minute", limit(l.tokens_per_minute)),
        (
            "Concurrent requests",
            limit(l.concurrent_requests.map(u64::from)),
        ),
        ("Tokens per day", limit(l.tokens_per_day)),
        ("Tokens per month", limit(l.tokens_per_month)),
        ("Requests", key.usage.requests.to_string()),
        ("Prompt tokens", key.usage.prompt_tokens.to_string()),
        ("Completion tokens", key.usage.completion_tokens.to_string()),
    ];
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (the proleptic Gregorian calendar).
fn utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
