//! Model files from a hub with Hugging Face's URL layout (`HF_ENDPOINT`, default
//! https://huggingface.co): `GET /api/models/{repo}/revision/{rev}` lists a repository,
//! `GET /{repo}/resolve/{rev}/{file}` serves a file.
//!
//! Each file is written to `<file>.incomplete` and renamed into place only when it is whole and
//! its checksum matches (the hub's `X-Linked-Etag` / `ETag` sha256 for large files), so a file
//! in the cache is always complete and a second launch downloads nothing. An interrupted
//! download resumes with a `Range` request; failures are retried
//! (`XINFERENCE_DOWNLOAD_MAX_ATTEMPTS`, default 3).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use xi_api::names;
use xi_api::worker::{HubDownload, WorkerError, WorkerErrorKind};

/// Written into a downloaded model folder once all its files are in.
const COMPLETE_MARKER: &str = ".xinference-complete";

/// Files of a Hugging Face model folder that loading needs (weights only as safetensors).
fn wanted(name: &str) -> bool {
    const FILES: [&str; 9] = [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "model.safetensors.index.json",
    ];
    match name.split_once('/') {
        None => FILES.contains(&name) || name.ends_with(".safetensors"),
        // sentence-transformers' pooling settings, e.g. 1_Pooling/config.json.
        Some((dir, file)) => dir.ends_with("_Pooling") && file == "config.json",
    }
}

struct Hub {
    http: reqwest::blocking::Client,
    endpoint: String,
    token: Option<String>,
    attempts: u32,
}

fn unavailable(message: String) -> WorkerError {
    WorkerError::new(WorkerErrorKind::Unavailable, message)
}

fn invalid(message: String) -> WorkerError {
    WorkerError::new(WorkerErrorKind::InvalidModel, message)
}

/// Why a request failed, and whether trying again may help.
enum Failure {
    Retry(String),
    /// The partial file cannot be continued (HTTP 416): start the file over.
    Restart(String),
    Final(WorkerError),
}

impl Hub {
    fn from_env() -> Result<Hub, WorkerError> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .unwrap_or_else(|_| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        let token = std::env::var("HF_TOKEN")
            .or_else(|_| std::env::var("HUGGING_FACE_HUB_TOKEN"))
            .ok()
            .filter(|t| !t.is_empty());
        let attempts = std::env::var("XINFERENCE_DOWNLOAD_MAX_ATTEMPTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3u32)
            .max(1);
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(None)
            .build()
            .map_err(|e| unavailable(format!("cannot start an HTTP client: {e}")))?;
        Ok(Hub {
            http,
            endpoint,
            token,
            attempts,
        })
    }

    fn get(&self, url: &str, offset: u64) -> Result<reqwest::blocking::Response, Failure> {
        let mut request = self.http.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if offset > 0 {
            request = request.header("Range", format!("bytes={offset}-"));
        }
        let response = request
            .send()
            .map_err(|e| Failure::Retry(format!("cannot reach {url}: {}", root_cause(&e))))?;
        let status = response.status().as_u16();
        match status {
            200 | 206 => Ok(response),
            401 | 403 => Err(Failure::Final(invalid(format!(
                "{url}: access denied (HTTP {status}); set HF_TOKEN for gated or private models"
            )))),
            404 => Err(Failure::Final(invalid(format!(
                "{url} was not found on the hub (HTTP 404): check the model id, revision and quantization"
            )))),
            416 => Err(Failure::Restart(format!(
                "{url}: the partial download does not fit the file (HTTP 416)"
            ))),
            _ => Err(Failure::Retry(format!("{url}: HTTP {status}"))),
        }
    }

    /// Retries `op` on transient failures.
    fn retry<T>(&self, mut op: impl FnMut() -> Result<T, Failure>) -> Result<T, WorkerError> {
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            match op() {
                Ok(v) => return Ok(v),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(reason) | Failure::Restart(reason)) => {
                    tracing::warn!(attempt, attempts = self.attempts, %reason, "download attempt failed");
                    last = reason;
                    if attempt < self.attempts {
                        std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                    }
                }
            }
        }
        Err(unavailable(format!(
            "download failed after {} attempts: {last}",
            self.attempts
        )))
    }

    /// The files of a model folder in the repository.
    fn list(&self, d: &HubDownload) -> Result<Vec<String>, WorkerError> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint, d.repo, d.revision
        );
        let body: Value = self.retry(|| {
            let response = self.get(&url, 0)?;
            response
                .json()
                .map_err(|e| Failure::Retry(format!("{url}: not a JSON listing: {e}")))
        })?;
        let files: Vec<String> = body["siblings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["rfilename"].as_str())
            .filter(|n| names::is_safe_relative_path(n) && wanted(n))
            .map(str::to_string)
            .collect();
        if !files.iter().any(|f| f.ends_with(".safetensors")) {
            return Err(invalid(format!(
                "{} has no safetensors weights (only safetensors are loaded)",
                d.repo
            )));
        }
        Ok(files)
    }

    /// Downloads one file to `dest` (resuming `dest.incomplete`), checking size and checksum.
    fn file(
        &self,
        d: &HubDownload,
        name: &str,
        dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
        stop: &AtomicBool,
    ) -> Result<(), WorkerError> {
        let url = format!("{}/{}/resolve/{}/{name}", self.endpoint, d.repo, d.revision);
        let partial = PathBuf::from(format!("{}.incomplete", dest.display()));
        self.retry(|| {
            let offset = std::fs::metadata(&partial).map_or(0, |m| m.len());
            let mut response = match self.get(&url, offset) {
                Err(Failure::Restart(reason)) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(Failure::Retry(reason));
                }
                other => other?,
            };
            let resumed = response.status().as_u16() == 206;
            let start = if resumed { offset } else { 0 };
            let expected_sha = header(&response, "x-linked-etag")
                .or_else(|| header(&response, "etag"))
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_ascii_lowercase())
                .filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()));
            let total = response.content_length().map(|n| n + start);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(resumed)
                .truncate(!resumed)
                .open(&partial)
                .map_err(|e| Failure::Final(disk_error(&partial, &e)))?;
            let mut done = start;
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                if stop.load(Ordering::SeqCst) {
                    return Err(Failure::Final(WorkerError::new(
                        WorkerErrorKind::Cancelled,
                        "Launch cancelled",
                    )));
                }
                let n = response
                    .read(&mut buffer)
                    .map_err(|e| Failure::Retry(format!("{url}: the download broke off: {e}")))?;
                if n == 0 {
                    break;
                }
                file.write_all(&buffer[..n])
                    .map_err(|e| Failure::Final(disk_error(&partial, &e)))?;
                done += n as u64;
                progress(done, total.unwrap_or(done));
            }
            file.sync_all()
                .map_err(|e| Failure::Final(disk_error(&partial, &e)))?;
            if let Some(total) = total {
                if done < total {
                    return Err(Failure::Retry(format!(
                        "{url}: the download broke off at {done} of {total} bytes"
                    )));
                }
            }
            if let Some(expected) = &expected_sha {
                let got = sha256_file(&partial).map_err(|e| Failure::Final(disk_error(&partial, &e)))?;
                if &got != expected {
                    let _ = std::fs::remove_file(&partial);
                    return Err(Failure::Retry(format!(
                        "{url}: the downloaded file is corrupted (sha256 {got}, the hub says {expected})"
                    )));
                }
            }
            std::fs::rename(&partial, dest).map_err(|e| Failure::Final(disk_error(dest, &e)))?;
            Ok(())
        })
    }
}

fn header(response: &reqwest::blocking::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn disk_error(path: &Path, e: &std::io::Error) -> WorkerError {
    unavailable(format!("cannot write {}: {e}", path.display()))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// Refuses a download whose names would leave the cache: the cache folder must be one safe
/// name, the one file a safe relative path, the repository and revision safe for a URL path.
/// The supervisor checks registrations already; this holds for any caller.
fn check_download(d: &HubDownload, dir: &Path) -> Result<(), WorkerError> {
    if !names::is_safe_component(&d.cache_name)
        || dir.file_name().and_then(|n| n.to_str()) != Some(d.cache_name.as_str())
    {
        return Err(invalid(format!(
            "the cache folder name {:?} is not a plain file name",
            d.cache_name
        )));
    }
    if let Some(file) = &d.file {
        if !names::is_safe_relative_path(file) {
            return Err(invalid(format!(
                "the model file name {file:?} must be a relative path of letters, digits, '.', '_', '-' and '/' without '.' or '..' parts"
            )));
        }
    }
    if !names::is_hub_repo_id(&d.repo) {
        return Err(invalid(format!(
            "the hub repository id {:?} must be `owner/name`",
            d.repo
        )));
    }
    if !names::is_hub_revision(&d.revision) {
        return Err(invalid(format!(
            "the hub revision {:?} is not a branch, tag or commit name",
            d.revision
        )));
    }
    Ok(())
}

/// Where the hub file `name` goes under `root` (the canonical cache folder), with its parent
/// folders created; refused when the result, symlinks resolved, is not under `root`.
fn inside(root: &Path, name: &str) -> Result<PathBuf, WorkerError> {
    if !names::is_safe_relative_path(name) {
        return Err(invalid(format!(
            "the hub file name {name:?} is not a safe relative path"
        )));
    }
    let dest = root.join(name);
    let parent = dest.parent().unwrap_or(root);
    std::fs::create_dir_all(parent).map_err(|e| disk_error(parent, &e))?;
    let real_parent = parent.canonicalize().map_err(|e| disk_error(parent, &e))?;
    let escapes = !real_parent.starts_with(root)
        || std::fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink());
    if escapes {
        return Err(invalid(format!(
            "the hub file {name:?} would be written outside the model's cache folder"
        )));
    }
    Ok(dest)
}

/// Makes sure the files of `d` are in `dir`; returns the path to load (the folder, or the
/// GGUF file). `progress` sees 0..1 over the files still to fetch.
pub fn fetch(
    d: &HubDownload,
    dir: &Path,
    progress: &mut dyn FnMut(f32),
    stop: &AtomicBool,
) -> Result<PathBuf, WorkerError> {
    check_download(d, dir)?;
    let hub = Hub::from_env()?;
    std::fs::create_dir_all(dir).map_err(|e| disk_error(dir, &e))?;
    // Symlinks are followed from here on: the real folder is what files must stay under.
    let root = dir.canonicalize().map_err(|e| disk_error(dir, &e))?;
    // A folder download leaves a marker once every file is in, so later launches (offline too)
    // need no listing.
    let marker = dir.join(COMPLETE_MARKER);
    let files = match &d.file {
        Some(file) => vec![file.clone()],
        None if marker.is_file() => Vec::new(),
        None => hub.list(d)?,
    };
    let missing: Vec<&String> = files.iter().filter(|f| !dir.join(f).is_file()).collect();
    if missing.is_empty() {
        tracing::info!(repo = %d.repo, dir = %dir.display(), "model files already in the cache");
    }
    for (i, name) in missing.iter().enumerate() {
        let dest = inside(&root, name)?;
        tracing::info!(repo = %d.repo, file = %name, "downloading");
        // A bar on a terminal; otherwise a log line every 10%.
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(name.to_string());
            bar
        });
        let mut last_tenth = 0u64;
        let share = 1.0 / missing.len() as f32;
        let result = hub.file(
            d,
            name,
            &dest,
            &mut |done, total| {
                let fraction = if total == 0 { 1.0 } else { done as f64 / total as f64 };
                progress((i as f32 + fraction as f32) * share);
                if let Some(bar) = &bar {
                    bar.set_length(total);
                    bar.set_position(done);
                    return;
                }
                let tenth = (fraction * 10.0) as u64;
                if tenth > last_tenth {
                    last_tenth = tenth;
                    tracing::info!(file = %name, "{:>3}% of {:.1} MiB", tenth * 10, total as f64 / 1048576.0);
                }
            },
            stop,
        );
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        result?;
    }
    if d.file.is_none() && !marker.is_file() {
        std::fs::write(&marker, files.join("\n")).map_err(|e| disk_error(&marker, &e))?;
    }
    progress(1.0);
    Ok(match &d.file {
        Some(file) => dir.join(file),
        None => dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn download(file: Option<&str>, cache_name: &str) -> HubDownload {
        HubDownload {
            repo: "owner/model".into(),
            revision: "main".into(),
            file: file.map(str::to_string),
            cache_name: cache_name.into(),
        }
    }

    /// Hostile names are refused before any folder or file is created, and before the hub is
    /// asked (the endpoint here is never contacted).
    #[test]
    fn names_that_leave_the_cache_are_refused_before_anything_is_written() {
        let home = tempfile::TempDir::new().unwrap();
        let cache = home.path().join("cache");
        let outside = home.path().join("outside");
        let absolute = outside.join("pwned.txt");
        let stop = AtomicBool::new(false);
        let cases = [
            download(Some(absolute.to_str().unwrap()), "m"),
            download(Some("../../outside/pwned.txt"), "m"),
            download(Some("a/../../../outside/pwned.txt"), "m"),
            download(Some("x.gguf"), ".."),
            download(Some("x.gguf"), "../outside"),
            HubDownload {
                repo: "../../x".into(),
                ..download(Some("x.gguf"), "m")
            },
        ];
        for d in cases {
            let dir = cache.join(&d.cache_name);
            let err = fetch(&d, &dir, &mut |_| {}, &stop).unwrap_err();
            assert_eq!(err.kind, WorkerErrorKind::InvalidModel, "{d:?}: {err:?}");
            assert!(!cache.exists() && !outside.exists(), "{d:?} created files");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_sub_folder_cannot_lead_a_file_out() {
        let home = tempfile::TempDir::new().unwrap();
        let root = home.path().join("cache");
        let outside = home.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("1_Pooling")).unwrap();
        let root = root.canonicalize().unwrap();
        assert!(inside(&root, "1_Pooling/config.json").is_err());
        assert!(inside(&root, "../x").is_err());
        assert_eq!(
            inside(&root, "sub/config.json").unwrap(),
            root.join("sub/config.json")
        );
    }
}
