//! The audit log: what is recorded, how it is filtered and paged, and that no secret is in it.

use xi_api::identity::{CreateKeyRequest, CreateUserRequest, UpdateUserRequest};
use xi_identity::audit::{AuditEvent, Filter};

use crate::support::{bearer, root, sign_in, strings, Env, ADDR, T0};

on_both!(
    every_action_is_audited_and_no_secret_is,
    audit_filters_and_paging
);

fn all() -> Filter {
    Filter {
        limit: 1000,
        ..Filter::default()
    }
}

fn texts(e: &AuditEvent) -> Vec<&str> {
    [&e.username, &e.key_prefix, &e.target, &e.address, &e.detail]
        .into_iter()
        .filter_map(|f| f.as_deref())
        .chain([e.action.as_str(), e.outcome.as_str()])
        .collect()
}

/// The event of `action` (and `outcome`), newest first.
fn find<'a>(events: &'a [AuditEvent], action: &str, outcome: &str) -> Vec<&'a AuditEvent> {
    events
        .iter()
        .filter(|e| e.action == action && e.outcome == outcome)
        .collect()
}

async fn every_action_is_audited_and_no_secret_is(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    let user_pw = "alice-pw-SECRET-1";
    let wrong_pw = "alice-WRONG-pw-2";
    let create = CreateUserRequest {
        username: "alice".into(),
        password: user_pw.into(),
        permissions: strings(&["models:list", "keys:create"]),
        must_change_password: false,
    };
    let uid = id
        .create_user(&root(), create, "10.0.0.1")
        .await
        .unwrap()
        .id;
    let _ = id.login("alice", wrong_pw, "10.0.0.2").await.unwrap_err();
    let _ = id.login("ghost", wrong_pw, "10.0.0.3").await.unwrap_err();
    let (first, alice) = sign_in(id, "alice", user_pw).await;
    let second = id.refresh(&first.refresh_token, "10.0.0.4").await.unwrap();
    let key = id
        .create_key(&alice, CreateKeyRequest::default(), "10.0.0.5")
        .await
        .unwrap();
    id.authenticate(Some(&bearer(&key.key))).await.unwrap();
    id.delete_key(&alice, key.id, "10.0.0.6").await.unwrap();
    let update = UpdateUserRequest {
        permissions: Some(strings(&["models:list"])),
        ..UpdateUserRequest::default()
    };
    id.update_user(&root(), uid, update, "10.0.0.7")
        .await
        .unwrap();
    let _ = id
        .refresh(&first.refresh_token, "10.0.0.8")
        .await
        .unwrap_err(); // reuse
    let (third, _) = sign_in(id, "alice", user_pw).await;
    id.logout(&third.refresh_token, None, "10.0.0.9")
        .await
        .unwrap();
    id.delete_user(&root(), uid, "10.0.0.10").await.unwrap();

    let events = id.audit(&all()).await.unwrap();
    let one = |action: &str, outcome: &str| -> &AuditEvent {
        let found = find(&events, action, outcome);
        assert!(
            !found.is_empty(),
            "no {action}/{outcome} event in {events:#?}"
        );
        found[0]
    };
    let e = one("user.create", "ok");
    assert_eq!(e.username.as_deref(), Some("root"));
    assert_eq!(e.target, Some(format!("user:{uid}")));
    assert_eq!(e.address.as_deref(), Some("10.0.0.1"));
    assert!(e.detail.as_deref().unwrap_or_default().contains("alice"));
    let bad = find(&events, "login", "bad_password");
    let who: Vec<_> = bad
        .iter()
        .map(|e| (e.username.as_deref(), e.address.as_deref()))
        .collect();
    assert_eq!(
        who,
        vec![
            (Some("ghost"), Some("10.0.0.3")),
            (Some("alice"), Some("10.0.0.2"))
        ]
    );
    let ok = find(&events, "login", "ok");
    assert_eq!(ok.len(), 2);
    assert!(ok.iter().all(|e| e.username.as_deref() == Some("alice")));
    let e = one("refresh", "ok");
    assert_eq!(
        (e.username.as_deref(), e.address.as_deref()),
        (Some("alice"), Some("10.0.0.4"))
    );
    let e = one("refresh", "reuse");
    assert_eq!(
        (e.username.as_deref(), e.address.as_deref()),
        (Some("alice"), Some("10.0.0.8"))
    );
    let e = one("key.create", "ok");
    assert_eq!(e.username.as_deref(), Some("alice"));
    assert_eq!(e.key_prefix.as_deref(), Some(key.key_prefix.as_str()));
    assert_eq!(e.target, Some(format!("key:{}", key.id)));
    let e = one("key.revoke", "ok");
    assert_eq!(e.username.as_deref(), Some("alice"));
    assert_eq!(e.key_prefix.as_deref(), Some(key.key_prefix.as_str()));
    let e = one("user.update", "ok");
    assert_eq!(
        (e.username.as_deref(), e.target.clone()),
        (Some("root"), Some(format!("user:{uid}")))
    );
    let e = one("logout", "ok");
    assert_eq!(
        (e.username.as_deref(), e.address.as_deref()),
        (Some("alice"), Some("10.0.0.9")),
        "a logout by refresh token names the session's user"
    );
    let e = one("user.delete", "ok");
    assert_eq!(
        (e.username.as_deref(), e.detail.as_deref()),
        (Some("root"), Some("alice"))
    );
    assert!(events.iter().all(|e| e.at == T0 as i64));

    let secrets = [
        user_pw,
        wrong_pw,
        &key.key,
        &key.key[3..],
        &first.refresh_token,
        &second.refresh_token,
        &third.refresh_token,
        &first.access_token,
        &second.access_token,
        &third.access_token,
    ];
    for event in &events {
        for text in texts(event) {
            for secret in secrets {
                assert!(!text.contains(secret), "event {event:?} holds a secret");
            }
        }
    }
}

async fn audit_filters_and_paging(url: String) {
    let env = Env::new(&url).await;
    let id = &env.identity;
    env.user("alice", "alice-pw-123", &[]).await;
    env.user("bob", "bob-pw-12345", &[]).await;
    for _ in 0..3 {
        id.login("alice", "alice-pw-123", ADDR).await.unwrap();
    }
    env.clock.advance(100);
    for _ in 0..2 {
        id.login("bob", "bob-pw-12345", ADDR).await.unwrap();
    }
    let _ = id.login("bob", "wrong-pw-123", ADDR).await.unwrap_err();

    let alice = id
        .audit(&Filter {
            username: Some("alice".into()),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(alice.len(), 3);
    assert!(alice
        .iter()
        .all(|e| e.username.as_deref() == Some("alice") && e.action == "login"));
    let logins = id
        .audit(&Filter {
            action: Some("login".into()),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(logins.len(), 6);
    let creates = id
        .audit(&Filter {
            action: Some("user.create".into()),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(creates.len(), 2);
    let later = T0 as i64 + 50;
    let since = id
        .audit(&Filter {
            since: Some(later),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 3, "{since:#?}");
    assert!(since.iter().all(|e| e.username.as_deref() == Some("bob")));
    let until = id
        .audit(&Filter {
            until: Some(later),
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(until.len(), 5, "2 user.create + 3 logins");
    let both = Filter {
        username: Some("bob".into()),
        action: Some("login".into()),
        since: Some(later),
        ..all()
    };
    assert_eq!(id.audit(&both).await.unwrap().len(), 3);

    // Newest first; pages of 2 by `before_id` cover everything once.
    let everything = id.audit(&all()).await.unwrap();
    assert_eq!(everything.len(), 8);
    assert!(
        everything.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = id
            .audit(&Filter {
                before_id: before,
                limit: 2,
                ..Filter::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, everything);
}
