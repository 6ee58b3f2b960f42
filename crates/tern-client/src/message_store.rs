//! The device's durable local message store: every message this device
//! decrypted or sent, in plaintext, in one SQLite file in the state
//! directory ([`MESSAGE_STORE_FILE`], WAL mode, `synchronous = FULL`, so a
//! committed write survives a crash or power loss).
//!
//! [`super::secure::SecureClient`] writes an incoming message here before
//! it hands the message to the app (and so before the app can acknowledge
//! its delivery cursor), and before it saves the ratchet state that
//! decrypted it; it writes its own sends once the server stored them. A
//! message is keyed by `(conversation_id, seq)`, so a redelivery of a
//! message already here is recognised and never decrypted again.
//!
//! # Schema (version 1, the `user_version` pragma)
//!
//! * `messages`: one row per message: conversation, seq (unique together),
//!   sender user and device, server time (ms), the encoded
//!   [`Content`] (`content`), its text for text messages (`text`), `own`
//!   (sent by this device) and `handed_out` (already returned to the app
//!   by `next_event`).
//! * `message_text`: an FTS5 index of `text` (external content, filled by
//!   an insert trigger), for [`MessageStore::search`].
//!
//! The schema is created, or migrated from an older version, when the file
//! is opened; a file from a newer tern is refused
//! ([`MessageStoreError::TooNew`]). Every write is one transaction.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::content::Content;

/// The store's file name in the state directory.
pub const MESSAGE_STORE_FILE: &str = "messages.sqlite3";

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Version 0 → 1: the messages table and its full-text index.
const SCHEMA_V1: &str = "
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    sender_user TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    server_time_ms INTEGER NOT NULL,
    content BLOB NOT NULL,
    text TEXT,
    own INTEGER NOT NULL,
    handed_out INTEGER NOT NULL,
    UNIQUE (conversation_id, seq)
);
CREATE VIRTUAL TABLE message_text USING fts5(text, content = 'messages', content_rowid = 'id');
CREATE TRIGGER messages_text_index AFTER INSERT ON messages WHEN new.text IS NOT NULL BEGIN
    INSERT INTO message_text (rowid, text) VALUES (new.id, new.text);
END;
";

/// Why the message store failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageStoreError {
    /// The file could not be opened or set up.
    #[error("cannot open the message store {path}: {source}; check that the state directory is writable and the disk is not full")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file could not be created with owner-only permissions.
    #[error("cannot create the message store {path}: {source}; check that the state directory is writable")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was written by a newer tern.
    #[error("the message store {path} has schema version {found}, newer than this build's {SCHEMA_VERSION}; upgrade tern to read it")]
    TooNew { path: PathBuf, found: i64 },
    /// A read or write failed.
    #[error("message store {path}: {source}; check that the disk is not full (if the file is damaged, move it away: tern starts a new one)")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// A stored message's content no longer decodes.
    #[error("the stored message {conversation_id} #{seq} is damaged ({reason})")]
    Damaged {
        conversation_id: u64,
        seq: u64,
        reason: String,
    },
    /// A search without a word to look for.
    #[error("the search text has no words; give at least one word to look for")]
    EmptySearch,
    /// A history or search limit of 0.
    #[error("the limit must be at least 1 message")]
    ZeroLimit,
}

/// One message as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The conversation it belongs to.
    pub conversation_id: u64,
    /// Its place in the conversation (unique there).
    pub seq: u64,
    /// Who sent it.
    pub sender_user: String,
    /// From which of the sender's devices.
    pub sender_device: u32,
    /// When the server stored it (ms since the Unix epoch).
    pub server_time_ms: u64,
    /// What it says.
    pub content: Content,
    /// Sent by this device.
    pub own: bool,
}

impl StoredMessage {
    /// The text of a text message, `None` for other kinds.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Text { body } => Some(body),
            _ => None,
        }
    }
}

/// What [`MessageStore::get`] finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The message.
    pub message: StoredMessage,
    /// Whether it was already returned to the app.
    pub handed_out: bool,
}

/// The open message store. See the module docs. Calls block on the file
/// for a short, bounded time (one small transaction each).
#[derive(Debug)]
pub struct MessageStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const COLUMNS: &str =
    "conversation_id, seq, sender_user, sender_device, server_time_ms, content, own, handed_out";

impl MessageStore {
    /// Opens (creating or migrating) the store at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<MessageStore, MessageStoreError> {
        let path = path.into();
        let open_error = |source| MessageStoreError::Open {
            path: path.clone(),
            source,
        };
        create_private(&path).map_err(|source| MessageStoreError::Create {
            path: path.clone(),
            source,
        })?;
        let mut conn = Connection::open(&path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        migrate(&mut conn, &path)?;
        Ok(MessageStore {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `message` unless one with its conversation and seq is
    /// stored already; returns whether it was new. `handed_out` records
    /// whether the app is being given it now.
    pub fn insert(
        &self,
        message: &StoredMessage,
        handed_out: bool,
    ) -> Result<bool, MessageStoreError> {
        self.write(|tx| {
            let added = tx.execute(
                "INSERT OR IGNORE INTO messages (conversation_id, seq, sender_user, sender_device, server_time_ms, content, text, own, handed_out) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    message.conversation_id as i64,
                    message.seq as i64,
                    message.sender_user,
                    message.sender_device,
                    message.server_time_ms as i64,
                    message.content.encode(),
                    message.text(),
                    message.own,
                    handed_out,
                ],
            )?;
            Ok(added == 1)
        })
    }

    /// Records that the app was given this message.
    pub fn mark_handed_out(&self, conversation_id: u64, seq: u64) -> Result<(), MessageStoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE messages SET handed_out = 1 WHERE conversation_id = ?1 AND seq = ?2",
                params![conversation_id as i64, seq as i64],
            )?;
            Ok(())
        })
    }

    /// The stored message at `(conversation_id, seq)`, if any.
    pub fn get(&self, conversation_id: u64, seq: u64) -> Result<Option<Found>, MessageStoreError> {
        let sql = format!("SELECT {COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq = ?2");
        let conn = self.lock();
        let row = conn
            .query_row(&sql, params![conversation_id as i64, seq as i64], raw)
            .optional()
            .map_err(|e| self.failed(e))?;
        row.map(|r| {
            r.decode().map(|(message, handed_out)| Found {
                message,
                handed_out,
            })
        })
        .transpose()
    }

    /// The last `limit` messages of a conversation, oldest first.
    pub fn history(
        &self,
        conversation_id: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, MessageStoreError> {
        if limit == 0 {
            return Err(MessageStoreError::ZeroLimit);
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT ?2"
        );
        let mut found = self.select(&sql, params![conversation_id as i64, limit])?;
        found.reverse();
        Ok(found)
    }

    /// The latest `limit` text messages, in any conversation, that contain
    /// every word of `text` (whole words, any case), oldest first.
    pub fn search(&self, text: &str, limit: u32) -> Result<Vec<StoredMessage>, MessageStoreError> {
        if limit == 0 {
            return Err(MessageStoreError::ZeroLimit);
        }
        let query = fts_query(text).ok_or(MessageStoreError::EmptySearch)?;
        let columns = COLUMNS.replace(", ", ", m.");
        let sql = format!(
            "SELECT m.{columns} FROM message_text JOIN messages m ON m.id = message_text.rowid \
             WHERE message_text MATCH ?1 ORDER BY m.server_time_ms DESC, m.id DESC LIMIT ?2"
        );
        let mut found = self.select(&sql, params![query, limit])?;
        found.reverse();
        Ok(found)
    }

    fn select(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredMessage>, MessageStoreError> {
        let conn = self.lock();
        let rows: Vec<RawRow> = conn
            .prepare(sql)
            .and_then(|mut statement| statement.query_map(params, raw)?.collect())
            .map_err(|e| self.failed(e))?;
        rows.into_iter()
            .map(|r| r.decode().map(|(message, _)| message))
            .collect()
    }

    /// Runs `f` in one transaction, committed (durably) when it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, MessageStoreError> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| {
            let tx = conn.transaction()?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run(&mut conn).map_err(|e| self.failed(e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn failed(&self, source: rusqlite::Error) -> MessageStoreError {
        MessageStoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

/// Brings the schema from the file's version to [`SCHEMA_VERSION`].
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), MessageStoreError> {
    let open_error = |source| MessageStoreError::Open {
        path: path.to_owned(),
        source,
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(open_error)?;
    if found > SCHEMA_VERSION {
        return Err(MessageStoreError::TooNew {
            path: path.to_owned(),
            found,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction().map_err(open_error)?;
    if found < 1 {
        tx.execute_batch(SCHEMA_V1).map_err(open_error)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(open_error)?;
    tx.commit().map_err(open_error)
}

/// A row as read, before its content is decoded.
struct RawRow {
    conversation_id: u64,
    seq: u64,
    sender_user: String,
    sender_device: u32,
    server_time_ms: u64,
    content: Vec<u8>,
    own: bool,
    handed_out: bool,
}

/// Reads the [`COLUMNS`] of a row.
fn raw(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        conversation_id: row.get::<_, i64>(0)? as u64,
        seq: row.get::<_, i64>(1)? as u64,
        sender_user: row.get(2)?,
        sender_device: row.get(3)?,
        server_time_ms: row.get::<_, i64>(4)? as u64,
        content: row.get(5)?,
        own: row.get(6)?,
        handed_out: row.get(7)?,
    })
}

impl RawRow {
    fn decode(self) -> Result<(StoredMessage, bool), MessageStoreError> {
        let content = Content::decode(&self.content).map_err(|e| MessageStoreError::Damaged {
            conversation_id: self.conversation_id,
            seq: self.seq,
            reason: e.to_string(),
        })?;
        let message = StoredMessage {
            conversation_id: self.conversation_id,
            seq: self.seq,
            sender_user: self.sender_user,
            sender_device: self.sender_device,
            server_time_ms: self.server_time_ms,
            content,
            own: self.own,
        };
        Ok((message, self.handed_out))
    }
}

/// `text` as an FTS5 query matching every word of it as written (each word
/// quoted, so no character of it is query syntax); `None` without words.
fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Creates the database file readable by its owner only (0600) if it does
/// not exist yet: it holds plaintext. SQLite gives its `-wal` and `-shm`
/// files the database file's permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_database_and_its_journal_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join("messages.sqlite3")).unwrap();
        store.insert(&text(1, 1, "secret"), false).unwrap();
        for name in [
            "messages.sqlite3",
            "messages.sqlite3-wal",
            "messages.sqlite3-shm",
        ] {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            let mode = meta.permissions().mode();
            assert_eq!(mode & 0o077, 0, "{name} is readable by others: {mode:o}");
        }
    }

    fn text(conversation_id: u64, seq: u64, body: &str) -> StoredMessage {
        StoredMessage {
            conversation_id,
            seq,
            sender_user: "alice".into(),
            sender_device: 1,
            server_time_ms: 1_000 + seq,
            content: Content::text(body),
            own: false,
        }
    }

    fn open(dir: &tempfile::TempDir) -> MessageStore {
        MessageStore::open(dir.path().join(MESSAGE_STORE_FILE)).unwrap()
    }

    fn seqs(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn opening_creates_the_schema_and_reopening_keeps_the_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert!(store.insert(&text(7, 1, "kept"), true).unwrap());
        drop(store);
        let store = open(&dir);
        let version: i64 = store
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = store
            .lock()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(store.history(7, 10).unwrap(), vec![text(7, 1, "kept")]);
    }

    #[test]
    fn a_file_from_a_newer_tern_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MESSAGE_STORE_FILE);
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let error = MessageStore::open(&path).unwrap_err();
        assert!(
            matches!(error, MessageStoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1)
        );
        assert!(error.to_string().contains("upgrade tern"), "{error}");
    }

    #[test]
    fn a_message_is_stored_once_and_found_by_conversation_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert!(store.insert(&text(7, 3, "first"), false).unwrap());
        assert!(!store.insert(&text(7, 3, "again"), true).unwrap());
        let found = store.get(7, 3).unwrap().unwrap();
        assert_eq!(found.message, text(7, 3, "first"));
        assert!(!found.handed_out);
        store.mark_handed_out(7, 3).unwrap();
        assert!(store.get(7, 3).unwrap().unwrap().handed_out);
        assert_eq!(store.get(7, 4).unwrap(), None);
        assert_eq!(store.get(8, 3).unwrap(), None);
        assert_eq!(store.history(7, 10).unwrap().len(), 1);
    }

    #[test]
    fn history_is_the_latest_messages_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for seq in [5, 1, 4, 2, 3] {
            store.insert(&text(7, seq, "x"), true).unwrap();
        }
        store.insert(&text(u64::MAX, 1, "other"), true).unwrap();
        assert_eq!(seqs(&store.history(7, 10).unwrap()), [1, 2, 3, 4, 5]);
        assert_eq!(seqs(&store.history(7, 2).unwrap()), [4, 5]);
        assert_eq!(
            store.history(u64::MAX, 5).unwrap()[0].conversation_id,
            u64::MAX
        );
        assert!(store.history(9, 5).unwrap().is_empty());
        assert!(matches!(
            store.history(7, 0),
            Err(MessageStoreError::ZeroLimit)
        ));
    }

    #[test]
    fn search_finds_every_word_in_any_conversation_and_ignores_query_syntax() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.insert(&text(1, 1, "Lunch at noon?"), true).unwrap();
        store.insert(&text(2, 5, "no lunch today"), true).unwrap();
        store
            .insert(&text(2, 6, "dinner AND \"drinks\""), true)
            .unwrap();
        let unknown = StoredMessage {
            content: Content::Unknown {
                kind: 9,
                payload: b"lunch".to_vec(),
            },
            ..text(3, 1, "")
        };
        store.insert(&unknown, true).unwrap();
        let found = store.search("LUNCH", 10).unwrap();
        assert_eq!(
            found
                .iter()
                .map(|m| (m.conversation_id, m.seq))
                .collect::<Vec<_>>(),
            [(1, 1), (2, 5)]
        );
        assert_eq!(seqs(&store.search("lunch today", 10).unwrap()), [5]);
        assert_eq!(seqs(&store.search("lunch", 1).unwrap()), [5]);
        assert_eq!(seqs(&store.search("\"drinks\" AND", 10).unwrap()), [6]);
        assert!(store.search("breakfast", 10).unwrap().is_empty());
        assert!(matches!(
            store.search("  ", 10),
            Err(MessageStoreError::EmptySearch)
        ));
    }

    #[test]
    fn a_damaged_row_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.insert(&text(7, 1, "x"), true).unwrap();
        store
            .lock()
            .execute("UPDATE messages SET content = x'09'", [])
            .unwrap();
        let error = store.history(7, 1).unwrap_err();
        assert!(
            matches!(
                error,
                MessageStoreError::Damaged {
                    conversation_id: 7,
                    seq: 1,
                    ..
                }
            ),
            "{error}"
        );
    }
}
