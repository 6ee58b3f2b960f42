//! The latest stored message of one content kind in a conversation: what
//! "latest wins" state, such as a group's name, topic and avatar
//! ([`crate::content::GroupInfo`]), is read from.

use rusqlite::params;

use super::{MessageStore, MessageStoreError, StoredMessage, COLUMNS};

impl MessageStore {
    /// The stored message of content kind `kind` (a [`crate::content::kind`]
    /// tag) with the highest seq in `conversation_id`, if any. Expired
    /// messages are deleted first.
    pub fn latest_of_kind(
        &self,
        conversation_id: u64,
        kind: u8,
    ) -> Result<Option<StoredMessage>, MessageStoreError> {
        self.purge_expired(super::expiry::now_ms())?;
        // The kind is the second byte of the encoded content.
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation_id = ?1 AND substr(content, 2, 1) = ?2 ORDER BY seq DESC LIMIT 1"
        );
        let found = self.select(&sql, params![conversation_id as i64, vec![kind]])?;
        Ok(found.into_iter().next())
    }

    /// Every stored message of content kind `kind` in `conversation_id`,
    /// in seq order (state rebuilt field by field from its updates, such
    /// as a group's info). Expired messages are deleted first.
    pub fn all_of_kind(
        &self,
        conversation_id: u64,
        kind: u8,
    ) -> Result<Vec<StoredMessage>, MessageStoreError> {
        self.purge_expired(super::expiry::now_ms())?;
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation_id = ?1 AND substr(content, 2, 1) = ?2 ORDER BY seq ASC"
        );
        self.select(&sql, params![conversation_id as i64, vec![kind]])
    }
}
