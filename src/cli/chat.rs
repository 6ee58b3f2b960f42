//! The terminal chat client: `register`, `create`, `add`, `remove`, `send`,
//! `listen`, `history`, `conversations`. Server address and trust are given
//! once at `register` and remembered in the state directory's `server.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tern_client::content::Content;
use tern_client::secure::{Decrypted, SecureClient, SecureEvent};
use tern_client::state_dir::StateDir;
use tern_client::{ClientOptions, TrustAnchor};
use tern_proto::body::devices;
use tern_proto::fingerprint::parse_fingerprint;
use tern_proto::handle::is_printable;
use tern_proto::Message;

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

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
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
    text: String,
    /// Delete the message after this many seconds [default: server's 30 days].
    #[arg(long)]
    expires_in: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct ListenArgs {
    #[command(flatten)]
    conn: Connection,
    /// Exit after this many messages [default: run until interrupted].
    #[arg(long)]
    count: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// First seq to show.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Most messages to show.
    #[arg(long, default_value_t = 50)]
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
        Command::Register(a) => register(a).await,
        Command::Create(a) => create(a).await,
        Command::Add(a) => members(a, true).await,
        Command::Remove(a) => members(a, false).await,
        Command::Send(a) => send(a).await,
        Command::Listen(a) => listen(a).await,
        Command::History(a) => history(a).await,
        Command::Conversations(a) => conversations(a).await,
        Command::Link(a) => link(a).await,
        Command::Approve(a) => approve(a).await,
        Command::Devices(a) => devices(a).await,
    }
}

fn options(conn: &Connection) -> Result<ClientOptions, String> {
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

async fn create(args: CreateArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let members: Vec<&str> = args.members.iter().map(String::as_str).collect();
    let id = match (args.kind, members.as_slice()) {
        (KindArg::Direct, [peer]) => client.direct(peer).await,
        (KindArg::Direct, _) => {
            return Err("a direct conversation takes exactly one other user".into())
        }
        (KindArg::Note, []) => client.note_to_self().await,
        (KindArg::Note, _) => return Err("a note-to-self conversation takes no members".into()),
        (KindArg::Group, members) => client.create_group(members).await,
    }
    .map_err(|e| e.to_string())?;
    println!("{id}");
    let kind = match args.kind {
        KindArg::Direct => "direct conversation",
        KindArg::Group => "group",
        KindArg::Note => "note-to-self conversation",
    };
    eprintln!("{kind} {id}, end-to-end encrypted");
    client.close().await;
    Ok(())
}

async fn members(args: MembersArgs, add: bool) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let me = client.user().to_owned();
    let leaving = !add && args.members.contains(&me);
    let members: Vec<&str> = args
        .members
        .iter()
        .map(String::as_str)
        .filter(|m| add || *m != me)
        .collect();
    if !members.is_empty() {
        let epoch = if add {
            client.add_members(args.conversation, &members).await
        } else {
            client.remove_members(args.conversation, &members).await
        }
        .map_err(|e| e.to_string())?;
        println!("group {} is now at MLS epoch {epoch}", args.conversation);
    }
    if leaving {
        // MLS forbids a Commit that removes its own sender: leave on the
        // server, and a remaining member's client commits the removal.
        client
            .leave(args.conversation)
            .await
            .map_err(|e| e.to_string())?;
        println!("left group {}", args.conversation);
    }
    client.close().await;
    Ok(())
}

async fn send(args: SendArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let content = Content::text(&args.text);
    let sent = client
        .send_expiring(args.conversation, &content, args.expires_in.unwrap_or(0))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "sent: conversation {} seq {}",
        sent.receipt.conversation_id, sent.receipt.seq
    );
    for (user, device) in &sent.skipped {
        eprintln!(
            "not sent to {}/{device}: that device has published no keys yet (its client publishes them when it next runs; messages sent after that reach it)",
            shown(user)
        );
    }
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

async fn approve(args: ApproveArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    client
        .approve_link(args.link_id, !args.deny)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{} link request {}",
        if args.deny { "denied" } else { "approved" },
        args.link_id
    );
    client.close().await;
    Ok(())
}

async fn devices(args: DevicesArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let transport = client.transport();
    if let Some(device) = args.revoke {
        transport
            .request(devices::RevokeDevice { device })
            .await
            .map_err(|e| e.to_string())?;
        println!("revoked {}/{device}", client.user());
    } else {
        let user = args
            .user
            .clone()
            .unwrap_or_else(|| client.user().to_owned());
        let list = transport
            .request(devices::ListDevices { user: user.clone() })
            .await
            .map_err(|e| e.to_string())?;
        for d in list.devices {
            println!(
                "{}/{}\t{}\tkey {}",
                shown(&user),
                d.device,
                shown(&d.name),
                hex::encode(&d.device_key[..8])
            );
        }
    }
    client.close().await;
    Ok(())
}

async fn listen(args: ListenArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    eprintln!(
        "listening as {}/{}; Ctrl-C to stop",
        client.user(),
        client.device()
    );
    let mut seen = 0usize;
    while args.count.is_none_or(|n| seen < n) {
        let event = tokio::select! {
            e = client.next_event() => e,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(event) = event else { break };
        if let Some((conversation, seq)) = show_event(&event, &args.conn) {
            client
                .transport()
                .ack(conversation, seq)
                .await
                .map_err(|e| e.to_string())?;
            seen += usize::from(matches!(event, SecureEvent::Message(_)));
        }
    }
    client.close().await;
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
                "a new device \"{device_name}\" asks to join this account. To answer, stop this \
                 listener (one process per state directory), then run: {approve}   (add --deny to refuse)"
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
    let text = match &m.content {
        Content::Text { body } => body.clone(),
        other => format!("<{other:?}>"),
    };
    println!(
        "[{} #{}] {}/{}: {}",
        m.conversation_id,
        m.seq,
        shown(&m.sender_user),
        m.sender_device,
        shown(&text)
    );
}

/// `text` as it may reach a terminal: every control character (newlines,
/// escape sequences, NUL) and text-direction override written as a
/// `\u{..}` escape, so nothing the server or a peer sends can clear the
/// screen or fake a line. Everything else is printed as is.
fn shown(text: &str) -> String {
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

async fn history(args: HistoryArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let page = client
        .transport()
        .history(args.conversation, args.from, args.limit)
        .await
        .map_err(|e| e.to_string())?;
    for message in &page.messages {
        print_message(message);
    }
    eprintln!("head {}; next page from {}", page.head_seq, page.next_seq);
    client.close().await;
    Ok(())
}

async fn conversations(args: ClientArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    for c in client
        .transport()
        .sync(true)
        .await
        .map_err(|e| e.to_string())?
    {
        println!(
            "{}\t{:?}\thead {}\tdelivered up to {}",
            c.conversation_id, c.kind, c.head_seq, c.cursor
        );
    }
    client.close().await;
    Ok(())
}

/// History shows what the server holds: ciphertext (messages decrypt once,
/// as they arrive, with forward secrecy).
fn print_message(m: &Message) {
    println!(
        "[{} #{}] {}/{}: <{} bytes of ciphertext>",
        m.conversation_id,
        m.seq,
        shown(&m.sender_user),
        m.sender_device,
        m.payload.len()
    );
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
