//! What an app does to messages beyond sending text (docs/E2EE.md §3):
//! reactions, replies, edits, deletes (for this device, for everyone),
//! read marks and the read-receipt setting, disappearing-message timers,
//! and the history as a chat screen shows it ([`crate::MessageView`]).
//!
//! Every call that refers to a message takes its `seq` in the same
//! conversation and checks it against this device's local store first: a
//! rule that forbids it is a typed [`TernError`] and nothing is sent. Each
//! change is sent end-to-end encrypted like a text and returns its own seq.

use crate::message::{view, MessageView};
use crate::{TernClient, TernError};

#[uniffi::export]
impl TernClient {
    /// Sets this account's reaction to message `seq` (replacing its
    /// earlier one): one emoji, at most 64 bytes. Returns the reaction's
    /// seq.
    ///
    /// # Errors
    /// `InvalidArgument` (empty or too long), `NoSuchMessage`,
    /// `MessageDeleted`, or the send's.
    pub fn react(&self, conversation_id: u64, seq: u64, emoji: String) -> Result<u64, TernError> {
        let sent = self.run(self.client.react(conversation_id, seq, &emoji))?;
        Ok(sent.receipt.seq)
    }

    /// Takes back this account's reaction to message `seq`; returns the
    /// seq of the removal.
    ///
    /// # Errors
    /// `NoSuchMessage`, `MessageDeleted`, or the send's.
    pub fn remove_reaction(&self, conversation_id: u64, seq: u64) -> Result<u64, TernError> {
        let sent = self.run(self.client.remove_reaction(conversation_id, seq))?;
        Ok(sent.receipt.seq)
    }

    /// Sends `text` as a reply to message `seq`, quoting the start of its
    /// text (at most 256 bytes); returns the reply's seq.
    ///
    /// # Errors
    /// `NoSuchMessage`, `MessageDeleted`, or the send's.
    pub fn reply(&self, conversation_id: u64, seq: u64, text: String) -> Result<u64, TernError> {
        let sent = self.run(self.client.reply(conversation_id, seq, &text))?;
        Ok(sent.receipt.seq)
    }

    /// Replaces the text of this account's message `seq` with `text`
    /// (every member's device shows the new text, marked edited); returns
    /// the edit's seq. Only the sender may, within 24 hours, and only texts
    /// and replies.
    ///
    /// # Errors
    /// `Refused` (`NotSender`, `TooLate`, `NotText`), `NoSuchMessage`,
    /// `MessageDeleted`, or the send's.
    pub fn edit(&self, conversation_id: u64, seq: u64, text: String) -> Result<u64, TernError> {
        let sent = self.run(self.client.edit(conversation_id, seq, &text))?;
        Ok(sent.receipt.seq)
    }

    /// Deletes message `seq` on this device only: its text is erased and
    /// the history shows it deleted. Nothing is sent.
    ///
    /// # Errors
    /// `NoSuchMessage`, `MessageDeleted` (already), `Store`.
    pub fn delete_for_me(&self, conversation_id: u64, seq: u64) -> Result<(), TernError> {
        self.open_client()?;
        Ok(self.client.delete_for_me(conversation_id, seq)?)
    }

    /// Deletes this account's message `seq` for everyone: every member's
    /// device erases it (showing it deleted), and the server replaces its
    /// encrypted copy with a tombstone. Returns the delete's seq.
    ///
    /// # Errors
    /// `Refused` (`NotSender`), `NoSuchMessage`, `MessageDeleted`,
    /// `NotPurged` (one's own message: the members' copies are gone, the
    /// server's expires as usual), the server's refusal (`NotSender`,
    /// `PurgeWindowClosed`: a group administrator deleting another
    /// member's message; nothing was sent), or the send's.
    pub fn delete_for_everyone(&self, conversation_id: u64, seq: u64) -> Result<u64, TernError> {
        let sent = self.run(self.client.delete_for_everyone(conversation_id, seq))?;
        Ok(sent.receipt.seq)
    }

    /// Marks the conversation read up to `seq` and, with read receipts on,
    /// tells its members and this account's other devices (not for a
    /// pending message request: accepting it sends the receipt). Returns
    /// whether the read position moved (a seq at or below it changes
    /// nothing).
    ///
    /// # Errors
    /// `ReceiptNotSent` (marked here; mark again to retry), `Store`.
    pub fn mark_read(&self, conversation_id: u64, seq: u64) -> Result<bool, TernError> {
        self.run(self.client.mark_read(conversation_id, seq))
    }

    /// This account's read position in a conversation (0: nothing read),
    /// from this device's marks and its other devices' read receipts.
    pub fn read_position(&self, conversation_id: u64) -> Result<u64, TernError> {
        self.open_client()?;
        Ok(self.client.read_position(conversation_id)?)
    }

    /// Whether this device sends read receipts (on by default).
    pub fn read_receipts(&self) -> Result<bool, TernError> {
        self.open_client()?;
        Ok(self.client.read_receipts()?)
    }

    /// Turns read receipts on or off for this device (kept across
    /// restarts). Off, it sends none and shows no one's read state (as in
    /// WhatsApp and Signal); delivered receipts still go.
    pub fn set_read_receipts(&self, on: bool) -> Result<(), TernError> {
        self.open_client()?;
        Ok(self.client.set_read_receipts(on)?)
    }

    /// Sets the conversation's disappearing-message timer to `secs`
    /// seconds (0 = off): every later message, from any member, is deleted
    /// on the server and on every device at most that long after it was
    /// sent. Members' devices learn it at once.
    ///
    /// # Errors
    /// `Server` with `NotFound`, `NotMember`, or `InvalidArgument` (longer
    /// than the server keeps messages).
    pub fn set_timer(&self, conversation_id: u64, secs: u32) -> Result<(), TernError> {
        self.run(self.client.transport().set_timer(conversation_id, secs))
    }

    /// The conversation's disappearing-message timer as this device last
    /// heard it (seconds; 0 = off, or not heard of yet).
    pub fn timer_secs(&self, conversation_id: u64) -> Result<u32, TernError> {
        self.open_client()?;
        Ok(self.client.transport().timer_secs(conversation_id))
    }

    /// The last `limit` messages of a conversation as a chat screen shows
    /// them, oldest first, from the local store (no server round trip):
    /// latest text, deleted or not, edit time, reactions, and for this
    /// account's messages each recipient's state. Reactions, edits and
    /// receipts are not listed on their own.
    ///
    /// # Errors
    /// `InvalidArgument` (a limit of 0), `Store`.
    pub fn history_view(
        &self,
        conversation_id: u64,
        limit: u32,
    ) -> Result<Vec<MessageView>, TernError> {
        let messages = self.client.messages();
        let found = messages.view(conversation_id, limit, self.client.user())?;
        Ok(found.into_iter().map(view).collect())
    }
}
