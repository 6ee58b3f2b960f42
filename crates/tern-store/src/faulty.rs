//! [`FaultyStore`]: a wrapper around any [`Store`] that injects backend
//! failures, so that tests can drive the server through every failure mode
//! a real backend has.
//!
//! It owns the injected faults, the per-operation call counters and a
//! [`Poison`] flag; everything else is the inner store's. Every call is
//! delegated to the inner store unless a fault says otherwise:
//!
//! - [`FaultyStore::inject`]: the next call of an [`Op`] fails with a
//!   [`BackendError`] of the given kind *without* reaching the inner store
//!   (nothing written), like an unavailable backend or a failed write;
//! - [`FaultyStore::inject_after`]: the next call of an [`Op`] reaches the
//!   inner store, then fails anyway, like a timeout whose write landed.
//!
//! Faults queue up per operation (each injection fails one call), and
//! [`FaultyStore::calls`] counts every call made to the wrapper, refused or not.
//!
//! Like a real backend, an injected failure of a write ([`Op::is_write`]) or
//! of [`Op::Persist`] poisons the wrapper when its kind is fatal
//! ([`BackendErrorKind::Io`], [`BackendErrorKind::Corrupt`],
//! [`BackendErrorKind::Poisoned`]): from then on every write and every
//! `persist` fails with [`BackendErrorKind::Poisoned`] (reads still work)
//! until [`FaultyStore::reopen`]. Retryable kinds
//! ([`BackendErrorKind::Unavailable`], [`BackendErrorKind::Timeout`]) do not
//! poison, since the documented point of them is that a retry can succeed.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    AccountStore, AppendError, AppendOutcome, BackendError, BackendErrorKind, BlockOutcome,
    ClaimedKey, CommitOutcome, CommitRecord, ConsentStore, ConversationId, ConversationRecord,
    ConversationSettings, ConversationStore, CreateAccountError, CreateConversationError,
    CreateOutcome, DeviceId, DeviceKeys, DeviceKeysUpdate, DeviceRecord, DirectStarts, FenceToken,
    Fences, GroupAdds, GroupStore, InvitationRecord, KeyDirectory, KeyPool, MembersError,
    MessageLog, Ownership, OwnershipStore, Poison, PoolKey, Seq, Store, StoredMessage, UserId,
};

/// One operation of [`Store`]: a method of one of its traits, or `persist`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    CreateAccount,
    Device,
    Devices,
    AddDevice,
    RevokeDevice,
    SetPushEndpoint,
    PushEndpoint,
    CreateConversation,
    Conversation,
    UpdateMembers,
    UserConversations,
    MemberSince,
    AppendMessage,
    Messages,
    AdvanceCursor,
    Cursors,
    SweepExpired,
    PutDeviceKeys,
    DeviceKeys,
    PutKeys,
    ClaimKey,
    KeyCount,
    GroupEpoch,
    AcceptCommit,
    GroupInfo,
    UserConversationsAfter,
    GroupCount,
    SetGroupAdds,
    GroupAdds,
    AddContacts,
    IsContact,
    PutInvitation,
    Invitations,
    Invitation,
    RemoveInvitation,
    PurgeMessage,
    Settings,
    PutSettings,
    Block,
    Unblock,
    IsBlocked,
    BlockedUsers,
    SetDirectStarts,
    DirectStarts,
    ConversationByKey,
    SetPresenceVisibility,
    PresenceVisibility,
    ClaimOwnership,
    Ownership,
    Persist,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 50] = [
        Op::CreateAccount,
        Op::Device,
        Op::Devices,
        Op::AddDevice,
        Op::RevokeDevice,
        Op::SetPushEndpoint,
        Op::PushEndpoint,
        Op::CreateConversation,
        Op::Conversation,
        Op::UpdateMembers,
        Op::UserConversations,
        Op::MemberSince,
        Op::AppendMessage,
        Op::Messages,
        Op::AdvanceCursor,
        Op::Cursors,
        Op::SweepExpired,
        Op::PutDeviceKeys,
        Op::DeviceKeys,
        Op::PutKeys,
        Op::ClaimKey,
        Op::KeyCount,
        Op::GroupEpoch,
        Op::AcceptCommit,
        Op::GroupInfo,
        Op::UserConversationsAfter,
        Op::GroupCount,
        Op::SetGroupAdds,
        Op::GroupAdds,
        Op::AddContacts,
        Op::IsContact,
        Op::PutInvitation,
        Op::Invitations,
        Op::Invitation,
        Op::RemoveInvitation,
        Op::PurgeMessage,
        Op::Settings,
        Op::PutSettings,
        Op::Block,
        Op::Unblock,
        Op::IsBlocked,
        Op::BlockedUsers,
        Op::SetDirectStarts,
        Op::DirectStarts,
        Op::ConversationByKey,
        Op::SetPresenceVisibility,
        Op::PresenceVisibility,
        Op::ClaimOwnership,
        Op::Ownership,
        Op::Persist,
    ];

    /// True for the operations that may write (a claim consumes a key);
    /// `Persist` is not a write but is refused too once poisoned.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Op::CreateAccount
                | Op::AddDevice
                | Op::RevokeDevice
                | Op::SetPushEndpoint
                | Op::CreateConversation
                | Op::UpdateMembers
                | Op::AppendMessage
                | Op::AdvanceCursor
                | Op::SweepExpired
                | Op::PutDeviceKeys
                | Op::PutKeys
                | Op::ClaimKey
                | Op::AcceptCommit
                | Op::SetGroupAdds
                | Op::AddContacts
                | Op::PutInvitation
                | Op::RemoveInvitation
                | Op::PurgeMessage
                | Op::PutSettings
                | Op::Block
                | Op::Unblock
                | Op::SetDirectStarts
                | Op::SetPresenceVisibility
                | Op::ClaimOwnership
        )
    }

    /// True when a poisoned store refuses this operation.
    fn refused_when_poisoned(self) -> bool {
        self.is_write() || self == Op::Persist
    }
}

/// Whether an injected failure of `kind` in `op` poisons the store.
fn poisons(op: Op, kind: BackendErrorKind) -> bool {
    op.refused_when_poisoned() && !BackendError::new(kind, "").is_retryable()
}

/// When an injected fault fires: before or after the inner call.
#[derive(Clone, Copy, Debug)]
enum Stage {
    Before,
    After,
}

#[derive(Debug, Default)]
struct Faults {
    before: BTreeMap<Op, VecDeque<BackendErrorKind>>,
    after: BTreeMap<Op, VecDeque<BackendErrorKind>>,
    calls: BTreeMap<Op, u64>,
}

/// A [`Store`] that delegates to `S` and fails where a test injected a
/// fault. See the module docs.
#[derive(Debug, Default)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Mutex<Faults>,
    poison: Mutex<Poison>,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`, with no faults injected.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            faults: Mutex::default(),
            poison: Mutex::default(),
        }
    }

    /// The wrapped store, to inspect what was (not) written.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The next call of `op` fails with a `kind` error without reaching the
    /// inner store. Injections queue up: each fails one call.
    pub fn inject(&self, op: Op, kind: BackendErrorKind) {
        self.faults().before.entry(op).or_default().push_back(kind);
    }

    /// The next call of `op` reaches the inner store, then fails with a
    /// `kind` error anyway (a timeout whose write landed). Queued like
    /// [`FaultyStore::inject`].
    pub fn inject_after(&self, op: Op, kind: BackendErrorKind) {
        self.faults().after.entry(op).or_default().push_back(kind);
    }

    /// Drops every fault injected and not yet fired.
    pub fn clear_faults(&self) {
        let mut faults = self.faults();
        faults.before.clear();
        faults.after.clear();
    }

    /// How many times `op` was called on the wrapper (failed calls included).
    pub fn calls(&self, op: Op) -> u64 {
        self.faults().calls.get(&op).copied().unwrap_or(0)
    }

    /// True once an injected failure poisoned the store.
    pub fn is_poisoned(&self) -> bool {
        self.poison().is_set()
    }

    /// Clears the poison, as reopening a real backend would (the inner
    /// store keeps its state: here everything written counts as durable).
    /// Faults still queued stay queued.
    pub fn reopen(&self) {
        *self.poison() = Poison::default();
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poison(&self) -> MutexGuard<'_, Poison> {
        self.poison.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fires the next fault queued for `op` at `stage`, if any.
    fn fire(&self, op: Op, stage: Stage) -> Result<(), BackendError> {
        let kind = {
            let mut faults = self.faults();
            let queue = match stage {
                Stage::Before => &mut faults.before,
                Stage::After => &mut faults.after,
            };
            queue.get_mut(&op).and_then(VecDeque::pop_front)
        };
        let Some(kind) = kind else {
            return Ok(());
        };
        let error = BackendError::new(
            kind,
            format!("injected fault in {op:?} ({stage:?} the call)"),
        );
        if poisons(op, kind) {
            self.poison().set(error.to_string());
        }
        Err(error)
    }

    /// Runs `call` (a call of `op` on the inner store) under the faults.
    async fn run<T, E: From<BackendError>>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        *self.faults().calls.entry(op).or_default() += 1;
        if op.refused_when_poisoned() {
            self.poison().check()?;
        }
        self.fire(op, Stage::Before)?;
        let result = call.await;
        self.fire(op, Stage::After)?;
        result
    }
}

#[async_trait]
impl<S: Store> AccountStore for FaultyStore<S> {
    async fn create_account(
        &self,
        user: &str,
        first: DeviceRecord,
    ) -> Result<(), CreateAccountError> {
        let call = self.inner.create_account(user, first);
        self.run(Op::CreateAccount, call).await
    }

    async fn device(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        self.run(Op::Device, self.inner.device(user, device)).await
    }

    async fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError> {
        self.run(Op::Devices, self.inner.devices(user)).await
    }

    async fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError> {
        let call = self.inner.add_device(user, name, public_key, created_ms);
        self.run(Op::AddDevice, call).await
    }

    async fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError> {
        let call = self.inner.revoke_device(user, device);
        self.run(Op::RevokeDevice, call).await
    }

    async fn set_push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
        endpoint: Option<&[u8]>,
    ) -> Result<(), BackendError> {
        let call = self.inner.set_push_endpoint(user, device, endpoint);
        self.run(Op::SetPushEndpoint, call).await
    }

    async fn push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let call = self.inner.push_endpoint(user, device);
        self.run(Op::PushEndpoint, call).await
    }
}

#[async_trait]
impl<S: Store> ConversationStore for FaultyStore<S> {
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique_key: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError> {
        let call = self.inner.create_conversation(record, unique_key);
        self.run(Op::CreateConversation, call).await
    }

    async fn conversation_by_key(
        &self,
        unique_key: &[u8],
    ) -> Result<Option<ConversationId>, BackendError> {
        let call = self.inner.conversation_by_key(unique_key);
        self.run(Op::ConversationByKey, call).await
    }

    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, BackendError> {
        self.run(Op::Conversation, self.inner.conversation(id))
            .await
    }

    async fn update_members(
        &self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, MembersError> {
        let call = self.inner.update_members(id, add, remove);
        self.run(Op::UpdateMembers, call).await
    }

    async fn user_conversations(&self, user: &str) -> Result<Vec<ConversationId>, BackendError> {
        let call = self.inner.user_conversations(user);
        self.run(Op::UserConversations, call).await
    }

    async fn user_conversations_after(
        &self,
        user: &str,
        after: ConversationId,
        limit: usize,
    ) -> Result<Vec<ConversationId>, BackendError> {
        let call = self.inner.user_conversations_after(user, after, limit);
        self.run(Op::UserConversationsAfter, call).await
    }

    async fn group_count(&self, user: &str) -> Result<usize, BackendError> {
        self.run(Op::GroupCount, self.inner.group_count(user)).await
    }

    async fn member_since(
        &self,
        id: ConversationId,
        user: &str,
    ) -> Result<Option<Seq>, BackendError> {
        let call = self.inner.member_since(id, user);
        self.run(Op::MemberSince, call).await
    }

    async fn settings(&self, id: ConversationId) -> Result<ConversationSettings, BackendError> {
        self.run(Op::Settings, self.inner.settings(id)).await
    }

    async fn put_settings(
        &self,
        id: ConversationId,
        settings: &ConversationSettings,
    ) -> Result<(), BackendError> {
        let call = self.inner.put_settings(id, settings);
        self.run(Op::PutSettings, call).await
    }
}

#[async_trait]
impl<S: Store> MessageLog for FaultyStore<S> {
    async fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError> {
        self.run(Op::AppendMessage, self.inner.append_message(msg))
            .await
    }

    /// One [`Op::AppendMessage`] per message, as a batch of one each, so a
    /// fault plan counts messages whichever call wrote them.
    async fn append_messages(
        &self,
        msgs: &[StoredMessage],
        fences: &Fences,
    ) -> Result<Vec<Result<AppendOutcome, AppendError>>, BackendError> {
        let mut out = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let one = self
                .inner
                .append_messages(std::slice::from_ref(msg), fences);
            let mut got = self.run(Op::AppendMessage, one).await?;
            out.push(
                got.pop()
                    .unwrap_or(Err(AppendError::NoSuchConversation(msg.conversation_id))),
            );
        }
        Ok(out)
    }

    async fn messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError> {
        let call = self.inner.messages(id, from_seq, limit, now_ms);
        self.run(Op::Messages, call).await
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError> {
        let call = self.inner.advance_cursor(user, device, id, seq);
        self.run(Op::AdvanceCursor, call).await
    }

    async fn cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError> {
        self.run(Op::Cursors, self.inner.cursors(user, device))
            .await
    }

    async fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError> {
        let call = self.inner.sweep_expired(now_ms, limit);
        self.run(Op::SweepExpired, call).await
    }

    async fn purge_message(
        &self,
        id: ConversationId,
        seq: Seq,
        flags: u32,
    ) -> Result<Option<StoredMessage>, BackendError> {
        let call = self.inner.purge_message(id, seq, flags);
        self.run(Op::PurgeMessage, call).await
    }

    async fn erase_purged(&self) -> Result<(), BackendError> {
        self.inner.erase_purged().await
    }
}

#[async_trait]
impl<S: Store> KeyDirectory for FaultyStore<S> {
    async fn put_device_keys(
        &self,
        user: &str,
        device: DeviceId,
        update: &DeviceKeysUpdate,
    ) -> Result<bool, BackendError> {
        let call = self.inner.put_device_keys(user, device, update);
        self.run(Op::PutDeviceKeys, call).await
    }

    async fn device_keys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceKeys>, BackendError> {
        let call = self.inner.device_keys(user, device);
        self.run(Op::DeviceKeys, call).await
    }

    async fn put_keys(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
        keys: &[PoolKey],
        last_resort: Option<&PoolKey>,
    ) -> Result<u32, BackendError> {
        let call = self.inner.put_keys(user, device, pool, keys, last_resort);
        self.run(Op::PutKeys, call).await
    }

    async fn claim_key(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<Option<ClaimedKey>, BackendError> {
        let call = self.inner.claim_key(user, device, pool);
        self.run(Op::ClaimKey, call).await
    }

    async fn key_count(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<u32, BackendError> {
        let call = self.inner.key_count(user, device, pool);
        self.run(Op::KeyCount, call).await
    }
}

#[async_trait]
impl<S: Store> GroupStore for FaultyStore<S> {
    async fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError> {
        self.run(Op::GroupEpoch, self.inner.group_epoch(id)).await
    }

    async fn accept_commit(&self, commit: &CommitRecord) -> Result<CommitOutcome, AppendError> {
        self.run(Op::AcceptCommit, self.inner.accept_commit(commit))
            .await
    }

    async fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError> {
        self.run(Op::GroupInfo, self.inner.group_info(id)).await
    }
}

#[async_trait]
impl<S: Store> ConsentStore for FaultyStore<S> {
    async fn set_group_adds(&self, user: &str, setting: GroupAdds) -> Result<(), BackendError> {
        let call = self.inner.set_group_adds(user, setting);
        self.run(Op::SetGroupAdds, call).await
    }

    async fn group_adds(&self, user: &str) -> Result<GroupAdds, BackendError> {
        self.run(Op::GroupAdds, self.inner.group_adds(user)).await
    }

    async fn set_direct_starts(
        &self,
        user: &str,
        setting: DirectStarts,
    ) -> Result<(), BackendError> {
        let call = self.inner.set_direct_starts(user, setting);
        self.run(Op::SetDirectStarts, call).await
    }

    async fn direct_starts(&self, user: &str) -> Result<DirectStarts, BackendError> {
        self.run(Op::DirectStarts, self.inner.direct_starts(user))
            .await
    }

    async fn set_presence_visibility(
        &self,
        user: &str,
        setting: crate::PresenceVisibility,
    ) -> Result<(), BackendError> {
        let call = self.inner.set_presence_visibility(user, setting);
        self.run(Op::SetPresenceVisibility, call).await
    }

    async fn presence_visibility(
        &self,
        user: &str,
    ) -> Result<crate::PresenceVisibility, BackendError> {
        let call = self.inner.presence_visibility(user);
        self.run(Op::PresenceVisibility, call).await
    }

    async fn add_contacts(&self, user: &str, contacts: &[UserId]) -> Result<(), BackendError> {
        let call = self.inner.add_contacts(user, contacts);
        self.run(Op::AddContacts, call).await
    }

    async fn is_contact(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let call = self.inner.is_contact(user, other);
        self.run(Op::IsContact, call).await
    }

    async fn put_invitation(
        &self,
        user: &str,
        invitation: &InvitationRecord,
        keep: usize,
    ) -> Result<(), BackendError> {
        let call = self.inner.put_invitation(user, invitation, keep);
        self.run(Op::PutInvitation, call).await
    }

    async fn invitations(&self, user: &str) -> Result<Vec<InvitationRecord>, BackendError> {
        self.run(Op::Invitations, self.inner.invitations(user))
            .await
    }

    async fn invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<Option<InvitationRecord>, BackendError> {
        let call = self.inner.invitation(user, conversation);
        self.run(Op::Invitation, call).await
    }

    async fn remove_invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<bool, BackendError> {
        let call = self.inner.remove_invitation(user, conversation);
        self.run(Op::RemoveInvitation, call).await
    }

    async fn block(
        &self,
        user: &str,
        other: &str,
        max: usize,
    ) -> Result<BlockOutcome, BackendError> {
        let call = self.inner.block(user, other, max);
        self.run(Op::Block, call).await
    }

    async fn unblock(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        self.run(Op::Unblock, self.inner.unblock(user, other)).await
    }

    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        self.run(Op::IsBlocked, self.inner.is_blocked(user, other))
            .await
    }

    async fn blocked_users(&self, user: &str) -> Result<Vec<UserId>, BackendError> {
        self.run(Op::BlockedUsers, self.inner.blocked_users(user))
            .await
    }
}

#[async_trait]
impl<S: Store> OwnershipStore for FaultyStore<S> {
    async fn claim_ownership(
        &self,
        id: ConversationId,
        node: &str,
    ) -> Result<FenceToken, BackendError> {
        let call = self.inner.claim_ownership(id, node);
        self.run(Op::ClaimOwnership, call).await
    }

    async fn ownership(&self, id: ConversationId) -> Result<Option<Ownership>, BackendError> {
        self.run(Op::Ownership, self.inner.ownership(id)).await
    }
}

#[async_trait]
impl<S: Store> Store for FaultyStore<S> {
    async fn persist(&self) -> Result<(), BackendError> {
        self.run(Op::Persist, self.inner.persist()).await
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::memory::MemStore;
    use crate::BackendErrorKind::{Corrupt, Io, Poisoned, Timeout, Unavailable};
    use crate::ConversationKind;

    type TestResult = Result<(), Box<dyn Error>>;

    fn device(device: DeviceId) -> DeviceRecord {
        DeviceRecord {
            device,
            name: format!("device {device}"),
            public_key: [7; 32],
            created_ms: 1,
        }
    }

    fn conversation(id: ConversationId) -> ConversationRecord {
        ConversationRecord {
            id,
            kind: ConversationKind::Group,
            creator: "alice".into(),
            members: ["alice".to_string()].into(),
            created_ms: 1,
            head_seq: 0,
        }
    }

    fn message(id: ConversationId, seq: Seq, client_message_id: u64) -> StoredMessage {
        StoredMessage {
            conversation_id: id,
            seq,
            sender_user: "alice".into(),
            sender_device: 1,
            client_message_id,
            server_time_ms: 1,
            expires_at_ms: u64::MAX,
            flags: 0,
            payload: Bytes::from_static(b"ciphertext"),
        }
    }

    fn commit(id: ConversationId, seq: Seq) -> CommitRecord {
        CommitRecord {
            fence: None,
            conversation_id: id,
            epoch: 0,
            group_info: Bytes::from_static(b"group info"),
            add: vec![],
            remove: vec![],
            commit: message(id, seq, 1_000),
            welcome: None,
        }
    }

    /// A wrapped store with alice (device 1) and her conversation 1.
    async fn store() -> Result<FaultyStore<MemStore>, Box<dyn Error>> {
        let s = FaultyStore::new(MemStore::new());
        s.create_account("alice", device(1)).await?;
        s.create_conversation(&conversation(1), None).await?;
        Ok(s)
    }

    /// The backend failure inside a per-operation error.
    trait Backend {
        fn backend(self) -> Option<BackendError>;
    }

    impl Backend for BackendError {
        fn backend(self) -> Option<BackendError> {
            Some(self)
        }
    }

    macro_rules! backend_variant {
        ($($error:ty),+) => {$(
            impl Backend for $error {
                fn backend(self) -> Option<BackendError> {
                    match self {
                        Self::Backend(e) => Some(e),
                        _ => None,
                    }
                }
            }
        )+};
    }

    backend_variant!(
        CreateAccountError,
        CreateConversationError,
        MembersError,
        AppendError
    );

    fn kind<T, E: Backend>(result: Result<T, E>) -> Option<BackendErrorKind> {
        result.err().and_then(Backend::backend).map(|e| e.kind())
    }

    /// Calls `op` once; the kind of backend failure it returned, if any.
    async fn call(s: &FaultyStore<MemStore>, op: Op) -> Option<BackendErrorKind> {
        let pool = KeyPool::OneTimePrekey;
        match op {
            Op::CreateAccount => kind(s.create_account("bob", device(1)).await),
            Op::Device => kind(s.device("alice", 1).await),
            Op::Devices => kind(s.devices("alice").await),
            Op::AddDevice => kind(s.add_device("alice", "two", [2; 32], 2).await),
            Op::RevokeDevice => kind(s.revoke_device("alice", 9).await),
            Op::SetPushEndpoint => kind(s.set_push_endpoint("alice", 1, Some(b"w")).await),
            Op::PushEndpoint => kind(s.push_endpoint("alice", 1).await),
            Op::CreateConversation => kind(s.create_conversation(&conversation(2), None).await),
            Op::Conversation => kind(s.conversation(1).await),
            Op::UpdateMembers => kind(s.update_members(1, &[], &[]).await),
            Op::UserConversations => kind(s.user_conversations("alice").await),
            Op::MemberSince => kind(s.member_since(1, "alice").await),
            Op::AppendMessage => kind(s.append_message(&message(1, 1, 1)).await),
            Op::Messages => kind(s.messages(1, 0, 10, 0).await),
            Op::AdvanceCursor => kind(s.advance_cursor("alice", 1, 1, 1).await),
            Op::Cursors => kind(s.cursors("alice", 1).await),
            Op::SweepExpired => kind(s.sweep_expired(0, 10).await),
            Op::PutDeviceKeys => kind(
                s.put_device_keys("alice", 1, &DeviceKeysUpdate::default())
                    .await,
            ),
            Op::DeviceKeys => kind(s.device_keys("alice", 1).await),
            Op::PutKeys => kind(s.put_keys("alice", 1, pool, &[], None).await),
            Op::ClaimKey => kind(s.claim_key("alice", 1, pool).await),
            Op::KeyCount => kind(s.key_count("alice", 1, pool).await),
            Op::GroupEpoch => kind(s.group_epoch(1).await),
            Op::AcceptCommit => kind(s.accept_commit(&commit(1, 1)).await),
            Op::GroupInfo => kind(s.group_info(1).await),
            Op::UserConversationsAfter => kind(s.user_conversations_after("alice", 0, 9).await),
            Op::GroupCount => kind(s.group_count("alice").await),
            Op::SetGroupAdds => kind(s.set_group_adds("alice", GroupAdds::Everyone).await),
            Op::GroupAdds => kind(s.group_adds("alice").await),
            Op::SetDirectStarts => kind(s.set_direct_starts("alice", DirectStarts::Nobody).await),
            Op::DirectStarts => kind(s.direct_starts("alice").await),
            Op::ConversationByKey => kind(s.conversation_by_key(b"direct\0a\0").await),
            Op::SetPresenceVisibility => {
                let hidden = crate::PresenceVisibility::Nobody;
                kind(s.set_presence_visibility("alice", hidden).await)
            }
            Op::PresenceVisibility => kind(s.presence_visibility("alice").await),
            Op::ClaimOwnership => kind(s.claim_ownership(1, "node-a").await),
            Op::Ownership => kind(s.ownership(1).await),
            Op::AddContacts => kind(s.add_contacts("alice", &["bob".into()]).await),
            Op::IsContact => kind(s.is_contact("alice", "bob").await),
            Op::PutInvitation => {
                let invitation = InvitationRecord {
                    conversation_id: 1,
                    inviter: "bob".into(),
                    created_ms: 1,
                    accepted: false,
                };
                kind(s.put_invitation("alice", &invitation, 9).await)
            }
            Op::Invitations => kind(s.invitations("alice").await),
            Op::Invitation => kind(s.invitation("alice", 1).await),
            Op::RemoveInvitation => kind(s.remove_invitation("alice", 1).await),
            Op::PurgeMessage => kind(s.purge_message(1, 1, 0).await),
            Op::Settings => kind(s.settings(1).await),
            Op::PutSettings => kind(s.put_settings(1, &ConversationSettings::default()).await),
            Op::Block => kind(s.block("alice", "bob", 9).await),
            Op::Unblock => kind(s.unblock("alice", "bob").await),
            Op::IsBlocked => kind(s.is_blocked("alice", "bob").await),
            Op::BlockedUsers => kind(s.blocked_users("alice").await),
            Op::Persist => kind(s.persist().await),
        }
    }

    #[tokio::test]
    async fn every_op_has_its_own_faults_and_counter() -> TestResult {
        let s = store().await?;
        for op in Op::ALL {
            s.inject(op, Unavailable);
            assert_eq!(call(&s, op).await, Some(Unavailable), "{op:?}");
        }
        for op in Op::ALL {
            assert_eq!(
                s.calls(op),
                1 + u64::from(matches!(op, Op::CreateAccount | Op::CreateConversation)),
                "{op:?}: one call each, plus the setup's"
            );
        }
        assert!(!s.is_poisoned(), "Unavailable is retryable");
        Ok(())
    }

    #[tokio::test]
    async fn inject_fails_one_call_without_reaching_the_store() -> TestResult {
        let s = store().await?;
        s.inject(Op::AppendMessage, Unavailable);
        s.inject(Op::AppendMessage, Timeout);
        let first = s.append_message(&message(1, 1, 1)).await;
        assert!(
            matches!(&first, Err(AppendError::Backend(e)) if e.kind() == Unavailable && e.is_retryable()),
            "{first:?}"
        );
        assert_eq!(
            kind(s.append_message(&message(1, 1, 1)).await),
            Some(Timeout)
        );
        assert_eq!(
            s.inner().messages(1, 0, 10, 0).await?,
            vec![],
            "nothing written"
        );
        assert_eq!(
            s.append_message(&message(1, 1, 1)).await?,
            AppendOutcome::Appended
        );
        assert_eq!(s.calls(Op::AppendMessage), 3);
        assert_eq!(
            s.calls(Op::Messages),
            0,
            "the inner store's calls are not counted"
        );
        assert!(!s.is_poisoned());
        Ok(())
    }

    #[tokio::test]
    async fn inject_after_lets_the_write_land() -> TestResult {
        let s = store().await?;
        s.inject_after(Op::AppendMessage, Timeout);
        let msg = message(1, 1, 1);
        assert_eq!(kind(s.append_message(&msg).await), Some(Timeout));
        assert_eq!(
            s.inner().messages(1, 0, 10, 0).await?,
            vec![msg.clone()],
            "landed"
        );
        assert!(!s.is_poisoned(), "a timeout is retryable");
        let retry = s.append_message(&msg).await?;
        assert_eq!(retry, AppendOutcome::Duplicate(msg), "the retry finds it");
        Ok(())
    }

    #[tokio::test]
    async fn failed_writes_poison_until_reopen() -> TestResult {
        let s = store().await?;
        s.inject(Op::AppendMessage, Io);
        let failed = s.append_message(&message(1, 1, 1)).await;
        assert_eq!(kind(failed), Some(Io));
        assert!(s.is_poisoned());
        assert_eq!(s.inner().messages(1, 0, 10, 0).await?, vec![]);

        // Every write and persist is refused, without reaching the store.
        for op in Op::ALL.into_iter().filter(|op| op.refused_when_poisoned()) {
            assert_eq!(call(&s, op).await, Some(Poisoned), "{op:?}");
        }
        assert_eq!(s.inner().devices("bob").await?, vec![], "nothing written");
        // Reads still work.
        for op in Op::ALL.into_iter().filter(|op| !op.refused_when_poisoned()) {
            assert_eq!(call(&s, op).await, None, "{op:?}");
        }

        s.reopen();
        assert!(!s.is_poisoned());
        assert_eq!(
            s.append_message(&message(1, 1, 1)).await?,
            AppendOutcome::Appended
        );
        s.persist().await?;
        Ok(())
    }

    #[tokio::test]
    async fn failed_persist_poisons_and_inject_after_writes_poison_too() -> TestResult {
        let s = store().await?;
        s.inject(Op::Persist, Io);
        assert_eq!(kind(s.persist().await), Some(Io));
        assert!(s.is_poisoned());
        assert_eq!(kind(s.persist().await), Some(Poisoned), "no later Ok");
        assert_eq!(
            kind(s.add_device("alice", "x", [1; 32], 1).await),
            Some(Poisoned)
        );
        s.reopen();
        s.persist().await?;

        s.inject_after(Op::AcceptCommit, Corrupt);
        assert_eq!(kind(s.accept_commit(&commit(1, 1)).await), Some(Corrupt));
        assert!(s.is_poisoned());
        assert_eq!(s.inner().group_epoch(1).await?, 1, "the write landed");
        assert_eq!(kind(s.accept_commit(&commit(1, 2)).await), Some(Poisoned));
        Ok(())
    }

    #[tokio::test]
    async fn read_failures_do_not_poison() -> TestResult {
        let s = store().await?;
        s.inject(Op::Devices, Corrupt);
        s.inject_after(Op::Messages, Io);
        assert_eq!(kind(s.devices("alice").await), Some(Corrupt));
        assert_eq!(kind(s.messages(1, 0, 10, 0).await), Some(Io));
        assert!(!s.is_poisoned());
        assert_eq!(s.devices("alice").await?, vec![device(1)], "one call only");
        s.append_message(&message(1, 1, 1)).await?;
        Ok(())
    }

    #[tokio::test]
    async fn clear_faults_drops_pending_faults() -> TestResult {
        let s = store().await?;
        s.inject(Op::Persist, Io);
        s.inject_after(Op::ClaimKey, Io);
        s.clear_faults();
        s.persist().await?;
        assert_eq!(s.claim_key("alice", 1, KeyPool::KeyPackage).await?, None);
        assert!(!s.is_poisoned());
        Ok(())
    }
}
