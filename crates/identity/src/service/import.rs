//! Moving from a config file to the identity store: its users (with their password hashes,
//! never re-hashed or shown) and api keys (stored by hash, as the store's own keys) are copied
//! into the store in one transaction. Users already in the store are left as they are.

use xi_api::PermissionSet;
use xi_auth::AuthSettings;

use super::Identity;
use crate::audit::Event;
use crate::error::Result;
use crate::keys::{self, NewKey};
use crate::users;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub users_created: Vec<String>,
    /// Already in the store: not changed.
    pub users_skipped: Vec<String>,
    pub keys_created: usize,
    pub keys_skipped: usize,
}

impl Identity {
    /// Copies `settings`' users and keys into the store (all or nothing).
    pub async fn import_config(&self, settings: &AuthSettings) -> Result<ImportReport> {
        let now = self.now();
        let mut report = ImportReport::default();
        let mut w = self.store.write().await?;
        for user in &settings.users {
            if users::by_name(&mut *w.tx, &user.username).await?.is_some() {
                report.users_skipped.push(user.username.clone());
                continue;
            }
            let permissions: PermissionSet = user.permissions;
            let id = users::insert(
                &mut *w.tx,
                &user.username,
                user.password.as_str(),
                permissions,
                false,
                now,
            )
            .await?;
            for key in &user.api_keys {
                let plain = key.expose();
                let hash = keys::hash(plain);
                if keys::by_hash(&mut w.tx, &hash).await?.is_some() {
                    report.keys_skipped += 1;
                    continue;
                }
                let prefix: String = plain.chars().take(7).collect();
                let new = NewKey {
                    user_id: id,
                    hash: &hash,
                    prefix: &prefix,
                    name: Some("imported from the auth config"),
                    description: None,
                    expires_at: None,
                    // Config keys act with their user's permissions: keep that.
                    permissions: Some(permissions),
                    limits: Default::default(),
                    now,
                };
                let key_id = keys::insert(&mut w.tx, &new).await?;
                keys::set_models(
                    &mut w.tx,
                    key_id,
                    &[xi_api::identity::ModelPermission {
                        permission_type: "all".into(),
                        permission_value: None,
                    }],
                )
                .await?;
                report.keys_created += 1;
            }
            report.users_created.push(user.username.clone());
        }
        let event = Event {
            action: "config.import",
            outcome: "ok",
            detail: Some(format!(
                "{} users created, {} skipped, {} keys",
                report.users_created.len(),
                report.users_skipped.len(),
                report.keys_created
            )),
            ..Event::default()
        };
        self.commit(w, now, &event).await?;
        Ok(report)
    }
}
