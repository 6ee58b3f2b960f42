//! The tern client SDK for native apps: [`TernClient`] wraps
//! `tern_client::secure::SecureClient` (end-to-end encryption with Olm for
//! 1:1 conversations and MLS for groups, the local SQLite message store)
//! behind a UniFFI interface, from which `generate.sh` produces Swift,
//! Kotlin and Python bindings.
//!
//! # Threading
//!
//! Every method **blocks** the calling thread until the SDK is done: each
//! [`TernClient`] owns a multi-thread tokio runtime (two workers) and runs
//! each call with `Runtime::block_on`. The SDK's background work (the
//! connection, reconnects, key upkeep) runs on those workers between calls
//! as well. The methods may be called from any thread, and from several at
//! once: an app typically runs [`TernClient::next_event`] in a loop on a
//! background thread (or a Kotlin `Dispatchers.IO` coroutine, a Swift
//! `Task.detached`, a Python `threading.Thread`) while the UI thread's
//! handlers send. Blocking calls were chosen over UniFFI's async support
//! because they behave the same in all three languages, need no executor
//! integration on the foreign side, and keep the SDK on the tokio runtime
//! it is written for; a foreign async wrapper is a one-liner in each.
//!
//! # Delivery
//!
//! [`TernClient::next_event`] decrypts in order and writes each message to
//! the local store before returning it; it then acknowledges the message to
//! the server itself, so the app never acknowledges anything. A message that
//! could not be decrypted is returned (as [`Event::Undecryptable`]) and
//! acknowledged too: nothing is dropped in silence.
//!
//! # Where the calls live
//!
//! This file: enrolment, conversations, sending text, events, history and
//! search. `messaging`: reactions, replies, edits, deletes, read marks,
//! timers and the history view. `groups`: administrators, invitations,
//! name/topic/avatar. `safety`: blocking, privacy settings, message
//! requests. `realtime`: presence and typing. `message`: the message
//! records; `error`: [`TernError`]; `setup`: server settings.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern_client::secure::{SecureClient, SecureEvent};
use tern_client::state_dir::StateDir;
use tokio::runtime::Runtime;

mod error;
mod groups;
mod media;
mod message;
mod messaging;
mod realtime;
mod safety;
mod setup;

pub use error::{Refusal, TernError};
pub use groups::{AdminSettings, GroupInfo, Invitation};
pub use media::{FileDetails, TransferProgress};
use message::stored;
pub use message::{DeliveryState, Message, MessageContent, MessageView, Reaction, RecipientState};
pub use realtime::{OwnPresence, PresenceEntry, PresenceState, PresenceVisibility};
pub use safety::{DirectStarts, GroupAdds, MessageRequest, Privacy};
use setup::{load_settings, new_settings, options, runtime, ServerFile, SERVER_FILE};

uniffi::setup_scaffolding!();

/// What the app hears from [`TernClient::next_event`].
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Event {
    /// A decrypted message (already in the local store and acknowledged).
    Message { message: Message },
    /// This device joined a group (it was added by a member).
    Joined { conversation_id: u64 },
    /// A group's membership changed; `epoch` is its MLS epoch now.
    GroupChanged { conversation_id: u64, epoch: u64 },
    /// This device had missed group changes the server no longer keeps and
    /// rejoined the group at `epoch`; messages from before cannot be read.
    Rejoined { conversation_id: u64, epoch: u64 },
    /// This device was removed from a group.
    Removed { conversation_id: u64 },
    /// `inviter` invites this account to a group.
    Invited {
        conversation_id: u64,
        inviter: String,
    },
    /// `user` answered this account's invitation to a group.
    InvitationAnswered {
        conversation_id: u64,
        user: String,
        accepted: bool,
    },
    /// A new device asks to join this account; answer with
    /// [`TernClient::approve_link`].
    LinkPrompt { link_id: u64, device_name: String },
    /// A message this device could not decrypt, with why (acknowledged, so
    /// it is not delivered again).
    Undecryptable {
        conversation_id: u64,
        seq: u64,
        reason: String,
    },
    /// A message was decrypted but could not be written to the local store
    /// (a full disk, say). It was not acknowledged and the client has
    /// closed itself; once the store can be written, a new client (from
    /// [`TernClient::open`]) gets the message again.
    NotStored {
        conversation_id: u64,
        seq: u64,
        reason: String,
    },
    /// A user this client subscribed to ([`TernClient::subscribe_presence`])
    /// changed presence; the latest event wins. After a reconnect the SDK
    /// subscribes again by itself and reports each user's current entry
    /// this way.
    PresenceChanged { entry: PresenceEntry },
    /// Another user's device started or stopped typing in a conversation.
    /// Signals can be lost: show it until 10 seconds after the last `true`
    /// (or until a `false`). This account's own devices are not reported.
    Typing {
        conversation_id: u64,
        user: String,
        device: u32,
        typing: bool,
    },
    /// `user` set a conversation's disappearing-message timer to `secs`
    /// seconds (0: off).
    TimerChanged {
        conversation_id: u64,
        secs: u32,
        user: String,
    },
}

/// One end-to-end-encrypting device of a tern account. See the module docs
/// for threading and delivery.
#[derive(uniffi::Object)]
pub struct TernClient {
    client: SecureClient,
    closed: AtomicBool,
    /// Declared last: dropped after the client, so the client's tasks are
    /// stopped by the runtime's shutdown, not left behind.
    runtime: Runtime,
}

impl std::fmt::Debug for TernClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TernClient")
            .field("user", &self.client.user())
            .field("device", &self.client.device())
            .finish_non_exhaustive()
    }
}

#[uniffi::export]
impl TernClient {
    /// Creates the account `user` with this device (named `device_name`,
    /// shown to the account's other devices) on the server at `server`
    /// (`HOST:PORT`), trusting the certificate whose SHA-256 `fingerprint`
    /// (64 hex digits) `tern serve` printed. The device's keys, messages and
    /// the server settings are kept in `state_dir` (created if missing; it
    /// must not hold an identity yet).
    #[uniffi::constructor]
    pub fn register(
        server: String,
        fingerprint: String,
        state_dir: String,
        user: String,
        device_name: String,
    ) -> Result<Arc<TernClient>, TernError> {
        let enrollment = Enrollment::NewAccount;
        TernClient::enroll(
            enrollment,
            server,
            fingerprint,
            state_dir,
            user,
            device_name,
        )
    }

    /// Links this new device to the existing account `user`; blocks until
    /// one of the account's devices approves it (an [`Event::LinkPrompt`]
    /// there, or `tern listen` and `tern approve`). Arguments as for
    /// [`TernClient::register`].
    #[uniffi::constructor]
    pub fn link(
        server: String,
        fingerprint: String,
        state_dir: String,
        user: String,
        device_name: String,
    ) -> Result<Arc<TernClient>, TernError> {
        let enrollment = Enrollment::LinkDevice;
        TernClient::enroll(
            enrollment,
            server,
            fingerprint,
            state_dir,
            user,
            device_name,
        )
    }

    /// Connects the device kept in `state_dir` (registered or linked before,
    /// here or with the `tern` CLI) to the server remembered there. Fails
    /// with [`TernError::StateInUse`] while another client has it open.
    #[uniffi::constructor]
    pub fn open(state_dir: String) -> Result<Arc<TernClient>, TernError> {
        let state = Path::new(&state_dir);
        let settings = load_settings(state)?;
        let options = options(&settings, state)?;
        let runtime = runtime()?;
        let client = runtime.block_on(SecureClient::connect(options))?;
        Ok(Arc::new(TernClient::new(client, runtime)))
    }

    /// This account's handle.
    pub fn user(&self) -> String {
        self.client.user().to_owned()
    }

    /// This device's number in its account.
    pub fn device_id(&self) -> u32 {
        self.client.device()
    }

    /// The direct conversation with `user` (the same pair always gets the
    /// same conversation; created on first use).
    pub fn create_direct(&self, user: String) -> Result<u64, TernError> {
        self.open_client()?;
        Ok(self.runtime.block_on(self.client.direct(&user))?)
    }

    /// This account's note-to-self conversation (its devices only).
    pub fn note_to_self(&self) -> Result<u64, TernError> {
        self.open_client()?;
        Ok(self.runtime.block_on(self.client.note_to_self())?)
    }

    /// Creates an MLS group with `members` (every device of each) and
    /// returns its conversation id. Fails before any group exists if a
    /// member is unknown or has no KeyPackages (never connected).
    pub fn create_group(&self, members: Vec<String>) -> Result<u64, TernError> {
        self.open_client()?;
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        Ok(self.runtime.block_on(self.client.create_group(&members))?)
    }

    /// Adds users (all their devices) to a group; returns its new epoch.
    pub fn add_members(&self, group: u64, users: Vec<String>) -> Result<u64, TernError> {
        self.open_client()?;
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        Ok(self
            .runtime
            .block_on(self.client.add_members(group, &users))?)
    }

    /// Removes users (all their devices) from a group; returns its new epoch.
    pub fn remove_members(&self, group: u64, users: Vec<String>) -> Result<u64, TernError> {
        self.open_client()?;
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        Ok(self
            .runtime
            .block_on(self.client.remove_members(group, &users))?)
    }

    /// Leaves a group: the server stops delivering it to this account.
    pub fn leave(&self, group: u64) -> Result<(), TernError> {
        self.open_client()?;
        Ok(self.runtime.block_on(self.client.leave(group))?)
    }

    /// Encrypts `text` and sends it to a conversation; returns the message's
    /// seq once the server has stored it durably. The message is in the
    /// local store (history, search) from then on.
    pub fn send_text(&self, conversation_id: u64, text: String) -> Result<u64, TernError> {
        self.open_client()?;
        let sent = self
            .runtime
            .block_on(self.client.send_text(conversation_id, &text))?;
        Ok(sent.receipt.seq)
    }

    /// The next event, decrypted, in order; `None` when nothing arrived
    /// within `timeout_ms` milliseconds. Messages (and messages that could
    /// not be decrypted) are in the local store and acknowledged when
    /// returned. Fails with [`TernError::Closed`] once the client is closed.
    pub fn next_event(&self, timeout_ms: u64) -> Result<Option<Event>, TernError> {
        self.open_client()?;
        let wait = Duration::from_millis(timeout_ms);
        self.runtime.block_on(async {
            let event = match tokio::time::timeout(wait, self.client.next_event()).await {
                Err(_elapsed) => return Ok(None),
                Ok(None) => return Err(closed()),
                Ok(Some(event)) => event,
            };
            let handled = match &event {
                SecureEvent::Message(m) => Some((m.conversation_id, m.seq)),
                SecureEvent::Undecryptable {
                    conversation_id,
                    seq,
                    ..
                } => Some((*conversation_id, *seq)),
                _ => None,
            };
            if let Some((conversation, seq)) = handled {
                // Stored before it was returned: safe to acknowledge. Should
                // the ack be lost, the server delivers the message again and
                // the SDK recognises it from the store and acknowledges it
                // then, without handing it out twice.
                if let Err(e) = self.client.transport().ack(conversation, seq).await {
                    tracing::debug!(error = %e, conversation, seq, "ack not sent; retried on redelivery");
                }
            }
            Ok(Some(self.event(event)))
        })
    }

    /// The last `limit` messages of a conversation from the local store,
    /// oldest first (no server round trip).
    pub fn history(&self, conversation_id: u64, limit: u32) -> Result<Vec<Message>, TernError> {
        let found = self.client.messages().history(conversation_id, limit)?;
        Ok(found.into_iter().map(stored).collect())
    }

    /// The latest `limit` text messages, in any conversation, that contain
    /// every word of `query` (whole words, any case), oldest first, from the
    /// local store.
    pub fn search(&self, query: String, limit: u32) -> Result<Vec<Message>, TernError> {
        let found = self.client.messages().search(&query, limit)?;
        Ok(found.into_iter().map(stored).collect())
    }

    /// Answers a link request ([`Event::LinkPrompt`]) from a new device of
    /// this account.
    pub fn approve_link(&self, link_id: u64, approve: bool) -> Result<(), TernError> {
        self.open_client()?;
        Ok(self
            .runtime
            .block_on(self.client.approve_link(link_id, approve))?)
    }

    /// Accepts or declines an invitation to a group ([`Event::Invited`]).
    pub fn answer_invitation(&self, conversation_id: u64, accept: bool) -> Result<(), TernError> {
        self.open_client()?;
        Ok(self.runtime.block_on(
            self.client
                .transport()
                .answer_invitation(conversation_id, accept),
        )?)
    }

    /// Closes the connection and releases the state directory (another
    /// client may open it then). Calls after this fail with
    /// [`TernError::Closed`]; closing twice does nothing. Dropping the object
    /// closes it too.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.runtime.block_on(self.client.close());
        }
    }
}

/// How [`TernClient::enroll`] has the server accept the new device key.
enum Enrollment {
    NewAccount,
    LinkDevice,
}

impl TernClient {
    /// Registers or links a device (the two constructors' shared work),
    /// then remembers the server in `state_dir` as the CLI does.
    fn enroll(
        how: Enrollment,
        server: String,
        fingerprint: String,
        state_dir: String,
        user: String,
        device_name: String,
    ) -> Result<Arc<TernClient>, TernError> {
        let settings = new_settings(server, fingerprint);
        let options = options(&settings, Path::new(&state_dir))?;
        let runtime = runtime()?;
        let client = runtime.block_on(async {
            match how {
                Enrollment::NewAccount => {
                    SecureClient::register(options, &user, &device_name).await
                }
                Enrollment::LinkDevice => SecureClient::link(options, &user, &device_name).await,
            }
        })?;
        let client = TernClient::new(client, runtime);
        client.save_settings(&settings, &state_dir)?;
        Ok(Arc::new(client))
    }

    fn new(client: SecureClient, runtime: Runtime) -> TernClient {
        TernClient {
            client,
            closed: AtomicBool::new(false),
            runtime,
        }
    }

    /// Runs one SDK call on the client's runtime, blocking this thread
    /// until it is done; `Err(Closed)` without running it once
    /// [`TernClient::close`] was called.
    fn run<T, E: Into<TernError>>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, TernError> {
        self.open_client()?;
        self.runtime.block_on(call).map_err(Into::into)
    }

    /// `Err(Closed)` once [`TernClient::close`] was called.
    fn open_client(&self) -> Result<(), TernError> {
        match self.closed.load(Ordering::SeqCst) {
            true => Err(closed()),
            false => Ok(()),
        }
    }

    /// Remembers the server settings in the state directory (after the
    /// identity was created there); closes the client if that fails.
    fn save_settings(&self, settings: &ServerFile, state_dir: &str) -> Result<(), TernError> {
        let saved = toml::to_string(settings)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                StateDir::new(state_dir)
                    .write(SERVER_FILE, text.as_bytes())
                    .map_err(|e| e.to_string())
            });
        saved.map_err(|e| {
            self.close();
            TernError::Identity {
                message: format!("the device was created but its server settings could not be saved ({e}); open() cannot find the server until they are"),
            }
        })
    }

    fn event(&self, event: SecureEvent) -> Event {
        match event {
            SecureEvent::Message(m) => Event::Message {
                message: message::decrypted(m, (self.client.user(), self.client.device())),
            },
            SecureEvent::Joined { conversation_id } => Event::Joined { conversation_id },
            SecureEvent::GroupChanged {
                conversation_id,
                epoch,
            } => Event::GroupChanged {
                conversation_id,
                epoch,
            },
            SecureEvent::Rejoined {
                conversation_id,
                epoch,
            } => Event::Rejoined {
                conversation_id,
                epoch,
            },
            SecureEvent::Removed { conversation_id } => Event::Removed { conversation_id },
            SecureEvent::Invited {
                conversation_id,
                inviter,
            } => Event::Invited {
                conversation_id,
                inviter,
            },
            SecureEvent::InvitationAnswered {
                conversation_id,
                user,
                accepted,
            } => Event::InvitationAnswered {
                conversation_id,
                user,
                accepted,
            },
            SecureEvent::LinkPrompt {
                link_id,
                device_name,
            } => Event::LinkPrompt {
                link_id,
                device_name,
            },
            SecureEvent::Undecryptable {
                conversation_id,
                seq,
                reason,
            } => Event::Undecryptable {
                conversation_id,
                seq,
                reason,
            },
            SecureEvent::NotStored {
                conversation_id,
                seq,
                reason,
            } => {
                // The SDK has closed the client already.
                self.closed.store(true, Ordering::SeqCst);
                Event::NotStored {
                    conversation_id,
                    seq,
                    reason,
                }
            }
            SecureEvent::PresenceChanged(entry) => Event::PresenceChanged {
                entry: realtime::entry(entry),
            },
            SecureEvent::Typing(t) => Event::Typing {
                conversation_id: t.conversation_id,
                user: t.user,
                device: t.device,
                typing: t.typing,
            },
            SecureEvent::TimerChanged {
                conversation_id,
                secs,
                user,
            } => Event::TimerChanged {
                conversation_id,
                secs,
                user,
            },
        }
    }
}

impl Drop for TernClient {
    fn drop(&mut self) {
        self.close();
    }
}

fn closed() -> TernError {
    TernError::Closed {
        message: "the client was closed; open the state directory again with TernClient.open"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_settings_says_to_register_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_string_lossy().into_owned();
        let e = TernClient::open(path).expect_err("nothing registered");
        assert!(matches!(e, TernError::Identity { .. }), "{e:?}");
        assert!(e.to_string().contains("register or link"), "{e}");
    }

    #[test]
    fn a_bad_fingerprint_is_refused_before_connecting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_string_lossy().into_owned();
        let e = TernClient::register(
            "127.0.0.1:1".into(),
            "not hex".into(),
            path,
            "alice".into(),
            "phone".into(),
        )
        .expect_err("bad fingerprint");
        assert!(matches!(e, TernError::InvalidArgument { .. }), "{e:?}");
    }
}
