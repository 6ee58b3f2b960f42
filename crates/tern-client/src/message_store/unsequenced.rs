//! Own sends the server acknowledged without a seq (schema v4).
//!
//! A server answers a send to a user who blocks the sender as accepted but
//! with `seq: 0` (docs/PROTOCOL.md §4.4): the message is stored nowhere
//! and takes no place in the conversation. The sender's device still keeps
//! it, as Signal and WhatsApp show a message to a blocker as sent, so the
//! sender's history is what they typed. Such a row:
//!
//! * is keyed by a **negative local key** in the `seq` column (-1, -2, …
//!   per conversation, in the order sent), so `UNIQUE (conversation_id,
//!   seq)` holds for every one of them and no server seq (≥ 1) can ever
//!   meet one;
//! * records in `after_seq` the highest seq this device had stored in the
//!   conversation when it was sent, and is shown right after that message,
//!   behind every message sequenced there and any unsequenced one sent
//!   earlier ([`POSITION`]);
//! * reads back as a [`StoredMessage`] with `seq` 0 ("not numbered"), is
//!   always in state [`super::Delivery::Sent`] for its recipients (no
//!   receipt can name it), and cannot be reacted to, replied to, edited
//!   or deleted: every call that takes a seq refuses 0 and anything past
//!   `i64::MAX` ([`MessageStoreError::NoSuchSeq`], [`key_of`]), and an
//!   incoming reaction, edit or delete naming one finds nothing.

use rusqlite::{params, Transaction};

use super::{MessageStoreError, StoredMessage};

/// Version 3 → 4: the position of unsequenced own sends, and an index in
/// history order.
pub(super) const SCHEMA_V4: &str = "
ALTER TABLE messages ADD COLUMN after_seq INTEGER;
CREATE INDEX messages_position ON messages (conversation_id, COALESCE(after_seq, seq), after_seq IS NOT NULL, -seq);
";

/// The order of a conversation's rows as a history shows them: by seq,
/// each unsequenced row after the message it followed, in sending order.
/// Append ` DESC` to each term for newest first ([`POSITION_DESC`]).
pub(super) const POSITION: &str = "COALESCE(after_seq, seq), after_seq IS NOT NULL, -seq";

/// [`POSITION`], newest first.
pub(super) const POSITION_DESC: &str =
    "COALESCE(after_seq, seq) DESC, after_seq IS NOT NULL DESC, -seq DESC";

/// The row key of a server seq: `None` for 0 (no message has it) and for
/// seqs past `i64::MAX` (no server gives one; as a key it would name an
/// unsequenced row).
pub(super) fn key_of(seq: u64) -> Option<i64> {
    i64::try_from(seq).ok().filter(|key| *key > 0)
}

/// [`key_of`], or the typed error for a seq that names no message.
pub(super) fn require_key(conversation_id: u64, seq: u64) -> Result<i64, MessageStoreError> {
    key_of(seq).ok_or(MessageStoreError::NoSuchSeq {
        conversation_id,
        seq,
    })
}

/// Stores `message` (an own send acknowledged with seq 0) under the next
/// local key, after the latest seq stored in its conversation; records
/// `recipients` (all in state sent). Returns the key.
pub(super) fn insert(
    tx: &Transaction<'_>,
    message: &StoredMessage,
    handed_out: bool,
    recipients: &[String],
) -> rusqlite::Result<i64> {
    let id = message.conversation_id as i64;
    let (lowest, latest): (i64, i64) = tx.query_row(
        "SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let key = lowest.min(0) - 1;
    tx.execute(
        "INSERT INTO messages (conversation_id, seq, after_seq, sender_user, sender_device, server_time_ms, content, text, own, handed_out, hidden, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            id,
            key,
            latest.max(0),
            message.sender_user,
            message.sender_device,
            message.server_time_ms as i64,
            message.content.encode(),
            message.content.body(),
            message.own,
            handed_out,
            !message.content.is_visible(),
            message.expires_at_ms as i64,
        ],
    )?;
    add_recipients(tx, message.conversation_id, key, recipients)?;
    Ok(key)
}

/// Records `users` as recipients of the own message at row `key`.
pub(super) fn add_recipients(
    tx: &Transaction<'_>,
    conversation_id: u64,
    key: i64,
    users: &[String],
) -> rusqlite::Result<()> {
    for user in users {
        tx.execute(
            "INSERT OR IGNORE INTO message_recipients (conversation_id, seq, user) VALUES (?1, ?2, ?3)",
            params![conversation_id as i64, key, user],
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use crate::content::Content;
    use crate::message_store::{
        Delivery, MessageStore, MessageStoreError, StoredMessage, MESSAGE_STORE_FILE,
    };

    fn message(seq: u64, sender: &str, body: &str) -> StoredMessage {
        StoredMessage {
            conversation_id: 7,
            seq,
            sender_user: sender.into(),
            sender_device: 1,
            server_time_ms: seq.saturating_add(1_000),
            content: Content::text(body),
            own: sender == "me",
            expires_at_ms: 0,
        }
    }

    fn bodies(store: &MessageStore) -> Vec<(u64, String)> {
        let history = store.history(7, 50).unwrap();
        history
            .into_iter()
            .map(|m| (m.seq, m.text().unwrap_or_default().to_owned()))
            .collect()
    }

    #[test]
    fn every_unsequenced_send_is_kept_in_the_order_sent_and_stays_sent() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join(MESSAGE_STORE_FILE)).unwrap();
        let bob = ["bob".to_owned()];
        assert!(store.insert(&message(1, "bob", "hi"), true).unwrap());
        assert!(store.insert_sent(&message(2, "me", "hello"), &bob).unwrap());
        for body in ["one", "two", "three"] {
            assert!(store.insert_sent(&message(0, "me", body), &bob).unwrap());
        }
        // A message sequenced later (bob's, say) comes after them.
        store.insert(&message(3, "bob", "later"), true).unwrap();
        store.insert_sent(&message(0, "me", "four"), &bob).unwrap();
        let expected: Vec<(u64, String)> = [
            (1, "hi"),
            (2, "hello"),
            (0, "one"),
            (0, "two"),
            (0, "three"),
            (3, "later"),
            (0, "four"),
        ]
        .into_iter()
        .map(|(s, b)| (s, b.to_owned()))
        .collect();
        assert_eq!(bodies(&store), expected);
        let log: Vec<u64> = store.log(7).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(log, [1, 2, 0, 0, 0, 3, 0]);
        // The latest page: the last three rows in the same order.
        let page: Vec<String> = store
            .history(7, 3)
            .unwrap()
            .iter()
            .map(|m| m.text().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(page, ["three", "later", "four"]);
        assert_eq!(store.latest_seq(7).unwrap(), Some(3));

        // Bob read everything up to 3 and more: unsequenced rows stay sent.
        let read = Content::Receipt {
            receipt: crate::content::ReceiptKind::Read,
            up_to_seq: 3,
        };
        store
            .insert(&message(4, "bob", "").with(read), true)
            .unwrap();
        let views = store.view(7, 50, "me").unwrap();
        let states: Vec<(u64, Option<Delivery>)> =
            views.iter().map(|v| (v.message.seq, v.overall())).collect();
        assert_eq!(
            states,
            [
                (1, None),
                (2, Some(Delivery::Read)),
                (0, Some(Delivery::Sent)),
                (0, Some(Delivery::Sent)),
                (0, Some(Delivery::Sent)),
                (3, None),
                (0, Some(Delivery::Sent)),
            ]
        );
    }

    #[test]
    fn nothing_can_address_an_unsequenced_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join(MESSAGE_STORE_FILE)).unwrap();
        store.insert_sent(&message(0, "me", "kept"), &[]).unwrap();
        for seq in [0, u64::MAX, 1 << 63] {
            assert!(matches!(
                store.target(7, seq),
                Err(MessageStoreError::NoSuchSeq { seq: s, .. }) if s == seq
            ));
            assert!(store.get(7, seq).unwrap().is_none());
            assert!(!store.delete_for_me(7, seq).unwrap());
            assert!(!store.insert_tombstone(7, seq, "me", 1, (5, 0)).unwrap());
            assert!(matches!(
                store.insert(&message(seq, "me", "x"), true),
                Err(MessageStoreError::NoSuchSeq { .. }) | Ok(true)
            ));
        }
        // A peer's (or forged) delete, edit and reaction naming the local
        // key as a wrapped u64 change nothing.
        let wrapped = u64::MAX; // -1 as i64
        for (seq, content) in (10..).zip([
            Content::Delete {
                target_seq: wrapped,
            },
            Content::Edit {
                target_seq: wrapped,
                body: "forged".into(),
            },
            Content::Reaction {
                target_seq: wrapped,
                emoji: "👍".into(),
            },
        ]) {
            assert!(store
                .insert(&message(seq, "me", "").with(content), true)
                .unwrap());
        }
        let views = store.view(7, 50, "me").unwrap();
        let kept: Vec<_> = views
            .iter()
            .filter(|v| v.message.text() == Some("kept"))
            .collect();
        assert_eq!(kept.len(), 1);
        assert!(!kept[0].deleted && kept[0].reactions.is_empty());
        assert!(kept[0].edited_at_ms.is_none());
    }

    impl StoredMessage {
        fn with(self, content: Content) -> StoredMessage {
            StoredMessage { content, ..self }
        }
    }
}
