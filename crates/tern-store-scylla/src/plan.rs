//! The pure half of `tern migrate`: the CQL migrations this binary carries
//! (`migrations/NNNN_name.cql`, embedded at build time), parsing their names
//! and splitting them into statements, and planning which are pending given
//! what a database recorded in `schema_migrations`. Nothing here touches a
//! database, so every rule (order, downgrade refusal, checksum refusal) is
//! unit-tested without one; [`crate::migrate`] runs the plan.

use sha2::{Digest, Sha256};

/// The migration files, in version order, as `(file name, text)`.
pub const FILES: &[(&str, &str)] = &[(
    "0001_initial.cql",
    include_str!("../../../migrations/0001_initial.cql"),
)];

/// One migration file, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The number before the first `_` of the file name (`0001` → 1).
    pub version: u32,
    /// The file name without its version and `.cql` (`initial`).
    pub name: String,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// The statements, in file order, comments removed, without their `;`.
    pub statements: Vec<String>,
}

/// A migration a database recorded as applied (a `schema_migrations` row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub version: u32,
    pub name: String,
    pub sha256: String,
}

/// Why the migrations cannot be parsed or planned.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("migration file {0:?} is not named NNNN_name.cql")]
    BadName(String),
    #[error("migration files {0:?} and {1:?} have the same version")]
    DuplicateVersion(String, String),
    #[error("migration file {0:?} has an unterminated string or no statements")]
    BadText(String),
    #[error(
        "the database is at schema version {database}, newer than the {binary} this binary \
         knows; run a tern built from a newer release (downgrades are refused)"
    )]
    Downgrade { database: u32, binary: u32 },
    #[error(
        "migration {version} ({name}) was applied with checksum {applied} but this binary's \
         file has {file}; applied migrations must never be edited: add a new migration instead"
    )]
    ChecksumChanged {
        version: u32,
        name: String,
        applied: String,
        file: String,
    },
    #[error(
        "the database recorded migration {version} ({name}) that this binary does not carry; \
         check that the keyspace belongs to this tern deployment"
    )]
    UnknownApplied { version: u32, name: String },
}

/// Parses every file of `files` (name, text), sorted by version.
pub fn parse_all(files: &[(&str, &str)]) -> Result<Vec<Migration>, PlanError> {
    let mut out = files
        .iter()
        .map(|(name, text)| parse(name, text))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|m| m.version);
    for pair in out.windows(2) {
        if let [a, b] = pair {
            if a.version == b.version {
                return Err(PlanError::DuplicateVersion(a.name.clone(), b.name.clone()));
            }
        }
    }
    Ok(out)
}

/// The migrations this binary carries, parsed.
pub fn embedded() -> Result<Vec<Migration>, PlanError> {
    parse_all(FILES)
}

/// The highest version this binary carries (0 when it carries none).
pub fn latest(migrations: &[Migration]) -> u32 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Parses one file named `NNNN_name.cql`.
pub fn parse(file: &str, text: &str) -> Result<Migration, PlanError> {
    let bad = || PlanError::BadName(file.to_string());
    let stem = file.strip_suffix(".cql").ok_or_else(bad)?;
    let (digits, name) = stem.split_once('_').ok_or_else(bad)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return Err(bad());
    }
    let version: u32 = digits.parse().map_err(|_| bad())?;
    if version == 0 {
        return Err(bad());
    }
    let statements = split_statements(text).ok_or_else(|| PlanError::BadText(file.into()))?;
    if statements.is_empty() {
        return Err(PlanError::BadText(file.to_string()));
    }
    Ok(Migration {
        version,
        name: name.to_string(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        statements,
    })
}

/// Splits CQL text into statements at each `;` outside a quoted string or
/// identifier, dropping `--` and `//` line comments and `/* */` comments.
/// `None` when a string, identifier or comment is not terminated.
pub fn split_statements(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                current.push(c);
                loop {
                    let next = chars.next()?;
                    current.push(next);
                    if next == c {
                        // A doubled quote is an escaped one.
                        if chars.peek() == Some(&c) {
                            current.extend(chars.next());
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' | '/' if chars.peek() == Some(&c) => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                loop {
                    let next = chars.next()?;
                    if star && next == '/' {
                        break;
                    }
                    star = next == '*';
                }
                current.push(' ');
            }
            ';' => push_statement(&mut out, &mut current),
            _ => current.push(c),
        }
    }
    push_statement(&mut out, &mut current);
    Some(out)
}

fn push_statement(out: &mut Vec<String>, current: &mut String) {
    let statement = current.trim();
    if !statement.is_empty() {
        out.push(statement.to_string());
    }
    current.clear();
}

/// The migrations of `known` still to apply to a database that recorded
/// `applied`, in version order. Refuses a database newer than this binary
/// ([`PlanError::Downgrade`]), an applied file whose checksum changed, and
/// an applied version this binary does not carry.
pub fn pending<'a>(
    known: &'a [Migration],
    applied: &[Applied],
) -> Result<Vec<&'a Migration>, PlanError> {
    let binary = latest(known);
    if let Some(newest) = applied.iter().map(|a| a.version).max() {
        if newest > binary {
            return Err(PlanError::Downgrade {
                database: newest,
                binary,
            });
        }
    }
    for done in applied {
        let Some(file) = known.iter().find(|m| m.version == done.version) else {
            return Err(PlanError::UnknownApplied {
                version: done.version,
                name: done.name.clone(),
            });
        };
        if file.sha256 != done.sha256 {
            return Err(PlanError::ChecksumChanged {
                version: done.version,
                name: done.name.clone(),
                applied: done.sha256.clone(),
                file: file.sha256.clone(),
            });
        }
    }
    Ok(known
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn applied(m: &Migration) -> Applied {
        Applied {
            version: m.version,
            name: m.name.clone(),
            sha256: m.sha256.clone(),
        }
    }

    fn two() -> Vec<Migration> {
        parse_all(&[
            ("0002_more.cql", "CREATE TABLE b (x int PRIMARY KEY);"),
            ("0001_first.cql", "CREATE TABLE a (x int PRIMARY KEY);"),
        ])
        .unwrap()
    }

    #[test]
    fn embedded_files_parse_in_order_with_statements() {
        let all = embedded().unwrap();
        assert_eq!(all[0].version, 1);
        assert_eq!(all[0].name, "initial");
        assert!(all[0].statements.len() > 10);
        for statement in &all[0].statements {
            assert!(
                statement.starts_with("CREATE TABLE IF NOT EXISTS"),
                "{statement}"
            );
            assert!(!statement.contains("--"), "comment left in {statement}");
        }
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "initial.cql",
            "0001.cql",
            "x001_a.cql",
            "0001_a.sql",
            "0000_a.cql",
        ] {
            assert_eq!(parse(bad, "SELECT 1;"), Err(PlanError::BadName(bad.into())));
        }
        let dup = parse_all(&[("0001_a.cql", "A;"), ("01_b.cql", "B;")]);
        assert!(matches!(dup, Err(PlanError::DuplicateVersion(..))));
        assert!(matches!(
            parse("0001_a.cql", "-- nothing\n"),
            Err(PlanError::BadText(_))
        ));
    }

    #[test]
    fn statements_split_outside_strings_and_comments() {
        let text = "-- a; comment\nA 'x;''y';\n/* b; */ B \"q;\" // c;\n;\n\nC";
        let got = split_statements(text).unwrap();
        assert_eq!(got, vec!["A 'x;''y'", "B \"q;\"", "C"]);
        assert_eq!(split_statements("A 'open;"), None);
        assert_eq!(split_statements("A /* open"), None);
    }

    #[test]
    fn fresh_database_gets_everything_in_order() {
        let known = two();
        let plan = pending(&known, &[]).unwrap();
        let versions: Vec<u32> = plan.iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![1, 2]);
    }

    #[test]
    fn rerun_is_a_no_op_and_partial_applies_the_rest() {
        let known = two();
        let all: Vec<Applied> = known.iter().map(applied).collect();
        assert!(pending(&known, &all).unwrap().is_empty());
        let plan = pending(&known, &all[..1]).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].version, 2);
    }

    #[test]
    fn downgrade_is_refused() {
        let known = two();
        let mut newer: Vec<Applied> = known.iter().map(applied).collect();
        newer.push(Applied {
            version: 3,
            name: "future".into(),
            sha256: "00".into(),
        });
        let err = pending(&known, &newer).unwrap_err();
        assert_eq!(
            err,
            PlanError::Downgrade {
                database: 3,
                binary: 2
            }
        );
        assert!(err.to_string().contains("downgrades are refused"));
    }

    #[test]
    fn edited_or_unknown_applied_files_are_refused() {
        let known = two();
        let mut edited = applied(&known[0]);
        edited.sha256 = "feed".into();
        let err = pending(&known, &[edited]).unwrap_err();
        assert!(matches!(err, PlanError::ChecksumChanged { version: 1, .. }));
        let gap = parse_all(&[("0002_more.cql", "B;")]).unwrap();
        let err = pending(&gap, &[applied(&known[0])]).unwrap_err();
        assert!(matches!(err, PlanError::UnknownApplied { version: 1, .. }));
    }
}
