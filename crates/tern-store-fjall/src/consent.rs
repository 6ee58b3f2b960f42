//! Privacy settings (group adds under `user¹`, direct starts under
//! `user¹ · d`, so setting one never rewrites the other), contacts,
//! invitations and blocks
//! ([`tern_store::ConsentStore`]), and the paged and counted reads of each
//! user's conversation index. Invitation writes (replace, then evict the
//! oldest past the cap) and blocks (count, then insert below the bound) run
//! under `consent_lock`, so concurrent calls for one user keep the bounds.

use tern_store::{
    oldest_first, BackendError, BlockOutcome, ConversationId, ConversationKind, DirectStarts,
    GroupAdds, InvitationRecord, UserId,
};

use crate::{layout as keys, lock, Ctx, Inner};
use tern_store::PresenceVisibility;

const EVERYONE: u8 = 1;
const CONTACTS: u8 = 0;

impl Inner {
    pub(crate) fn user_conversations_after(
        &self,
        user: &str,
        after: ConversationId,
        limit: usize,
    ) -> Result<Vec<ConversationId>, BackendError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let range = keys::user_conv(user, first)?..=keys::user_conv(user, ConversationId::MAX)?;
        let mut out = Vec::new();
        for guard in self.ks.user_convs.range(range).take(limit) {
            let key = guard.key().ctx("reading user conversations")?;
            out.push(keys::u64_tail(&key, "user conversation key")?);
        }
        Ok(out)
    }

    /// Reads each conversation of the user's index for its kind.
    pub(crate) fn group_count(&self, user: &str) -> Result<usize, BackendError> {
        let mut count = 0;
        for id in self.user_conversations(user)? {
            let kind = self.conversation(id)?.map(|r| r.kind);
            count += usize::from(kind == Some(ConversationKind::Group));
        }
        Ok(count)
    }

    pub(crate) fn set_group_adds(
        &self,
        user: &str,
        setting: GroupAdds,
    ) -> Result<(), BackendError> {
        let value = match setting {
            GroupAdds::Everyone => EVERYONE,
            GroupAdds::Contacts => CONTACTS,
        };
        let mut batch = self.db.batch();
        batch.insert(&self.ks.privacy, keys::user(user)?, [value]);
        self.write(batch, "writing privacy settings")
    }

    pub(crate) fn group_adds(&self, user: &str) -> Result<GroupAdds, BackendError> {
        let value = self
            .ks
            .privacy
            .get(keys::user(user)?)
            .ctx("reading privacy settings")?;
        Ok(match value.as_deref() {
            Some([EVERYONE, ..]) => GroupAdds::Everyone,
            _ => GroupAdds::Contacts,
        })
    }

    pub(crate) fn set_direct_starts(
        &self,
        user: &str,
        setting: DirectStarts,
    ) -> Result<(), BackendError> {
        let value = match setting {
            DirectStarts::Everyone => 0u8,
            DirectStarts::Contacts => 1,
            DirectStarts::Nobody => 2,
        };
        let mut batch = self.db.batch();
        batch.insert(&self.ks.privacy, direct_starts_key(user)?, [value]);
        self.write(batch, "writing privacy settings")
    }

    pub(crate) fn direct_starts(&self, user: &str) -> Result<DirectStarts, BackendError> {
        let value = self
            .ks
            .privacy
            .get(direct_starts_key(user)?)
            .ctx("reading privacy settings")?;
        Ok(match value.as_deref() {
            Some([1, ..]) => DirectStarts::Contacts,
            Some([2, ..]) => DirectStarts::Nobody,
            _ => DirectStarts::Everyone,
        })
    }

    pub(crate) fn set_presence_visibility(
        &self,
        user: &str,
        setting: PresenceVisibility,
    ) -> Result<(), BackendError> {
        let value = match setting {
            PresenceVisibility::Shared => 0u8,
            PresenceVisibility::Everyone => 1,
            PresenceVisibility::Nobody => 2,
        };
        let mut batch = self.db.batch();
        batch.insert(&self.ks.privacy, presence_key(user)?, [value]);
        self.write(batch, "writing the presence visibility")
    }

    pub(crate) fn presence_visibility(
        &self,
        user: &str,
    ) -> Result<PresenceVisibility, BackendError> {
        let value = self
            .ks
            .privacy
            .get(presence_key(user)?)
            .ctx("reading the presence visibility")?;
        Ok(match value.as_deref() {
            Some([1, ..]) => PresenceVisibility::Everyone,
            Some([2, ..]) => PresenceVisibility::Nobody,
            _ => PresenceVisibility::Shared,
        })
    }

    pub(crate) fn add_contacts(&self, user: &str, contacts: &[UserId]) -> Result<(), BackendError> {
        let mut batch = self.db.batch();
        for contact in contacts.iter().filter(|c| *c != user) {
            batch.insert(&self.ks.contacts, contact_key(user, contact)?, []);
        }
        self.write(batch, "writing contacts")
    }

    pub(crate) fn is_contact(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        self.ks
            .contacts
            .contains_key(contact_key(user, other)?)
            .ctx("reading contacts")
    }

    pub(crate) fn put_invitation(
        &self,
        user: &str,
        invitation: &InvitationRecord,
        keep: usize,
    ) -> Result<(), BackendError> {
        let _guard = lock(&self.consent_lock);
        let mut held = self.invitations(user)?;
        held.retain(|i| i.conversation_id != invitation.conversation_id);
        held.push(invitation.clone());
        oldest_first(&mut held);
        let excess = held.len().saturating_sub(keep);
        let mut batch = self.db.batch();
        for dropped in held.iter().take(excess) {
            let key = keys::user_conv(user, dropped.conversation_id)?;
            batch.remove(&self.ks.invitations, key);
        }
        if held.iter().skip(excess).any(|i| i == invitation) {
            let key = keys::user_conv(user, invitation.conversation_id)?;
            batch.insert(&self.ks.invitations, key, encode(invitation)?);
        }
        self.write(batch, "writing an invitation")
    }

    pub(crate) fn invitations(&self, user: &str) -> Result<Vec<InvitationRecord>, BackendError> {
        let mut out = Vec::new();
        for guard in self.ks.invitations.prefix(keys::user(user)?) {
            let (key, value) = guard.into_inner().ctx("reading invitations")?;
            let id = keys::u64_tail(&key, "invitation key")?;
            out.push(decode(id, &value)?);
        }
        oldest_first(&mut out);
        Ok(out)
    }

    pub(crate) fn invitation(
        &self,
        user: &str,
        id: ConversationId,
    ) -> Result<Option<InvitationRecord>, BackendError> {
        let value = self
            .ks
            .invitations
            .get(keys::user_conv(user, id)?)
            .ctx("reading an invitation")?;
        value.map(|v| decode(id, &v)).transpose()
    }

    pub(crate) fn remove_invitation(
        &self,
        user: &str,
        id: ConversationId,
    ) -> Result<bool, BackendError> {
        let _guard = lock(&self.consent_lock);
        if self.invitation(user, id)?.is_none() {
            return Ok(false);
        }
        let mut batch = self.db.batch();
        batch.remove(&self.ks.invitations, keys::user_conv(user, id)?);
        self.write(batch, "removing an invitation")?;
        Ok(true)
    }
}

impl Inner {
    pub(crate) fn block(
        &self,
        user: &str,
        other: &str,
        max: usize,
    ) -> Result<BlockOutcome, BackendError> {
        let _guard = lock(&self.consent_lock);
        let key = contact_key(user, other)?;
        if self.ks.blocks.contains_key(&key).ctx("reading blocks")? {
            return Ok(BlockOutcome::AlreadyBlocked);
        }
        let held = self.ks.blocks.prefix(keys::user(user)?).take(max).count();
        if held >= max {
            return Ok(BlockOutcome::Full);
        }
        let mut batch = self.db.batch();
        batch.insert(&self.ks.blocks, key, []);
        self.write(batch, "writing a block")?;
        Ok(BlockOutcome::Blocked)
    }

    pub(crate) fn unblock(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let _guard = lock(&self.consent_lock);
        let key = contact_key(user, other)?;
        if !self.ks.blocks.contains_key(&key).ctx("reading blocks")? {
            return Ok(false);
        }
        let mut batch = self.db.batch();
        batch.remove(&self.ks.blocks, key);
        self.write(batch, "removing a block")?;
        Ok(true)
    }

    pub(crate) fn is_blocked(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        self.ks
            .blocks
            .contains_key(contact_key(user, other)?)
            .ctx("reading blocks")
    }

    pub(crate) fn blocked_users(&self, user: &str) -> Result<Vec<UserId>, BackendError> {
        let prefix = keys::user(user)?;
        let mut out = Vec::new();
        for guard in self.ks.blocks.prefix(&prefix) {
            let key = guard.key().ctx("reading blocks")?;
            let name = key.get(prefix.len() + 1..).unwrap_or_default();
            let corrupt = || BackendError::corrupt(format!("corrupt block of user {user}"));
            out.push(String::from_utf8(name.to_vec()).map_err(|_| corrupt())?);
        }
        // Keys order by handle length first (the length byte); the trait
        // lists by handle.
        out.sort();
        Ok(out)
    }
}

/// `user¹ · p`: where `user`'s presence visibility is kept in `privacy`.
fn presence_key(user: &str) -> Result<Vec<u8>, BackendError> {
    let mut key = keys::user(user)?;
    key.push(b'p');
    Ok(key)
}

/// `user¹ · d`: where `user`'s direct-starts setting is kept in `privacy`
/// (its group-adds setting is under `user¹` alone).
fn direct_starts_key(user: &str) -> Result<Vec<u8>, BackendError> {
    let mut key = keys::user(user)?;
    key.push(b'd');
    Ok(key)
}

/// `user¹ · contact¹` (also `user¹ · blocked user¹`).
fn contact_key(user: &str, contact: &str) -> Result<Vec<u8>, BackendError> {
    let mut key = keys::user(user)?;
    key.extend_from_slice(&keys::user(contact)?);
    Ok(key)
}

/// `created_ms u64 · accepted u8 · inviter¹`.
fn encode(i: &InvitationRecord) -> Result<Vec<u8>, BackendError> {
    let mut value = i.created_ms.to_be_bytes().to_vec();
    value.push(u8::from(i.accepted));
    value.extend_from_slice(&keys::user(&i.inviter)?);
    Ok(value)
}

fn decode(id: ConversationId, value: &[u8]) -> Result<InvitationRecord, BackendError> {
    let created_ms = keys::u64_at(value, 0, "invitation")?;
    let corrupt = || BackendError::corrupt(format!("corrupt invitation to conversation {id}"));
    let accepted = *value.get(8).ok_or_else(corrupt)? != 0;
    let name = value.get(10..).ok_or_else(corrupt)?;
    let len = usize::from(*value.get(9).ok_or_else(corrupt)?);
    if name.len() != len {
        return Err(corrupt());
    }
    let inviter = String::from_utf8(name.to_vec()).map_err(|_| corrupt())?;
    Ok(InvitationRecord {
        conversation_id: id,
        inviter,
        created_ms,
        accepted,
    })
}
