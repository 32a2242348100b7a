//! The Kubernetes manifests in `deploy/kubernetes/` parse, and what they run matches the
//! binaries: every flag they pass exists in that binary's `--help`, the supervisor's
//! readiness probe is `/status` on the port it listens on, and every secret they mount is one
//! the secrets example defines.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::support::{SUPERVISOR_BIN, WORKER_BIN};

fn documents() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    files.sort_by_key(|e| e.file_name());
    for entry in files {
        let name = entry.file_name().to_string_lossy().to_string();
        assert!(name.ends_with(".yaml"), "unexpected file {name}");
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_yaml_ng::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
            assert!(value["kind"].is_string(), "{name}: a document without kind");
            docs.push((name.clone(), value));
        }
    }
    docs
}

fn help(bin: &str) -> String {
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn kubernetes_manifests_match_the_binaries() {
    let docs = documents();
    let kinds: BTreeSet<String> = docs.iter().map(|(_, d)| str_of(&d["kind"])).collect();
    for kind in [
        "Deployment",
        "StatefulSet",
        "Service",
        "Secret",
        "Namespace",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    let secrets: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "Secret")
        .map(|(_, d)| str_of(&d["metadata"]["name"]))
        .collect();
    let services: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "Service")
        .map(|(_, d)| str_of(&d["metadata"]["name"]))
        .collect();

    let mut checked = BTreeSet::new();
    for (file, doc) in &docs {
        let kind = str_of(&doc["kind"]);
        if kind != "Deployment" && kind != "StatefulSet" {
            continue;
        }
        let pod = &doc["spec"]["template"]["spec"];
        for volume in pod["volumes"].as_sequence().unwrap() {
            if let Some(name) = volume["secret"]["secretName"].as_str() {
                assert!(
                    secrets.contains(name),
                    "{file} mounts unknown secret {name}"
                );
            }
        }
        for container in pod["containers"].as_sequence().unwrap() {
            let command = str_of(&container["command"][0]);
            let bin = match command.as_str() {
                "xinference-supervisor" => SUPERVISOR_BIN,
                "xinference-worker" => WORKER_BIN,
                other => panic!("{file} runs {other}"),
            };
            let help = help(bin);
            let args: Vec<String> = container["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(str_of)
                .collect();
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "{file}: {command} has no flag {flag}"
                );
            }
            let value_of = |flag: &str| {
                args.iter()
                    .position(|a| a == flag)
                    .map(|i| args[i + 1].clone())
            };
            let secret_file = value_of("--cluster-secret-file")
                .unwrap_or_else(|| panic!("{file}: {command} without the cluster secret"));
            let mounted = container["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|m| secret_file.starts_with(&str_of(&m["mountPath"])));
            assert!(mounted, "{file}: {secret_file} is not on a mounted volume");
            if command == "xinference-supervisor" {
                let port = value_of("--port").unwrap();
                assert_eq!(str_of(&container["ports"][0]["containerPort"]), port);
                let probe = &container["readinessProbe"]["httpGet"];
                assert_eq!(str_of(&probe["path"]), "/status");
                assert!(value_of("--auth-config").is_some(), "auth on in production");
            } else {
                let endpoint = value_of("--endpoint").unwrap();
                let host = endpoint
                    .trim_start_matches("http://")
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string();
                assert!(services.contains(&host), "{endpoint} is not a Service");
                assert_eq!(
                    str_of(&container["ports"][0]["containerPort"]),
                    value_of("--worker-port").unwrap()
                );
                assert!(container["readinessProbe"].is_mapping());
            }
            checked.insert(command);
        }
    }
    assert_eq!(checked.len(), 2, "both binaries are deployed: {checked:?}");
}
