//! `tern presence`: set this device's presence (`--away`, `--busy`,
//! `--online`), the account's status text (`--status TEXT`, empty clears
//! it) and who sees it (`--visibility`); `tern presence watch USER...`
//! prints the users' presence, then each change until Ctrl-C (or `--count
//! N` changes). Both use the plain transport client, so they work while
//! `tern listen` holds the state directory.

use tern_client::presence::presence_change;
use tern_client::Client;
use tern_proto::body::presence::{PresenceEntry, PresenceState, PresenceVisibility};

use super::chat::{options, shown};
use super::ops::utc_time;
use super::Connection;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PresenceArgs {
    #[command(subcommand)]
    command: Option<PresenceCommand>,
    #[command(flatten)]
    conn: Connection,
    /// Show this device as away.
    #[arg(long, conflicts_with_all = ["busy", "online"])]
    away: bool,
    /// Show this device as busy (do not disturb).
    #[arg(long, conflicts_with = "online")]
    busy: bool,
    /// Show this device as online again.
    #[arg(long)]
    online: bool,
    /// Your status text (at most 140 characters; "" clears it).
    #[arg(long, value_name = "TEXT")]
    status: Option<String>,
    /// Who sees your presence: people you share a conversation with (the default), everyone, or nobody (then you see nobody's).
    #[arg(long, value_enum)]
    visibility: Option<VisibilityArg>,
}

#[derive(clap::Subcommand, Debug)]
enum PresenceCommand {
    /// Print users' presence, then every change until Ctrl-C.
    Watch(WatchArgs),
}

#[derive(clap::Args, Debug)]
struct WatchArgs {
    #[command(flatten)]
    conn: Connection,
    /// The users to watch.
    #[arg(required = true)]
    users: Vec<String>,
    /// Stop after this many changes.
    #[arg(long)]
    count: Option<usize>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum VisibilityArg {
    Shared,
    Everyone,
    Nobody,
}

/// Runs `tern presence`.
pub fn run(args: PresenceArgs) -> Result<(), String> {
    super::init_client_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        match args.command {
            Some(PresenceCommand::Watch(watch)) => {
                let client = connect(&watch.conn).await?;
                let result = watch_users(&client, &watch.users, watch.count).await;
                client.close().await;
                result
            }
            None => {
                let client = connect(&args.conn).await?;
                let result = set(&client, &args).await;
                client.close().await;
                result
            }
        }
    })
}

async fn connect(conn: &Connection) -> Result<Client, String> {
    Client::connect(options(conn)?)
        .await
        .map_err(|e| e.to_string())
}

async fn set(client: &Client, args: &PresenceArgs) -> Result<(), String> {
    let state = match (args.away, args.busy, args.online) {
        (true, _, _) => Some(PresenceState::Away),
        (_, true, _) => Some(PresenceState::Busy),
        (_, _, true) => Some(PresenceState::Online),
        _ => None,
    };
    if state.is_none() && args.status.is_none() && args.visibility.is_none() {
        return Err(
            "say what to set: --away, --busy, --online, --status TEXT or --visibility".into(),
        );
    }
    if let Some(visibility) = args.visibility {
        let visibility = match visibility {
            VisibilityArg::Shared => PresenceVisibility::Shared,
            VisibilityArg::Everyone => PresenceVisibility::Everyone,
            VisibilityArg::Nobody => PresenceVisibility::Nobody,
        };
        client
            .set_presence_visibility(visibility)
            .await
            .map_err(|e| e.to_string())?;
        println!("presence visible to: {visibility:?}");
    }
    if state.is_some() || args.status.is_some() {
        let state = state.unwrap_or(PresenceState::Online);
        client
            .set_presence(state, args.status.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        println!("this device is {}", state_name(state));
    }
    Ok(())
}

async fn watch_users(
    client: &Client,
    users: &[String],
    count: Option<usize>,
) -> Result<(), String> {
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let entries = client
        .subscribe_presence(&names)
        .await
        .map_err(|e| e.to_string())?;
    for entry in &entries {
        println!("{}", line(entry));
    }
    let mut seen = 0;
    while count.is_none_or(|n| seen < n) {
        let notice = tokio::select! {
            notice = client.next_notice() => notice,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(notice) = notice else {
            return Err("the connection to the server closed".into());
        };
        if let Some(entry) = presence_change(&notice) {
            println!("{}", line(entry));
            seen += 1;
        }
    }
    Ok(())
}

/// `bob: away "at lunch" (last seen 2026-04-01 12:00:03 UTC)`.
fn line(entry: &PresenceEntry) -> String {
    let mut out = format!("{}: {}", shown(&entry.user), state_name(entry.state));
    if let Some(text) = &entry.status_text {
        out.push_str(&format!(" \"{}\"", shown(text)));
    }
    if entry.last_seen_ms > 0 && !matches!(entry.state, PresenceState::Online | PresenceState::Busy)
    {
        out.push_str(&format!(" (last seen {})", utc_time(entry.last_seen_ms)));
    }
    out
}

fn state_name(state: PresenceState) -> &'static str {
    match state {
        PresenceState::Unknown => "unknown",
        PresenceState::Online => "online",
        PresenceState::Away => "away",
        PresenceState::Busy => "busy",
        PresenceState::Offline => "offline",
    }
}
