//! The terminal chat client: `register`, `create`, `add`, `remove`, `send`,
//! `listen`, `history`, `conversations`. Server address and trust are given
//! once at `register` and remembered in the state directory's `server.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tern::client::{Client, ClientOptions, SendOptions, TrustAnchor};
use tern::proto::fingerprint::parse_fingerprint;
use tern::proto::{ConversationKind, Message};

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
    super::init_logging("warn");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
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
    }
}

fn options(conn: &Connection) -> Result<ClientOptions, String> {
    let saved = load_server_file(&conn.state);
    let server = conn.server.clone().or(saved.server).ok_or("no server address: pass --server HOST:PORT (remembered after register)")?;
    let addr = resolve(&server)?;
    let trust = match (conn.fingerprint.clone().or(saved.fingerprint), conn.ca.clone().or(saved.ca)) {
        (Some(fp), _) => TrustAnchor::Fingerprint(parse_fingerprint(&fp).map_err(|e| e.to_string())?),
        (None, Some(ca)) => TrustAnchor::CaFile(ca),
        (None, None) => return Err("no trust anchor: pass --fingerprint (printed by tern serve) or --ca FILE".into()),
    };
    let mut options = ClientOptions::new(addr, trust, &conn.state);
    options.server_name = saved.server_name.unwrap_or_else(|| conn.server_name.clone());
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

fn load_server_file(state: &Path) -> ServerFile {
    std::fs::read_to_string(state.join(SERVER_FILE)).ok().and_then(|t| toml::from_str(&t).ok()).unwrap_or_default()
}

fn save_server_file(conn: &Connection) -> Result<(), String> {
    let file = ServerFile {
        server: conn.server.clone(),
        fingerprint: conn.fingerprint.clone(),
        ca: conn.ca.clone(),
        server_name: Some(conn.server_name.clone()),
    };
    let text = toml::to_string(&file).map_err(|e| e.to_string())?;
    std::fs::write(conn.state.join(SERVER_FILE), text).map_err(|e| format!("cannot save server settings: {e}"))
}

async fn connect(conn: &Connection) -> Result<Client, String> {
    Client::connect(options(conn)?).await.map_err(|e| e.to_string())
}

async fn register(args: RegisterArgs) -> Result<(), String> {
    let client = Client::register(options(&args.conn)?, &args.user, &args.device_name).await.map_err(|e| e.to_string())?;
    save_server_file(&args.conn)?;
    println!("registered {}/{}; identity saved in {}", client.user(), client.device(), args.conn.state.display());
    client.close().await;
    Ok(())
}

async fn create(args: CreateArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let kind = match args.kind {
        KindArg::Direct => ConversationKind::Direct,
        KindArg::Group => ConversationKind::Group,
        KindArg::Note => ConversationKind::NoteToSelf,
    };
    let members: Vec<&str> = args.members.iter().map(String::as_str).collect();
    let info = client.create_conversation(kind, &members).await.map_err(|e| e.to_string())?;
    println!("{}", info.id);
    eprintln!("conversation {} ({:?}) with {}{}", info.id, info.kind, info.members.join(", "), if info.created { "" } else { " (existing)" });
    client.close().await;
    Ok(())
}

async fn members(args: MembersArgs, add: bool) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let members: Vec<&str> = args.members.iter().map(String::as_str).collect();
    let info = if add {
        client.add_members(args.conversation, &members).await
    } else {
        client.remove_members(args.conversation, &members).await
    }
    .map_err(|e| e.to_string())?;
    println!("members of {}: {}", info.id, info.members.join(", "));
    client.close().await;
    Ok(())
}

async fn send(args: SendArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let options = SendOptions { expires_in_secs: args.expires_in.unwrap_or(0), ..SendOptions::default() };
    let receipt = client.send_with(args.conversation, args.text.into_bytes(), options).await.map_err(|e| e.to_string())?;
    println!("sent: conversation {} seq {}", receipt.conversation_id, receipt.seq);
    client.close().await;
    Ok(())
}

async fn listen(args: ListenArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    eprintln!("listening as {}/{}; Ctrl-C to stop", client.user(), client.device());
    let mut seen = 0usize;
    while args.count.is_none_or(|n| seen < n) {
        let message = tokio::select! {
            m = client.next_message() => m,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(message) = message else { break };
        print_message(&message);
        client.ack(message.conversation_id, message.seq).await.map_err(|e| e.to_string())?;
        seen += 1;
    }
    client.close().await;
    Ok(())
}

async fn history(args: HistoryArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    let page = client.history(args.conversation, args.from, args.limit).await.map_err(|e| e.to_string())?;
    for message in &page.messages {
        print_message(message);
    }
    eprintln!("head {}; next page from {}", page.head_seq, page.next_seq);
    client.close().await;
    Ok(())
}

async fn conversations(args: ClientArgs) -> Result<(), String> {
    let client = connect(&args.conn).await?;
    for c in client.sync(true).await.map_err(|e| e.to_string())? {
        println!("{}\t{:?}\thead {}\tread up to {}", c.conversation_id, c.kind, c.head_seq, c.cursor);
    }
    client.close().await;
    Ok(())
}

fn print_message(m: &Message) {
    println!("[{} #{}] {}/{}: {}", m.conversation_id, m.seq, m.sender_user, m.sender_device, String::from_utf8_lossy(&m.payload));
}
