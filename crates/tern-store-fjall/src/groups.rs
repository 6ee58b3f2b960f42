//! MLS groups: epochs, GroupInfo, and accepting a Commit in one batch.

use bytes::Bytes;
use tern_store::{AppendError, BackendError, CommitOutcome, CommitRecord, ConversationId};

use crate::{layout as keys, Ctx, Inner};

impl Inner {
    pub(crate) fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError> {
        let value = self
            .ks
            .epochs
            .get(keys::conv(id))
            .ctx("reading group epoch")?;
        let epoch = value
            .map(|v| keys::u64_at(&v, 0, "group epoch"))
            .transpose()?;
        Ok(epoch.unwrap_or(0))
    }

    /// Epoch compare-and-set, GroupInfo, membership and both messages in
    /// one batch under the conversation's stripe: all of it or nothing.
    pub(crate) fn accept_commit(
        &self,
        commit: &CommitRecord,
    ) -> Result<CommitOutcome, AppendError> {
        let id = commit.conversation_id;
        let mut stripe = self.stripe(id);
        self.check_fence(id, commit.fence)?;
        let mut record = self
            .conversation(id)?
            .ok_or(AppendError::NoSuchConversation(id))?;
        record.head_seq = self.append_head(&mut stripe, id)?;
        let current = self.group_epoch(id)?;
        if current != commit.epoch {
            return Ok(CommitOutcome::Stale { current });
        }
        let next = current.checked_add(1).ok_or_else(|| {
            BackendError::corrupt(format!(
                "epoch of conversation {id} cannot advance past {current}"
            ))
        })?;
        let mut batch = self.db.batch();
        batch.insert(&self.ks.epochs, keys::conv(id), next.to_be_bytes());
        batch.insert(
            &self.ks.group_infos,
            keys::conv(id),
            commit.group_info.as_ref(),
        );
        // Added members start at the Welcome (the seq after the Commit):
        // a joiner never processes the Commit that added it (RFC 9420 §12.4.3).
        let since = commit.commit.seq.saturating_add(1);
        let mut record =
            self.change_members(&mut batch, record, &commit.add, &commit.remove, since)?;
        for msg in std::iter::once(&commit.commit).chain(&commit.welcome) {
            self.append_to(&mut batch, record.head_seq, msg)?;
            record.head_seq = msg.seq;
        }
        self.write(batch, "accepting a commit")?;
        stripe.set_head(id, record.head_seq);
        Ok(CommitOutcome::Accepted(record))
    }

    pub(crate) fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError> {
        let value = self
            .ks
            .group_infos
            .get(keys::conv(id))
            .ctx("reading group info")?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }
}
