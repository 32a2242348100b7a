//! What each command does.

use std::io::{BufRead, Write};
use std::path::Path;

use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::Command;
use super::{prompt, table};
use crate::client::Client;
use crate::error::ClientError;
use crate::token_store;
use xi_api::auth::TokenResponse;
use xi_api::models::LaunchModelRequest;

#[derive(Args, Debug, Clone)]
pub struct LaunchArgs {
    #[arg(short = 'n', long = "model-name")]
    pub model_name: String,
    #[arg(short = 't', long = "model-type", default_value = "LLM")]
    pub model_type: String,
    /// `candle` (upstream's `transformers` / `llama.cpp` / `sentence_transformers` also work).
    #[arg(long = "model-engine")]
    pub model_engine: Option<String>,
    #[arg(short = 'u', long = "model-uid")]
    pub model_uid: Option<String>,
    #[arg(short = 's', long = "size-in-billions")]
    pub size_in_billions: Option<String>,
    #[arg(short = 'f', long = "model-format")]
    pub model_format: Option<String>,
    #[arg(short = 'q', long)]
    pub quantization: Option<String>,
    #[arg(short = 'r', long, default_value_t = 1)]
    pub replica: u32,
    /// An absolute path to the model's files.
    #[arg(long = "model-path")]
    pub model_path: Option<String>,
    #[arg(long = "worker-ip")]
    pub worker_ip: Option<String>,
    /// Engine options as `--key value` pairs (values are JSON when they parse as JSON).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub extra: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    #[arg(short = 'u', long = "model-uid")]
    pub model_uid: String,
    /// One message; without it the chat is interactive.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// A system prompt.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long = "max-tokens")]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub temperature: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    #[arg(short = 'u', long = "model-uid")]
    pub model_uid: String,
    #[arg(short = 'p', long)]
    pub prompt: String,
    #[arg(long = "max-tokens")]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub temperature: Option<f64>,
}

/// `xinference login`: stores the access token (upstream's file) and, when the server gives
/// one, the refresh token beside it; a refresh token of an earlier login is removed otherwise.
pub async fn login(
    endpoint: &str,
    home: &Path,
    username: &str,
    password: Option<String>,
) -> Result<(), ClientError> {
    let client = Client::new(endpoint, None);
    if !client.auth_enabled().await? {
        println!("{endpoint} has auth off: no login needed, nothing stored");
        return Ok(());
    }
    let password = match password {
        Some(p) => p,
        None => prompt::password(&format!("Password for {username}"))?,
    };
    let reply = client.login_full(username, &password).await?;
    let stored = save_login(home, endpoint, &reply)?;
    println!("logged in to {endpoint} as {username} ({stored})");
    if reply.must_change_password {
        println!(
            "{username} must change the password first: run `xinference user passwd --username {username} --old-password`"
        );
    }
    Ok(())
}

/// Stores a login's tokens (password or single sign-on alike): the access token in upstream's
/// file, the refresh token beside it, or no refresh file when the server gave none (an earlier
/// login's would renew the wrong session). Returns where, for the message.
pub(super) fn save_login(
    home: &Path,
    endpoint: &str,
    reply: &TokenResponse,
) -> Result<String, ClientError> {
    let path = token_store::save(home, endpoint, &reply.access_token)?;
    match &reply.refresh_token {
        Some(refresh) => {
            token_store::save_refresh(home, endpoint, refresh)?;
        }
        None => {
            token_store::remove_refresh(home, endpoint)?;
        }
    }
    let renewal = if reply.refresh_token.is_some() {
        ", renewed automatically when it expires"
    } else {
        ""
    };
    Ok(format!("token stored in {}{renewal}", path.display()))
}

/// `xinference logout`: ends the server's session of the stored refresh token (a 401 means it
/// had already ended), then removes both token files, even when the server could not be
/// reached (that error is returned after).
pub async fn logout(endpoint: &str, home: &Path) -> Result<(), ClientError> {
    let mut failure = None;
    if let Some(refresh) = token_store::load_refresh(home, endpoint) {
        let client = Client::new(endpoint, token_store::load(home, endpoint));
        match client.logout(&refresh).await {
            Ok(()) => println!("ended the session on {endpoint}"),
            Err(e) if e.is_unauthorized() => {
                println!("the session on {endpoint} had already ended")
            }
            Err(e) => failure = Some(e),
        }
    }
    let removed = token_store::remove(home, endpoint)?;
    if removed.is_empty() {
        println!("no stored login for {endpoint}");
    }
    for path in removed {
        println!("removed {}", path.display());
    }
    match failure {
        Some(e) => Err(ClientError::Invalid(format!(
            "the server did not end the session (the stored tokens are removed anyway): {e}"
        ))),
        None => Ok(()),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `--key value` pairs (or `--key=value`, or a lone `--flag` = true) into JSON fields.
fn extra_options(extra: &[String]) -> Result<Map<String, Value>, ClientError> {
    let mut out = Map::new();
    let mut i = 0;
    while i < extra.len() {
        let Some(key) = extra[i].strip_prefix("--") else {
            return Err(ClientError::Invalid(format!(
                "unexpected argument {:?}: engine options are --key value pairs",
                extra[i]
            )));
        };
        let (key, value) = match key.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => match extra.get(i + 1).filter(|v| !v.starts_with("--")) {
                Some(v) => {
                    i += 1;
                    (key.to_string(), Some(v.clone()))
                }
                None => (key.to_string(), None),
            },
        };
        let value = match value {
            None => Value::Bool(true),
            Some(v) => serde_json::from_str(&v).unwrap_or(Value::String(v)),
        };
        out.insert(key.replace('-', "_"), value);
        i += 1;
    }
    Ok(out)
}

pub async fn dispatch(client: &Client, command: Command) -> Result<(), ClientError> {
    match command {
        Command::List => list(client).await,
        Command::Launch(args) => launch(client, args).await,
        Command::Terminate { model_uid } => {
            client.terminate(&model_uid).await?;
            println!("terminated {model_uid}");
            Ok(())
        }
        Command::Register {
            model_type,
            file,
            persist,
        } => {
            let model = std::fs::read_to_string(&file).map_err(|e| ClientError::File {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            let parsed: Value = serde_json::from_str(&model).map_err(|e| ClientError::File {
                path: file.display().to_string(),
                reason: format!("is not JSON: {e}"),
            })?;
            client.register(&model_type, &model, persist).await?;
            println!("registered {} {}", model_type, text(&parsed["model_name"]));
            Ok(())
        }
        Command::Unregister {
            model_type,
            model_name,
        } => {
            client.unregister(&model_type, &model_name).await?;
            println!("unregistered {model_type} {model_name}");
            Ok(())
        }
        Command::Registrations { model_type } => {
            let rows: Vec<Vec<String>> = client
                .registrations(&model_type)
                .await?
                .iter()
                .map(|r| {
                    let builtin = r["is_builtin"].as_bool().unwrap_or(false);
                    vec![
                        model_type.clone(),
                        text(&r["model_name"]),
                        if builtin { "built-in" } else { "custom" }.to_string(),
                    ]
                })
                .collect();
            println!("{}", table::render(&["Type", "Name", "Origin"], &rows));
            Ok(())
        }
        Command::Chat(args) => chat(client, args).await,
        Command::Generate(args) => {
            let body = json!({
                "model": args.model_uid, "prompt": args.prompt,
                "max_tokens": args.max_tokens, "temperature": args.temperature,
            });
            let mut events = Box::pin(client.stream("/v1/completions", &body).await?);
            let mut out = std::io::stdout();
            while let Some(event) = events.next().await {
                let event = event?;
                let _ = write!(
                    out,
                    "{}",
                    event["choices"][0]["text"].as_str().unwrap_or("")
                );
                let _ = out.flush();
            }
            println!();
            Ok(())
        }
        Command::Embed {
            model_uid,
            inputs,
            json,
        } => {
            let reply = client
                .post(
                    "/v1/embeddings",
                    &json!({ "model": model_uid, "input": inputs }),
                )
                .await?;
            if json {
                println!("{reply}");
                return Ok(());
            }
            for (input, item) in inputs
                .iter()
                .zip(reply["data"].as_array().into_iter().flatten())
            {
                let vector = item["embedding"].as_array().cloned().unwrap_or_default();
                let head: Vec<String> = vector
                    .iter()
                    .take(4)
                    .map(|v| format!("{:.4}", v.as_f64().unwrap_or(0.0)))
                    .collect();
                println!(
                    "{input:?}: {} dimensions [{}, ...]",
                    vector.len(),
                    head.join(", ")
                );
            }
            Ok(())
        }
        Command::Rerank {
            model_uid,
            query,
            documents,
            top_n,
        } => {
            let body = json!({
                "model": model_uid, "query": query, "documents": documents,
                "top_n": top_n, "return_documents": true,
            });
            let reply = client.post("/v1/rerank", &body).await?;
            let rows: Vec<Vec<String>> = reply["results"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(rank, r)| {
                    vec![
                        (rank + 1).to_string(),
                        format!("{:.4}", r["relevance_score"].as_f64().unwrap_or(0.0)),
                        text(&r["document"]["text"]),
                    ]
                })
                .collect();
            println!("{}", table::render(&["Rank", "Score", "Document"], &rows));
            Ok(())
        }
        Command::Engine { model_name } => {
            let reply = client.get(&format!("/v1/engines/{model_name}")).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&reply).unwrap_or_default()
            );
            Ok(())
        }
        Command::StopCluster => {
            client.delete("/v1/clusters").await?;
            println!("the cluster at {} is stopping", client.endpoint());
            Ok(())
        }
        // Served before a client exists, or with their own (`cli::main`, `cli::run`).
        Command::Login { .. }
        | Command::Logout
        | Command::User { .. }
        | Command::Key { .. }
        | Command::HashPassword { .. } => Ok(()),
    }
}

async fn list(client: &Client) -> Result<(), ClientError> {
    let rows: Vec<Vec<String>> = client
        .list_models()
        .await?
        .iter()
        .map(|m| {
            vec![
                text(&m["id"]),
                text(&m["model_type"]),
                text(&m["model_name"]),
                text(&m["model_format"]),
                text(&m["model_size_in_billions"]),
                text(&m["quantization"]),
                text(&m["replica"]),
            ]
        })
        .collect();
    let header = [
        "UID",
        "Type",
        "Name",
        "Format",
        "Size (B)",
        "Quantization",
        "Replicas",
    ];
    println!("{}", table::render(&header, &rows));
    Ok(())
}

/// The typed launch body: the flags fill its fields, the `--key value` engine options its
/// `extra` map (an option that is a field of the body, such as `--n-gpu`, lands in the field and
/// is type-checked here, naming the option, before anything is sent).
fn launch_request(args: LaunchArgs) -> Result<LaunchModelRequest, ClientError> {
    let mut body = extra_options(&args.extra)?;
    let options: Vec<String> = body.keys().cloned().collect();
    let mut request: LaunchModelRequest =
        serde_json::from_value(Value::Object(std::mem::take(&mut body))).map_err(|e| {
            ClientError::Invalid(format!(
                "engine options {}: {e}",
                options
                    .iter()
                    .map(|k| format!("--{}", k.replace('_', "-")))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        })?;
    request.model_name = Some(args.model_name);
    request.model_type = Some(args.model_type);
    request.replica = Some(i64::from(args.replica));
    let flags = [
        (&mut request.model_engine, args.model_engine),
        (&mut request.model_uid, args.model_uid),
        (&mut request.model_format, args.model_format),
        (&mut request.quantization, args.quantization),
        (&mut request.model_path, args.model_path),
        (&mut request.worker_ip, args.worker_ip),
    ];
    for (field, flag) in flags {
        if flag.is_some() {
            *field = flag;
        }
    }
    if let Some(size) = args.size_in_billions {
        request.model_size_in_billions = Some(Value::String(size));
    }
    Ok(request)
}

async fn launch(client: &Client, args: LaunchArgs) -> Result<(), ClientError> {
    let uid = client.launch(&launch_request(args)?).await?;
    println!("Model uid: {uid}");
    Ok(())
}

async fn chat(client: &Client, args: ChatArgs) -> Result<(), ClientError> {
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    let interactive = args.message.is_none();
    let mut pending = args.message.clone();
    let stdin = std::io::stdin();
    loop {
        let message = match pending.take() {
            Some(m) => m,
            None if interactive => {
                eprint!("> ");
                let mut line = String::new();
                if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    return Ok(());
                }
                line.trim_end().to_string()
            }
            None => return Ok(()),
        };
        messages.push(json!({ "role": "user", "content": message }));
        let body = json!({
            "model": args.model_uid, "messages": messages,
            "max_tokens": args.max_tokens, "temperature": args.temperature,
        });
        let mut events = Box::pin(client.stream("/v1/chat/completions", &body).await?);
        let mut answer = String::new();
        let mut out = std::io::stdout();
        while let Some(event) = events.next().await {
            let event = event?;
            if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
                answer.push_str(piece);
                let _ = write!(out, "{piece}");
                let _ = out.flush();
            }
        }
        println!();
        messages.push(json!({ "role": "assistant", "content": answer }));
        if !interactive {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_server::server;
    use super::*;

    #[test]
    fn engine_options_become_json_fields() {
        let args: Vec<String> = [
            "--requantize",
            "Q8_0",
            "--max-num-seqs",
            "4",
            "--flag",
            "--x=[1]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = extra_options(&args).unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"requantize": "Q8_0", "max_num_seqs": 4, "flag": true, "x": [1]})
        );
        assert!(extra_options(&["oops".to_string()]).is_err());
    }

    fn launch_args(extra: &[&str]) -> LaunchArgs {
        LaunchArgs {
            model_name: "qwen2.5-instruct".into(),
            model_type: "LLM".into(),
            model_engine: None,
            model_uid: Some("q".into()),
            size_in_billions: Some("0_5".into()),
            model_format: None,
            quantization: None,
            replica: 2,
            model_path: None,
            worker_ip: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn launch_flags_and_options_fill_the_typed_body() {
        let request =
            launch_request(launch_args(&["--n-gpu", "1", "--context-length", "4096"])).unwrap();
        assert_eq!(request.n_gpu, Some(json!(1)));
        assert_eq!(request.replica, Some(2));
        assert_eq!(request.extra.get("context_length"), Some(&json!(4096)));
        // What goes on the wire: the set fields and the options, nothing absent sent as null.
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "model_name": "qwen2.5-instruct", "model_type": "LLM", "model_uid": "q",
                "model_size_in_billions": "0_5", "replica": 2, "n_gpu": 1,
                "context_length": 4096,
            })
        );
        // `--n-gpu null` is an explicit CPU-only launch, kept as null.
        let cpu = launch_request(launch_args(&["--n-gpu", "null"])).unwrap();
        assert_eq!(serde_json::to_value(&cpu).unwrap()["n_gpu"], Value::Null);
        assert!(serde_json::to_value(&cpu)
            .unwrap()
            .as_object()
            .unwrap()
            .contains_key("n_gpu"));
    }

    #[tokio::test]
    async fn login_stores_both_tokens_and_logout_ends_the_session_and_removes_them() {
        let (endpoint, seen) = server(vec![
            (200, json!({"auth": true})),
            (
                200,
                json!({"access_token": "a1", "token_type": "bearer", "refresh_token": "r1"}),
            ),
            (200, json!({"ok": true})),
        ])
        .await;
        let home = tempfile::tempdir().unwrap();
        login(&endpoint, home.path(), "ann", Some("pw".into()))
            .await
            .unwrap();
        assert_eq!(
            token_store::load(home.path(), &endpoint).as_deref(),
            Some("a1")
        );
        assert_eq!(
            token_store::load_refresh(home.path(), &endpoint).as_deref(),
            Some("r1")
        );
        logout(&endpoint, home.path()).await.unwrap();
        assert_eq!(token_store::load(home.path(), &endpoint), None);
        assert_eq!(token_store::load_refresh(home.path(), &endpoint), None);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[2].line, "POST /v1/auth/logout HTTP/1.1");
        assert_eq!(seen[2].authorization.as_deref(), Some("Bearer a1"));
        assert_eq!(
            serde_json::from_str::<Value>(&seen[2].body).unwrap(),
            json!({"refresh_token": "r1"})
        );
    }

    #[tokio::test]
    async fn a_login_without_a_refresh_token_drops_an_old_one_and_logout_ignores_a_401() {
        let (endpoint, seen) = server(vec![
            (200, json!({"auth": true})),
            (200, json!({"access_token": "a2"})),
        ])
        .await;
        let home = tempfile::tempdir().unwrap();
        token_store::save_refresh(home.path(), &endpoint, "old").unwrap();
        login(&endpoint, home.path(), "ann", Some("pw".into()))
            .await
            .unwrap();
        assert_eq!(
            token_store::load(home.path(), &endpoint).as_deref(),
            Some("a2")
        );
        assert_eq!(token_store::load_refresh(home.path(), &endpoint), None);
        // No refresh token: logout asks the server nothing.
        logout(&endpoint, home.path()).await.unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(token_store::load(home.path(), &endpoint), None);

        let (endpoint, seen) = server(vec![(401, json!({"detail": "Invalid token"}))]).await;
        token_store::save(home.path(), &endpoint, "a3").unwrap();
        token_store::save_refresh(home.path(), &endpoint, "r3").unwrap();
        logout(&endpoint, home.path()).await.unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert!(token_store::remove(home.path(), &endpoint)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn logout_removes_the_tokens_even_when_the_server_fails() {
        let (endpoint, _) = server(vec![(500, json!({"detail": "boom"}))]).await;
        let home = tempfile::tempdir().unwrap();
        token_store::save(home.path(), &endpoint, "a").unwrap();
        token_store::save_refresh(home.path(), &endpoint, "r").unwrap();
        let err = logout(&endpoint, home.path()).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert!(token_store::remove(home.path(), &endpoint)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_badly_typed_launch_option_is_refused_before_sending() {
        let err = launch_request(launch_args(&["--n-worker", "many"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--n-worker"), "{text}");
    }
}
