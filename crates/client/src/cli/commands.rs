//! What each command does.

use std::io::{BufRead, Write};

use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::table;
use super::Command;
use crate::client::Client;
use crate::error::ClientError;
use crate::token_store;
use xi_api::models::LaunchModelRequest;

#[derive(Args, Debug)]
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

#[derive(Args, Debug)]
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

#[derive(Args, Debug)]
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

pub async fn login(endpoint: &str, username: &str, password: &str) -> Result<(), ClientError> {
    let client = Client::new(endpoint, None);
    if !client.auth_enabled().await? {
        println!("{endpoint} has auth off: no login needed, nothing stored");
        return Ok(());
    }
    let token = client.login(username, password).await?;
    let path = token_store::save(&token_store::home()?, endpoint, &token)?;
    println!(
        "logged in to {endpoint} as {username} (token stored in {})",
        path.display()
    );
    Ok(())
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
        // Served before a client exists (`cli::main`, `cli::run`).
        Command::Login { .. } | Command::HashPassword { .. } => Ok(()),
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
    let mut request: LaunchModelRequest = serde_json::from_value(Value::Object(std::mem::take(
        &mut body,
    )))
    .map_err(|e| {
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

    #[test]
    fn a_badly_typed_launch_option_is_refused_before_sending() {
        let err = launch_request(launch_args(&["--n-worker", "many"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--n-worker"), "{text}");
    }
}
