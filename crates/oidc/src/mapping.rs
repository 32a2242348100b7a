//! From a provider's claims to one of our users: who (issuer and subject, the stable identity;
//! a username to show) and what they may do (the provider's default permissions plus those of
//! each mapped group).

use serde_json::{Map, Value};
use xi_api::names::{is_valid_username, MAX_USERNAME_LEN};
use xi_api::PermissionSet;

use crate::config::ProviderConfig;
use crate::error::{OidcError, Result};

/// A user as a provider vouches for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedUser {
    /// Our name for the provider.
    pub provider: String,
    pub issuer: String,
    /// `sub`: unique and stable at the issuer (a username may change, this may not).
    pub subject: String,
    /// The preferred username, valid for the identity store (letters, digits, `.`, `_`, `-`, `@`).
    pub username: String,
    pub groups: Vec<String>,
    pub permissions: PermissionSet,
}

/// Maps verified claims to a user.
pub fn user_of(config: &ProviderConfig, claims: &Map<String, Value>) -> Result<FederatedUser> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(String::from);
    let subject = text("sub").ok_or_else(|| OidcError::invalid("Token has no subject"))?;
    let username = match &config.username_claim {
        Some(claim) => {
            let name = lookup(claims, claim)
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    OidcError::BadRequest(format!(
                        "The identity provider sent no {claim:?} claim to name the user"
                    ))
                })?;
            usable(name).ok_or_else(|| {
                OidcError::BadRequest(format!(
                    "The {claim:?} claim {name:?} is not a usable username (1 to \
                     {MAX_USERNAME_LEN} letters, digits, '.', '_', '-' or '@')"
                ))
            })?
        }
        None => ["preferred_username", "email", "client_id", "sub"]
            .iter()
            .find_map(|claim| text(claim).as_deref().and_then(usable))
            .ok_or_else(|| {
                OidcError::BadRequest(
                    "The identity provider sent no usable username (preferred_username, email \
                     or sub); set username_claim"
                        .into(),
                )
            })?,
    };
    let groups = groups_of(claims, &config.groups_claim);
    let member = config.required_groups.is_empty()
        || groups.iter().any(|g| config.required_groups.contains(g));
    if !member {
        return Err(OidcError::Denied(format!(
            "Only members of {} may log in here",
            config.required_groups.join(", ")
        )));
    }
    let permissions = groups
        .iter()
        .filter_map(|g| config.group_permissions.get(g))
        .fold(config.default_permissions, |all, set| all.union(*set));
    Ok(FederatedUser {
        provider: config.name.clone(),
        issuer: config.issuer.clone(),
        subject,
        username,
        groups,
        permissions,
    })
}

/// Whether the claims name the user and their groups (else the userinfo endpoint may).
pub fn is_complete(config: &ProviderConfig, claims: &Map<String, Value>) -> bool {
    let named = match &config.username_claim {
        Some(claim) => lookup(claims, claim).is_some(),
        None => claims.contains_key("preferred_username") || claims.contains_key("email"),
    };
    named && lookup(claims, &config.groups_claim).is_some()
}

/// A claim by dotted path (`realm_access.roles`); a claim whose own name has dots wins.
fn lookup<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The groups claim: a list of strings, or one string.
fn groups_of(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    match lookup(claims, path) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn usable(name: &str) -> Option<String> {
    is_valid_username(name).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OidcSettings;
    use serde_json::json;

    fn provider(extra: Value) -> ProviderConfig {
        let mut p = json!({"name": "kc", "issuer": "https://id.example", "client_id": "xi",
            "token_endpoint_auth_method": "none",
            "group_permissions": {"ops": ["models:start", "models:stop"], "admins": ["admin"]}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        let settings =
            OidcSettings::from_value("t", "", &json!({"providers": [p]}), &|_| None).unwrap();
        settings.providers.into_iter().next().unwrap()
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn permissions_are_the_defaults_plus_each_mapped_group() {
        let config = provider(json!({}));
        let user = user_of(
            &config,
            &claims(json!({"sub": "u1", "preferred_username": "ann", "groups": ["ops", "x"]})),
        )
        .unwrap();
        assert_eq!(user.username, "ann");
        assert_eq!(
            user.permissions.names(),
            ["models:list", "models:start", "models:stop"]
        );
        let admin = user_of(&config, &claims(json!({"sub": "u2", "groups": "admins"}))).unwrap();
        assert_eq!(admin.permissions.names(), ["admin"]);
        assert_eq!(admin.username, "u2", "falls back to sub");
        let nobody = user_of(&config, &claims(json!({"sub": "u3"}))).unwrap();
        assert_eq!(nobody.permissions.names(), ["models:list"]);
    }

    #[test]
    fn required_groups_keep_everyone_else_out() {
        let config = provider(json!({"required_groups": ["ops", "admins"]}));
        let out = user_of(&config, &claims(json!({"sub": "u", "groups": ["x"]}))).unwrap_err();
        assert!(matches!(out, OidcError::Denied(_)), "{out:?}");
        let none = user_of(&config, &claims(json!({"sub": "u"}))).unwrap_err();
        assert!(matches!(none, OidcError::Denied(_)), "{none:?}");
        let ops = user_of(&config, &claims(json!({"sub": "u", "groups": ["ops"]}))).unwrap();
        assert_eq!(ops.groups, ["ops"]);
    }

    #[test]
    fn nested_claims_and_a_named_username_claim() {
        let config = provider(json!({"groups_claim": "realm_access.roles",
            "username_claim": "email", "default_permissions": []}));
        let user = user_of(
            &config,
            &claims(json!({"sub": "s", "email": "a@b.c", "realm_access": {"roles": ["ops"]}})),
        )
        .unwrap();
        assert_eq!(user.username, "a@b.c");
        assert_eq!(user.permissions.names(), ["models:start", "models:stop"]);
        let err = user_of(&config, &claims(json!({"sub": "s"}))).unwrap_err();
        assert!(err.to_string().contains("\"email\""), "{err}");
        let err = user_of(&config, &claims(json!({"sub": "s", "email": "a b"}))).unwrap_err();
        assert!(err.to_string().contains("not a usable username"), "{err}");
    }
}
