//! Local expiry of disappearing messages: deleting (not hiding) the rows
//! whose `expires_at_ms` has passed, with everything derived from them
//! (reactions, recipients, full-text entries), so the plaintext is gone
//! from the file and its write-ahead log, as Signal and WhatsApp delete a
//! disappearing message on the device when its timer runs out.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::params;

use super::{MessageStore, MessageStoreError};

/// The wall clock, ms since the Unix epoch (0 before it).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The expired rows, as `(conversation_id, seq)` conditions.
const EXPIRED: &str =
    "SELECT conversation_id, seq FROM messages WHERE expires_at_ms > 0 AND expires_at_ms <= ?1";

impl MessageStore {
    /// Deletes every message whose expiry (`expires_at_ms`, ms since the
    /// Unix epoch) is at or before `now_ms`, with its reactions, recorded
    /// recipients and full-text entry, in one transaction; the full-text
    /// index is then merged and the write-ahead log truncated, so no copy
    /// of the text stays in the file. Returns how many messages were
    /// deleted. Sans-IO: the app passes the time (from its own timer);
    /// opening the store and every history or search read call it with the
    /// wall clock. Errors: [`MessageStoreError::Sqlite`] when the file
    /// cannot be written (nothing is deleted then; call it again later).
    pub fn purge_expired(&self, now_ms: u64) -> Result<usize, MessageStoreError> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        // Most reads find nothing expired: a read, not a write transaction.
        let due: bool = self
            .lock()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE expires_at_ms > 0 AND expires_at_ms <= ?1)",
                params![now],
                |r| r.get(0),
            )
            .map_err(|e| self.failed(e))?;
        if !due {
            return Ok(0);
        }
        let deleted = self.write(|tx| {
            unquote_expired(tx, now)?;
            // Clearing the text first lets the reindex trigger take the
            // rows out of the full-text index (it has no delete trigger).
            tx.execute(
                "UPDATE messages SET text = NULL WHERE expires_at_ms > 0 AND expires_at_ms <= ?1 AND text IS NOT NULL",
                params![now],
            )?;
            for (table, seq) in [
                ("reactions", "seq"),
                ("reactions", "reaction_seq"),
                ("message_recipients", "seq"),
            ] {
                let sql = format!(
                    "DELETE FROM {table} WHERE ({table}.conversation_id, {table}.{seq}) IN ({EXPIRED})"
                );
                tx.execute(&sql, params![now])?;
            }
            tx.execute(
                "DELETE FROM messages WHERE expires_at_ms > 0 AND expires_at_ms <= ?1",
                params![now],
            )
        })?;
        if deleted > 0 {
            self.scrub()?;
        }
        Ok(deleted)
    }

    /// Rewrites what deleted rows leave behind: merges the full-text index
    /// (dropping its deleted entries) and checkpoints the write-ahead log
    /// into the file, truncating it (`secure_delete` zeroes freed pages).
    fn scrub(&self) -> Result<(), MessageStoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO message_text (message_text) VALUES ('optimize')",
                [],
            )
            .map(drop)
        })?;
        let conn = self.lock();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.failed(e))
    }
}

/// Erases the quote of every stored reply to a message that expires by
/// `now` (ms): its text must not outlive its timer in a reply's snippet
/// (the reply keeps its own text and expiry).
fn unquote_expired(tx: &rusqlite::Transaction<'_>, now: i64) -> rusqlite::Result<()> {
    let mut select = tx.prepare(EXPIRED)?;
    let expired = select
        .query_map(params![now], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    drop(select);
    for (conversation_id, seq) in expired {
        super::quotes::unquote_replies(tx, conversation_id as u64, seq as u64)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::super::{StoredMessage, MESSAGE_STORE_FILE};
    use crate::content::Content;
    use crate::message_store::MessageStore;

    fn message(seq: u64, text: &str, expires_at_ms: u64) -> StoredMessage {
        StoredMessage {
            conversation_id: 4,
            seq,
            sender_user: "alice".into(),
            sender_device: 1,
            server_time_ms: 1_000,
            content: Content::text(text),
            own: false,
            expires_at_ms,
        }
    }

    fn file_has(dir: &std::path::Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
    }

    #[test]
    fn expired_messages_are_deleted_from_the_file_and_kept_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join(MESSAGE_STORE_FILE)).unwrap();
        // Far in the future for the wall clock, so reads do not purge them.
        let later = u64::MAX / 4;
        store
            .insert(&message(1, "zebracode gone", later), true)
            .unwrap();
        store.insert(&message(2, "kept forever", 0), true).unwrap();
        store
            .insert(&message(3, "zebracode later", later + 10), true)
            .unwrap();
        assert_eq!(store.search("zebracode", 10).unwrap().len(), 2);
        assert!(file_has(dir.path(), b"zebracode gone"));

        assert_eq!(store.purge_expired(later - 1).unwrap(), 0);
        assert_eq!(store.purge_expired(later).unwrap(), 1);
        let left: Vec<u64> = store
            .history(4, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(left, [2, 3]);
        assert_eq!(store.search("zebracode", 10).unwrap().len(), 1);
        assert!(
            !file_has(dir.path(), b"zebracode gone"),
            "no copy of the text stays"
        );

        assert_eq!(store.purge_expired(later + 10).unwrap(), 1);
        assert!(store.search("zebracode", 10).unwrap().is_empty());
        assert!(store.get(4, 2).unwrap().is_some());
    }

    #[test]
    fn an_expiring_tombstone_still_reads_as_deleted() {
        // The expiry column sits after the row columns: `deleted` is read
        // by name, not position.
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join(MESSAGE_STORE_FILE)).unwrap();
        store.insert(&message(1, "x", u64::MAX / 4), true).unwrap();
        assert!(!store.target(4, 1).unwrap().unwrap().deleted);
        assert!(store.delete_for_me(4, 1).unwrap());
        assert!(store.target(4, 1).unwrap().unwrap().deleted);
    }

    /// A tombstone from the server (deleted before it reached this device)
    /// expires when its message would have.
    #[test]
    fn a_servers_tombstone_expires_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join(MESSAGE_STORE_FILE)).unwrap();
        assert!(store
            .insert_tombstone(4, 2, "alice", 1, (1_000, 5_000))
            .unwrap());
        assert!(store
            .insert_tombstone(4, 3, "alice", 1, (1_000, 0))
            .unwrap());
        assert_eq!(store.purge_expired(4_999).unwrap(), 0);
        assert!(store.target(4, 2).unwrap().unwrap().deleted);
        assert_eq!(store.purge_expired(5_000).unwrap(), 1);
        assert!(store.get(4, 2).unwrap().is_none());
        assert!(store.get(4, 3).unwrap().is_some(), "no expiry: kept");
    }

    fn reply(seq: u64, target_seq: u64, quote: &str, expires_at_ms: u64) -> StoredMessage {
        let content = Content::Reply {
            target_seq,
            quote: quote.into(),
            body: format!("answer {seq}"),
        };
        StoredMessage {
            content,
            ..message(seq, "", expires_at_ms)
        }
    }

    fn quote_of(store: &MessageStore, seq: u64) -> String {
        match store.get(4, seq).unwrap().unwrap().message.content {
            Content::Reply { quote, .. } => quote,
            other => panic!("not a reply: {other:?}"),
        }
    }

    /// A reply's snippet of a disappearing message goes when that message
    /// expires (while the reply, sent later, is still shown), and a reply
    /// that arrives after its target expired is stored without it; in a
    /// conversation without a timer a target this device never had keeps
    /// its snippet.
    #[test]
    fn a_quote_of_an_expired_message_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join(MESSAGE_STORE_FILE)).unwrap();
        let later = u64::MAX / 4;
        store
            .insert(&message(1, "quokkaword", later), true)
            .unwrap();
        store
            .insert(&reply(2, 1, "quokkaword", later + 10), true)
            .unwrap();
        assert_eq!(quote_of(&store, 2), "quokkaword");
        assert_eq!(store.purge_expired(later).unwrap(), 1);
        assert_eq!(quote_of(&store, 2), "", "the target expired");
        assert!(!file_has(dir.path(), b"quokkaword"), "no copy stays");

        store
            .insert(&reply(3, 1, "quokkaword", later + 20), true)
            .unwrap();
        assert_eq!(quote_of(&store, 3), "", "arrived after the expiry");
        store.insert(&reply(4, 99, "never here", 0), true).unwrap();
        assert_eq!(quote_of(&store, 4), "never here");
    }

    #[test]
    fn opening_deletes_what_expired_while_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MESSAGE_STORE_FILE);
        {
            let store = MessageStore::open(&path).unwrap();
            store.insert(&message(1, "old", 1), true).unwrap();
            assert!(store.get(4, 1).unwrap().is_some());
        }
        let store = MessageStore::open(&path).unwrap();
        assert!(store.get(4, 1).unwrap().is_none());
    }
}
