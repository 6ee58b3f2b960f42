//! Reactions, replies, edits and deletes (docs/E2EE.md §3, kinds 2, 3, 5
//! and 6): the app's calls on [`SecureClient`]. Each refers to a message
//! by its seq in the same conversation, is checked against this device's
//! local store first (a typed error, nothing sent, when a rule forbids it),
//! then sent end-to-end encrypted like a text; receivers apply it by the
//! same rules as they store it ([`crate::message_store`]), so a forged or
//! late one changes nothing there.

use super::{SecureClient, SecureError, Sent};
use crate::content::{Content, MAX_EMOJI_BYTES};
use crate::message_store::{
    delete_refusal, edit_refusal, DeleteRefusal, EditRefusal, MessageStoreError, Target,
};
use crate::sdk::ClientError;
use tern_proto::ConversationKind;

/// Why [`SecureClient::react`] or [`SecureClient::remove_reaction`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReactError {
    /// Empty, or not one emoji ([`crate::content::emoji::is_one_emoji`]).
    #[error("a reaction is one emoji, such as 👍 (not text, nor several); to take one back, remove the reaction")]
    NoEmoji,
    #[error("the reaction is {0} bytes long, more than {MAX_EMOJI_BYTES}; react with one emoji")]
    EmojiTooLong(usize),
    #[error("there is no message {seq} in conversation {conversation} on this device; react to a message shown in its history")]
    NoSuchMessage { conversation: u64, seq: u64 },
    #[error("message {seq} was deleted; there is nothing to react to")]
    Deleted { seq: u64 },
    #[error(transparent)]
    Store(#[from] MessageStoreError),
    #[error(transparent)]
    Send(#[from] SecureError),
}

/// Why [`SecureClient::reply`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("there is no message {seq} in conversation {conversation} on this device; reply to a message shown in its history")]
    NoSuchMessage { conversation: u64, seq: u64 },
    #[error("message {seq} was deleted; send a plain message instead")]
    Deleted { seq: u64 },
    #[error(transparent)]
    Store(#[from] MessageStoreError),
    #[error(transparent)]
    Send(#[from] SecureError),
}

/// Why [`SecureClient::edit`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// A rule forbids the edit (nothing was sent).
    #[error("cannot edit message {seq}: {refusal}")]
    Refused { seq: u64, refusal: EditRefusal },
    #[error(transparent)]
    Store(#[from] MessageStoreError),
    #[error(transparent)]
    Send(#[from] SecureError),
}

/// Why [`SecureClient::delete_for_me`] or
/// [`SecureClient::delete_for_everyone`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// A rule forbids the delete (nothing was sent or erased).
    #[error("cannot delete message {seq}: {refusal}")]
    Refused { seq: u64, refusal: DeleteRefusal },
    #[error("message {seq} is already deleted on this device")]
    AlreadyDeleted { seq: u64 },
    #[error(transparent)]
    Store(#[from] MessageStoreError),
    /// The delete for everyone was not sent; this device's copy is kept.
    #[error(transparent)]
    Send(#[from] SecureError),
    /// The delete reached the members (their devices erase the message),
    /// but the server refused to erase its encrypted copy (older than its
    /// purge window, say); that copy expires as usual.
    #[error("message {seq} is deleted on every member's device, but the server kept its encrypted copy until it expires: {source}")]
    NotPurged { seq: u64, source: ClientError },
    /// As a group administrator deleting another member's message: the
    /// server refused to purge it (the caller is no administrator any
    /// more, or the purge window closed), so nothing was sent and every
    /// copy stays.
    #[error("the server refused to delete message {seq} for everyone, so no member's copy was touched: {source}")]
    PurgeRefused { seq: u64, source: ClientError },
}

impl SecureClient {
    /// Sets this account's reaction to message `seq` of `conversation`
    /// (replacing its earlier one): one emoji
    /// ([`crate::content::emoji::is_one_emoji`], else
    /// [`ReactError::NoEmoji`]), at most [`MAX_EMOJI_BYTES`] bytes, to a
    /// message stored here and not deleted.
    pub async fn react(
        &self,
        conversation: u64,
        seq: u64,
        emoji: &str,
    ) -> Result<Sent, ReactError> {
        if emoji.is_empty() {
            return Err(ReactError::NoEmoji);
        }
        if emoji.len() > MAX_EMOJI_BYTES {
            return Err(ReactError::EmojiTooLong(emoji.len()));
        }
        if !crate::content::emoji::is_one_emoji(emoji) {
            return Err(ReactError::NoEmoji);
        }
        self.send_reaction(conversation, seq, emoji).await
    }

    /// Takes back this account's reaction to message `seq`.
    pub async fn remove_reaction(&self, conversation: u64, seq: u64) -> Result<Sent, ReactError> {
        self.send_reaction(conversation, seq, "").await
    }

    async fn send_reaction(
        &self,
        conversation: u64,
        seq: u64,
        emoji: &str,
    ) -> Result<Sent, ReactError> {
        match self.inner.messages.target(conversation, seq)? {
            None => return Err(ReactError::NoSuchMessage { conversation, seq }),
            Some(t) if !t.message.content.is_visible() => {
                return Err(ReactError::NoSuchMessage { conversation, seq })
            }
            Some(t) if t.deleted => return Err(ReactError::Deleted { seq }),
            Some(_) => {}
        }
        let content = Content::Reaction {
            target_seq: seq,
            emoji: emoji.to_owned(),
        };
        Ok(self.send(conversation, &content).await?)
    }

    /// Sends `text` as a reply to message `seq`, quoting the start of its
    /// text (at most [`crate::content::MAX_QUOTE_BYTES`]).
    pub async fn reply(&self, conversation: u64, seq: u64, text: &str) -> Result<Sent, ReplyError> {
        let target = self.inner.messages.target(conversation, seq)?;
        let quoted = match &target {
            Some(Target { deleted: true, .. }) => return Err(ReplyError::Deleted { seq }),
            Some(t) if t.message.content.is_visible() => t.message.content.body().unwrap_or(""),
            _ => return Err(ReplyError::NoSuchMessage { conversation, seq }),
        };
        let content = Content::reply(seq, quoted, text);
        Ok(self.send(conversation, &content).await?)
    }

    /// Replaces the text of this account's message `seq` with `text`.
    /// Only the sender may, within 24 hours of the message's server time
    /// (by this device's clock; receivers check the edit's server time),
    /// and only texts and replies not deleted ([`EditError::Refused`]).
    pub async fn edit(&self, conversation: u64, seq: u64, text: &str) -> Result<Sent, EditError> {
        let target = self.inner.messages.target(conversation, seq)?;
        if let Some(refusal) = edit_refusal(target.as_ref(), self.user(), now_ms()) {
            return Err(EditError::Refused { seq, refusal });
        }
        let content = Content::Edit {
            target_seq: seq,
            body: text.to_owned(),
        };
        Ok(self.send(conversation, &content).await?)
    }

    /// Deletes message `seq` on this device only: its text is erased and
    /// a tombstone stays in the history ("message deleted").
    pub fn delete_for_me(&self, conversation: u64, seq: u64) -> Result<(), DeleteError> {
        match self.inner.messages.target(conversation, seq)? {
            Some(t) if t.deleted => Err(DeleteError::AlreadyDeleted { seq }),
            Some(t) if t.message.content.is_visible() => {
                self.inner.messages.delete_for_me(conversation, seq)?;
                Ok(())
            }
            Some(_) => Err(DeleteError::Refused {
                seq,
                refusal: DeleteRefusal::NotAMessage,
            }),
            None => Err(DeleteError::Refused {
                seq,
                refusal: DeleteRefusal::NotFound,
            }),
        }
    }

    /// Deletes message `seq` for everyone: sends a delete (kind 6) that
    /// every member's device applies (leaving a tombstone), applies it
    /// here, then has the server replace its ciphertext with a tombstone
    /// ([`crate::Client::purge_message`]; refused:
    /// [`DeleteError::NotPurged`]). Only its sender may, or in a group an
    /// administrator (issue 10, PROTOCOL.md §4.5; asked of the server,
    /// which checks the purge again); otherwise [`DeleteError::Refused`].
    pub async fn delete_for_everyone(
        &self,
        conversation: u64,
        seq: u64,
    ) -> Result<Sent, DeleteError> {
        let target = self.inner.messages.target(conversation, seq)?;
        if target.as_ref().is_some_and(|t| t.deleted) {
            return Err(DeleteError::AlreadyDeleted { seq });
        }
        match delete_refusal(target.as_ref(), self.user()) {
            None => self.delete_own(conversation, seq).await,
            Some(DeleteRefusal::NotSender) if self.moderates(conversation).await? => {
                self.delete_as_admin(conversation, seq).await
            }
            Some(refusal) => Err(DeleteError::Refused { seq, refusal }),
        }
    }

    /// Deletes this account's own message `seq`: the members' devices
    /// apply the delete on their own (the store's rule), then the server
    /// purges its copy (refused: [`DeleteError::NotPurged`], the members'
    /// copies are gone already).
    async fn delete_own(&self, conversation: u64, seq: u64) -> Result<Sent, DeleteError> {
        let sent = self
            .send(conversation, &Content::Delete { target_seq: seq })
            .await?;
        self.inner
            .client
            .purge_message(conversation, seq)
            .await
            .map_err(|source| DeleteError::NotPurged { seq, source })?;
        Ok(sent)
    }

    /// Deletes another member's message `seq` as a group administrator:
    /// the server purges its copy first (it checks that this account
    /// administers the group now; refused: [`DeleteError::PurgeRefused`]
    /// and nothing is sent), then the delete goes out. Receivers apply it when
    /// the server holds a tombstone at `seq` ([`apply_moderated_delete`]),
    /// so a device that reads it after this account was demoted still
    /// does.
    async fn delete_as_admin(&self, conversation: u64, seq: u64) -> Result<Sent, DeleteError> {
        self.inner
            .client
            .purge_message(conversation, seq)
            .await
            .map_err(|source| DeleteError::PurgeRefused { seq, source })?;
        // The store applies only a sender's own delete (message_store).
        self.inner.messages.delete_for_me(conversation, seq)?;
        Ok(self
            .send(conversation, &Content::Delete { target_seq: seq })
            .await?)
    }
}

impl SecureClient {
    /// Whether this account administers `conversation`, a group (asked of
    /// the server: `ListAdmins`, PROTOCOL.md §4.7).
    async fn moderates(&self, conversation: u64) -> Result<bool, SecureError> {
        moderator(
            &self.inner.client,
            &self.inner.kind(conversation).await?,
            conversation,
            self.user(),
        )
        .await
    }
}

/// Whether `user` administers group `conversation` (`kind`), as the
/// server answers now; false for other kinds.
pub(super) async fn moderator(
    client: &crate::Client,
    kind: &ConversationKind,
    conversation: u64,
    user: &str,
) -> Result<bool, SecureError> {
    if *kind != ConversationKind::Group {
        return Ok(false);
    }
    Ok(client.admins(conversation).await?.iter().any(|a| a == user))
}

/// Applies a received delete for everyone (`d`) of another user's message
/// in a group when the server purged that message (Signal and WhatsApp let
/// group admins delete others' messages; an administrator's SDK has the
/// server purge its copy before it sends the delete, and the server checks
/// who administers the group then, PROTOCOL.md §4.5). Asking the server
/// whether it holds a tombstone at the target's seq, rather than who
/// administers the group now, keeps the answer the same on a device that
/// reads the delete after its sender was demoted. The store applied a
/// sender's own delete already ([`delete_refusal`]); a delete from a
/// member whose target the server still holds stays ignored. Failures are
/// logged: the message stays shown, as if the delete had not come.
pub(super) async fn apply_moderated_delete(
    client: &crate::Client,
    messages: &crate::message_store::MessageStore,
    d: &super::Decrypted,
) {
    let Content::Delete { target_seq } = d.content else {
        return;
    };
    let conversation = d.conversation_id;
    let target = match messages.target(conversation, target_seq) {
        Ok(Some(t)) if !t.deleted => t,
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(%error, "reading the target of a delete for everyone");
            return;
        }
    };
    if delete_refusal(Some(&target), &d.sender_user) != Some(DeleteRefusal::NotSender) {
        return;
    }
    match purged_on_server(client, conversation, target_seq).await {
        Ok(true) => {
            if let Err(error) = messages.delete_for_me(conversation, target_seq) {
                tracing::warn!(%error, "applying an administrator's delete for everyone");
            }
        }
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, "could not ask the server whether it purged the target of a delete for everyone; the message stays shown");
        }
    }
}

/// Whether the server holds a tombstone (a purged message) at `seq` of
/// `conversation` (one History page of one message, PROTOCOL.md §4.4).
async fn purged_on_server(
    client: &crate::Client,
    conversation: u64,
    seq: u64,
) -> Result<bool, ClientError> {
    let page = client.history(conversation, seq, 1).await?;
    Ok(page
        .messages
        .iter()
        .any(|m| m.seq == seq && m.flags & tern_proto::flags::TOMBSTONE != 0))
}

/// This device's clock, in ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
