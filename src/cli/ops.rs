//! The client commands that work on an open [`SecureClient`]: `create`,
//! `add`, `remove`, `send`, `history`, `search`, `conversations`,
//! `approve`, `devices`, `invite`, `invitations`, `accept`,
//! `decline`. Each is an [`Op`] (serializable, so a running `tern listen`
//! can perform it for another invocation, see [`super::forward`]) and
//! writes what it prints into [`Printed`] instead of the terminal, so the
//! same text reaches the user whichever process ran it.

use serde::{Deserialize, Serialize};
use tern_client::content::Content;
use tern_client::message_store::{MessageStore, StoredMessage};
use tern_client::secure::{SecureClient, SecureError};
use tern_proto::body::devices;

use super::chat::{content_shown, shown, KindArg};
use tern_proto::fb::ErrorCode;

/// One client command's own arguments (the connection flags aside).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `tern create KIND MEMBERS...`
    Create { kind: KindArg, members: Vec<String> },
    /// `tern add` (`add: true`) or `tern remove` (`add: false`).
    Members {
        conversation: u64,
        members: Vec<String>,
        add: bool,
    },
    /// `tern send CONVERSATION TEXT [--expires-in SECS]`
    Send {
        conversation: u64,
        text: String,
        expires_in: Option<u32>,
    },
    /// `tern history CONVERSATION [--limit N]`
    History { conversation: u64, limit: u32 },
    /// `tern search TEXT [--limit N]`
    Search { text: String, limit: u32 },
    /// `tern conversations`
    Conversations,
    /// `tern approve LINK_ID [--deny]`
    Approve { link_id: u64, deny: bool },
    /// `tern devices [USER] [--revoke DEVICE]`
    Devices {
        user: Option<String>,
        revoke: Option<u32>,
    },
    /// `tern privacy`, `tern requests`.
    Privacy(super::privacy::PrivacyOp),
    /// `tern invite GROUP USER`
    Invite { conversation: u64, user: String },
    /// `tern invitations`
    Invitations,
    /// `tern accept GROUP` (`accept: true`) or `tern decline GROUP`.
    Answer { conversation: u64, accept: bool },
    /// `tern react`, `reply`, `edit`, `delete`, `read`, `receipts`.
    Content(super::content::ContentOp),
}

/// What a command prints, stdout and stderr apart, each in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
}

impl Printed {
    /// A line for stdout.
    pub(super) fn out(&mut self, line: impl AsRef<str>) {
        self.stdout.push_str(line.as_ref());
        self.stdout.push('\n');
    }

    /// A line for stderr.
    pub(super) fn err(&mut self, line: impl AsRef<str>) {
        self.stderr.push_str(line.as_ref());
        self.stderr.push('\n');
    }

    /// Writes both to this process's stdout and stderr.
    pub fn emit(&self) {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(self.stdout.as_bytes());
        let _ = stdout.flush();
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(self.stderr.as_bytes());
    }
}

/// Performs `op` with `client`, writing what it prints into `out` (also
/// when it fails part-way); the error is the sentence `tern` prints after
/// `error: `.
pub async fn perform(client: &SecureClient, op: Op, out: &mut Printed) -> Result<(), String> {
    match op {
        Op::Create { kind, members } => create(client, kind, &members, out).await,
        Op::Members {
            conversation,
            members,
            add,
        } => change_members(client, conversation, &members, add, out).await,
        Op::Send {
            conversation,
            text,
            expires_in,
        } => send(client, conversation, &text, expires_in, out).await,
        Op::History { .. } | Op::Search { .. } => {
            perform_local(client.messages(), client.user(), op, out).map(drop)
        }
        Op::Content(op) => super::content::perform(client, op, out).await,
        Op::Conversations => conversations(client, out).await,
        Op::Approve { link_id, deny } => approve(client, link_id, deny, out).await,
        Op::Devices { user, revoke } => devices(client, user, revoke, out).await,
        Op::Privacy(op) => super::privacy::perform(client, op, out).await,
        Op::Invite { conversation, user } => invite(client, conversation, &user, out).await,
        Op::Invitations => invitations(client, out).await,
        Op::Answer {
            conversation,
            accept,
        } => answer(client, conversation, accept, out).await,
    }
}

/// A refusal's sentence; for a user who must consent first, with the
/// command that asks them (`group`: where to invite them, when it exists).
fn explain(e: &SecureError, group: Option<u64>) -> String {
    let consent =
        matches!(e, SecureError::Client(c) if c.code() == Some(ErrorCode::ConsentRequired));
    if !consent {
        return e.to_string();
    }
    let how = match group {
        Some(group) => format!("tern invite {group} USER"),
        None => "tern create group (without them), then tern invite GROUP USER".to_owned(),
    };
    format!("{e}. To ask them: {how}; once they run tern accept, add them again")
}

async fn invite(
    client: &SecureClient,
    group: u64,
    user: &str,
    out: &mut Printed,
) -> Result<(), String> {
    let transport = client.transport();
    transport
        .invite(group, user)
        .await
        .map_err(|e| e.to_string())?;
    out.out(format!(
        "invited {} to group {group}; add them once they accept",
        shown(user)
    ));
    Ok(())
}

async fn invitations(client: &SecureClient, out: &mut Printed) -> Result<(), String> {
    let pending = client
        .transport()
        .invitations()
        .await
        .map_err(|e| e.to_string())?;
    if pending.is_empty() {
        out.err("no invitations waiting");
    }
    for i in pending {
        out.out(format!(
            "{}\tfrom {}\t{}",
            i.conversation_id,
            shown(&i.inviter),
            utc_time(i.created_ms)
        ));
    }
    Ok(())
}

async fn answer(
    client: &SecureClient,
    group: u64,
    accept: bool,
    out: &mut Printed,
) -> Result<(), String> {
    let transport = client.transport();
    transport
        .answer_invitation(group, accept)
        .await
        .map_err(|e| e.to_string())?;
    match accept {
        true => out.out(format!(
            "accepted the invitation to group {group}; its members may add you now"
        )),
        false => out.out(format!("declined the invitation to group {group}")),
    }
    Ok(())
}

async fn create(
    client: &SecureClient,
    kind: KindArg,
    members: &[String],
    out: &mut Printed,
) -> Result<(), String> {
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let id = match (kind, members.as_slice()) {
        (KindArg::Direct, [peer]) => client.direct(peer).await,
        (KindArg::Direct, _) => {
            return Err("a direct conversation takes exactly one other user".into())
        }
        (KindArg::Note, []) => client.note_to_self().await,
        (KindArg::Note, _) => return Err("a note-to-self conversation takes no members".into()),
        (KindArg::Group, members) => client.create_group(members).await,
    }
    .map_err(|e| match kind {
        // Their direct-starts setting: the server's sentence says so.
        KindArg::Direct => e.to_string(),
        _ => explain(&e, None),
    })?;
    out.out(id.to_string());
    let kind = match kind {
        KindArg::Direct => "direct conversation",
        KindArg::Group => "group",
        KindArg::Note => "note-to-self conversation",
    };
    out.err(format!("{kind} {id}, end-to-end encrypted"));
    Ok(())
}

async fn change_members(
    client: &SecureClient,
    conversation: u64,
    members: &[String],
    add: bool,
    out: &mut Printed,
) -> Result<(), String> {
    let me = client.user().to_owned();
    let leaving = !add && members.contains(&me);
    let others: Vec<&str> = members
        .iter()
        .map(String::as_str)
        .filter(|m| add || *m != me)
        .collect();
    if !others.is_empty() {
        let epoch = if add {
            client.add_members(conversation, &others).await
        } else {
            client.remove_members(conversation, &others).await
        }
        .map_err(|e| explain(&e, Some(conversation)))?;
        out.out(format!("group {conversation} is now at MLS epoch {epoch}"));
    }
    if leaving {
        // MLS forbids a Commit that removes its own sender: leave on the
        // server, and a remaining member's client commits the removal.
        client
            .leave(conversation)
            .await
            .map_err(|e| e.to_string())?;
        out.out(format!("left group {conversation}"));
    }
    Ok(())
}

async fn send(
    client: &SecureClient,
    conversation: u64,
    text: &str,
    expires_in: Option<u32>,
    out: &mut Printed,
) -> Result<(), String> {
    let content = Content::text(text);
    let sent = client
        .send_expiring(conversation, &content, expires_in.unwrap_or(0))
        .await
        .map_err(|e| e.to_string())?;
    out.out(format!(
        "sent: {}",
        super::content::sent_to(sent.receipt.conversation_id, sent.receipt.seq)
    ));
    for (user, device) in &sent.skipped {
        out.err(format!(
            "not sent to {}/{device}: that device has published no keys yet (its client publishes them when it next runs; messages sent after that reach it)",
            shown(user)
        ));
    }
    Ok(())
}

async fn approve(
    client: &SecureClient,
    link_id: u64,
    deny: bool,
    out: &mut Printed,
) -> Result<(), String> {
    client
        .approve_link(link_id, !deny)
        .await
        .map_err(|e| e.to_string())?;
    let verb = if deny { "denied" } else { "approved" };
    out.out(format!("{verb} link request {link_id}"));
    Ok(())
}

async fn devices(
    client: &SecureClient,
    user: Option<String>,
    revoke: Option<u32>,
    out: &mut Printed,
) -> Result<(), String> {
    let transport = client.transport();
    if let Some(device) = revoke {
        transport
            .request(devices::RevokeDevice { device })
            .await
            .map_err(|e| e.to_string())?;
        out.out(format!("revoked {}/{device}", client.user()));
        return Ok(());
    }
    let user = user.unwrap_or_else(|| client.user().to_owned());
    let list = transport
        .request(devices::ListDevices { user: user.clone() })
        .await
        .map_err(|e| e.to_string())?;
    for d in list.devices {
        out.out(format!(
            "{}/{}\t{}\tkey {}",
            shown(&user),
            d.device,
            shown(&d.name),
            hex::encode(d.device_key.get(..8).unwrap_or_default())
        ));
    }
    Ok(())
}

/// Runs an operation that only reads this device's message store (history,
/// search) of account `me`: it needs no server. `Ok(false)` for any other
/// operation.
pub fn perform_local(
    store: &MessageStore,
    me: &str,
    op: Op,
    out: &mut Printed,
) -> Result<bool, String> {
    match op {
        Op::History {
            conversation,
            limit,
        } => super::content::history(store, me, conversation, limit, out).map(|()| true),
        Op::Search { text, limit } => search(store, &text, limit, out).map(|()| true),
        _ => Ok(false),
    }
}

/// The latest `limit` stored messages containing every word of `text`.
fn search(store: &MessageStore, text: &str, limit: u32, out: &mut Printed) -> Result<(), String> {
    let messages = store.search(text, limit).map_err(|e| e.to_string())?;
    for m in &messages {
        out.out(stored_line(m));
    }
    out.err(format!("{} found", plural(messages.len(), "message")));
    Ok(())
}

fn plural(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

async fn conversations(client: &SecureClient, out: &mut Printed) -> Result<(), String> {
    // Requests deleted here or from blocked users are left out.
    let states = client.conversations().await.map_err(|e| e.to_string())?;
    for c in states {
        // A message request is kept apart: `tern requests` shows it.
        let request = c.request_from.as_deref().map_or(String::new(), |from| {
            format!("\tmessage request from {} (tern requests)", shown(from))
        });
        out.out(format!(
            "{}\t{:?}\thead {}\tdelivered up to {}{request}",
            c.conversation_id, c.kind, c.head_seq, c.cursor
        ));
    }
    Ok(())
}

/// `[CONVERSATION #SEQ] TIME SENDER/DEVICE: TEXT` (`[CONVERSATION]` for an
/// own send the server did not number), as a terminal may show it.
pub fn stored_line(m: &StoredMessage) -> String {
    let text = content_shown(&m.content);
    // A disappearing message says when it goes (its local copy is deleted then).
    let expiry = match m.expires_at_ms {
        0 => String::new(),
        at => format!(" (disappears {})", utc_time(at)),
    };
    format!(
        "{} {} {}/{}: {text}{expiry}",
        place(m.conversation_id, m.seq),
        utc_time(m.server_time_ms),
        shown(&m.sender_user),
        m.sender_device,
    )
}

/// Where a stored message is: `[CONVERSATION #SEQ]`, or `[CONVERSATION]`
/// for an own send the server did not number (seq 0, PROTOCOL.md §4.4).
pub fn place(conversation_id: u64, seq: u64) -> String {
    match seq {
        0 => format!("[{conversation_id}]"),
        seq => format!("[{conversation_id} #{seq}]"),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a time in ms since the Unix epoch.
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::{place, utc_time};

    #[test]
    fn an_unnumbered_send_shows_no_seq() {
        assert_eq!(place(7, 3), "[7 #3]");
        assert_eq!(place(7, 0), "[7]");
    }

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_709_251_199_999), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc_time(4_102_444_800_000), "2100-01-01 00:00:00 UTC");
    }
}
