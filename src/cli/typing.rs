//! `tern typing CONV [--stop]`: says this device is typing (or stopped) in a
//! conversation, once (on the stream: the command exits right after);
//! `tern typing watch [--count N]` prints "X is typing in C" and "X stopped
//! typing in C" as signals arrive and expire (10 s after the last refresh),
//! until Ctrl-C or N lines. Both use the plain transport client, so they
//! work while `tern listen` holds the state directory.

use std::time::{Duration, Instant};

use tern_client::typing::{typing_change, TypingEvent, TypingState};
use tern_client::Client;

use super::chat::{options, shown};
use super::Connection;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TypingArgs {
    #[command(subcommand)]
    command: Option<TypingCommand>,
    #[command(flatten)]
    conn: Connection,
    /// The conversation id.
    conversation: Option<u64>,
    /// Say you stopped typing instead.
    #[arg(long)]
    stop: bool,
}

#[derive(clap::Subcommand, Debug)]
enum TypingCommand {
    /// Print who starts and stops typing, until Ctrl-C.
    Watch(WatchArgs),
}

#[derive(clap::Args, Debug)]
struct WatchArgs {
    #[command(flatten)]
    conn: Connection,
    /// Stop after this many lines.
    #[arg(long)]
    count: Option<usize>,
}

/// Runs `tern typing`.
pub fn run(args: TypingArgs) -> Result<(), String> {
    super::init_client_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (conn, watch) = match &args.command {
            Some(TypingCommand::Watch(watch)) => (&watch.conn, Some(watch.count)),
            None => (&args.conn, None),
        };
        let client = Client::connect(options(conn)?)
            .await
            .map_err(|e| e.to_string())?;
        let result = match (watch, args.conversation) {
            (Some(count), _) => watch_typing(&client, count).await,
            (None, Some(conversation)) => signal(&client, conversation, !args.stop).await,
            (None, None) => Err("name the conversation: tern typing CONV [--stop]".into()),
        };
        client.close().await;
        result
    })
}

async fn signal(client: &Client, conversation: u64, typing: bool) -> Result<(), String> {
    // On the stream: the client closes right after, which could drop an
    // unsent datagram.
    client
        .typing_on_stream(conversation, typing)
        .await
        .map_err(|e| e.to_string())?;
    match typing {
        true => println!("typing in {conversation}"),
        false => println!("stopped typing in {conversation}"),
    }
    Ok(())
}

async fn watch_typing(client: &Client, count: Option<usize>) -> Result<(), String> {
    let start = Instant::now();
    let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut state = TypingState::new();
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        let wait = state
            .next_expiry()
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        let events = tokio::select! {
            notice = client.next_notice() => {
                let Some(notice) = notice else {
                    return Err("the connection to the server closed".into());
                };
                match typing_change(&notice) {
                    Some(change) => state.on_signal(change, now_ms()),
                    None => Vec::new(),
                }
            }
            _ = tokio::time::sleep(wait) => state.expire(now_ms()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        for event in events
            .iter()
            .take(count.map_or(usize::MAX, |n| n - printed))
        {
            println!("{}", line(event));
            printed += 1;
        }
    }
    Ok(())
}

/// `bob is typing in 42` / `bob stopped typing in 42`.
fn line(event: &TypingEvent) -> String {
    match event {
        TypingEvent::Started {
            conversation_id,
            user,
        } => format!("{} is typing in {conversation_id}", shown(user)),
        TypingEvent::Stopped {
            conversation_id,
            user,
        } => format!("{} stopped typing in {conversation_id}", shown(user)),
    }
}
