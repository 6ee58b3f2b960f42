//! Delivered and read receipts (docs/E2EE.md §3, kind 4): what the SDK
//! sends, and the app's side of it ([`SecureClient::mark_read`], the
//! read-receipts setting).
//!
//! * **Delivered**: when a visible message (text, reply, or a kind this
//!   build cannot read) from another user is stored on this device, its
//!   conversation's delivered position is queued ([`Pending`]); a task
//!   sends one receipt per conversation for the highest seq queued once no
//!   message was stored for [`RECEIPT_DELAY`], or [`RECEIPT_MAX_DELAY`]
//!   after the first one queued, so a burst of messages (a catch-up after
//!   being offline, a busy group) is answered by one receipt or a few, not
//!   one each. [`SecureClient::close`] sends what is still queued first,
//!   and a client that starts sends those a process left unsent (its own
//!   delivered position, raised by the receipts it sends, is below the
//!   newest stored message of someone else).
//! * **Read**: [`SecureClient::mark_read`] raises this account's read
//!   position in the conversation and, with read receipts on, sends one
//!   receipt covering every seq up to it. The sender's other devices get it
//!   too (1:1 fan-out reaches them, §8.1; MLS groups hold every device) and
//!   raise their read position: the read position syncs across devices.
//! * Never a receipt of a receipt, reaction, edit or delete: only visible
//!   messages are acknowledged ([`Content::is_visible`]), and the SDK
//!   hands no receipt to the app (it acknowledges them itself).
//! * Read receipts off (persisted in the local store): no read receipts are
//!   sent, and others' read states are shown as delivered (as in
//!   WhatsApp). The read position then stays on this device.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::{lock, Inner, SecureClient, SecureError};
use crate::content::{Content, ReceiptKind};
use crate::message_store::MessageStoreError;
use crate::sdk::ClientError;
use tern_proto::ConversationKind;

/// The quiet time (no message stored) after which the SDK sends the
/// delivered receipts queued meanwhile (one per conversation).
pub const RECEIPT_DELAY: Duration = Duration::from_millis(250);

/// The longest a queued delivered receipt waits while messages keep coming.
pub const RECEIPT_MAX_DELAY: Duration = Duration::from_secs(2);

/// The longest [`SecureClient::close`] waits for the queued receipts to go.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(3);

/// Delivered receipts waiting to be sent: the highest seq per conversation.
#[derive(Debug, Default)]
pub struct Pending {
    up_to: std::sync::Mutex<HashMap<u64, u64>>,
    wake: Notify,
}

impl Pending {
    /// Queues a delivered receipt for `conversation` up to `seq`.
    pub(super) fn delivered(&self, conversation: u64, seq: u64) {
        let mut up_to = lock(&self.up_to);
        let at = up_to.entry(conversation).or_insert(seq);
        *at = (*at).max(seq);
        drop(up_to);
        self.wake.notify_one();
    }

    fn take(&self) -> HashMap<u64, u64> {
        std::mem::take(&mut *lock(&self.up_to))
    }

    /// Puts back a receipt that could not be sent (tried again at the
    /// next stored message or at close).
    fn put_back(&self, conversation: u64, seq: u64) {
        let mut up_to = lock(&self.up_to);
        let at = up_to.entry(conversation).or_insert(seq);
        *at = (*at).max(seq);
    }
}

/// Why [`SecureClient::mark_read`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MarkReadError {
    /// The local store could not be read or written.
    #[error(transparent)]
    Store(#[from] MessageStoreError),
    /// The read position moved here but the receipt could not be sent;
    /// marking the conversation read again sends it.
    #[error("the conversation is marked read here, but the read receipt was not sent ({0}); mark it read again to retry")]
    Send(SecureError),
}

impl SecureClient {
    /// Marks conversation `conversation` read up to `seq` (a seq of the
    /// server's; 0 or one at or below the current read position changes
    /// nothing). With read receipts on, sends one read receipt covering
    /// every message up to `seq` to the conversation's members and this
    /// account's other devices (not in a note-to-self conversation, nor in
    /// a pending message request: accepting it sends the receipt then).
    /// A `seq` past the latest message stored here is taken as that
    /// message's (a read position never runs ahead of what was shown, so a
    /// later message never arrives as already read). Returns whether the
    /// read position moved.
    pub async fn mark_read(&self, conversation: u64, seq: u64) -> Result<bool, MarkReadError> {
        let store = &self.inner.messages;
        let seq = seq.min(store.latest_seq(conversation)?.unwrap_or(0));
        let moved = store.record_receipt(conversation, self.user(), ReceiptKind::Read, seq)?;
        if !moved || !store.read_receipts()? {
            return Ok(moved);
        }
        let kind = self
            .inner
            .kind(conversation)
            .await
            .map_err(MarkReadError::Send)?;
        if kind == ConversationKind::NoteToSelf {
            return Ok(moved);
        }
        // A message request gets no read receipt until it is accepted
        // (which sends one up to the read position then).
        let request = self.inner.is_request(conversation).await;
        if request.map_err(MarkReadError::Send)? {
            return Ok(moved);
        }
        let receipt = Content::Receipt {
            receipt: ReceiptKind::Read,
            up_to_seq: seq,
        };
        self.inner
            .send_content(conversation, &receipt, 0)
            .await
            .map_err(MarkReadError::Send)?;
        Ok(moved)
    }

    /// This account's read position in a conversation (0: nothing read),
    /// as this device knows it (its own marks and its other devices' read
    /// receipts).
    pub fn read_position(&self, conversation: u64) -> Result<u64, MessageStoreError> {
        let (_, read) = self
            .inner
            .messages
            .receipt_positions(conversation, self.user())?;
        Ok(read)
    }

    /// Whether read receipts are on (the default).
    pub fn read_receipts(&self) -> Result<bool, MessageStoreError> {
        self.inner.messages.read_receipts()
    }

    /// Turns read receipts on or off for this device (persisted): off, it
    /// sends none and shows no one's read state.
    pub fn set_read_receipts(&self, on: bool) -> Result<(), MessageStoreError> {
        self.inner.messages.set_read_receipts(on)
    }
}

impl Inner {
    /// Sends every queued delivered receipt, one per conversation; one that
    /// fails is queued again, and one of a message request is held until
    /// the request is accepted (see [`super::requests`]).
    pub(super) async fn flush_receipts(&self) {
        for (conversation, seq) in self.receipts.take() {
            match self.is_request(conversation).await {
                Ok(false) => {}
                Ok(true) => {
                    self.hold_receipt(conversation, seq);
                    continue;
                }
                Err(error) => {
                    tracing::debug!(conversation, %error, "cannot tell whether a conversation is a message request; its receipt waits");
                    self.receipts.put_back(conversation, seq);
                    continue;
                }
            }
            let receipt = Content::Receipt {
                receipt: ReceiptKind::Delivered,
                up_to_seq: seq,
            };
            match self.send_content(conversation, &receipt, 0).await {
                Ok(_) => {}
                Err(SecureError::Client(ClientError::Disconnected | ClientError::Timeout)) => {
                    tracing::debug!(
                        conversation,
                        "a delivered receipt was not sent; tried again later"
                    );
                    self.receipts.put_back(conversation, seq);
                }
                // Not a member any more, say: the receipt is dropped (the
                // next client on this device owes it again if it still can).
                Err(error) => {
                    tracing::debug!(conversation, %error, "a delivered receipt was refused; dropped");
                }
            }
        }
    }

    /// Queues the delivered receipts this device still owes (its messages
    /// stored by a process that ended before sending them), at start.
    pub(super) fn queue_owed_receipts(&self) {
        match self.messages.undelivered(&self.identity.user) {
            Ok(owed) => {
                for (conversation, seq) in owed {
                    self.receipts.delivered(conversation, seq);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot find the delivered receipts still owed"),
        }
    }

    /// Sends the queued receipts before the client closes, for at most
    /// [`CLOSE_FLUSH_LIMIT`].
    pub(super) async fn flush_receipts_before_close(&self) {
        if self.client.is_closed() {
            return;
        }
        let flushed = tokio::time::timeout(CLOSE_FLUSH_LIMIT, self.flush_receipts()).await;
        if flushed.is_err() {
            tracing::debug!("closing before every delivered receipt was sent");
        }
    }
}

/// Sends the queued delivered receipts once no message was queued for
/// [`RECEIPT_DELAY`], or [`RECEIPT_MAX_DELAY`] after the first; ends with
/// the client.
pub(super) async fn send_loop(inner: Weak<Inner>, pending: Arc<Pending>) {
    loop {
        pending.wake.notified().await;
        let last_call = tokio::time::Instant::now() + RECEIPT_MAX_DELAY;
        loop {
            let quiet = tokio::time::sleep(RECEIPT_DELAY);
            tokio::select! {
                () = quiet => break,
                () = pending.wake.notified() => {}
                () = tokio::time::sleep_until(last_call) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.client.is_closed() {
            return;
        }
        inner.flush_receipts().await;
    }
}
