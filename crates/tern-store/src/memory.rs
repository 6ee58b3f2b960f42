//! [`MemStore`]: the in-memory backend, for tests.
//!
//! It owns all of a store's state in one set of ordered maps behind one
//! mutex: accounts with their devices (each device with its long-term keys
//! and its single-use key pools, so revoking a device drops them with it),
//! conversations with their membership, message log, head, MLS epoch and
//! GroupInfo, the unique-key, membership, idempotency and expiry indexes, and
//! every device's delivery cursors. Every call takes the mutex once, so each
//! call is atomic and concurrent calls are serialised. Nothing survives the
//! process: [`Store::persist`] is a no-op that returns `Ok`, and no call ever
//! fails with a [`BackendError`] (wrap it in [`crate::faulty::FaultyStore`]
//! to inject failures).
//!
//! A panic while the mutex is held does not poison the store: later calls
//! carry on with the state as the panicking call left it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    AccountStore, AppendError, AppendOutcome, BackendError, BlockOutcome, ClaimedKey,
    CommitOutcome, CommitRecord, ConsentStore, ConversationId, ConversationRecord,
    ConversationSettings, ConversationStore, CreateAccountError, CreateConversationError,
    CreateOutcome, DeviceId, DeviceKeys, DeviceKeysUpdate, DeviceRecord, DirectStarts, FenceToken,
    Fences, GroupAdds, GroupStore, InvitationRecord, KeyDirectory, KeyPool, MembersError,
    MessageLog, Ownership, OwnershipStore, PoolKey, Seq, SignedPrekey, Store, StoredMessage,
    UserId, KEY_POOL_CAP,
};

/// The in-memory backend. See the module docs.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<State>,
}

/// `(conversation, sender user, sender device, client_message_id)`.
type IdempotencyKey = (ConversationId, UserId, DeviceId, u64);

#[derive(Debug, Default)]
struct State {
    accounts: BTreeMap<UserId, Account>,
    conversations: BTreeMap<ConversationId, Conversation>,
    unique_keys: BTreeMap<Vec<u8>, ConversationId>,
    /// user → conversation → first seq of the current membership.
    memberships: BTreeMap<UserId, BTreeMap<ConversationId, Seq>>,
    idempotency: BTreeMap<IdempotencyKey, Seq>,
    /// `(expires_at_ms, conversation, seq)`, oldest expiry first.
    expiry: BTreeSet<(u64, ConversationId, Seq)>,
    cursors: BTreeMap<UserId, BTreeMap<DeviceId, BTreeMap<ConversationId, Seq>>>,
    group_adds: BTreeMap<UserId, GroupAdds>,
    direct_starts: BTreeMap<UserId, DirectStarts>,
    presence_visibility: BTreeMap<UserId, crate::PresenceVisibility>,
    push_endpoints: BTreeMap<(UserId, DeviceId), Vec<u8>>,
    /// user → the users it chose (its contacts).
    contacts: BTreeMap<UserId, BTreeSet<UserId>>,
    /// user → conversation → the user's invitation to it.
    invitations: BTreeMap<UserId, BTreeMap<ConversationId, InvitationRecord>>,
    /// user → the users it blocked.
    blocks: BTreeMap<UserId, BTreeSet<UserId>>,
    settings: BTreeMap<ConversationId, ConversationSettings>,
    /// conversation → its last ownership claim.
    owners: BTreeMap<ConversationId, Ownership>,
}

#[derive(Debug)]
struct Account {
    /// The highest device id ever given to this user.
    highest: DeviceId,
    /// Active devices only: revoking removes the entry.
    devices: BTreeMap<DeviceId, Device>,
}

#[derive(Debug)]
struct Device {
    record: DeviceRecord,
    identity: Option<([u8; 32], [u8; 64])>,
    signed_prekey: Option<SignedPrekey>,
    kem_prekey: Option<Bytes>,
    pools: BTreeMap<KeyPool, Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    keys: BTreeMap<u64, Bytes>,
    last_resort: Option<PoolKey>,
}

#[derive(Debug)]
struct Conversation {
    record: ConversationRecord,
    log: BTreeMap<Seq, StoredMessage>,
    epoch: u64,
    group_info: Option<Bytes>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn idempotency_key(id: ConversationId, msg: &StoredMessage) -> IdempotencyKey {
    (
        id,
        msg.sender_user.clone(),
        msg.sender_device,
        msg.client_message_id,
    )
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// `Ok` when `got` follows `head`.
fn check_seq(id: ConversationId, head: Seq, got: Seq) -> Result<(), AppendError> {
    if head.checked_add(1) == Some(got) {
        Ok(())
    } else {
        Err(AppendError::SeqConflict {
            conversation: id,
            head,
            got,
        })
    }
}

impl Device {
    fn new(record: DeviceRecord) -> Self {
        Device {
            record,
            identity: None,
            signed_prekey: None,
            kem_prekey: None,
            pools: BTreeMap::new(),
        }
    }

    fn keys(&self) -> Option<DeviceKeys> {
        let (identity_key, identity_signature) = self.identity?;
        Some(DeviceKeys {
            identity_key,
            identity_signature,
            signed_prekey: self.signed_prekey.clone(),
            kem_prekey: self.kem_prekey.clone(),
        })
    }

    fn update(&mut self, update: &DeviceKeysUpdate) {
        if let Some(identity) = update.identity {
            self.identity = Some(identity);
        }
        if let Some(signed) = &update.signed_prekey {
            self.signed_prekey = Some(signed.clone());
        }
        if let Some(kem) = &update.kem_prekey {
            self.kem_prekey = Some(kem.clone());
        }
    }

    fn pool_len(&self, pool: KeyPool) -> u32 {
        self.pools.get(&pool).map_or(0, |p| len_u32(p.keys.len()))
    }
}

impl Pool {
    fn put(&mut self, keys: &[PoolKey], last_resort: Option<&PoolKey>) {
        let cap = usize::try_from(KEY_POOL_CAP).unwrap_or(usize::MAX);
        for key in keys {
            if self.keys.len() >= cap {
                break;
            }
            self.keys.entry(key.id).or_insert_with(|| key.key.clone());
        }
        if let Some(last_resort) = last_resort {
            self.last_resort = Some(last_resort.clone());
        }
    }

    fn claim(&mut self) -> Option<ClaimedKey> {
        match self.keys.pop_first() {
            Some((id, key)) => Some(ClaimedKey {
                key: PoolKey { id, key },
                last_resort: false,
                remaining: len_u32(self.keys.len()),
            }),
            None => self.last_resort.clone().map(|key| ClaimedKey {
                key,
                last_resort: true,
                remaining: 0,
            }),
        }
    }
}

impl State {
    fn device(&self, user: &str, device: DeviceId) -> Option<&Device> {
        self.accounts.get(user)?.devices.get(&device)
    }

    fn device_mut(&mut self, user: &str, device: DeviceId) -> Option<&mut Device> {
        self.accounts.get_mut(user)?.devices.get_mut(&device)
    }

    /// The stored message `msg` repeats (same idempotency key), if any.
    fn duplicate(&self, msg: &StoredMessage) -> Option<StoredMessage> {
        let id = msg.conversation_id;
        let seq = self.idempotency.get(&idempotency_key(id, msg))?;
        self.conversations.get(&id)?.log.get(seq).cloned()
    }

    /// Appends `msg` to conversation `id` (which exists; the seq is checked).
    fn write_message(&mut self, id: ConversationId, msg: &StoredMessage) {
        if let Some(conversation) = self.conversations.get_mut(&id) {
            conversation.record.head_seq = msg.seq;
            conversation.log.insert(msg.seq, msg.clone());
            self.idempotency.insert(idempotency_key(id, msg), msg.seq);
            self.expiry.insert((msg.expires_at_ms, id, msg.seq));
        }
    }

    /// Adds then removes members of `id`, with their indexes; added users'
    /// membership starts at seq `since`.
    fn update_members(
        &mut self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
        since: Seq,
    ) -> Option<ConversationRecord> {
        let conversation = self.conversations.get_mut(&id)?;
        for user in add {
            if conversation.record.members.insert(user.clone()) {
                self.memberships
                    .entry(user.clone())
                    .or_default()
                    .insert(id, since);
            }
        }
        for user in remove {
            conversation.record.members.remove(user);
            if let Some(ids) = self.memberships.get_mut(user) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.memberships.remove(user);
                }
            }
        }
        Some(conversation.record.clone())
    }

    /// Deletes one expired message and its idempotency key.
    fn sweep_one(&mut self, entry: (u64, ConversationId, Seq)) {
        self.expiry.remove(&entry);
        let (_, id, seq) = entry;
        let removed = self
            .conversations
            .get_mut(&id)
            .and_then(|c| c.log.remove(&seq));
        if let Some(msg) = removed {
            self.idempotency.remove(&idempotency_key(id, &msg));
        }
    }

    /// One append, checked in the trait's order: fence, conversation,
    /// duplicate, seq.
    fn append(
        &mut self,
        msg: &StoredMessage,
        fence: Option<FenceToken>,
    ) -> Result<AppendOutcome, AppendError> {
        let id = msg.conversation_id;
        self.check_fence(id, fence)?;
        let conversation = self
            .conversations
            .get(&id)
            .ok_or(AppendError::NoSuchConversation(id))?;
        let head = conversation.record.head_seq;
        if let Some(stored) = self.duplicate(msg) {
            return Ok(AppendOutcome::Duplicate(stored));
        }
        check_seq(id, head, msg.seq)?;
        self.write_message(id, msg);
        Ok(AppendOutcome::Appended)
    }

    /// `Fenced` unless `fence` is unset or the stored token of `id`.
    fn check_fence(
        &self,
        id: ConversationId,
        fence: Option<FenceToken>,
    ) -> Result<(), AppendError> {
        let Some(held) = fence else { return Ok(()) };
        let current = self.owners.get(&id).map_or(0, |o| o.token);
        if held == current {
            Ok(())
        } else {
            Err(AppendError::Fenced {
                conversation: id,
                held,
                current,
            })
        }
    }

    fn accept_commit(&mut self, commit: &CommitRecord) -> Result<CommitOutcome, AppendError> {
        let id = commit.conversation_id;
        self.check_fence(id, commit.fence)?;
        let conversation = self
            .conversations
            .get_mut(&id)
            .ok_or(AppendError::NoSuchConversation(id))?;
        if conversation.epoch != commit.epoch {
            return Ok(CommitOutcome::Stale {
                current: conversation.epoch,
            });
        }
        let head = conversation.record.head_seq;
        check_seq(id, head, commit.commit.seq)?;
        if let Some(welcome) = &commit.welcome {
            check_seq(id, commit.commit.seq, welcome.seq)?;
        }
        conversation.epoch = commit.epoch.saturating_add(1);
        conversation.group_info = Some(commit.group_info.clone());
        self.write_message(id, &commit.commit);
        if let Some(welcome) = &commit.welcome {
            self.write_message(id, welcome);
        }
        let since = commit.commit.seq.saturating_add(1);
        let record = self
            .update_members(id, &commit.add, &commit.remove, since)
            .ok_or(AppendError::NoSuchConversation(id))?;
        Ok(CommitOutcome::Accepted(record))
    }
}

#[async_trait]
impl AccountStore for MemStore {
    async fn create_account(
        &self,
        user: &str,
        first: DeviceRecord,
    ) -> Result<(), CreateAccountError> {
        let mut state = self.state();
        if state.accounts.contains_key(user) {
            return Err(CreateAccountError::UserExists(user.to_string()));
        }
        let account = Account {
            highest: first.device,
            devices: BTreeMap::from([(first.device, Device::new(first))]),
        };
        state.accounts.insert(user.to_string(), account);
        Ok(())
    }

    async fn device(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        Ok(self.state().device(user, device).map(|d| d.record.clone()))
    }

    async fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError> {
        let state = self.state();
        let devices = state.accounts.get(user).map(|a| a.devices.values());
        Ok(devices
            .into_iter()
            .flatten()
            .map(|d| d.record.clone())
            .collect())
    }

    async fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError> {
        let mut state = self.state();
        let Some(account) = state.accounts.get_mut(user) else {
            return Ok(None);
        };
        let device = account
            .highest
            .checked_add(1)
            .ok_or_else(|| BackendError::corrupt(format!("device ids of {user} exhausted")))?;
        let record = DeviceRecord {
            device,
            name: name.to_string(),
            public_key,
            created_ms,
        };
        account.devices.insert(device, Device::new(record));
        account.highest = device;
        Ok(Some(device))
    }

    async fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError> {
        let mut state = self.state();
        let revoked = state
            .accounts
            .get_mut(user)
            .and_then(|a| a.devices.remove(&device))
            .is_some();
        if revoked {
            if let Some(devices) = state.cursors.get_mut(user) {
                devices.remove(&device);
            }
        }
        Ok(revoked)
    }

    async fn set_push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
        endpoint: Option<&[u8]>,
    ) -> Result<(), BackendError> {
        crate::check_push_endpoint(endpoint)?;
        let mut state = self.state();
        let key = (user.to_owned(), device);
        match endpoint {
            Some(bytes) => state.push_endpoints.insert(key, bytes.to_vec()),
            None => state.push_endpoints.remove(&key),
        };
        Ok(())
    }

    async fn push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let state = self.state();
        Ok(state
            .push_endpoints
            .get(&(user.to_owned(), device))
            .cloned())
    }
}

#[async_trait]
impl ConversationStore for MemStore {
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique_key: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError> {
        let mut state = self.state();
        let existing = unique_key
            .and_then(|key| state.unique_keys.get(key))
            .and_then(|id| state.conversations.get(id));
        if let Some(existing) = existing {
            return Ok(CreateOutcome::Existing(existing.record.clone()));
        }
        if state.conversations.contains_key(&record.id) {
            return Err(CreateConversationError::IdTaken(record.id));
        }
        let conversation = Conversation {
            record: ConversationRecord {
                head_seq: 0,
                ..record.clone()
            },
            log: BTreeMap::new(),
            epoch: 0,
            group_info: None,
        };
        state.conversations.insert(record.id, conversation);
        if let Some(key) = unique_key {
            state.unique_keys.insert(key.to_vec(), record.id);
        }
        for user in &record.members {
            let ids = state.memberships.entry(user.clone()).or_default();
            ids.insert(record.id, 1);
        }
        Ok(CreateOutcome::Created)
    }

    async fn conversation_by_key(
        &self,
        unique_key: &[u8],
    ) -> Result<Option<ConversationId>, BackendError> {
        Ok(self.state().unique_keys.get(unique_key).copied())
    }

    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, BackendError> {
        let state = self.state();
        Ok(state.conversations.get(&id).map(|c| c.record.clone()))
    }

    async fn update_members(
        &self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, MembersError> {
        let mut state = self.state();
        let head = state.conversations.get(&id).map(|c| c.record.head_seq);
        let since = head.unwrap_or(0).saturating_add(1);
        state
            .update_members(id, add, remove, since)
            .ok_or(MembersError::NoSuchConversation(id))
    }

    async fn user_conversations(&self, user: &str) -> Result<Vec<ConversationId>, BackendError> {
        let state = self.state();
        let ids = state.memberships.get(user).into_iter().flatten();
        Ok(ids.map(|(id, _)| *id).collect())
    }

    async fn user_conversations_after(
        &self,
        user: &str,
        after: ConversationId,
        limit: usize,
    ) -> Result<Vec<ConversationId>, BackendError> {
        let state = self.state();
        let ids = state.memberships.get(user).into_iter().flatten();
        let later = ids.map(|(id, _)| *id).filter(|id| *id > after);
        Ok(later.take(limit).collect())
    }

    async fn group_count(&self, user: &str) -> Result<usize, BackendError> {
        let state = self.state();
        let ids = state.memberships.get(user).into_iter().flatten();
        let groups = ids.filter(|(id, _)| {
            let kind = state.conversations.get(id).map(|c| c.record.kind);
            kind == Some(crate::ConversationKind::Group)
        });
        Ok(groups.count())
    }

    async fn member_since(
        &self,
        id: ConversationId,
        user: &str,
    ) -> Result<Option<Seq>, BackendError> {
        let state = self.state();
        Ok(state
            .memberships
            .get(user)
            .and_then(|ids| ids.get(&id))
            .copied())
    }

    async fn settings(&self, id: ConversationId) -> Result<ConversationSettings, BackendError> {
        Ok(self.state().settings.get(&id).cloned().unwrap_or_default())
    }

    async fn put_settings(
        &self,
        id: ConversationId,
        settings: &ConversationSettings,
    ) -> Result<(), BackendError> {
        self.state().settings.insert(id, settings.clone());
        Ok(())
    }
}

#[async_trait]
impl MessageLog for MemStore {
    async fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError> {
        self.state().append(msg, None)
    }

    async fn append_messages(
        &self,
        msgs: &[StoredMessage],
        fences: &Fences,
    ) -> Result<Vec<Result<AppendOutcome, AppendError>>, BackendError> {
        let mut state = self.state();
        let appended = msgs.iter().map(|msg| {
            let fence = fences.of(msg.conversation_id);
            state.append(msg, fence)
        });
        Ok(appended.collect())
    }

    async fn messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError> {
        let state = self.state();
        let log = state
            .conversations
            .get(&id)
            .map(|c| c.log.range(from_seq..));
        Ok(log
            .into_iter()
            .flatten()
            .map(|(_, msg)| msg)
            .filter(|msg| msg.expires_at_ms > now_ms)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError> {
        let mut state = self.state();
        let devices = state.cursors.entry(user.to_string()).or_default();
        let cursor = devices.entry(device).or_default().entry(id).or_default();
        *cursor = (*cursor).max(seq);
        Ok(*cursor)
    }

    async fn cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError> {
        let state = self.state();
        let cursors = state.cursors.get(user).and_then(|d| d.get(&device));
        Ok(cursors.cloned().unwrap_or_default())
    }

    async fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError> {
        let mut state = self.state();
        let due: Vec<_> = state
            .expiry
            .iter()
            .take_while(|(expires_at_ms, _, _)| *expires_at_ms <= now_ms)
            .take(limit)
            .copied()
            .collect();
        for entry in &due {
            state.sweep_one(*entry);
        }
        Ok(due.len())
    }

    /// Replaces the record in place; nothing else holds the payload.
    async fn purge_message(
        &self,
        id: ConversationId,
        seq: Seq,
        flags: u32,
    ) -> Result<Option<StoredMessage>, BackendError> {
        let mut state = self.state();
        let stored = state
            .conversations
            .get_mut(&id)
            .and_then(|c| c.log.get_mut(&seq));
        Ok(stored.map(|msg| {
            msg.payload = Bytes::new();
            msg.flags = flags;
            msg.clone()
        }))
    }
}

#[async_trait]
impl KeyDirectory for MemStore {
    async fn put_device_keys(
        &self,
        user: &str,
        device: DeviceId,
        update: &DeviceKeysUpdate,
    ) -> Result<bool, BackendError> {
        let mut state = self.state();
        let Some(device) = state.device_mut(user, device) else {
            return Ok(false);
        };
        device.update(update);
        Ok(true)
    }

    async fn device_keys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceKeys>, BackendError> {
        Ok(self.state().device(user, device).and_then(Device::keys))
    }

    async fn put_keys(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
        keys: &[PoolKey],
        last_resort: Option<&PoolKey>,
    ) -> Result<u32, BackendError> {
        let mut state = self.state();
        let Some(device) = state.device_mut(user, device) else {
            return Ok(0);
        };
        if !keys.is_empty() || last_resort.is_some() {
            device.pools.entry(pool).or_default().put(keys, last_resort);
        }
        Ok(device.pool_len(pool))
    }

    async fn claim_key(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<Option<ClaimedKey>, BackendError> {
        let mut state = self.state();
        let pool = state
            .device_mut(user, device)
            .and_then(|d| d.pools.get_mut(&pool));
        Ok(pool.and_then(Pool::claim))
    }

    async fn key_count(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<u32, BackendError> {
        let state = self.state();
        Ok(state.device(user, device).map_or(0, |d| d.pool_len(pool)))
    }
}

#[async_trait]
impl GroupStore for MemStore {
    async fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError> {
        Ok(self.state().conversations.get(&id).map_or(0, |c| c.epoch))
    }

    async fn accept_commit(&self, commit: &CommitRecord) -> Result<CommitOutcome, AppendError> {
        self.state().accept_commit(commit)
    }

    async fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError> {
        let state = self.state();
        Ok(state
            .conversations
            .get(&id)
            .and_then(|c| c.group_info.clone()))
    }
}

#[async_trait]
impl ConsentStore for MemStore {
    async fn set_group_adds(&self, user: &str, setting: GroupAdds) -> Result<(), BackendError> {
        self.state().group_adds.insert(user.to_owned(), setting);
        Ok(())
    }

    async fn group_adds(&self, user: &str) -> Result<GroupAdds, BackendError> {
        Ok(self
            .state()
            .group_adds
            .get(user)
            .copied()
            .unwrap_or_default())
    }

    async fn set_direct_starts(
        &self,
        user: &str,
        setting: DirectStarts,
    ) -> Result<(), BackendError> {
        self.state().direct_starts.insert(user.to_owned(), setting);
        Ok(())
    }

    async fn direct_starts(&self, user: &str) -> Result<DirectStarts, BackendError> {
        let state = self.state();
        Ok(state.direct_starts.get(user).copied().unwrap_or_default())
    }

    async fn set_presence_visibility(
        &self,
        user: &str,
        setting: crate::PresenceVisibility,
    ) -> Result<(), BackendError> {
        let mut state = self.state();
        state.presence_visibility.insert(user.to_owned(), setting);
        Ok(())
    }

    async fn presence_visibility(
        &self,
        user: &str,
    ) -> Result<crate::PresenceVisibility, BackendError> {
        let state = self.state();
        let setting = state.presence_visibility.get(user).copied();
        Ok(setting.unwrap_or_default())
    }

    async fn add_contacts(&self, user: &str, contacts: &[UserId]) -> Result<(), BackendError> {
        let mut state = self.state();
        let set = state.contacts.entry(user.to_owned()).or_default();
        set.extend(contacts.iter().filter(|c| *c != user).cloned());
        Ok(())
    }

    async fn is_contact(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let state = self.state();
        Ok(state.contacts.get(user).is_some_and(|c| c.contains(other)))
    }

    async fn put_invitation(
        &self,
        user: &str,
        invitation: &InvitationRecord,
        keep: usize,
    ) -> Result<(), BackendError> {
        let mut state = self.state();
        let held = state.invitations.entry(user.to_owned()).or_default();
        held.insert(invitation.conversation_id, invitation.clone());
        while held.len() > keep {
            let oldest = held
                .values()
                .min_by_key(|i| (i.created_ms, i.conversation_id))
                .map(|i| i.conversation_id);
            match oldest {
                Some(id) => held.remove(&id),
                None => break,
            };
        }
        Ok(())
    }

    async fn invitations(&self, user: &str) -> Result<Vec<InvitationRecord>, BackendError> {
        let state = self.state();
        let mut all: Vec<_> = state
            .invitations
            .get(user)
            .into_iter()
            .flat_map(|m| m.values().cloned())
            .collect();
        crate::oldest_first(&mut all);
        Ok(all)
    }

    async fn invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<Option<InvitationRecord>, BackendError> {
        let state = self.state();
        let held = state.invitations.get(user);
        Ok(held.and_then(|m| m.get(&conversation)).cloned())
    }

    async fn remove_invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<bool, BackendError> {
        let mut state = self.state();
        let held = state.invitations.get_mut(user);
        Ok(held.and_then(|m| m.remove(&conversation)).is_some())
    }

    async fn block(
        &self,
        user: &str,
        other: &str,
        max: usize,
    ) -> Result<BlockOutcome, BackendError> {
        let mut state = self.state();
        let set = state.blocks.entry(user.to_owned()).or_default();
        Ok(if set.contains(other) {
            BlockOutcome::AlreadyBlocked
        } else if set.len() >= max {
            BlockOutcome::Full
        } else {
            set.insert(other.to_owned());
            BlockOutcome::Blocked
        })
    }

    async fn unblock(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let mut state = self.state();
        Ok(state.blocks.get_mut(user).is_some_and(|s| s.remove(other)))
    }

    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let state = self.state();
        Ok(state.blocks.get(user).is_some_and(|s| s.contains(other)))
    }

    async fn blocked_users(&self, user: &str) -> Result<Vec<UserId>, BackendError> {
        let state = self.state();
        Ok(state
            .blocks
            .get(user)
            .into_iter()
            .flatten()
            .cloned()
            .collect())
    }
}

#[async_trait]
impl OwnershipStore for MemStore {
    async fn claim_ownership(
        &self,
        id: ConversationId,
        node: &str,
    ) -> Result<FenceToken, BackendError> {
        let mut state = self.state();
        let token = state
            .owners
            .get(&id)
            .map_or(0, |o| o.token)
            .saturating_add(1);
        let node = node.to_owned();
        state.owners.insert(id, Ownership { node, token });
        Ok(token)
    }

    async fn ownership(&self, id: ConversationId) -> Result<Option<Ownership>, BackendError> {
        Ok(self.state().owners.get(&id).cloned())
    }
}

#[async_trait]
impl Store for MemStore {
    async fn persist(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
