//! Message requests on this device (issue 10, "who may reach me"; docs/E2EE.md
//! §3.6): a direct conversation started by someone who is not this
//! account's contact, as the server marks it in Sync
//! (`ConversationState::request_from`; the server learns nothing new: it
//! created the conversation and keeps the contacts).
//!
//! * **Kept apart.** [`SecureClient::requests`] lists them, with the sender
//!   and the first message this device has from them; an app keeps them
//!   out of its inbox. Requests from users this account blocks, and those
//!   deleted here with nothing newer since, are shown nowhere
//!   ([`SecureClient::conversations`] leaves them out too).
//! * **No receipts while pending.** The SDK sends no delivered receipt for a
//!   request: the ones due are held here, per conversation, instead of sent
//!   ([`Inner::flush_receipts`] asks [`Inner::is_request`]), and
//!   [`SecureClient::mark_read`] moves the read position but sends no read
//!   receipt. The requester cannot tell whether, or when, it was seen.
//! * **Accept** ([`SecureClient::accept_request`]): the server makes the
//!   requester a contact (ending the request for every device of this
//!   account), then the held delivered receipts and a read receipt up to the
//!   read position go out.
//! * **Delete** ([`SecureClient::delete_request`]): the local copy is
//!   forgotten and the device's cursor moved past it, optionally after
//!   blocking the requester. Direct conversations have no leave on the
//!   server (their membership never changes, so a pair keeps one
//!   conversation), so as in Signal a later message from the requester
//!   shows the request again; blocking makes the server drop those.
//!
//! The request mark is cached per conversation: "not a request" for good
//! (contacts are never taken back), "a request" for [`REQUEST_RECHECK`],
//! after which Sync is asked again, so an acceptance on another device (or
//! a reply, which also makes the requester a contact) reaches this one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{lock, Inner, SecureClient, SecureError};
use crate::content::{Content, ReceiptKind};
use crate::message_store::MessageStoreError;
use crate::sdk::ClientError;
use tern_proto::{ConversationKind, ConversationState};

/// How long a conversation known to be a request is trusted to be one
/// before Sync is asked again.
pub const REQUEST_RECHECK: Duration = Duration::from_secs(10);

/// One message request, as [`SecureClient::requests`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRequest {
    pub conversation_id: u64,
    /// The user who started the conversation.
    pub from: String,
    /// The conversation's latest seq on the server.
    pub head_seq: u64,
    /// The text of the first message this device has from them (`None`
    /// before one arrived here, or when it is not text).
    pub preview: Option<String>,
}

/// Why a request call failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The server could not be asked, or refused.
    #[error(transparent)]
    Secure(#[from] SecureError),
    /// The local message store could not be read or written.
    #[error(transparent)]
    Store(#[from] MessageStoreError),
    /// The conversation is not a pending message request of this account
    /// (accepted already, deleted here, from a blocked user, or not a
    /// direct conversation from a stranger); `tern requests` lists the
    /// pending ones. To stop a contact reaching this account, block them.
    #[error(
        "conversation {0} is not a pending message request (accepted, deleted, from a blocked user, or not from a stranger); SecureClient::requests lists them, and blocking stops a contact reaching you"
    )]
    NotARequest(u64),
}

impl From<ClientError> for RequestError {
    fn from(e: ClientError) -> RequestError {
        RequestError::Secure(e.into())
    }
}

/// What this device knows of requests, and the receipts it holds back.
#[derive(Debug, Default)]
pub(super) struct Requests {
    state: std::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `request_from` per conversation as Sync last said (`None`: none).
    known: HashMap<u64, Option<String>>,
    /// Delivered receipts held back per request: the highest seq.
    held: HashMap<u64, u64>,
    /// When Sync was last asked.
    refreshed: Option<Instant>,
}

impl Requests {
    fn hold(&self, conversation: u64, seq: u64) {
        let mut state = lock(&self.state);
        let at = state.held.entry(conversation).or_insert(seq);
        *at = (*at).max(seq);
    }

    /// Marks `conversation` no request any more; the receipts it held.
    fn settle(&self, conversation: u64) -> Option<u64> {
        let mut state = lock(&self.state);
        state.known.insert(conversation, None);
        state.held.remove(&conversation)
    }

    fn cached(&self, conversation: u64) -> Option<bool> {
        let state = lock(&self.state);
        let fresh = state
            .refreshed
            .is_some_and(|at| at.elapsed() < REQUEST_RECHECK);
        match state.known.get(&conversation) {
            Some(None) => Some(false),
            Some(Some(_)) if fresh => Some(true),
            _ => None,
        }
    }
}

impl Inner {
    /// Whether `conversation` is a pending message request of this account
    /// (Sync is asked when the cache cannot tell).
    pub(super) async fn is_request(&self, conversation: u64) -> Result<bool, SecureError> {
        let kind = lock(&self.kinds).get(&conversation).copied();
        if kind.is_some_and(|k| k != ConversationKind::Direct) {
            return Ok(false);
        }
        if let Some(known) = self.requests.cached(conversation) {
            return Ok(known);
        }
        self.refresh_requests().await?;
        Ok(self.requests.cached(conversation).unwrap_or(false))
    }

    /// Asks Sync for every conversation and records each one's kind and
    /// request mark.
    async fn refresh_requests(&self) -> Result<Vec<ConversationState>, SecureError> {
        let states = self.client.sync(true).await?;
        let mut kinds = lock(&self.kinds);
        let mut state = lock(&self.requests.state);
        for s in &states {
            kinds.insert(s.conversation_id, s.kind);
            state
                .known
                .insert(s.conversation_id, s.request_from.clone());
        }
        state.refreshed = Some(Instant::now());
        Ok(states)
    }

    /// Holds a delivered receipt of a request instead of sending it.
    pub(super) fn hold_receipt(&self, conversation: u64, seq: u64) {
        self.requests.hold(conversation, seq);
    }
}

impl SecureClient {
    /// This account's conversations as Sync lists them, leaving out the
    /// message requests it does not show ([`SecureClient::requests`]'s
    /// rule: deleted here with nothing newer since, or from a user this
    /// account blocks). Pending requests it shows keep `request_from`.
    ///
    /// # Errors
    /// [`RequestError::Secure`] when the server cannot be asked;
    /// [`RequestError::Store`] when the local store cannot be read.
    pub async fn conversations(&self) -> Result<Vec<ConversationState>, RequestError> {
        let states = self.inner.refresh_requests().await?;
        let blocked = self.inner.client.blocked().await?;
        let mut out = Vec::with_capacity(states.len());
        for state in states {
            if !self.hides(&state, &blocked)? {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// Whether `state` is a message request this device does not show: from
    /// a user this account blocks (the server drops their later messages;
    /// unblocking shows it again), or deleted here with nothing newer.
    fn hides(
        &self,
        state: &ConversationState,
        blocked: &[String],
    ) -> Result<bool, MessageStoreError> {
        let Some(from) = &state.request_from else {
            return Ok(false);
        };
        if blocked.contains(from) {
            return Ok(true);
        }
        let forgotten = self.inner.messages.forgotten_up_to(state.conversation_id)?;
        Ok(forgotten > 0 && state.head_seq <= forgotten)
    }

    /// This account's pending message requests, in conversation id order,
    /// leaving out those deleted here that got nothing newer since and
    /// those from users this account blocks.
    pub async fn requests(&self) -> Result<Vec<MessageRequest>, RequestError> {
        let states = self.conversations().await?;
        let store = &self.inner.messages;
        let mut out = Vec::new();
        for state in states {
            let Some(from) = state.request_from else {
                continue;
            };
            let first = store.first_from_others(state.conversation_id, self.user())?;
            out.push(MessageRequest {
                conversation_id: state.conversation_id,
                from,
                head_seq: state.head_seq,
                preview: first.and_then(|m| m.content.body().map(str::to_owned)),
            });
        }
        Ok(out)
    }

    /// Accepts a message request: the server makes its sender this
    /// account's contact (no longer a request on any device), then the
    /// delivered receipts held meanwhile and, with read receipts on, a read
    /// receipt up to the read position are sent.
    ///
    /// # Errors
    /// [`RequestError::NotARequest`] when Sync lists the conversation as
    /// no pending request (one this account started, a group, one
    /// accepted already, say: the receipts it held are sent then, as it
    /// is no request), or when this device does not show it (deleted here
    /// with nothing newer since, or from a user this account blocks, as
    /// [`SecureClient::requests`]); [`RequestError::Secure`] when the server cannot be
    /// asked, or refuses.
    pub async fn accept_request(&self, conversation: u64) -> Result<(), RequestError> {
        let states = self.inner.refresh_requests().await?;
        let Some(state) = states.iter().find(|s| s.conversation_id == conversation) else {
            return Err(RequestError::NotARequest(conversation));
        };
        if state.request_from.is_none() {
            if let Some(seq) = self.inner.requests.settle(conversation) {
                self.inner.receipts.delivered(conversation, seq);
                self.inner.flush_receipts().await;
            }
            return Err(RequestError::NotARequest(conversation));
        }
        let blocked = self.inner.client.blocked().await?;
        if self.hides(state, &blocked)? {
            return Err(RequestError::NotARequest(conversation));
        }
        self.inner.client.accept_request(conversation).await?;
        if let Some(seq) = self.inner.requests.settle(conversation) {
            self.inner.receipts.delivered(conversation, seq);
        }
        self.inner.flush_receipts().await;
        let store = &self.inner.messages;
        let (_, read) = store.receipt_positions(conversation, self.user())?;
        if read > 0 && store.read_receipts()? {
            let receipt = Content::Receipt {
                receipt: ReceiptKind::Read,
                up_to_seq: read,
            };
            self.inner.send_content(conversation, &receipt, 0).await?;
        }
        Ok(())
    }

    /// Deletes a message request: blocks its sender first when `block`
    /// (their later messages are then dropped by the server), forgets the
    /// conversation on this device and moves this device's cursor to its
    /// head. Returns the sender.
    ///
    /// # Errors
    /// [`RequestError::NotARequest`] when the conversation is no pending
    /// request; [`RequestError::Secure`] when the server cannot be asked.
    pub async fn delete_request(
        &self,
        conversation: u64,
        block: bool,
    ) -> Result<String, RequestError> {
        let states = self.inner.refresh_requests().await?;
        let found = states
            .into_iter()
            .find(|s| s.conversation_id == conversation);
        let Some((from, head)) = found.and_then(|s| Some((s.request_from?, s.head_seq))) else {
            return Err(RequestError::NotARequest(conversation));
        };
        if block {
            self.inner.client.block(&from).await?;
        }
        self.inner
            .messages
            .forget_conversation(conversation, head)?;
        lock(&self.inner.requests.state).held.remove(&conversation);
        if head > 0 {
            self.inner.client.ack(conversation, head).await?;
        }
        Ok(from)
    }
}
