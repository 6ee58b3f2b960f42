//! The safety and settings subcommands: `tern block USER`, `tern unblock
//! USER`, `tern blocked`, `tern timer CONV [SECS]` and `tern admin CONV USER
//! [--revoke]` (or `--list`, or `--member-adds admins|everyone`). Each opens its own connection with the plain transport
//! client (no end-to-end state is needed), so it works while `tern listen`
//! holds the state directory.

use tern_client::Client;

use super::chat::{options, shown};
use super::Connection;

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    conn: Connection,
    /// The user's handle.
    user: String,
}

#[derive(clap::Args, Debug)]
pub struct TimerArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// Seconds after which each later message disappears from the server
    /// (0: off) [default: show the current timer].
    secs: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    conn: Connection,
    /// Group id.
    conversation: u64,
    /// The member to make an administrator.
    #[arg(required_unless_present_any = ["list", "member_adds"])]
    user: Option<String>,
    /// Take the role away instead.
    #[arg(long, requires = "user")]
    revoke: bool,
    /// List the group's administrators and who may add members.
    #[arg(long, conflicts_with_all = ["user", "member_adds"])]
    list: bool,
    /// Who may add members: only administrators (the default) or every member.
    #[arg(long, value_enum, conflicts_with = "user")]
    member_adds: Option<MemberAdds>,
}

/// `tern admin CONV --member-adds admins|everyone`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberAdds {
    Admins,
    Everyone,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    conn: Connection,
}

/// What a safety subcommand asks for.
enum Op {
    Block(String),
    Unblock(String),
    List,
    Timer(u64, Option<u32>),
    Admin(u64, String, bool),
    ListAdmins(u64),
    MemberAdds(u64, bool),
}

/// Runs `tern block`.
pub fn block(args: UserArgs) -> Result<(), String> {
    run(&args.conn, Op::Block(args.user))
}

/// Runs `tern unblock`.
pub fn unblock(args: UserArgs) -> Result<(), String> {
    run(&args.conn, Op::Unblock(args.user))
}

/// Runs `tern timer`.
pub fn timer(args: TimerArgs) -> Result<(), String> {
    run(&args.conn, Op::Timer(args.conversation, args.secs))
}

/// Runs `tern admin`.
pub fn admin(args: AdminArgs) -> Result<(), String> {
    let op = match (args.user, args.member_adds) {
        (Some(user), _) => Op::Admin(args.conversation, user, !args.revoke),
        (None, Some(adds)) => Op::MemberAdds(args.conversation, adds == MemberAdds::Everyone),
        (None, None) => Op::ListAdmins(args.conversation),
    };
    run(&args.conn, op)
}

/// Runs `tern blocked`.
pub fn blocked(args: ListArgs) -> Result<(), String> {
    run(&args.conn, Op::List)
}

fn run(conn: &Connection, op: Op) -> Result<(), String> {
    super::init_client_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = Client::connect(options(conn)?)
            .await
            .map_err(|e| e.to_string())?;
        let result = perform(&client, op).await;
        client.close().await;
        result
    })
}

async fn perform(client: &Client, op: Op) -> Result<(), String> {
    match op {
        Op::Block(user) => {
            client.block(&user).await.map_err(|e| e.to_string())?;
            println!(
                "blocked {}: their messages to you are dropped (they are not told) and they cannot add you to groups",
                shown(&user)
            );
        }
        Op::Unblock(user) => {
            let blocked = client.blocked().await.map_err(|e| e.to_string())?;
            // Asked anyway: the server says when no such user exists.
            client.unblock(&user).await.map_err(|e| e.to_string())?;
            match blocked.contains(&user) {
                true => println!("unblocked {}", shown(&user)),
                false => eprintln!(
                    "you did not block {}; nothing changed (tern blocked lists whom you block)",
                    shown(&user)
                ),
            }
        }
        Op::List => {
            let users = client.blocked().await.map_err(|e| e.to_string())?;
            if users.is_empty() {
                eprintln!("you block nobody");
            }
            for user in users {
                println!("{}", shown(&user));
            }
        }
        Op::Admin(conversation, user, admin) => {
            let admins = client
                .set_admin(conversation, &user, admin)
                .await
                .map_err(|e| e.to_string())?;
            let shown_admins: Vec<String> = admins.iter().map(|a| shown(a)).collect();
            println!(
                "administrators of {conversation}: {}",
                shown_admins.join(", ")
            );
        }
        Op::ListAdmins(conversation) => {
            let settings = client
                .admin_settings(conversation)
                .await
                .map_err(|e| e.to_string())?;
            let shown_admins: Vec<String> = settings.admins.iter().map(|a| shown(a)).collect();
            println!(
                "administrators of {conversation}: {}",
                shown_admins.join(", ")
            );
            println!("{}", who_adds(settings.everyone_adds));
        }
        Op::MemberAdds(conversation, everyone) => {
            client
                .set_member_adds(conversation, everyone)
                .await
                .map_err(|e| e.to_string())?;
            println!("{conversation}: {}", who_adds(everyone));
        }
        Op::Timer(conversation, None) => show_timer(client, conversation).await?,
        Op::Timer(conversation, Some(secs)) => {
            client
                .set_timer(conversation, secs)
                .await
                .map_err(|e| e.to_string())?;
            match secs {
                0 => println!("messages in {conversation} no longer disappear"),
                s => {
                    println!("later messages in {conversation} disappear {s} s after they are sent")
                }
            }
        }
    }
    Ok(())
}

/// Prints conversation `conversation`'s disappearing-message timer as the
/// server's Sync lists it.
async fn show_timer(client: &Client, conversation: u64) -> Result<(), String> {
    let states = client.sync(true).await.map_err(|e| e.to_string())?;
    let Some(state) = states.iter().find(|s| s.conversation_id == conversation) else {
        return Err(format!(
            "you are in no conversation {conversation}; tern conversations lists yours"
        ));
    };
    match state.timer_secs {
        0 => println!("messages in {conversation} do not disappear"),
        s => println!("messages in {conversation} disappear {s} s after they are sent"),
    }
    Ok(())
}

/// Who may add members, as `tern admin --list` says it.
fn who_adds(everyone: bool) -> &'static str {
    match everyone {
        true => "every member may add members",
        false => "only administrators may add members",
    }
}
