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
//! # Schema (version 5, the `user_version` pragma)
//!
//! * `messages`: one row per message: conversation, seq (unique together),
//!   sender user and device, server time (ms), the encoded
//!   [`Content`] (`content`, the *latest* text after edits), its text for
//!   text messages and replies (`text`), `own` (sent by this device) and
//!   `handed_out` (already returned to the app by `next_event`). Version 2
//!   adds `hidden` (a reaction, edit, receipt or delete: kept so a
//!   redelivery is recognised, never shown as a message), `deleted` (a
//!   tombstone: content and text erased, the row stays so the history shows
//!   "message deleted"), `edited_at_ms` and `edit_seq` (the server time and
//!   seq of the edit applied last) and `reply_to` (the seq a reply quotes).
//! * `message_text`: an FTS5 index of `text` (external content, kept up to
//!   date by insert and update triggers), for [`MessageStore::search`].
//! * `reactions` (v2): one emoji per (conversation, seq, user), with the
//!   seq of the reaction message that set it (a later one replaces it).
//! * `message_recipients` (v2): the users each of this account's visible
//!   messages was sent to (recorded at send), for per-recipient state.
//! * `receipts` (v2): per (conversation, user), the highest seq that user
//!   confirmed delivered and read. The row of this account's own user is
//!   its **read position** in the conversation, synced across its devices
//!   by its own read receipts.
//! * `settings` (v2): `read_receipts` (1 on, 0 off; absent: on).
//! * v3 adds `messages.expires_at_ms`: when a disappearing message's local
//!   copy is deleted (ms since the Unix epoch; 0 = kept). Expired rows are
//!   deleted, not hidden, with their reactions, recipients and full-text
//!   entries ([`MessageStore::purge_expired`]): when the file is opened,
//!   before every history or search read, and whenever the app calls it.
//! * v4 adds `messages.after_seq` and keeps own sends the server
//!   acknowledged without a seq (a send to a user who blocks this account)
//!   under negative local keys ([`unsequenced`]): a history is ordered by
//!   position, not by the `seq` column.
//! * v5 adds `calls`, the call history ([`calls`]).
//!
//! The effects of a reaction, edit, delete or receipt are applied in the
//! same transaction that stores it ([`MessageStore::insert`]), by the rules
//! of [`edit_refusal`] and [`delete_refusal`]; a content that breaks them
//! is stored (hidden) and has no effect.
//!
//! The schema is created, or migrated from an older version, when the file
//! is opened; a file from a newer tern is refused
//! ([`MessageStoreError::TooNew`]). Every write is one transaction.

pub mod calls;
mod expiry;
mod forget;
mod latest;
mod quotes;
mod unsequenced;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::content::{Content, ReceiptKind};

/// The store's file name in the state directory.
pub const MESSAGE_STORE_FILE: &str = "messages.sqlite3";

/// The schema version this build writes (4: [`unsequenced`], 5:
/// [`calls::CALLS_SINCE`]).
pub const SCHEMA_VERSION: i64 = 5;

/// How long after the original's server time its sender may edit it (ms).
pub const EDIT_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

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

/// Version 1 → 2: reactions, edits, tombstones, replies, receipts, read
/// positions and settings. Existing rows are visible messages.
const SCHEMA_V2: &str = "
ALTER TABLE messages ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN edited_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN edit_seq INTEGER;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
CREATE TRIGGER messages_text_reindex AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO message_text (message_text, rowid, text)
        SELECT 'delete', old.id, old.text WHERE old.text IS NOT NULL;
    INSERT INTO message_text (rowid, text) SELECT new.id, new.text WHERE new.text IS NOT NULL;
END;
CREATE TABLE reactions (
    conversation_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    user TEXT NOT NULL,
    emoji TEXT NOT NULL,
    reaction_seq INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq, user)
) WITHOUT ROWID;
CREATE TABLE message_recipients (
    conversation_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq, user)
) WITHOUT ROWID;
CREATE TABLE receipts (
    conversation_id INTEGER NOT NULL,
    user TEXT NOT NULL,
    delivered_up_to INTEGER NOT NULL DEFAULT 0,
    read_up_to INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user)
) WITHOUT ROWID;
CREATE TABLE settings (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
";

/// Version 2 → 3: local expiry of disappearing messages (0 = kept).
const SCHEMA_V3: &str = "
ALTER TABLE messages ADD COLUMN expires_at_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_expiry ON messages (expires_at_ms) WHERE expires_at_ms > 0;
";

/// Why an edit is refused (locally by the SDK) or ignored (by receivers).
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditRefusal {
    #[error("there is no such message on this device")]
    NotFound,
    #[error("only the message's sender may edit it")]
    NotSender,
    #[error("the message is more than 24 hours old and can no longer be edited")]
    TooLate,
    #[error("only text messages and replies can be edited")]
    NotText,
    #[error("the message was deleted")]
    Deleted,
}

/// Why a delete for everyone is refused (locally) or ignored (by receivers).
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeleteRefusal {
    #[error("there is no such message on this device")]
    NotFound,
    #[error(
        "only the message's sender (or, in a group, an administrator) may delete it for everyone"
    )]
    NotSender,
    #[error("only messages can be deleted, not reactions, edits or receipts")]
    NotAMessage,
}

/// Whether `editor` may replace the text of `original` with an edit the
/// server stored at `at_ms`: the same user as the sender, within
/// [`EDIT_WINDOW_MS`] of the original's server time, a text or reply not
/// deleted. The SDK checks it before sending (with its clock) and every
/// receiver again (with the edit's server time).
pub fn edit_refusal(original: Option<&Target>, editor: &str, at_ms: u64) -> Option<EditRefusal> {
    let Some(t) = original else {
        return Some(EditRefusal::NotFound);
    };
    if t.deleted {
        return Some(EditRefusal::Deleted);
    }
    if t.message.sender_user != editor {
        return Some(EditRefusal::NotSender);
    }
    if t.message.content.body().is_none() {
        return Some(EditRefusal::NotText);
    }
    if at_ms.saturating_sub(t.message.server_time_ms) > EDIT_WINDOW_MS {
        return Some(EditRefusal::TooLate);
    }
    None
}

/// Whether `deleter` may delete `original` for everyone as its sender. In
/// groups an administrator may delete others' messages too
/// ([`DeleteRefusal::NotSender`] then): the SDK asks the server who
/// administers the group (`secure::content_ops`), which this store cannot.
pub fn delete_refusal(original: Option<&Target>, deleter: &str) -> Option<DeleteRefusal> {
    let Some(t) = original else {
        return Some(DeleteRefusal::NotFound);
    };
    if !t.message.content.is_visible() {
        return Some(DeleteRefusal::NotAMessage);
    }
    if t.message.sender_user != deleter {
        return Some(DeleteRefusal::NotSender);
    }
    None
}

/// A stored message that a reaction, edit, reply or delete refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The message (for a tombstone: with an empty text).
    pub message: StoredMessage,
    /// Deleted (a tombstone).
    pub deleted: bool,
}

/// Where one of this account's messages is, for one recipient user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Delivery {
    /// The server stored it (acknowledged the send).
    Sent,
    /// One of the recipient's devices stored it.
    Delivered,
    /// The recipient read it (never shown while this account's own read
    /// receipts are off).
    Read,
}

/// A visible message as a history shows it: the message with the latest
/// text, its deletion, edit, reactions and, for this account's own
/// messages, where it got to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageView {
    /// The message (latest text; empty once deleted).
    pub message: StoredMessage,
    /// Deleted (for this device or for everyone): show "message deleted".
    pub deleted: bool,
    /// The server time (ms) of the edit shown, if it was edited.
    pub edited_at_ms: Option<u64>,
    /// `(user, emoji)` reactions, by user.
    pub reactions: Vec<(String, String)>,
    /// For messages of this account: `(recipient user, state)`, by user.
    pub receipts: Vec<(String, Delivery)>,
}

impl MessageView {
    /// The state of an own message over all its recipients (the least
    /// advanced one); `None` for others' messages or without recipients.
    pub fn overall(&self) -> Option<Delivery> {
        self.receipts.iter().map(|(_, d)| *d).min()
    }
}

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
    /// A seq that names no message: 0 (messages are numbered from 1; one
    /// the server did not number is shown without a number and cannot be
    /// referred to) or one past the largest a server gives.
    #[error("conversation {conversation_id} has no message #{seq}: messages are numbered from 1, and one shown without a number (the server did not number it) cannot be reacted to, replied to, edited or deleted")]
    NoSuchSeq { conversation_id: u64, seq: u64 },
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
    /// When this device deletes its copy (ms since the Unix epoch; 0 =
    /// kept): the expiry the conversation's disappearing-message timer gave
    /// it (the server deletes its copy at the same time).
    pub expires_at_ms: u64,
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

const COLUMNS: &str = "conversation_id, seq, sender_user, sender_device, server_time_ms, content, own, handed_out, expires_at_ms";

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
        // Deleted rows (expired or forgotten) are overwritten with zeros,
        // not left readable in free pages.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(open_error)?;
        migrate(&mut conn, &path)?;
        let store = MessageStore {
            path,
            conn: Mutex::new(conn),
        };
        store.purge_expired(expiry::now_ms())?;
        Ok(store)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `message` unless one with its conversation and seq is
    /// stored already; returns whether it was new. `handed_out` records
    /// whether the app is being given it now. A new reaction, edit, delete
    /// or receipt is stored hidden and its effect applied in the same
    /// transaction (see the module docs; one that breaks the rules has
    /// none). A message with seq 0 (an own send the server did not number)
    /// is always new ([`unsequenced`]).
    ///
    /// # Errors
    /// [`MessageStoreError::NoSuchSeq`] for a seq past `i64::MAX`;
    /// [`MessageStoreError::Sqlite`] when the file cannot be written.
    pub fn insert(
        &self,
        message: &StoredMessage,
        handed_out: bool,
    ) -> Result<bool, MessageStoreError> {
        self.insert_with(message, handed_out, &[])
    }

    /// Stores a message this device sent (handed out) with the users it
    /// went to (for receipt states), in one transaction; as
    /// [`MessageStore::insert`] otherwise.
    pub fn insert_sent(
        &self,
        message: &StoredMessage,
        recipients: &[String],
    ) -> Result<bool, MessageStoreError> {
        self.insert_with(message, true, recipients)
    }

    fn insert_with(
        &self,
        message: &StoredMessage,
        handed_out: bool,
        recipients: &[String],
    ) -> Result<bool, MessageStoreError> {
        if message.seq == 0 {
            return self.write(|tx| {
                unsequenced::insert(tx, message, handed_out, recipients)?;
                apply_effect(tx, message)?;
                Ok(true)
            });
        }
        unsequenced::require_key(message.conversation_id, message.seq)?;
        self.write(|tx| {
            let reply_to = match &message.content {
                Content::Reply { target_seq, .. } => Some(*target_seq as i64),
                _ => None,
            };
            let added = tx.execute(
                "INSERT OR IGNORE INTO messages (conversation_id, seq, sender_user, sender_device, server_time_ms, content, text, own, handed_out, hidden, reply_to, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    message.conversation_id as i64,
                    message.seq as i64,
                    message.sender_user,
                    message.sender_device,
                    message.server_time_ms as i64,
                    message.content.encode(),
                    message.content.body(),
                    message.own,
                    handed_out,
                    !message.content.is_visible(),
                    reply_to,
                    message.expires_at_ms as i64,
                ],
            )?;
            if added == 1 {
                apply_effect(tx, message)?;
                let key = message.seq as i64;
                unsequenced::add_recipients(tx, message.conversation_id, key, recipients)?;
            }
            Ok(added == 1)
        })
    }

    /// The message at `(conversation_id, seq)` that another one may refer
    /// to, with whether it was deleted; `None` if not stored.
    ///
    /// # Errors
    /// [`MessageStoreError::NoSuchSeq`] for seq 0 or one past `i64::MAX`.
    pub fn target(
        &self,
        conversation_id: u64,
        seq: u64,
    ) -> Result<Option<Target>, MessageStoreError> {
        unsequenced::require_key(conversation_id, seq)?;
        let conn = self.lock();
        target_in(&conn, conversation_id, seq)
            .map_err(|e| self.failed(e))?
            .transpose()
    }

    /// Deletes a visible message on this device only (delete for me, or
    /// the local effect of a delete for everyone): its content and text are
    /// erased and its reactions dropped, and a tombstone row stays so the
    /// history shows "message deleted". Returns whether there was such a
    /// message (not already deleted).
    pub fn delete_for_me(&self, conversation_id: u64, seq: u64) -> Result<bool, MessageStoreError> {
        self.write(|tx| tombstone(tx, conversation_id, seq))
    }

    /// Stores the server's tombstone of a message this device never had
    /// (deleted for everyone before it arrived): a deleted row, so the
    /// history shows "message deleted" at its seq. `times` is the message's
    /// `(server_time_ms, expires_at_ms)`: the tombstone expires with it
    /// (0: kept). Returns whether it was new (a message already stored is
    /// left as it is).
    pub fn insert_tombstone(
        &self,
        conversation_id: u64,
        seq: u64,
        sender_user: &str,
        sender_device: u32,
        times: (u64, u64),
    ) -> Result<bool, MessageStoreError> {
        let (server_time_ms, expires_at_ms) = times;
        if unsequenced::key_of(seq).is_none() {
            return Ok(false);
        }
        self.write(|tx| {
            let added = tx.execute(
                "INSERT OR IGNORE INTO messages (conversation_id, seq, sender_user, sender_device, server_time_ms, content, own, handed_out, deleted, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 1, 1, ?7)",
                params![
                    conversation_id as i64,
                    seq as i64,
                    sender_user,
                    sender_device,
                    server_time_ms as i64,
                    Content::text("").encode(),
                    expires_at_ms as i64,
                ],
            )?;
            Ok(added == 1)
        })
    }

    /// Records the users an own visible message was sent to (this
    /// account's own user excluded by the caller).
    pub fn record_recipients(
        &self,
        conversation_id: u64,
        seq: u64,
        users: &[String],
    ) -> Result<(), MessageStoreError> {
        self.write(|tx| {
            for user in users {
                tx.execute(
                    "INSERT OR IGNORE INTO message_recipients (conversation_id, seq, user) VALUES (?1, ?2, ?3)",
                    params![conversation_id as i64, seq as i64, user],
                )?;
            }
            Ok(())
        })
    }

    /// Raises `user`'s confirmed position in a conversation (a read also
    /// raises delivered); returns whether it moved. With `user` this
    /// account's own, a read sets its read position.
    pub fn record_receipt(
        &self,
        conversation_id: u64,
        user: &str,
        receipt: ReceiptKind,
        up_to_seq: u64,
    ) -> Result<bool, MessageStoreError> {
        self.write(|tx| raise_receipt(tx, conversation_id, user, receipt, up_to_seq))
    }

    /// `user`'s confirmed `(delivered, read)` positions in a conversation
    /// (0 when none). For this account's own user, `read` is its read
    /// position.
    pub fn receipt_positions(
        &self,
        conversation_id: u64,
        user: &str,
    ) -> Result<(u64, u64), MessageStoreError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT delivered_up_to, read_up_to FROM receipts WHERE conversation_id = ?1 AND user = ?2",
            params![conversation_id as i64, user],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .optional()
        .map(Option::unwrap_or_default)
        .map_err(|e| self.failed(e))
    }

    /// The conversations with a visible message from a user other than
    /// `me` (an unreadable one aside) past `me`'s delivered position, with
    /// the highest such seq: the delivered receipts still owed, e.g. after
    /// a process ended before sending them.
    pub fn undelivered(&self, me: &str) -> Result<Vec<(u64, u64)>, MessageStoreError> {
        let conn = self.lock();
        conn.prepare(
            "SELECT m.conversation_id, MAX(m.seq) FROM messages m \
             LEFT JOIN receipts r ON r.conversation_id = m.conversation_id AND r.user = ?1 \
             WHERE m.hidden = 0 AND m.sender_user != ?1 AND substr(m.content, 2, 1) != x'00' \
               AND m.seq > COALESCE(r.delivered_up_to, 0) \
             GROUP BY m.conversation_id",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![me], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
                })?
                .collect()
        })
        .map_err(|e| self.failed(e))
    }

    /// Whether this account sends read receipts and sees others' (default: on).
    pub fn read_receipts(&self) -> Result<bool, MessageStoreError> {
        let conn = self.lock();
        read_receipts_in(&conn).map_err(|e| self.failed(e))
    }

    /// Turns read receipts on or off (persisted).
    pub fn set_read_receipts(&self, on: bool) -> Result<(), MessageStoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ('read_receipts', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![on],
            )?;
            Ok(())
        })
    }

    /// The highest seq of a visible message stored for a conversation.
    pub fn latest_seq(&self, conversation_id: u64) -> Result<Option<u64>, MessageStoreError> {
        self.purge_expired(expiry::now_ms())?;
        let conn = self.lock();
        conn.query_row(
            "SELECT MAX(seq) FROM messages WHERE conversation_id = ?1 AND hidden = 0 AND seq > 0",
            params![conversation_id as i64],
            |r| r.get::<_, Option<i64>>(0),
        )
        .map(|seq| seq.map(|s| s as u64))
        .map_err(|e| self.failed(e))
    }

    /// Every row of a conversation, hidden ones (reactions, edits,
    /// receipts, deletes) included, in history order (seq order, with
    /// unsequenced own sends where they were sent): what reached this
    /// device.
    pub fn log(&self, conversation_id: u64) -> Result<Vec<StoredMessage>, MessageStoreError> {
        let order = unsequenced::POSITION;
        let sql =
            format!("SELECT {COLUMNS} FROM messages WHERE conversation_id = ?1 ORDER BY {order}");
        self.select(&sql, params![conversation_id as i64])
    }

    /// The last `limit` visible messages of a conversation, oldest first,
    /// as a history shows them ([`MessageView`]); `me` is this account's
    /// user, whose messages carry their recipients' states.
    pub fn view(
        &self,
        conversation_id: u64,
        limit: u32,
        me: &str,
    ) -> Result<Vec<MessageView>, MessageStoreError> {
        let messages = self.history_keyed(conversation_id, limit)?;
        let conn = self.lock();
        let see_reads = read_receipts_in(&conn).map_err(|e| self.failed(e))?;
        messages
            .into_iter()
            .map(|(message, key)| {
                view_of(&conn, message, key, me, see_reads).map_err(|e| self.failed(e))
            })
            .collect()
    }

    /// Records that the app was given this message.
    pub fn mark_handed_out(&self, conversation_id: u64, seq: u64) -> Result<(), MessageStoreError> {
        if unsequenced::key_of(seq).is_none() {
            return Ok(());
        }
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
        if unsequenced::key_of(seq).is_none() {
            return Ok(None);
        }
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

    /// The last `limit` visible messages of a conversation (not reactions,
    /// edits, receipts or deletes; tombstones included, with an empty
    /// text), oldest first: by seq, each own send the server did not
    /// number (seq 0) after the message that was latest when it was sent.
    pub fn history(
        &self,
        conversation_id: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, MessageStoreError> {
        let keyed = self.history_keyed(conversation_id, limit)?;
        Ok(keyed.into_iter().map(|(message, _)| message).collect())
    }

    /// [`MessageStore::history`] with each row's key (its seq, or the
    /// negative local key of an unsequenced row).
    fn history_keyed(
        &self,
        conversation_id: u64,
        limit: u32,
    ) -> Result<Vec<(StoredMessage, i64)>, MessageStoreError> {
        if limit == 0 {
            return Err(MessageStoreError::ZeroLimit);
        }
        self.purge_expired(expiry::now_ms())?;
        let order = unsequenced::POSITION_DESC;
        let sql = format!(
            "SELECT {COLUMNS}, seq FROM messages WHERE conversation_id = ?1 AND hidden = 0 ORDER BY {order} LIMIT ?2"
        );
        let conn = self.lock();
        let rows: Vec<(RawRow, i64)> = conn
            .prepare(&sql)
            .and_then(|mut statement| {
                statement
                    .query_map(params![conversation_id as i64, limit], |r| {
                        Ok((raw(r)?, r.get::<_, i64>(9)?))
                    })?
                    .collect()
            })
            .map_err(|e| self.failed(e))?;
        let mut found = rows
            .into_iter()
            .map(|(r, key)| r.decode().map(|(message, _)| (message, key)))
            .collect::<Result<Vec<_>, _>>()?;
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
        self.purge_expired(expiry::now_ms())?;
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
    if found < 2 {
        tx.execute_batch(SCHEMA_V2).map_err(open_error)?;
    }
    if found < 3 {
        tx.execute_batch(SCHEMA_V3).map_err(open_error)?;
    }
    if found < 4 {
        tx.execute_batch(unsequenced::SCHEMA_V4)
            .map_err(open_error)?;
    }
    if found < calls::CALLS_SINCE {
        tx.execute_batch(calls::SCHEMA_CALLS).map_err(open_error)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(open_error)?;
    tx.commit().map_err(open_error)
}

/// Applies the effect of a newly stored reaction, edit, delete or receipt
/// (none for other kinds, or when the rules refuse it).
fn apply_effect(tx: &rusqlite::Transaction<'_>, m: &StoredMessage) -> rusqlite::Result<()> {
    let conversation = m.conversation_id;
    match &m.content {
        Content::Reaction { target_seq, emoji } => {
            let target = target_in(tx, conversation, *target_seq)?;
            let reactable = target
                .and_then(Result::ok)
                .is_some_and(|t| !t.deleted && t.message.content.is_visible());
            if reactable {
                react(tx, m, *target_seq, emoji)?;
            }
        }
        Content::Edit { target_seq, body } => {
            let target = target_in(tx, conversation, *target_seq)?.and_then(Result::ok);
            if edit_refusal(target.as_ref(), &m.sender_user, m.server_time_ms).is_none() {
                if let Some(t) = target {
                    edit(tx, &t.message, m, body)?;
                }
            }
        }
        Content::Delete { target_seq } => {
            let target = target_in(tx, conversation, *target_seq)?.and_then(Result::ok);
            if delete_refusal(target.as_ref(), &m.sender_user).is_none() {
                tombstone(tx, conversation, *target_seq)?;
            }
        }
        Content::Receipt { receipt, up_to_seq } => {
            raise_receipt(tx, conversation, &m.sender_user, *receipt, *up_to_seq)?;
        }
        Content::Reply { target_seq, .. }
            if quotes::target_gone(tx, conversation, *target_seq, m.expires_at_ms)? =>
        {
            quotes::unquote_replies(tx, conversation, *target_seq)?;
        }
        _ => {}
    }
    Ok(())
}

/// Sets (a later reaction message wins) or, for an empty emoji, removes
/// the reaction of `m`'s sender to `target_seq`.
fn react(
    tx: &rusqlite::Transaction<'_>,
    m: &StoredMessage,
    target_seq: u64,
    emoji: &str,
) -> rusqlite::Result<()> {
    let keys = params![
        m.conversation_id as i64,
        target_seq as i64,
        m.sender_user,
        m.seq as i64,
        emoji
    ];
    let sql = match emoji.is_empty() {
        true => "DELETE FROM reactions WHERE conversation_id = ?1 AND seq = ?2 AND user = ?3 AND reaction_seq < ?4 AND ?5 = ''",
        false => "INSERT INTO reactions (conversation_id, seq, user, reaction_seq, emoji) VALUES (?1, ?2, ?3, ?4, ?5) \
                  ON CONFLICT (conversation_id, seq, user) DO UPDATE SET emoji = excluded.emoji, reaction_seq = excluded.reaction_seq \
                  WHERE excluded.reaction_seq > reactions.reaction_seq",
    };
    tx.execute(sql, keys).map(drop)
}

/// Replaces the text of `original` by the edit `m` (a later edit wins).
fn edit(
    tx: &rusqlite::Transaction<'_>,
    original: &StoredMessage,
    m: &StoredMessage,
    body: &str,
) -> rusqlite::Result<()> {
    let content = match &original.content {
        Content::Reply {
            target_seq, quote, ..
        } => Content::Reply {
            target_seq: *target_seq,
            quote: quote.clone(),
            body: body.to_owned(),
        },
        _ => Content::text(body),
    };
    tx.execute(
        "UPDATE messages SET content = ?1, text = ?2, edited_at_ms = ?3, edit_seq = ?4 \
         WHERE conversation_id = ?5 AND seq = ?6 AND (edit_seq IS NULL OR edit_seq < ?4)",
        params![
            content.encode(),
            body,
            m.server_time_ms as i64,
            m.seq as i64,
            original.conversation_id as i64,
            original.seq as i64
        ],
    )
    .map(drop)
}

/// Turns a visible message into a tombstone; whether there was one.
fn tombstone(
    tx: &rusqlite::Transaction<'_>,
    conversation_id: u64,
    seq: u64,
) -> rusqlite::Result<bool> {
    if unsequenced::key_of(seq).is_none() {
        return Ok(false);
    }
    let erased = tx.execute(
        "UPDATE messages SET deleted = 1, content = ?1, text = NULL, reply_to = NULL \
         WHERE conversation_id = ?2 AND seq = ?3 AND hidden = 0 AND deleted = 0",
        params![
            Content::text("").encode(),
            conversation_id as i64,
            seq as i64
        ],
    )?;
    tx.execute(
        "DELETE FROM reactions WHERE conversation_id = ?1 AND seq = ?2",
        params![conversation_id as i64, seq as i64],
    )?;
    quotes::unquote_replies(tx, conversation_id, seq)?;
    Ok(erased == 1)
}

/// Raises `user`'s receipt positions; whether one moved.
fn raise_receipt(
    tx: &rusqlite::Transaction<'_>,
    conversation_id: u64,
    user: &str,
    receipt: ReceiptKind,
    up_to_seq: u64,
) -> rusqlite::Result<bool> {
    let read = match receipt {
        ReceiptKind::Read => up_to_seq as i64,
        ReceiptKind::Delivered => 0,
    };
    let changed = tx.execute(
        "INSERT INTO receipts (conversation_id, user, delivered_up_to, read_up_to) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (conversation_id, user) DO UPDATE SET \
           delivered_up_to = MAX(delivered_up_to, excluded.delivered_up_to), \
           read_up_to = MAX(read_up_to, excluded.read_up_to) \
         WHERE excluded.delivered_up_to > delivered_up_to OR excluded.read_up_to > read_up_to",
        params![conversation_id as i64, user, up_to_seq as i64, read],
    )?;
    Ok(changed == 1)
}

fn read_receipts_in(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT value FROM settings WHERE name = 'read_receipts'",
        [],
        |r| r.get::<_, bool>(0),
    )
    .optional()
    .map(|on| on.unwrap_or(true))
}

/// The stored message at `(conversation_id, seq)` with whether it is a
/// tombstone; the inner error when its content no longer decodes.
fn target_in(
    conn: &Connection,
    conversation_id: u64,
    seq: u64,
) -> rusqlite::Result<Option<Result<Target, MessageStoreError>>> {
    if unsequenced::key_of(seq).is_none() {
        return Ok(None);
    }
    let sql =
        format!("SELECT {COLUMNS}, deleted FROM messages WHERE conversation_id = ?1 AND seq = ?2");
    let row = conn
        .query_row(&sql, params![conversation_id as i64, seq as i64], |r| {
            Ok((raw(r)?, r.get::<_, bool>("deleted")?))
        })
        .optional()?;
    Ok(row.map(|(raw, deleted)| raw.decode().map(|(message, _)| Target { message, deleted })))
}

/// A history row (`key`: its seq, or an unsequenced row's local key) with
/// its deletion, edit, reactions and receipt states.
fn view_of(
    conn: &Connection,
    message: StoredMessage,
    row: i64,
    me: &str,
    see_reads: bool,
) -> rusqlite::Result<MessageView> {
    let key = params![message.conversation_id as i64, row];
    let (deleted, edited_at_ms) = conn.query_row(
        "SELECT deleted, edited_at_ms FROM messages WHERE conversation_id = ?1 AND seq = ?2",
        key,
        |r| Ok((r.get::<_, bool>(0)?, r.get::<_, Option<i64>>(1)?)),
    )?;
    let reactions = conn
        .prepare("SELECT user, emoji FROM reactions WHERE conversation_id = ?1 AND seq = ?2 ORDER BY user")?
        .query_map(key, |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
    let receipts = match message.sender_user == me && !deleted {
        true => receipt_states(conn, message.conversation_id, row, see_reads)?,
        false => Vec::new(),
    };
    Ok(MessageView {
        message,
        deleted,
        edited_at_ms: edited_at_ms.map(|t| t as u64),
        reactions,
        receipts,
    })
}

/// Each recipient's state of the own message at row key `seq` (read shown
/// as delivered when `see_reads` is off; an unsequenced one, `seq` < 0,
/// always sent: no receipt names it).
fn receipt_states(
    conn: &Connection,
    conversation_id: u64,
    seq: i64,
    see_reads: bool,
) -> rusqlite::Result<Vec<(String, Delivery)>> {
    conn.prepare(
        "SELECT r.user, COALESCE(c.delivered_up_to, 0), COALESCE(c.read_up_to, 0) \
         FROM message_recipients r LEFT JOIN receipts c \
           ON c.conversation_id = r.conversation_id AND c.user = r.user \
         WHERE r.conversation_id = ?1 AND r.seq = ?2 ORDER BY r.user",
    )?
    .query_map(params![conversation_id as i64, seq], |r| {
        let (delivered, read): (i64, i64) = (r.get(1)?, r.get(2)?);
        let named = seq > 0;
        let state = match (
            named && read >= seq && see_reads,
            named && (delivered >= seq || read >= seq),
        ) {
            (true, _) => Delivery::Read,
            (false, true) => Delivery::Delivered,
            (false, false) => Delivery::Sent,
        };
        Ok((r.get(0)?, state))
    })?
    .collect()
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
    expires_at_ms: u64,
}

/// Reads the [`COLUMNS`] of a row.
fn raw(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        conversation_id: row.get::<_, i64>(0)? as u64,
        // An unsequenced row's negative local key reads as seq 0.
        seq: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
        sender_user: row.get(2)?,
        sender_device: row.get(3)?,
        server_time_ms: row.get::<_, i64>(4)? as u64,
        content: row.get(5)?,
        own: row.get(6)?,
        handed_out: row.get(7)?,
        expires_at_ms: row.get::<_, i64>(8)? as u64,
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
            expires_at_ms: self.expires_at_ms,
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
            expires_at_ms: 0,
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

    fn from(user: &str, conversation_id: u64, seq: u64, content: Content) -> StoredMessage {
        StoredMessage {
            sender_user: user.into(),
            content,
            ..text(conversation_id, seq, "")
        }
    }

    #[test]
    fn a_version_1_file_is_migrated_and_keeps_its_messages_and_search() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MESSAGE_STORE_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO messages (conversation_id, seq, sender_user, sender_device, server_time_ms, content, text, own, handed_out) VALUES (7, 1, 'alice', 1, 1001, ?1, 'old lunch', 0, 1)",
                params![Content::text("old lunch").encode()],
            )
            .unwrap();
        }
        let store = MessageStore::open(&path).unwrap();
        let version: i64 = store
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.history(7, 10).unwrap(), vec![text(7, 1, "old lunch")]);
        assert_eq!(seqs(&store.search("lunch", 10).unwrap()), [1]);
        // The new tables work on the migrated file: an edit reindexes the text.
        assert!(store
            .insert(
                &from(
                    "alice",
                    7,
                    2,
                    Content::Edit {
                        target_seq: 1,
                        body: "new dinner".into()
                    }
                ),
                true
            )
            .unwrap());
        assert!(store.search("lunch", 10).unwrap().is_empty());
        assert_eq!(seqs(&store.search("dinner", 10).unwrap()), [1]);
        assert!(store.read_receipts().unwrap());
        drop(store);
        // Reopening a version-2 file changes nothing.
        let store = MessageStore::open(&path).unwrap();
        assert_eq!(store.history(7, 10).unwrap()[0].text(), Some("new dinner"));
    }

    #[test]
    fn reactions_are_one_per_user_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.insert(&text(7, 1, "hi"), true).unwrap();
        let react = |seq, user: &str, emoji: &str| {
            let c = Content::Reaction {
                target_seq: 1,
                emoji: emoji.into(),
            };
            store.insert(&from(user, 7, seq, c), true).unwrap();
        };
        let reactions = || store.view(7, 10, "me").unwrap()[0].reactions.clone();
        react(2, "bob", "👍");
        react(3, "carol", "🎉");
        assert_eq!(
            reactions(),
            [("bob".into(), "👍".into()), ("carol".into(), "🎉".into())]
        );
        react(4, "bob", "❤");
        assert_eq!(reactions()[0], ("bob".into(), "❤".into()));
        react(5, "bob", "");
        assert_eq!(reactions(), [("carol".into(), "🎉".into())]);
        // Hidden rows are in the log, not in the history.
        assert_eq!(store.history(7, 10).unwrap().len(), 1);
        assert_eq!(store.log(7).unwrap().len(), 5);
        // A reaction to nothing has no effect.
        let c = Content::Reaction {
            target_seq: 99,
            emoji: "x".into(),
        };
        store.insert(&from("bob", 7, 6, c), true).unwrap();
        assert_eq!(reactions().len(), 1);
    }

    #[test]
    fn edits_follow_the_sender_and_window_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.insert(&text(7, 1, "helo"), true).unwrap();
        let edit = |seq, user: &str, at: u64, body: &str| {
            let c = Content::Edit {
                target_seq: 1,
                body: body.into(),
            };
            let m = StoredMessage {
                server_time_ms: at,
                ..from(user, 7, seq, c)
            };
            store.insert(&m, true).unwrap();
            let v = store.view(7, 10, "me").unwrap().remove(0);
            (v.message.text().map(str::to_owned), v.edited_at_ms)
        };
        assert_eq!(
            edit(2, "mallory", 2_000, "forged"),
            (Some("helo".into()), None)
        );
        let late = 1_001 + EDIT_WINDOW_MS + 1;
        assert_eq!(
            edit(3, "alice", late, "too late"),
            (Some("helo".into()), None)
        );
        assert_eq!(
            edit(4, "alice", 5_000, "hello"),
            (Some("hello".into()), Some(5_000))
        );
        let t = store.target(7, 1).unwrap().unwrap();
        assert_eq!(
            edit_refusal(Some(&t), "bob", 5_000),
            Some(EditRefusal::NotSender)
        );
        assert_eq!(
            edit_refusal(None, "alice", 5_000),
            Some(EditRefusal::NotFound)
        );
        assert_eq!(edit_refusal(Some(&t), "alice", 5_000), None);
    }

    #[test]
    fn deletes_leave_a_tombstone_and_only_the_sender_deletes_for_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        store.insert(&text(7, 1, "secret words"), true).unwrap();
        store.insert(&text(7, 2, "more"), true).unwrap();
        let c = Content::Reaction {
            target_seq: 1,
            emoji: "👍".into(),
        };
        store.insert(&from("bob", 7, 3, c), true).unwrap();
        store
            .insert(&from("bob", 7, 4, Content::Delete { target_seq: 1 }), true)
            .unwrap();
        assert!(
            !store.view(7, 10, "me").unwrap()[0].deleted,
            "bob is not the sender"
        );
        store
            .insert(
                &from("alice", 7, 5, Content::Delete { target_seq: 1 }),
                true,
            )
            .unwrap();
        let views = store.view(7, 10, "me").unwrap();
        assert!(views[0].deleted);
        assert_eq!(views[0].message.text(), Some(""));
        assert!(views[0].reactions.is_empty());
        assert!(store.search("secret", 10).unwrap().is_empty());
        assert!(store.delete_for_me(7, 2).unwrap());
        assert!(!store.delete_for_me(7, 2).unwrap());
        assert!(!store.delete_for_me(7, 9).unwrap());
        assert_eq!(store.history(7, 10).unwrap().len(), 2, "tombstones stay");
    }

    #[test]
    fn receipts_give_per_recipient_and_overall_states() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mine = |seq| StoredMessage {
            own: true,
            ..from("me", 7, seq, Content::text("x"))
        };
        store.insert(&mine(1), true).unwrap();
        store.insert(&mine(2), true).unwrap();
        for seq in [1, 2] {
            store
                .record_recipients(7, seq, &["bob".into(), "carol".into()])
                .unwrap();
        }
        let states = |seq: usize| {
            let v = store.view(7, 10, "me").unwrap().remove(seq);
            (v.receipts.clone(), v.overall())
        };
        use Delivery::*;
        assert_eq!(
            states(0),
            (
                vec![("bob".into(), Sent), ("carol".into(), Sent)],
                Some(Sent)
            )
        );
        let receipt = |seq, user: &str, receipt, up_to_seq| {
            let c = Content::Receipt { receipt, up_to_seq };
            store.insert(&from(user, 7, seq, c), true).unwrap();
        };
        receipt(3, "bob", ReceiptKind::Read, 2);
        receipt(4, "carol", ReceiptKind::Delivered, 1);
        assert_eq!(
            states(0),
            (
                vec![("bob".into(), Read), ("carol".into(), Delivered)],
                Some(Delivered)
            )
        );
        assert_eq!(states(1).1, Some(Sent));
        // Read receipts off: nobody's read state is shown.
        store.set_read_receipts(false).unwrap();
        assert_eq!(states(0).0[0], ("bob".into(), Delivered));
        store.set_read_receipts(true).unwrap();
        // A position never goes back.
        assert!(!store
            .record_receipt(7, "bob", ReceiptKind::Read, 1)
            .unwrap());
        assert_eq!(store.receipt_positions(7, "bob").unwrap(), (2, 2));
        assert!(store.record_receipt(7, "me", ReceiptKind::Read, 2).unwrap());
        assert_eq!(store.receipt_positions(7, "me").unwrap().1, 2);
        assert_eq!(store.latest_seq(7).unwrap(), Some(2));
        // Owed delivered receipts: others' visible messages past my position.
        store.insert(&text(9, 4, "from alice"), true).unwrap();
        store.insert(&text(9, 5, "again"), true).unwrap();
        store
            .insert(&from("me", 9, 6, Content::text("mine")), true)
            .unwrap();
        store
            .insert(&from("alice", 9, 7, Content::unreadable("bad")), true)
            .unwrap();
        assert_eq!(store.undelivered("me").unwrap(), [(9, 5)]);
        let sent = Content::Receipt {
            receipt: ReceiptKind::Delivered,
            up_to_seq: 5,
        };
        store.insert(&from("me", 9, 8, sent), true).unwrap();
        assert!(store.undelivered("me").unwrap().is_empty());
        assert_eq!(store.latest_seq(8).unwrap(), None);
    }
}
