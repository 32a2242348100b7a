//! [`Client`]'s routes of the identity store: sessions (`/v1/auth/*`), users
//! (`/v1/admin/users`) and api keys (`/v1/admin/keys`), all through the `xi_api::identity`
//! shapes. Writes answer `{"ok": true}`; they return `()` here.

use reqwest::Method;
use serde::Serialize;
use xi_api::auth::TokenResponse;
use xi_api::identity::{
    ChangePasswordRequest, CreateKeyRequest, CreateUserRequest, CreatedKey, CreatedUser, KeyInfo,
    MeResponse, Ok as OkReply, RefreshRequest, UpdateKeyRequest, UpdateUserRequest, UserInfo,
};

use crate::client::Client;
use crate::error::ClientError;

impl Client {
    /// `PUT path` with a JSON body, answered `{"ok": true}`.
    async fn put_ok(&self, path: &str, body: &impl Serialize) -> Result<(), ClientError> {
        let _: OkReply = self
            .typed(self.request(Method::PUT, path).json(body))
            .await?;
        Ok(())
    }

    /// `DELETE path`, answered `{"ok": true}`.
    async fn delete_ok(&self, path: &str) -> Result<(), ClientError> {
        let _: OkReply = self.typed(self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    /// `POST /v1/auth/refresh`: a new access token and a new refresh token (the one sent is
    /// spent; sending a spent one again makes the server revoke the whole session).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, ClientError> {
        let body = RefreshRequest {
            refresh_token: refresh_token.to_string(),
        };
        self.typed(self.post_json("/v1/auth/refresh", &body)).await
    }

    /// `POST /v1/auth/logout`: ends the session of `refresh_token` on the server.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ClientError> {
        let body = RefreshRequest {
            refresh_token: refresh_token.to_string(),
        };
        let _: OkReply = self.typed(self.post_json("/v1/auth/logout", &body)).await?;
        Ok(())
    }

    /// `GET /v1/auth/me`: who the credentials are, and what they may do.
    pub async fn me(&self) -> Result<MeResponse, ClientError> {
        self.typed(self.request(Method::GET, "/v1/auth/me")).await
    }

    /// `POST /v1/admin/users`.
    pub async fn create_user(&self, body: &CreateUserRequest) -> Result<CreatedUser, ClientError> {
        self.typed(self.post_json("/v1/admin/users", body)).await
    }

    /// `GET /v1/admin/users`: the store's users and the config file's (those with no id).
    pub async fn users(&self) -> Result<Vec<UserInfo>, ClientError> {
        self.typed(self.request(Method::GET, "/v1/admin/users"))
            .await
    }

    /// `GET /v1/admin/users/{id}`.
    pub async fn user(&self, id: i64) -> Result<UserInfo, ClientError> {
        self.typed(self.request(Method::GET, &format!("/v1/admin/users/{id}")))
            .await
    }

    /// `PUT /v1/admin/users/{id}`: the fields set in `body` change.
    pub async fn update_user(&self, id: i64, body: &UpdateUserRequest) -> Result<(), ClientError> {
        self.put_ok(&format!("/v1/admin/users/{id}"), body).await
    }

    /// `DELETE /v1/admin/users/{id}`.
    pub async fn delete_user(&self, id: i64) -> Result<(), ClientError> {
        self.delete_ok(&format!("/v1/admin/users/{id}")).await
    }

    /// `PUT /v1/admin/users/{id}/password` (`old_password` is needed to change one's own
    /// password without `users:manage`).
    pub async fn change_password(
        &self,
        id: i64,
        body: &ChangePasswordRequest,
    ) -> Result<(), ClientError> {
        self.put_ok(&format!("/v1/admin/users/{id}/password"), body)
            .await
    }

    /// `POST /v1/admin/keys`: the answer is the only time the key itself is shown.
    pub async fn create_key(&self, body: &CreateKeyRequest) -> Result<CreatedKey, ClientError> {
        self.typed(self.post_json("/v1/admin/keys", body)).await
    }

    /// `GET /v1/admin/keys`: the keys the credentials may see (one's own, or all with
    /// `keys:manage`).
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        self.typed(self.request(Method::GET, "/v1/admin/keys"))
            .await
    }

    /// `GET /v1/admin/keys/{id}`.
    pub async fn key(&self, id: i64) -> Result<KeyInfo, ClientError> {
        self.typed(self.request(Method::GET, &format!("/v1/admin/keys/{id}")))
            .await
    }

    /// `PUT /v1/admin/keys/{id}`: the fields set in `body` change.
    pub async fn update_key(&self, id: i64, body: &UpdateKeyRequest) -> Result<(), ClientError> {
        self.put_ok(&format!("/v1/admin/keys/{id}"), body).await
    }

    /// `DELETE /v1/admin/keys/{id}`: revokes the key.
    pub async fn delete_key(&self, id: i64) -> Result<(), ClientError> {
        self.delete_ok(&format!("/v1/admin/keys/{id}")).await
    }
}
