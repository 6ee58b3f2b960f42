//! Conversations, their heads, unique keys and each user's conversation index.

use std::collections::BTreeSet;

use tern_store::{
    BackendError, ConversationId, ConversationRecord, CreateConversationError, CreateOutcome,
    MembersError, Seq, UserId,
};

use fjall::OwnedWriteBatch;

use crate::{codec, layout as keys, lock, Ctx, Inner};

impl Inner {
    pub(crate) fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError> {
        let _guard = lock(&self.create_lock);
        if let Some(unique) = unique {
            if let Some(existing) = self
                .ks
                .uniq
                .get(keys::unique(unique))
                .ctx("reading unique key")?
            {
                let id = keys::u64_at(&existing, 0, "unique key entry")?;
                let found = self.conversation(id)?;
                let found = found.ok_or_else(|| {
                    BackendError::corrupt(format!("unique key points to missing conversation {id}"))
                })?;
                return Ok(CreateOutcome::Existing(found));
            }
        }
        let id = record.id;
        if self
            .ks
            .convs
            .contains_key(keys::conv(id))
            .ctx("reading conversation")?
        {
            return Err(CreateConversationError::IdTaken(id));
        }
        let mut batch = self.db.batch();
        batch.insert(&self.ks.convs, keys::conv(id), codec::conversation(record));
        batch.insert(&self.ks.heads, keys::conv(id), 0u64.to_be_bytes());
        if let Some(unique) = unique {
            batch.insert(&self.ks.uniq, keys::unique(unique), keys::conv(id));
        }
        for member in &record.members {
            let since = 1u64.to_be_bytes();
            batch.insert(&self.ks.user_convs, keys::user_conv(member, id)?, since);
        }
        self.write(batch, "writing conversation")?;
        Ok(CreateOutcome::Created)
    }

    pub(crate) fn conversation_by_key(
        &self,
        unique: &[u8],
    ) -> Result<Option<ConversationId>, BackendError> {
        let value = self
            .ks
            .uniq
            .get(keys::unique(unique))
            .ctx("reading unique key")?;
        value
            .map(|v| keys::u64_at(&v, 0, "unique key entry"))
            .transpose()
    }

    pub(crate) fn head(&self, id: ConversationId) -> Result<Option<Seq>, BackendError> {
        let value = self.ks.heads.get(keys::conv(id)).ctx("reading head")?;
        value.map(|v| keys::u64_at(&v, 0, "head")).transpose()
    }

    pub(crate) fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, BackendError> {
        let Some(value) = self
            .ks
            .convs
            .get(keys::conv(id))
            .ctx("reading conversation")?
        else {
            return Ok(None);
        };
        let head = self
            .head(id)?
            .ok_or_else(|| BackendError::corrupt(format!("conversation {id} has no head")))?;
        codec::decode_conversation(id, head, &value).map(Some)
    }

    pub(crate) fn update_members(
        &self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, MembersError> {
        let _guard = self.stripe(id);
        let record = self
            .conversation(id)?
            .ok_or(MembersError::NoSuchConversation(id))?;
        let mut batch = self.db.batch();
        let since = record.head_seq.saturating_add(1);
        let record = self.change_members(&mut batch, record, add, remove, since)?;
        self.write(batch, "writing members")?;
        Ok(record)
    }

    /// Adds to `batch` the membership change of `record` (the record and
    /// both users' indexes, added users' membership starting at seq
    /// `since`); returns the changed record. Call under the conversation's
    /// stripe.
    pub(crate) fn change_members(
        &self,
        batch: &mut OwnedWriteBatch,
        mut record: ConversationRecord,
        add: &[UserId],
        remove: &[UserId],
        since: Seq,
    ) -> Result<ConversationRecord, BackendError> {
        let id = record.id;
        let old: BTreeSet<UserId> = record.members.clone();
        record.members.extend(add.iter().cloned());
        for user in remove {
            record.members.remove(user);
        }
        batch.insert(&self.ks.convs, keys::conv(id), codec::conversation(&record));
        let since = since.to_be_bytes();
        for user in record.members.difference(&old) {
            batch.insert(&self.ks.user_convs, keys::user_conv(user, id)?, since);
        }
        for user in old.difference(&record.members) {
            batch.remove(&self.ks.user_convs, keys::user_conv(user, id)?);
        }
        Ok(record)
    }

    /// The value of a `user_convs` entry is the first seq of the current
    /// membership; entries written before it was kept are empty and read
    /// as 1 (the whole log).
    pub(crate) fn member_since(
        &self,
        id: ConversationId,
        user: &str,
    ) -> Result<Option<Seq>, BackendError> {
        let value = self
            .ks
            .user_convs
            .get(keys::user_conv(user, id)?)
            .ctx("reading membership")?;
        value
            .map(|v| match v.is_empty() {
                true => Ok(1),
                false => keys::u64_at(&v, 0, "membership"),
            })
            .transpose()
    }

    pub(crate) fn user_conversations(
        &self,
        user: &str,
    ) -> Result<Vec<ConversationId>, BackendError> {
        let mut out = Vec::new();
        for guard in self.ks.user_convs.prefix(keys::user(user)?) {
            let key = guard.key().ctx("reading user conversations")?;
            out.push(keys::u64_tail(&key, "user conversation key")?);
        }
        Ok(out)
    }
}
