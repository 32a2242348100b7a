//! Single sign-on flags: `--oidc-config FILE` (several providers), or one provider from flags
//! and environment variables (upstream's `XINFERENCE_OIDC_*` names), beside the `oidc` section
//! an `--auth-config` file may hold. All three go through xi-oidc's one parser.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};
use xi_oidc::OidcSettings;

/// Flags of single sign-on (OpenID Connect).
#[derive(Args, Debug, Clone, Default)]
pub struct OidcArgs {
    /// JSON file of single sign-on providers: `{"providers": [...]}` (docs/auth.md). The
    /// `--auth-config` file may hold the same as its `oidc` section.
    #[arg(long, env = "XINFERENCE_OIDC_CONFIG")]
    pub oidc_config: Option<PathBuf>,
    /// One provider from flags: its issuer URL (discovery at
    /// ISSUER/.well-known/openid-configuration).
    #[arg(long, env = "XINFERENCE_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The client id registered at the provider.
    #[arg(long, env = "XINFERENCE_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// File holding the client secret (or set XINFERENCE_OIDC_CLIENT_SECRET).
    #[arg(long, env = "XINFERENCE_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Our name for the provider (URLs, `xinference login --sso --provider`).
    #[arg(long, env = "XINFERENCE_OIDC_NAME", default_value = "sso")]
    pub oidc_name: String,
    /// What the login button says: "Log in with NAME" [default: the name].
    #[arg(long, env = "XINFERENCE_OIDC_DISPLAY_NAME")]
    pub oidc_display_name: Option<String>,
    /// Where the provider sends the browser back [default: this server's
    /// /api/oidc/callback as the browser reached it]; set it behind a TLS proxy.
    #[arg(long, env = "XINFERENCE_OIDC_REDIRECT_URI")]
    pub oidc_redirect_uri: Option<String>,
    /// Scopes to ask for, comma-separated [default: openid,profile,email].
    #[arg(long, env = "XINFERENCE_OIDC_SCOPES", value_delimiter = ',')]
    pub oidc_scopes: Vec<String>,
    /// The claim naming the user [default: preferred_username, else email, else sub].
    #[arg(long, env = "XINFERENCE_OIDC_USERNAME_CLAIM")]
    pub oidc_username_claim: Option<String>,
    /// The claim listing the user's groups or roles (a dotted path reaches into objects)
    /// [default: groups].
    #[arg(long, env = "XINFERENCE_OIDC_GROUPS_CLAIM")]
    pub oidc_groups_claim: Option<String>,
    /// GROUP=PERM[+PERM...]: what members of a group hold (repeat it), e.g.
    /// `xi-admins=admin` or `ml=models:list+models:read+models:start`.
    #[arg(
        long = "oidc-group-permission",
        env = "XINFERENCE_OIDC_GROUP_PERMISSIONS",
        value_delimiter = ','
    )]
    pub oidc_group_permissions: Vec<String>,
    /// What every user of the provider holds, comma-separated [default: models:list].
    #[arg(
        long,
        env = "XINFERENCE_OIDC_DEFAULT_PERMISSIONS",
        value_delimiter = ','
    )]
    pub oidc_default_permissions: Option<Vec<String>>,
    /// Accept the provider's own JWT access tokens with this audience as bearer tokens.
    #[arg(long, env = "XINFERENCE_OIDC_API_AUDIENCE")]
    pub oidc_api_audience: Option<String>,
}

impl OidcArgs {
    /// Every configured provider: the auth config's section, the file, then the flags.
    pub fn settings(&self, auth_config: Option<&Path>) -> Result<Option<OidcSettings>, String> {
        let env = |name: &str| std::env::var(name).ok();
        let mut all: Option<OidcSettings> = None;
        let mut add = |more: OidcSettings| -> Result<(), String> {
            all = Some(match all.take() {
                None => more,
                Some(before) => before.merge(more).map_err(|e| e.to_string())?,
            });
            Ok(())
        };
        if let Some(path) = auth_config {
            if let Some(section) =
                OidcSettings::from_auth_config(path, &env).map_err(|e| e.to_string())?
            {
                add(section)?;
            }
        }
        if let Some(path) = &self.oidc_config {
            add(OidcSettings::load(path, &env).map_err(|e| e.to_string())?)?;
        }
        if let Some(provider) = self.provider()? {
            let root = json!({ "providers": [provider] });
            let flags = OidcSettings::from_value("--oidc-* flags", "", &root, &env)
                .map_err(|e| e.to_string())?;
            add(flags)?;
        }
        Ok(all)
    }

    /// The flags' provider as config JSON; `None` without `--oidc-issuer`.
    fn provider(&self) -> Result<Option<Value>, String> {
        let Some(issuer) = &self.oidc_issuer else {
            return Ok(None);
        };
        let Some(client_id) = &self.oidc_client_id else {
            return Err(
                "--oidc-client-id (XINFERENCE_OIDC_CLIENT_ID) is required with --oidc-issuer"
                    .into(),
            );
        };
        let mut p = Map::new();
        p.insert("name".into(), json!(self.oidc_name));
        p.insert("issuer".into(), json!(issuer));
        p.insert("client_id".into(), json!(client_id));
        match &self.oidc_client_secret_file {
            Some(file) => p.insert(
                "client_secret_file".into(),
                json!(file.display().to_string()),
            ),
            None if std::env::var_os("XINFERENCE_OIDC_CLIENT_SECRET").is_some() => p.insert(
                "client_secret_env".into(),
                json!("XINFERENCE_OIDC_CLIENT_SECRET"),
            ),
            None => None,
        };
        let optional = [
            ("display_name", &self.oidc_display_name),
            ("redirect_uri", &self.oidc_redirect_uri),
            ("username_claim", &self.oidc_username_claim),
            ("groups_claim", &self.oidc_groups_claim),
            ("api_audience", &self.oidc_api_audience),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                p.insert(key.into(), json!(value));
            }
        }
        if !self.oidc_scopes.is_empty() {
            p.insert("scopes".into(), json!(self.oidc_scopes));
        }
        if let Some(defaults) = &self.oidc_default_permissions {
            p.insert("default_permissions".into(), json!(defaults));
        }
        let mut groups = Map::new();
        for entry in &self.oidc_group_permissions {
            let Some((group, perms)) = entry.split_once('=') else {
                return Err(format!(
                    "--oidc-group-permission {entry:?}: expected GROUP=PERM[+PERM...]"
                ));
            };
            let perms: Vec<&str> = perms.split('+').map(str::trim).collect();
            groups.insert(group.trim().to_string(), json!(perms));
        }
        if !groups.is_empty() {
            p.insert("group_permissions".into(), Value::Object(groups));
        }
        Ok(Some(Value::Object(p)))
    }
}
