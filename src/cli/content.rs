//! The message-content commands: `react`, `reply`, `edit`, `delete`,
//! `read`, `receipts` and `group-info`, and how `history` shows what they did
//! (reactions, edits, replies, deletions and, for this account's messages,
//! sent/delivered/read). Each command is a [`ContentOp`] inside
//! [`Op::Content`], so a running `tern listen` performs it for another
//! invocation like every other command ([`super::forward`]).

use serde::{Deserialize, Serialize};
use tern_client::content::GroupInfoUpdate;
use tern_client::message_store::{Delivery, MessageStore, MessageView};
use tern_client::secure::SecureClient;

use super::chat::{content_shown, shown};
use super::ops::{place, utc_time, Op, Printed};
use super::{Command, Connection};

#[derive(clap::Args, Debug)]
pub struct ReactArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// The message's seq (shown by `tern history`).
    seq: u64,
    /// One emoji; replaces your earlier reaction to the message.
    #[arg(required_unless_present = "remove")]
    emoji: Option<String>,
    /// Take back your reaction instead.
    #[arg(long, conflicts_with = "emoji")]
    remove: bool,
}

#[derive(clap::Args, Debug)]
pub struct TextArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// The message's seq (shown by `tern history`).
    seq: u64,
    /// The text.
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    text: String,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// The message's seq (shown by `tern history`).
    seq: u64,
    /// Delete the message on every member's devices and the server, not only
    /// on this one: your own message, or as a group administrator anyone's
    /// (within the server's purge window, 48 h by default).
    #[arg(long)]
    everyone: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// Mark read up to this seq [default: the latest message on this device].
    seq: Option<u64>,
}

/// `tern receipts on|off`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Switch {
    On,
    Off,
}

#[derive(clap::Args, Debug)]
pub struct ReceiptsArgs {
    #[command(flatten)]
    conn: Connection,
    /// Send read receipts and see others' (on, the default), or neither
    /// (off); left out: show the current setting.
    #[arg(value_enum)]
    setting: Option<Switch>,
}

#[derive(clap::Args, Debug)]
pub struct GroupInfoArgs {
    #[command(flatten)]
    conn: Connection,
    /// Group id.
    conversation: u64,
    /// Set the group's name (members see it; the server cannot read it).
    #[arg(long)]
    name: Option<String>,
    /// Set the group's topic.
    #[arg(long)]
    topic: Option<String>,
}

/// One content command's own arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentOp {
    /// `tern react CONV SEQ EMOJI` (`emoji: None`: `--remove`).
    React {
        conversation: u64,
        seq: u64,
        emoji: Option<String>,
    },
    /// `tern reply CONV SEQ TEXT`
    Reply {
        conversation: u64,
        seq: u64,
        text: String,
    },
    /// `tern edit CONV SEQ TEXT`
    Edit {
        conversation: u64,
        seq: u64,
        text: String,
    },
    /// `tern delete CONV SEQ [--everyone]`
    Delete {
        conversation: u64,
        seq: u64,
        everyone: bool,
    },
    /// `tern read CONV [SEQ]`
    Read { conversation: u64, seq: Option<u64> },
    /// `tern receipts [on|off]` (`on: None`: show the setting)
    Receipts { on: Option<bool> },
    /// `tern group-info CONV [--name N] [--topic T]` (neither: show).
    GroupInfo {
        conversation: u64,
        name: Option<String>,
        topic: Option<String>,
    },
}

/// The connection and operation of a content command; `None` for others.
pub fn op_of(command: Command) -> Option<(Connection, ContentOp)> {
    let parsed = match command {
        Command::React(a) => (
            a.conn,
            ContentOp::React {
                conversation: a.conversation,
                seq: a.seq,
                emoji: a.emoji.filter(|_| !a.remove),
            },
        ),
        Command::Reply(a) => (
            a.conn,
            ContentOp::Reply {
                conversation: a.conversation,
                seq: a.seq,
                text: a.text,
            },
        ),
        Command::Edit(a) => (
            a.conn,
            ContentOp::Edit {
                conversation: a.conversation,
                seq: a.seq,
                text: a.text,
            },
        ),
        Command::Delete(a) => (
            a.conn,
            ContentOp::Delete {
                conversation: a.conversation,
                seq: a.seq,
                everyone: a.everyone,
            },
        ),
        Command::Read(a) => (
            a.conn,
            ContentOp::Read {
                conversation: a.conversation,
                seq: a.seq,
            },
        ),
        Command::Receipts(a) => (
            a.conn,
            ContentOp::Receipts {
                on: a.setting.map(|s| s == Switch::On),
            },
        ),
        Command::GroupInfo(a) => (
            a.conn,
            ContentOp::GroupInfo {
                conversation: a.conversation,
                name: a.name,
                topic: a.topic,
            },
        ),
        _ => return None,
    };
    Some(parsed)
}

/// Runs a content command as [`Op::Content`] (own client, or the listener).
pub async fn dispatch(command: Command) -> Result<(), String> {
    let (conn, op) = op_of(command).ok_or("not a content command")?;
    super::chat::run_op(&conn, Op::Content(op)).await
}

/// Performs `op` with `client`, writing what it prints into `out`.
pub async fn perform(
    client: &SecureClient,
    op: ContentOp,
    out: &mut Printed,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match op {
        ContentOp::React {
            conversation,
            seq,
            emoji: Some(emoji),
        } => {
            let sent = client
                .react(conversation, seq, &emoji)
                .await
                .map_err(|x| e(&x))?;
            // Its own seq, when the server gave one (not to a blocker).
            let at = match sent.receipt.seq {
                0 => String::new(),
                n => format!(" (seq {n})"),
            };
            out.out(format!("reacted {} to #{seq}{at}", shown(&emoji)));
        }
        ContentOp::React {
            conversation,
            seq,
            emoji: None,
        } => {
            client
                .remove_reaction(conversation, seq)
                .await
                .map_err(|x| e(&x))?;
            out.out(format!("removed your reaction to #{seq}"));
        }
        ContentOp::Reply {
            conversation,
            seq,
            text,
        } => {
            let sent = client
                .reply(conversation, seq, &text)
                .await
                .map_err(|x| e(&x))?;
            out.out(format!(
                "sent: {} (reply to #{seq})",
                sent_to(conversation, sent.receipt.seq)
            ));
        }
        ContentOp::Edit {
            conversation,
            seq,
            text,
        } => {
            let sent = client
                .edit(conversation, seq, &text)
                .await
                .map_err(|x| e(&x))?;
            // Its own seq, when the server gave one (as for a reaction).
            let at = match sent.receipt.seq {
                0 => String::new(),
                n => format!(" (seq {n})"),
            };
            out.out(format!("edited #{seq}{at}"));
        }
        ContentOp::Delete {
            conversation,
            seq,
            everyone,
        } => delete(client, conversation, seq, everyone, out).await?,
        ContentOp::Read { conversation, seq } => read(client, conversation, seq, out).await?,
        ContentOp::GroupInfo {
            conversation,
            name,
            topic,
        } => group_info(client, conversation, name, topic, out).await?,
        ContentOp::Receipts { on } => {
            let on = match on {
                Some(on) => {
                    client.set_read_receipts(on).map_err(|x| e(&x))?;
                    on
                }
                None => client.read_receipts().map_err(|x| e(&x))?,
            };
            out.out(match on {
                true => "read receipts on: you send them and see others'",
                false => "read receipts off: you send none and see no one's",
            });
        }
    }
    Ok(())
}

/// Shows group `conversation`'s name and topic (neither given), or sets
/// the given ones, keeping the others as they are.
async fn group_info(
    client: &SecureClient,
    conversation: u64,
    name: Option<String>,
    topic: Option<String>,
    out: &mut Printed,
) -> Result<(), String> {
    let current = client.group_info(conversation).map_err(|e| e.to_string())?;
    if name.is_none() && topic.is_none() {
        let Some(c) = current else {
            out.err(format!(
                "group {conversation} has no name or topic yet (set them with --name, --topic)"
            ));
            return Ok(());
        };
        out.out(format!("name: {}", shown(&c.info.name)));
        out.out(format!("topic: {}", shown(&c.info.topic)));
        if !c.info.avatar.is_empty() {
            out.out(format!("avatar: {} bytes", c.info.avatar.len()));
        }
        out.out(format!(
            "set by {} at {} (#{})",
            shown(&c.set_by),
            utc_time(c.server_time_ms),
            c.seq
        ));
        return Ok(());
    }
    // Only the given fields travel: a device that is behind does not send
    // back its stale copy of the others (E2EE.md §3.8).
    let update = GroupInfoUpdate {
        name,
        topic,
        avatar: None,
    };
    let changed: Vec<String> = [("name", &update.name), ("topic", &update.topic)]
        .into_iter()
        .filter_map(|(what, v)| v.as_ref().map(|v| format!("{what} \"{}\"", shown(v))))
        .collect();
    client
        .update_group_info(conversation, update)
        .await
        .map_err(|e| e.to_string())?;
    out.out(format!("group {conversation}: {}", changed.join(", ")));
    Ok(())
}

async fn delete(
    client: &SecureClient,
    conversation: u64,
    seq: u64,
    everyone: bool,
    out: &mut Printed,
) -> Result<(), String> {
    if everyone {
        client
            .delete_for_everyone(conversation, seq)
            .await
            .map_err(|e| e.to_string())?;
        out.out(format!("deleted #{seq} for everyone"));
    } else {
        client
            .delete_for_me(conversation, seq)
            .map_err(|e| e.to_string())?;
        out.out(format!("deleted #{seq} on this device"));
    }
    Ok(())
}

async fn read(
    client: &SecureClient,
    conversation: u64,
    seq: Option<u64>,
    out: &mut Printed,
) -> Result<(), String> {
    let latest = client
        .messages()
        .latest_seq(conversation)
        .map_err(|e| e.to_string())?;
    let Some(head) = latest else {
        return Err(format!(
            "no messages of conversation {conversation} on this device to mark read"
        ));
    };
    // Past the latest message: read up to it (as the SDK does), and say so.
    let asked = seq.unwrap_or(head);
    let seq = asked.min(head);
    if asked > head {
        out.err(format!(
            "#{asked} is past the latest message, #{head}; marking up to #{head}"
        ));
    }
    let moved = client
        .mark_read(conversation, seq)
        .await
        .map_err(|e| e.to_string())?;
    out.out(match moved {
        true => format!("read up to #{seq}"),
        false => format!("already read up to #{seq} or later"),
    });
    Ok(())
}

/// `tern history`: the last `limit` messages of a conversation as `me`
/// sees them: `[CONV #SEQ] TIME SENDER/DEVICE: TEXT`, then what happened
/// to it (a reply's quote first, "(edited)", reactions, and for `me`'s
/// messages sent/delivered/read: overall, and per user when there are
/// several recipients).
pub fn history(
    store: &MessageStore,
    me: &str,
    conversation: u64,
    limit: u32,
    out: &mut Printed,
) -> Result<(), String> {
    let views = store
        .view(conversation, limit, me)
        .map_err(|e| e.to_string())?;
    for v in &views {
        out.out(history_line(v));
    }
    if views.is_empty() {
        out.err(format!(
            "no messages of conversation {conversation} on this device (it keeps what it sent or received since it was set up)"
        ));
    }
    Ok(())
}

/// Where a sent message went, for "sent: …": `conversation C seq N`, or
/// `conversation C` alone for seq 0 (the server numbered nothing, as for a
/// send to someone who blocks this account; PROTOCOL.md §4.4).
pub fn sent_to(conversation: u64, seq: u64) -> String {
    match seq {
        0 => format!("conversation {conversation}"),
        _ => format!("conversation {conversation} seq {seq}"),
    }
}

/// One message of [`history`]: `[C #N]`, or `[C]` for an own send the
/// server did not number (seq 0).
pub fn history_line(v: &MessageView) -> String {
    let m = &v.message;
    let mut line = format!(
        "{} {} {}/{}: ",
        place(m.conversation_id, m.seq),
        utc_time(m.server_time_ms),
        shown(&m.sender_user),
        m.sender_device,
    );
    if v.deleted {
        line.push_str("<message deleted>");
        return line;
    }
    line.push_str(&content_shown(&m.content));
    if v.edited_at_ms.is_some() {
        line.push_str(" (edited)");
    }
    if !v.reactions.is_empty() {
        let reactions: Vec<String> = v
            .reactions
            .iter()
            .map(|(user, emoji)| format!("{} {}", shown(emoji), shown(user)))
            .collect();
        line.push_str(&format!("  [{}]", reactions.join(", ")));
    }
    if let Some(overall) = v.overall() {
        line.push_str(&format!("  ({}", state_name(overall)));
        if v.receipts.len() > 1 {
            let each: Vec<String> = v
                .receipts
                .iter()
                .map(|(user, d)| format!("{} {}", shown(user), state_name(*d)))
                .collect();
            line.push_str(&format!(": {}", each.join(", ")));
        }
        line.push(')');
    }
    if m.expires_at_ms > 0 {
        // Its local copy is deleted then (the server's too).
        line.push_str(&format!("  (disappears {})", utc_time(m.expires_at_ms)));
    }
    line
}

fn state_name(d: Delivery) -> &'static str {
    match d {
        Delivery::Sent => "sent",
        Delivery::Delivered => "delivered",
        Delivery::Read => "read",
    }
}
