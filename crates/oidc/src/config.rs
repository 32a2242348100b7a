//! The providers of single sign-on, as configured: an `oidc` section of the `--auth-config`
//! file, an `--oidc-config` file of the same shape, or one provider from flags (the launcher
//! builds the same JSON from them, so one parser checks all three).
//!
//! Read as untyped JSON so each error names the field at fault (`oidc.providers[0].issuer`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};
use xi_api::PermissionSet;
use xi_auth::config::kind;
use xi_auth::Secret;

use crate::error::{OidcError, Result};

/// Scopes asked for when the config names none.
pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "profile", "email"];
/// What a new user holds when no group of theirs is mapped (upstream gives `models:list`).
pub const DEFAULT_PERMISSIONS: [&str; 1] = ["models:list"];
/// The claim holding the user's groups (or roles) when the config names none.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// How we authenticate to the provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (the default with a secret).
    Basic,
    /// The id and secret in the form body.
    Post,
    /// A public client: PKCE alone (the default without a secret).
    None,
}

/// One identity provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Our name for it: in URLs (`?provider=`), `--provider` of the CLI, and logs.
    pub name: String,
    /// What the login page's button says: "Log in with {display_name}".
    pub display_name: String,
    /// The issuer identifier; discovery is `{issuer}/.well-known/openid-configuration` and the
    /// document must name exactly this issuer.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_auth: ClientAuth,
    /// Always holds `openid`.
    pub scopes: Vec<String>,
    /// The claim naming the user; `None`: `preferred_username`, else `email`, else `sub`.
    pub username_claim: Option<String>,
    /// The claim with the user's groups or roles; a dotted path reaches into objects
    /// (Keycloak's `realm_access.roles`).
    pub groups_claim: String,
    /// Group -> permissions. A user holds the union of their groups' sets and the defaults.
    pub group_permissions: BTreeMap<String, PermissionSet>,
    /// What every user of this provider holds.
    pub default_permissions: PermissionSet,
    /// When not empty, only members of at least one of these groups may log in (for providers
    /// anyone can sign up to, such as Google).
    pub required_groups: Vec<String>,
    /// Whether `xinference login --sso` may use the device grant (off: the CLI uses the
    /// browser on its own machine; a device code can be phished, RFC 8628 5.4).
    pub device_flow: bool,
    /// Where the provider sends the browser back; `None`: this server's own
    /// `/api/oidc/callback`, from the request's scheme and host (set it behind a proxy).
    pub redirect_uri: Option<String>,
    /// Where the provider's logout page sends the browser; `None`: this server's `/ui/`.
    pub post_logout_redirect_uri: Option<String>,
    /// Accept the provider's own JWT access tokens with this audience as bearer tokens.
    pub api_audience: Option<String>,
}

/// Every configured provider, in the order given.
#[derive(Debug, Clone, Default)]
pub struct OidcSettings {
    pub providers: Vec<ProviderConfig>,
    /// Things worth a log line that do not stop startup (an inline secret, unknown keys).
    pub warnings: Vec<String>,
}

impl OidcSettings {
    /// Reads `{"providers": [...]}` from an `--oidc-config` file. `env` resolves
    /// `client_secret_env` (the launcher passes the process environment).
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<OidcSettings> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| OidcError::config(&label, "(file)", format!("cannot read it: {e}")))?;
        let root: Value = serde_json::from_str(&text)
            .map_err(|e| OidcError::config(&label, "(file)", format!("is not valid JSON: {e}")))?;
        OidcSettings::from_value(&label, "", &root, env)
    }

    /// The `oidc` section of an auth config file, if it has one. A file that cannot be read or
    /// is not JSON has no section here: the auth config's own loader reports that, in its words.
    pub fn from_auth_config(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<OidcSettings>> {
        let label = path.display().to_string();
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        let Ok(root) = serde_json::from_str::<Value>(&text) else {
            return Ok(None);
        };
        match root.get("oidc") {
            None | Some(Value::Null) => Ok(None),
            Some(section) => OidcSettings::from_value(&label, "oidc.", section, env).map(Some),
        }
    }

    /// Parses `{"providers": [...]}`; `prefix` starts every field name in errors.
    pub fn from_value(
        label: &str,
        prefix: &str,
        root: &Value,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OidcSettings> {
        let mut p = Parser {
            label,
            env,
            warnings: Vec::new(),
        };
        let root = p.object(root, prefix.trim_end_matches('.'))?;
        p.unknown_keys(root, prefix, &["providers"]);
        let field = format!("{prefix}providers");
        let list = match root.get("providers") {
            Some(Value::Array(list)) if !list.is_empty() => list,
            Some(Value::Array(_)) => return Err(p.err(&field, "must name at least one provider")),
            Some(other) => {
                return Err(p.err(&field, format!("must be a list, found {}", kind(other))))
            }
            None => return Err(p.err(&field, "is required")),
        };
        let mut providers: Vec<ProviderConfig> = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let provider = p.provider(&at, entry)?;
            if providers.iter().any(|q| q.name == provider.name) {
                return Err(p.err(format!("{at}.name"), "names another provider already"));
            }
            if let Some(twin) = providers.iter().find(|q| q.issuer == provider.issuer) {
                p.warnings.push(format!(
                    "{label}: providers {:?} and {:?} share the issuer {}: one person is one user \
                     through either, and each login applies that provider's group mapping",
                    twin.name, provider.name, provider.issuer
                ));
            }
            providers.push(provider);
        }
        Ok(OidcSettings {
            providers,
            warnings: p.warnings,
        })
    }

    /// Appends `other`'s providers (flags beside a file); a name used twice is an error.
    pub fn merge(mut self, other: OidcSettings) -> Result<OidcSettings> {
        for provider in other.providers {
            if self.providers.iter().any(|q| q.name == provider.name) {
                return Err(OidcError::config(
                    "single sign-on",
                    "name",
                    format!("provider {:?} is configured twice", provider.name),
                ));
            }
            self.providers.push(provider);
        }
        self.warnings.extend(other.warnings);
        Ok(self)
    }
}

struct Parser<'a> {
    label: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    warnings: Vec<String>,
}

const PROVIDER_KEYS: &[&str] = &[
    "name",
    "display_name",
    "issuer",
    "client_id",
    "client_secret",
    "client_secret_file",
    "client_secret_env",
    "token_endpoint_auth_method",
    "scopes",
    "username_claim",
    "groups_claim",
    "group_permissions",
    "default_permissions",
    "required_groups",
    "device_flow",
    "redirect_uri",
    "post_logout_redirect_uri",
    "api_audience",
];

impl Parser<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> OidcError {
        OidcError::config(self.label, field, message)
    }

    fn object<'v>(&self, value: &'v Value, field: &str) -> Result<&'v Map<String, Value>> {
        value.as_object().ok_or_else(|| {
            let field = if field.is_empty() { "(file)" } else { field };
            self.err(
                field,
                format!("must be a JSON object, found {}", kind(value)),
            )
        })
    }

    fn unknown_keys(&mut self, map: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            self.warnings.push(format!(
                "{}: unknown key {prefix}{key} is ignored",
                self.label
            ));
        }
    }

    fn string(&self, map: &Map<String, Value>, at: &str, key: &str) -> Result<Option<String>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(self.err(format!("{at}.{key}"), "must not be empty"))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.err(
                format!("{at}.{key}"),
                format!("must be a string, found {}", kind(other)),
            )),
        }
    }

    fn required(&self, map: &Map<String, Value>, at: &str, key: &str) -> Result<String> {
        self.string(map, at, key)?
            .ok_or_else(|| self.err(format!("{at}.{key}"), "is required"))
    }

    fn strings(&self, value: &Value, field: &str) -> Result<Vec<String>> {
        let Value::Array(items) = value else {
            return Err(self.err(field, format!("must be a list, found {}", kind(value))));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.err(
                    format!("{field}[{i}]"),
                    format!("must be a string, found {}", kind(other)),
                )),
            })
            .collect()
    }

    fn permissions(&self, value: &Value, field: &str) -> Result<PermissionSet> {
        let names = self.strings(value, field)?;
        PermissionSet::parse_list(names.iter().map(String::as_str))
            .map_err(|unknown| self.err(format!("{field}[{}]", unknown.index), unknown.to_string()))
    }

    fn provider(&mut self, at: &str, value: &Value) -> Result<ProviderConfig> {
        let map = self.object(value, at)?;
        self.unknown_keys(map, &format!("{at}."), PROVIDER_KEYS);
        let name = self.required(map, at, "name")?;
        if !is_provider_name(&name) {
            return Err(self.err(
                format!("{at}.name"),
                "1 to 32 lowercase letters, digits, '-' or '_', starting with a letter or digit",
            ));
        }
        let display_name = self
            .string(map, at, "display_name")?
            .unwrap_or(name.clone());
        let issuer = self.required(map, at, "issuer")?;
        check_url(&issuer).map_err(|m| self.err(format!("{at}.issuer"), m))?;
        let client_id = self.required(map, at, "client_id")?;
        let client_secret = self.secret(map, at)?;
        let client_auth = match self
            .string(map, at, "token_endpoint_auth_method")?
            .as_deref()
        {
            None if client_secret.is_some() => ClientAuth::Basic,
            None => ClientAuth::None,
            Some("client_secret_basic") => ClientAuth::Basic,
            Some("client_secret_post") => ClientAuth::Post,
            Some("none") => ClientAuth::None,
            Some(other) => {
                return Err(self.err(
                    format!("{at}.token_endpoint_auth_method"),
                    format!(
                        "{other:?} is not supported; use client_secret_basic, \
                         client_secret_post or none"
                    ),
                ))
            }
        };
        if client_auth != ClientAuth::None && client_secret.is_none() {
            return Err(self.err(
                format!("{at}.client_secret_file"),
                "a client secret is required by this token_endpoint_auth_method",
            ));
        }
        let scopes = match map.get("scopes") {
            None | Some(Value::Null) => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            Some(v) => self.strings(v, &format!("{at}.scopes"))?,
        };
        if !scopes.iter().any(|s| s == "openid") {
            return Err(self.err(format!("{at}.scopes"), "must include \"openid\""));
        }
        if let Some(bad) = scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            return Err(self.err(
                format!("{at}.scopes"),
                format!("{bad:?} is not a scope (no spaces, not empty)"),
            ));
        }
        let username_claim = self.string(map, at, "username_claim")?;
        let groups_claim = self
            .string(map, at, "groups_claim")?
            .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_string());
        let mut group_permissions = BTreeMap::new();
        if let Some(value) = map.get("group_permissions").filter(|v| !v.is_null()) {
            let field = format!("{at}.group_permissions");
            for (group, perms) in self.object(value, &field)? {
                let set = self.permissions(perms, &format!("{field}.{group}"))?;
                group_permissions.insert(group.clone(), set);
            }
        }
        let default_permissions = match map.get("default_permissions") {
            None | Some(Value::Null) => DEFAULT_PERMISSIONS
                .iter()
                .filter_map(|n| PermissionSet::parse_name(n))
                .fold(PermissionSet::EMPTY, PermissionSet::union),
            Some(v) => self.permissions(v, &format!("{at}.default_permissions"))?,
        };
        let required_groups = match map.get("required_groups") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => self.strings(v, &format!("{at}.required_groups"))?,
        };
        let device_flow = match map.get("device_flow") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(on)) => *on,
            Some(other) => {
                return Err(self.err(
                    format!("{at}.device_flow"),
                    format!("must be true or false, found {}", kind(other)),
                ))
            }
        };
        let redirect_uri = self.string(map, at, "redirect_uri")?;
        let post_logout_redirect_uri = self.string(map, at, "post_logout_redirect_uri")?;
        for (key, uri) in [
            ("redirect_uri", &redirect_uri),
            ("post_logout_redirect_uri", &post_logout_redirect_uri),
        ] {
            if let Some(uri) = uri {
                check_url(uri).map_err(|m| self.err(format!("{at}.{key}"), m))?;
            }
        }
        let api_audience = self.string(map, at, "api_audience")?;
        Ok(ProviderConfig {
            name,
            display_name,
            issuer,
            client_id,
            client_secret,
            client_auth,
            scopes,
            username_claim,
            groups_claim,
            group_permissions,
            default_permissions,
            required_groups,
            device_flow,
            redirect_uri,
            post_logout_redirect_uri,
            api_audience,
        })
    }

    /// The client secret: from a file (preferred), an environment variable, or inline.
    fn secret(&mut self, map: &Map<String, Value>, at: &str) -> Result<Option<Secret>> {
        let inline = self.string(map, at, "client_secret")?;
        let file = self.string(map, at, "client_secret_file")?;
        let env = self.string(map, at, "client_secret_env")?;
        let given = [&inline, &file, &env]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given > 1 {
            return Err(self.err(
                format!("{at}.client_secret"),
                "give one of client_secret, client_secret_file and client_secret_env",
            ));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                self.err(
                    format!("{at}.client_secret_file"),
                    format!("cannot read {path}: {e}"),
                )
            })?;
            let secret = text.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                return Err(self.err(format!("{at}.client_secret_file"), "the file is empty"));
            }
            return Ok(Some(Secret::new(secret)));
        }
        if let Some(var) = env {
            return match (self.env)(&var) {
                Some(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
                _ => Err(self.err(
                    format!("{at}.client_secret_env"),
                    format!("the environment variable {var} is not set"),
                )),
            };
        }
        if inline.is_some() {
            self.warnings.push(format!(
                "{}: {at}.client_secret is written in the file; prefer client_secret_file or \
                 client_secret_env",
                self.label
            ));
        }
        Ok(inline.map(Secret::new))
    }
}

/// Our names for providers: short, and safe in URLs and logs.
pub fn is_provider_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// An absolute URL we may send users or requests to: `https`, or `http` to a loopback host
/// (a provider on this machine, as in tests and development).
pub fn check_url(text: &str) -> std::result::Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{text:?} must not carry a fragment or credentials"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(format!(
            "{text:?} must use https (plain http only to 127.0.0.1, [::1] or localhost)"
        )),
        other => Err(format!("{text:?}: scheme {other:?} is not http(s)")),
    }
}

/// Whether the URL's host is this machine.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(value: Value) -> Result<OidcSettings> {
        OidcSettings::from_value("test.json", "oidc.", &value, &no_env)
    }

    fn minimal() -> Value {
        json!({"name": "kc", "issuer": "https://id.example.com/realms/x", "client_id": "xi",
               "client_secret": "s3cret-value"})
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let settings = parse(json!({"providers": [minimal()]})).unwrap();
        let p = &settings.providers[0];
        assert_eq!(p.display_name, "kc");
        assert_eq!(p.scopes, ["openid", "profile", "email"]);
        assert_eq!(p.groups_claim, "groups");
        assert_eq!(p.client_auth, ClientAuth::Basic);
        assert_eq!(p.default_permissions.names(), ["models:list"]);
        assert!(p.device_flow && p.required_groups.is_empty());
        assert!(format!("{p:?}").contains("***") && !format!("{p:?}").contains("s3cret"));
        assert!(settings.warnings[0].contains("prefer client_secret_file"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let with = |key: &str, value: Value| {
            let mut p = minimal();
            p[key] = value;
            parse(json!({"providers": [p]})).unwrap_err().to_string()
        };
        let cases = [
            (
                "issuer",
                json!("http://id.example.com"),
                "oidc.providers[0].issuer",
            ),
            ("issuer", json!("not a url"), "oidc.providers[0].issuer"),
            ("name", json!("Bad Name"), "oidc.providers[0].name"),
            ("scopes", json!(["profile"]), "must include \"openid\""),
            (
                "group_permissions",
                json!({"ops": ["models:fly"]}),
                "group_permissions.ops[0]",
            ),
            ("default_permissions", json!("admin"), "must be a list"),
            (
                "token_endpoint_auth_method",
                json!("private_key_jwt"),
                "not supported",
            ),
            ("client_secret_env", json!("XI_NOT_SET"), "give one of"),
            ("device_flow", json!("yes"), "must be true or false"),
            ("required_groups", json!("ops"), "must be a list"),
        ];
        for (key, value, expected) in cases {
            let message = with(key, value.clone());
            assert!(message.contains(expected), "{key}={value}: {message}");
        }
        let missing = parse(json!({"providers": [{"name": "a", "client_id": "x",
            "client_secret": "y"}]}))
        .unwrap_err();
        assert!(missing
            .to_string()
            .contains("oidc.providers[0].issuer: is required"));
        let twice = parse(json!({"providers": [minimal(), minimal()]})).unwrap_err();
        assert!(
            twice.to_string().contains("oidc.providers[1].name"),
            "{twice}"
        );
        let mut second = minimal();
        second["name"] = json!("kc2");
        let shared = parse(json!({"providers": [minimal(), second]})).unwrap();
        assert!(
            shared
                .warnings
                .iter()
                .any(|w| w.contains("share the issuer")),
            "{:?}",
            shared.warnings
        );
    }

    #[test]
    fn secrets_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut p = minimal();
        p.as_object_mut().unwrap().remove("client_secret");
        p["client_secret_file"] = json!(file.display().to_string());
        let settings = parse(json!({"providers": [p.clone()]})).unwrap();
        let secret = |s: &OidcSettings| s.providers[0].client_secret.clone().unwrap();
        assert_eq!(secret(&settings).expose(), "from-file");
        assert!(settings.warnings.is_empty());

        p.as_object_mut().unwrap().remove("client_secret_file");
        p["client_secret_env"] = json!("XI_TEST_SECRET");
        let env = |name: &str| (name == "XI_TEST_SECRET").then(|| "from-env".to_string());
        let settings =
            OidcSettings::from_value("t", "", &json!({"providers": [p.clone()]}), &env).unwrap();
        assert_eq!(secret(&settings).expose(), "from-env");
        let unset = parse(json!({"providers": [p]})).unwrap_err();
        assert!(unset.to_string().contains("XI_TEST_SECRET is not set"));
    }

    #[test]
    fn loopback_http_is_allowed_for_development() {
        let cases = [
            ("http://127.0.0.1:8080", true),
            ("http://localhost:1/x", true),
            ("http://[::1]:9", true),
            ("https://a.b", true),
            ("http://10.0.0.1", false),
            ("ftp://a.b", false),
            ("https://u:p@a.b", false),
            ("https://a.b/#x", false),
        ];
        for (url, ok) in cases {
            assert_eq!(check_url(url).is_ok(), ok, "{url}");
        }
    }
}
