//! [`ConsentStore`] on ScyllaDB: settings are columns of `user_settings`,
//! contacts and invitations one partition per user. A block is a
//! conditional batch on the user's `blocks` partition that bumps its static
//! `version` (`IF version = ?`, the one read with the list) and adds the
//! row, so the bound on the list holds under concurrent blocks; a lost race
//! re-reads and tries again. An unblock is the same conditional batch with
//! the row's delete: every write to `blocks` is an LWT, ordered by its Paxos
//! ballot, so a plain delete stamped by a lagging coordinator clock can never
//! order an unblock after the block that follows it (or before the block it
//! undoes) (ScyllaDB, "LWT limitations": do not mix conditional and plain
//! writes on the same data). `put_invitation` writes the invitation and
//! drops the oldest beyond `keep` in one batch on the user's partition; all
//! writes to `invitations` are plain, for the same reason.

use async_trait::async_trait;
use tern_store::{
    BackendError, BlockOutcome, ConsentStore, ConversationId, DirectStarts, GroupAdds,
    InvitationRecord, PresenceVisibility, UserId,
};

use crate::accounts::{contended, CAS_ATTEMPTS};
use crate::codec::{dec, enc};
use crate::db::BatchBuilder;
use crate::ScyllaStore;

type SettingsRow = (Option<i8>, Option<i8>, Option<i8>);
type InvitationRow = (i64, Option<String>, Option<i64>, Option<bool>);

fn invitation((id, inviter, created, accepted): InvitationRow) -> InvitationRecord {
    InvitationRecord {
        conversation_id: dec(id),
        inviter: inviter.unwrap_or_default(),
        created_ms: created.map_or(0, dec),
        accepted: accepted.unwrap_or(false),
    }
}

impl ScyllaStore {
    /// The `version` of `user`'s blocks (`None` before the first block).
    async fn blocks_version(&self, user: &str) -> Result<Option<i64>, BackendError> {
        let st = &self.db.st;
        let row: Option<(Option<i64>,)> =
            self.db.first("blocks", &st.blocks_version, (user,)).await?;
        Ok(row.and_then(|(v,)| v))
    }

    /// Adds to `batch` the conditional bump of `user`'s blocks `version`
    /// from `version` (as read).
    fn bump_blocks(&self, batch: &mut BatchBuilder, user: &str, version: Option<i64>) {
        let st = &self.db.st;
        let next = version.map_or(1, |v| v.saturating_add(1));
        match version {
            Some(v) => batch.push(&st.blocks_bump, (next, user.to_string(), v)),
            None => batch.push(&st.blocks_bump_first, (next, user.to_string())),
        }
    }

    async fn user_settings(&self, user: &str) -> Result<SettingsRow, BackendError> {
        let row: Option<SettingsRow> = self
            .db
            .first("user settings", &self.db.st.user_settings_get, (user,))
            .await?;
        Ok(row.unwrap_or((None, None, None)))
    }
}

#[async_trait]
impl ConsentStore for ScyllaStore {
    async fn set_group_adds(&self, user: &str, setting: GroupAdds) -> Result<(), BackendError> {
        let tag: i8 = match setting {
            GroupAdds::Contacts => 0,
            GroupAdds::Everyone => 1,
        };
        self.db
            .run("set_group_adds", &self.db.st.group_adds_put, (tag, user))
            .await?;
        Ok(())
    }

    async fn group_adds(&self, user: &str) -> Result<GroupAdds, BackendError> {
        Ok(match self.user_settings(user).await?.0 {
            Some(1) => GroupAdds::Everyone,
            _ => GroupAdds::Contacts,
        })
    }

    async fn set_direct_starts(
        &self,
        user: &str,
        setting: DirectStarts,
    ) -> Result<(), BackendError> {
        let tag: i8 = match setting {
            DirectStarts::Everyone => 0,
            DirectStarts::Contacts => 1,
            DirectStarts::Nobody => 2,
        };
        self.db
            .run(
                "set_direct_starts",
                &self.db.st.direct_starts_put,
                (tag, user),
            )
            .await?;
        Ok(())
    }

    async fn direct_starts(&self, user: &str) -> Result<DirectStarts, BackendError> {
        Ok(match self.user_settings(user).await?.1 {
            Some(1) => DirectStarts::Contacts,
            Some(2) => DirectStarts::Nobody,
            _ => DirectStarts::Everyone,
        })
    }

    async fn set_presence_visibility(
        &self,
        user: &str,
        setting: PresenceVisibility,
    ) -> Result<(), BackendError> {
        let tag: i8 = match setting {
            PresenceVisibility::Shared => 0,
            PresenceVisibility::Everyone => 1,
            PresenceVisibility::Nobody => 2,
        };
        self.db
            .run(
                "set_presence_visibility",
                &self.db.st.presence_put,
                (tag, user),
            )
            .await?;
        Ok(())
    }

    async fn presence_visibility(&self, user: &str) -> Result<PresenceVisibility, BackendError> {
        Ok(match self.user_settings(user).await?.2 {
            Some(1) => PresenceVisibility::Everyone,
            Some(2) => PresenceVisibility::Nobody,
            _ => PresenceVisibility::Shared,
        })
    }

    async fn add_contacts(&self, user: &str, contacts: &[UserId]) -> Result<(), BackendError> {
        let mut batch = BatchBuilder::default();
        for contact in contacts.iter().filter(|c| *c != user) {
            batch.push(&self.db.st.contact_put, (user.to_string(), contact.clone()));
        }
        self.db.batch("add_contacts", batch).await?;
        Ok(())
    }

    async fn is_contact(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let row: Option<(String,)> = self
            .db
            .first("is_contact", &self.db.st.contact_get, (user, other))
            .await?;
        Ok(row.is_some())
    }

    async fn put_invitation(
        &self,
        user: &str,
        invitation: &InvitationRecord,
        keep: usize,
    ) -> Result<(), BackendError> {
        let st = &self.db.st;
        let mut held = self.invitations(user).await?;
        held.retain(|i| i.conversation_id != invitation.conversation_id);
        held.push(invitation.clone());
        tern_store::oldest_first(&mut held);
        let drop = held.len().saturating_sub(keep);
        let mut batch = BatchBuilder::default();
        let kept = held
            .iter()
            .skip(drop)
            .any(|i| i.conversation_id == invitation.conversation_id);
        if kept {
            let values = (
                user.to_string(),
                enc(invitation.conversation_id),
                invitation.inviter.clone(),
                enc(invitation.created_ms),
                invitation.accepted,
            );
            batch.push(&st.invitation_put, values);
        }
        for old in held.iter().take(drop) {
            batch.push(
                &st.invitation_drop,
                (user.to_string(), enc(old.conversation_id)),
            );
        }
        self.db.batch("put_invitation", batch).await?;
        Ok(())
    }

    async fn invitations(&self, user: &str) -> Result<Vec<InvitationRecord>, BackendError> {
        let rows: Vec<InvitationRow> = self
            .db
            .rows("invitations", &self.db.st.invitations_get, (user,))
            .await?;
        let mut all: Vec<InvitationRecord> = rows.into_iter().map(invitation).collect();
        tern_store::oldest_first(&mut all);
        Ok(all)
    }

    async fn invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<Option<InvitationRecord>, BackendError> {
        let key = (user, enc(conversation));
        let row: Option<InvitationRow> = self
            .db
            .first("invitation", &self.db.st.invitation_get, key)
            .await?;
        Ok(row.map(invitation))
    }

    async fn remove_invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<bool, BackendError> {
        if self.invitation(user, conversation).await?.is_none() {
            return Ok(false);
        }
        let key = (user, enc(conversation));
        self.db
            .run("remove_invitation", &self.db.st.invitation_drop, key)
            .await?;
        Ok(true)
    }

    async fn block(
        &self,
        user: &str,
        other: &str,
        max: usize,
    ) -> Result<BlockOutcome, BackendError> {
        let st = &self.db.st;
        for _ in 0..CAS_ATTEMPTS {
            let version = self.blocks_version(user).await?;
            let blocked = self.blocked_users(user).await?;
            if blocked.iter().any(|b| b == other) {
                return Ok(BlockOutcome::AlreadyBlocked);
            }
            if blocked.len() >= max {
                return Ok(BlockOutcome::Full);
            }
            let mut batch = BatchBuilder::default();
            self.bump_blocks(&mut batch, user, version);
            batch.push(&st.block_put, (user.to_string(), other.to_string()));
            if self.db.batch("block", batch).await? {
                return Ok(BlockOutcome::Blocked);
            }
        }
        Err(contended("block"))
    }

    async fn unblock(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        for _ in 0..CAS_ATTEMPTS {
            let version = self.blocks_version(user).await?;
            if !self.is_blocked(user, other).await? {
                return Ok(false);
            }
            let mut batch = BatchBuilder::default();
            self.bump_blocks(&mut batch, user, version);
            let row = (user.to_string(), other.to_string());
            batch.push(&self.db.st.block_delete, row);
            if self.db.batch("unblock", batch).await? {
                return Ok(true);
            }
        }
        Err(contended("unblock"))
    }

    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let row: Option<(String,)> = self
            .db
            .first("is_blocked", &self.db.st.block_get, (user, other))
            .await?;
        Ok(row.is_some())
    }

    async fn blocked_users(&self, user: &str) -> Result<Vec<UserId>, BackendError> {
        let rows: Vec<(Option<String>,)> = self
            .db
            .rows("blocked_users", &self.db.st.blocks_get, (user,))
            .await?;
        Ok(rows.into_iter().filter_map(|(other,)| other).collect())
    }
}
