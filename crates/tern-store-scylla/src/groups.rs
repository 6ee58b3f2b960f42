//! [`GroupStore`] and [`OwnershipStore`] on ScyllaDB. Accepting a Commit
//! is one conditional batch on the conversation's partition (`IF head = ?
//! AND epoch = ?`, `AND fence = ?` when fenced) that moves the epoch, the
//! head and the GroupInfo and writes the Commit's and Welcome's idempotency
//! keys, so of two racing Commits exactly one wins; the messages and the
//! membership change follow in logged batches. A claim of ownership is an
//! LWT increment of the partition's `fence` (`IF fence = ?` with the token
//! read, retried on contention), valid before the conversation exists.

use async_trait::async_trait;
use bytes::Bytes;
use tern_store::{
    AppendError, BackendError, CommitOutcome, CommitRecord, ConversationId, FenceToken, GroupStore,
    Ownership, OwnershipStore, StoredMessage,
};

use crate::accounts::{contended, CAS_ATTEMPTS};
use crate::codec::{dec, enc};
use crate::db::BatchBuilder;
use crate::log::fenced;
use crate::ScyllaStore;

impl ScyllaStore {
    /// The stored fencing token of `id` (0 before the first claim).
    pub(crate) async fn ownership_token(
        &self,
        id: ConversationId,
    ) -> Result<FenceToken, BackendError> {
        let row: Option<(Option<i64>, Option<String>)> = self
            .db
            .first("ownership", &self.db.st.ownership_get, (enc(id),))
            .await?;
        Ok(row.and_then(|(fence, _)| fence).map_or(0, dec))
    }
}

fn seq_conflict(id: ConversationId, head: u64, got: u64) -> AppendError {
    AppendError::SeqConflict {
        conversation: id,
        head,
        got,
    }
}

#[async_trait]
impl GroupStore for ScyllaStore {
    async fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError> {
        Ok(self.state(id).await?.map_or(0, |s| s.epoch()))
    }

    async fn accept_commit(&self, commit: &CommitRecord) -> Result<CommitOutcome, AppendError> {
        let id = commit.conversation_id;
        let (state, current) = self.raw_state(id).await?;
        if let Some(held) = commit.fence {
            if held != current {
                return Err(fenced(id, held, current));
            }
        }
        let state = state.ok_or(AppendError::NoSuchConversation(id))?;
        if state.epoch() != commit.epoch {
            return Ok(CommitOutcome::Stale {
                current: state.epoch(),
            });
        }
        let head = state.head();
        if head.checked_add(1) != Some(commit.commit.seq) {
            return Err(seq_conflict(id, head, commit.commit.seq));
        }
        let mut msgs: Vec<&StoredMessage> = vec![&commit.commit];
        if let Some(welcome) = &commit.welcome {
            if commit.commit.seq.checked_add(1) != Some(welcome.seq) {
                return Err(seq_conflict(id, commit.commit.seq, welcome.seq));
            }
            msgs.push(welcome);
        }
        let new_head = msgs.last().map_or(head, |m| m.seq);
        let next_epoch = commit.epoch.saturating_add(1);
        let st = &self.db.st;
        let mut batch = BatchBuilder::default();
        let info = commit.group_info.to_vec();
        let set = (
            enc(new_head),
            enc(next_epoch),
            info,
            enc(id),
            state.head_col,
            state.epoch_col,
        );
        match commit.fence {
            Some(_) => batch.push(
                &st.commit_advance_fenced,
                (set.0, set.1, set.2, set.3, set.4, set.5, state.fence_col),
            ),
            None => batch.push(&st.commit_advance, set),
        }
        for msg in &msgs {
            self.idempotency_write(&mut batch, msg);
        }
        if !self.db.batch("accept_commit", batch).await? {
            let (after, token) = self.raw_state(id).await?;
            if let Some(held) = commit.fence.filter(|held| *held != token) {
                return Err(fenced(id, held, token));
            }
            let after = after.ok_or(AppendError::NoSuchConversation(id))?;
            if after.epoch() != commit.epoch {
                return Ok(CommitOutcome::Stale {
                    current: after.epoch(),
                });
            }
            return Err(seq_conflict(id, after.head(), commit.commit.seq));
        }
        self.write_messages("accept_commit: messages", &msgs)
            .await?;
        let mut members = self.members(id).await?;
        let since = commit.commit.seq.saturating_add(1);
        let mut batch = BatchBuilder::default();
        let change = (commit.add.as_slice(), commit.remove.as_slice(), since);
        self.membership_writes(&mut batch, id, state.kind, &mut members, change);
        self.db.batch("accept_commit: members", batch).await?;
        let mut record = Self::record(id, &state, members);
        record.head_seq = new_head;
        Ok(CommitOutcome::Accepted(record))
    }

    async fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError> {
        let row: Option<(Option<Vec<u8>>,)> = self
            .db
            .first("group_info", &self.db.st.group_info_get, (enc(id),))
            .await?;
        Ok(row.and_then(|(info,)| info).map(Bytes::from))
    }
}

#[async_trait]
impl OwnershipStore for ScyllaStore {
    async fn claim_ownership(
        &self,
        id: ConversationId,
        node: &str,
    ) -> Result<FenceToken, BackendError> {
        let st = &self.db.st;
        for _ in 0..CAS_ATTEMPTS {
            let row: Option<(Option<i64>, Option<String>)> = self
                .db
                .first("claim_ownership", &st.ownership_get, (enc(id),))
                .await?;
            let stored = row.and_then(|(fence, _)| fence);
            let token = stored.map_or(0, dec).saturating_add(1);
            let applied = match stored {
                Some(stored) => {
                    let values = (enc(token), node, enc(id), stored);
                    self.db
                        .applied("claim_ownership", &st.ownership_claim, values)
                        .await?
                }
                None => {
                    let values = (enc(token), node, enc(id));
                    self.db
                        .applied("claim_ownership", &st.ownership_claim_first, values)
                        .await?
                }
            };
            if applied {
                return Ok(token);
            }
        }
        Err(contended("claim_ownership"))
    }

    async fn ownership(&self, id: ConversationId) -> Result<Option<Ownership>, BackendError> {
        let row: Option<(Option<i64>, Option<String>)> = self
            .db
            .first("ownership", &self.db.st.ownership_get, (enc(id),))
            .await?;
        Ok(match row {
            Some((Some(token), node)) => Some(Ownership {
                node: node.unwrap_or_default(),
                token: dec(token),
            }),
            _ => None,
        })
    }
}
