//! Tests of the identity commands: argument -> request mapping, tables, details.

use clap::Parser;
use serde_json::{json, Value};
use xi_api::identity::KeyUsage;

use super::super::{Cli, Command};
use super::*;

fn parse(args: &[&str]) -> Command {
    let mut all = vec!["xinference"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).unwrap().command
}

fn key_args(args: &[&str]) -> KeyCreateArgs {
    let mut all = vec!["key", "create"];
    all.extend_from_slice(args);
    match parse(&all) {
        Command::Key {
            command: KeyCommand::Create(args),
        } => args,
        other => panic!("{other:?}"),
    }
}

fn user_action(args: &[&str]) -> UserAction {
    match parse(args) {
        Command::User { command } => UserAction::read(command).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn key_flags_become_the_create_body() {
    let now = 1_700_000_000;
    let args = key_args(&[
        "--name",
        "ci",
        "--description",
        "for CI",
        "--owner-id",
        "7",
        "--expires-in-days",
        "30",
        "--model",
        "a",
        "--model",
        "b",
        "--permission",
        "models:list",
        "--rpm",
        "60",
        "--tpm",
        "10000",
        "--concurrency",
        "2",
        "--tokens-per-day",
        "100000",
        "--tokens-per-month",
        "1000000",
    ]);
    let request = create_key_request(args, now).unwrap();
    assert_eq!(
        request.expires_at,
        Some(Expiry::Unix(now + 30 * 86_400)),
        "30 days ahead"
    );
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({
            "name": "ci", "description": "for CI", "owner": 7,
            "expires_at": now + 30 * 86_400, "models": ["a", "b"],
            "permissions": ["models:list"],
            "limits": {
                "requests_per_minute": 60, "tokens_per_minute": 10000,
                "concurrent_requests": 2, "tokens_per_day": 100000,
                "tokens_per_month": 1000000,
            },
        })
    );
}

#[test]
fn a_bare_key_create_sends_an_empty_body() {
    let request = create_key_request(key_args(&[]), 0).unwrap();
    assert_eq!(serde_json::to_value(&request).unwrap(), json!({}));
    let limits = create_key_request(key_args(&["--rpm", "5"]), 0).unwrap();
    assert_eq!(
        serde_json::to_value(&limits).unwrap()["limits"],
        json!({"requests_per_minute": 5, "tokens_per_minute": null,
               "concurrent_requests": null, "tokens_per_day": null,
               "tokens_per_month": null})
    );
}

#[test]
fn an_expiry_is_a_date_or_unix_seconds_and_only_one_of_the_two_flags() {
    let text = create_key_request(key_args(&["--expires-at", "2027-01-31T00:00:00Z"]), 0)
        .unwrap()
        .expires_at;
    assert_eq!(text, Some(Expiry::Text("2027-01-31T00:00:00Z".into())));
    let unix = create_key_request(key_args(&["--expires-at", "1800000000"]), 0)
        .unwrap()
        .expires_at;
    assert_eq!(unix, Some(Expiry::Unix(1_800_000_000)));
    assert!(create_key_request(key_args(&["--expires-in-days", "0"]), 0).is_err());
    let both = Cli::try_parse_from([
        "xinference",
        "key",
        "create",
        "--expires-in-days",
        "1",
        "--expires-at",
        "1800000000",
    ]);
    assert!(both.is_err());
}

#[test]
fn user_flags_become_the_request_bodies() {
    let UserAction::Add(add) = user_action(&[
        "user",
        "add",
        "--username",
        "ann",
        "--password",
        "pw-1",
        "--permission",
        "models:list",
        "--permission",
        "models:read",
        "--must-change-password",
    ]) else {
        panic!()
    };
    assert_eq!(
        serde_json::to_value(&add).unwrap(),
        json!({"username": "ann", "password": "pw-1",
               "permissions": ["models:list", "models:read"],
               "must_change_password": true})
    );
    let UserAction::Update { username, request } =
        user_action(&["user", "disable", "--username", "ann"])
    else {
        panic!()
    };
    assert_eq!(username, "ann");
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"enabled": false})
    );
    let UserAction::Update { request, .. } = user_action(&["user", "enable", "--username", "ann"])
    else {
        panic!()
    };
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"enabled": true})
    );
    let UserAction::Passwd { request, .. } = user_action(&[
        "user",
        "passwd",
        "--username",
        "ann",
        "--password",
        "pw-2",
        "--old-password",
        "pw-1",
    ]) else {
        panic!()
    };
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"new_password": "pw-2", "old_password": "pw-1"})
    );
    let UserAction::Passwd { request, .. } =
        user_action(&["user", "passwd", "--username", "ann", "--password", "pw-2"])
    else {
        panic!()
    };
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"new_password": "pw-2"})
    );
    // A bare --old-password asks for it (and leaves the next flag alone).
    let bare = parse(&[
        "user",
        "passwd",
        "--username",
        "ann",
        "--old-password",
        "--password",
        "pw-2",
    ]);
    let Command::User {
        command:
            UserCommand::Passwd {
                password,
                old_password,
                ..
            },
    } = bare
    else {
        panic!()
    };
    assert_eq!(
        (password.as_deref(), old_password.as_deref()),
        (Some("pw-2"), Some(""))
    );
    let empty = parse(&["user", "add", "--username", "a", "--password", ""]);
    let Command::User { command } = empty else {
        panic!()
    };
    assert!(UserAction::read(command).is_err());
}

#[test]
fn users_are_listed_with_config_users_idless() {
    let users = [
        UserInfo {
            id: Some(1),
            username: "admin".into(),
            source: "local".into(),
            enabled: true,
            must_change_password: false,
            permissions: vec!["admin".into()],
            created_at: Some(0),
        },
        UserInfo {
            id: None,
            username: "bob".into(),
            source: "config".into(),
            enabled: true,
            must_change_password: true,
            permissions: vec!["models:list".into(), "models:read".into()],
            created_at: None,
        },
    ];
    let table = user_table(&users);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "ID  Username  Source  Enabled  Must change password  Permissions"
    );
    assert_eq!(
        lines[3],
        "-   bob       config  yes      yes                   models:list,models:read"
    );
    assert!(store_id(None, "bob")
        .unwrap_err()
        .to_string()
        .contains("config file"));
}

fn key_info() -> KeyInfo {
    serde_json::from_value(json!({
        "id": 3, "user_id": 1, "owner_username": "admin", "key_prefix": "sk-AbCd",
        "name": "ci", "description": null, "enabled": true, "expires_at": 1_800_000_000,
        "model_permissions": [
            {"permission_type": "model_id", "permission_value": "qwen"},
            {"permission_type": "model_type", "permission_value": "embedding"}
        ],
        "permissions": null,
        "limits": {"requests_per_minute": 60, "tokens_per_minute": null,
                   "concurrent_requests": null, "tokens_per_day": null,
                   "tokens_per_month": 5000},
        "usage": {"requests": 4, "prompt_tokens": 10, "completion_tokens": 20},
        "created_at": 1_700_000_000, "last_used_at": null,
    }))
    .unwrap()
}

#[test]
fn keys_are_listed_and_shown_whole() {
    let key = key_info();
    assert_eq!(
        key.usage,
        KeyUsage {
            requests: 4,
            prompt_tokens: 10,
            completion_tokens: 20
        }
    );
    let table = key_table(std::slice::from_ref(&key));
    assert_eq!(
        table.lines().nth(2).unwrap(),
        "3   sk-AbCd  ci    admin  yes      2027-01-15 08:00:00 UTC  qwen,type:embedding"
    );
    let details = key_details(&key);
    for want in [
        "ID:                  3",
        "Description:         -",
        "Owner:               admin (id 1)",
        "Last used:           never",
        "Expires:             2027-01-15 08:00:00 UTC",
        "Permissions:         the owner's model permissions",
        "Requests per minute: 60",
        "Tokens per minute:   unlimited",
        "Tokens per month:    5000",
        "Completion tokens:   20",
    ] {
        assert!(details.lines().any(|l| l == want), "{want:?} in\n{details}");
    }
    let all = [ModelPermission {
        permission_type: "all".into(),
        permission_value: None,
    }];
    assert_eq!(models(&all), "all");
    assert_eq!(models(&[]), "none");
}

#[test]
fn unix_times_are_shown_in_utc() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
}

#[test]
fn created_keys_parse_from_the_wire() {
    let v: Value = json!({"id": 1, "key": "sk-x", "prefix": "sk-x", "key_prefix": "sk-x",
                          "name": null});
    let created: xi_api::identity::CreatedKey = serde_json::from_value(v).unwrap();
    assert_eq!(created.key, "sk-x");
}
