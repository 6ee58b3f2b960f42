//! Reading and maintaining the message log on ScyllaDB: history reads
//! across seq buckets, delivery cursors, the expiry sweep and purging a
//! message to its tombstone.
//!
//! `sweep_expired` walks the expiry index (the hours that have entries,
//! oldest first, then each hour's shards): for every entry due at `now_ms`
//! it deletes the message row, its idempotency key and the entry in one
//! logged batch, and counts it. The rows would also vanish by their CQL TTL;
//! the sweep is what frees a swept message's idempotency key at once (the
//! trait's contract) and keeps the index small. An hour's marker is
//! dropped once the hour is over two hours past and empty.

use std::collections::BTreeMap;

use bytes::Bytes;
use tern_store::{BackendError, ConversationId, DeviceId, Seq, StoredMessage};

use crate::codec::{bucket, dec, dec32, enc, enc32, BUCKET_SEQS, EXPIRY_SHARDS, HOUR_MS};
use crate::db::{next_page, BatchBuilder, READ_PAGE};
use crate::error;
use crate::ScyllaStore;

/// `seq, sender_user, sender_device, client_message_id, server_time_ms,
/// expires_at_ms, flags, payload, TTL(sender_user)`.
type MessageRow = (
    i64,
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    Option<Vec<u8>>,
    Option<i32>,
);

/// `expires_at_ms, conversation_id, seq, sender_user, sender_device, client_message_id`.
type ExpiryRow = (i64, i64, i64, Option<String>, Option<i32>, Option<i64>);

/// Rows asked for per history query.
const PAGE: usize = 1000;

fn message(
    id: ConversationId,
    row: MessageRow,
) -> Result<(StoredMessage, Option<i32>), BackendError> {
    let (seq, user, device, cmid, time, expires, flags, payload, ttl) = row;
    let (Some(user), Some(device), Some(cmid), Some(time), Some(expires)) =
        (user, device, cmid, time, expires)
    else {
        return Err(error::decode(
            "messages",
            format!("message {id}/{} lacks a column", dec(seq)),
        ));
    };
    let msg = StoredMessage {
        conversation_id: id,
        seq: dec(seq),
        sender_user: user,
        sender_device: dec32(device),
        client_message_id: dec(cmid),
        server_time_ms: dec(time),
        expires_at_ms: dec(expires),
        flags: flags.map_or(0, dec32),
        payload: Bytes::from(payload.unwrap_or_default()),
    };
    Ok((msg, ttl))
}

impl ScyllaStore {
    /// Message `seq` of `id` with its remaining TTL, if stored.
    async fn message_row(
        &self,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Option<(StoredMessage, Option<i32>)>, BackendError> {
        let key = (enc(id), bucket(seq), enc(seq));
        let row: Option<MessageRow> = self
            .db
            .first("message", &self.db.st.message_get, key)
            .await?;
        row.map(|row| message(id, row)).transpose()
    }

    pub(crate) async fn message_at(
        &self,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Option<StoredMessage>, BackendError> {
        Ok(self.message_row(id, seq).await?.map(|(msg, _)| msg))
    }

    pub(crate) async fn read_messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError> {
        let mut out = Vec::new();
        let Some(state) = self.state(id).await? else {
            return Ok(out);
        };
        let head = state.head();
        let mut next = from_seq;
        while out.len() < limit && next <= head {
            let ask = (limit - out.len()).min(PAGE);
            let queried = next / BUCKET_SEQS;
            let values = (
                enc(id),
                bucket(next),
                enc(next),
                i32::try_from(ask).unwrap_or(i32::MAX),
            );
            let rows: Vec<MessageRow> = self
                .db
                .rows("messages", &self.db.st.messages_from, values)
                .await?;
            let got = rows.len();
            for row in rows {
                let (msg, _) = message(id, row)?;
                next = msg.seq.saturating_add(1);
                if msg.expires_at_ms > now_ms && out.len() < limit {
                    out.push(msg);
                }
            }
            if got < ask {
                // This bucket is done: on to the next one.
                let Some(after) = queried.checked_add(1) else {
                    break;
                };
                next = next.max(after.saturating_mul(BUCKET_SEQS));
            }
            if next == u64::MAX {
                break;
            }
        }
        Ok(out)
    }

    pub(crate) async fn raise_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError> {
        let st = &self.db.st;
        let key = (user, enc32(device), enc(id));
        let row: Option<(Option<i64>,)> =
            self.db.first("advance_cursor", &st.cursor_get, key).await?;
        let current = row.and_then(|(s,)| s).map_or(0, dec);
        if seq <= current && row.is_some() {
            return Ok(current);
        }
        let raised = current.max(seq);
        self.db
            .run(
                "advance_cursor",
                &st.cursor_put,
                (user, enc32(device), enc(id), enc(raised)),
            )
            .await?;
        Ok(raised)
    }

    pub(crate) async fn read_cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError> {
        let mut out = BTreeMap::new();
        let mut from = i64::MIN;
        loop {
            let values = (user, enc32(device), from, READ_PAGE);
            let page: Vec<(i64, Option<i64>)> = self
                .db
                .rows("cursors", &self.db.st.cursors_from, values)
                .await?;
            let next = next_page(page.len(), page.last().map(|(id, _)| *id));
            out.extend(
                page.into_iter()
                    .map(|(id, seq)| (dec(id), seq.map_or(0, dec))),
            );
            match next {
                Some(next) => from = next,
                None => return Ok(out),
            }
        }
    }

    pub(crate) async fn sweep(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError> {
        let st = &self.db.st;
        let now_hour = now_ms / HOUR_MS;
        let hours: Vec<(i64,)> = self
            .db
            .rows("sweep: hours", &st.expiry_hours_due, (enc(now_hour),))
            .await?;
        let mut swept = 0;
        for (hour,) in hours {
            for shard in 0..EXPIRY_SHARDS {
                if swept >= limit {
                    return Ok(swept);
                }
                let shard = i32::try_from(shard).unwrap_or(0);
                let ask = i32::try_from(limit - swept).unwrap_or(i32::MAX);
                let values = (hour, shard, enc(now_ms), ask);
                let due: Vec<ExpiryRow> = self
                    .db
                    .rows("sweep: entries", &st.expiry_due, values)
                    .await?;
                swept += due.len();
                let mut batch = BatchBuilder::default();
                for (expires, id, seq, user, device, cmid) in due {
                    batch.push(&st.message_delete, (id, bucket(dec(seq)), seq));
                    if let (Some(user), Some(device), Some(cmid)) = (user, device, cmid) {
                        batch.push(&st.idempotency_delete, (id, user, device, cmid));
                    }
                    batch.push(&st.expiry_delete, (hour, shard, expires, id, seq));
                }
                self.db.batch("sweep: delete", batch).await?;
            }
            if dec(hour).saturating_add(2) < now_hour && self.hour_empty(hour).await? {
                self.db
                    .run("sweep: hour", &st.expiry_hour_delete, (hour,))
                    .await?;
            }
        }
        Ok(swept)
    }

    async fn hour_empty(&self, hour: i64) -> Result<bool, BackendError> {
        for shard in 0..EXPIRY_SHARDS {
            let shard = i32::try_from(shard).unwrap_or(0);
            let any: Option<(i64,)> = self
                .db
                .first("sweep: hour", &self.db.st.expiry_any, (hour, shard))
                .await?;
            if any.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Rewrites message `seq` as its tombstone, keeping its remaining TTL.
    /// The old payload stays in ScyllaDB's SSTables, shadowed, until
    /// compaction drops it (after the table's `gc_grace_seconds`); the
    /// store cannot force that, so `erase_purged` has nothing to add.
    pub(crate) async fn purge(
        &self,
        id: ConversationId,
        seq: Seq,
        flags: u32,
    ) -> Result<Option<StoredMessage>, BackendError> {
        let Some((mut msg, ttl)) = self.message_row(id, seq).await? else {
            return Ok(None);
        };
        msg.payload = Bytes::new();
        msg.flags = flags;
        let row = (
            enc(id),
            bucket(seq),
            enc(seq),
            msg.sender_user.clone(),
            enc32(msg.sender_device),
            enc(msg.client_message_id),
            enc(msg.server_time_ms),
            enc(msg.expires_at_ms),
            enc32(flags),
            Vec::<u8>::new(),
            ttl.unwrap_or(0),
        );
        self.db
            .run("purge_message", &self.db.st.message_put, row)
            .await?;
        Ok(Some(msg))
    }
}
