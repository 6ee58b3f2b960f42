//! The terminal chat client: `register`, `link` and `listen` here, the
//! other commands in [`super::ops`]. Server address and trust are given
//! once at `register` and remembered in the state directory's `server.toml`.
//!
//! One process at a time opens a state directory (the SDK locks it). While
//! `tern listen` has it, the other commands on it are performed by that
//! listener ([`super::forward`]); `register`, `link` and a second `listen`
//! are refused with the SDK's "in use" error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tern_client::content::Content;
use tern_client::identity::Identity;
use tern_client::message_store::{MessageStore, MESSAGE_STORE_FILE};
use tern_client::secure::{Decrypted, SecureClient, SecureError, SecureEvent};
use tern_client::state_dir::StateDir;
use tern_client::state_lock::{StateLock, StateLockError};
use tern_client::{ClientOptions, TrustAnchor};
use tern_proto::fingerprint::parse_fingerprint;
use tern_proto::handle::is_printable;

use super::forward;
use super::ops::{perform, perform_local, Op, Printed};
use super::{Command, Connection};

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    conn: Connection,
    /// Handle of the new account: 1-32 of a-z 0-9 _ . -
    user: String,
    /// Name of this device, shown to your other devices.
    #[arg(long, default_value = "terminal")]
    device_name: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KindArg {
    /// One other user (the same pair always gets the same conversation).
    Direct,
    /// Any number of users; you administer it.
    Group,
    /// Your own devices only.
    Note,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    conn: Connection,
    /// Kind of conversation.
    #[arg(value_enum)]
    kind: KindArg,
    /// Other members' handles.
    members: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct MembersArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id (printed by `create`).
    conversation: u64,
    /// Members' handles.
    #[arg(required = true)]
    members: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id (printed by `create`).
    conversation: u64,
    /// Message text.
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    text: String,
    /// Delete the message after this many seconds [default: server's 30 days].
    #[arg(long)]
    expires_in: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct ListenArgs {
    #[command(flatten)]
    conn: Connection,
    /// Exit after this many messages (stored messages of the
    /// conversations, reactions, edits and the like included; membership
    /// notices, timer changes and calls ringing here are printed but not
    /// counted) [default: run until interrupted].
    #[arg(long)]
    count: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// Most messages to show (the latest ones).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    conn: Connection,
    /// Words to look for (every one must occur, any case).
    text: String,
    /// Most messages to show (the latest matches).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
}

#[derive(clap::Args, Debug)]
pub struct LinkArgs {
    #[command(flatten)]
    conn: Connection,
    /// The existing account this new device joins.
    user: String,
    /// Name of this device, shown to your other devices.
    #[arg(long, default_value = "terminal")]
    device_name: String,
}

#[derive(clap::Args, Debug)]
pub struct ApproveArgs {
    #[command(flatten)]
    conn: Connection,
    /// Link request id (shown by `tern listen` on an already linked device).
    link_id: u64,
    /// Refuse the new device instead.
    #[arg(long)]
    deny: bool,
}

/// `tern privacy --groups everyone|contacts`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupAddsArg {
    /// Anyone may add you to groups.
    Everyone,
    /// Only your contacts (people you started a conversation with, added,
    /// or answered); anyone else sends an invitation.
    Contacts,
}

#[derive(clap::Args, Debug)]
pub struct InviteArgs {
    #[command(flatten)]
    conn: Connection,
    /// Group id (printed by `create`).
    conversation: u64,
    /// Who to invite.
    user: String,
}

#[derive(clap::Args, Debug)]
pub struct AnswerArgs {
    #[command(flatten)]
    conn: Connection,
    /// Group id (shown by `tern invitations` and `tern listen`).
    conversation: u64,
}

#[derive(clap::Args, Debug)]
pub struct DevicesArgs {
    #[command(flatten)]
    conn: Connection,
    /// Whose devices [default: your own].
    user: Option<String>,
    /// Revoke this device of your account instead of listing.
    #[arg(long)]
    revoke: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    #[command(flatten)]
    conn: Connection,
}

/// Where the server is, saved at registration.
#[derive(Serialize, Deserialize, Debug, Default)]
struct ServerFile {
    server: Option<String>,
    fingerprint: Option<String>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
}

const SERVER_FILE: &str = "server.toml";

pub fn run(command: Command) -> Result<(), String> {
    super::init_client_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(dispatch(command))
}

async fn dispatch(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(_) => Err("serve is not a client command".into()),
        Command::Migrate(_) => Err("migrate is not a client command".into()),
        Command::ClusterCa(_) => Err("cluster-ca is not a client command".into()),
        Command::TlsIdentity(_) => Err("tls-identity is not a client command".into()),
        c @ (Command::React(_)
        | Command::Reply(_)
        | Command::Edit(_)
        | Command::Delete(_)
        | Command::Read(_)
        | Command::Receipts(_)
        | Command::GroupInfo(_)) => super::content::dispatch(c).await,
        // Run by `safety` on a plain transport connection.
        Command::Block(_)
        | Command::Unblock(_)
        | Command::Blocked(_)
        | Command::Timer(_)
        | Command::Admin(_) => Err("the safety commands are run by the safety module".into()),
        Command::Presence(_) => Err("tern presence is run by the presence module".into()),
        Command::Typing(_) => Err("tern typing is run by the typing module".into()),
        Command::Push(_) => Err("tern push is run by the push module".into()),
        Command::Call(_) | Command::Answer(_) | Command::Hangup(_) | Command::Calls(_) => {
            Err("the call commands are run by the calls module".into())
        }
        Command::SendFile(_) | Command::Fetch(_) => {
            Err("the attachment commands are run by the files module".into())
        }
        Command::Register(a) => register(a).await,
        Command::Listen(a) => listen(a).await,
        Command::Link(a) => link(a).await,
        Command::Create(a) => {
            let (kind, members) = (a.kind, a.members);
            run_op(&a.conn, Op::Create { kind, members }).await
        }
        Command::Add(a) => run_op(&a.conn, members_op(a.conversation, a.members, true)).await,
        Command::Remove(a) => run_op(&a.conn, members_op(a.conversation, a.members, false)).await,
        Command::Send(a) => {
            let (conversation, text, expires_in) = (a.conversation, a.text, a.expires_in);
            let op = Op::Send {
                conversation,
                text,
                expires_in,
            };
            run_op(&a.conn, op).await
        }
        Command::History(a) => {
            let (conversation, limit) = (a.conversation, a.limit);
            run_op(
                &a.conn,
                Op::History {
                    conversation,
                    limit,
                },
            )
            .await
        }
        Command::Search(a) => {
            let (text, limit) = (a.text, a.limit);
            run_op(&a.conn, Op::Search { text, limit }).await
        }
        Command::Conversations(a) => run_op(&a.conn, Op::Conversations).await,
        Command::Approve(a) => {
            let (link_id, deny) = (a.link_id, a.deny);
            run_op(&a.conn, Op::Approve { link_id, deny }).await
        }
        Command::Devices(a) => {
            let (user, revoke) = (a.user, a.revoke);
            run_op(&a.conn, Op::Devices { user, revoke }).await
        }
        Command::Privacy(a) => super::privacy::privacy(a).await,
        Command::Requests(a) => super::privacy::requests(a).await,
        Command::Invite(a) => {
            let (conversation, user) = (a.conversation, a.user);
            run_op(&a.conn, Op::Invite { conversation, user }).await
        }
        Command::Invitations(a) => run_op(&a.conn, Op::Invitations).await,
        Command::Accept(a) => run_op(&a.conn, answer_op(a.conversation, true)).await,
        Command::Decline(a) => run_op(&a.conn, answer_op(a.conversation, false)).await,
    }
}

fn answer_op(conversation: u64, accept: bool) -> Op {
    Op::Answer {
        conversation,
        accept,
    }
}

fn members_op(conversation: u64, members: Vec<String>, add: bool) -> Op {
    Op::Members {
        conversation,
        members,
        add,
    }
}

/// Runs `op` on the state directory of `conn`: with a client of its own,
/// or, while a `tern listen` holds the directory, by that listener. Prints
/// what the command prints; the error is the command's.
pub(super) async fn run_op(conn: &Connection, op: Op) -> Result<(), String> {
    if let Some(result) = run_local(conn, &op) {
        return result;
    }
    let client = match SecureClient::connect(options(conn)?).await {
        Ok(client) => client,
        Err(e @ SecureError::Lock(StateLockError::InUse { .. })) => {
            return match forward::forward(&conn.state, &op).await? {
                Some(reply) => {
                    reply.printed.emit();
                    reply.error.map_or(Ok(()), Err)
                }
                None => Err(e.to_string()),
            };
        }
        Err(e) => return Err(e.to_string()),
    };
    // Holding the lock, no listener is serving: a socket left is stale.
    if let Err(e) = forward::remove_stale(&conn.state) {
        tracing::debug!(error = %e, "removing a stale listener socket");
    }
    let mut printed = Printed::default();
    let result = perform(&client, op, &mut printed).await;
    printed.emit();
    client.close().await;
    result
}

/// History and search only read this device's message store: with the
/// state directory free they run without a server (`None` otherwise: held
/// by a listener, they are forwarded like every other command; not an
/// operation of that kind, or no identity there, the normal path runs and
/// reports it).
fn run_local(conn: &Connection, op: &Op) -> Option<Result<(), String>> {
    if !matches!(op, Op::History { .. } | Op::Search { .. }) || !Identity::exists(&conn.state) {
        return None;
    }
    let lock = match StateLock::acquire(&conn.state) {
        Ok(lock) => lock,
        Err(StateLockError::InUse { .. }) => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    let me = match Identity::load(&conn.state) {
        Ok(identity) => identity.user,
        Err(e) => return Some(Err(e.to_string())),
    };
    let result = MessageStore::open(conn.state.join(MESSAGE_STORE_FILE))
        .map_err(|e| e.to_string())
        .and_then(|store| {
            let mut printed = Printed::default();
            let result = perform_local(&store, &me, op.clone(), &mut printed).map(drop);
            printed.emit();
            result
        });
    drop(lock);
    Some(result)
}

pub(super) fn options(conn: &Connection) -> Result<ClientOptions, String> {
    let saved = load_server_file(&conn.state)?;
    let server = conn
        .server
        .clone()
        .or(saved.server)
        .ok_or("no server address: pass --server HOST:PORT (remembered after register)")?;
    let addr = resolve(&server)?;
    let trust = match (
        conn.fingerprint.clone().or(saved.fingerprint),
        conn.ca.clone().or(saved.ca),
    ) {
        (Some(fp), _) => {
            TrustAnchor::Fingerprint(parse_fingerprint(&fp).map_err(|e| e.to_string())?)
        }
        (None, Some(ca)) => TrustAnchor::CaFile(ca),
        (None, None) => {
            return Err(
                "no trust anchor: pass --fingerprint (printed by tern serve) or --ca FILE".into(),
            )
        }
    };
    let mut options = ClientOptions::new(addr, trust, &conn.state);
    options.connect_timeout = conn.connect_timeout;
    options.server_name = saved
        .server_name
        .unwrap_or_else(|| conn.server_name.clone());
    Ok(options)
}

fn resolve(server: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    server
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve server {server:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("server {server:?} resolves to no address"))
}

/// The saved server settings (none saved yet: all empty).
fn load_server_file(state: &Path) -> Result<ServerFile, String> {
    let dir = StateDir::new(state);
    let Some(text) = dir.read_text(SERVER_FILE).map_err(|e| e.to_string())? else {
        return Ok(ServerFile::default());
    };
    toml::from_str(&text).map_err(|e| {
        format!(
            "the saved server settings in {} are invalid ({e}); fix or delete the file",
            state.join(SERVER_FILE).display()
        )
    })
}

fn save_server_file(conn: &Connection) -> Result<(), String> {
    let file = ServerFile {
        server: conn.server.clone(),
        fingerprint: conn.fingerprint.clone(),
        ca: conn.ca.clone(),
        server_name: Some(conn.server_name.clone()),
    };
    let text = toml::to_string(&file).map_err(|e| e.to_string())?;
    StateDir::new(&conn.state)
        .write(SERVER_FILE, text.as_bytes())
        .map_err(|e| format!("cannot save server settings: {e}"))
}

async fn connect(conn: &Connection) -> Result<SecureClient, String> {
    SecureClient::connect(options(conn)?)
        .await
        .map_err(|e| e.to_string())
}

async fn register(args: RegisterArgs) -> Result<(), String> {
    let client = SecureClient::register(options(&args.conn)?, &args.user, &args.device_name)
        .await
        .map_err(|e| e.to_string())?;
    save_server_file(&args.conn)?;
    println!(
        "registered {}/{}; identity saved in {}",
        client.user(),
        client.device(),
        args.conn.state.display()
    );
    client.close().await;
    Ok(())
}

async fn link(args: LinkArgs) -> Result<(), String> {
    eprintln!(
        "asking {}'s devices to approve this one: `tern listen` on a linked device shows the request and the command that approves it",
        args.user
    );
    let client = SecureClient::link(options(&args.conn)?, &args.user, &args.device_name)
        .await
        .map_err(|e| e.to_string())?;
    save_server_file(&args.conn)?;
    println!(
        "linked {}/{}; identity saved in {}",
        client.user(),
        client.device(),
        args.conn.state.display()
    );
    client.close().await;
    Ok(())
}

async fn listen(args: ListenArgs) -> Result<(), String> {
    let client = Arc::new(connect(&args.conn).await?);
    // Other tern commands on this state directory are passed to us.
    let serving = match forward::serve(&args.conn.state, client.clone()) {
        Ok(serving) => Some(serving),
        Err(e) => {
            eprintln!(
                "cannot serve other tern commands on {} ({e}); while this listener runs they are refused",
                args.conn.state.display()
            );
            None
        }
    };
    eprintln!(
        "listening as {}/{}; Ctrl-C to stop",
        client.user(),
        client.device()
    );
    let result = show_events(&client, &args).await;
    drop(serving);
    client.close().await;
    result
}

/// Prints events and acknowledges messages until `--count` messages were
/// shown, Ctrl-C, or the client closes.
async fn show_events(client: &SecureClient, args: &ListenArgs) -> Result<(), String> {
    let mut seen = 0usize;
    let mut ringing = None;
    while args.count.is_none_or(|n| seen < n) {
        let event = tokio::select! {
            e = client.next_event() => e,
            call = client.next_call_event() => {
                if let Some(call) = call {
                    super::calls::show_while_listening(&call, &mut ringing, &connection_flags(&args.conn));
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(event) = event else { break };
        if let SecureEvent::NotStored { reason, .. } = &event {
            return Err(format!("stopped listening: {reason}"));
        }
        if let Some((conversation, seq)) = show_event(&event, &args.conn) {
            client
                .transport()
                .ack(conversation, seq)
                .await
                .map_err(|e| e.to_string())?;
            seen += usize::from(matches!(event, SecureEvent::Message(_)));
        }
    }
    Ok(())
}

/// Prints an event; returns the (conversation, seq) to acknowledge, if any.
/// Commands it suggests repeat the connection flags of `conn`.
fn show_event(event: &SecureEvent, conn: &Connection) -> Option<(u64, u64)> {
    match event {
        SecureEvent::Message(m) => {
            print_decrypted(m);
            Some((m.conversation_id, m.seq))
        }
        SecureEvent::Undecryptable {
            conversation_id,
            seq,
            reason,
        } => {
            eprintln!("[{conversation_id} #{seq}] could not decrypt: {reason}");
            Some((*conversation_id, *seq))
        }
        SecureEvent::LinkPrompt {
            link_id,
            device_name,
        } => {
            let approve = format!("tern approve {} {link_id}", connection_flags(conn));
            let device_name = shown(device_name);
            eprintln!(
                "a new device \"{device_name}\" asks to join this account. To answer, run in \
                 another terminal: {approve}   (add --deny to refuse; this listener performs it)"
            );
            None
        }
        SecureEvent::Joined { conversation_id } => {
            eprintln!("joined group {conversation_id}");
            None
        }
        SecureEvent::GroupChanged {
            conversation_id,
            epoch,
        } => {
            eprintln!("group {conversation_id} changed (epoch {epoch})");
            None
        }
        SecureEvent::Removed { conversation_id } => {
            eprintln!("removed from group {conversation_id}");
            None
        }
        SecureEvent::Rejoined {
            conversation_id,
            epoch,
        } => {
            eprintln!(
                "rejoined group {conversation_id} (epoch {epoch}): this device missed changes \
                 no longer on the server; messages from before cannot be read here"
            );
            None
        }
        SecureEvent::Invited {
            conversation_id,
            inviter,
        } => {
            let flags = connection_flags(conn);
            eprintln!(
                "{} invites you to group {conversation_id}: tern accept {flags} {conversation_id}   \
                 (or tern decline {flags} {conversation_id})",
                shown(inviter)
            );
            None
        }
        SecureEvent::InvitationAnswered {
            conversation_id,
            user,
            accepted,
        } => {
            let user = shown(user);
            match accepted {
                true => eprintln!(
                    "{user} accepted your invitation to group {conversation_id}: \
                     tern add {} {conversation_id} {user}",
                    connection_flags(conn)
                ),
                false => eprintln!("{user} declined your invitation to group {conversation_id}"),
            }
            None
        }
        SecureEvent::NotStored { .. } => None,
        SecureEvent::TimerChanged {
            conversation_id,
            secs,
            user,
        } => {
            let user = shown(user);
            match secs {
                0 => println!("{user} turned disappearing messages off in {conversation_id}"),
                secs => println!(
                    "{user} set disappearing messages in {conversation_id}: later messages disappear after {secs} s"
                ),
            }
            None
        }
        // Shown by `tern presence watch` and `tern typing watch`.
        SecureEvent::PresenceChanged(_) | SecureEvent::Typing(_) => None,
    }
}

/// The flags that reach the same account and server as `conn`, ready to
/// paste into a shell.
fn connection_flags(conn: &Connection) -> String {
    let mut flags = vec![
        "--state".to_owned(),
        shell_word(&conn.state.to_string_lossy()),
    ];
    let given = [
        ("--server", conn.server.clone()),
        ("--fingerprint", conn.fingerprint.clone()),
        (
            "--ca",
            conn.ca.as_ref().map(|p| p.to_string_lossy().into_owned()),
        ),
    ];
    for (flag, value) in given {
        if let Some(value) = value {
            flags.extend([flag.to_owned(), shell_word(&value)]);
        }
    }
    flags.join(" ")
}

/// `word` quoted for a POSIX shell when it holds anything but safe characters.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-:=@,+%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn print_decrypted(m: &Decrypted) {
    println!(
        "[{} #{}] {}/{}: {}",
        m.conversation_id,
        m.seq,
        shown(&m.sender_user),
        m.sender_device,
        content_shown(&m.content)
    );
}

/// A message's content as a terminal shows it: text escaped ([`shown`]),
/// a reply with its quote, a reaction, edit, delete or receipt as what it
/// does, an attachment by its name, size and type (never its key), a
/// message this device could not read with why, any other kind by name.
pub fn content_shown(content: &Content) -> String {
    match (content, content.unreadable_reason()) {
        (Content::Text { body }, _) => shown(body),
        (
            Content::Reply {
                target_seq,
                quote,
                body,
            },
            _,
        ) if quote.is_empty() => format!("(reply to #{target_seq}) {}", shown(body)),
        (
            Content::Reply {
                target_seq,
                quote,
                body,
            },
            _,
        ) => format!(
            "(reply to #{target_seq} \"{}\") {}",
            shown(quote),
            shown(body)
        ),
        (Content::Reaction { target_seq, emoji }, _) if emoji.is_empty() => {
            format!("<removed a reaction to #{target_seq}>")
        }
        (Content::Reaction { target_seq, emoji }, _) => {
            format!("<reacted {} to #{target_seq}>", shown(emoji))
        }
        (Content::Edit { target_seq, body }, _) => {
            format!("<edited #{target_seq}: {}>", shown(body))
        }
        (Content::Delete { target_seq }, _) => format!("<deleted #{target_seq} for everyone>"),
        (Content::GroupInfo(info), _) => group_info_line(info),
        (Content::Receipt { receipt, up_to_seq }, _) => {
            format!("<{receipt:?} up to #{up_to_seq}>").to_lowercase()
        }
        (Content::Attachment(p), _) if p.is_voice() => format!(
            "<voice message, {:.1} s, {} bytes: tern fetch>",
            f64::from(p.duration_ms) / 1000.0,
            p.size
        ),
        (Content::Attachment(p), _) => format!(
            "<file \"{}\" ({} bytes, {}{}): tern fetch>",
            shown(&p.safe_file_name()),
            p.size,
            shown(&p.content_type),
            attachment_extras(p)
        ),
        (_, Some(reason)) => format!("<could not decrypt: {}>", shown(&reason)),
        (other, None) => shown(&format!("<{other:?}>")),
    }
}

/// What a file's pointer tells beyond its name, size and type, for
/// `tern history`: `, 1920x1080, 12.5 s, thumbnail` (each when known).
fn attachment_extras(p: &tern_client::content::AttachmentPointer) -> String {
    let mut out = String::new();
    if p.width > 0 && p.height > 0 {
        out.push_str(&format!(", {}x{}", p.width, p.height));
    }
    if p.duration_ms > 0 {
        out.push_str(&format!(", {:.1} s", f64::from(p.duration_ms) / 1000.0));
    }
    if !p.thumbnail.is_empty() {
        out.push_str(", thumbnail: tern fetch --thumbnail");
    }
    out
}

/// `text` as it may reach a terminal: every control character (newlines,
/// escape sequences, NUL) and text-direction override written as a
/// `\u{..}` escape, so nothing the server or a peer sends can clear the
/// screen or fake a line. Everything else is printed as is.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_printable(c) {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

/// How a group-info update shows: the fields it sets.
fn group_info_line(info: &tern_client::content::GroupInfoUpdate) -> String {
    let mut set = Vec::new();
    if let Some(name) = &info.name {
        set.push(format!("the group name to \"{}\"", shown(name)));
    }
    if let Some(topic) = &info.topic {
        set.push(format!("the topic to \"{}\"", shown(topic)));
    }
    if let Some(avatar) = &info.avatar {
        set.push(format!("the avatar ({} bytes)", avatar.len()));
    }
    format!("<set {}>", set.join(", "))
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn nothing_from_the_server_reaches_the_terminal_as_a_control_character() {
        assert_eq!(shown("phone ☎ été"), "phone ☎ été");
        assert_eq!(shown("a\nb"), "a\\u{a}b");
        assert_eq!(shown("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(shown("nul\0"), "nul\\u{0}");
        assert_eq!(shown("x\u{202e}y"), "x\\u{202e}y");
        assert!(shown("\u{9b}\u{7f}\r\t").chars().all(|c| !c.is_control()));
    }
}
