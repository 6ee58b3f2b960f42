//! The deploy files cannot rot (issue 13): every YAML file under `deploy/`
//! parses, every `TERN_*` variable any file there mentions is one that
//! `ServerConfig::apply_env` reads (`ServerConfig::env_names`, taken from
//! the code), and each environment block a compose service or Kubernetes
//! container sets is a configuration that loads and validates (a
//! Kubernetes `env` with the downward API filled in and `$(NAME)`
//! expanded, as a pod sees it); compose and the StatefulSet run a ScyllaDB
//! cluster of distinct nodes. No network, no docker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;
use tern_server::ServerConfig;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("deploy/ is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Every document of a YAML file, merge keys (`<<:`) applied.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("readable");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: bad merge key: {e}", path.display()));
            value
        })
        .collect()
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The environment blocks of a document: a compose service's
/// `environment` (a map, or a list of `NAME=value`) and a Kubernetes
/// container's `env` (a list of `{name, value}`).
fn env_blocks(value: &Value, out: &mut Vec<BTreeMap<String, String>>) {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    (Some("environment"), Value::Mapping(vars)) => out.push(
                        vars.iter()
                            .map(|(k, v)| (k.as_str().unwrap().to_owned(), text_of(v).unwrap()))
                            .collect(),
                    ),
                    (Some("environment"), Value::Sequence(items)) => out.push(
                        items
                            .iter()
                            .map(|item| {
                                let (k, v) = item.as_str().unwrap().split_once('=').unwrap();
                                (k.to_owned(), v.to_owned())
                            })
                            .collect(),
                    ),
                    (Some("env"), Value::Sequence(items)) => out.push(kubernetes_env(items)),
                    _ => env_blocks(child, out),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|item| env_blocks(item, out)),
        Value::Tagged(tagged) => env_blocks(&tagged.value, out),
        _ => {}
    }
}

/// What the Kubernetes downward API gives a pod of the StatefulSet, for
/// the fields the manifests read (`valueFrom.fieldRef`).
fn downward(field: &str) -> String {
    match field {
        "metadata.name" => "tern-0".to_owned(),
        "status.podIP" => "10.0.0.10".to_owned(),
        other => panic!("a manifest reads the downward API field {other}, unknown to this test"),
    }
}

/// What an operator's Secret holds for a `valueFrom.secretKeyRef` the
/// manifests read (deploy/README.md says which Secrets to create).
fn secret(reference: &Value) -> Option<String> {
    let name = reference["name"].as_str()?;
    let key = reference["key"].as_str()?;
    let value = match (name, key) {
        ("tern-s3", "bucket") => "tern-attachments",
        ("tern-s3", "endpoint") => "http://minio.tern.svc:9000",
        ("tern-s3", "access-key-id" | "secret-access-key") => "operator-provided",
        other => panic!("a manifest reads the Secret key {other:?}, unknown to this test"),
    };
    Some(value.to_owned())
}

/// A Kubernetes container's `env` as the pod sees it: `valueFrom.fieldRef`
/// filled by [`downward`], and `$(NAME)` in a value expanded from the
/// entries before it (Kubernetes' dependent environment variables).
fn kubernetes_env(items: &[Value]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for item in items {
        let name = item["name"].as_str().unwrap().to_owned();
        let value = match item.get("value").and_then(text_of) {
            Some(value) => value,
            None => item
                .get("valueFrom")
                .and_then(|from| from.get("fieldRef"))
                .and_then(|field| field["fieldPath"].as_str())
                .map(downward)
                .or_else(|| secret(item.get("valueFrom")?.get("secretKeyRef")?))
                .unwrap_or_default(),
        };
        let expanded = env
            .iter()
            .fold(value, |v: String, (k, x): (&String, &String)| {
                v.replace(&format!("$({k})"), x)
            });
        assert!(
            !expanded.contains("$("),
            "{name}={expanded:?} names a variable not defined before it"
        );
        env.insert(name, expanded);
    }
    env
}

/// Every `TERN_NAME` word of a text (a bare `TERN_*` in prose is none).
fn tern_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.len() > "TERN_".len() && word.starts_with("TERN_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_yaml_file_parses_and_sets_only_real_config_keys() {
    let known = ServerConfig::env_names();
    let mut all = Vec::new();
    files(&deploy_dir(), &mut all);
    let yaml: Vec<&PathBuf> = all.iter().filter(|p| is_yaml(p)).collect();
    assert!(yaml.len() >= 4, "deploy/ lost its YAML files: {all:?}");
    let mut blocks = Vec::new();
    for path in &yaml {
        for doc in documents(path) {
            env_blocks(&doc, &mut blocks);
        }
    }
    let tern_blocks: Vec<_> = blocks
        .iter()
        .filter(|b| b.keys().any(|k| k.starts_with("TERN_")))
        .collect();
    // 3 compose services and the Kubernetes StatefulSet.
    assert!(tern_blocks.len() >= 4, "{blocks:?}");
    for block in tern_blocks {
        for name in block.keys().filter(|k| k.starts_with("TERN_")) {
            assert!(
                known.contains(name),
                "{name} is not a config key: {known:?}"
            );
        }
        let mut config = ServerConfig::default();
        config
            .apply_env(|name| block.get(name).cloned())
            .unwrap_or_else(|e| panic!("{block:?}: {e}"));
        config
            .validate()
            .unwrap_or_else(|e| panic!("{block:?}: {e}"));
        config
            .check_cluster_shares_stores()
            .unwrap_or_else(|e| panic!("{block:?}: {e}"));
        assert!(
            config.admin_addr.is_some(),
            "no admin port for probes: {block:?}"
        );
    }
}

#[test]
fn every_tern_variable_any_deploy_file_mentions_is_real() {
    let known = ServerConfig::env_names();
    let mut all = Vec::new();
    files(&deploy_dir(), &mut all);
    let mut seen = 0;
    for path in all
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "md"))
    {
        let text = std::fs::read_to_string(path).expect("readable");
        for word in tern_words(&text) {
            assert!(
                known.contains(&word),
                "{} names {word}, which ServerConfig::apply_env does not read",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no TERN_ variable found under deploy/");
}

#[test]
fn probes_use_the_admin_endpoints() {
    let k8s = std::fs::read_to_string(deploy_dir().join("k8s/tern.yaml")).unwrap();
    let docs: Vec<Value> = documents(&deploy_dir().join("k8s/tern.yaml"));
    let set = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("StatefulSet"))
        .expect("a StatefulSet");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    // A cluster: three nodes on ScyllaDB, each named after its pod and
    // advertising its pod IP, the CA from a Secret.
    assert_eq!(set["spec"]["replicas"].as_u64(), Some(3));
    let mut blocks = Vec::new();
    env_blocks(container, &mut blocks);
    let mut config = ServerConfig::default();
    config
        .apply_env(|name| blocks[0].get(name).cloned())
        .unwrap();
    config.validate().unwrap();
    assert!(config.scylla_config().is_some(), "{config:?}");
    let cluster = config.cluster().expect("a cluster node");
    assert_eq!(cluster.node_id, "tern-0");
    assert_eq!(cluster.advertised().to_string(), "10.0.0.10:4434");
    assert!(k8s.contains("secretName: tern-cluster-ca"));
}

/// The compose nodes form one cluster: distinct node ids and advertised
/// addresses, one store and one Redis, and the one-shot services that make
/// the CA and migrate the keyspace run before them.
#[test]
fn compose_runs_a_three_node_cluster() {
    let path = deploy_dir().join("compose.yaml");
    let doc = &documents(&path)[0];
    let services = &doc["services"];
    let mut ids = std::collections::BTreeSet::new();
    let mut advertised = std::collections::BTreeSet::new();
    for name in ["tern-1", "tern-2", "tern-3"] {
        let service = &services[name];
        let mut blocks = Vec::new();
        env_blocks(service, &mut blocks);
        let mut config = ServerConfig::default();
        config.apply_env(|n| blocks[0].get(n).cloned()).unwrap();
        config.validate().unwrap();
        config.check_cluster_shares_stores().unwrap();
        assert!(config.scylla_config().is_some(), "{name}: not on ScyllaDB");
        let cluster = config.cluster().expect("a cluster node");
        ids.insert(cluster.node_id.clone());
        advertised.insert(cluster.advertised());
        for before in ["cluster-ca", "migrate"] {
            assert_eq!(
                service["depends_on"][before]["condition"].as_str(),
                Some("service_completed_successfully"),
                "{name} does not wait for {before}"
            );
        }
    }
    assert_eq!(
        (ids.len(), advertised.len()),
        (3, 3),
        "{ids:?} {advertised:?}"
    );
    assert_eq!(
        services["migrate"]["entrypoint"][1].as_str(),
        Some("migrate")
    );
}
