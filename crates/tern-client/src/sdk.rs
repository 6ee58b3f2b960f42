//! The client SDK: an async handle over one tern device connection that
//! registers or authenticates, sends (exactly once, retried across
//! reconnects), and yields incoming messages in order, each once, per
//! conversation. It reconnects on its own with backoff and, after every
//! (re)connect, syncs its position in every conversation and catches up on
//! what moved past its delivery cursors. The ordering rules themselves live
//! in [`super::ordering`], a state machine without I/O that this module
//! drives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::connection::{
    client_endpoint, ConnectionError, FrameReceiver, FrameSender, RawConnection,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_SERVER_NAME,
};
use super::identity::{Identity, IdentityError};
use super::ordering::{Action, OrderedDelivery};
use super::tls::TrustAnchor;
use tern_proto::body::{auth, conversations, devices, messaging, privacy, safety, settings, sync};
use tern_proto::fb::ErrorCode;
use tern_proto::{
    close, Body, Conflict, ConversationKind, ConversationState, Frame, GroupAdds, Message, Request,
    MAX_SYNC_PAGE,
};

/// How a client reaches and trusts its server, and where it keeps its state.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub server: SocketAddr,
    /// TLS server name (SNI). Default `localhost` (the self-signed cert's name).
    pub server_name: String,
    pub trust: TrustAnchor,
    /// Directory holding `identity.toml`.
    pub state_dir: PathBuf,
    /// How long one request waits for its answer. Default 30 s.
    pub request_timeout: Duration,
    /// How long connecting waits for the server to complete the QUIC
    /// handshake before failing with [`ConnectionError::NoAnswer`] ("no
    /// tern server answered at ADDR"). Default 10 s.
    pub connect_timeout: Duration,
    /// First reconnect delay, doubled per failure up to `reconnect_max`. Default 100 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub reconnect_max: Duration,
    /// Largest frame the server accepts (its `max_frame_len`). A request
    /// that would exceed it fails here instead of getting the connection
    /// closed. Default 262144 (256 KiB), the server's default.
    pub max_frame_len: usize,
    /// Whether this client offers QUIC datagrams (RFC 9221). With them
    /// (the default) typing signals travel as datagrams both ways; without
    /// them on the control stream (docs/PROTOCOL.md §1.4).
    pub datagrams: bool,
}

impl ClientOptions {
    pub fn new(server: SocketAddr, trust: TrustAnchor, state_dir: impl Into<PathBuf>) -> Self {
        ClientOptions {
            server,
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            trust,
            state_dir: state_dir.into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            max_frame_len: tern_proto::codec::DEFAULT_MAX_FRAME_LEN,
            datagrams: true,
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("the server refused: {message}")]
    Server {
        code: ErrorCode,
        message: String,
        retry_after_ms: u32,
    },
    #[error("the server refused: {}", .0.error.message)]
    Conflict(Box<Conflict>),
    #[error("connection lost before the answer came; the request may be retried")]
    Disconnected,
    #[error("no answer within the request timeout")]
    Timeout,
    #[error("the server answered with an unexpected frame: {0}")]
    Unexpected(String),
    #[error("the client was closed")]
    Closed,
    #[error("request of {len} bytes exceeds the server's {max}-byte frame limit; send less at once (or raise max_frame_len on both sides)")]
    TooLarge { len: usize, max: usize },
    /// Refused before sending: past a protocol limit the server would refuse
    /// too (`tern_proto::limits`, the same numbers).
    #[error("not sent: {0}")]
    OverLimit(#[from] tern_proto::limits::OverLimit),
    /// Refused before connecting: the server checks handles the same way.
    #[error("not sent: {0}")]
    Handle(#[from] tern_proto::handle::HandleError),
    /// Refused before connecting: the server checks device names the same way.
    #[error("not sent: {0}")]
    DeviceName(#[from] tern_proto::handle::DeviceNameError),
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Conflict(c) => Some(c.error.code),
            _ => None,
        }
    }

    /// How long to wait before sending the request again when the server
    /// refused it as `RateLimited` (its `retry_after_ms`, docs/PROTOCOL.md
    /// §6); None for every other error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Server {
                code: ErrorCode::RateLimited,
                retry_after_ms,
                ..
            } => Some(Duration::from_millis((*retry_after_ms).into())),
            _ => None,
        }
    }
}

/// How a new device key is accepted by the server.
enum Enrollment {
    /// Register: a new account with this as its first device.
    NewAccount,
    /// RequestLink: a new device of an existing account.
    LinkDevice,
}

/// A conversation as the server describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationInfo {
    pub id: u64,
    pub kind: ConversationKind,
    pub members: Vec<String>,
    pub head_seq: u64,
    pub created: bool,
}

impl From<conversations::ConversationInfo> for ConversationInfo {
    fn from(info: conversations::ConversationInfo) -> Self {
        ConversationInfo {
            id: info.conversation_id,
            kind: info.kind,
            members: info.members,
            head_seq: info.head_seq,
            created: info.created,
        }
    }
}

/// Proof that a message is durably stored at `(conversation_id, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    pub conversation_id: u64,
    pub seq: u64,
    pub server_time_ms: u64,
    pub duplicate: bool,
}

impl From<messaging::SendAck> for SendReceipt {
    fn from(ack: messaging::SendAck) -> Self {
        SendReceipt {
            conversation_id: ack.conversation_id,
            seq: ack.seq,
            server_time_ms: ack.server_time_ms,
            duplicate: ack.duplicate,
        }
    }
}

/// Options of one send.
#[derive(Clone, Copy, Debug, Default)]
pub struct SendOptions {
    /// Idempotency key; 0 = pick a random one. Reuse it to retry a send.
    pub client_message_id: u64,
    /// Lifetime in seconds; 0 = server default (30 days).
    pub expires_in_secs: u32,
    pub flags: u32,
}

/// A page of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub head_seq: u64,
    pub next_seq: u64,
}

impl From<messaging::HistoryPage> for HistoryPage {
    fn from(page: messaging::HistoryPage) -> Self {
        HistoryPage {
            messages: page.messages,
            head_seq: page.head_seq,
            next_seq: page.next_seq,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>;

/// The live connection requests go through.
struct LiveConnection {
    connection: quinn::Connection,
    out: mpsc::Sender<Bytes>,
    pending: Pending,
}

/// How an answer dropped by [`Client::lose_next_answer`] is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerLoss {
    /// The answer never arrives: the request runs into its timeout
    /// ([`ClientError::Timeout`]) on a connection that stays up.
    Silent,
    /// The connection breaks just as the answer arrives: every request in
    /// flight fails with [`ClientError::Disconnected`] and the client
    /// reconnects.
    ConnectionLost,
}

/// Answers to lose on arrival: which ones (a predicate over the answer
/// body) and how. Empty unless a test arms [`Client::lose_next_answer`].
type Losses = Mutex<Vec<(fn(&Body) -> bool, AnswerLoss)>>;

/// What the reader tells the ordering task.
pub(crate) enum Event {
    Connected,
    Deliver(Message),
    /// A server push other than Deliver (KeysLow, LinkPrompt, DeviceListChanged,
    /// TypingChanged from the stream or a datagram).
    Notice(Body),
}

struct Shared {
    options: ClientOptions,
    identity: Identity,
    endpoint: quinn::Endpoint,
    live: watch::Sender<Option<Arc<LiveConnection>>>,
    next_request: AtomicU64,
    closed: AtomicBool,
    reconnects: AtomicU64,
    /// Requests in a row that got no answer on the live connection.
    timeouts: AtomicU64,
    /// Answers to lose on arrival (fault injection for tests).
    losses: Losses,
    /// Connections established so far (the first one included).
    connections: watch::Sender<u64>,
    /// The disappearing-message timer of each conversation that has one
    /// (seconds), as the last sync, `TimerChanged` notice or own
    /// `set_timer` said; one entry per conversation of this account.
    timers: Mutex<HashMap<u64, u32>>,
    /// Whether a full sync has filled `timers` since the client started.
    timers_synced: AtomicBool,
    /// Presence asked for, to ask again after a reconnect.
    presence: crate::presence::PresenceMemory,
}

impl Shared {
    fn note_timer(&self, conversation_id: u64, secs: u32) {
        let mut timers = lock(&self.timers);
        match secs {
            0 => timers.remove(&conversation_id),
            secs => timers.insert(conversation_id, secs),
        };
    }
}

/// A connected device. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Client {
    shared: Arc<Shared>,
    messages: tokio::sync::Mutex<mpsc::Receiver<Message>>,
    notices: tokio::sync::Mutex<mpsc::UnboundedReceiver<Body>>,
}

impl Client {
    /// Creates the account `user` with a fresh device key, saves the identity
    /// in `options.state_dir`, and returns the connected client.
    pub async fn register(
        options: ClientOptions,
        user: &str,
        device_name: &str,
    ) -> Result<Client, ClientError> {
        Client::enroll(options, user, device_name, Enrollment::NewAccount).await
    }

    /// Loads the identity from `options.state_dir` and connects as it.
    pub async fn connect(options: ClientOptions) -> Result<Client, ClientError> {
        let identity = Identity::load(&options.state_dir)?;
        let endpoint = sdk_endpoint(&options)?;
        let conn = authenticate(&endpoint, &options, &identity).await?;
        Ok(Client::start(options, identity, endpoint, conn))
    }

    fn start(
        options: ClientOptions,
        identity: Identity,
        endpoint: quinn::Endpoint,
        conn: RawConnection,
    ) -> Client {
        let (live_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            options,
            identity,
            endpoint,
            live: live_tx,
            next_request: AtomicU64::new(2),
            closed: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            losses: Mutex::default(),
            connections: watch::channel(0).0,
            timers: Mutex::default(),
            timers_synced: AtomicBool::new(false),
            presence: Default::default(),
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (messages_tx, messages_rx) = mpsc::channel(4096);
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        tokio::spawn(supervise(shared.clone(), conn, events_tx));
        tokio::spawn(order_deliveries(
            shared.clone(),
            events_rx,
            messages_tx,
            notices_tx,
        ));
        Client {
            shared,
            messages: tokio::sync::Mutex::new(messages_rx),
            notices: tokio::sync::Mutex::new(notices_rx),
        }
    }

    pub fn user(&self) -> &str {
        &self.shared.identity.user
    }

    /// The live QUIC connection, if connected, and whether this client
    /// offers datagrams (`ClientOptions::datagrams`).
    pub(crate) fn live_connection(&self) -> (Option<quinn::Connection>, bool) {
        let live = self.shared.live.borrow();
        let connection = live.as_ref().map(|l| l.connection.clone());
        (connection, self.shared.options.datagrams)
    }

    pub fn device(&self) -> u32 {
        self.shared.identity.device
    }

    /// What this client asked of presence (`presence`), kept for reconnects.
    pub(crate) fn presence_memory(&self) -> &crate::presence::PresenceMemory {
        &self.shared.presence
    }

    /// The largest request frame this client sends, in bytes (its
    /// [`ClientOptions::max_frame_len`], the server's `max_frame_len`).
    pub fn max_frame_len(&self) -> usize {
        self.shared.options.max_frame_len
    }

    /// The state directory (attachments spool their ciphertext under it).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.shared.options.state_dir
    }

    /// A live, open QUIC connection for blob streams (attachments,
    /// [`crate::attachment::transfer`]), waiting up to `within` while the
    /// client reconnects; `None` when none came.
    pub async fn blob_connection(&self, within: Duration) -> Option<quinn::Connection> {
        let mut rx = self.shared.live.subscribe();
        let wait = async {
            loop {
                let current = rx
                    .borrow_and_update()
                    .as_ref()
                    .map(|l| l.connection.clone());
                if let Some(c) = current.filter(|c| c.close_reason().is_none()) {
                    return Some(c);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(within, wait).await.ok().flatten()
    }

    /// Whether [`Client::close`] was called (or the client dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// A counter of the connections established so far, which changes at
    /// each (re)connect: after one, [`Client::sync`] tells what moved while
    /// the device was away.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.shared.connections.subscribe()
    }

    /// How many times the client has reconnected.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Links a new device to an existing account: waits until one of the
    /// account's devices approves (see [`Client::next_notice`] and
    /// [`Client::approve_link`]), then saves the identity and connects.
    pub async fn link(
        options: ClientOptions,
        user: &str,
        device_name: &str,
    ) -> Result<Client, ClientError> {
        Client::enroll(options, user, device_name, Enrollment::LinkDevice).await
    }

    /// Makes a fresh device key, has the server accept it (as a new account
    /// or, once approved, as a new device), saves the identity and connects.
    async fn enroll(
        options: ClientOptions,
        user: &str,
        device_name: &str,
        how: Enrollment,
    ) -> Result<Client, ClientError> {
        if Identity::exists(&options.state_dir) {
            return Err(IdentityError::Exists(options.state_dir.clone()).into());
        }
        tern_proto::handle::validate_handle(user)?;
        tern_proto::handle::validate_device_name(device_name)?;
        let endpoint = sdk_endpoint(&options)?;
        let mut conn = open(&endpoint, &options).await?;
        let mut identity = Identity::generate(user);
        let registered = match how {
            Enrollment::NewAccount => {
                let frame = conn.register_frame(1, user, device_name, &identity.key)?;
                answer::<auth::Register>(conn.call(&frame).await?.body)?
            }
            Enrollment::LinkDevice => {
                link_until_decided(&endpoint, &options, &mut conn, user, device_name, &identity)
                    .await?
            }
        };
        identity.device = registered.device;
        identity.save(&options.state_dir)?;
        Ok(Client::start(options, identity, endpoint, conn))
    }

    /// Answers a LinkPrompt pushed to this device.
    pub async fn approve_link(&self, link_id: u64, approve: bool) -> Result<(), ClientError> {
        self.request(devices::ApproveLink { link_id, approve })
            .await?;
        Ok(())
    }

    /// Sends any request and returns its typed answer: a refusal is
    /// [`ClientError::Server`] (or [`ClientError::Conflict`] with recovery
    /// state), any other body [`ClientError::Unexpected`].
    pub async fn request<R: Request>(&self, request: R) -> Result<R::Response, ClientError> {
        request_on(&self.shared, request).await
    }

    /// Sends a request that is safe to repeat (the server answers a repeat
    /// with the original outcome, as it does for a send with the same
    /// client message id) and repeats it, unchanged, when its answer is
    /// lost: the connection broke ([`ClientError::Disconnected`]; the retry
    /// goes out once the client has reconnected) or no answer came within
    /// the request timeout ([`ClientError::Timeout`]). At most
    /// [`LOST_ANSWER_ATTEMPTS`] attempts, the n-th retry after a pause of
    /// `reconnect_min * 2^(n-1)` (at most `reconnect_max`); the last
    /// attempt's error is returned. Refusals are never retried.
    pub async fn request_retrying<R: Request + Clone>(
        &self,
        request: R,
    ) -> Result<R::Response, ClientError> {
        let mut delay = self.shared.options.reconnect_min;
        let mut attempt = 1;
        loop {
            match self.request(request.clone()).await {
                Err(ClientError::Disconnected | ClientError::Timeout)
                    if attempt < LOST_ANSWER_ATTEMPTS =>
                {
                    tracing::debug!(attempt, "answer lost; sending the request again");
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(self.shared.options.reconnect_max);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Fault injection for tests: the next answer (a reply to a request,
    /// not a push) whose body satisfies `which` is dropped on arrival as if
    /// lost on the way, in the manner `how` says. The server has then
    /// applied the request; only its answer is gone. Each call arms one
    /// loss; armed losses are matched in the order they were armed.
    pub fn lose_next_answer(&self, which: fn(&Body) -> bool, how: AnswerLoss) {
        lock(&self.shared.losses).push((which, how));
    }

    /// The next server notice: KeysLow, LinkPrompt, DeviceListChanged,
    /// Invited, InvitationAnswered.
    pub async fn next_notice(&self) -> Option<Body> {
        self.notices.lock().await.recv().await
    }

    /// The next incoming message, in seq order per conversation, each once.
    /// `None` after [`Client::close`].
    pub async fn next_message(&self) -> Option<Message> {
        self.messages.lock().await.recv().await
    }

    pub async fn create_conversation(
        &self,
        kind: ConversationKind,
        members: &[&str],
    ) -> Result<ConversationInfo, ClientError> {
        let members = owned(members);
        let request = conversations::CreateConversation { kind, members };
        Ok(self.request(request).await?.into())
    }

    pub async fn add_members(
        &self,
        conversation_id: u64,
        members: &[&str],
    ) -> Result<ConversationInfo, ClientError> {
        let members = owned(members);
        let request = conversations::AddMembers {
            conversation_id,
            members,
        };
        Ok(self.request(request).await?.into())
    }

    pub async fn remove_members(
        &self,
        conversation_id: u64,
        members: &[&str],
    ) -> Result<ConversationInfo, ClientError> {
        let members = owned(members);
        let request = conversations::RemoveMembers {
            conversation_id,
            members,
        };
        Ok(self.request(request).await?.into())
    }

    /// Sends a payload; returns once it is durable on the server.
    pub async fn send(
        &self,
        conversation_id: u64,
        payload: impl Into<Bytes>,
    ) -> Result<SendReceipt, ClientError> {
        self.send_with(conversation_id, payload, SendOptions::default())
            .await
    }

    /// Sends with options. A send whose answer is lost (connection lost, or
    /// no answer in time) is retried with the same id (see
    /// [`Client::request_retrying`]), so it is stored exactly once.
    pub async fn send_with(
        &self,
        conversation_id: u64,
        payload: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<SendReceipt, ClientError> {
        let client_message_id = if options.client_message_id == 0 {
            random_nonzero()
        } else {
            options.client_message_id
        };
        let send = messaging::Send {
            conversation_id,
            client_message_id,
            expires_in_secs: options.expires_in_secs,
            flags: options.flags,
            payload: payload.into(),
        };
        Ok(self.request_retrying(send).await?.into())
    }

    /// Acknowledges everything up to `seq` in a conversation (raises the cursor).
    pub async fn ack(&self, conversation_id: u64, seq: u64) -> Result<(), ClientError> {
        let ack = messaging::Ack {
            conversation_id,
            seq,
        };
        self.request(ack).await?;
        Ok(())
    }

    /// Conversations whose head is past this device's cursor (or all of them).
    pub async fn sync(&self, all: bool) -> Result<Vec<ConversationState>, ClientError> {
        sync(&self.shared, all).await
    }

    /// One page of Sync as the server answers it: conversations with id >
    /// `after`, at most `limit` (0: the server's default, [`MAX_SYNC_PAGE`]).
    pub async fn sync_page(
        &self,
        all: bool,
        after: u64,
        limit: u32,
    ) -> Result<sync::SyncResult, ClientError> {
        request_on(&self.shared, sync::Sync { all, after, limit }).await
    }

    /// Sets who may add this account to groups without an invitation
    /// ([`GroupAdds::Contacts`] by default).
    pub async fn set_privacy(&self, group_adds: GroupAdds) -> Result<(), ClientError> {
        self.request(privacy::SetPrivacy::change(Some(group_adds), None))
            .await?;
        Ok(())
    }

    /// Invites `user` to group `conversation_id` (the caller must be a
    /// member); the user's devices get an `Invited` notice.
    ///
    /// # Errors
    /// `NotFound` (no such group or user), `NotMember`, `Forbidden` (not a
    /// group), `InvalidArgument` (already a member), `RateLimited`.
    pub async fn invite(&self, conversation_id: u64, user: &str) -> Result<(), ClientError> {
        let user = user.to_owned();
        self.request(privacy::Invite {
            conversation_id,
            user,
        })
        .await?;
        Ok(())
    }

    /// This account's pending invitations, oldest first (at most 100).
    pub async fn invitations(&self) -> Result<Vec<privacy::Invitation>, ClientError> {
        Ok(self.request(privacy::ListInvitations).await?.invitations)
    }

    /// Accepts (the group's administrators may then add this account) or
    /// declines a pending invitation; the inviter gets an
    /// `InvitationAnswered` notice.
    ///
    /// # Errors
    /// `NotFound` when no unexpired invitation to that group is pending.
    pub async fn answer_invitation(
        &self,
        conversation_id: u64,
        accept: bool,
    ) -> Result<(), ClientError> {
        let answer = privacy::AnswerInvitation {
            conversation_id,
            accept,
        };
        self.request(answer).await?;
        Ok(())
    }

    /// Blocks `user` for this account (every device): their sends to the
    /// direct conversation with this account are dropped by the server
    /// (they are not told), and they cannot add this account to groups or
    /// invite it. Blocking a blocked user again is a no-op.
    ///
    /// # Errors
    /// `InvalidArgument` (a bad handle, this account), `NotFound` (no such
    /// user), `LimitExceeded` (10,000 users blocked already).
    pub async fn block(&self, user: &str) -> Result<(), ClientError> {
        let user = user.to_owned();
        self.request(safety::Block { user }).await?;
        Ok(())
    }

    /// Unblocks `user`; their later sends are delivered again (what they
    /// sent while blocked is gone). A no-op for a user not blocked.
    ///
    /// # Errors
    /// `InvalidArgument` (a bad handle).
    pub async fn unblock(&self, user: &str) -> Result<(), ClientError> {
        let user = user.to_owned();
        self.request(safety::Unblock { user }).await?;
        Ok(())
    }

    /// The users this account blocked, by handle.
    pub async fn blocked(&self) -> Result<Vec<String>, ClientError> {
        Ok(self.request(safety::ListBlocked).await?.users)
    }

    /// Deletes this account's message `seq` of `conversation_id` for
    /// everyone on the server: its ciphertext is replaced by a tombstone
    /// (flag `TOMBSTONE`, empty payload) at the same seq. Telling the
    /// members (the delete content message) is the caller's. Purging a
    /// purged message again succeeds.
    ///
    /// # Errors
    /// `NotFound` (no such message, or expired), `NotMember`, `NotSender`
    /// (another user sent it and the caller is no group administrator), `PurgeWindowClosed` (older than the server's
    /// `purge_window_secs`, default 48 h), `Forbidden` (an MLS Commit or
    /// Welcome).
    pub async fn purge_message(&self, conversation_id: u64, seq: u64) -> Result<(), ClientError> {
        let purge = safety::PurgeMessage {
            conversation_id,
            seq,
        };
        self.request(purge).await?;
        Ok(())
    }

    /// Sets the disappearing-message timer of `conversation_id` to `secs`
    /// seconds (0 = off): every later message expires at most that long
    /// after it is sent, whatever its sender asks. Members' devices get a
    /// `TimerChanged` notice; `sync` lists each conversation's timer.
    ///
    /// # Errors
    /// `NotFound`, `NotMember`, `InvalidArgument` (longer than the server
    /// keeps messages).
    pub async fn set_timer(&self, conversation_id: u64, secs: u32) -> Result<(), ClientError> {
        let set = settings::SetTimer {
            conversation_id,
            secs,
        };
        self.request(set).await?;
        self.shared.note_timer(conversation_id, secs);
        Ok(())
    }

    /// Whether [`Client::timer_secs`] is complete: a full sync has listed
    /// every conversation's timer since the client started (the one after
    /// connecting may still be under way).
    pub fn timers_known(&self) -> bool {
        self.shared.timers_synced.load(Ordering::Acquire)
    }

    /// The disappearing-message timer of `conversation_id` as this client
    /// last heard it (seconds; 0 = off or not heard of): from `sync`, a
    /// `TimerChanged` notice or this client's own `set_timer`. The secure
    /// layer gives local copies of messages the same expiry.
    pub fn timer_secs(&self, conversation_id: u64) -> u32 {
        lock(&self.shared.timers)
            .get(&conversation_id)
            .copied()
            .unwrap_or(0)
    }

    /// Makes member `user` of group `conversation_id` an administrator
    /// (`admin`) or not; the caller must be one. Returns the group's
    /// administrators after the change; members' devices get an `Admins`
    /// notice.
    ///
    /// # Errors
    /// `Forbidden` (the caller is no administrator, or not a group),
    /// `InvalidArgument` (`user` is not a member, or the last administrator
    /// would step down), `NotFound`, `NotMember`.
    pub async fn set_admin(
        &self,
        conversation_id: u64,
        user: &str,
        admin: bool,
    ) -> Result<Vec<String>, ClientError> {
        let set = settings::SetAdmin {
            conversation_id,
            user: user.to_owned(),
            admin,
        };
        Ok(self.request(set).await?.admins)
    }

    /// Lets every member of group `conversation_id` add members
    /// (`everyone`), or only its administrators (the default); the caller
    /// must be an administrator. Removing others stays with administrators.
    ///
    /// # Errors
    /// `Forbidden` (the caller is no administrator, or not a group),
    /// `NotFound`, `NotMember`.
    pub async fn set_member_adds(
        &self,
        conversation_id: u64,
        everyone: bool,
    ) -> Result<(), ClientError> {
        let set = settings::SetMemberAdds {
            conversation_id,
            everyone,
        };
        self.request(set).await?;
        Ok(())
    }

    /// The administrators of group `conversation_id`, by handle.
    ///
    /// # Errors
    /// `Forbidden` (not a group), `NotFound`, `NotMember`.
    pub async fn admins(&self, conversation_id: u64) -> Result<Vec<String>, ClientError> {
        Ok(self.admin_settings(conversation_id).await?.admins)
    }

    /// The administrators of group `conversation_id` (by handle) and who
    /// may add members (`everyone_adds`: every member; else only
    /// administrators), as `ListAdmins` answers.
    ///
    /// # Errors
    /// `Forbidden` (not a group), `NotFound`, `NotMember`.
    pub async fn admin_settings(
        &self,
        conversation_id: u64,
    ) -> Result<settings::Admins, ClientError> {
        let list = settings::ListAdmins { conversation_id };
        self.request(list).await
    }

    /// One page of a conversation starting at `from_seq`.
    pub async fn history(
        &self,
        conversation_id: u64,
        from_seq: u64,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        history(&self.shared, conversation_id, from_seq, limit).await
    }

    /// Moves the client to a fresh local UDP socket (as a phone does when it
    /// changes network); the connection migrates.
    pub fn rebind(&self) -> std::io::Result<()> {
        let socket = std::net::UdpSocket::bind(unspecified(&self.shared.options.server))?;
        self.shared.endpoint.rebind(socket)
    }

    /// The local address of the client's UDP socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Closes the connection and stops reconnecting.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(live) = self.shared.live.send_replace(None) {
            live.connection
                .close(close::NORMAL.into(), b"client closed");
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(live) = self.shared.live.send_replace(None) {
            live.connection
                .close(close::NORMAL.into(), b"client dropped");
        }
    }
}

fn unspecified(server: &SocketAddr) -> SocketAddr {
    if server.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    }
}

fn random_nonzero() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

fn owned(members: &[&str]) -> Vec<String> {
    members.iter().map(|m| (*m).to_owned()).collect()
}

fn unexpected(body: &Body) -> ClientError {
    let name = format!("{body:?}");
    ClientError::Unexpected(name.chars().take(80).collect())
}

/// The one place an answer becomes a result: refusals become
/// [`ClientError::Server`] or [`ClientError::Conflict`], the body `R` is
/// answered with becomes `R::Response`, and anything else is
/// [`ClientError::Unexpected`].
fn answer<R: Request>(body: Body) -> Result<R::Response, ClientError> {
    match body {
        Body::Error(e) => Err(ClientError::Server {
            code: e.code,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
        }),
        Body::Conflict(c) => Err(ClientError::Conflict(Box::new(c))),
        body => R::Response::try_from(body).map_err(|other| unexpected(&other)),
    }
}

async fn authenticate(
    endpoint: &quinn::Endpoint,
    options: &ClientOptions,
    identity: &Identity,
) -> Result<RawConnection, ClientError> {
    let mut conn = open(endpoint, options).await?;
    let frame = conn.authenticate_frame(1, &identity.user, identity.device, &identity.key)?;
    answer::<auth::Authenticate>(conn.call(&frame).await?.body)?;
    Ok(conn)
}

/// Opens a connection to the configured server within its connect timeout.
async fn open(
    endpoint: &quinn::Endpoint,
    options: &ClientOptions,
) -> Result<RawConnection, ConnectionError> {
    RawConnection::connect_within(
        endpoint,
        options.server,
        &options.server_name,
        options.connect_timeout,
    )
    .await
}

/// How long a new device keeps asking to be linked: a little more than the
/// server's default `link_timeout_secs` (120 s), after which the server
/// answers `Timeout` itself.
pub const LINK_PATIENCE: Duration = Duration::from_secs(130);

/// RequestLink until one of the account's devices decides. The server holds
/// the request as a record, not as this connection: it answers `LinkPending`
/// at the connection's authentication deadline, and the device reconnects
/// after `retry_after_ms` and asks again with the same key (a fresh proof
/// for the new connection), for up to [`LINK_PATIENCE`].
async fn link_until_decided(
    endpoint: &quinn::Endpoint,
    options: &ClientOptions,
    conn: &mut RawConnection,
    user: &str,
    device_name: &str,
    identity: &Identity,
) -> Result<auth::Registered, ClientError> {
    let started = std::time::Instant::now();
    loop {
        let frame = conn.link_frame(1, user, device_name, &identity.key)?;
        match answer::<auth::RequestLink>(conn.call(&frame).await?.body) {
            Err(ClientError::Server {
                code: ErrorCode::LinkPending,
                retry_after_ms,
                ..
            }) if started.elapsed() < LINK_PATIENCE => {
                tokio::time::sleep(Duration::from_millis(retry_after_ms.into())).await;
                *conn = open(endpoint, options).await?;
            }
            other => return other,
        }
    }
}

/// The QUIC endpoint of a client with `options` (datagrams offered or not).
fn sdk_endpoint(options: &ClientOptions) -> Result<quinn::Endpoint, ClientError> {
    let mut endpoint = client_endpoint(unspecified(&options.server), &options.trust)?;
    if !options.datagrams {
        let config =
            super::tls::client_config_with(&options.trust, false).map_err(ConnectionError::from)?;
        endpoint.set_default_client_config(config);
    }
    Ok(endpoint)
}

/// Sends a request over the live connection and returns its typed answer.
async fn request_on<R: Request>(shared: &Shared, request: R) -> Result<R::Response, ClientError> {
    answer::<R>(call(shared, request.into()).await?)
}

/// Sends one request over the live connection and waits for its answer body.
async fn call(shared: &Shared, body: Body) -> Result<Body, ClientError> {
    let timeout = shared.options.request_timeout;
    let live = tokio::time::timeout(timeout, wait_live(shared))
        .await
        .map_err(|_| ClientError::Timeout)??;
    tern_proto::limits::check(&body)?;
    let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
    let frame = Frame::new(id, body).encode();
    let (len, max) = (
        frame.len().saturating_sub(tern_proto::codec::LEN_PREFIX),
        shared.options.max_frame_len,
    );
    if len > max {
        return Err(ClientError::TooLarge { len, max });
    }
    let (tx, rx) = oneshot::channel();
    lock(&live.pending).insert(id, tx);
    if live.out.send(frame).await.is_err() {
        lock(&live.pending).remove(&id);
        return Err(ClientError::Disconnected);
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(frame)) => {
            shared.timeouts.store(0, Ordering::Relaxed);
            Ok(frame.body)
        }
        Ok(Err(_)) => Err(ClientError::Disconnected),
        Err(_) => {
            lock(&live.pending).remove(&id);
            give_up_if_unresponsive(shared, &live);
            Err(ClientError::Timeout)
        }
    }
}

/// Most attempts [`Client::request_retrying`] makes at one request.
pub const LOST_ANSWER_ATTEMPTS: u32 = 5;

/// Requests in a row without an answer after which the connection is
/// taken for dead (a server that crashed and came back without the
/// connection never answers it) and replaced by a fresh one.
const TIMEOUTS_BEFORE_RECONNECT: u64 = 2;

fn give_up_if_unresponsive(shared: &Shared, live: &LiveConnection) {
    let in_a_row = shared.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
    if in_a_row >= TIMEOUTS_BEFORE_RECONNECT {
        shared.timeouts.store(0, Ordering::Relaxed);
        tracing::debug!(in_a_row, "no answers; reconnecting");
        live.connection
            .close(close::NORMAL.into(), b"no answers; reconnecting");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn wait_live(shared: &Shared) -> Result<Arc<LiveConnection>, ClientError> {
    let mut rx = shared.live.subscribe();
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        if let Some(live) = rx.borrow_and_update().clone() {
            return Ok(live);
        }
        if rx.changed().await.is_err() {
            return Err(ClientError::Closed);
        }
    }
}

/// Every page of a Sync: asks for [`MAX_SYNC_PAGE`] conversations at a
/// time, after the last one listed, while the server says there are more.
async fn sync(shared: &Shared, all: bool) -> Result<Vec<ConversationState>, ClientError> {
    let mut out: Vec<ConversationState> = Vec::new();
    let mut after = 0;
    loop {
        let ask = sync::Sync {
            all,
            after,
            limit: MAX_SYNC_PAGE,
        };
        let page = request_on(shared, ask).await?;
        for state in &page.conversations {
            shared.note_timer(state.conversation_id, state.timer_secs);
        }
        out.extend(page.conversations);
        match (page.more, out.last()) {
            (true, Some(last)) if last.conversation_id > after => after = last.conversation_id,
            _ => {
                if all {
                    shared.timers_synced.store(true, Ordering::Release);
                }
                return Ok(out);
            }
        }
    }
}

async fn history(
    shared: &Shared,
    conversation_id: u64,
    from_seq: u64,
    limit: u32,
) -> Result<HistoryPage, ClientError> {
    let history = messaging::History {
        conversation_id,
        from_seq,
        limit,
    };
    Ok(request_on(shared, history).await?.into())
}

/// Keeps a live connection: serves it until it breaks, then reconnects with backoff.
async fn supervise(
    shared: Arc<Shared>,
    first: RawConnection,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut next = Some(first);
    let mut delay = shared.options.reconnect_min;
    while !shared.closed.load(Ordering::SeqCst) {
        let conn = match next.take() {
            Some(conn) => conn,
            None => match authenticate(&shared.endpoint, &shared.options, &shared.identity).await {
                Ok(conn) => {
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    delay = shared.options.reconnect_min;
                    conn
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?delay, "reconnect failed");
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(shared.options.reconnect_max);
                    continue;
                }
            },
        };
        serve(&shared, conn, &events).await;
    }
}

fn jitter(delay: Duration) -> Duration {
    let spread = delay.as_millis() as u64 / 4 + 1;
    delay + Duration::from_millis(rand::random::<u64>() % spread)
}

async fn serve(shared: &Arc<Shared>, conn: RawConnection, events: &mpsc::UnboundedSender<Event>) {
    let (connection, sender, receiver) = conn.split();
    let (out, out_rx) = mpsc::channel(1024);
    let pending: Pending = Arc::default();
    let live = Arc::new(LiveConnection {
        connection: connection.clone(),
        out,
        pending: pending.clone(),
    });
    let writer = tokio::spawn(write_loop(sender, out_rx));
    let datagrams = tokio::spawn(super::typing::read_datagrams(
        connection.clone(),
        events.clone(),
    ));
    shared.live.send_replace(Some(live));
    shared.connections.send_modify(|n| *n += 1);
    let _ = events.send(Event::Connected);
    read_loop(shared, receiver, &pending, events).await;
    shared.live.send_replace(None);
    lock(&pending).clear();
    writer.abort();
    datagrams.abort();
    connection.close(close::NORMAL.into(), b"reconnecting");
}

async fn write_loop(mut sender: FrameSender, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        if sender.chunks(&mut batch).await.is_err() {
            return;
        }
        batch.clear();
    }
}

async fn read_loop(
    shared: &Shared,
    mut receiver: FrameReceiver,
    pending: &Pending,
    events: &mpsc::UnboundedSender<Event>,
) {
    while let Ok(Some(frame)) = receiver.next().await {
        if frame.request_id != 0 {
            match take_loss(shared, &frame.body) {
                Some(AnswerLoss::Silent) => continue,
                Some(AnswerLoss::ConnectionLost) => return,
                None => {}
            }
            if let Some(tx) = lock(pending).remove(&frame.request_id) {
                let _ = tx.send(frame);
            }
            continue;
        }
        match frame.body {
            Body::Deliver(message) => {
                let _ = events.send(Event::Deliver(message));
            }
            Body::Error(e) => {
                tracing::warn!(code = ?e.code, message = %e.message, "server reported an error")
            }
            notice => {
                if let Body::TimerChanged(t) = &notice {
                    shared.note_timer(t.conversation_id, t.secs);
                }
                let _ = events.send(Event::Notice(notice));
            }
        }
    }
}

/// The loss armed for this answer, if any (removed: each loss is used once).
fn take_loss(shared: &Shared, body: &Body) -> Option<AnswerLoss> {
    let mut losses = lock(&shared.losses);
    let at = losses.iter().position(|(which, _)| which(body))?;
    Some(losses.remove(at).1)
}

/// Asks the server again for what this client asked of presence, after a
/// reconnect (subscriptions are per connection, PROTOCOL.md §4.8): this
/// device's state, then the subscriptions, handing each user's entry to the
/// app as a `PresenceChanged` notice. Failures are logged (the connection
/// went again: the next reconnect asks again).
async fn restore_presence(shared: Arc<Shared>, notices: mpsc::UnboundedSender<Body>) {
    let (own, subscriptions) = shared.presence.to_restore();
    if let Some(set) = own {
        if let Err(e) = request_on(&shared, set).await {
            tracing::debug!(error = %e, "setting presence again after a reconnect failed");
        }
    }
    for subscribe in subscriptions {
        match request_on(&shared, subscribe).await {
            Ok(snapshot) => {
                for entry in snapshot.entries {
                    let changed = tern_proto::body::presence::PresenceChanged { entry };
                    let _ = notices.send(Body::PresenceChanged(changed));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "subscribing to presence again after a reconnect failed");
                return;
            }
        }
    }
}

/// Drives the [`OrderedDelivery`] state machine: feeds it connects, pushes, Sync
/// answers and History pages, and carries out what it asks for (hand a
/// message to the app, send Sync, send History). One request at a time;
/// pushes wait in the event channel meanwhile.
async fn order_deliveries(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<Event>,
    out: mpsc::Sender<Message>,
    notices: mpsc::UnboundedSender<Body>,
) {
    let mut ordering = OrderedDelivery::new(shared.identity.user.clone(), shared.identity.device);
    let mut retry = shared.options.reconnect_min;
    loop {
        while let Some(action) = ordering.poll_action() {
            match action {
                Action::Emit(message) => {
                    if out.send(message).await.is_err() {
                        return;
                    }
                }
                Action::Sync => match sync(&shared, true).await {
                    Ok(states) => {
                        retry = shared.options.reconnect_min;
                        ordering.on_sync(&states);
                    }
                    Err(ClientError::Closed) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, ?retry, "sync after connect failed; retrying");
                        ordering.on_sync_failed();
                        tokio::time::sleep(jitter(retry)).await;
                        retry = (retry * 2).min(shared.options.reconnect_max);
                    }
                },
                Action::Fetch(fetch) => {
                    let request = messaging::History {
                        conversation_id: fetch.conversation,
                        from_seq: fetch.from_seq,
                        limit: fetch.limit(),
                    };
                    match request_on(&shared, request).await {
                        Ok(page) => {
                            retry = shared.options.reconnect_min;
                            ordering.on_page(page);
                        }
                        Err(ClientError::Closed) => return,
                        Err(e) => {
                            // Held messages must not wait for the next push:
                            // ask again after a growing pause.
                            tracing::debug!(error = %e, ?fetch, ?retry, "history for a gap failed; retrying");
                            ordering.on_fetch_failed(fetch.conversation);
                            tokio::time::sleep(jitter(retry)).await;
                            retry = (retry * 2).min(shared.options.reconnect_max);
                            ordering.retry_fetch(fetch.conversation);
                        }
                    }
                }
            }
        }
        match events.recv().await {
            None => return,
            Some(Event::Connected) => {
                ordering.on_connected();
                if *shared.connections.borrow() > 1 {
                    tokio::spawn(restore_presence(shared.clone(), notices.clone()));
                }
            }
            Some(Event::Deliver(message)) => ordering.on_deliver(message),
            Some(Event::Notice(body)) => {
                let _ = notices.send(body);
            }
        }
    }
}
