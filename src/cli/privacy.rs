//! Who may reach you: `tern privacy [--direct everyone|contacts|nobody]
//! [--groups everyone|contacts]` (no flags: print the current settings;
//! a flag left out leaves that setting as it is) and `tern requests`
//! (list message requests with their sender and first message), `tern
//! requests accept ID`, `tern requests delete ID [--block]`. Each is a
//! [`PrivacyOp`] inside [`Op::Privacy`], so a running `tern listen`
//! performs it for another invocation like every other command.

use serde::{Deserialize, Serialize};
use tern_client::secure::requests::RequestError;
use tern_client::secure::SecureClient;
use tern_client::Client;
use tern_proto::{DirectStarts, GroupAdds};

use super::chat::{shown, GroupAddsArg};
use super::ops::{Op, Printed};
use super::Connection;

/// `tern privacy --direct everyone|contacts|nobody`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectArg {
    /// Anyone may start a direct conversation with you; strangers' arrive
    /// as message requests (the default).
    Everyone,
    /// Only your contacts (people you started a conversation with, added,
    /// answered or accepted).
    Contacts,
    /// Nobody new (your existing direct conversations stay).
    Nobody,
}

#[derive(clap::Args, Debug)]
pub struct PrivacyArgs {
    #[command(flatten)]
    conn: Connection,
    /// Who may start a direct conversation with you [unchanged if left out].
    #[arg(long, value_enum)]
    direct: Option<DirectArg>,
    /// Who may add you to groups without an invitation [unchanged if left out].
    #[arg(long, value_enum, alias = "group-adds")]
    groups: Option<GroupAddsArg>,
}

/// `tern requests [accept|delete] [ID]`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestAction {
    /// Accept the request: its sender becomes your contact and gets your receipts.
    Accept,
    /// Delete the request from this device (with --block, block its sender too).
    Delete,
}

#[derive(clap::Args, Debug)]
pub struct RequestsArgs {
    #[command(flatten)]
    conn: Connection,
    /// What to do with request ID [default: list the requests].
    #[arg(value_enum, requires = "conversation")]
    action: Option<RequestAction>,
    /// The request's conversation id (shown by `tern requests`).
    conversation: Option<u64>,
    /// With delete: also block the sender (the server then drops their messages).
    #[arg(long)]
    block: bool,
}

/// One privacy or requests command's own arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivacyOp {
    /// `tern privacy [--direct X] [--groups Y]` (both `None`: show them).
    Privacy {
        direct: Option<DirectArg>,
        groups: Option<GroupAddsArg>,
    },
    /// `tern requests`
    List,
    /// `tern requests accept ID`
    Accept { conversation: u64 },
    /// `tern requests delete ID [--block]`
    Delete { conversation: u64, block: bool },
}

/// Runs `tern privacy` as [`Op::Privacy`] (own client, or the listener).
pub async fn privacy(args: PrivacyArgs) -> Result<(), String> {
    let op = PrivacyOp::Privacy {
        direct: args.direct,
        groups: args.groups,
    };
    super::chat::run_op(&args.conn, Op::Privacy(op)).await
}

/// Runs `tern requests` as [`Op::Privacy`].
pub async fn requests(args: RequestsArgs) -> Result<(), String> {
    let op = match (args.action, args.conversation) {
        (None, None) => PrivacyOp::List,
        (None, Some(_)) => return Err("say what to do with it: accept or delete".into()),
        (Some(RequestAction::Accept), Some(conversation)) => PrivacyOp::Accept { conversation },
        (Some(RequestAction::Delete), Some(conversation)) => PrivacyOp::Delete {
            conversation,
            block: args.block,
        },
        (Some(_), None) => return Err("name the request's conversation id".into()),
    };
    if args.block && !matches!(op, PrivacyOp::Delete { .. }) {
        return Err("--block goes with `tern requests delete ID`".into());
    }
    super::chat::run_op(&args.conn, Op::Privacy(op)).await
}

/// Performs `op` with `client`, writing what it prints into `out`.
pub async fn perform(
    client: &SecureClient,
    op: PrivacyOp,
    out: &mut Printed,
) -> Result<(), String> {
    let e = |e: RequestError| {
        match e {
        RequestError::NotARequest(id) => format!(
            "conversation {id} is not a pending message request (accepted, deleted, from a blocked user, or not from a stranger); `tern requests` lists them, and `tern block USER` stops a contact reaching you"
        ),
        other => other.to_string(),
    }
    };
    match op {
        PrivacyOp::Privacy { direct, groups } => {
            settings(client.transport(), direct, groups, out).await?
        }
        PrivacyOp::List => {
            let requests = client.requests().await.map_err(e)?;
            if requests.is_empty() {
                out.err("no message requests");
            }
            for r in requests {
                let preview = r
                    .preview
                    .as_deref()
                    .map_or("(no message here yet)".into(), shown);
                out.out(format!(
                    "{}\t{}\t{preview}",
                    r.conversation_id,
                    shown(&r.from)
                ));
            }
        }
        PrivacyOp::Accept { conversation } => {
            client.accept_request(conversation).await.map_err(e)?;
            out.out(format!(
                "accepted {conversation}: its sender is now a contact and gets your receipts"
            ));
        }
        PrivacyOp::Delete {
            conversation,
            block,
        } => {
            let from = client
                .delete_request(conversation, block)
                .await
                .map_err(e)?;
            let blocked = match block {
                true => format!("; {} is blocked", shown(&from)),
                false => String::new(),
            };
            out.out(format!(
                "deleted request {conversation} from {}{blocked}",
                shown(&from)
            ));
        }
    }
    Ok(())
}

/// Changes the settings given, then prints them all.
async fn settings(
    client: &Client,
    direct: Option<DirectArg>,
    groups: Option<GroupAddsArg>,
    out: &mut Printed,
) -> Result<(), String> {
    let direct = direct.map(|d| match d {
        DirectArg::Everyone => DirectStarts::Everyone,
        DirectArg::Contacts => DirectStarts::Contacts,
        DirectArg::Nobody => DirectStarts::Nobody,
    });
    let groups = groups.map(|g| match g {
        GroupAddsArg::Everyone => GroupAdds::Everyone,
        GroupAddsArg::Contacts => GroupAdds::Contacts,
    });
    let e = |e: tern_client::ClientError| e.to_string();
    client.update_privacy(groups, direct).await.map_err(e)?;
    let now = client.privacy().await.map_err(e)?;
    let direct = match now.direct_starts {
        DirectStarts::Everyone => "everyone (strangers' arrive as message requests)",
        DirectStarts::Contacts => "contacts",
        DirectStarts::Nobody => "nobody",
    };
    let groups = match now.group_adds {
        GroupAdds::Everyone => "everyone",
        GroupAdds::Contacts => "contacts (others send an invitation)",
    };
    out.out(format!("direct conversations: {direct}"));
    out.out(format!("group adds: {groups}"));
    Ok(())
}
