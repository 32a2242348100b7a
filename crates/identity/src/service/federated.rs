//! Logins vouched for by an identity provider (single sign-on): the first one creates the
//! user (`source: oidc`, no password), each later one refreshes its permissions from the
//! provider's mapping; then a session opens exactly as for a password login.

use sha2::Digest;
use xi_api::identity::SOURCE_OIDC;
use xi_api::PermissionSet;

use super::Identity;
use super::Issued;
use crate::audit::Event;
use crate::error::{IdentityError, Result};
use crate::{sessions, users};

/// A user as a provider vouched for them (the supervisor fills it from a verified ID token).
#[derive(Debug, Clone)]
pub struct FederatedLogin {
    /// Our name for the provider (audit detail, and the fallback username suffix).
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// The username wanted (taken by someone else: `name@provider`).
    pub username: String,
    /// What the provider's mapping grants now.
    pub permissions: PermissionSet,
}

impl Identity {
    /// Opens a session for a federated user, creating or updating the user first, all in one
    /// transaction. A user an admin disabled stays out (403).
    pub async fn login_federated(&self, login: &FederatedLogin, address: &str) -> Result<Issued> {
        let now = self.now();
        let mut w = self.store.write().await?;
        let existing = users::by_oidc(&mut *w.tx, &login.issuer, &login.subject).await?;
        let (user_id, username) = match existing {
            Some(row) if !row.enabled => {
                drop(w);
                self.record(Event {
                    action: "login",
                    outcome: "disabled",
                    username: Some(&row.username),
                    address: Some(address),
                    detail: Some(format!("sso:{}", login.provider)),
                    ..Event::default()
                })
                .await;
                return Err(IdentityError::Forbidden("User account is disabled".into()));
            }
            Some(row) => {
                if row.permissions != login.permissions {
                    users::set_permissions(&mut *w.tx, row.id, login.permissions).await?;
                }
                (row.id, row.username)
            }
            None => {
                let username = self.free_username(&mut w, login).await?;
                let id = users::insert_oidc(
                    &mut *w.tx,
                    &username,
                    &login.issuer,
                    &login.subject,
                    login.permissions,
                    now,
                )
                .await?;
                tracing::info!(%username, provider = %login.provider, "created a user at its first single sign-on");
                (id, username)
            }
        };
        let session = sessions::SessionRow {
            id: sessions::random_hex(16),
            user_id: Some(user_id),
            username: username.clone(),
            source: SOURCE_OIDC.to_string(),
            expires_at: now + self.refresh_secs(),
            revoked_at: None,
        };
        sessions::insert(&mut *w.tx, &session, now).await?;
        let refresh_token =
            sessions::new_refresh_token(&mut *w.tx, &session.id, now, session.expires_at).await?;
        let event = Event {
            action: "login",
            outcome: "ok",
            username: Some(&username),
            address: Some(address),
            target: Some(format!("user:{user_id}")),
            detail: Some(format!("sso:{}", login.provider)),
            ..Event::default()
        };
        self.commit(w, now, &event).await?;
        let (access_token, expires_in) =
            self.access_token(&username, login.permissions, &session.id)?;
        Ok(Issued {
            access_token,
            expires_in,
            refresh_token,
            must_change_password: false,
        })
    }

    /// Whether the user a provider's issuer and subject name is disabled here (`false` when
    /// there is no such user: a service that never logged in through the browser).
    pub async fn federated_disabled(&self, issuer: &str, subject: &str) -> Result<bool> {
        let row = users::by_oidc(self.store.pool(), issuer, subject).await?;
        Ok(row.is_some_and(|row| !row.enabled))
    }

    /// The wanted username, or `name@provider` when a local, config or other provider's user
    /// has it: an account is never merged with another by name (that would let a provider
    /// log in as a local admin).
    async fn free_username(
        &self,
        w: &mut crate::store::Write,
        login: &FederatedLogin,
    ) -> Result<String> {
        // Last resort, for a name someone else took first (many providers let users pick
        // their preferred_username): unique to this issuer and subject.
        let digest = sha2::Sha256::digest(format!("{}\n{}", login.issuer, login.subject));
        let unique = format!(
            "{}@{}-{}",
            login.username,
            login.provider,
            &hex::encode(digest)[..8]
        );
        let suffixed = format!("{}@{}", login.username, login.provider);
        for candidate in [login.username.clone(), suffixed, unique] {
            if !xi_api::names::is_valid_username(&candidate) {
                continue;
            }
            let config_user = self
                .config
                .as_ref()
                .is_some_and(|c| c.user(&candidate).is_some());
            if config_user {
                continue;
            }
            if users::by_name(&mut *w.tx, &candidate).await?.is_none() {
                return Ok(candidate);
            }
        }
        Err(IdentityError::Conflict(format!(
            "The username {:?} is taken by another account; an admin must rename or remove it",
            login.username
        )))
    }
}
