//! Admin operations on api keys (`/v1/admin/keys`): `keys:create` for one's own keys,
//! `keys:manage` for everyone's. A key's permissions are a subset of its owner's and of its
//! creator's; its plaintext is returned once, at creation.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};
use xi_api::identity::{
    CreateKeyRequest, CreatedKey, Expiry, KeyInfo, KeyLimits, ModelPermission, UpdateKeyRequest,
};
use xi_api::{Permission, PermissionSet};
use xi_auth::Principal;

use super::Identity;
use crate::audit::Event;
use crate::error::{IdentityError, Result};
use crate::keys::{self, KeyChanges, NewKey};
use crate::{perms, users};

const MAX_MODELS: usize = 1000;
const MAX_TEXT: usize = 256;

fn not_found(id: i64) -> IdentityError {
    IdentityError::NotFound(format!("API key {id} not found"))
}

fn manages_keys(actor: &Principal) -> bool {
    actor.permissions.allows(Permission::KeysManage)
}

/// The caller may see and change `key`: its own, or anyone's with `keys:manage`. Someone
/// else's key is 404, as if absent.
fn reachable(actor: &Principal, key: &keys::KeyRow) -> Result<()> {
    match manages_keys(actor) || actor.user_id == Some(key.user_id) {
        true => Ok(()),
        false => Err(not_found(key.id)),
    }
}

/// An expiry as Unix seconds: an integer, an RFC 3339 time, `YYYY-MM-DDTHH:MM:SS` (UTC, as
/// upstream's `fromisoformat`) or a date (its midnight, UTC).
pub fn parse_expiry(expiry: &Expiry) -> Result<i64> {
    let text = match expiry {
        Expiry::Unix(t) => return Ok(*t),
        Expiry::Text(text) => text.trim(),
    };
    let naive = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let date = format_description!("[year]-[month]-[day]");
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .or_else(|| {
            PrimitiveDateTime::parse(text, naive)
                .ok()
                .map(PrimitiveDateTime::assume_utc)
        })
        .or_else(|| {
            Date::parse(text, date)
                .ok()
                .map(|d| d.midnight().assume_utc())
        });
    parsed.map(OffsetDateTime::unix_timestamp).ok_or_else(|| {
        IdentityError::BadRequest(format!(
            "expires_at: {text:?} is not a Unix time, an RFC 3339 time or a YYYY-MM-DD date"
        ))
    })
}

/// A request's model list: `model_permissions` (upstream's shape), `models` (uids), or every
/// model when neither is given. A list given empty is refused: it would read as "no model" to
/// some and "every model" to others.
fn model_list(
    model_permissions: Option<Vec<ModelPermission>>,
    models: Option<Vec<String>>,
) -> Result<Vec<ModelPermission>> {
    let given = model_permissions.is_some() || models.is_some();
    let mut list = model_permissions.unwrap_or_default();
    list.extend(
        models
            .unwrap_or_default()
            .into_iter()
            .map(|uid| ModelPermission {
                permission_type: "model_id".into(),
                permission_value: Some(uid),
            }),
    );
    if list.is_empty() && given {
        return Err(IdentityError::BadRequest(
            "model_permissions: the list is empty; leave it out for every model, or use \
             [{\"permission_type\": \"all\"}]"
                .into(),
        ));
    }
    if list.is_empty() {
        list.push(ModelPermission {
            permission_type: "all".into(),
            permission_value: None,
        });
    }
    if list.len() > MAX_MODELS {
        return Err(IdentityError::BadRequest(format!(
            "model_permissions: at most {MAX_MODELS} entries"
        )));
    }
    for m in &list {
        let value = m.permission_value.as_deref().unwrap_or_default();
        match m.permission_type.as_str() {
            "all" => {}
            "model_id" | "model_type" if !value.is_empty() && value.len() <= MAX_TEXT => {}
            "model_id" | "model_type" => {
                return Err(IdentityError::BadRequest(format!(
                    "model_permissions: {} needs a permission_value of 1 to {MAX_TEXT} bytes",
                    m.permission_type
                )))
            }
            other => {
                return Err(IdentityError::BadRequest(format!(
                    "model_permissions: unknown permission_type {other:?}; known: all, \
                     model_id, model_type"
                )))
            }
        }
    }
    Ok(list)
}

fn check_text(field: &str, value: Option<&str>) -> Result<()> {
    match value {
        Some(v) if v.len() > MAX_TEXT => Err(IdentityError::BadRequest(format!(
            "{field}: at most {MAX_TEXT} bytes"
        ))),
        _ => Ok(()),
    }
}

fn check_limits(limits: &KeyLimits) -> Result<()> {
    let zero = [
        (
            "requests_per_minute",
            limits.requests_per_minute.map(u64::from),
        ),
        ("tokens_per_minute", limits.tokens_per_minute),
        (
            "concurrent_requests",
            limits.concurrent_requests.map(u64::from),
        ),
        ("tokens_per_day", limits.tokens_per_day),
        ("tokens_per_month", limits.tokens_per_month),
    ]
    .into_iter()
    .find(|(_, v)| *v == Some(0));
    match zero {
        Some((field, _)) => Err(IdentityError::BadRequest(format!(
            "limits.{field}: must be at least 1 (leave it out for no limit)"
        ))),
        None => Ok(()),
    }
}

impl Identity {
    /// The key's permissions: `None` (model use, within the owner's) or a set the owner and the
    /// creator both hold.
    fn key_permissions(
        actor: &Principal,
        owner: PermissionSet,
        requested: Option<&[String]>,
    ) -> Result<Option<PermissionSet>> {
        let Some(names) = requested else {
            return Ok(None);
        };
        let wanted = perms::parse_request(names)?;
        Self::check_grant(actor, wanted)?;
        if !perms::covers(owner, wanted) {
            return Err(IdentityError::Forbidden(
                "A key cannot hold permissions its owner does not hold".into(),
            ));
        }
        Ok(Some(wanted))
    }

    pub async fn create_key(
        &self,
        actor: &Principal,
        request: CreateKeyRequest,
        address: &str,
    ) -> Result<CreatedKey> {
        check_text("name", request.name.as_deref())?;
        check_text("description", request.description.as_deref())?;
        let owner_id = match (request.owner, actor.user_id) {
            (Some(owner), Some(me)) if owner == me => owner,
            (Some(owner), _) if manages_keys(actor) => owner,
            (Some(_), _) => {
                return Err(IdentityError::Forbidden(
                    "Creating keys for other users needs keys:manage".into(),
                ))
            }
            (None, Some(me)) => me,
            (None, None) => {
                return Err(IdentityError::BadRequest(
                    "owner: users of the auth config file cannot own keys; give the id of a \
                     user of the identity store"
                        .into(),
                ))
            }
        };
        let expires_at = request.expires_at.as_ref().map(parse_expiry).transpose()?;
        if expires_at.is_some_and(|t| t <= self.now()) {
            return Err(IdentityError::BadRequest(
                "expires_at: is in the past".into(),
            ));
        }
        let models = model_list(request.model_permissions, request.models)?;
        let limits = request.limits.unwrap_or_default();
        check_limits(&limits)?;
        let (key, hash, prefix) = keys::generate();
        let now = self.now();
        let mut w = self.store.write().await?;
        let owner = users::by_id(&mut *w.tx, owner_id).await?.ok_or_else(|| {
            IdentityError::BadRequest(format!("owner: user {owner_id} not found"))
        })?;
        let permissions =
            Self::key_permissions(actor, owner.permissions, request.permissions.as_deref())?;
        let new = NewKey {
            user_id: owner_id,
            hash: &hash,
            prefix: &prefix,
            name: request.name.as_deref(),
            description: request.description.as_deref(),
            expires_at,
            permissions,
            limits,
            now,
        };
        let id = keys::insert(&mut w.tx, &new).await?;
        keys::set_models(&mut w.tx, id, &models).await?;
        let event = Event {
            action: "key.create",
            outcome: "ok",
            username: Some(&actor.username),
            key_prefix: Some(&prefix),
            target: Some(format!("key:{id}")),
            address: Some(address),
            detail: Some(format!("owner user:{owner_id}")),
        };
        self.commit(w, now, &event).await?;
        Ok(CreatedKey {
            id,
            key,
            prefix: prefix.clone(),
            key_prefix: prefix,
            name: request.name,
        })
    }

    /// Keys the caller may see: its own, or (with `keys:manage`) everyone's or `owner`'s.
    pub async fn keys(&self, actor: &Principal, owner: Option<i64>) -> Result<Vec<KeyInfo>> {
        let owner = match manages_keys(actor) {
            true => owner,
            false => Some(actor.user_id.unwrap_or(-1)),
        };
        let mut conn = self.store.pool().acquire().await?;
        let rows = keys::list(&mut conn, owner).await?;
        Ok(rows.iter().map(keys::KeyRow::info).collect())
    }

    /// Key `id`, if the caller may see it (someone else's key is 404, as if absent).
    pub async fn key(&self, actor: &Principal, id: i64) -> Result<KeyInfo> {
        let mut conn = self.store.pool().acquire().await?;
        let row = keys::by_id(&mut conn, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        reachable(actor, &row)?;
        Ok(row.info())
    }

    pub async fn update_key(
        &self,
        actor: &Principal,
        id: i64,
        request: UpdateKeyRequest,
        address: &str,
    ) -> Result<()> {
        check_text("name", request.name.as_deref())?;
        check_text("description", request.description.as_deref())?;
        let expires_at = match &request.expires_at {
            Some(Some(e)) => Some(Some(parse_expiry(e)?)),
            Some(None) => Some(None),
            None => None,
        };
        let models = request
            .model_permissions
            .map(|m| model_list(Some(m), None))
            .transpose()?;
        if let Some(limits) = &request.limits {
            check_limits(limits)?;
        }
        let now = self.now();
        let mut w = self.store.write().await?;
        let row = keys::by_id(&mut w.tx, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        reachable(actor, &row)?;
        let permissions = match request.permissions.as_deref() {
            Some(names) => Some(Self::key_permissions(
                actor,
                row.owner_permissions,
                Some(names),
            )?),
            None => None,
        };
        let changes = KeyChanges {
            name: request.name,
            description: request.description,
            enabled: request.enabled,
            expires_at,
            permissions,
            limits: request.limits,
        };
        keys::update(&mut w.tx, id, &changes).await?;
        if let Some(models) = &models {
            keys::set_models(&mut w.tx, id, models).await?;
        }
        let event = Event {
            action: "key.update",
            outcome: "ok",
            username: Some(&actor.username),
            key_prefix: Some(&row.key_prefix),
            target: Some(format!("key:{id}")),
            address: Some(address),
            detail: None,
        };
        self.commit(w, now, &event).await?;
        Ok(())
    }

    /// Revokes (deletes) key `id`: it stops working on the next request.
    pub async fn delete_key(&self, actor: &Principal, id: i64, address: &str) -> Result<()> {
        let now = self.now();
        let mut w = self.store.write().await?;
        let row = keys::by_id(&mut w.tx, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        reachable(actor, &row)?;
        keys::delete(&mut *w.tx, id).await?;
        let event = Event {
            action: "key.revoke",
            outcome: "ok",
            username: Some(&actor.username),
            key_prefix: Some(&row.key_prefix),
            target: Some(format!("key:{id}")),
            address: Some(address),
            detail: None,
        };
        self.commit(w, now, &event).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_in_every_accepted_form() {
        let day = 1_767_225_600; // 2026-01-01T00:00:00Z
        for (text, want) in [
            ("2026-01-01", day),
            ("2026-01-01T00:00:00", day),
            ("2026-01-01T00:00:00Z", day),
            ("2026-01-01T01:00:00+01:00", day),
        ] {
            assert_eq!(
                parse_expiry(&Expiry::Text(text.into())).unwrap(),
                want,
                "{text}"
            );
        }
        assert_eq!(parse_expiry(&Expiry::Unix(5)).unwrap(), 5);
        let err = parse_expiry(&Expiry::Text("next week".into())).unwrap_err();
        assert!(err.to_string().contains("expires_at"), "{err}");
    }

    #[test]
    fn model_lists_default_to_all_and_are_checked() {
        let all = model_list(None, None).unwrap();
        assert_eq!(all[0].permission_type, "all");
        let two = model_list(None, Some(vec!["a".into(), "b".into()])).unwrap();
        assert_eq!(two.len(), 2);
        assert!(two.iter().all(|m| m.permission_type == "model_id"));
        let bad = ModelPermission {
            permission_type: "model_name".into(),
            permission_value: Some("x".into()),
        };
        assert!(model_list(Some(vec![bad]), None).is_err());
        let empty = ModelPermission {
            permission_type: "model_id".into(),
            permission_value: None,
        };
        assert!(model_list(Some(vec![empty]), None).is_err());
        assert!(
            model_list(Some(vec![]), None).is_err(),
            "an empty list given"
        );
        assert!(model_list(None, Some(vec![])).is_err());
    }
}
