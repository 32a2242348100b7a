//! The `xinference` command line: upstream's commands and flags on top of [`Client`].

mod commands;
mod identity;
mod prompt;
mod session;
mod sso;
mod table;
#[cfg(test)]
mod test_server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::ClientError;
use crate::token_store;
use identity::{KeyAction, KeyCommand, UserAction, UserCommand};
use session::Session;

/// Talk to an xinference-rs (or Xinference) server: log in, launch and stop models, chat,
/// embed, rerank, manage custom registrations.
#[derive(Parser, Debug)]
#[command(name = "xinference", version, about)]
pub struct Cli {
    /// The server, exactly as you logged in to it (the stored token is keyed by this text).
    #[arg(
        short = 'e',
        long,
        env = "XINFERENCE_ENDPOINT",
        default_value = "http://127.0.0.1:9997",
        global = true
    )]
    pub endpoint: String,
    /// An `sk-` api key (or a token) to use instead of the stored login. `-ak` works too.
    #[arg(long = "api-key", env = "XINFERENCE_API_KEY", global = true)]
    pub api_key: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Log in and store the access token for this endpoint ($XINFERENCE_HOME/auth/, mode 0600),
    /// with the refresh token beside it when the server gives one. Without --password the
    /// password is read from the terminal (no echo) or one line of standard input. With --sso:
    /// through the server's single sign-on (a code to enter at the identity provider, or a
    /// browser login when the provider offers no device codes).
    Login {
        // (`requires = "sso"` on the SSO flags would be met by the flag's default `false`.)
        #[arg(
            long,
            required_unless_present = "sso",
            conflicts_with_all = ["sso", "provider", "no_browser"]
        )]
        username: Option<String>,
        #[arg(long, conflicts_with = "sso")]
        password: Option<String>,
        /// Log in through the server's OpenID Connect single sign-on instead of a password.
        #[arg(long)]
        sso: bool,
        /// The single sign-on provider (by name); needed when the server has several.
        #[arg(long)]
        provider: Option<String>,
        /// Print the browser login's address without trying to open a browser.
        #[arg(long = "no-browser")]
        no_browser: bool,
    },
    /// End the stored login: the server's session (when it gave a refresh token) and the
    /// stored token files.
    Logout,
    /// Manage the server's users (identity store).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage api keys (identity store).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// List the running models.
    List,
    /// Launch a model. Extra `--key value` pairs go to the engine (e.g. `--requantize Q8_0`).
    Launch(commands::LaunchArgs),
    /// Stop a running model.
    Terminate {
        #[arg(short = 'u', long = "model-uid")]
        model_uid: String,
    },
    /// Register a custom model from a JSON file.
    Register {
        #[arg(short = 't', long = "model-type", default_value = "LLM")]
        model_type: String,
        #[arg(long)]
        file: std::path::PathBuf,
        /// Keep it across server restarts.
        #[arg(long)]
        persist: bool,
    },
    /// Remove a custom model registration.
    Unregister {
        #[arg(short = 't', long = "model-type", default_value = "LLM")]
        model_type: String,
        #[arg(short = 'n', long = "model-name")]
        model_name: String,
    },
    /// List the models of one type (built-in and custom).
    Registrations {
        #[arg(short = 't', long = "model-type", default_value = "LLM")]
        model_type: String,
    },
    /// Chat with an LLM: one message with --message, else an interactive session (empty line
    /// or Ctrl-D ends it). Answers stream as they are generated.
    Chat(commands::ChatArgs),
    /// Complete a prompt with an LLM (streamed).
    Generate(commands::GenerateArgs),
    /// Embed texts; prints each vector's size and first values (--json: the whole answer).
    Embed {
        #[arg(short = 'u', long = "model-uid")]
        model_uid: String,
        /// The texts to embed.
        #[arg(required = true)]
        inputs: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Rank documents against a query.
    Rerank {
        #[arg(short = 'u', long = "model-uid")]
        model_uid: String,
        #[arg(short = 'q', long)]
        query: String,
        /// The documents.
        #[arg(required = true)]
        documents: Vec<String>,
        #[arg(long = "top-n")]
        top_n: Option<usize>,
    },
    /// Show the engines and formats a model can launch with.
    Engine {
        #[arg(short = 'n', long = "model-name")]
        model_name: String,
    },
    /// Stop the whole cluster (admin).
    StopCluster,
    /// Print an argon2id hash of a password for the auth config file (reads standard input
    /// when --password is not given).
    HashPassword {
        #[arg(long)]
        password: Option<String>,
    },
}

/// Upstream spells some short flags with two letters (`-ak`, `-en`); clap's short flags are
/// one letter, so those are rewritten to their long forms first. The endpoint and api key may
/// come anywhere (even after `launch`'s free-form engine options), so they move to the front.
fn upstream_aliases(args: impl Iterator<Item = String>) -> Vec<String> {
    let args: Vec<String> = args
        .map(|a| match a.as_str() {
            "-ak" => "--api-key".to_string(),
            "-en" => "--model-engine".to_string(),
            _ => a,
        })
        .collect();
    let mut global = Vec::new();
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    rest.extend(it.next()); // the program name
    while let Some(arg) = it.next() {
        if matches!(arg.as_str(), "-e" | "--endpoint" | "--api-key") {
            global.push(arg);
            global.extend(it.next());
        } else if arg.starts_with("--endpoint=") || arg.starts_with("--api-key=") {
            global.push(arg);
        } else {
            rest.push(arg);
        }
    }
    rest.splice(1..1, global);
    rest
}

/// Runs the CLI with the process arguments. `hash_password` serves `hash-password` (the
/// binary passes the one implementation, which lives with the launchers on top of `xi-auth`:
/// this library does not depend on it).
pub fn main(hash_password: impl FnOnce(Option<String>) -> ExitCode) -> ExitCode {
    let cli = Cli::parse_from(upstream_aliases(std::env::args()));
    if let Command::HashPassword { password } = cli.command {
        return hash_password(password);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xinference: error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xinference: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let home = token_store::home();
    match &cli.command {
        Command::Login {
            sso: true,
            provider,
            no_browser,
            ..
        } => {
            let options = sso::Options::terminal(!no_browser);
            return sso::login(&cli.endpoint, &home?, provider.as_deref(), options).await;
        }
        Command::Login {
            username, password, ..
        } => {
            // clap requires --username without --sso.
            let username = username.as_deref().unwrap_or_default();
            return commands::login(&cli.endpoint, &home?, username, password.clone()).await;
        }
        Command::Logout => return commands::logout(&cli.endpoint, &home?).await,
        _ => {}
    }
    let session = match &cli.api_key {
        Some(key) => Session::with_key(&cli.endpoint, key.clone()),
        None => Session::stored(&cli.endpoint, home?),
    };
    let result = match cli.command {
        // Passwords are read and bodies built once, before the first try.
        Command::User { command } => {
            let action = UserAction::read(command)?;
            session
                .run(|client| {
                    let action = action.clone();
                    async move { identity::run_user(&client, action).await }
                })
                .await
        }
        Command::Key { command } => {
            let action = KeyAction::build(command)?;
            session
                .run(|client| {
                    let action = action.clone();
                    async move { identity::run_key(&client, action).await }
                })
                .await
        }
        command => {
            session
                .run(|client| {
                    let command = command.clone();
                    async move { commands::dispatch(&client, command).await }
                })
                .await
        }
    };
    explain_refusal(result, &session, &cli.endpoint)
}

/// Explains a 401 in terms of what the user can do about it.
fn explain_refusal(
    result: Result<(), ClientError>,
    session: &Session,
    endpoint: &str,
) -> Result<(), ClientError> {
    match result {
        Err(e) if e.is_unauthorized() && !session.has_token() => Err(ClientError::NotLoggedIn {
            endpoint: endpoint.to_string(),
        }),
        Err(ClientError::Server { status: 401, detail }) if session.uses_stored_login() => {
            Err(ClientError::Server {
                status: 401,
                detail: format!(
                    "{detail}; the stored login for {endpoint} was refused (expired?): run `xinference login` again"
                ),
            })
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn login_takes_a_username_or_sso_not_both() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let cli = parse(&[
            "xinference",
            "login",
            "--sso",
            "--provider",
            "idp",
            "--no-browser",
        ])
        .unwrap();
        match cli.command {
            Command::Login {
                sso,
                provider,
                no_browser,
                username,
                ..
            } => {
                assert!(sso && no_browser);
                assert_eq!(provider.as_deref(), Some("idp"));
                assert_eq!(username, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["xinference", "login", "--username", "u"]).is_ok());
        assert!(parse(&["xinference", "login"]).is_err());
        assert!(parse(&["xinference", "login", "--sso", "--username", "u"]).is_err());
        assert!(parse(&["xinference", "login", "--username", "u", "--provider", "p"]).is_err());
        assert!(parse(&["xinference", "login", "--provider", "p"]).is_err());
        assert!(parse(&["xinference", "login", "--no-browser"]).is_err());
    }

    #[test]
    fn upstream_two_letter_flags_parse() {
        let args = [
            "xinference",
            "launch",
            "-n",
            "m",
            "-en",
            "candle",
            "-ak",
            "sk-1",
        ];
        let cli = Cli::parse_from(upstream_aliases(args.iter().map(|s| s.to_string())));
        assert_eq!(cli.api_key.as_deref(), Some("sk-1"));
        match cli.command {
            Command::Launch(l) => assert_eq!(l.model_engine.as_deref(), Some("candle")),
            other => panic!("{other:?}"),
        }
    }
}
