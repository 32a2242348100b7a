//! Identity store shapes: users, api keys, sessions (`/v1/admin/users`, `/v1/admin/keys`,
//! `/v1/auth/*`), upstream's advanced-auth shapes first (`xinference/api/oauth2/advanced/`),
//! with our additions (key permissions, limits, usage) as extra fields.
//!
//! Times are Unix seconds. Ids are integers, as upstream; principals from the `--auth-config`
//! file are listed with `source: "config"` and no id (they are read-only through the API).

use serde::{Deserialize, Serialize};

/// Where a user comes from.
pub const SOURCE_LOCAL: &str = "local";
pub const SOURCE_CONFIG: &str = "config";
/// A user of single sign-on (OpenID Connect), created at their first login.
pub const SOURCE_OIDC: &str = "oidc";

/// A user as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserInfo {
    /// `None` for a config-file user.
    pub id: Option<i64>,
    pub username: String,
    /// `"local"` (the identity store), `"oidc"` (single sign-on) or `"config"` (the
    /// `--auth-config` file).
    pub source: String,
    pub enabled: bool,
    pub must_change_password: bool,
    /// Canonical permission names (`admin` alone when held).
    pub permissions: Vec<String>,
    pub created_at: Option<i64>,
}

/// `POST /v1/admin/users`.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub must_change_password: bool,
}

impl std::fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("username", &self.username)
            .field("password", &"***")
            .field("permissions", &self.permissions)
            .field("must_change_password", &self.must_change_password)
            .finish()
    }
}

/// `POST /v1/admin/users` answer (201).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedUser {
    pub id: i64,
    pub username: String,
}

/// `PUT /v1/admin/users/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_change_password: Option<bool>,
}

/// `PUT /v1/admin/users/{id}/password`. `old_password` is required when users change their own
/// password (admins too); `users:manage` sets other users' without it.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub new_password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_password: Option<String>,
}

impl std::fmt::Debug for ChangePasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangePasswordRequest { *** }")
    }
}

/// `GET/PUT /v1/admin/users/{id}/permissions`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPermissions {
    pub permissions: Vec<String>,
}

/// One entry of a key's model list (upstream's shape): `all`, `model_id` (a model uid) or
/// `model_type` (`LLM`, `embedding`, `rerank`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPermission {
    pub permission_type: String,
    #[serde(default)]
    pub permission_value: Option<String>,
}

/// A key's optional limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub concurrent_requests: Option<u32>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
}

/// Counted use of a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyUsage {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// An api key as the admin API shows it: never the key itself, only its display prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: i64,
    pub user_id: i64,
    pub owner_username: Option<String>,
    pub key_prefix: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub expires_at: Option<i64>,
    /// Which models the key may list and use (`[{"permission_type": "all"}]` for every model).
    pub model_permissions: Vec<ModelPermission>,
    /// The key's own permissions (a subset of its owner's); `None`: the owner's model-use
    /// permissions (`models:list`, `models:read`).
    pub permissions: Option<Vec<String>>,
    pub limits: KeyLimits,
    pub usage: KeyUsage,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// An expiry as upstream's clients send it (an ISO-8601 string) or as a Unix time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Expiry {
    Unix(i64),
    Text(String),
}

/// `POST /v1/admin/keys`. `models` is a shorthand for `model_permissions` of kind `model_id`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The owner's user id (`keys:manage` only); default the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Expiry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_permissions: Option<Vec<ModelPermission>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<KeyLimits>,
}

/// `POST /v1/admin/keys` answer (201): the only time the key is shown.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: i64,
    pub key: String,
    /// Upstream's name for the display prefix.
    pub prefix: String,
    pub key_prefix: String,
    pub name: Option<String>,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("key", &"***")
            .field("key_prefix", &self.key_prefix)
            .field("name", &self.name)
            .finish()
    }
}

/// `PUT /v1/admin/keys/{id}`: only the fields present change (`expires_at: null` removes the
/// expiry).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        default,
        deserialize_with = "some_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Option<Expiry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_permissions: Option<Vec<ModelPermission>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<KeyLimits>,
}

/// `GET/PUT /v1/admin/keys/{id}/permissions` (upstream: the model list).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyModelPermissions {
    pub model_permissions: Vec<ModelPermission>,
}

/// A present field, `null` included (`Some(None)`); absent stays `None`.
fn some_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /v1/auth/refresh` and `POST /v1/auth/logout`.
#[derive(Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefreshRequest {
    #[serde(default)]
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshRequest { *** }")
    }
}

/// `GET /v1/auth/me`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeResponse {
    pub id: Option<i64>,
    pub username: String,
    pub source: String,
    pub permissions: Vec<String>,
    pub must_change_password: bool,
    /// `"token"` or `"api_key"`.
    pub credential: String,
}

/// `{"ok": true}`, upstream's answer to admin writes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ok {
    pub ok: bool,
}

impl Ok {
    pub const YES: Ok = Ok { ok: true };
}
