//! Forgetting a conversation on this device (deleting a message request,
//! [`crate::secure::SecureClient::delete_request`]): every row of it goes
//! (messages with their search index entries, reactions, recipients,
//! receipts), and the seq it was forgotten at is kept in `settings`
//! (`forgot:<conversation>`), so a request that was deleted is shown again
//! only once something newer arrives (as Signal does). Also the first
//! message of someone else in a conversation, a request's preview.

use rusqlite::params;

use super::{MessageStore, MessageStoreError, StoredMessage, COLUMNS};

fn forgot_key(conversation_id: u64) -> String {
    format!("forgot:{conversation_id}")
}

impl MessageStore {
    /// Deletes every local row of `conversation_id` and records that it was
    /// forgotten up to `up_to_seq` (the highest of this and any earlier
    /// record is kept), in one transaction.
    pub fn forget_conversation(
        &self,
        conversation_id: u64,
        up_to_seq: u64,
    ) -> Result<(), MessageStoreError> {
        let id = conversation_id as i64;
        self.write(|tx| {
            // Clearing the text first lets the reindex trigger take the
            // rows out of the full-text index (it has no delete trigger).
            tx.execute(
                "UPDATE messages SET text = NULL WHERE conversation_id = ?1 AND text IS NOT NULL",
                params![id],
            )?;
            for table in ["messages", "reactions", "message_recipients", "receipts"] {
                let sql = format!("DELETE FROM {table} WHERE conversation_id = ?1");
                tx.execute(&sql, params![id])?;
            }
            tx.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                params![forgot_key(conversation_id), up_to_seq as i64],
            )?;
            Ok(())
        })
    }

    /// The seq up to which `conversation_id` was forgotten here (0: never).
    pub fn forgotten_up_to(&self, conversation_id: u64) -> Result<u64, MessageStoreError> {
        let conn = self.lock();
        let found = conn.query_row(
            "SELECT value FROM settings WHERE name = ?1",
            params![forgot_key(conversation_id)],
            |r| r.get::<_, i64>(0),
        );
        match found {
            Ok(seq) => Ok(seq.max(0) as u64),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(0),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The first visible, not deleted message of a user other than `me` in
    /// `conversation_id`, if this device has one.
    pub fn first_from_others(
        &self,
        conversation_id: u64,
        me: &str,
    ) -> Result<Option<StoredMessage>, MessageStoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation_id = ?1 AND hidden = 0 \
             AND deleted = 0 AND sender_user != ?2 ORDER BY seq LIMIT 1"
        );
        let found = self.select(&sql, params![conversation_id as i64, me])?;
        Ok(found.into_iter().next())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::content::Content;
    use crate::message_store::{MessageStore, StoredMessage};

    fn message(conversation_id: u64, seq: u64, sender: &str, text: &str) -> StoredMessage {
        StoredMessage {
            conversation_id,
            seq,
            sender_user: sender.into(),
            sender_device: 1,
            server_time_ms: 1_000 + seq,
            content: Content::text(text),
            own: sender == "bob",
            expires_at_ms: 0,
        }
    }

    #[test]
    fn a_forgotten_conversation_leaves_no_row_and_no_search_hit() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join("m.sqlite3")).unwrap();
        store
            .insert(&message(1, 1, "mallory", "buy pills"), true)
            .unwrap();
        store
            .insert(&message(1, 2, "mallory", "cheap pills"), true)
            .unwrap();
        store
            .insert(&message(2, 1, "alice", "pills for the cat"), true)
            .unwrap();
        let first = store.first_from_others(1, "bob").unwrap().unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(store.forgotten_up_to(1).unwrap(), 0);
        store.forget_conversation(1, 2).unwrap();
        assert!(store.log(1).unwrap().is_empty());
        assert_eq!(store.first_from_others(1, "bob").unwrap(), None);
        assert_eq!(store.forgotten_up_to(1).unwrap(), 2);
        let hits = store.search("pills", 10).unwrap();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].conversation_id, 2);
        // An older mark never lowers the recorded one.
        store.forget_conversation(1, 1).unwrap();
        assert_eq!(store.forgotten_up_to(1).unwrap(), 2);
    }
}
