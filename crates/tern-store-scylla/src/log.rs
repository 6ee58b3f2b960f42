//! Appending to the message log on ScyllaDB: per conversation of a call,
//! the fence, existence, duplicate and seq checks against one read of the
//! conversation's static state, then ONE conditional batch (LWT) that moves
//! the head and writes the accepted messages' idempotency keys (`IF head =
//! ?`, `AND fence = ?` when fenced), then the messages and their expiry
//! entries in logged batches. See the crate docs for why this order, and how
//! a retry repairs a message whose row a failed call left unwritten.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use tern_store::{
    AppendError, AppendOutcome, BackendError, ConversationId, FenceToken, Fences, MessageLog, Seq,
    StoredMessage,
};

use crate::codec::{bucket, enc, enc32, expires, index_ttl_secs, ttl_secs, EXPIRY_SHARDS, HOUR_MS};
use crate::conversations::State;
use crate::db::BatchBuilder;
use crate::ScyllaStore;

/// Payload bytes of one logged batch of message rows, well under
/// ScyllaDB's `batch_size_fail_threshold_in_kb` (1024 by default).
const BATCH_PAYLOAD: usize = 256 * 1024;

type Outcome = Result<AppendOutcome, AppendError>;

/// `(sender user, sender device, client message id)`.
type IdemKey = (String, u32, u64);

fn idem_key(msg: &StoredMessage) -> IdemKey {
    (
        msg.sender_user.clone(),
        msg.sender_device,
        msg.client_message_id,
    )
}

pub(crate) fn fenced(id: ConversationId, held: FenceToken, current: FenceToken) -> AppendError {
    AppendError::Fenced {
        conversation: id,
        held,
        current,
    }
}

impl ScyllaStore {
    /// Adds the idempotency key of `msg` to the conversation's LWT batch.
    pub(crate) fn idempotency_write(&self, batch: &mut BatchBuilder, msg: &StoredMessage) {
        let values = (
            enc(msg.conversation_id),
            msg.sender_user.clone(),
            enc32(msg.sender_device),
            enc(msg.client_message_id),
            enc(msg.seq),
            enc(msg.expires_at_ms),
            ttl_secs(msg.server_time_ms, msg.expires_at_ms),
        );
        batch.push(&self.db.st.idempotency_put, values);
    }

    /// Writes `msgs` (rows and expiry entries) in logged batches of at most
    /// [`BATCH_PAYLOAD`] payload bytes each.
    pub(crate) async fn write_messages(
        &self,
        what: &str,
        msgs: &[&StoredMessage],
    ) -> Result<(), BackendError> {
        let mut batch = BatchBuilder::default();
        let mut bytes = 0;
        for msg in msgs {
            if bytes > 0 && bytes + msg.payload.len() > BATCH_PAYLOAD {
                self.db.batch(what, std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += msg.payload.len();
            self.message_writes(&mut batch, msg);
        }
        self.db.batch(what, batch).await?;
        Ok(())
    }

    fn message_writes(&self, batch: &mut BatchBuilder, msg: &StoredMessage) {
        let st = &self.db.st;
        let id = enc(msg.conversation_id);
        let ttl = ttl_secs(msg.server_time_ms, msg.expires_at_ms);
        let row = (
            id,
            bucket(msg.seq),
            enc(msg.seq),
            msg.sender_user.clone(),
            enc32(msg.sender_device),
            enc(msg.client_message_id),
            enc(msg.server_time_ms),
            enc(msg.expires_at_ms),
            enc32(msg.flags),
            msg.payload.to_vec(),
            ttl,
        );
        batch.push(&st.message_put, row);
        if expires(msg.server_time_ms, msg.expires_at_ms) {
            let hour = enc(msg.expires_at_ms / HOUR_MS);
            let shard = i32::try_from(msg.conversation_id % EXPIRY_SHARDS).unwrap_or(0);
            let index_ttl = index_ttl_secs(msg.server_time_ms, msg.expires_at_ms);
            batch.push(&st.expiry_hour_put, (hour, index_ttl));
            let entry = (
                hour,
                shard,
                enc(msg.expires_at_ms),
                id,
                enc(msg.seq),
                msg.sender_user.clone(),
                enc32(msg.sender_device),
                enc(msg.client_message_id),
                index_ttl,
            );
            batch.push(&st.expiry_put, entry);
        }
    }

    /// The stored message that `msg` repeats, if its idempotency key is
    /// stored; a message whose key is stored but whose row a failed call
    /// left unwritten is written now, at its reserved seq, from `msg`.
    async fn stored_duplicate(
        &self,
        msg: &StoredMessage,
    ) -> Result<Option<StoredMessage>, BackendError> {
        let key = (
            enc(msg.conversation_id),
            msg.sender_user.as_str(),
            enc32(msg.sender_device),
            enc(msg.client_message_id),
        );
        let row: Option<(Option<i64>,)> = self
            .db
            .first("append: idempotency key", &self.db.st.idempotency_get, key)
            .await?;
        let Some((Some(seq),)) = row else {
            return Ok(None);
        };
        let seq = crate::codec::dec(seq);
        if let Some(stored) = self.message_at(msg.conversation_id, seq).await? {
            return Ok(Some(stored));
        }
        let repaired = StoredMessage { seq, ..msg.clone() };
        self.write_messages("append: repairing a reserved seq", &[&repaired])
            .await?;
        Ok(Some(repaired))
    }

    /// Appends the messages of one conversation (`(index, message)` in call
    /// order); outcomes by index.
    async fn append_conversation(
        &self,
        id: ConversationId,
        msgs: &[(usize, &StoredMessage)],
        fence: Option<FenceToken>,
    ) -> Result<Vec<(usize, Outcome)>, BackendError> {
        let all = |f: &dyn Fn() -> AppendError| msgs.iter().map(|(i, _)| (*i, Err(f()))).collect();
        let raw = self.raw_state(id).await?;
        if let Some(held) = fence {
            let current = raw.1;
            if held != current {
                return Ok(all(&|| fenced(id, held, current)));
            }
        }
        let Some(state) = raw.0 else {
            return Ok(all(&|| AppendError::NoSuchConversation(id)));
        };
        let mut head = state.head();
        let mut out = Vec::with_capacity(msgs.len());
        let mut accepted: Vec<(usize, &StoredMessage)> = Vec::new();
        let mut in_call: HashMap<IdemKey, &StoredMessage> = HashMap::new();
        for &(index, msg) in msgs {
            if let Some(earlier) = in_call.get(&idem_key(msg)) {
                out.push((index, Ok(AppendOutcome::Duplicate((*earlier).clone()))));
                continue;
            }
            if let Some(stored) = self.stored_duplicate(msg).await? {
                out.push((index, Ok(AppendOutcome::Duplicate(stored))));
                continue;
            }
            if head.checked_add(1) != Some(msg.seq) {
                let conflict = AppendError::SeqConflict {
                    conversation: id,
                    head,
                    got: msg.seq,
                };
                out.push((index, Err(conflict)));
                continue;
            }
            head = msg.seq;
            in_call.insert(idem_key(msg), msg);
            accepted.push((index, msg));
        }
        if accepted.is_empty() {
            return Ok(out);
        }
        let mut batch = BatchBuilder::default();
        let st = &self.db.st;
        match fence {
            Some(_) => batch.push(
                &st.head_advance_fenced,
                (enc(head), enc(id), state.head_col, state.fence_col),
            ),
            None => batch.push(&st.head_advance, (enc(head), enc(id), state.head_col)),
        }
        for (_, msg) in &accepted {
            self.idempotency_write(&mut batch, msg);
        }
        if !self.db.batch("append: head", batch).await? {
            let lost = self.lost_race(id, fence, &state).await?;
            out.extend(
                accepted
                    .iter()
                    .map(|(index, msg)| (*index, Err(lost(msg.seq)))),
            );
            return Ok(out);
        }
        let rows: Vec<&StoredMessage> = accepted.iter().map(|(_, msg)| *msg).collect();
        self.write_messages("append: messages", &rows).await?;
        out.extend(
            accepted
                .iter()
                .map(|(index, _)| (*index, Ok(AppendOutcome::Appended))),
        );
        Ok(out)
    }

    /// The refusal of messages whose head LWT was not applied: `Fenced`
    /// when the token moved, else `SeqConflict` with the current head.
    pub(crate) async fn lost_race(
        &self,
        id: ConversationId,
        fence: Option<FenceToken>,
        before: &State,
    ) -> Result<impl Fn(Seq) -> AppendError, BackendError> {
        let (state, current) = self.raw_state(id).await?;
        let head = state.as_ref().map_or(before.head(), State::head);
        Ok(move |got| match fence {
            Some(held) if held != current => fenced(id, held, current),
            _ => AppendError::SeqConflict {
                conversation: id,
                head,
                got,
            },
        })
    }

    /// The conversation's state (if created) and its fencing token (0
    /// before the first claim; claims may precede creation).
    pub(crate) async fn raw_state(
        &self,
        id: ConversationId,
    ) -> Result<(Option<State>, FenceToken), BackendError> {
        let state = self.state(id).await?;
        let fence = match &state {
            Some(state) => state.fence(),
            None => self.ownership_token(id).await?,
        };
        Ok((state, fence))
    }
}

#[async_trait]
impl MessageLog for ScyllaStore {
    async fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError> {
        let mut out = self
            .append_messages(std::slice::from_ref(msg), &Fences::none())
            .await?;
        out.pop()
            .unwrap_or_else(|| Err(AppendError::NoSuchConversation(msg.conversation_id)))
    }

    async fn append_messages(
        &self,
        msgs: &[StoredMessage],
        fences: &Fences,
    ) -> Result<Vec<Result<AppendOutcome, AppendError>>, BackendError> {
        let mut by_conversation: BTreeMap<ConversationId, Vec<(usize, &StoredMessage)>> =
            BTreeMap::new();
        for (index, msg) in msgs.iter().enumerate() {
            by_conversation
                .entry(msg.conversation_id)
                .or_default()
                .push((index, msg));
        }
        let calls = by_conversation
            .iter()
            .map(|(id, group)| self.append_conversation(*id, group, fences.of(*id)));
        let done = futures_util::future::try_join_all(calls).await?;
        let mut out: Vec<Option<Outcome>> = msgs.iter().map(|_| None).collect();
        for (index, outcome) in done.into_iter().flatten() {
            if let Some(slot) = out.get_mut(index) {
                *slot = Some(outcome);
            }
        }
        Ok(out
            .into_iter()
            .zip(msgs)
            .map(|(o, m)| o.unwrap_or(Err(AppendError::NoSuchConversation(m.conversation_id))))
            .collect())
    }

    async fn messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError> {
        self.read_messages(id, from_seq, limit, now_ms).await
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: tern_store::DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError> {
        self.raise_cursor(user, device, id, seq).await
    }

    async fn cursors(
        &self,
        user: &str,
        device: tern_store::DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError> {
        self.read_cursors(user, device).await
    }

    async fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError> {
        self.sweep(now_ms, limit).await
    }

    async fn purge_message(
        &self,
        id: ConversationId,
        seq: Seq,
        flags: u32,
    ) -> Result<Option<StoredMessage>, BackendError> {
        self.purge(id, seq, flags).await
    }
}
