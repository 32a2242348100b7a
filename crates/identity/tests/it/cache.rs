//! Two supervisors on one database, and the cache through a database outage.

use std::time::{Duration, Instant};

use xi_api::identity::{CreateKeyRequest, UpdateUserRequest};
use xi_auth::AuthError;
use xi_identity::IdentityError;

use crate::support::{assert_err, bearer, eventually, root, Env, ADDR};

on_both!(changes_through_another_supervisor_arrive_within_a_poll);

async fn changes_through_another_supervisor_arrive_within_a_poll(url: String) {
    let env = Env::new(&url).await;
    let one = &env.identity;
    let two = env.another().await;
    let uid = env
        .user("alice", "alice-pw-123", &["models:list", "keys:create"])
        .await;
    let key = one
        .create_key(
            &root(),
            CreateKeyRequest {
                owner: Some(uid),
                ..Default::default()
            },
            ADDR,
        )
        .await
        .unwrap();
    let header = bearer(&key.key);
    two.authenticate(Some(&header))
        .await
        .expect("the other supervisor knows the key");
    two.authenticate(Some(&header))
        .await
        .expect("now from its cache");
    let (issued, _) = env.sign_in("alice", "alice-pw-123").await;
    let access = bearer(&issued.access_token);
    two.authenticate(Some(&access))
        .await
        .expect("a token of one works on the other");

    let started = Instant::now();
    one.delete_key(&root(), key.id, ADDR).await.unwrap();
    let gone = eventually(Duration::from_secs(2), || async {
        two.authenticate(Some(&header)).await.is_err()
    })
    .await;
    assert!(
        gone,
        "the revoked key still works on the other supervisor after 2 s"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "took {took:?} with a 100 ms poll"
    );
    assert_err!(
        two.authenticate(Some(&header)).await,
        IdentityError::Auth(AuthError::InvalidCredentials)
    );

    // Ending a user's sessions through one reaches the other too.
    let disable = UpdateUserRequest {
        enabled: Some(false),
        ..Default::default()
    };
    two.update_user(&root(), uid, disable, ADDR).await.unwrap();
    let ended = eventually(Duration::from_secs(2), || async {
        one.authenticate(Some(&access)).await.is_err()
    })
    .await;
    assert!(
        ended,
        "a disabled user's token still works on the other supervisor"
    );
}

/// PostgreSQL only (an SQLite file cannot go away): keys known to the cache keep working while
/// the database is down; logins fail as unavailable, and work again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_outlive_a_database_outage_postgres() {
    let mut pg = crate::support::postgres().await;
    let url = pg.fresh_database();
    let env = Env::new(&url).await;
    let id = &env.identity;
    let uid = env
        .user("alice", "alice-pw-123", &["models:list", "keys:create"])
        .await;
    let key = id
        .create_key(
            &root(),
            CreateKeyRequest {
                owner: Some(uid),
                ..Default::default()
            },
            ADDR,
        )
        .await
        .unwrap();
    let header = bearer(&key.key);
    let before = id.authenticate(Some(&header)).await.unwrap();
    let (issued, _) = env.sign_in("alice", "alice-pw-123").await;
    let access = bearer(&issued.access_token);

    tokio::task::block_in_place(|| pg.stop());
    // Let the poller notice the outage: it must not empty the cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = id
        .authenticate(Some(&header))
        .await
        .expect("a cached key works during the outage");
    assert_eq!(during, before);
    id.authenticate(Some(&access))
        .await
        .expect("a cached session works during the outage");
    let started = Instant::now();
    assert_err!(
        id.login("alice", "alice-pw-123", ADDR).await,
        IdentityError::Unavailable(_)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "login gave up in {:?}",
        started.elapsed()
    );
    let unknown = format!("xf-{}", "B".repeat(48));
    assert_err!(
        id.authenticate(Some(&bearer(&unknown))).await,
        IdentityError::Unavailable(_)
    );

    tokio::task::block_in_place(|| pg.restart());
    let back = eventually(Duration::from_secs(10), || async {
        id.login("alice", "alice-pw-123", ADDR).await.is_ok()
    })
    .await;
    assert!(back, "logins did not work again within 10 s of the restart");
    id.authenticate(Some(&header)).await.unwrap();
}
