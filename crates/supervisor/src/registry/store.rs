//! Registration files under `$XINFERENCE_HOME/model/v2/<type>/<name>.json`, written atomically.
//!
//! A write goes to a hidden temp file in the same folder, is flushed to disk, then renamed over
//! the target, and the folder is synced: a crash at any point leaves either the old file or the
//! new one, never a torn one. Leftover temp files are removed at load.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use xi_api::models::ModelType;

pub struct Store {
    root: PathBuf,
}

/// One file found at load.
pub struct StoredFile {
    pub model_type: ModelType,
    pub path: PathBuf,
    pub text: String,
}

impl Store {
    pub fn new(home: &Path) -> Self {
        Self {
            root: home.join("model").join("v2"),
        }
    }

    fn dir(&self, model_type: ModelType) -> PathBuf {
        self.root.join(model_type.dir_name())
    }

    pub fn path(&self, model_type: ModelType, name: &str) -> PathBuf {
        self.dir(model_type).join(format!("{name}.json"))
    }

    pub fn write(&self, model_type: ModelType, name: &str, bytes: &[u8]) -> io::Result<()> {
        let dir = self.dir(model_type);
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(
            ".{name}.json.tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let result =
            write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, self.path(model_type, name)));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        sync_dir(&dir)
    }

    pub fn remove(&self, model_type: ModelType, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(model_type, name)) {
            Ok(()) => sync_dir(&self.dir(model_type)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every readable `*.json` file of every type; temp files left by a crash are deleted. Model
    /// names start with a letter or a digit, so a hidden `.<name>.json.tmp-*` file is always
    /// one of ours.
    pub fn load_all(&self) -> io::Result<Vec<StoredFile>> {
        let mut files = Vec::new();
        for model_type in ModelType::ALL {
            let dir = self.dir(model_type);
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if name.starts_with('.') && name.contains(".json.tmp-") {
                    tracing::warn!(file = %path.display(), "removing an unfinished registration write");
                    let _ = fs::remove_file(&path);
                    continue;
                }
                if !name.ends_with(".json") {
                    continue;
                }
                // One unreadable file (not UTF-8, a permission problem) is skipped, never a
                // reason to refuse to start.
                let text = match fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable stored registration");
                        continue;
                    }
                };
                files.push(StoredFile {
                    model_type,
                    path,
                    text,
                });
            }
        }
        Ok(files)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
