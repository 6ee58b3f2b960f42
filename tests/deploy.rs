//! The deploy files cannot rot (issue 13): every YAML file under `deploy/`
//! parses, every `TERN_*` variable any file there mentions is one that
//! `ServerConfig::apply_env` reads (`ServerConfig::env_names`, taken from
//! the code), and each environment block a compose service or Kubernetes
//! container sets is a configuration that loads and validates. No network,
//! no docker.
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
                    (Some("env"), Value::Sequence(items)) => out.push(
                        items
                            .iter()
                            .map(|item| {
                                let name = item["name"].as_str().unwrap().to_owned();
                                (
                                    name,
                                    item.get("value").and_then(text_of).unwrap_or_default(),
                                )
                            })
                            .collect(),
                    ),
                    _ => env_blocks(child, out),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|item| env_blocks(item, out)),
        Value::Tagged(tagged) => env_blocks(&tagged.value, out),
        _ => {}
    }
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
    assert!(k8s.contains("NOT YET A CLUSTER"));
}
