//! Enforces the source layering: `proto` (no tokio, no quinn, no I/O) ←
//! `store` ← `server`; `client` depends on `proto` only. A module that reaches
//! upward or sideways fails this test with the file and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

/// (layer directory, patterns it must not contain, why)
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "src/proto",
        &["tokio", "quinn", "rustls", "socket2", "fjall", "std::net", "std::fs", "crate::store", "crate::server", "crate::client"],
        "proto holds frames, codec and verification only: no async runtime, transport, I/O or upper layers",
    ),
    ("src/store", &["quinn", "rustls", "crate::server", "crate::client"], "store sits below server and beside client"),
    ("src/client", &["crate::server", "crate::store", "fjall"], "client depends on proto only"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_code(line: &str) -> bool {
    let trimmed = line.trim_start();
    !(trimmed.starts_with("//") || trimmed.starts_with("*"))
}

#[test]
fn layers_import_downward_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut violations = Vec::new();
    for (dir, forbidden, why) in RULES {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        assert!(!files.is_empty(), "{dir} has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| is_code(l)) {
                for pattern in forbidden.iter().filter(|p| line.contains(*p)) {
                    violations.push(format!(
                        "{}:{}: uses `{pattern}` ({why})",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_catches_a_violation() {
    let line = "use tokio::sync::mpsc;";
    assert!(is_code(line) && RULES[0].1.iter().any(|p| line.contains(p)));
    assert!(!is_code("//! mentions tokio in docs only"));
}
