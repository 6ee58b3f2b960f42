//! The message records the bindings hand out: [`Message`] (an event's or a
//! history's message, with its typed [`MessageContent`]) and
//! [`MessageView`] (a message as a chat screen shows it: latest text,
//! deletion, edit, reactions and, for this account's messages, how far each
//! recipient got), built from the SDK's `Decrypted`, `StoredMessage` and
//! `MessageView` (docs/E2EE.md §3 defines the content kinds).

use tern_client::content::{Content, ReceiptKind};
use tern_client::message_store::{self, Delivery, StoredMessage};
use tern_client::secure::Decrypted;

/// A message: one the device decrypted or sent, or one from the local store.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// The conversation it belongs to.
    pub conversation_id: u64,
    /// Its place in the conversation (unique there, increasing).
    pub seq: u64,
    /// The sender's handle.
    pub sender_user: String,
    /// Which of the sender's devices sent it.
    pub sender_device: u32,
    /// When the server stored it, in milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// The text of a text message or a reply; `None` for other kinds
    /// (reactions, edits, deletes, group info, one this build does not
    /// understand, an unreadable one: see `content`).
    pub text: Option<String>,
    /// The content kind tag (0 = unreadable, 1 = text, 2 = reaction,
    /// 3 = edit, 4 = receipt, 5 = reply, 6 = delete, 7 = group info;
    /// docs/E2EE.md lists them).
    pub content_kind: u8,
    /// What the message says, typed.
    pub content: MessageContent,
    /// For a message this device could not decrypt or decode (kept in the
    /// local store so history shows it; [`crate::Event::Undecryptable`]
    /// announced it), why.
    pub unreadable_reason: Option<String>,
    /// Sent by this device.
    pub own: bool,
}

/// What a message says (docs/E2EE.md §3). Reactions, edits, deletes and
/// group info arrive as [`crate::Event::Message`] too; the SDK has applied
/// them to the local store by then, so [`crate::TernClient::history_view`]
/// already shows their effect.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum MessageContent {
    /// A plain text message.
    Text { body: String },
    /// A text answering message `reply_to_seq` of the same conversation,
    /// with the start of its text (`quote`, at most 256 bytes).
    Reply {
        reply_to_seq: u64,
        quote: String,
        body: String,
    },
    /// The sender's reaction to message `target_seq`, replacing their
    /// earlier one; an empty `emoji` takes it back.
    Reaction { target_seq: u64, emoji: String },
    /// The sender's new text for their message `target_seq`.
    Edit { target_seq: u64, body: String },
    /// The sender deleted their message `target_seq` for everyone.
    Delete { target_seq: u64 },
    /// A change to a group's name, topic or avatar: the fields it sets
    /// (`None`: unchanged; each field's latest value wins).
    GroupInfo {
        name: Option<String>,
        topic: Option<String>,
        avatar: Option<Vec<u8>>,
    },
    /// Every message up to `up_to_seq` reached the sender (`read`: was
    /// shown to them). The SDK applies receipts itself; an app never gets
    /// one as an event.
    Receipt { read: bool, up_to_seq: u64 },
    /// A file (photo, video, voice message, document): fetch it with
    /// [`crate::TernClient::fetch_file`]. `voice` when its type is audio.
    /// `thumbnail` is the sender's preview (possibly empty); dimensions and
    /// duration are 0 when the sender did not give them.
    Attachment {
        file_name: String,
        content_type: String,
        size: u64,
        thumbnail: Vec<u8>,
        width: u32,
        height: u32,
        duration_ms: u32,
        voice: bool,
    },
    /// This device could not decrypt or decode it (see `unreadable_reason`).
    Unreadable { reason: String },
    /// A kind this build does not understand (sent by a newer client).
    Unknown { kind: u8 },
}

/// How far one of this account's messages got with one recipient user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum DeliveryState {
    /// The server stored it.
    Sent,
    /// One of the recipient's devices stored it (a delivered receipt).
    Delivered,
    /// The recipient read it (a read receipt; never shown while this
    /// device's own read receipts are off, as in WhatsApp).
    Read,
}

/// One user's reaction to a message.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Reaction {
    pub user: String,
    pub emoji: String,
}

/// How far one of this account's messages got with one recipient.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct RecipientState {
    pub user: String,
    pub state: DeliveryState,
}

/// A message as a chat screen shows it ([`crate::TernClient::history_view`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct MessageView {
    /// The message, with its latest text (empty once deleted).
    pub message: Message,
    /// Deleted (for this device or for everyone): show "message deleted".
    pub deleted: bool,
    /// When the edit shown was stored (ms since the Unix epoch), if edited.
    pub edited_at_ms: Option<u64>,
    /// The reactions, one per user, by user.
    pub reactions: Vec<Reaction>,
    /// For this account's messages: each recipient's state, by user
    /// (empty for others' messages).
    pub recipients: Vec<RecipientState>,
    /// The least advanced of `recipients` (the ticks to show); `None` for
    /// others' messages.
    pub overall: Option<DeliveryState>,
    /// When this device deletes its copy (ms since the Unix epoch; 0 = kept),
    /// from the conversation's disappearing-message timer.
    pub expires_at_ms: u64,
}

/// A message of the local store.
pub(crate) fn stored(m: StoredMessage) -> Message {
    message(
        m.conversation_id,
        m.seq,
        m.sender_user,
        m.sender_device,
        m.server_time_ms,
        m.content,
        m.own,
    )
}

/// A message the SDK decrypted (or read back from the store) for `me`.
pub(crate) fn decrypted(m: Decrypted, me: (&str, u32)) -> Message {
    let own = m.sender_user == me.0 && m.sender_device == me.1;
    message(
        m.conversation_id,
        m.seq,
        m.sender_user,
        m.sender_device,
        m.server_time_ms,
        m.content,
        own,
    )
}

/// A history entry of the SDK as the bindings show it.
pub(crate) fn view(v: message_store::MessageView) -> MessageView {
    let overall = v.overall().map(delivery);
    let expires_at_ms = v.message.expires_at_ms;
    MessageView {
        message: stored(v.message),
        deleted: v.deleted,
        edited_at_ms: v.edited_at_ms,
        reactions: v
            .reactions
            .into_iter()
            .map(|(user, emoji)| Reaction { user, emoji })
            .collect(),
        recipients: v
            .receipts
            .into_iter()
            .map(|(user, d)| RecipientState {
                user,
                state: delivery(d),
            })
            .collect(),
        overall,
        expires_at_ms,
    }
}

fn delivery(d: Delivery) -> DeliveryState {
    match d {
        Delivery::Sent => DeliveryState::Sent,
        Delivery::Delivered => DeliveryState::Delivered,
        Delivery::Read => DeliveryState::Read,
    }
}

fn message(
    conversation_id: u64,
    seq: u64,
    sender_user: String,
    sender_device: u32,
    server_time_ms: u64,
    content: Content,
    own: bool,
) -> Message {
    let content_kind = content.kind();
    let unreadable_reason = content.unreadable_reason();
    let text = content.body().map(str::to_owned);
    Message {
        conversation_id,
        seq,
        sender_user,
        sender_device,
        server_time_ms,
        text,
        content_kind,
        content: typed(content),
        unreadable_reason,
        own,
    }
}

fn typed(content: Content) -> MessageContent {
    if let Some(reason) = content.unreadable_reason() {
        return MessageContent::Unreadable { reason };
    }
    let kind = content.kind();
    match content {
        Content::Text { body } => MessageContent::Text { body },
        Content::Reply {
            target_seq,
            quote,
            body,
        } => MessageContent::Reply {
            reply_to_seq: target_seq,
            quote,
            body,
        },
        Content::Reaction { target_seq, emoji } => MessageContent::Reaction { target_seq, emoji },
        Content::Edit { target_seq, body } => MessageContent::Edit { target_seq, body },
        Content::Delete { target_seq } => MessageContent::Delete { target_seq },
        Content::GroupInfo(info) => MessageContent::GroupInfo {
            name: info.name,
            topic: info.topic,
            avatar: info.avatar,
        },
        Content::Receipt { receipt, up_to_seq } => MessageContent::Receipt {
            read: receipt == ReceiptKind::Read,
            up_to_seq,
        },
        Content::Attachment(p) => MessageContent::Attachment {
            file_name: p.safe_file_name(),
            voice: p.is_voice(),
            content_type: p.content_type,
            size: p.size,
            thumbnail: p.thumbnail,
            width: p.width,
            height: p.height,
            duration_ms: p.duration_ms,
        },
        // Unknown, and kinds added to the SDK after this binding.
        _ => MessageContent::Unknown { kind },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_text_and_kind() {
        let m = message(7, 3, "bob".into(), 1, 5, Content::text("hi"), false);
        assert_eq!(m.text.as_deref(), Some("hi"));
        assert_eq!(m.content_kind, tern_client::content::kind::TEXT);
        let unknown = Content::Unknown {
            kind: 9,
            payload: vec![1],
        };
        let m = message(7, 4, "bob".into(), 1, 5, unknown, true);
        assert_eq!((m.text, m.content_kind, m.own), (None, 9, true));
        assert_eq!(m.content, MessageContent::Unknown { kind: 9 });
        assert_eq!(m.unreadable_reason, None);
        let m = message(7, 5, "bob".into(), 1, 5, Content::unreadable("bad"), false);
        assert_eq!(m.text, None);
        assert_eq!(m.unreadable_reason.as_deref(), Some("bad"));
        let reason = "bad".to_owned();
        assert_eq!(m.content, MessageContent::Unreadable { reason });
    }

    #[test]
    fn replies_reactions_and_deletes_are_typed() {
        let reply = Content::reply(3, "the question", "the answer");
        let m = message(7, 4, "bob".into(), 1, 5, reply, false);
        assert_eq!(m.text.as_deref(), Some("the answer"));
        let quote = "the question".to_owned();
        let body = "the answer".to_owned();
        let expected = MessageContent::Reply {
            reply_to_seq: 3,
            quote,
            body,
        };
        assert_eq!(m.content, expected);
        let emoji = "👍".to_owned();
        let reaction = Content::Reaction {
            target_seq: 3,
            emoji: emoji.clone(),
        };
        let m = message(7, 5, "bob".into(), 1, 5, reaction, false);
        assert_eq!(m.text, None);
        let expected = MessageContent::Reaction {
            target_seq: 3,
            emoji,
        };
        assert_eq!(m.content, expected);
        let delete = Content::Delete { target_seq: 3 };
        let m = message(7, 6, "bob".into(), 1, 5, delete, true);
        assert_eq!(m.content, MessageContent::Delete { target_seq: 3 });
    }

    #[test]
    fn views_carry_reactions_recipients_and_the_least_advanced_state() {
        let message = StoredMessage {
            conversation_id: 7,
            seq: 3,
            sender_user: "ann".into(),
            sender_device: 1,
            server_time_ms: 1_000,
            content: Content::text("hi"),
            own: true,
            expires_at_ms: 3_601_000,
        };
        let v = view(message_store::MessageView {
            message,
            deleted: false,
            edited_at_ms: Some(2_000),
            reactions: vec![("ben".into(), "👍".into())],
            receipts: vec![
                ("ben".into(), Delivery::Read),
                ("cy".into(), Delivery::Sent),
            ],
        });
        let reactions = vec![Reaction {
            user: "ben".into(),
            emoji: "👍".into(),
        }];
        assert_eq!(v.reactions, reactions);
        let states: Vec<_> = v.recipients.iter().map(|r| r.state).collect();
        assert_eq!(states, [DeliveryState::Read, DeliveryState::Sent]);
        assert_eq!(v.overall, Some(DeliveryState::Sent));
        assert_eq!((v.edited_at_ms, v.expires_at_ms), (Some(2_000), 3_601_000));
        assert_eq!(v.message.text.as_deref(), Some("hi"));
    }
}
