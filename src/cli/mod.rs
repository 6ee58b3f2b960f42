//! Command-line parsing and dispatch for the `tern` binary.

mod calls;
mod chat;
mod cluster;
mod content;
mod files;
mod forward;
mod identity;
mod migrate;
mod ops;
#[cfg(feature = "otlp")]
mod otlp;
mod presence;
mod privacy;
mod push;
mod safety;
mod serve;
mod typing;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::EnvFilter;

/// tern: end-to-end-encrypted messaging server and terminal client.
#[derive(Parser, Debug)]
#[command(name = "tern", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: the embedded store by default, ScyllaDB and a cluster by configuration (prints its address and certificate fingerprint).
    Serve(serve::ServeArgs),
    /// Apply the pending ScyllaDB schema migrations (creates the keyspace; safe to re-run).
    Migrate(migrate::MigrateArgs),
    /// Make the cluster CA (ca.pem, ca.key) that every node of a cluster loads.
    ClusterCa(cluster::ClusterCaArgs),
    /// Make a server TLS identity (cert.der, key.der) for nodes that share one (tls_dir).
    TlsIdentity(identity::TlsIdentityArgs),
    /// Create an account with this device and save its identity in --state.
    Register(chat::RegisterArgs),
    /// Create a conversation (direct, group or note-to-self) and print its id.
    Create(chat::CreateArgs),
    /// Add members to a group.
    Add(chat::MembersArgs),
    /// Remove members from a group (or yourself, to leave).
    Remove(chat::MembersArgs),
    /// Send one message to a conversation.
    Send(chat::SendArgs),
    /// Send a file (photo, video, voice note, any file) end-to-end encrypted, with a progress bar.
    SendFile(files::SendFileArgs),
    /// Download and decrypt the attachment of message SEQ (to -o FILE or the sender's file name).
    Fetch(files::FetchArgs),
    /// Print incoming messages as they arrive (catching up first), acknowledging each.
    Listen(chat::ListenArgs),
    /// Print a conversation's messages (text, sender, time) from this device's message store.
    History(chat::HistoryArgs),
    /// Search this device's messages for words and print the matches.
    Search(chat::SearchArgs),
    /// List this account's conversations with their heads and this device's delivery cursors.
    Conversations(chat::ClientArgs),
    /// Link this new device to an existing account (approve it from a linked device).
    Link(chat::LinkArgs),
    /// Approve (or --deny) a new device's link request.
    Approve(chat::ApproveArgs),
    /// List a user's devices, or --revoke one of yours.
    Devices(chat::DevicesArgs),
    /// Show or set who may start direct conversations with you and add you to groups.
    Privacy(privacy::PrivacyArgs),
    /// List message requests (direct conversations from strangers), or accept or delete one.
    Requests(privacy::RequestsArgs),
    /// Invite a user to a group you are in (they accept with `tern accept GROUP`).
    Invite(chat::InviteArgs),
    /// List the invitations to groups waiting for your answer.
    Invitations(chat::ClientArgs),
    /// Accept an invitation to a group: its members may then add you.
    Accept(chat::AnswerArgs),
    /// Decline an invitation to a group.
    Decline(chat::AnswerArgs),
    /// React to a message with an emoji (replacing your earlier reaction), or --remove it.
    React(content::ReactArgs),
    /// Reply to a message, quoting it.
    Reply(content::TextArgs),
    /// Replace the text of your message (within 24 hours of sending it).
    Edit(content::TextArgs),
    /// Delete a message on this device, or for --everyone (your own, or anyone's as a group administrator).
    Delete(content::DeleteArgs),
    /// Mark a conversation read up to SEQ (default: the latest message on this device).
    Read(content::ReadArgs),
    /// Turn read receipts on or off (off: you send none and see no one's).
    Receipts(content::ReceiptsArgs),
    /// Show a group's name and topic, or set them (--name, --topic); end-to-end encrypted.
    GroupInfo(content::GroupInfoArgs),
    /// Block a user: their messages to you are dropped and they cannot add you to groups.
    Block(safety::UserArgs),
    /// Unblock a user.
    Unblock(safety::UserArgs),
    /// List the users you block.
    Blocked(safety::ListArgs),
    /// Show a conversation's disappearing-message timer, or set it in seconds (0: off).
    Timer(safety::TimerArgs),
    /// Make a group member an administrator (or --revoke it); administrators only.
    Admin(safety::AdminArgs),
    /// Set your presence (--away, --busy, --online, --status, --visibility), or `watch` users'.
    Presence(presence::PresenceArgs),
    /// Say you are typing in a conversation (--stop: stopped), or `watch` who types.
    Typing(typing::TypingArgs),
    /// Call a user (every device of theirs rings) and follow the call; Enter hangs up.
    Call(calls::CallArgs),
    /// Wait for a call to ring on this device and answer it; Enter hangs up.
    Answer(calls::AnswerArgs),
    /// Decline the call ringing on this device (waiting for one to ring).
    Hangup(calls::HangupArgs),
    /// List this device's calls: when, incoming or outgoing, who, how it ended, how long.
    Calls(calls::CallsArgs),
    /// Register this device's push endpoint (`register URL`, or a gateway token) or `unregister` it.
    Push(push::PushArgs),
}

/// Client connection options shared by every client subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// Directory keeping this device's identity, keys, messages and server settings.
    #[arg(long, env = "TERN_STATE", default_value = "tern-client")]
    pub state: PathBuf,
    /// Server address; remembered in --state after `register`.
    #[arg(long, env = "TERN_SERVER")]
    pub server: Option<String>,
    /// SHA-256 fingerprint of the server certificate (printed by `tern serve`).
    #[arg(long, env = "TERN_FINGERPRINT", conflicts_with = "ca")]
    pub fingerprint: Option<String>,
    /// Trust a CA certificate file (PEM or DER) instead of pinning a fingerprint.
    #[arg(long, env = "TERN_CA")]
    pub ca: Option<PathBuf>,
    /// TLS server name to verify against a CA certificate.
    #[arg(long, env = "TERN_SERVER_NAME", default_value = "localhost")]
    pub server_name: String,
    /// Seconds to wait for the server to answer when connecting (decimals allowed, e.g. 0.5).
    #[arg(long, env = "TERN_CONNECT_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = parse_seconds)]
    pub connect_timeout: Duration,
}

/// A positive number of seconds, decimals allowed ("10", "0.3").
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("{text:?} must be more than 0 seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} seconds is too long"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::ClusterCa(args) => cluster::run(args),
        Command::TlsIdentity(args) => identity::run(args),
        Command::Block(args) => safety::block(args),
        Command::Unblock(args) => safety::unblock(args),
        Command::Blocked(args) => safety::blocked(args),
        Command::Timer(args) => safety::timer(args),
        Command::Admin(args) => safety::admin(args),
        Command::Presence(args) => presence::run(args),
        Command::Typing(args) => typing::run(args),
        Command::Call(args) => calls::call(args),
        Command::Answer(args) => calls::answer(args),
        Command::Hangup(args) => calls::hangup(args),
        Command::Calls(args) => calls::calls(args),
        Command::Push(args) => push::run(args),
        Command::SendFile(args) => files::send_file(args),
        Command::Fetch(args) => files::fetch(args),
        client => chat::run(client),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", in_cli_terms(&message));
            ExitCode::FAILURE
        }
    }
}

/// Protocol requests a server's refusal may name, with the command that
/// does the same here.
const REQUEST_COMMANDS: [(&str, &str); 5] = [
    ("(Invite)", "(tern invite GROUP USER)"),
    ("`ListBlocked`", "`tern blocked`"),
    ("(ListAdmins)", "(tern admin GROUP --list)"),
    ("(ListDevices)", "(tern devices)"),
    ("(AcceptRequest)", "(tern requests accept CONVERSATION)"),
];

/// `message` with each protocol request it names replaced by the `tern`
/// command to run instead.
pub fn in_cli_terms(message: &str) -> String {
    REQUEST_COMMANDS
        .iter()
        .fold(message.to_owned(), |text, (request, command)| {
            text.replace(request, command)
        })
}

/// Sets up logging: `RUST_LOG` wins, else `default`.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    install(filter);
}

/// Logging for `tern serve`: like [`init_logging`], and with `otlp` (the
/// collector's URL and this node's id) its spans exported over OTLP too.
/// The returned exporter must be shut down to send the last batch.
#[cfg(feature = "otlp")]
pub fn init_server_logging(
    default: &str,
    otlp: Option<(&str, Option<&str>)>,
) -> Result<Option<otlp::Exporter>, String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let Some((endpoint, node)) = otlp else {
        init_logging(default);
        return Ok(None);
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (spans, exporter) = otlp::layer(endpoint, node).map_err(|e| e.to_string())?;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init();
    Ok(Some(exporter))
}

/// Logging for the client commands: warnings and errors of tern itself
/// (`RUST_LOG` wins), never openmls's own log lines unless `RUST_LOG` names
/// openmls (it logs conditions the SDK handles, such as a message from an
/// epoch this device has left, as errors).
pub fn init_client_logging() {
    install(client_filter(std::env::var("RUST_LOG").ok().as_deref()));
}

fn client_filter(rust_log: Option<&str>) -> EnvFilter {
    let filter = rust_log
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    if rust_log.is_some_and(|text| text.contains("openmls")) {
        return filter;
    }
    match "openmls=off".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    }
}

fn install(filter: EnvFilter) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::client_filter;

    /// What a client's log shows for one error event of `target`, under `rust_log`.
    fn shown(rust_log: Option<&str>, target_is_openmls: bool) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(client_filter(rust_log))
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || match target_is_openmls {
            true => tracing::error!(target: "openmls::framing", "Sender data decryption error"),
            false => tracing::error!(target: "tern_client::sdk", "a real error"),
        });
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn openmls_errors_never_reach_the_terminal_unless_asked_for() {
        for rust_log in [None, Some("warn"), Some("debug"), Some("info,quinn=warn")] {
            assert_eq!(shown(rust_log, true), "", "{rust_log:?}");
            assert!(
                shown(rust_log, false).contains("a real error"),
                "{rust_log:?}"
            );
        }
        assert!(shown(Some("openmls=debug"), true).contains("decryption error"));
    }
}
