//! The model registry: built-in families plus custom registrations, one for the whole cluster.

mod builtin;
mod store;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use serde_json::{Map, Value};
use xi_api::models::ModelType;

use crate::error::SupervisorError;
use store::Store;

/// A model family (built-in or custom), in the registration shape clients see.
#[derive(Debug, Clone)]
pub struct Family {
    pub model_type: ModelType,
    pub name: String,
    pub body: Map<String, Value>,
    pub builtin: bool,
}

impl Family {
    /// The flat specs of this family.
    pub fn specs(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.body
            .get("model_specs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
    }

    pub fn abilities(&self) -> Vec<&str> {
        self.body
            .get("model_ability")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    }
}

pub struct Registry {
    builtin: Vec<Family>,
    custom: RwLock<BTreeMap<(ModelType, String), Family>>,
    store: Store,
    /// Serialises register/unregister so the check-then-write of one cannot interleave with another.
    writes: Mutex<()>,
}

impl Registry {
    /// The built-in catalogue plus every stored registration under `home`. A stored file that no
    /// longer validates is skipped with a warning (and left on disk for the user to fix).
    pub fn load(home: &Path) -> Result<Registry, SupervisorError> {
        let builtin = builtin::load().map_err(SupervisorError::Startup)?;
        let store = Store::new(home);
        let files = store.load_all().map_err(|e| {
            SupervisorError::Startup(format!(
                "cannot read registrations under {}: {e}",
                home.display()
            ))
        })?;
        let mut custom = BTreeMap::new();
        for file in files {
            match validate::custom_definition(file.model_type, &file.text, &builtin, false) {
                Ok(body) => {
                    let name = body["model_name"].as_str().unwrap_or_default().to_string();
                    let family = Family {
                        model_type: file.model_type,
                        name: name.clone(),
                        body,
                        builtin: false,
                    };
                    custom.insert((file.model_type, name), family);
                }
                Err(e) => {
                    tracing::warn!(file = %file.path.display(), error = %e, "skipping an invalid stored registration");
                }
            }
        }
        tracing::info!(
            builtin = builtin.len(),
            custom = custom.len(),
            "model registry loaded"
        );
        Ok(Registry {
            builtin,
            custom: RwLock::new(custom),
            store,
            writes: Mutex::new(()),
        })
    }

    pub fn builtin(&self) -> &[Family] {
        &self.builtin
    }

    /// Every family of a type, sorted case-insensitively by name.
    pub fn list(&self, model_type: ModelType) -> Vec<Family> {
        let custom = self.custom.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Family> = self
            .builtin
            .iter()
            .filter(|f| f.model_type == model_type)
            .cloned()
            .chain(
                custom
                    .values()
                    .filter(|f| f.model_type == model_type)
                    .cloned(),
            )
            .collect();
        all.sort_by_key(|f| f.name.to_lowercase());
        all
    }

    pub fn get(&self, model_type: ModelType, name: &str) -> Option<Family> {
        if let Some(f) = self
            .builtin
            .iter()
            .find(|f| f.model_type == model_type && f.name == name)
        {
            return Some(f.clone());
        }
        let custom = self.custom.read().unwrap_or_else(|p| p.into_inner());
        custom.get(&(model_type, name.to_string())).cloned()
    }

    /// The first family with this name, LLM first (what `/v1/engines/{name}` means).
    pub fn find_any(&self, name: &str) -> Option<Family> {
        ModelType::ALL.into_iter().find_map(|t| self.get(t, name))
    }

    /// Validates and adds a custom model; with `persist` it is also written to disk. Blocking.
    pub fn register(
        &self,
        model_type: ModelType,
        text: &str,
        persist: bool,
    ) -> Result<String, SupervisorError> {
        let body = validate::custom_definition(model_type, text, &self.builtin, true)?;
        let name = body["model_name"].as_str().unwrap_or_default().to_string();
        let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if self.builtin.iter().any(|f| f.name == name) {
            return Err(SupervisorError::BadRequest(format!(
                "Model name conflicts with existing model {name}"
            )));
        }
        if self
            .custom
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&(model_type, name.clone()))
        {
            return Err(SupervisorError::BadRequest(format!(
                "Model {name} already registered"
            )));
        }
        if persist {
            let bytes = serde_json::to_vec_pretty(&body).map_err(SupervisorError::internal)?;
            self.store.write(model_type, &name, &bytes).map_err(|e| {
                SupervisorError::internal(format!("cannot save registration {name}: {e}"))
            })?;
        }
        let family = Family {
            model_type,
            name: name.clone(),
            body,
            builtin: false,
        };
        self.custom
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((model_type, name.clone()), family);
        Ok(name)
    }

    /// Removes a custom model and its file. Blocking.
    pub fn unregister(&self, model_type: ModelType, name: &str) -> Result<(), SupervisorError> {
        let _guard = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let key = (model_type, name.to_string());
        if !self
            .custom
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key)
        {
            if self
                .builtin
                .iter()
                .any(|f| f.model_type == model_type && f.name == name)
            {
                return Err(SupervisorError::BadRequest(format!(
                    "Model {name} is built in and cannot be unregistered"
                )));
            }
            return Err(SupervisorError::BadRequest(format!(
                "Model {name} not found"
            )));
        }
        self.store.remove(model_type, name).map_err(|e| {
            SupervisorError::internal(format!("cannot delete registration {name}: {e}"))
        })?;
        self.custom
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        Ok(())
    }
}
