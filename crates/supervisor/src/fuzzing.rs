//! Entry points for the `request_body` fuzz target (`fuzz/`, built with the `fuzzing` feature
//! only): each request body the REST API parses, through the very functions its handler calls,
//! up to the point where the handler would call a worker or the identity store.

use std::path::Path;

use actix_web::ResponseError;
use serde::de::DeserializeOwned;
use serde_json::Value;
use xi_api::identity::{
    ChangePasswordRequest, CreateKeyRequest, CreateUserRequest, KeyModelPermissions,
    RefreshRequest, UpdateKeyRequest, UpdateUserRequest, UserPermissions,
};
use xi_api::models::{LaunchModelRequest, ModelType};
use xi_api::sso::{DeviceLoginRequest, SsoExchange};

use crate::error::SupervisorError;
use crate::lifecycle::{plan_launch, ModelTable};
use crate::registry::Registry;
use crate::routes::{auth, generation, inference};

/// The bodies the target can send, one per route (the input's first byte picks one).
pub const ROUTES: &[&str] = &[
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/embeddings",
    "POST /v1/rerank",
    "POST /v1/models",
    "POST /v1/model_registrations/LLM",
    "POST /v1/model_registrations/embedding",
    "POST /token (JSON)",
    "POST /token (form)",
    "POST /v1/admin/users",
    "PUT /v1/admin/users/{id}",
    "PUT /v1/admin/users/{id}/password",
    "PUT /v1/admin/users/{id}/permissions",
    "POST /v1/admin/keys",
    "PUT /v1/admin/keys/{id}",
    "PUT /v1/admin/keys/{id}/permissions",
    "POST /v1/auth/refresh",
    "POST /v1/auth/sso/exchange",
    "POST /v1/auth/sso/device",
];

/// What the routes parse against: the built-in catalogue and an empty model table.
pub struct Bodies {
    registry: Registry,
    running: ModelTable,
}

impl Bodies {
    /// The registry of `home` (an empty folder: the built-in catalogue only).
    pub fn new(home: &Path) -> Result<Bodies, SupervisorError> {
        Ok(Bodies {
            registry: Registry::load(home)?,
            running: ModelTable::default(),
        })
    }

    /// Parses `body` as route `ROUTES[route % ROUTES.len()]` does. `Err` is the status and
    /// detail the route would answer.
    pub fn parse(&self, route: u8, body: &[u8]) -> Result<(), (u16, String)> {
        self.route(route, body)
            .map_err(|e| (e.status_code().as_u16(), e.client_detail()))
    }

    fn route(&self, route: u8, body: &[u8]) -> Result<(), SupervisorError> {
        let index = usize::from(route) % ROUTES.len();
        match index {
            7 => return auth::parse_login("application/json", body).map(|_| ()),
            8 => {
                let form = "application/x-www-form-urlencoded";
                return auth::parse_login(form, body).map(|_| ());
            }
            _ => {}
        }
        // actix's `Json` extractor: a body that is not JSON is a 400 before any handler runs.
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| SupervisorError::BadRequest(format!("Json deserialize error: {e}")))?;
        match index {
            0 => generation::chat_request(value).map(|_| ()),
            1 => generation::completion_request(value).map(|_| ()),
            2 => inference::embeddings_request(value).map(|_| ()),
            3 => inference::rerank_request(value).map(|_| ()),
            4 => {
                let request: LaunchModelRequest = typed(value)?;
                plan_launch(request, &self.registry, &self.running).map(|_| ())
            }
            5 | 6 => {
                let model_type = if index == 5 {
                    ModelType::Llm
                } else {
                    ModelType::Embedding
                };
                let text = value.to_string();
                let builtin = self.registry.builtin();
                crate::registry::validate::custom_definition(model_type, &text, builtin, true)
                    .map(|_| ())
            }
            9 => typed::<CreateUserRequest>(value).map(|_| ()),
            10 => typed::<UpdateUserRequest>(value).map(|_| ()),
            11 => typed::<ChangePasswordRequest>(value).map(|_| ()),
            12 => typed::<UserPermissions>(value).map(|_| ()),
            13 => typed::<CreateKeyRequest>(value).map(|_| ()),
            14 => typed::<UpdateKeyRequest>(value).map(|_| ()),
            15 => typed::<KeyModelPermissions>(value).map(|_| ()),
            16 => typed::<RefreshRequest>(value).map(|_| ()),
            17 => typed::<SsoExchange>(value).map(|_| ()),
            _ => typed::<DeviceLoginRequest>(value).map(|_| ()),
        }
    }
}

/// A typed body as actix's `Json<T>` extracts it.
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, SupervisorError> {
    serde_json::from_value(value).map_err(|e| SupervisorError::Unprocessable(e.to_string()))
}
