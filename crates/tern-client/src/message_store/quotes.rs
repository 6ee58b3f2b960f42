//! Quotes of deleted messages: a reply carries a snippet of the message it
//! answers (E2EE.md §3.4); once that message is deleted (for everyone, or
//! for me), the stored replies to it lose the snippet, so its text is gone
//! from the history and from the file, as in Signal and WhatsApp (the reply
//! then shows that it answered a deleted message). The same holds when
//! the target disappears by its timer. A reply that arrives after its
//! target was deleted or expired is stored without the snippet too.

use rusqlite::{params, Transaction};

use crate::content::Content;

/// Erases the quote of every stored reply to message `target_seq` of
/// `conversation_id` (their text stays). Returns how many changed.
pub(super) fn unquote_replies(
    tx: &Transaction<'_>,
    conversation_id: u64,
    target_seq: u64,
) -> rusqlite::Result<usize> {
    let mut select = tx.prepare(
        "SELECT seq, content FROM messages WHERE conversation_id = ?1 AND reply_to = ?2",
    )?;
    let found = select.query_map(params![conversation_id as i64, target_seq as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let rows = found.collect::<rusqlite::Result<Vec<_>>>()?;
    drop(select);
    let mut changed = 0;
    for (key, bytes) in rows {
        let Ok(Content::Reply {
            target_seq, body, ..
        }) = Content::decode(&bytes)
        else {
            continue;
        };
        let unquoted = Content::Reply {
            target_seq,
            quote: String::new(),
            body,
        };
        changed += tx.execute(
            "UPDATE messages SET content = ?1 WHERE conversation_id = ?2 AND seq = ?3",
            params![unquoted.encode(), conversation_id as i64, key],
        )?;
    }
    Ok(changed)
}

/// Whether the message a reply stored with expiry `reply_expires_at_ms`
/// quotes (`seq` of `conversation_id`) is gone here: stored deleted, or
/// not stored at all while the reply itself disappears (its conversation
/// has a timer, so the target most likely expired already, and its text
/// must not outlive its timer in the snippet; a device that never had the
/// target loses only a snippet it could not check).
pub(super) fn target_gone(
    tx: &Transaction<'_>,
    conversation_id: u64,
    seq: u64,
    reply_expires_at_ms: u64,
) -> rusqlite::Result<bool> {
    use rusqlite::OptionalExtension;
    let deleted = tx
        .query_row(
            "SELECT deleted FROM messages WHERE conversation_id = ?1 AND seq = ?2",
            params![conversation_id as i64, seq as i64],
            |r| r.get::<_, bool>(0),
        )
        .optional()?;
    Ok(deleted.unwrap_or(reply_expires_at_ms > 0))
}
