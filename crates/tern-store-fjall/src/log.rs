//! The message log (messages, idempotency keys, expiry index, heads) and
//! delivery cursors.

use std::collections::{BTreeMap, HashMap};

use tern_store::{
    AppendError, AppendOutcome, BackendError, ConversationId, DeviceId, Fences, Seq, StoredMessage,
};

use std::sync::MutexGuard;

use fjall::OwnedWriteBatch;

use crate::{codec, layout as keys, Ctx, Inner, Stripe, EMPTY};

/// What one `append_messages` batch has written so far.
#[derive(Default)]
struct BatchState {
    heads: HashMap<ConversationId, Seq>,
    written: HashMap<Vec<u8>, StoredMessage>,
}

impl Inner {
    /// The stored message a repeated idempotency key points to, if any.
    pub(crate) fn duplicate_of(
        &self,
        msg: &StoredMessage,
        idem_key: &[u8],
    ) -> Result<Option<StoredMessage>, BackendError> {
        let Some(seq) = self.ks.idem.get(idem_key).ctx("reading idempotency key")? else {
            return Ok(None);
        };
        let seq = keys::u64_at(&seq, 0, "idempotency entry")?;
        let id = msg.conversation_id;
        // Missing only if a sweep removed both just now: treat it as gone.
        let stored = self
            .ks
            .msgs
            .get(keys::msg(id, seq))
            .ctx("reading message")?;
        stored
            .map(|v| codec::decode_message(id, seq, &v))
            .transpose()
    }

    pub(crate) fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError> {
        let id = msg.conversation_id;
        let mut stripe = self.stripe(id);
        let idem_key = keys::idem(
            id,
            &msg.sender_user,
            msg.sender_device,
            msg.client_message_id,
        )?;
        if let Some(stored) = self.duplicate_of(msg, &idem_key)? {
            return Ok(AppendOutcome::Duplicate(stored));
        }
        let head = self.append_head(&mut stripe, id)?;
        let mut batch = self.db.batch();
        self.append_to(&mut batch, head, msg)?;
        self.write(batch, "writing message")?;
        stripe.set_head(id, msg.seq);
        Ok(AppendOutcome::Appended)
    }

    /// The head an append of `id` follows: the stripe's cached head, or the
    /// `heads` table's, checked once against a message stored past it.
    /// Defence in depth: such a message means the head was rolled back (a
    /// damaged journal can do that, see the crate docs), and appending would
    /// silently replace an acknowledged message. Call under `stripe`.
    pub(crate) fn append_head(
        &self,
        stripe: &mut Stripe,
        id: ConversationId,
    ) -> Result<Seq, AppendError> {
        if let Some(head) = stripe.head(id) {
            return Ok(head);
        }
        let head = self.head(id)?.ok_or(AppendError::NoSuchConversation(id))?;
        self.refuse_overwrite(id, head.saturating_add(1), head)?;
        stripe.set_head(id, head);
        Ok(head)
    }

    /// Every message in one batch and one journal write; see
    /// [`tern_store::MessageLog::append_messages`].
    pub(crate) fn append_messages(
        &self,
        msgs: &[StoredMessage],
        fences: &Fences,
    ) -> Result<Vec<Result<AppendOutcome, AppendError>>, BackendError> {
        let mut stripes = self.stripes(msgs.iter().map(|m| m.conversation_id));
        let mut batch = self.db.batch();
        let mut state = BatchState::default();
        let mut out = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let fenced = self.check_fence(msg.conversation_id, fences.of(msg.conversation_id));
            let appended = fenced
                .and_then(|()| self.append_in_batch(&mut batch, &mut stripes, &mut state, msg));
            match appended {
                Err(AppendError::Backend(e)) => return Err(e),
                other => out.push(other),
            }
        }
        self.write(batch, "writing messages")?;
        for (id, head) in state.heads {
            if let Some(stripe) = stripes.get_mut(&Self::stripe_index(id)) {
                stripe.set_head(id, head);
            }
        }
        Ok(out)
    }

    /// One message of [`Inner::append_messages`], against the heads and
    /// idempotency keys the batch has written so far.
    fn append_in_batch(
        &self,
        batch: &mut OwnedWriteBatch,
        stripes: &mut BTreeMap<usize, MutexGuard<'_, Stripe>>,
        state: &mut BatchState,
        msg: &StoredMessage,
    ) -> Result<AppendOutcome, AppendError> {
        let id = msg.conversation_id;
        let idem_key = keys::idem(
            id,
            &msg.sender_user,
            msg.sender_device,
            msg.client_message_id,
        )?;
        if let Some(earlier) = state.written.get(&idem_key) {
            return Ok(AppendOutcome::Duplicate(earlier.clone()));
        }
        if let Some(stored) = self.duplicate_of(msg, &idem_key)? {
            return Ok(AppendOutcome::Duplicate(stored));
        }
        let head = match (
            state.heads.get(&id),
            stripes.get_mut(&Self::stripe_index(id)),
        ) {
            (Some(head), _) => *head,
            (None, Some(stripe)) => self.append_head(stripe, id)?,
            (None, None) => return Err(BackendError::corrupt("append outside its stripe").into()),
        };
        self.append_to(batch, head, msg)?;
        state.heads.insert(id, msg.seq);
        state.written.insert(idem_key, msg.clone());
        Ok(AppendOutcome::Appended)
    }

    /// Adds to `batch` the append of `msg` after `head`: the message, its
    /// idempotency key, its expiry entry and the new head. Refuses a seq
    /// that does not follow `head`. Call under the conversation's stripe,
    /// with a head from [`Inner::append_head`] (or one this batch wrote).
    pub(crate) fn append_to(
        &self,
        batch: &mut OwnedWriteBatch,
        head: Seq,
        msg: &StoredMessage,
    ) -> Result<(), AppendError> {
        let id = msg.conversation_id;
        if head.checked_add(1) != Some(msg.seq) {
            return Err(AppendError::SeqConflict {
                conversation: id,
                head,
                got: msg.seq,
            });
        }
        let idem_key = keys::idem(
            id,
            &msg.sender_user,
            msg.sender_device,
            msg.client_message_id,
        )?;
        batch.insert(&self.ks.msgs, keys::msg(id, msg.seq), codec::message(msg));
        batch.insert(&self.ks.idem, idem_key, msg.seq.to_be_bytes());
        batch.insert(
            &self.ks.expiry,
            keys::expiry(msg.expires_at_ms, id, msg.seq),
            EMPTY,
        );
        batch.insert(&self.ks.heads, keys::conv(id), msg.seq.to_be_bytes());
        Ok(())
    }

    /// Refuses when a message is stored at `seq`, past `head`.
    fn refuse_overwrite(
        &self,
        id: ConversationId,
        seq: Seq,
        head: Seq,
    ) -> Result<(), BackendError> {
        match self.ks.msgs.contains_key(keys::msg(id, seq)).ctx("reading message")? {
            false => Ok(()),
            true => Err(BackendError::corrupt(format!(
                "conversation {id} already stores seq {seq} but its head is {head}: the store is inconsistent (damaged journal?)"
            ))),
        }
    }

    pub(crate) fn messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for guard in self
            .ks
            .msgs
            .range(keys::msg(id, from_seq)..=keys::msg(id, Seq::MAX))
        {
            let (key, value) = guard.into_inner().ctx("reading messages")?;
            let seq = keys::u64_at(&key, 8, "message key")?;
            let msg = codec::decode_message(id, seq, &value)?;
            if msg.expires_at_ms > now_ms {
                out.push(msg);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn advance_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError> {
        let key = keys::cursor(user, device, id)?;
        let _guard = self.stripe(id);
        let current = self.ks.cursors.get(&key).ctx("reading cursor")?;
        let current = current
            .map(|v| keys::u64_at(&v, 0, "cursor"))
            .transpose()?
            .unwrap_or(0);
        if seq <= current {
            return Ok(current);
        }
        let mut batch = self.db.batch();
        batch.insert(&self.ks.cursors, key, seq.to_be_bytes());
        self.write(batch, "writing cursor")?;
        Ok(seq)
    }

    pub(crate) fn cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError> {
        let mut out = BTreeMap::new();
        for guard in self.ks.cursors.prefix(keys::device(user, device)?) {
            let (key, value) = guard.into_inner().ctx("reading cursors")?;
            let id = keys::u64_tail(&key, "cursor key")?;
            out.insert(id, keys::u64_at(&value, 0, "cursor")?);
        }
        Ok(out)
    }

    pub(crate) fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError> {
        if limit == 0 {
            return Ok(0);
        }
        let entries = match now_ms.checked_add(1) {
            Some(end) => self.ks.expiry.range(..end.to_be_bytes()),
            None => self.ks.expiry.iter(),
        };
        let mut batch = self.db.batch();
        let (mut visited, mut deleted) = (0usize, 0usize);
        for guard in entries {
            let key = guard.key().ctx("reading expiry index")?;
            batch.remove(&self.ks.expiry, key.clone());
            deleted += usize::from(self.sweep_one(&mut batch, &key)?);
            visited += 1;
            if visited >= limit {
                break;
            }
        }
        self.write(batch, "deleting expired messages")?;
        Ok(deleted)
    }

    /// Adds the removal of the message an expiry key names (and its
    /// idempotency key) to `batch`; false if it was already gone.
    pub(crate) fn sweep_one(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        expiry_key: &[u8],
    ) -> Result<bool, BackendError> {
        let id = keys::u64_at(expiry_key, 8, "expiry key")?;
        let seq = keys::u64_at(expiry_key, 16, "expiry key")?;
        let Some(value) = self
            .ks
            .msgs
            .get(keys::msg(id, seq))
            .ctx("reading message")?
        else {
            return Ok(false);
        };
        let msg = codec::decode_message(id, seq, &value)?;
        batch.remove(
            &self.ks.idem,
            keys::idem(
                id,
                &msg.sender_user,
                msg.sender_device,
                msg.client_message_id,
            )?,
        );
        batch.remove(&self.ks.msgs, keys::msg(id, seq));
        Ok(true)
    }
}
