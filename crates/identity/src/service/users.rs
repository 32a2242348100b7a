//! Admin operations on users (`/v1/admin/users`), with the rules upstream lacks: nobody grants
//! a permission they do not hold, only an admin touches an admin, the last enabled admin stays,
//! and config-file users are read-only here (409).

use xi_api::identity::{
    ChangePasswordRequest, CreateUserRequest, CreatedUser, UpdateUserRequest, UserInfo,
    SOURCE_CONFIG, SOURCE_OIDC,
};
use xi_api::names::{is_valid_username, MAX_USERNAME_LEN};
use xi_api::{Permission, PermissionSet};
use xi_auth::password::PasswordHash;
use xi_auth::Principal;

use super::Identity;
use crate::audit::Event;
use crate::error::{IdentityError, Result};
use crate::{perms, sessions, users};

/// The first admin of an empty store without a config file: its password is shown once.
pub struct Bootstrap {
    pub username: String,
    pub password: String,
}

fn check_username(name: &str) -> Result<()> {
    if is_valid_username(name) {
        return Ok(());
    }
    Err(IdentityError::BadRequest(format!(
        "username: 1 to {MAX_USERNAME_LEN} letters, digits, '.', '_', '-' or '@', not starting \
         with '-'"
    )))
}

fn not_found(id: i64) -> IdentityError {
    IdentityError::NotFound(format!("User {id} not found"))
}

fn is_admin(set: PermissionSet) -> bool {
    set.allows(Permission::Admin)
}

impl Identity {
    fn check_password_rules(&self, password: &str) -> Result<()> {
        if password.chars().count() < self.options.min_password_len {
            return Err(IdentityError::BadRequest(format!(
                "Password must be at least {} characters",
                self.options.min_password_len
            )));
        }
        if password.len() > 1024 {
            return Err(IdentityError::BadRequest(
                "Password must be at most 1024 bytes".into(),
            ));
        }
        Ok(())
    }

    /// Refuses to grant `wanted` unless `actor` holds all of it.
    pub(super) fn check_grant(actor: &Principal, wanted: PermissionSet) -> Result<()> {
        if perms::covers(actor.permissions, wanted) {
            return Ok(());
        }
        let missing: Vec<&str> = wanted
            .names()
            .into_iter()
            .filter(|n| {
                PermissionSet::parse_name(n).is_some_and(|p| !perms::covers(actor.permissions, p))
            })
            .collect();
        Err(IdentityError::Forbidden(format!(
            "Cannot grant permissions you do not hold: {}",
            missing.join(", ")
        )))
    }

    fn check_config_name(&self, username: &str) -> Result<()> {
        if self
            .config
            .as_ref()
            .is_some_and(|c| c.user(username).is_some())
        {
            return Err(IdentityError::Conflict(format!(
                "{username} is a user of the auth config file; change it there"
            )));
        }
        Ok(())
    }

    pub async fn create_user(
        &self,
        actor: &Principal,
        request: CreateUserRequest,
        address: &str,
    ) -> Result<CreatedUser> {
        check_username(&request.username)?;
        self.check_password_rules(&request.password)?;
        let wanted = perms::parse_request(&request.permissions)?;
        Self::check_grant(actor, wanted)?;
        self.check_config_name(&request.username)?;
        let password = request.password;
        let hash = self
            .hash(move || PasswordHash::hash_plain(&password))
            .await??;
        let now = self.now();
        let mut w = self.store.write().await?;
        if users::by_name(&mut *w.tx, &request.username)
            .await?
            .is_some()
        {
            return Err(IdentityError::Conflict("User already exists".into()));
        }
        let id = users::insert(
            &mut *w.tx,
            &request.username,
            hash.as_str(),
            wanted,
            request.must_change_password,
            now,
        )
        .await?;
        let event = Event {
            action: "user.create",
            outcome: "ok",
            username: Some(&actor.username),
            target: Some(format!("user:{id}")),
            address: Some(address),
            detail: Some(format!(
                "{} with {}",
                request.username,
                perms::stored(wanted)
            )),
            ..Event::default()
        };
        self.commit(w, now, &event).await?;
        Ok(CreatedUser {
            id,
            username: request.username,
        })
    }

    /// The config file's users (read-only, no id) and the store's.
    pub async fn users(&self) -> Result<Vec<UserInfo>> {
        let mut out: Vec<UserInfo> = self
            .config
            .as_ref()
            .map(|c| c.users())
            .unwrap_or_default()
            .into_iter()
            .map(|(username, permissions)| UserInfo {
                id: None,
                username,
                source: SOURCE_CONFIG.into(),
                enabled: true,
                must_change_password: false,
                permissions: perms::names(permissions),
                created_at: None,
            })
            .collect();
        let rows = users::list(self.store.pool()).await?;
        out.extend(rows.iter().map(users::UserRow::info));
        Ok(out)
    }

    pub async fn user(&self, id: i64) -> Result<UserInfo> {
        let row = users::by_id(self.store.pool(), id).await?;
        Ok(row.ok_or_else(|| not_found(id))?.info())
    }

    /// Counts enabled admins but user `except`, in the config file and the store.
    async fn admins_besides(&self, conn: &mut sqlx::AnyConnection, except: i64) -> Result<usize> {
        let config = self
            .config
            .as_ref()
            .map(|c| c.users().iter().filter(|(_, p)| is_admin(*p)).count())
            .unwrap_or(0);
        let rows = users::list(&mut *conn).await?;
        let store = rows
            .iter()
            .filter(|u| u.id != except && u.enabled && is_admin(u.permissions))
            .count();
        Ok(config + store)
    }

    /// Changes `enabled`, `permissions` or `must_change_password` of user `id`.
    pub async fn update_user(
        &self,
        actor: &Principal,
        id: i64,
        request: UpdateUserRequest,
        address: &str,
    ) -> Result<()> {
        let wanted = request
            .permissions
            .as_deref()
            .map(perms::parse_request)
            .transpose()?;
        if let Some(wanted) = wanted {
            Self::check_grant(actor, wanted)?;
        }
        let now = self.now();
        let mut w = self.store.write().await?;
        let target = users::by_id(&mut *w.tx, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if is_admin(target.permissions) && !is_admin(actor.permissions) {
            return Err(IdentityError::Forbidden(
                "Only an admin can change an admin user".into(),
            ));
        }
        let disables = request.enabled == Some(false) && target.enabled;
        let demotes = wanted.is_some_and(|p| !is_admin(p)) && is_admin(target.permissions);
        if (disables || demotes)
            && target.enabled
            && is_admin(target.permissions)
            && self.admins_besides(&mut w.tx, id).await? == 0
        {
            return Err(IdentityError::Forbidden(
                "This is the last enabled admin; make another admin first".into(),
            ));
        }
        let mut changes = Vec::new();
        if let Some(enabled) = request.enabled {
            users::set_enabled(&mut *w.tx, id, enabled).await?;
            if !enabled {
                sessions::revoke_user(&mut *w.tx, id, None, now).await?;
            }
            changes.push(format!("enabled={enabled}"));
        }
        if let Some(wanted) = wanted {
            users::set_permissions(&mut *w.tx, id, wanted).await?;
            changes.push(format!("permissions={}", perms::stored(wanted)));
        }
        if let Some(must) = request.must_change_password {
            users::set_must_change(&mut *w.tx, id, must).await?;
            changes.push(format!("must_change_password={must}"));
        }
        let event = Event {
            action: "user.update",
            outcome: "ok",
            username: Some(&actor.username),
            target: Some(format!("user:{id}")),
            address: Some(address),
            detail: Some(changes.join(" ")),
            ..Event::default()
        };
        self.commit(w, now, &event).await?;
        Ok(())
    }

    /// Removes user `id` with its keys and sessions.
    pub async fn delete_user(&self, actor: &Principal, id: i64, address: &str) -> Result<()> {
        let now = self.now();
        let mut w = self.store.write().await?;
        let target = users::by_id(&mut *w.tx, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if is_admin(target.permissions) {
            if !is_admin(actor.permissions) {
                return Err(IdentityError::Forbidden(
                    "Only an admin can remove an admin user".into(),
                ));
            }
            if target.enabled && self.admins_besides(&mut w.tx, id).await? == 0 {
                return Err(IdentityError::Forbidden(
                    "This is the last enabled admin; make another admin first".into(),
                ));
            }
        }
        users::delete(&mut *w.tx, id).await?;
        let event = Event {
            action: "user.delete",
            outcome: "ok",
            username: Some(&actor.username),
            target: Some(format!("user:{id}")),
            address: Some(address),
            detail: Some(target.username.clone()),
            ..Event::default()
        };
        self.commit(w, now, &event).await?;
        Ok(())
    }

    /// Sets user `id`'s password. Users changing their own must give the current one (a stolen
    /// session cannot lock the owner out); `users:manage` sets anyone else's. Every other
    /// session of the user ends; the caller's own goes on.
    pub async fn change_password(
        &self,
        actor: &Principal,
        id: i64,
        request: ChangePasswordRequest,
        address: &str,
    ) -> Result<()> {
        self.check_password_rules(&request.new_password)?;
        let own = actor.user_id == Some(id);
        let manager = actor.permissions.allows(Permission::UsersManage);
        if !own && !manager {
            return Err(IdentityError::Forbidden("Not enough permissions".into()));
        }
        let target = users::by_id(self.store.pool(), id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if !own && is_admin(target.permissions) && !is_admin(actor.permissions) {
            return Err(IdentityError::Forbidden(
                "Only an admin can change an admin user's password".into(),
            ));
        }
        // A password would be a second way into an account its provider vouches for.
        if target.source == SOURCE_OIDC {
            return Err(IdentityError::Conflict(
                "This user logs in through single sign-on and has no password here".into(),
            ));
        }
        if own {
            let old = request.old_password.clone().ok_or_else(|| {
                IdentityError::BadRequest(
                    "old_password required to change your own password".into(),
                )
            })?;
            let stored = target.password_hash.clone().unwrap_or_default();
            let ok = self
                .hash(move || {
                    PasswordHash::parse_stored(&stored)
                        .ok()
                        .flatten()
                        .is_some_and(|h| h.verify(&old))
                })
                .await?;
            if !ok {
                return Err(IdentityError::Unauthorized(
                    "The current password is wrong".into(),
                ));
            }
        }
        let password = request.new_password;
        let hash = self
            .hash(move || PasswordHash::hash_plain(&password))
            .await??;
        let now = self.now();
        let mut w = self.store.write().await?;
        if users::by_id(&mut *w.tx, id).await?.is_none() {
            return Err(not_found(id));
        }
        users::set_password(&mut *w.tx, id, hash.as_str()).await?;
        let keep = own.then_some(actor.session.as_deref()).flatten();
        sessions::revoke_user(&mut *w.tx, id, keep, now).await?;
        let event = Event {
            action: "user.password",
            outcome: "ok",
            username: Some(&actor.username),
            target: Some(format!("user:{id}")),
            address: Some(address),
            ..Event::default()
        };
        self.commit(w, now, &event).await?;
        Ok(())
    }

    /// With no config file and no users yet: creates `admin` with a random password that must
    /// be changed at first login (as upstream does). Atomic: of supervisors starting together
    /// on one database, one creates it.
    pub async fn bootstrap(&self) -> Result<Option<Bootstrap>> {
        if self.config.is_some() || users::count(self.store.pool()).await? > 0 {
            return Ok(None);
        }
        let password = crate::sessions::random_hex(12);
        let plain = password.clone();
        let hash = self
            .hash(move || PasswordHash::hash_plain(&plain))
            .await??;
        let now = self.now();
        let mut w = self.store.write().await?;
        if users::count(&mut *w.tx).await? > 0 {
            return Ok(None);
        }
        users::insert(
            &mut *w.tx,
            "admin",
            hash.as_str(),
            PermissionSet::ALL,
            true,
            now,
        )
        .await?;
        let event = Event {
            action: "user.bootstrap",
            outcome: "ok",
            username: Some("admin"),
            ..Event::default()
        };
        self.commit(w, now, &event).await?;
        Ok(Some(Bootstrap {
            username: "admin".into(),
            password,
        }))
    }
}
