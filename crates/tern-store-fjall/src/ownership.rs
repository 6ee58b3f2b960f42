//! Cluster ownership of conversations (`tern_store::OwnershipStore`): the
//! `owners` keyspace, conversation id → fencing token (u64, big-endian)
//! then the claiming node's id. Claims and fence checks of a conversation
//! both run under its stripe lock, so a claim and an append never
//! interleave: an append checked against token `t` is committed before a
//! claim can raise `t`.

use tern_store::{AppendError, BackendError, ConversationId, FenceToken, Ownership};

use crate::{layout as keys, Ctx, Inner};

impl Inner {
    /// The last claim of `id`, read from the `owners` keyspace.
    pub(crate) fn ownership(&self, id: ConversationId) -> Result<Option<Ownership>, BackendError> {
        let value = self
            .ks
            .owners
            .get(keys::conv(id))
            .ctx("reading ownership")?;
        value.map(|v| decode(&v)).transpose()
    }

    /// Raises the token of `id` by one for `node`, under its stripe.
    pub(crate) fn claim_ownership(
        &self,
        id: ConversationId,
        node: &str,
    ) -> Result<FenceToken, BackendError> {
        let _stripe = self.stripe(id);
        let current = self.ownership(id)?.map_or(0, |o| o.token);
        let token = current.checked_add(1).ok_or_else(|| {
            BackendError::corrupt(format!("fencing token of conversation {id} is exhausted"))
        })?;
        let mut value = token.to_be_bytes().to_vec();
        value.extend_from_slice(node.as_bytes());
        let mut batch = self.db.batch();
        batch.insert(&self.ks.owners, keys::conv(id), value);
        self.write(batch, "claiming ownership")?;
        Ok(token)
    }

    /// `Fenced` unless `held` is unset or the stored token of `id`. Call
    /// under the conversation's stripe.
    pub(crate) fn check_fence(
        &self,
        id: ConversationId,
        held: Option<FenceToken>,
    ) -> Result<(), AppendError> {
        let Some(held) = held else { return Ok(()) };
        let current = self.ownership(id)?.map_or(0, |o| o.token);
        if held == current {
            return Ok(());
        }
        Err(AppendError::Fenced {
            conversation: id,
            held,
            current,
        })
    }
}

fn decode(value: &[u8]) -> Result<Ownership, BackendError> {
    let token = keys::u64_at(value, 0, "ownership token")?;
    let node = value.get(8..).unwrap_or_default();
    let node = String::from_utf8(node.to_vec())
        .map_err(|_| BackendError::corrupt("ownership entry with a node id that is not UTF-8"))?;
    Ok(Ownership { node, token })
}
