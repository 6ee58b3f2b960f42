//! Call signalling from two terminals (issue 11): `tern call USER` rings
//! every device of USER and prints how the call goes (answered, busy,
//! declined, no answer after 45 s, hung up); `tern answer` waits for a call
//! to ring on this device and answers it; `tern hangup` declines the call
//! ringing here; `tern calls` prints this device's call history. Signals
//! are end-to-end encrypted by the SDK (docs/E2EE.md §8.3). Media is the
//! app's business: the SDP offered or answered is a flag, or a placeholder
//! that says so. During a call, Enter hangs up (end of input does not), as
//! do Ctrl-C and `--hang-up-after`.
//!
//! A call lives in the process that placed or answered it, which holds the
//! state directory meanwhile (a `tern listen` on it must be stopped first).
//! A device that connects within a minute of an offer still rings: the
//! server holds signals that long, so `tern answer` or `tern hangup` can be
//! started after `tern call`.

use std::time::Duration;

use tern_client::calls::machine::{End, Phase};
use tern_client::message_store::calls::{CallRecord, Direction};
use tern_client::message_store::{MessageStore, MESSAGE_STORE_FILE};
use tern_client::secure::calls::CallEvent;
use tern_client::secure::SecureClient;

use super::chat::{options, shown};
use super::ops::utc_time;
use super::{parse_seconds, Connection};

/// What `tern call` and `tern answer` offer when no `--sdp` is given: a
/// syntactically valid SDP (RFC 8866) with no media, since the terminal
/// client has none.
const PLACEHOLDER_SDP: &str =
    "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=tern terminal call (no media)\r\nt=0 0\r\n";

#[derive(clap::Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    conn: Connection,
    /// Who to call: every one of their devices rings.
    user: String,
    /// The session description to offer (WebRTC SDP); default: a placeholder without media.
    #[arg(long)]
    sdp: Option<String>,
    /// Hang up this many seconds after the call is answered (default: stay until a hangup).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    hang_up_after: Option<Duration>,
}

#[derive(clap::Args, Debug)]
pub struct AnswerArgs {
    #[command(flatten)]
    conn: Connection,
    /// The session description to answer with (WebRTC SDP); default: a placeholder without media.
    #[arg(long)]
    sdp: Option<String>,
    /// Hang up this many seconds after answering (default: stay until a hangup).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    hang_up_after: Option<Duration>,
    /// How long to wait for a call to ring.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    wait: Duration,
}

#[derive(clap::Args, Debug)]
pub struct HangupArgs {
    #[command(flatten)]
    conn: Connection,
    /// How long to wait for a call to ring.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    wait: Duration,
}

#[derive(clap::Args, Debug)]
pub struct CallsArgs {
    #[command(flatten)]
    conn: Connection,
    /// How many calls to show, newest first.
    #[arg(long, default_value = "20")]
    limit: u32,
}

/// Runs `tern call`.
pub fn call(args: CallArgs) -> Result<(), String> {
    let CallArgs {
        conn,
        user,
        sdp,
        hang_up_after,
    } = args;
    with_client(&conn, |client| async move {
        let sdp = sdp.unwrap_or_else(|| PLACEHOLDER_SDP.to_owned());
        let call_id = client
            .place_call(&user, sdp)
            .await
            .map_err(|e| e.to_string())?;
        println!("calling {} (call {call_id:016x})", shown(&user));
        in_call(&client, &user, false, hang_up_after).await
    })
}

/// Runs `tern answer`.
pub fn answer(args: AnswerArgs) -> Result<(), String> {
    let AnswerArgs {
        conn,
        sdp,
        hang_up_after,
        wait,
    } = args;
    with_client(&conn, |client| async move {
        let peer = ringing(&client, wait).await?;
        let sdp = sdp.unwrap_or_else(|| PLACEHOLDER_SDP.to_owned());
        client.answer_call(sdp).await.map_err(|e| e.to_string())?;
        in_call(&client, &peer, true, hang_up_after).await
    })
}

/// Runs `tern hangup`: declines the call ringing here.
pub fn hangup(args: HangupArgs) -> Result<(), String> {
    let wait = args.wait;
    with_client(&args.conn, |client| async move {
        let peer = ringing(&client, wait).await?;
        client.hang_up().await.map_err(|e| e.to_string())?;
        println!("declined the call from {}", shown(&peer));
        Ok(())
    })
}

/// Runs `tern calls`: reads the local store only (no connection).
pub fn calls(args: CallsArgs) -> Result<(), String> {
    let store =
        MessageStore::open(args.conn.state.join(MESSAGE_STORE_FILE)).map_err(|e| e.to_string())?;
    let calls = store.call_history(args.limit).map_err(|e| e.to_string())?;
    if calls.is_empty() {
        println!("no calls yet");
    }
    for call in &calls {
        println!("{}", call_line(call));
    }
    Ok(())
}

/// `2026-11-30 06:00:00 UTC outgoing bob answered 12 s`.
fn call_line(call: &CallRecord) -> String {
    let direction = match call.direction {
        Direction::Incoming => "incoming",
        Direction::Outgoing => "outgoing",
    };
    let mut line = format!(
        "{} {direction} {} {}",
        utc_time(call.started_ms),
        shown(&call.peer),
        call.outcome.name()
    );
    if call.duration_ms > 0 {
        line.push_str(&format!(" {} s", call.duration_ms.div_ceil(1000)));
    }
    line
}

/// Connects the SDK on `conn`'s state, runs `body`, closes.
fn with_client<F, Fut>(conn: &Connection, body: F) -> Result<(), String>
where
    F: FnOnce(std::sync::Arc<SecureClient>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    super::init_client_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = SecureClient::connect(options(conn)?)
            .await
            .map_err(|e| e.to_string())?;
        let client = std::sync::Arc::new(client);
        let result = body(client.clone()).await;
        client.close().await;
        result
    })
}

/// Waits up to `wait` for a call to ring here; prints it and returns the caller.
async fn ringing(client: &SecureClient, wait: Duration) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let event = tokio::time::timeout_at(deadline, client.next_call_event())
            .await
            .map_err(|_| format!("no call rang within {} s", wait.as_secs_f64()))?
            .ok_or("the client closed")?;
        if let CallEvent::Ringing { from, sdp, .. } = event {
            println!(
                "incoming call from {} (device {})",
                shown(&from.user),
                from.device
            );
            print_sdp("offer", &sdp);
            if matches!(client.call_phase(), Phase::Ringing { .. }) {
                return Ok(from.user);
            }
        }
    }
}

/// Follows the call until it ends, printing its course; hangs up on Enter,
/// Ctrl-C, or `hang_up_after` after connecting.
async fn in_call(
    client: &SecureClient,
    peer: &str,
    answered: bool,
    hang_up_after: Option<Duration>,
) -> Result<(), String> {
    let mut connected = answered;
    let mut lines = input_lines();
    let mut input_open = true;
    let far = Duration::from_secs(365 * 24 * 3600);
    let timer = tokio::time::sleep(far);
    tokio::pin!(timer);
    if answered {
        if let Some(after) = hang_up_after {
            timer.as_mut().reset(tokio::time::Instant::now() + after);
        }
    }
    loop {
        tokio::select! {
            event = client.next_call_event() => {
                let Some(event) = event else {
                    return Err("the client closed".into());
                };
                match event {
                    CallEvent::Connected { device, sdp, .. } => {
                        connected = true;
                        match sdp {
                            Some(sdp) => {
                                println!("answered by {} (device {device})", shown(peer));
                                print_sdp("answer", &sdp);
                            }
                            None => println!("connected with {} (device {device})", shown(peer)),
                        }
                        if let Some(after) = hang_up_after {
                            timer.as_mut().reset(tokio::time::Instant::now() + after);
                        }
                    }
                    CallEvent::Candidate { candidate, .. } => {
                        println!("candidate: {}", shown(&candidate));
                    }
                    CallEvent::Ended { why, .. } | CallEvent::StoppedRinging { why, .. } => {
                        println!("{}", ended(peer, why, connected));
                        return Ok(());
                    }
                    CallEvent::Ringing { .. } => {}
                }
            }
            line = lines.recv(), if input_open => match line {
                Some(()) => hang_up(client).await?,
                // End of input (or none): only Ctrl-C or the peer ends the call.
                None => input_open = false,
            },
            () = &mut timer => {
                timer.as_mut().reset(tokio::time::Instant::now() + far);
                hang_up(client).await?;
            }
            _ = tokio::signal::ctrl_c() => hang_up(client).await?,
        }
    }
}

/// One `()` per line typed on standard input, until its end (read on a
/// thread of its own: a blocking read cannot be cancelled).
fn input_lines() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Hangs up; the `Ended` event that follows ends [`in_call`].
async fn hang_up(client: &SecureClient) -> Result<(), String> {
    client.hang_up().await.map_err(|e| e.to_string())
}

/// Prints a call event heard by `tern listen` (which cannot take the call:
/// a call lives in the `tern answer` process). `ringing` keeps the caller
/// of the call ringing here, for the lines that follow; `flags` reach the
/// listener's account.
pub fn show_while_listening(event: &CallEvent, ringing: &mut Option<(u64, String)>, flags: &str) {
    match event {
        CallEvent::Ringing { call_id, from, .. } => {
            println!(
                "incoming call from {} (device {}): to take it, stop this listener and run \
                 `tern answer {flags}` within 45 s (`tern hangup {flags}` declines)",
                shown(&from.user),
                from.device
            );
            *ringing = Some((*call_id, from.user.clone()));
        }
        CallEvent::StoppedRinging { call_id, why } | CallEvent::Ended { call_id, why } => {
            let Some((_, peer)) = ringing.take_if(|(id, _)| id == call_id) else {
                return;
            };
            println!(
                "missed call from {}: {}",
                shown(&peer),
                stopped_ringing(&peer, *why)
            );
        }
        CallEvent::Connected { .. } | CallEvent::Candidate { .. } => {}
    }
}

/// Why a call ringing here stopped, in words (the callee's side).
fn stopped_ringing(caller: &str, why: End) -> String {
    let caller = shown(caller);
    match why {
        End::RemoteHangup => format!("{caller} cancelled it"),
        End::NoAnswer => "nobody answered within 45 s".to_owned(),
        End::LocalHangup => "declined here".to_owned(),
        End::Busy => "this device was busy".to_owned(),
        End::AnsweredElsewhere => "answered on another device".to_owned(),
        End::DeclinedElsewhere => "declined on another device".to_owned(),
    }
}

/// How the call ended, in words.
fn ended(peer: &str, why: End, connected: bool) -> String {
    let peer = shown(peer);
    match (why, connected) {
        (End::RemoteHangup, true) => format!("{peer} hung up"),
        (End::RemoteHangup, false) => format!("{peer} declined or cancelled the call"),
        (End::LocalHangup, true) => "hung up".to_owned(),
        (End::LocalHangup, false) => "cancelled".to_owned(),
        (End::Busy, _) => format!("{peer} is busy"),
        (End::NoAnswer, _) => format!("no answer from {peer}"),
        (End::AnsweredElsewhere, _) => "answered on another device".to_owned(),
        (End::DeclinedElsewhere, _) => "declined on another device".to_owned(),
    }
}

/// Prints a session description as `what: ` and its first line, then
/// its other lines (RFC 8866 separates them with CRLF) indented by two
/// spaces; other control characters stay escaped.
fn print_sdp(what: &str, sdp: &str) {
    let mut lines = sdp.lines();
    println!("{what}: {}", lines.next().map(shown).unwrap_or_default());
    for line in lines {
        println!("  {}", shown(line));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tern_client::message_store::calls::Outcome;

    #[test]
    fn history_lines_show_direction_outcome_and_duration() {
        let call = CallRecord {
            call_id: 1,
            conversation_id: 2,
            peer: "bob".into(),
            direction: Direction::Outgoing,
            outcome: Outcome::Answered,
            started_ms: 0,
            duration_ms: 1_500,
        };
        assert_eq!(
            call_line(&call),
            "1970-01-01 00:00:00 UTC outgoing bob answered 2 s"
        );
        let missed = CallRecord {
            direction: Direction::Incoming,
            outcome: Outcome::Missed,
            duration_ms: 0,
            ..call
        };
        assert_eq!(
            call_line(&missed),
            "1970-01-01 00:00:00 UTC incoming bob missed"
        );
        assert_eq!(ended("bob", End::Busy, false), "bob is busy");
        assert_eq!(ended("bob", End::RemoteHangup, true), "bob hung up");
    }
}
