//! The `--auth-config` file: parsing and every validation rule of SPEC section 2.
//!
//! The file is read as untyped JSON first so that each error can name the exact field (and the
//! user) at fault. Plain-text passwords are hashed here and dropped.

use std::collections::HashSet;
use std::path::Path;

use regex::Regex;
use serde_json::{Map, Value};
use xi_api::PermissionSet;

use crate::error::AuthError;
use crate::password::PasswordHash;
use crate::secret::Secret;

/// The secret from upstream's documentation, copied into many deployments.
const DOCS_EXAMPLE_SECRET: &str =
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7";

/// The JWT signing algorithms we accept (HMAC only; pinned at verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    fn parse(name: &str) -> Option<JwtAlgorithm> {
        match name {
            "HS256" => Some(JwtAlgorithm::HS256),
            "HS384" => Some(JwtAlgorithm::HS384),
            "HS512" => Some(JwtAlgorithm::HS512),
            _ => None,
        }
    }

    /// The shortest secret we accept: the hash output size in bytes.
    pub const fn min_secret_len(self) -> usize {
        match self {
            JwtAlgorithm::HS256 => 32,
            JwtAlgorithm::HS384 => 48,
            JwtAlgorithm::HS512 => 64,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
        }
    }
}

/// One user of the config file, password already hashed.
#[derive(Debug, Clone)]
pub struct UserEntry {
    pub username: String,
    pub password: PasswordHash,
    pub permissions: PermissionSet,
    pub api_keys: Vec<Secret>,
}

/// A validated auth config.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub algorithm: JwtAlgorithm,
    pub secret_key: Secret,
    pub token_expire_in_minutes: u64,
    pub users: Vec<UserEntry>,
    /// Things worth a loud log line that do not stop startup (unknown keys, the docs' example
    /// secret, an empty user list).
    pub warnings: Vec<String>,
}

impl AuthSettings {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<AuthSettings, AuthError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            AuthError::config(&label, "(file)", format!("cannot read the file: {e}"))
        })?;
        AuthSettings::parse(&label, &text)
    }

    /// Validates a config given as text; `label` names it in errors.
    pub fn parse(label: &str, text: &str) -> Result<AuthSettings, AuthError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| AuthError::config(label, "(file)", format!("is not valid JSON: {e}")))?;
        Parser {
            label,
            warnings: Vec::new(),
        }
        .settings(&root)
    }
}

struct Parser<'a> {
    label: &'a str,
    warnings: Vec<String>,
}

impl Parser<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> AuthError {
        AuthError::config(self.label, field, message)
    }

    fn object<'v>(
        &self,
        value: &'v Value,
        field: &str,
    ) -> Result<&'v Map<String, Value>, AuthError> {
        value.as_object().ok_or_else(|| {
            self.err(
                field,
                format!("must be a JSON object, found {}", kind(value)),
            )
        })
    }

    fn required<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Result<&'v Value, AuthError> {
        obj.get(key).ok_or_else(|| self.err(field, "is required"))
    }

    fn string<'v>(&self, value: &'v Value, field: &str) -> Result<&'v str, AuthError> {
        value
            .as_str()
            .ok_or_else(|| self.err(field, format!("must be a string, found {}", kind(value))))
    }

    fn warn_unknown(&mut self, obj: &Map<String, Value>, known: &[&str], at: &str) {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            self.warnings.push(format!(
                "{}: unknown key {at}{key:?} is ignored",
                self.label
            ));
        }
    }

    fn settings(mut self, root: &Value) -> Result<AuthSettings, AuthError> {
        let root = self.object(root, "(top level)")?;
        // `oidc` is single sign-on's section, read by xi-oidc.
        self.warn_unknown(root, &["auth_config", "user_config", "oidc"], "");
        let auth = self.required(root, "auth_config", "auth_config")?;
        let auth = self.object(auth, "auth_config")?;
        self.warn_unknown(
            auth,
            &["algorithm", "secret_key", "token_expire_in_minutes"],
            "auth_config.",
        );

        let algorithm = match auth.get("algorithm") {
            None | Some(Value::Null) => JwtAlgorithm::HS256,
            Some(v) => {
                let name = self.string(v, "auth_config.algorithm")?;
                JwtAlgorithm::parse(name).ok_or_else(|| {
                    self.err(
                        "auth_config.algorithm",
                        format!("{name:?} is not supported; use HS256, HS384 or HS512"),
                    )
                })?
            }
        };
        let secret_key = self.secret_key(auth, algorithm)?;
        let token_expire_in_minutes = self.expiry(auth)?;

        let users = self.required(root, "user_config", "user_config")?;
        let users = users.as_array().ok_or_else(|| {
            self.err(
                "user_config",
                format!("must be a list of users, found {}", kind(users)),
            )
        })?;
        if users.is_empty() {
            self.warnings.push(format!(
                "{}: user_config is empty: nobody can log in",
                self.label
            ));
        }
        let mut seen_names = HashSet::new();
        let mut seen_keys = HashSet::new();
        let mut entries = Vec::with_capacity(users.len());
        for (index, user) in users.iter().enumerate() {
            let entry = self.user(index, user, &mut seen_keys)?;
            if !seen_names.insert(entry.username.clone()) {
                return Err(self.err(
                    format!("user_config[{index}].username"),
                    format!("duplicate username {:?}", entry.username),
                ));
            }
            entries.push(entry);
        }

        Ok(AuthSettings {
            algorithm,
            secret_key,
            token_expire_in_minutes,
            users: entries,
            warnings: self.warnings,
        })
    }

    fn secret_key(
        &mut self,
        auth: &Map<String, Value>,
        algorithm: JwtAlgorithm,
    ) -> Result<Secret, AuthError> {
        let field = "auth_config.secret_key";
        let value = self.required(auth, "secret_key", field)?;
        let key = self.string(value, field)?;
        let min = algorithm.min_secret_len();
        if key.is_empty() {
            return Err(self.err(
                field,
                "must not be empty; make one with `openssl rand -hex 32`",
            ));
        }
        if key.len() < min {
            return Err(self.err(
                field,
                format!(
                    "is {} bytes long, {} needs at least {min}; make one with `openssl rand -hex 32`",
                    key.len(),
                    algorithm.as_str()
                ),
            ));
        }
        if key == DOCS_EXAMPLE_SECRET {
            self.warnings.push(format!(
                "{}: auth_config.secret_key is the example key from the documentation: anyone can \
                 forge tokens for this server. Replace it with the output of `openssl rand -hex 32`",
                self.label
            ));
        }
        Ok(Secret::new(key))
    }

    fn expiry(&self, auth: &Map<String, Value>) -> Result<u64, AuthError> {
        let field = "auth_config.token_expire_in_minutes";
        let value = self.required(auth, "token_expire_in_minutes", field)?;
        let minutes = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match minutes {
            Some(m) if m > 0 => Ok(m),
            _ => Err(self.err(field, format!("must be a positive integer, found {value}"))),
        }
    }

    fn user(
        &mut self,
        index: usize,
        user: &Value,
        seen_keys: &mut HashSet<String>,
    ) -> Result<UserEntry, AuthError> {
        let at = format!("user_config[{index}]");
        let obj = self.object(user, &at)?;
        let name_value = self.required(obj, "username", &format!("{at}.username"))?;
        let username = self
            .string(name_value, &format!("{at}.username"))?
            .to_string();
        if username.is_empty() {
            return Err(self.err(format!("{at}.username"), "must not be empty"));
        }
        let at = format!("{at} (user {username:?})");
        self.warn_unknown(
            obj,
            &["username", "password", "permissions", "api_keys"],
            &format!("{at}."),
        );

        let password = self.required(obj, "password", &format!("{at}.password"))?;
        let password = self.string(password, &format!("{at}.password"))?;
        if password.is_empty() {
            return Err(self.err(format!("{at}.password"), "must not be empty"));
        }
        let password = match PasswordHash::parse_stored(password) {
            Ok(Some(hash)) => hash,
            Ok(None) => PasswordHash::hash_plain(password)?,
            Err(why) => return Err(self.err(format!("{at}.password"), why)),
        };

        let permissions = self.permissions(obj, &at)?;
        let api_keys = self.api_keys(obj, &at, seen_keys)?;
        Ok(UserEntry {
            username,
            password,
            permissions,
            api_keys,
        })
    }

    fn permissions(&self, obj: &Map<String, Value>, at: &str) -> Result<PermissionSet, AuthError> {
        let field = format!("{at}.permissions");
        let list = self.required(obj, "permissions", &field)?;
        let list = list.as_array().ok_or_else(|| {
            self.err(
                &field,
                format!("must be a list of strings, found {}", kind(list)),
            )
        })?;
        let names = list
            .iter()
            .enumerate()
            .map(|(i, item)| self.string(item, &format!("{field}[{i}]")))
            .collect::<Result<Vec<&str>, AuthError>>()?;
        PermissionSet::parse_list(names)
            .map_err(|unknown| self.err(format!("{field}[{}]", unknown.index), unknown.to_string()))
    }

    fn api_keys(
        &self,
        obj: &Map<String, Value>,
        at: &str,
        seen: &mut HashSet<String>,
    ) -> Result<Vec<Secret>, AuthError> {
        let field = format!("{at}.api_keys");
        let list = match obj.get("api_keys") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(v) => v,
        };
        let list = list.as_array().ok_or_else(|| {
            self.err(
                &field,
                format!("must be a list of strings, found {}", kind(list)),
            )
        })?;
        let pattern = Regex::new(r"^sk-[A-Za-z0-9]{13}$").expect("static regex");
        let mut keys = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let key = self.string(item, &format!("{field}[{i}]"))?;
            if !pattern.is_match(key) {
                // The key itself is never echoed: it may be a real secret with a typo.
                return Err(self.err(
                    format!("{field}[{i}]"),
                    "must be 'sk-' followed by exactly 13 letters or digits (16 characters in all)",
                ));
            }
            if !seen.insert(key.to_string()) {
                return Err(self.err(
                    format!("{field}[{i}]"),
                    "this api key is already used (keys must be unique across all users)",
                ));
            }
            keys.push(Secret::new(key));
        }
        Ok(keys)
    }
}

/// What a JSON value is, for errors ("must be a list, found a string"); shared with the other
/// config parsers (single sign-on's).
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
