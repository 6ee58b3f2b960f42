//! The end-to-end-encrypted client: [`SecureClient`] wraps the transport
//! [`Client`] so that every message leaves the device encrypted and the
//! server only ever stores ciphertext.
//!
//! * Direct and note-to-self conversations: one Olm (Double Ratchet)
//!   ciphertext per recipient device, including the sender's own other
//!   devices (sent transcripts). Sessions start from the key directory's
//!   prekey bundles; a send refused for a stale device set is re-encrypted
//!   for the devices the server names and retried with the same message id.
//! * Every send keeps one client message id across all its attempts, and
//!   one whose answer is lost (connection lost, timeout) is sent again
//!   unchanged after reconnecting, so it is stored exactly once.
//! * Groups: MLS. Membership changes are Commits the server accepts once per
//!   epoch; a client whose Commit lost processes the winner and retries.
//! * Key upkeep: prekeys and KeyPackages are published on start and topped
//!   up whenever the server says they run low.
//!
//! Incoming messages are decrypted when the app asks for the next
//! [`SecureEvent`] (pull, in order). A background task only handles server
//! notices (key replenishment, device-list changes, link requests) and
//! forwards presence changes and other users' typing as events.
//!
//! Every message decrypted, and every message sent, is kept in plaintext
//! in the device's [`MessageStore`] (`STATE/messages.sqlite3`): an incoming
//! one is written there before the ratchet state that decrypted it is saved
//! and before the app gets it, so before the app can acknowledge it. A
//! message the server delivers again (not acknowledged before a restart,
//! or decrypted while a send-only process caught up on a group) is read
//! from the store, never decrypted twice: it reaches the app once, from
//! whichever process first hands it out, and a redelivery of one the app
//! already had is acknowledged by the SDK and not shown again.
//!
//! Reactions, replies, edits, deletes and receipts are content kinds too
//! (docs/E2EE.md §3), sent and received like text; their API is in
//! [`content_ops`] and [`receipts`]. Their effects on the local store are
//! applied as they are stored ([`MessageStore::insert`]). Receipts are
//! the SDK's own business: they never reach the app as events (the SDK
//! acknowledges them), and the SDK sends a *delivered* receipt, coalesced
//! per conversation, for every visible message it stores from someone
//! else.

pub mod calls;
pub mod content_ops;
pub mod group_info;
pub mod receipts;
pub mod requests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Mutex};

use super::content::Content;
use super::identity::Identity;
use super::message_store::{MessageStore, MessageStoreError, StoredMessage, MESSAGE_STORE_FILE};
use super::mls::{MlsClient, MlsError, Processed};
use super::olm::{CryptoError, OlmDevice, PeerDevice};
use super::sdk::{Client, ClientError, ClientOptions, SendReceipt};
use super::state_lock::{StateLock, StateLockError};
use tern_proto::auth::{identity_key_transcript, prekey_transcript, sign, verify};
use tern_proto::body::messaging::{self, DevicePayload};
use tern_proto::body::prekeys::{
    self, DeviceBundleData, OneTimePrekeyData, SignedPrekeyData, UploadPrekeys,
};
use tern_proto::body::presence::PresenceEntry;
use tern_proto::body::typing::TypingChanged;
use tern_proto::body::{devices, mls as mls_body};
use tern_proto::fb::ErrorCode;
use tern_proto::{flags, Body, ConversationKind, Message};

/// One-time prekeys kept on the server.
const PREKEY_TARGET: u32 = 100;
/// KeyPackages kept on the server.
const KEY_PACKAGE_TARGET: u32 = 20;
/// Attempts at a send whose device set keeps changing.
const MAX_SEND_ATTEMPTS: usize = 4;
/// Attempts at a Commit that keeps losing its epoch.
const MAX_COMMIT_ATTEMPTS: usize = 5;
/// Messages fetched per History request when looking for a Commit.
const COMMIT_SCAN_WINDOW: u64 = 64;
/// How long a device found without keys is skipped before its keys are
/// claimed again (claims are rate limited per claimer and target).
const KEYLESS_RECHECK: Duration = Duration::from_secs(10);

/// Why a secure operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The state directory is held by another client or process
    /// ([`StateLockError::InUse`] names its pid); nothing in it was read.
    #[error(transparent)]
    Lock(#[from] StateLockError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("1:1 encryption: {0}")]
    Olm(#[from] CryptoError),
    #[error("group encryption: {0}")]
    Mls(#[from] MlsError),
    #[error("the server's key bundle for {0} is not signed by that device's key; refusing to encrypt to it")]
    BadBundle(String),
    #[error("already a member of group {group}: {}", .users.join(", "))]
    AlreadyMembers { group: u64, users: Vec<String> },
    #[error("not a member of group {group}: {}", .users.join(", "))]
    NotMembers { group: u64, users: Vec<String> },
    #[error("no KeyPackage published for {}: their client must connect once before they can join a group", .users.join(", "))]
    NoKeyPackages { users: Vec<String> },
    /// Members were to be added to or removed from conversation `{0}`,
    /// which is a direct or note-to-self conversation: its members never
    /// change (PROTOCOL.md §4.2). Create a group for more people.
    #[error("conversation {0} is not a group: a direct or note-to-self conversation keeps its members; create a group (tern create group ...) to add people")]
    NotAGroup(u64),
    #[error(transparent)]
    MessageStore(#[from] MessageStoreError),
    /// The answer to a Commit of group `group` was lost and the server
    /// could not be asked whether it took it: the change may or may not
    /// have happened. The pending commit is kept (on disk too) and settled
    /// when the client reconnects or next opens, or before the group's
    /// next send or change; then check the members and retry if needed.
    #[error("the outcome of the change to group {group} is unknown ({reason}); it is settled when the client reconnects, so check the members then and retry if needed")]
    CommitOutcomeUnknown { group: u64, reason: String },
    /// [`SecureClient::create_group`] created group `group` (the server
    /// counted it against the account's conversation limit), but the
    /// Commit adding its first members was refused for a rate limit
    /// (`source`, with its `retry_after`). The group is kept, with this
    /// account alone, so that no creation is spent for nothing: add the
    /// members with [`SecureClient::add_members`] after the wait.
    #[error("group {group} was created, but its members were not added ({source}); add them to group {group} after the wait")]
    MembersNotAdded {
        group: u64,
        source: Box<SecureError>,
    },
    #[error("{0}")]
    Protocol(String),
}

impl SecureError {
    /// Whether the server refused the request with `RateLimited`.
    pub fn is_rate_limited(&self) -> bool {
        match self {
            SecureError::Client(e) => e.code() == Some(ErrorCode::RateLimited),
            SecureError::MembersNotAdded { .. } => true,
            _ => false,
        }
    }

    /// How long the server asked to wait, for a `RateLimited` refusal.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SecureError::Client(e) => e.retry_after(),
            SecureError::MembersNotAdded { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

/// What an encrypted send did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Where the server stored the message (after a lost answer, the seq
    /// of the original, with `duplicate` set).
    pub receipt: SendReceipt,
    /// Recipient devices, as `(user, device)`, that got no copy because
    /// they have published no keys to start a session with (a linked
    /// device that has not connected since, say); they never block the
    /// others. Always empty for groups (MLS adds devices by KeyPackage).
    pub skipped: Vec<(String, u32)>,
}

/// A decrypted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decrypted {
    pub conversation_id: u64,
    pub seq: u64,
    pub sender_user: String,
    pub sender_device: u32,
    pub server_time_ms: u64,
    pub content: Content,
    /// When this device deletes its copy, ms since the Unix epoch: the
    /// server's `expires_at_ms` for a message it flagged
    /// [`flags::DISAPPEARING`] (E2EE.md §3.7), 0 (kept) otherwise.
    pub expires_at_ms: u64,
}

impl From<StoredMessage> for Decrypted {
    fn from(m: StoredMessage) -> Decrypted {
        Decrypted {
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_user: m.sender_user,
            sender_device: m.sender_device,
            server_time_ms: m.server_time_ms,
            content: m.content,
            expires_at_ms: m.expires_at_ms,
        }
    }
}

/// What the app hears from a [`SecureClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecureEvent {
    Message(Decrypted),
    /// This device joined a group from a Welcome.
    Joined {
        conversation_id: u64,
    },
    /// A group's membership changed (a Commit was applied).
    GroupChanged {
        conversation_id: u64,
        epoch: u64,
    },
    /// This device had missed Commits of a group that the server no
    /// longer keeps, so it rejoined the group by an external commit (RFC
    /// 9420 §12.4.3.2) from the GroupInfo the server stores, and is at
    /// `epoch` now. Messages of the epochs it missed cannot be read here.
    Rejoined {
        conversation_id: u64,
        epoch: u64,
    },
    /// This device was removed from a group.
    Removed {
        conversation_id: u64,
    },
    /// `inviter` invites this account to group `conversation_id`; answer
    /// with [`Client::answer_invitation`] (through [`SecureClient::transport`]).
    Invited {
        conversation_id: u64,
        inviter: String,
    },
    /// `user` answered this account's invitation to group `conversation_id`;
    /// once accepted, any member may add them.
    InvitationAnswered {
        conversation_id: u64,
        user: String,
        accepted: bool,
    },
    /// A new device asks to join this account; answer with [`SecureClient::approve_link`].
    LinkPrompt {
        link_id: u64,
        device_name: String,
    },
    /// A message this device could not decrypt (with why).
    Undecryptable {
        conversation_id: u64,
        seq: u64,
        reason: String,
    },
    /// A message was decrypted but could not be written to the local
    /// [`MessageStore`] (a full disk, say), so it must not be acknowledged.
    /// The client has closed without saving the ratchet state that
    /// decrypted it: once the store can be written, a new client gets the
    /// message again from the server.
    NotStored {
        conversation_id: u64,
        seq: u64,
        reason: String,
    },
    /// A user this connection subscribed to
    /// ([`Client::subscribe_presence`], through [`SecureClient::transport`])
    /// changed presence: state, status text, last seen (server ms since
    /// the Unix epoch). Pushes are coalesced by the server, so the latest
    /// state wins (docs/PROTOCOL.md §4.8). After a reconnect the SDK
    /// subscribes again by itself and reports each user's current entry
    /// this way (`presence::PresenceMemory`).
    PresenceChanged(PresenceEntry),
    /// Another user's device started (`typing: true`) or stopped typing in
    /// a conversation (docs/PROTOCOL.md §4.9). Signals are unreliable (QUIC
    /// datagrams): show it until [`crate::typing::TYPING_EXPIRY_MS`] after
    /// the last `true` ([`crate::typing::TypingState`] does this per user).
    /// This account's own devices' signals are not forwarded, and signals
    /// are dropped rather than queued when the app is 256 events behind.
    Typing(TypingChanged),
    /// `user` set the disappearing-message timer of a conversation to
    /// `secs` seconds (0: off); later messages there expire at most that
    /// long after they are sent (docs/PROTOCOL.md §4.6). Sync lists the
    /// timer of each conversation for a device that was away.
    TimerChanged {
        conversation_id: u64,
        secs: u32,
        user: String,
    },
}

struct Crypto {
    olm: OlmDevice,
    mls: MlsClient,
    /// Groups joined from a Welcome at this seq: earlier messages predate us.
    joined_at: HashMap<u64, u64>,
    /// The hold on the state directory; `None` once the client is closed,
    /// after which nothing is saved.
    state_lock: Option<StateLock>,
}

impl Crypto {
    /// Saves the Olm state, unless the client was closed (then another
    /// process may own the directory already).
    fn save_olm(&self) -> Result<(), SecureError> {
        self.holding()?;
        Ok(self.olm.save()?)
    }

    /// Saves the MLS state, unless the client was closed.
    fn save_mls(&self) -> Result<(), SecureError> {
        self.holding()?;
        Ok(self.mls.save()?)
    }

    fn holding(&self) -> Result<(), SecureError> {
        match self.state_lock {
            Some(_) => Ok(()),
            None => Err(ClientError::Closed.into()),
        }
    }
}

struct Inner {
    client: Client,
    identity: Identity,
    crypto: Mutex<Crypto>,
    /// Recipient devices per pairwise conversation, as the server last said.
    targets: std::sync::Mutex<HashMap<u64, Vec<(String, u32)>>>,
    /// Devices found without keys, and when: skipped without a claim for
    /// [`KEYLESS_RECHECK`].
    keyless: std::sync::Mutex<HashMap<(String, u32), Instant>>,
    kinds: std::sync::Mutex<HashMap<u64, ConversationKind>>,
    /// Latest MLS epoch processed per group, for commit recovery.
    epochs: watch::Sender<HashMap<u64, u64>>,
    /// Events decrypted while waiting for something else (commit recovery).
    buffered: std::sync::Mutex<std::collections::VecDeque<SecureEvent>>,
    /// Every message decrypted or sent, in plaintext.
    messages: MessageStore,
    /// Held while a group is checked for, and rejoined after, missed
    /// Commits that are gone ([`Inner::rejoin_if_stranded`]).
    rejoining: Mutex<()>,
    /// Held while a Commit of this device is staged and offered, and while
    /// a pending commit is settled ([`Inner::settle_pending`]), so only one
    /// task owns a pending commit at a time.
    committing: Mutex<()>,
    /// Delivered receipts waiting to be sent, coalesced per conversation.
    receipts: Arc<receipts::Pending>,
    /// Message requests as Sync marks them, and the receipts held for them.
    requests: requests::Requests,
    /// This device's calls ([`calls`]).
    calls: calls::Calls,
}

/// An end-to-end-encrypting device. See the module docs.
pub struct SecureClient {
    inner: Arc<Inner>,
    notices: Mutex<mpsc::Receiver<SecureEvent>>,
}

/// `users` without repeats and without `me`, in their first order.
fn distinct(users: &[&str], me: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    users
        .iter()
        .filter(|u| **u != me && seen.insert(**u))
        .map(|u| (*u).to_owned())
        .collect()
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SecureClient {
    /// Creates the account with this device and publishes its keys.
    pub async fn register(
        options: ClientOptions,
        user: &str,
        device_name: &str,
    ) -> Result<Self, SecureError> {
        let held = StateLock::acquire(&options.state_dir)?;
        let client = Client::register(options, user, device_name).await?;
        Self::start(client, held).await
    }

    /// Connects an existing device from its state directory.
    ///
    /// Every constructor first locks the state directory for as long as
    /// the client is open (until [`SecureClient::close`]); if another
    /// client, in this process or another, has it, the call fails with
    /// [`SecureError::Lock`] ([`StateLockError::InUse`], naming its pid)
    /// without reading or writing anything there.
    pub async fn connect(options: ClientOptions) -> Result<Self, SecureError> {
        let held = StateLock::acquire(&options.state_dir)?;
        let client = Client::connect(options).await?;
        Self::start(client, held).await
    }

    /// Links this new device to an existing account (approved by a linked device).
    pub async fn link(
        options: ClientOptions,
        user: &str,
        device_name: &str,
    ) -> Result<Self, SecureError> {
        let held = StateLock::acquire(&options.state_dir)?;
        let client = Client::link(options, user, device_name).await?;
        Self::start(client, held).await
    }

    async fn start(client: Client, held: StateLock) -> Result<Self, SecureError> {
        let state = held.dir().to_owned();
        let state = state.as_path();
        let identity = Identity::load(state).map_err(ClientError::from)?;
        let olm = OlmDevice::load_or_create(state)?;
        let mls =
            MlsClient::load_or_create(state, &format!("{}/{}", identity.user, identity.device))?;
        let messages = MessageStore::open(state.join(MESSAGE_STORE_FILE))?;
        let calls = calls::Calls::new(&identity.user);
        let inner = Arc::new(Inner {
            client,
            identity,
            crypto: Mutex::new(Crypto {
                olm,
                mls,
                joined_at: HashMap::new(),
                state_lock: Some(held),
            }),
            targets: std::sync::Mutex::default(),
            keyless: std::sync::Mutex::default(),
            kinds: std::sync::Mutex::default(),
            epochs: watch::channel(HashMap::new()).0,
            buffered: std::sync::Mutex::default(),
            messages,
            rejoining: Mutex::new(()),
            committing: Mutex::new(()),
            receipts: Arc::default(),
            requests: requests::Requests::default(),
            calls,
        });
        inner.publish_keys().await?;
        let settled = inner.settle_all_pending().await;
        warn_unless_closed(
            &inner.client,
            settled,
            "could not settle a Commit left pending; tried again at the next reconnect",
        );
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(reconnect_watch(Arc::downgrade(&inner), tx.clone()));
        tokio::spawn(notice_loop(inner.clone(), tx));
        tokio::spawn(calls::tick_loop(Arc::downgrade(&inner)));
        inner.queue_owed_receipts();
        tokio::spawn(receipts::send_loop(
            Arc::downgrade(&inner),
            inner.receipts.clone(),
        ));
        Ok(SecureClient {
            inner,
            notices: Mutex::new(rx),
        })
    }

    /// The transport client underneath (sync, history, acks).
    pub fn transport(&self) -> &Client {
        &self.inner.client
    }

    /// This account's handle.
    pub fn user(&self) -> &str {
        &self.inner.identity.user
    }

    /// This device's number in its account.
    pub fn device(&self) -> u32 {
        self.inner.identity.device
    }

    /// The device's local message store: every message it decrypted or
    /// sent, for history and search.
    pub fn messages(&self) -> &MessageStore {
        &self.inner.messages
    }

    /// The next decrypted message or event (decrypting happens here, in order).
    pub async fn next_event(&self) -> Option<SecureEvent> {
        loop {
            let buffered = lock(&self.inner.buffered).pop_front();
            if let Some(event) = buffered {
                self.inner.hand_out(&event);
                return Some(event);
            }
            let mut notices = self.notices.lock().await;
            // Only the receive is raced (cancel-safe); decrypting is not.
            let message = tokio::select! {
                notice = notices.recv() => match notice {
                    Some(SecureEvent::Removed { conversation_id }) => {
                        match self.inner.announce_removal(conversation_id).await {
                            true => return notice,
                            false => continue,
                        }
                    }
                    notice => return notice,
                },
                message = self.inner.client.next_message() => message?,
            };
            if let Some(event) = self.inner.open(message, true).await {
                return Some(event);
            }
        }
    }

    /// Receives the next incoming message and stores it (decrypted) without
    /// handing it to the app, for a command that waits for one message and
    /// must not consume the others (`tern fetch`): it is not acknowledged,
    /// so the server delivers it again and a later [`Self::next_event`]
    /// (here or in another process on this state directory) hands it out
    /// then, from the store. `None` when the client closed.
    pub async fn receive_unannounced(&self) -> Option<()> {
        let message = self.inner.client.next_message().await?;
        self.inner.open(message, false).await;
        Some(())
    }

    /// The kind of `conversation` (direct, group, note to self), as this
    /// account's Sync lists it (cached).
    ///
    /// # Errors
    /// A `NotFound` server error when it is not one of this account's
    /// conversations; the Sync's errors.
    pub async fn conversation_kind(
        &self,
        conversation: u64,
    ) -> Result<ConversationKind, SecureError> {
        self.inner.kind(conversation).await
    }

    /// The direct conversation with `peer` (created on first use).
    pub async fn direct(&self, peer: &str) -> Result<u64, SecureError> {
        let info = self
            .inner
            .client
            .create_conversation(ConversationKind::Direct, &[peer])
            .await?;
        lock(&self.inner.kinds).insert(info.id, ConversationKind::Direct);
        Ok(info.id)
    }

    /// This user's note-to-self conversation (synced to its other devices).
    pub async fn note_to_self(&self) -> Result<u64, SecureError> {
        let info = self
            .inner
            .client
            .create_conversation(ConversationKind::NoteToSelf, &[])
            .await?;
        lock(&self.inner.kinds).insert(info.id, ConversationKind::NoteToSelf);
        Ok(info.id)
    }

    /// Creates an MLS group with `members` (every device of each is added).
    /// Every member's KeyPackages are claimed first, so an unknown user
    /// ([`ClientError::Server`] `NotFound`) or one without KeyPackages
    /// ([`SecureError::NoKeyPackages`]) fails the call before any group
    /// exists. A Commit refused for the send rate limit leaves the group
    /// created, with this account alone ([`SecureError::MembersNotAdded`]);
    /// any other failure leaves it.
    pub async fn create_group(&self, members: &[&str]) -> Result<u64, SecureError> {
        let users = distinct(members, self.user());
        let claimed = match users.is_empty() {
            true => None,
            false => Some(self.inner.claim_key_packages(&users).await?),
        };
        let info = self
            .inner
            .client
            .create_conversation(ConversationKind::Group, &[])
            .await?;
        lock(&self.inner.kinds).insert(info.id, ConversationKind::Group);
        match self.set_up_group(info.id, users, claimed).await {
            Ok(()) => Ok(info.id),
            // The creation is spent: keep the group (its refused Commit was
            // discarded, so it holds this account alone at epoch 0).
            Err(e) if e.is_rate_limited() => Err(SecureError::MembersNotAdded {
                group: info.id,
                source: Box::new(e),
            }),
            Err(e) => {
                self.inner.abandon_group(info.id).await;
                Err(e)
            }
        }
    }

    /// The local MLS group for a new conversation, and its first Commit.
    async fn set_up_group(
        &self,
        group: u64,
        users: Vec<String>,
        claimed: Option<Vec<mls_body::ClaimedKeyPackageData>>,
    ) -> Result<(), SecureError> {
        {
            let mut crypto = self.inner.crypto.lock().await;
            crypto.mls.create_group(group)?;
            crypto.save_mls()?;
        }
        if let Some(claimed) = claimed {
            let change = Change::Add(users);
            self.inner.commit(group, &change, Some(claimed)).await?;
        }
        Ok(())
    }

    /// Adds users (all their devices) to a group with an MLS Commit. Naming
    /// a user already in the group fails with [`SecureError::AlreadyMembers`]
    /// and commits nothing.
    /// [`SecureError::NotAGroup`] for a direct or note-to-self conversation.
    pub async fn add_members(&self, group: u64, users: &[&str]) -> Result<u64, SecureError> {
        self.inner.require_group(group).await?;
        let users = distinct(users, "");
        self.inner.require_membership(group, &users, false).await?;
        self.inner
            .commit_with_retry(group, Change::Add(users))
            .await
    }

    /// Removes users (all their devices) from a group with an MLS Commit.
    /// Naming a user not in the group fails with [`SecureError::NotMembers`]
    /// and commits nothing.
    /// [`SecureError::NotAGroup`] for a direct or note-to-self conversation.
    pub async fn remove_members(&self, group: u64, users: &[&str]) -> Result<u64, SecureError> {
        self.inner.require_group(group).await?;
        let users = distinct(users, "");
        self.inner.require_membership(group, &users, true).await?;
        self.inner
            .commit_with_retry(group, Change::Remove(users))
            .await
    }

    /// Adds this account's devices that are missing from its MLS groups
    /// (after a device was linked). Runs on its own when this account's
    /// device list changes; returns how many groups changed.
    pub async fn add_own_devices_to_groups(&self) -> Result<usize, SecureError> {
        self.inner.add_own_devices_to_groups().await
    }

    /// Leaves a group: the server stops delivering it to this account at
    /// once. The remaining members drop this account's devices from the MLS
    /// group with [`SecureClient::remove_members`] (the SDK of any member
    /// may do it; until then they still encrypt to the departed leaves).
    pub async fn leave(&self, group: u64) -> Result<(), SecureError> {
        let user = self.inner.identity.user.clone();
        self.inner
            .client
            .remove_members(group, &[user.as_str()])
            .await?;
        self.inner.deactivate(group).await?;
        Ok(())
    }

    /// Encrypts and sends text; returns once the server stored it durably.
    /// A 1:1 send skips recipient devices without keys and names them in
    /// [`Sent::skipped`].
    pub async fn send_text(&self, conversation: u64, text: &str) -> Result<Sent, SecureError> {
        self.send(conversation, &Content::text(text)).await
    }

    /// Encrypts and sends typed content.
    pub async fn send(&self, conversation: u64, content: &Content) -> Result<Sent, SecureError> {
        self.send_expiring(conversation, content, 0).await
    }

    /// Encrypts and sends content that the server deletes after
    /// `expires_in_secs` (0 = the server's default of 30 days).
    pub async fn send_expiring(
        &self,
        conversation: u64,
        content: &Content,
        expires_in_secs: u32,
    ) -> Result<Sent, SecureError> {
        self.inner
            .send_content(conversation, content, expires_in_secs)
            .await
    }

    /// Answers a link request from a new device of this account.
    pub async fn approve_link(&self, link_id: u64, approve: bool) -> Result<(), SecureError> {
        Ok(self.inner.client.approve_link(link_id, approve).await?)
    }

    /// Sends the delivered receipts still waiting (for at most a few
    /// seconds), closes the connection, then releases the state directory
    /// once no crypto operation is under way; nothing is saved after this.
    pub async fn close(&self) {
        self.inner.flush_receipts_before_close().await;
        self.inner.client.close().await;
        self.inner.crypto.lock().await.state_lock = None;
    }
}

/// The [`UploadPrekeys`] that publishes a device's Olm keys (docs/E2EE.md,
/// "Key upload"): the Curve25519 identity key signed over its identity
/// transcript, and the fallback key as **both** the signed and the
/// last-resort prekey (one signature over the prekey transcript), both by
/// the device's Ed25519 key. No one-time keys (those go in a second upload).
pub fn olm_key_upload(
    identity: &Identity,
    identity_key: &[u8; 32],
    fallback_id: u32,
    fallback: &[u8; 32],
) -> UploadPrekeys {
    let (user, device, key) = (&identity.user, identity.device, &identity.key);
    let signed = SignedPrekeyData {
        id: fallback_id,
        public_key: *fallback,
        signature: sign(key, &prekey_transcript(user, device, fallback_id, fallback)),
    };
    UploadPrekeys {
        identity: Some((
            *identity_key,
            sign(key, &identity_key_transcript(user, device, identity_key)),
        )),
        signed_prekey: Some(signed.clone()),
        one_time: Vec::new(),
        last_resort: Some(signed),
        kem_prekey: None,
    }
}

/// Checks one device bundle of `user` from a `ClaimPrekeys` answer
/// (docs/E2EE.md, "Claiming and verifying"): the identity key's signature
/// and the signature of the prekey used as fallback (the signed prekey, or
/// else the last-resort one) under the bundle's device key. The one-time
/// prekey carries no signature. Returns the device to encrypt to.
pub fn verify_bundle(user: &str, b: &DeviceBundleData) -> Result<PeerDevice, SecureError> {
    let who = || SecureError::BadBundle(format!("{user}/{}", b.device));
    verify(
        &b.device_key,
        &identity_key_transcript(user, b.device, &b.identity_key),
        &b.identity_signature,
    )
    .map_err(|_| who())?;
    let fallback = b.signed_prekey.as_ref().or(b.last_resort.as_ref());
    if let Some(k) = fallback {
        verify(
            &b.device_key,
            &prekey_transcript(user, b.device, k.id, &k.public_key),
            &k.signature,
        )
        .map_err(|_| who())?;
    }
    Ok(PeerDevice {
        user: user.to_owned(),
        device: b.device,
        identity_key: b.identity_key,
        one_time_key: b.one_time_prekey.as_ref().map(|k| k.public_key),
        fallback_key: fallback.map(|k| k.public_key),
    })
}

/// The error for a pending commit of `group` whose fate could not be
/// learnt because of `cause`.
fn unknown_outcome(group: u64, cause: &SecureError) -> SecureError {
    SecureError::CommitOutcomeUnknown {
        group,
        reason: cause.to_string(),
    }
}

/// What became of a Commit whose answer was lost.
enum CommitFate {
    /// The server accepted it.
    Ours,
    /// Another Commit took its epoch; the group is now at this epoch.
    Theirs(u64),
    /// Nothing took its epoch yet: the server never accepted it.
    NotTaken,
}

enum Change {
    Add(Vec<String>),
    Remove(Vec<String>),
}

impl Inner {
    /// Encrypts and sends `content`, then keeps it in the local store.
    async fn send_content(
        &self,
        conversation: u64,
        content: &Content,
        expires_in_secs: u32,
    ) -> Result<Sent, SecureError> {
        let plaintext = content.encode();
        let kind = self.kind(conversation).await?;
        let sent = match kind {
            ConversationKind::Group => {
                self.send_group(conversation, &plaintext, expires_in_secs)
                    .await
            }
            _ => {
                self.send_pairwise(conversation, &plaintext, expires_in_secs)
                    .await
            }
        }?;
        self.keep_sent(&sent.receipt, content, kind).await;
        Ok(sent)
    }

    async fn add_own_devices_to_groups(&self) -> Result<usize, SecureError> {
        let user = self.identity.user.clone();
        let mut changed = 0;
        for state in self.client.sync(true).await? {
            if state.kind != ConversationKind::Group
                || !self
                    .crypto
                    .lock()
                    .await
                    .mls
                    .has_group(state.conversation_id)?
            {
                continue;
            }
            let before = self.crypto.lock().await.mls.epoch(state.conversation_id)?;
            let after = self
                .commit_with_retry(state.conversation_id, Change::Add(vec![user.clone()]))
                .await?;
            changed += usize::from(after != before);
        }
        Ok(changed)
    }

    /// Publishes identity, signed and last-resort prekeys, and tops up the
    /// one-time prekeys and KeyPackages to their targets.
    async fn publish_keys(&self) -> Result<(), SecureError> {
        let mut crypto = self.crypto.lock().await;
        let identity_key = crypto.olm.identity_key();
        let (fallback_id, fallback) = crypto.olm.fallback_key()?;
        let base = olm_key_upload(&self.identity, &identity_key, fallback_id, &fallback);
        let prekeys::KeyCounts {
            one_time_prekeys: have_prekeys,
            key_packages: have_packages,
        } = self.client.request(base).await?;
        if have_prekeys < PREKEY_TARGET / 2 {
            let fresh = crypto
                .olm
                .generate_one_time_keys((PREKEY_TARGET - have_prekeys) as usize);
            crypto.save_olm()?;
            let one_time = fresh
                .into_iter()
                .map(|(id, public_key)| OneTimePrekeyData { id, public_key })
                .collect();
            let upload = UploadPrekeys {
                one_time,
                ..UploadPrekeys::default()
            };
            self.client.request(upload).await?;
        }
        if have_packages < KEY_PACKAGE_TARGET / 2 {
            let packages = crypto
                .mls
                .key_packages((KEY_PACKAGE_TARGET - have_packages) as usize)?;
            let last_resort = (have_packages == 0)
                .then(|| crypto.mls.last_resort_key_package())
                .transpose()?;
            let upload = mls_body::UploadKeyPackages {
                key_packages: packages.into_iter().map(Bytes::from).collect(),
                last_resort: last_resort.map(Bytes::from),
            };
            self.client.request(upload).await?;
        }
        Ok(())
    }

    async fn kind(&self, conversation: u64) -> Result<ConversationKind, SecureError> {
        if let Some(kind) = lock(&self.kinds).get(&conversation) {
            return Ok(*kind);
        }
        for state in self.client.sync(true).await? {
            lock(&self.kinds).insert(state.conversation_id, state.kind);
        }
        lock(&self.kinds)
            .get(&conversation)
            .copied()
            .ok_or_else(|| {
                SecureError::Client(ClientError::Server {
                    code: ErrorCode::NotFound,
                    message: format!("conversation {conversation} is not one of yours"),
                    retry_after_ms: 0,
                })
            })
    }

    /// Encrypts in the current epoch; if the server says a Commit was
    /// missed, processes it and encrypts again. One client message id for
    /// every attempt, and a request whose answer is lost is repeated
    /// unchanged ([`Client::request_retrying`]), so the message is stored
    /// once and the answer is the original seq.
    async fn send_group(
        &self,
        group: u64,
        plaintext: &[u8],
        expires_in_secs: u32,
    ) -> Result<Sent, SecureError> {
        let client_message_id = rand::random::<u64>() | 1;
        if let Ok(_settling) = self.committing.try_lock() {
            // A commit left pending by an earlier call would block encrypting.
            self.settle_pending(group).await?;
        }
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let (epoch, ciphertext) = {
                let mut crypto = self.crypto.lock().await;
                let ciphertext = crypto.mls.encrypt(group, plaintext)?;
                crypto.save_mls()?;
                (crypto.mls.epoch(group)?, ciphertext)
            };
            let send = messaging::SendGroup {
                conversation_id: group,
                client_message_id,
                expires_in_secs,
                flags: flags::CLIENT_MLS,
                epoch,
                payload: Bytes::from(ciphertext),
            };
            match self.client.request_retrying(send).await {
                Ok(ack) => {
                    return Ok(Sent {
                        receipt: ack.into(),
                        skipped: Vec::new(),
                    })
                }
                Err(ClientError::Conflict(conflict))
                    if conflict.error.code == ErrorCode::StaleEpoch =>
                {
                    self.wait_for_epoch(group, conflict.current_epoch).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SecureError::Protocol(
            "the group kept changing epochs; try again".into(),
        ))
    }

    /// Encrypts once per recipient device; re-encrypts for the server's
    /// device set when it says ours is stale. One client message id for
    /// every attempt, and a request whose answer is lost is repeated
    /// unchanged ([`Client::request_retrying`]), so the message is stored
    /// once and the answer is the original seq.
    async fn send_pairwise(
        &self,
        conversation: u64,
        plaintext: &[u8],
        expires_in_secs: u32,
    ) -> Result<Sent, SecureError> {
        let client_message_id = rand::random::<u64>() | 1;
        let mut targets = self.known_targets(conversation);
        for _ in 0..MAX_SEND_ATTEMPTS {
            let (device_payloads, skipped) = self.encrypt_for(&targets, plaintext).await?;
            let send = messaging::SendToDevices {
                conversation_id: conversation,
                client_message_id,
                expires_in_secs,
                flags: flags::CLIENT_OLM,
                device_payloads,
            };
            match self.client.request_retrying(send).await {
                Ok(ack) => {
                    lock(&self.targets).insert(conversation, targets);
                    let receipt = ack.into();
                    return Ok(Sent { receipt, skipped });
                }
                Err(ClientError::Conflict(conflict))
                    if conflict.error.code == ErrorCode::StaleDevices =>
                {
                    targets = conflict.devices.clone();
                    lock(&self.targets).insert(conversation, targets.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SecureError::Protocol(
            "the conversation's devices kept changing; try again".into(),
        ))
    }

    /// Our last known recipient devices of a conversation; empty at first,
    /// the server's StaleDevices answer then names the exact set.
    fn known_targets(&self, conversation: u64) -> Vec<(String, u32)> {
        lock(&self.targets)
            .get(&conversation)
            .cloned()
            .unwrap_or_default()
    }

    /// One Olm ciphertext per target, starting sessions from claimed
    /// bundles, and the targets skipped: a device with no session and no
    /// key to start one gets an empty payload (the wire's "no ciphertext
    /// for this device") instead of failing the whole send.
    async fn encrypt_for(
        &self,
        targets: &[(String, u32)],
        plaintext: &[u8],
    ) -> Result<(Vec<DevicePayload>, Vec<(String, u32)>), SecureError> {
        let mut bundles: HashMap<(String, u32), PeerDevice> = HashMap::new();
        for user in self.users_to_claim(targets).await {
            for peer in self.claim_bundles(&user).await? {
                bundles.insert((peer.user.clone(), peer.device), peer);
            }
        }
        let mut crypto = self.crypto.lock().await;
        let mut out = Vec::with_capacity(targets.len());
        let mut skipped = Vec::new();
        for (user, device) in targets {
            let known = crypto
                .olm
                .peer_identity_key(user, *device)
                .unwrap_or([0; 32]);
            let peer = bundles
                .remove(&(user.clone(), *device))
                .unwrap_or(PeerDevice {
                    user: user.clone(),
                    device: *device,
                    identity_key: known,
                    one_time_key: None,
                    fallback_key: None,
                });
            let payload = match crypto.olm.encrypt(&peer, plaintext) {
                Ok(payload) => Bytes::from(payload),
                Err(CryptoError::NoPrekey { .. }) => {
                    skipped.push((user.clone(), *device));
                    Bytes::new()
                }
                Err(e) => return Err(e.into()),
            };
            out.push(DevicePayload {
                user: user.clone(),
                device: *device,
                payload,
            });
        }
        crypto.save_olm()?;
        self.note_keyless(targets, &skipped);
        Ok((out, skipped))
    }

    /// The users with a target device that has no session yet, except
    /// devices found without keys less than [`KEYLESS_RECHECK`] ago.
    async fn users_to_claim(&self, targets: &[(String, u32)]) -> Vec<String> {
        let crypto = self.crypto.lock().await;
        let keyless = lock(&self.keyless);
        let recent = |target: &(String, u32)| {
            keyless
                .get(target)
                .is_some_and(|at| at.elapsed() < KEYLESS_RECHECK)
        };
        let mut users: Vec<String> = targets
            .iter()
            .filter(|t| !crypto.olm.has_session(&t.0, t.1) && !recent(t))
            .map(|(u, _)| u.clone())
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Remembers when `skipped` devices were last checked for keys (a
    /// recent check stands; an expired one was just redone); forgets the
    /// other targets (they have a session now).
    fn note_keyless(&self, targets: &[(String, u32)], skipped: &[(String, u32)]) {
        let mut keyless = lock(&self.keyless);
        let now = Instant::now();
        for target in targets {
            if !skipped.contains(target) {
                keyless.remove(target);
                continue;
            }
            let checked = keyless.entry(target.clone()).or_insert(now);
            if checked.elapsed() >= KEYLESS_RECHECK {
                *checked = now;
            }
        }
    }

    /// Claims and checks one bundle per device of `user`.
    async fn claim_bundles(&self, user: &str) -> Result<Vec<PeerDevice>, SecureError> {
        let claim = prekeys::ClaimPrekeys {
            user: user.to_owned(),
        };
        let devices = self.client.request(claim).await?.devices;
        devices.iter().map(|b| verify_bundle(user, b)).collect()
    }

    /// Stages, offers and applies a Commit; on losing the epoch, waits until
    /// the winner is processed and tries again.
    async fn commit_with_retry(&self, group: u64, change: Change) -> Result<u64, SecureError> {
        self.commit(group, &change, None).await
    }

    /// Commits `change`, processing the winner and retrying when another
    /// Commit took the epoch. `claimed`, if given, are the KeyPackages of
    /// the first attempt (later attempts claim afresh).
    async fn commit(
        &self,
        group: u64,
        change: &Change,
        mut claimed: Option<Vec<mls_body::ClaimedKeyPackageData>>,
    ) -> Result<u64, SecureError> {
        let _ours = self.committing.lock().await;
        self.settle_pending(group).await?;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let staged = self.stage(group, change, claimed.take()).await?;
            let Some((bundle, users_added, users_removed)) = staged else {
                return Ok(self.crypto.lock().await.mls.epoch(group)?);
            };
            self.persist_staged(group).await?;
            let (epoch, ours) = (bundle.epoch, Bytes::from(bundle.commit));
            let commit = mls_body::Commit {
                conversation_id: group,
                epoch,
                commit: ours.clone(),
                welcome: bundle.welcome.map(Bytes::from),
                group_info: Bytes::from(bundle.group_info),
                added: users_added,
                removed: users_removed,
                staged: Default::default(),
            };
            match self.client.commit(commit).await {
                Ok(mls_body::CommitAccepted { epoch, .. }) => {
                    let mut crypto = self.crypto.lock().await;
                    crypto.mls.confirm_commit(group)?;
                    crypto.save_mls()?;
                    self.epochs.send_modify(|e| {
                        e.insert(group, epoch);
                    });
                    return Ok(epoch);
                }
                Err(ClientError::Conflict(conflict))
                    if conflict.error.code == ErrorCode::StaleEpoch =>
                {
                    self.discard_pending(group).await?;
                    self.wait_for_epoch(group, conflict.current_epoch).await?;
                }
                Err(ClientError::Disconnected | ClientError::Timeout) => {
                    if let Some(epoch) = self.settle_lost_commit(group, epoch, &ours).await? {
                        return Ok(epoch);
                    }
                }
                // Closed while the Commit may be on its way: it stays pending
                // (on disk) and the next client on this directory settles it.
                Err(ClientError::Closed) => return Err(ClientError::Closed.into()),
                Err(e) => {
                    let _ = self.discard_pending(group).await;
                    return Err(e.into());
                }
            }
        }
        Err(SecureError::Protocol(
            "other members kept committing first; try again".into(),
        ))
    }

    /// Saves the MLS state with the commit just staged for `group` before
    /// it is offered, so a device that dies before it learns the outcome
    /// settles it when it opens again ([`Inner::settle_pending`]). A
    /// commit that cannot be saved is discarded (in memory) and not sent.
    async fn persist_staged(&self, group: u64) -> Result<(), SecureError> {
        let mut crypto = self.crypto.lock().await;
        if let Err(e) = crypto.save_mls() {
            let _ = crypto.mls.discard_commit(group);
            return Err(e);
        }
        Ok(())
    }

    /// Discards the pending commit of `group` and saves that.
    async fn discard_pending(&self, group: u64) -> Result<(), SecureError> {
        let mut crypto = self.crypto.lock().await;
        crypto.mls.discard_commit(group)?;
        crypto.save_mls()
    }

    /// Settles every group's pending commit left by an earlier run or an
    /// earlier call whose outcome was unknown ([`Inner::settle_pending`]),
    /// unless a Commit is under way in this client (that call settles its
    /// own). Every group is tried; the first error is returned.
    async fn settle_all_pending(&self) -> Result<(), SecureError> {
        let Ok(_ours) = self.committing.try_lock() else {
            return Ok(());
        };
        let groups = self.crypto.lock().await.mls.groups_with_pending_commits()?;
        let mut first_error = None;
        for group in groups {
            if let Err(e) = self.settle_pending(group).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Learns from the server what became of `group`'s pending commit, if
    /// it has one, and merges it (the server took it: the app hears
    /// [`SecureEvent::GroupChanged`]) or discards it (not taken, or another
    /// Commit won, which arrives as an ordinary message), saving either.
    /// The caller holds `committing`. If the server cannot be asked, the
    /// commit stays pending ([`SecureError::CommitOutcomeUnknown`]).
    async fn settle_pending(&self, group: u64) -> Result<(), SecureError> {
        let Some(pending) = self.crypto.lock().await.mls.pending_commit(group)? else {
            return Ok(());
        };
        // A commit staged before tern kept its bytes never matches: it is
        // discarded, and a winner is processed as usual.
        let (epoch, ours) = (
            pending.epoch,
            Bytes::from(pending.commit.unwrap_or_default()),
        );
        let fate = self.commit_fate(group, epoch, &ours).await;
        let fate = fate.map_err(|e| unknown_outcome(group, &e))?;
        tracing::info!(
            group,
            epoch,
            taken = matches!(fate, CommitFate::Ours),
            "settled a Commit left pending"
        );
        match fate {
            CommitFate::Ours => {
                let epoch = self.merge_pending(group, epoch).await?;
                let event = SecureEvent::GroupChanged {
                    conversation_id: group,
                    epoch,
                };
                lock(&self.buffered).push_back(event);
                Ok(())
            }
            CommitFate::Theirs(_) | CommitFate::NotTaken => self.discard_pending(group).await,
        }
    }

    /// The server took our pending commit for `epoch` of `group`: merges
    /// and saves it; returns the new epoch.
    async fn merge_pending(&self, group: u64, epoch: u64) -> Result<u64, SecureError> {
        let mut crypto = self.crypto.lock().await;
        crypto.mls.confirm_commit(group)?;
        crypto.save_mls()?;
        self.epochs.send_modify(|e| {
            e.insert(group, epoch + 1);
        });
        Ok(epoch + 1)
    }

    /// The answer to our pending Commit for `epoch` (bytes `ours`) was
    /// lost, so the server may or may not have accepted it. Learns which
    /// from the server (the group's epoch, and the Commit in the log that
    /// took `epoch`), then merges the pending commit (ours won: returns the
    /// new epoch) or discards it (`None`: not taken, or another Commit won
    /// and has been processed; the caller stages the change again). If the
    /// outcome cannot be learnt the commit stays pending, saved, and
    /// [`SecureError::CommitOutcomeUnknown`] is returned: it is settled
    /// later ([`Inner::settle_pending`]).
    async fn settle_lost_commit(
        &self,
        group: u64,
        epoch: u64,
        ours: &Bytes,
    ) -> Result<Option<u64>, SecureError> {
        let fate = self.commit_fate(group, epoch, ours).await;
        match fate.map_err(|e| unknown_outcome(group, &e))? {
            CommitFate::Ours => Ok(Some(self.merge_pending(group, epoch).await?)),
            CommitFate::NotTaken => {
                self.discard_pending(group).await?;
                Ok(None)
            }
            CommitFate::Theirs(current) => {
                self.discard_pending(group).await?;
                self.wait_for_epoch(group, current).await?;
                Ok(None)
            }
        }
    }

    /// What became of our Commit for `epoch` of `group` (bytes `ours`):
    /// not taken while the server's epoch is still `epoch`, else ours if
    /// the Commit in the log made in `epoch` is byte for byte ours.
    async fn commit_fate(
        &self,
        group: u64,
        epoch: u64,
        ours: &Bytes,
    ) -> Result<CommitFate, SecureError> {
        let info = mls_body::GetGroupInfo {
            conversation_id: group,
        };
        let current = self.client.request_retrying(info).await?.epoch;
        if current <= epoch {
            return Ok(CommitFate::NotTaken);
        }
        match self.commit_of_epoch(group, epoch).await? {
            Some(taker) if taker == *ours => Ok(CommitFate::Ours),
            _ => Ok(CommitFate::Theirs(current)),
        }
    }

    /// The Commit in `group`'s log made in `epoch` (exactly one is accepted
    /// per epoch), searched from the head back, a window at a time.
    async fn commit_of_epoch(&self, group: u64, epoch: u64) -> Result<Option<Bytes>, SecureError> {
        let head = self
            .client
            .sync(true)
            .await?
            .into_iter()
            .find(|s| s.conversation_id == group)
            .map_or(0, |s| s.head_seq);
        let mut upto = head;
        while upto > 0 {
            let from = upto.saturating_sub(COMMIT_SCAN_WINDOW - 1).max(1);
            let window = self.messages_between(group, from, upto).await?;
            let commits = window
                .iter()
                .rev()
                .filter(|m| m.flags & flags::MLS_COMMIT != 0);
            for m in commits {
                match MlsClient::message_epoch(&m.payload) {
                    Ok(e) if e == epoch => return Ok(Some(m.payload.clone())),
                    Ok(e) if e < epoch => return Ok(None),
                    _ => {}
                }
            }
            upto = from - 1;
        }
        Ok(None)
    }

    /// The messages of `conversation` with seqs `from..=upto`, in order.
    async fn messages_between(
        &self,
        conversation: u64,
        from: u64,
        upto: u64,
    ) -> Result<Vec<Message>, SecureError> {
        let mut out = Vec::new();
        let mut next = from;
        while next <= upto {
            let limit = u32::try_from(upto - next + 1).unwrap_or(u32::MAX);
            let page = self.client.history(conversation, next, limit).await?;
            out.extend(page.messages.into_iter().filter(|m| m.seq <= upto));
            if page.next_seq <= next {
                break;
            }
            next = page.next_seq;
        }
        Ok(out)
    }

    /// Stages the change as a pending MLS commit; `None` when there is nothing to change.
    async fn stage(
        &self,
        group: u64,
        change: &Change,
        claimed: Option<Vec<mls_body::ClaimedKeyPackageData>>,
    ) -> Result<Option<(super::mls::CommitBundle, Vec<String>, Vec<String>)>, SecureError> {
        match change {
            Change::Add(users) => {
                let entries = match claimed {
                    Some(entries) => entries,
                    None => self.claim_key_packages(users).await?,
                };
                let mut crypto = self.crypto.lock().await;
                let present: HashSet<String> = crypto.mls.members(group)?.into_iter().collect();
                // Devices already in the group are skipped; users already in
                // it (a newly linked device) are not "added" at the server.
                let packages: Vec<Vec<u8>> = entries
                    .iter()
                    .filter(|e| !present.contains(&format!("{}/{}", e.user, e.device)))
                    .map(|e| e.key_package.to_vec())
                    .collect();
                if packages.is_empty() {
                    return Ok(None);
                }
                let present_users: HashSet<&str> = present
                    .iter()
                    .filter_map(|id| id.split('/').next())
                    .collect();
                let new_users = users
                    .iter()
                    .filter(|u| !present_users.contains(u.as_str()))
                    .cloned()
                    .collect();
                let bundle = crypto.mls.add_members(group, &packages)?;
                Ok(Some((bundle, new_users, Vec::new())))
            }
            Change::Remove(users) => {
                let mut crypto = self.crypto.lock().await;
                let identities: Vec<String> = crypto
                    .mls
                    .members(group)?
                    .into_iter()
                    .filter(|id| {
                        users
                            .iter()
                            .any(|u| id.split('/').next() == Some(u.as_str()))
                    })
                    .collect();
                if identities.is_empty() {
                    return Ok(None);
                }
                let bundle = crypto.mls.remove_members(group, &identities)?;
                Ok(Some((bundle, Vec::new(), users.clone())))
            }
        }
    }

    /// One KeyPackage per device of each user; every user must have at
    /// least one ([`SecureError::NoKeyPackages`] names those without).
    async fn claim_key_packages(
        &self,
        users: &[String],
    ) -> Result<Vec<mls_body::ClaimedKeyPackageData>, SecureError> {
        let claim = mls_body::ClaimKeyPackages {
            users: users.to_vec(),
        };
        let entries = self.client.request(claim).await?.entries;
        let missing: Vec<String> = users
            .iter()
            .filter(|u| !entries.iter().any(|e| &e.user == *u))
            .cloned()
            .collect();
        match missing.is_empty() {
            true => Ok(entries),
            false => Err(SecureError::NoKeyPackages { users: missing }),
        }
    }

    /// Checks that each of `users` is (`members`) or is not (`!members`) in
    /// the group. A view that disagrees may be behind: it first catches up
    /// to the server's epoch and looks again.
    /// [`SecureError::NotAGroup`] unless `conversation` is a group.
    async fn require_group(&self, conversation: u64) -> Result<(), SecureError> {
        match self.kind(conversation).await? {
            ConversationKind::Group => Ok(()),
            _ => Err(SecureError::NotAGroup(conversation)),
        }
    }

    async fn require_membership(
        &self,
        group: u64,
        users: &[String],
        members: bool,
    ) -> Result<(), SecureError> {
        if self.misplaced(group, users, members).await?.is_empty() {
            return Ok(());
        }
        let info = mls_body::GetGroupInfo {
            conversation_id: group,
        };
        let epoch = self.client.request(info).await?.epoch;
        self.wait_for_epoch(group, epoch).await?;
        let users = self.misplaced(group, users, members).await?;
        match (users.is_empty(), members) {
            (true, _) => Ok(()),
            (false, true) => Err(SecureError::NotMembers { group, users }),
            (false, false) => Err(SecureError::AlreadyMembers { group, users }),
        }
    }

    /// Those of `users` whose membership in the local MLS group is not `members`.
    async fn misplaced(
        &self,
        group: u64,
        users: &[String],
        members: bool,
    ) -> Result<Vec<String>, SecureError> {
        let present = self.crypto.lock().await.mls.members(group)?;
        let is_in = |u: &String| present.iter().any(|id| id.split('/').next() == Some(u));
        Ok(users
            .iter()
            .filter(|u| is_in(u) != members)
            .cloned()
            .collect())
    }

    /// Best effort after a group's setup failed (its first Commit, after
    /// the checks, was refused or lost): leave it on the server so it is in
    /// nobody's conversation list.
    async fn abandon_group(&self, group: u64) {
        let me = self.identity.user.clone();
        if let Err(e) = self.client.remove_members(group, &[me.as_str()]).await {
            tracing::debug!(group, error = %e, "leaving a group whose setup failed");
        }
        if let Err(e) = self.deactivate(group).await {
            tracing::debug!(group, error = %e, "deactivating a group whose setup failed");
        }
        lock(&self.kinds).remove(&group);
    }

    /// Marks the local MLS state of a group this device is no longer in
    /// inactive (saved), so it is not taken for a removal later; returns
    /// whether it was active. A group without local state is left alone.
    async fn deactivate(&self, group: u64) -> Result<bool, SecureError> {
        let mut crypto = self.crypto.lock().await;
        if !crypto.mls.has_group(group)? || !crypto.mls.deactivate(group)? {
            return Ok(false);
        }
        crypto.save_mls()?;
        Ok(true)
    }

    /// Whether a removal found by [`Inner::find_removals`] is news to the
    /// app: the group is marked inactive now, as the app hears of it (so a
    /// process that never reads events, such as a one-off send, leaves the
    /// news for the next one); a repeat, or a group already inactive, is
    /// not news.
    async fn announce_removal(&self, group: u64) -> bool {
        match self.deactivate(group).await {
            Ok(was_active) => was_active,
            Err(error) => {
                tracing::warn!(group, %error, "could not mark a group left while offline inactive");
                true
            }
        }
    }

    /// The groups this device was removed from while it was not listening:
    /// it has active MLS state for them but the server no longer lists them
    /// for it (the Commit that removed it is not delivered to a non-member).
    /// They stay active until the app hears of it
    /// ([`Inner::announce_removal`]). Groups joined after the server's
    /// list was taken are not judged by it.
    async fn find_removals(&self) -> Result<Vec<u64>, SecureError> {
        let before = self.crypto.lock().await.mls.active_groups()?;
        if before.is_empty() {
            return Ok(Vec::new());
        }
        let listed: HashSet<u64> = self
            .client
            .sync(true)
            .await?
            .into_iter()
            .map(|state| state.conversation_id)
            .collect();
        Ok(before.into_iter().filter(|g| !listed.contains(g)).collect())
    }

    /// The active groups this device is stranded in (behind the server, with
    /// the Commit it needs next gone from the log), each rejoined by an
    /// external commit: their ids and new epochs. A group that cannot be
    /// checked or rejoined now (one this device was removed from, say) is
    /// logged and tried again at the next reconnect.
    async fn rejoin_stranded(&self) -> Result<Vec<(u64, u64)>, SecureError> {
        let groups = self.crypto.lock().await.mls.active_groups()?;
        let mut rejoined = Vec::new();
        for group in groups {
            match self.rejoin_if_stranded(group).await {
                Ok(Some(epoch)) => rejoined.push((group, epoch)),
                Ok(None) => {}
                Err(error) if self.client.is_closed() => return Err(error),
                Err(error) => {
                    tracing::debug!(group, %error, "could not check a group for missed Commits")
                }
            }
        }
        Ok(rejoined)
    }

    /// Rejoins `group` by an external commit if this device is stranded in
    /// it: its epoch is behind the server's and the Commit made in its
    /// epoch is no longer in the log (expired while the device was away),
    /// so it can never catch up by processing Commits. Returns the new
    /// epoch when it rejoined. A refused external commit (another Commit
    /// took the epoch) is made again from the newer GroupInfo.
    async fn rejoin_if_stranded(&self, group: u64) -> Result<Option<u64>, SecureError> {
        let _one_at_a_time = self.rejoining.lock().await;
        let mut stranded = false;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let ours = {
                let mut crypto = self.crypto.lock().await;
                if !crypto.mls.is_active(group)? {
                    return Ok(None);
                }
                crypto.mls.epoch(group)?
            };
            let info = mls_body::GetGroupInfo {
                conversation_id: group,
            };
            let info = self.client.request_retrying(info).await?;
            if !stranded
                && (info.epoch <= ours || self.commit_of_epoch(group, ours).await?.is_some())
            {
                return Ok(None);
            }
            stranded = true;
            tracing::info!(
                group,
                ours,
                current = info.epoch,
                "missed Commits are gone; rejoining by an external commit"
            );
            let join = self
                .crypto
                .lock()
                .await
                .mls
                .external_join(group, &info.group_info)?;
            if let Some(epoch) = self.offer_external_join(group, join).await? {
                return Ok(Some(epoch));
            }
        }
        Err(SecureError::Protocol(format!(
            "other members kept committing while this device rejoined group {group}; it tries again at the next reconnect"
        )))
    }

    /// Sends an external commit (no users added or removed: this device's
    /// user is still a member) and keeps the rejoined state if the server
    /// takes it: the new epoch, or `None` when another Commit took the
    /// epoch (the caller rejoins from the newer GroupInfo).
    async fn offer_external_join(
        &self,
        group: u64,
        join: super::mls::ExternalJoin,
    ) -> Result<Option<u64>, SecureError> {
        let (epoch, ours) = (join.epoch, Bytes::from(join.commit));
        let commit = mls_body::Commit {
            conversation_id: group,
            epoch,
            commit: ours.clone(),
            welcome: None,
            group_info: Bytes::from(join.group_info),
            added: Vec::new(),
            removed: Vec::new(),
            staged: Default::default(),
        };
        let taken = match self.client.commit(commit).await {
            Ok(accepted) => Some(accepted.epoch),
            Err(ClientError::Conflict(conflict))
                if conflict.error.code == ErrorCode::StaleEpoch =>
            {
                None
            }
            Err(ClientError::Disconnected | ClientError::Timeout) => {
                match self.commit_fate(group, epoch, &ours).await? {
                    CommitFate::Ours => Some(epoch + 1),
                    CommitFate::NotTaken | CommitFate::Theirs(_) => None,
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(new_epoch) = taken {
            self.crypto.lock().await.save_mls()?;
            self.epochs.send_modify(|e| {
                e.insert(group, new_epoch);
            });
            lock(&self.kinds).insert(group, ConversationKind::Group);
        }
        Ok(taken)
    }

    /// Processes incoming messages (keeping their events for the app) until
    /// the group reaches `epoch`.
    async fn wait_for_epoch(&self, group: u64, epoch: u64) -> Result<(), SecureError> {
        let ours = self.crypto.lock().await.mls.epoch(group).unwrap_or(0);
        self.epochs.send_modify(|e| {
            let known = e.entry(group).or_insert(0);
            *known = (*known).max(ours);
        });
        let mut rx = self.epochs.subscribe();
        let reached = |e: &HashMap<u64, u64>| e.get(&group).copied().unwrap_or(0) >= epoch;
        let wait = async {
            while !reached(&rx.borrow_and_update()) {
                let message = tokio::select! {
                    changed = rx.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return false,
                    },
                    message = self.client.next_message() => message,
                };
                let Some(message) = message else { return false };
                if let Some(event) = self.open(message, false).await {
                    lock(&self.buffered).push_back(event);
                }
            }
            true
        };
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(true) => Ok(()),
            _ => Err(SecureError::Protocol(format!(
                "did not receive the winning commit of group {group} in time"
            ))),
        }
    }
}

impl Inner {
    /// The event of an incoming message, if any. A message already in the
    /// store is taken from there ([`Inner::redelivered`]); a new one is
    /// decrypted and stored first. `handed_out`: the app gets the event now
    /// (not buffered).
    async fn open(&self, m: Message, handed_out: bool) -> Option<SecureEvent> {
        let (conversation_id, seq) = (m.conversation_id, m.seq);
        let unreadable = Unreadable::of(&m);
        let result = match self.redelivered(conversation_id, seq, handed_out).await {
            Ok(Some(event)) => return self.unless_receipt(event, handed_out).await,
            Ok(None) => self.decrypt(m, handed_out).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(event) => self.unless_receipt(event, handed_out).await,
            Err(SecureError::MessageStore(e)) => {
                Some(self.not_stored(conversation_id, seq, e).await)
            }
            Err(e @ SecureError::Mls(MlsError::FutureEpoch { .. })) => {
                self.after_future_epoch(conversation_id).await;
                Some(self.unreadable(unreadable, e.to_string(), handed_out))
            }
            Err(e) => Some(self.unreadable(unreadable, e.to_string(), handed_out)),
        }
    }

    /// The event of a message this device cannot read, recorded first in
    /// the local store (history shows it; a redelivery is acknowledged, not
    /// decrypted again), so it is never dropped in silence: the app shows
    /// the event and acknowledges it like any message.
    fn unreadable(&self, m: Unreadable, reason: String, handed_out: bool) -> SecureEvent {
        let content = Content::unreadable(reason.clone());
        let record = StoredMessage {
            conversation_id: m.conversation_id,
            seq: m.seq,
            expires_at_ms: m.expires_at_ms,
            sender_user: m.sender_user,
            sender_device: m.sender_device,
            server_time_ms: m.server_time_ms,
            content,
            own: false,
        };
        if let Err(error) = self.messages.insert(&record, handed_out) {
            tracing::warn!(%error, "could not record an unreadable message; it is shown again when redelivered");
        }
        SecureEvent::Undecryptable {
            conversation_id: m.conversation_id,
            seq: m.seq,
            reason,
        }
    }

    async fn decrypt(
        &self,
        m: Message,
        handed_out: bool,
    ) -> Result<Option<SecureEvent>, SecureError> {
        if m.flags & flags::TOMBSTONE != 0 {
            // Deleted for everyone before it reached this device: nothing to
            // decrypt; the history shows it deleted. No event. It goes when
            // its message would have (the server keeps DISAPPEARING on it).
            let expires = disappears_at(&m);
            self.messages.insert_tombstone(
                m.conversation_id,
                m.seq,
                &m.sender_user,
                m.sender_device,
                (m.server_time_ms, expires),
            )?;
            return Ok(None);
        }
        if m.flags & flags::PER_DEVICE != 0 {
            self.open_pairwise(m, handed_out).await
        } else if m.flags & (flags::MLS_COMMIT | flags::MLS_WELCOME) != 0
            || m.flags & flags::CLIENT_MLS != 0
        {
            self.open_group(m, handed_out).await
        } else {
            Err(SecureError::Protocol(format!(
                "message flags {:#x} name neither Olm ({:#x}) nor MLS ({:#x}): not in a format \
                 this SDK reads",
                m.flags,
                flags::CLIENT_OLM,
                flags::CLIENT_MLS
            )))
        }
    }

    /// A message the store already has: `Some(event)` for the app, where
    /// `Some(None)` is nothing to show (the app had it; its delivery is
    /// acknowledged here, since it is durable); `None` when not stored.
    async fn redelivered(
        &self,
        conversation_id: u64,
        seq: u64,
        handed_out: bool,
    ) -> Result<Option<Option<SecureEvent>>, MessageStoreError> {
        let Some(found) = self.messages.get(conversation_id, seq)? else {
            return Ok(None);
        };
        if found.handed_out {
            if let Err(error) = self.client.ack(conversation_id, seq).await {
                tracing::debug!(%error, "acknowledging a stored message delivered again; it comes again later");
            }
            return Ok(Some(None));
        }
        if handed_out {
            self.messages.mark_handed_out(conversation_id, seq)?;
        }
        if let Some(reason) = found.message.content.unreadable_reason() {
            return Ok(Some(Some(SecureEvent::Undecryptable {
                conversation_id,
                seq,
                reason,
            })));
        }
        Ok(Some(Some(SecureEvent::Message(found.message.into()))))
    }

    /// Closes the client after a message could not be stored (its ratchet
    /// state is not saved, so the next client decrypts it again).
    async fn not_stored(
        &self,
        conversation_id: u64,
        seq: u64,
        e: MessageStoreError,
    ) -> SecureEvent {
        tracing::error!(error = %e, conversation_id, seq, "a decrypted message could not be stored; closing the client");
        self.client.close().await;
        self.crypto.lock().await.state_lock = None;
        SecureEvent::NotStored {
            conversation_id,
            seq,
            reason: e.to_string(),
        }
    }

    /// A message of `group` came from an epoch ahead of this device's, so
    /// the Commits in between never reached it: if they are gone for good,
    /// it rejoins now, and the app hears [`SecureEvent::Rejoined`] right
    /// after the unreadable message.
    async fn after_future_epoch(&self, group: u64) {
        match self.rejoin_if_stranded(group).await {
            Ok(Some(epoch)) => lock(&self.buffered).push_back(SecureEvent::Rejoined {
                conversation_id: group,
                epoch,
            }),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(group, %error, "could not rejoin a group whose missed Commits are gone")
            }
        }
    }

    /// Records that a buffered event reached the app.
    fn hand_out(&self, event: &SecureEvent) {
        if let SecureEvent::Message(m) = event {
            if let Err(error) = self.messages.mark_handed_out(m.conversation_id, m.seq) {
                tracing::warn!(%error, "could not record that a stored message was shown; it may be shown again");
            }
        }
    }

    /// `event`, unless it is a receipt: receipts are applied to the store
    /// when stored and never shown, so the SDK records it as handed out
    /// and, when the app is reading events (`reading`: every earlier
    /// message was handed to it), acknowledges it itself; read while a send
    /// caught up, it is acknowledged by the app's next acknowledgement or
    /// when delivered again.
    async fn unless_receipt(
        &self,
        event: Option<SecureEvent>,
        reading: bool,
    ) -> Option<SecureEvent> {
        let Some(SecureEvent::Message(m)) = &event else {
            return event;
        };
        if !matches!(m.content, Content::Receipt { .. }) {
            return event;
        }
        if let Err(error) = self.messages.mark_handed_out(m.conversation_id, m.seq) {
            tracing::debug!(%error, "recording a receipt as handled; it is applied once anyway");
        }
        let behind = !reading || !lock(&self.buffered).is_empty();
        if behind {
            return None;
        }
        if let Err(error) = self.client.ack(m.conversation_id, m.seq).await {
            tracing::debug!(%error, "acknowledging a receipt; it comes again later and is recognised");
        }
        None
    }

    /// When this device deletes its copy of a message it sent to
    /// `conversation_id`, stored at `server_time_ms`: as long after as the
    /// conversation's disappearing-message timer as this device knows it
    /// (the SendAck carries no flags; received messages follow the
    /// server's stamp, [`disappears_at`]); 0 (kept) without a timer, and
    /// for group info (a group's name outlives its disappearing messages,
    /// as in Signal).
    fn local_expiry(&self, conversation_id: u64, server_time_ms: u64, content: &Content) -> u64 {
        if matches!(content, Content::GroupInfo(_)) {
            return 0;
        }
        match self.client.timer_secs(conversation_id) {
            0 => 0,
            secs => server_time_ms.saturating_add(u64::from(secs).saturating_mul(1000)),
        }
    }

    /// Stores a decrypted message (before its ratchet state is saved); a
    /// new visible message from another user queues a delivered receipt.
    fn keep(&self, d: &Decrypted, handed_out: bool) -> Result<(), MessageStoreError> {
        let message = StoredMessage {
            conversation_id: d.conversation_id,
            seq: d.seq,
            sender_user: d.sender_user.clone(),
            sender_device: d.sender_device,
            server_time_ms: d.server_time_ms,
            content: d.content.clone(),
            own: false,
            expires_at_ms: match d.content {
                // A group's name outlives its disappearing messages (Signal).
                Content::GroupInfo(_) => 0,
                _ => d.expires_at_ms,
            },
        };
        let added = self.messages.insert(&message, handed_out)?;
        if added && d.content.is_visible() && d.sender_user != self.identity.user {
            self.receipts.delivered(d.conversation_id, d.seq);
        }
        Ok(())
    }

    /// Stores a message this device sent, and for a visible one the users
    /// it went to (for receipt states), in one transaction; one the server
    /// acknowledged with seq 0 is kept unsequenced. It was sent, so a failure is only
    /// logged (with what to do); the send still succeeded.
    async fn keep_sent(&self, receipt: &SendReceipt, content: &Content, kind: ConversationKind) {
        if !self.client.timers_known() {
            // Just started: learn the timers before giving the copy its expiry.
            if let Err(error) = self.client.sync(true).await {
                tracing::debug!(%error, "no sync before storing a sent message; stored without expiry");
            }
        }
        let message = StoredMessage {
            conversation_id: receipt.conversation_id,
            seq: receipt.seq,
            sender_user: self.identity.user.clone(),
            sender_device: self.identity.device,
            server_time_ms: receipt.server_time_ms,
            content: content.clone(),
            own: true,
            expires_at_ms: self.local_expiry(
                receipt.conversation_id,
                receipt.server_time_ms,
                content,
            ),
        };
        let users = match !content.is_visible() || kind == ConversationKind::NoteToSelf {
            true => Vec::new(),
            false => self.recipients(receipt.conversation_id, kind).await,
        };
        // Seq 0 (the server numbered nothing, PROTOCOL.md §4.4) is kept
        // too, unsequenced (message_store::unsequenced).
        if let Err(error) = self.messages.insert_sent(&message, &users) {
            tracing::warn!(%error, "the message was sent but is missing from this device's history");
        }
    }

    /// The other users a message of `conversation` goes to now: the MLS
    /// group's members, or the users of the devices a 1:1 send went to.
    async fn recipients(&self, conversation: u64, kind: ConversationKind) -> Vec<String> {
        let identities: Vec<String> = match kind {
            ConversationKind::Group => {
                let mut crypto = self.crypto.lock().await;
                crypto.mls.members(conversation).unwrap_or_default()
            }
            _ => self
                .known_targets(conversation)
                .into_iter()
                .map(|(user, _)| user)
                .collect(),
        };
        let mut users: Vec<String> = identities
            .iter()
            .filter_map(|id| id.split('/').next())
            .filter(|user| *user != self.identity.user)
            .map(str::to_owned)
            .collect();
        users.sort();
        users.dedup();
        users
    }

    async fn open_pairwise(
        &self,
        m: Message,
        handed_out: bool,
    ) -> Result<Option<SecureEvent>, SecureError> {
        if m.payload.is_empty() {
            // Sent before this device existed: there is no ciphertext for it.
            return Ok(None);
        }
        let mut crypto = self.crypto.lock().await;
        let plaintext = crypto
            .olm
            .decrypt(&m.sender_user, m.sender_device, &m.payload)?;
        let opened = Content::decode(&plaintext)
            .map(|content| to_decrypted(&m, content))
            .map_err(|e| SecureError::Protocol(e.to_string()));
        if let Ok(d) = &opened {
            self.keep(d, handed_out)?;
        }
        crypto.save_olm()?;
        Ok(Some(SecureEvent::Message(opened?)))
    }

    async fn open_group(
        &self,
        m: Message,
        handed_out: bool,
    ) -> Result<Option<SecureEvent>, SecureError> {
        let group = m.conversation_id;
        let mut crypto = self.crypto.lock().await;
        if m.flags & flags::MLS_WELCOME != 0 {
            // A Welcome back into a group this device left or was removed
            // from replaces the stale state (MlsClient::join).
            return match crypto.mls.join(&m.payload) {
                Ok(_) => {
                    crypto.joined_at.insert(group, m.seq);
                    crypto.save_mls()?;
                    let epoch = crypto.mls.epoch(group)?;
                    self.epochs.send_modify(|e| {
                        e.insert(group, epoch);
                    });
                    lock(&self.kinds).insert(group, ConversationKind::Group);
                    Ok(Some(SecureEvent::Joined {
                        conversation_id: group,
                    }))
                }
                // A Welcome for other added members only, or a repeat of
                // the one this device joined from.
                Err(MlsError::NoMatchingKeyPackage | MlsError::GroupExists(_)) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        if !crypto.mls.has_group(group)?
            || crypto.joined_at.get(&group).is_some_and(|&at| m.seq < at)
        {
            return Ok(None);
        }
        let processed = match crypto.mls.process(group, &m.payload) {
            // This device was removed (the app heard Removed): the group's
            // messages are not for it until a Welcome brings it back.
            Err(MlsError::Removed(_)) => return Ok(None),
            // A Commit of an epoch this device has left behind was applied
            // already (the server accepts one per epoch): delivered again
            // after a restart, say.
            Err(MlsError::StaleEpoch { .. }) if m.flags & flags::MLS_COMMIT != 0 => {
                return Ok(None)
            }
            processed => processed,
        };
        if let Ok(Processed::Application { sender, plaintext }) = processed {
            let opened = application(&m, &sender, &plaintext);
            if let Ok(d) = &opened {
                self.keep(d, handed_out)?;
            }
            crypto.save_mls()?;
            drop(crypto);
            if let Ok(d) = &opened {
                content_ops::apply_moderated_delete(&self.client, &self.messages, d).await;
            }
            return Ok(Some(SecureEvent::Message(opened?)));
        }
        crypto.save_mls()?;
        match processed? {
            Processed::Application { .. } => Ok(None),
            Processed::Commit { epoch, removed_me } => {
                self.epochs.send_modify(|e| {
                    e.insert(group, epoch);
                });
                if removed_me {
                    return Ok(Some(SecureEvent::Removed {
                        conversation_id: group,
                    }));
                }
                Ok(Some(SecureEvent::GroupChanged {
                    conversation_id: group,
                    epoch,
                }))
            }
            Processed::Proposal => Ok(None),
        }
    }
}

/// A group application message, checked against the server's sender.
fn application(m: &Message, sender: &str, plaintext: &[u8]) -> Result<Decrypted, SecureError> {
    let claimed = format!("{}/{}", m.sender_user, m.sender_device);
    if sender != claimed {
        return Err(SecureError::Protocol(format!(
            "MLS sender {sender} does not match the server's sender {claimed}; dropped"
        )));
    }
    let content = Content::decode(plaintext).map_err(|e| SecureError::Protocol(e.to_string()))?;
    Ok(to_decrypted(m, content))
}

/// Who sent a message and where it sits, kept before it is decrypted so an
/// unreadable one can still be recorded.
struct Unreadable {
    conversation_id: u64,
    seq: u64,
    sender_user: String,
    sender_device: u32,
    server_time_ms: u64,
    expires_at_ms: u64,
}

impl Unreadable {
    fn of(m: &Message) -> Unreadable {
        Unreadable {
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_user: m.sender_user.clone(),
            sender_device: m.sender_device,
            server_time_ms: m.server_time_ms,
            expires_at_ms: disappears_at(m),
        }
    }
}

fn to_decrypted(m: &Message, content: Content) -> Decrypted {
    Decrypted {
        conversation_id: m.conversation_id,
        seq: m.seq,
        sender_user: m.sender_user.clone(),
        sender_device: m.sender_device,
        server_time_ms: m.server_time_ms,
        content,
        expires_at_ms: disappears_at(m),
    }
}

/// When a device deletes its copy of received message `m`: the server's
/// stamp when the server flagged it [`flags::DISAPPEARING`] (its lifetime
/// was cut by the conversation's timer or the sender when it was sent,
/// PROTOCOL.md §4.6), else 0 (kept; the stamp is only the server's
/// retention). So a device that catches up late deletes what was sent
/// while the timer was on, and keeps what was sent before it.
fn disappears_at(m: &Message) -> u64 {
    match m.flags & flags::DISAPPEARING {
        0 => 0,
        _ => m.expires_at_ms,
    }
}

/// Logs a failed background reaction to a notice, except when it failed
/// because the app closed the client meanwhile (a short-lived CLI command
/// closes while a key upload is under way; whatever the error, it is no
/// news to the user then).
fn warn_unless_closed<T>(client: &Client, result: Result<T, SecureError>, what: &str) {
    match result {
        Ok(_) | Err(SecureError::Client(ClientError::Closed)) => {}
        Err(error) if client.is_closed() => tracing::debug!(%error, "{what} (client closed)"),
        Err(error) => tracing::warn!(%error, "{what}"),
    }
}

/// At start and after every reconnect, settles the Commits left pending
/// ([`Inner::settle_all_pending`]), tells the app of the groups this
/// device was removed from meanwhile ([`Inner::find_removals`]): a
/// [`SecureEvent::Removed`] each, which [`SecureClient::next_event`] hands
/// on once; then rejoins the groups whose missed Commits are gone
/// ([`Inner::rejoin_stranded`]): a [`SecureEvent::Rejoined`] each. Holds
/// the client weakly, so it ends with it.
async fn reconnect_watch(inner: std::sync::Weak<Inner>, events: mpsc::Sender<SecureEvent>) {
    let Some(mut connections) = inner.upgrade().map(|i| i.client.connections()) else {
        return;
    };
    loop {
        connections.borrow_and_update();
        let Some(client) = inner.upgrade() else {
            return;
        };
        if client.client.is_closed() {
            return;
        }
        let settled = client.settle_all_pending().await;
        warn_unless_closed(
            &client.client,
            settled,
            "could not settle a Commit left pending; tried again at the next reconnect",
        );
        announce_removals(&client, &events).await;
        announce_rejoins(&client, &events).await;
        drop(client);
        if connections.changed().await.is_err() {
            return;
        }
    }
}

async fn announce_removals(client: &Inner, events: &mpsc::Sender<SecureEvent>) {
    match client.find_removals().await {
        Ok(groups) => {
            for conversation_id in groups {
                let _ = events.send(SecureEvent::Removed { conversation_id }).await;
            }
        }
        Err(error) => {
            tracing::debug!(%error, "checking for groups left while offline; checked again at the next reconnect")
        }
    }
}

async fn announce_rejoins(client: &Inner, events: &mpsc::Sender<SecureEvent>) {
    match client.rejoin_stranded().await {
        Ok(groups) => {
            for (conversation_id, epoch) in groups {
                let event = SecureEvent::Rejoined {
                    conversation_id,
                    epoch,
                };
                let _ = events.send(event).await;
            }
        }
        Err(error) => warn_unless_closed(
            &client.client,
            Err::<(), _>(error),
            "could not rejoin a group whose missed Commits are gone; tried again at the next reconnect",
        ),
    }
}

/// Handles server notices: replenish keys, forget changed device sets,
/// surface link requests, invitations, presence changes and others' typing.
async fn notice_loop(inner: Arc<Inner>, events: mpsc::Sender<SecureEvent>) {
    while let Some(notice) = inner.client.next_notice().await {
        match notice {
            Body::CallSignalled(signal) => inner.on_call_signalled(signal).await,
            Body::KeysLow(_) => {
                let result = inner.publish_keys().await;
                warn_unless_closed(&inner.client, result, "could not replenish keys");
            }
            Body::DeviceListChanged(devices::DeviceListChanged { user, .. }) => {
                lock(&inner.targets).clear();
                if user == inner.identity.user {
                    let result = inner.add_own_devices_to_groups().await;
                    warn_unless_closed(
                        &inner.client,
                        result,
                        "could not add this account's new device to its groups",
                    );
                }
            }
            Body::Invited(i) => {
                let event = SecureEvent::Invited {
                    conversation_id: i.conversation_id,
                    inviter: i.inviter,
                };
                let _ = events.send(event).await;
            }
            Body::InvitationAnswered(a) => {
                let event = SecureEvent::InvitationAnswered {
                    conversation_id: a.conversation_id,
                    user: a.user,
                    accepted: a.accepted,
                };
                let _ = events.send(event).await;
            }
            Body::LinkPrompt(devices::LinkPrompt {
                link_id,
                device_name,
                ..
            }) => {
                let _ = events
                    .send(SecureEvent::LinkPrompt {
                        link_id,
                        device_name,
                    })
                    .await;
            }
            Body::PresenceChanged(changed) => {
                let _ = events
                    .send(SecureEvent::PresenceChanged(changed.entry))
                    .await;
            }
            Body::TimerChanged(t) => {
                let event = SecureEvent::TimerChanged {
                    conversation_id: t.conversation_id,
                    secs: t.secs,
                    user: t.user,
                };
                let _ = events.send(event).await;
            }
            Body::TypingChanged(changed) if changed.user != inner.identity.user => {
                // Ephemeral: dropped, never waited for, when the app lags.
                let _ = events.try_send(SecureEvent::Typing(changed));
            }
            _ => {}
        }
    }
}
