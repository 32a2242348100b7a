//! Migrations on open, and the store's revision.

use xi_api::identity::{CreateKeyRequest, CreateUserRequest, UpdateUserRequest};
use xi_identity::{IdentityError, Store};

use crate::support::{assert_err, root, strings, Env, ADDR};

on_both!(
    opening_twice_is_idempotent_and_admin_writes_bump_the_revision,
    supervisors_opening_a_new_database_together_migrate_it_once,
);

/// Four supervisors starting at once on a database no one has migrated yet.
async fn supervisors_opening_a_new_database_together_migrate_it_once(url: String) {
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    for open in opens {
        let store = open.await.unwrap().expect("a concurrent open");
        assert_eq!(store.revision().await.unwrap(), 0);
    }
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(Store::open(&url).await.unwrap().pool())
        .await
        .unwrap();
    assert_eq!(applied, 3, "every migration (0001 to 0003) applied once");
}

async fn opening_twice_is_idempotent_and_admin_writes_bump_the_revision(url: String) {
    let first = Store::open(&url).await.expect("first open");
    assert_eq!(
        first.revision().await.unwrap(),
        0,
        "a new store starts at revision 0"
    );
    let second = Store::open(&url)
        .await
        .expect("a second open of a migrated database");
    assert_eq!(second.revision().await.unwrap(), 0, "migrations ran once");
    first.close().await;
    second.close().await;

    let env = Env::new(&url).await;
    let store = env.identity.store().clone();
    assert_eq!(
        store.revision().await.unwrap(),
        0,
        "opening the service writes nothing"
    );

    let id = env.user("alice", "alice-pw-123", &["models:list"]).await;
    assert_eq!(store.revision().await.unwrap(), 1, "create_user bumps");

    let duplicate = CreateUserRequest {
        username: "alice".into(),
        password: "alice-pw-123".into(),
        permissions: vec![],
        must_change_password: false,
    };
    assert_err!(
        env.identity.create_user(&root(), duplicate, ADDR).await,
        IdentityError::Conflict(_)
    );
    assert_eq!(
        store.revision().await.unwrap(),
        1,
        "a refused write is rolled back"
    );

    let update = UpdateUserRequest {
        permissions: Some(strings(&["models:list", "models:read"])),
        ..UpdateUserRequest::default()
    };
    env.identity
        .update_user(&root(), id, update, ADDR)
        .await
        .unwrap();
    assert_eq!(store.revision().await.unwrap(), 2, "update_user bumps");

    let key = CreateKeyRequest {
        owner: Some(id),
        ..CreateKeyRequest::default()
    };
    let key = env.identity.create_key(&root(), key, ADDR).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), 3, "create_key bumps");
    env.identity
        .delete_key(&root(), key.id, ADDR)
        .await
        .unwrap();
    assert_eq!(store.revision().await.unwrap(), 4, "delete_key bumps");
    env.identity.delete_user(&root(), id, ADDR).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), 5, "delete_user bumps");

    // Reopening the used database keeps its data and revision.
    let again = Store::open(&url).await.expect("reopen");
    assert_eq!(again.revision().await.unwrap(), 5);
}
