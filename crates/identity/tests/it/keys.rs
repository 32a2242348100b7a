//! Api keys: issued once, stored hashed, scoped, and stopped by whatever should stop them.

use sha2::{Digest, Sha256};
use sqlx::{Column, Row};
use xi_api::identity::{
    CreateKeyRequest, Expiry, ModelPermission, UpdateKeyRequest, UpdateUserRequest,
};
use xi_auth::{AuthError, Credential};
use xi_identity::{Identity, IdentityError};

use crate::support::{assert_err, bearer, perms, root, strings, Env, ADDR, T0};

on_both!(
    a_key_is_shown_once_and_stored_as_its_hash,
    a_key_authenticates_within_its_scope,
    a_keys_permissions_stay_within_its_owners,
    other_users_keys_are_out_of_reach,
    disabled_and_expired_keys_are_refused,
    a_revoked_key_stops_on_the_next_request,
    a_keys_owner_decides_its_fate,
);

async fn auth(identity: &Identity, key: &str) -> Result<xi_auth::Principal, IdentityError> {
    identity
        .authenticate(Some(&bearer(key)))
        .await
        .map(|p| (*p).clone())
}

fn own_key() -> CreateKeyRequest {
    CreateKeyRequest::default()
}

async fn a_key_is_shown_once_and_stored_as_its_hash(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user(
        "alice",
        "alice-pw-123",
        &["models:list", "models:read", "keys:create"],
    )
    .await;
    let (_, alice) = env.sign_in("alice", "alice-pw-123").await;
    let request = CreateKeyRequest {
        name: Some("ci".into()),
        description: Some("for the CI".into()),
        ..own_key()
    };
    let created = id.create_key(&alice, request, ADDR).await.unwrap();
    let key = created.key.clone();
    assert!(key.starts_with("xf-"), "{}", created.key_prefix);
    assert_eq!(key.len(), 3 + 48);
    assert!(key[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(key.starts_with(&created.key_prefix) && created.key_prefix.len() < 12);
    assert_eq!(created.prefix, created.key_prefix);
    assert!(
        !format!("{created:?}").contains(&key),
        "Debug hides the key"
    );
    let second = id.create_key(&alice, own_key(), ADDR).await.unwrap();
    assert_ne!(second.key, key);

    // Listings never show it again.
    let listed = id.keys(&alice, None).await.unwrap();
    assert_eq!(listed.len(), 2);
    let shown = serde_json::to_string(&listed).unwrap();
    assert!(!shown.contains(&key) && !shown.contains(&second.key));
    let info = id.key(&alice, created.id).await.unwrap();
    assert_eq!(info.name.as_deref(), Some("ci"));
    assert_eq!(info.key_prefix, created.key_prefix);

    // The table holds its SHA-256 and nothing that contains the key.
    let rows = sqlx::query("SELECT * FROM api_keys ORDER BY id")
        .fetch_all(id.store().pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let mut hashes = Vec::new();
    for row in &rows {
        for column in row.columns() {
            let i = column.ordinal();
            let text = match row.try_get::<Option<String>, _>(i) {
                Ok(v) => v.unwrap_or_default(),
                Err(_) => row
                    .try_get::<Option<i64>, _>(i)
                    .unwrap()
                    .unwrap_or_default()
                    .to_string(),
            };
            assert!(
                !text.contains(&key[3..]),
                "column {} holds the key",
                column.name()
            );
            assert!(
                !text.contains(&second.key[3..]),
                "column {} holds a key",
                column.name()
            );
        }
        hashes.push(row.try_get::<String, _>("key_hash").unwrap());
    }
    assert_eq!(hashes[0], hex::encode(Sha256::digest(key.as_bytes())));
    assert_eq!(
        hashes[1],
        hex::encode(Sha256::digest(second.key.as_bytes()))
    );
}

async fn a_key_authenticates_within_its_scope(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let uid = env
        .user(
            "alice",
            "alice-pw-123",
            &["models:list", "models:read", "models:start", "keys:create"],
        )
        .await;
    let (_, alice) = env.sign_in("alice", "alice-pw-123").await;
    let scoped = CreateKeyRequest {
        models: Some(strings(&["a"])),
        ..own_key()
    };
    let scoped = id.create_key(&alice, scoped, ADDR).await.unwrap();
    let principal = auth(id, &scoped.key).await.unwrap();
    assert_eq!(principal.credential, Credential::ApiKey);
    assert_eq!(principal.username, "alice");
    assert_eq!(principal.user_id, Some(uid));
    assert_eq!(principal.session, None);
    assert_eq!(
        principal.permissions,
        perms(&["models:list", "models:read"]),
        "default: model use"
    );
    let scope = principal.key.as_ref().expect("a key scope");
    assert_eq!(scope.id, scoped.id);
    assert_eq!(scope.prefix, scoped.key_prefix);
    assert_eq!(
        scope.models,
        vec![ModelPermission {
            permission_type: "model_id".into(),
            permission_value: Some("a".into()),
        }]
    );
    assert!(principal.may_use_model("a", "LLM"));
    assert!(!principal.may_use_model("b", "LLM"));
    // The second request is answered from the cache, the same.
    assert_eq!(auth(id, &scoped.key).await.unwrap(), principal);

    let by_type = CreateKeyRequest {
        model_permissions: Some(vec![ModelPermission {
            permission_type: "model_type".into(),
            permission_value: Some("embedding".into()),
        }]),
        permissions: Some(strings(&["models:list", "models:start"])),
        ..own_key()
    };
    let by_type = id.create_key(&alice, by_type, ADDR).await.unwrap();
    let p = auth(id, &by_type.key).await.unwrap();
    assert_eq!(p.permissions, perms(&["models:list", "models:start"]));
    assert!(p.may_use_model("x", "embedding") && !p.may_use_model("x", "LLM"));
    let all = id.create_key(&alice, own_key(), ADDR).await.unwrap();
    assert!(auth(id, &all.key)
        .await
        .unwrap()
        .may_use_model("anything", "LLM"));
    // A new model list applies on the next request, though the key was cached.
    let narrow = UpdateKeyRequest {
        model_permissions: Some(vec![ModelPermission {
            permission_type: "model_id".into(),
            permission_value: Some("c".into()),
        }]),
        ..UpdateKeyRequest::default()
    };
    id.update_key(&alice, all.id, narrow, ADDR).await.unwrap();
    let p = auth(id, &all.key).await.unwrap();
    assert!(p.may_use_model("c", "LLM") && !p.may_use_model("anything", "LLM"));

    // Unknown keys of the right shape are refused (and that answer is cached too).
    let unknown = format!("xf-{}", "A".repeat(48));
    for _ in 0..2 {
        assert_err!(
            auth(id, &unknown).await,
            IdentityError::Auth(AuthError::InvalidCredentials)
        );
    }
}

async fn a_keys_permissions_stay_within_its_owners(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let bob = env
        .user("bob", "bob-pw-12345", &["models:list", "models:read"])
        .await;
    let beyond = CreateKeyRequest {
        owner: Some(bob),
        permissions: Some(strings(&["models:list", "models:start"])),
        ..own_key()
    };
    assert_err!(
        id.create_key(&root(), beyond, ADDR).await,
        IdentityError::Forbidden(_)
    );
    assert!(id.keys(&root(), Some(bob)).await.unwrap().is_empty());
    let within = CreateKeyRequest {
        owner: Some(bob),
        permissions: Some(strings(&["models:list"])),
        ..own_key()
    };
    let key = id.create_key(&root(), within, ADDR).await.unwrap();
    assert_eq!(
        auth(id, &key.key).await.unwrap().permissions,
        perms(&["models:list"])
    );
    let widen = UpdateKeyRequest {
        permissions: Some(strings(&["models:stop"])),
        ..UpdateKeyRequest::default()
    };
    assert_err!(
        id.update_key(&root(), key.id, widen, ADDR).await,
        IdentityError::Forbidden(_)
    );
    assert_err!(
        id.create_key(
            &root(),
            CreateKeyRequest { owner: Some(bob), permissions: Some(strings(&["models:fly"])), ..own_key() },
            ADDR
        )
        .await,
        IdentityError::BadRequest(m) if m.contains("models:fly")
    );
    // A creator cannot grant what it lacks even when the owner holds it.
    env.user("kim", "kim-pw-12345", &["keys:manage", "models:list"])
        .await;
    let (_, kim) = env.sign_in("kim", "kim-pw-12345").await;
    let more = CreateKeyRequest {
        owner: Some(bob),
        permissions: Some(strings(&["models:read"])),
        ..own_key()
    };
    assert_err!(
        id.create_key(&kim, more, ADDR).await,
        IdentityError::Forbidden(m) if m.contains("models:read")
    );
    // The owner losing a permission cuts its keys at once.
    let cut = UpdateUserRequest {
        permissions: Some(strings(&["models:read"])),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), bob, cut, ADDR).await.unwrap();
    assert_eq!(auth(id, &key.key).await.unwrap().permissions, perms(&[]));
}

async fn other_users_keys_are_out_of_reach(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let alice = env
        .user("alice", "alice-pw-123", &["models:list", "keys:create"])
        .await;
    let bob = env
        .user("bob", "bob-pw-12345", &["models:list", "keys:create"])
        .await;
    let (_, a) = env.sign_in("alice", "alice-pw-123").await;
    let (_, b) = env.sign_in("bob", "bob-pw-12345").await;
    let for_bob = CreateKeyRequest {
        owner: Some(bob),
        ..own_key()
    };
    assert_err!(
        id.create_key(&a, for_bob, ADDR).await,
        IdentityError::Forbidden(m) if m.contains("keys:manage")
    );
    let mine = CreateKeyRequest {
        owner: Some(alice),
        ..own_key()
    };
    id.create_key(&a, mine, ADDR)
        .await
        .expect("naming oneself as owner is fine");
    let bobs = id.create_key(&b, own_key(), ADDR).await.unwrap();
    assert_err!(id.key(&a, bobs.id).await, IdentityError::NotFound(_));
    let disable = UpdateKeyRequest {
        enabled: Some(false),
        ..UpdateKeyRequest::default()
    };
    assert_err!(
        id.update_key(&a, bobs.id, disable, ADDR).await,
        IdentityError::NotFound(_)
    );
    assert_err!(
        id.delete_key(&a, bobs.id, ADDR).await,
        IdentityError::NotFound(_)
    );
    let p = auth(id, &bobs.key).await.expect("bob's key untouched");
    assert_eq!(
        p.permissions,
        perms(&["models:list"]),
        "the default, within bob's"
    );
    assert_err!(
        id.create_key(&root(), own_key(), ADDR).await,
        IdentityError::BadRequest(m) if m.contains("owner")
    );
    let listed = id.keys(&a, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed.iter().all(|k| k.user_id == alice));
    let asked = id.keys(&a, Some(bob)).await.unwrap();
    assert!(
        asked.iter().all(|k| k.user_id == alice),
        "the owner filter is ignored"
    );
    assert_eq!(
        id.keys(&root(), None).await.unwrap().len(),
        2,
        "keys:manage sees all"
    );
    assert_eq!(id.key(&b, bobs.id).await.unwrap().user_id, bob);
}

async fn disabled_and_expired_keys_are_refused(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user("alice", "alice-pw-123", &["models:list", "keys:create"])
        .await;
    let (_, alice) = env.sign_in("alice", "alice-pw-123").await;
    let key = id.create_key(&alice, own_key(), ADDR).await.unwrap();
    auth(id, &key.key).await.unwrap();
    let set_enabled = |enabled| UpdateKeyRequest {
        enabled: Some(enabled),
        ..UpdateKeyRequest::default()
    };
    id.update_key(&alice, key.id, set_enabled(false), ADDR)
        .await
        .unwrap();
    assert_err!(
        auth(id, &key.key).await,
        IdentityError::Unauthorized(m) if m == "API key is disabled"
    );
    id.update_key(&alice, key.id, set_enabled(true), ADDR)
        .await
        .unwrap();
    auth(id, &key.key).await.unwrap();

    let expiring = CreateKeyRequest {
        expires_at: Some(Expiry::Unix(T0 as i64 + 100)),
        ..own_key()
    };
    let expiring = id.create_key(&alice, expiring, ADDR).await.unwrap();
    auth(id, &expiring.key).await.unwrap();
    env.clock.advance(99);
    auth(id, &expiring.key).await.expect("not yet");
    env.clock.advance(1);
    assert_err!(
        auth(id, &expiring.key).await,
        IdentityError::Unauthorized(m) if m == "API key has expired"
    );
    auth(id, &key.key).await.expect("a key without expiry");
    let past = CreateKeyRequest {
        expires_at: Some(Expiry::Text("2020-01-01".into())),
        ..own_key()
    };
    assert_err!(
        id.create_key(&alice, past, ADDR).await,
        IdentityError::BadRequest(_)
    );
    // Removing the expiry revives it.
    let forever = UpdateKeyRequest {
        expires_at: Some(None),
        ..UpdateKeyRequest::default()
    };
    id.update_key(&alice, expiring.id, forever, ADDR)
        .await
        .unwrap();
    auth(id, &expiring.key).await.unwrap();
}

async fn a_revoked_key_stops_on_the_next_request(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user("alice", "alice-pw-123", &["models:list", "keys:create"])
        .await;
    let (_, alice) = env.sign_in("alice", "alice-pw-123").await;
    let key = id.create_key(&alice, own_key(), ADDR).await.unwrap();
    let keep = id.create_key(&alice, own_key(), ADDR).await.unwrap();
    auth(id, &key.key).await.unwrap();
    auth(id, &key.key).await.unwrap(); // cached
    id.delete_key(&alice, key.id, ADDR).await.unwrap();
    assert_err!(
        auth(id, &key.key).await,
        IdentityError::Auth(AuthError::InvalidCredentials)
    );
    assert_err!(id.key(&alice, key.id).await, IdentityError::NotFound(_));
    auth(id, &keep.key).await.expect("the other key works");
}

async fn a_keys_owner_decides_its_fate(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let alice = env
        .user("alice", "alice-pw-123", &["models:list", "keys:create"])
        .await;
    let bob = env
        .user("bob", "bob-pw-12345", &["models:list", "keys:create"])
        .await;
    let (_, a) = env.sign_in("alice", "alice-pw-123").await;
    let (_, b) = env.sign_in("bob", "bob-pw-12345").await;
    let akey = id.create_key(&a, own_key(), ADDR).await.unwrap();
    let bkey = id.create_key(&b, own_key(), ADDR).await.unwrap();
    auth(id, &akey.key).await.unwrap();
    auth(id, &bkey.key).await.unwrap();

    let disable = UpdateUserRequest {
        enabled: Some(false),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), alice, disable, ADDR).await.unwrap();
    assert_err!(
        auth(id, &akey.key).await,
        IdentityError::Auth(AuthError::InvalidCredentials)
    );
    let enable = UpdateUserRequest {
        enabled: Some(true),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), alice, enable, ADDR).await.unwrap();
    auth(id, &akey.key).await.expect("the owner enabled again");
    let must = UpdateUserRequest {
        must_change_password: Some(true),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), alice, must, ADDR).await.unwrap();
    assert_err!(
        auth(id, &akey.key).await,
        IdentityError::Forbidden(m) if m == xi_identity::MUST_CHANGE_PASSWORD
    );
    let fine = UpdateUserRequest {
        must_change_password: Some(false),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), alice, fine, ADDR).await.unwrap();
    auth(id, &akey.key).await.unwrap();

    id.delete_user(&root(), bob, ADDR).await.unwrap();
    assert_err!(
        auth(id, &bkey.key).await,
        IdentityError::Auth(AuthError::InvalidCredentials)
    );
    assert!(id.keys(&root(), Some(bob)).await.unwrap().is_empty());
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1")
        .bind(bob)
        .fetch_one(id.store().pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "the owner's keys are deleted with it");
    let models: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_key_models WHERE key_id = $1")
        .bind(bkey.id)
        .fetch_one(id.store().pool())
        .await
        .unwrap();
    assert_eq!(models, 0);
    assert_eq!(id.keys(&root(), None).await.unwrap().len(), 1);
}
