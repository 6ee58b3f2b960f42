//! The server's commands: one per request an authenticated device may send,
//! built once from the wire body (the proto structs, not copies of them),
//! each with its route: answered on the connection's shard, or by the owner
//! shard of one conversation. Each command file in `cmd/` applies its
//! request and returns an [`Outcome`] (reply, durability, effects); the
//! drivers (the owner's batch loop, the connection for local commands)
//! persist, answer and perform the effects, one convention for all.
//!
//! Adding a request: its struct in its proto family file, its apply in
//! `cmd/`, and a variant plus two match arms here.

use tern_proto::body::{
    calls, conversations, devices, messaging, mls, prekeys, presence, privacy, push, reach, safety,
    settings, sync, typing,
};
use tern_proto::fb::ErrorCode;
use tern_proto::Body;
use tern_store::ConversationId;

use crate::cmd;
use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use crate::shard::ShardCtx;

/// Where a command is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// On the shard that holds the connection.
    Local,
    /// On the owner shard of this conversation (`hash(id) % shards`).
    Owner(ConversationId),
}

/// A request from an authenticated device.
#[derive(Debug)]
pub enum Command {
    Local(LocalCommand),
    Owner(OwnerCommand),
}

/// Requests answered on the connection's shard: the key directory, devices,
/// and the device's sync state.
#[derive(Debug)]
pub enum LocalCommand {
    Sync(sync::Sync),
    UploadPrekeys(Box<prekeys::UploadPrekeys>),
    ClaimPrekeys(prekeys::ClaimPrekeys),
    UploadKeyPackages(mls::UploadKeyPackages),
    ClaimKeyPackages(mls::ClaimKeyPackages),
    ListDevices(devices::ListDevices),
    RevokeDevice(devices::RevokeDevice),
    ApproveLink(devices::ApproveLink),
    SetPrivacy(privacy::SetPrivacy),
    ListInvitations(privacy::ListInvitations),
    AnswerInvitation(privacy::AnswerInvitation),
    Block(safety::Block),
    Unblock(safety::Unblock),
    ListBlocked(safety::ListBlocked),
    GetPrivacy(reach::GetPrivacy),
    AcceptRequest(reach::AcceptRequest),
    SetPresence(presence::SetPresence),
    SubscribePresence(presence::SubscribePresence),
    UnsubscribePresence(presence::UnsubscribePresence),
    CountOnline(presence::CountOnline),
    SetPresenceVisibility(presence::SetPresenceVisibility),
    GetTurnCredentials(calls::GetTurnCredentials),
    RegisterPush(push::RegisterPush),
    UnregisterPush(push::UnregisterPush),
}

/// Requests answered by the owner of one conversation, which sequences,
/// authorises and persists everything about it.
#[derive(Debug)]
pub enum OwnerCommand {
    /// A new conversation, with the id the connection's shard drew for it.
    Create(ConversationId, conversations::CreateConversation),
    AddMembers(conversations::AddMembers),
    RemoveMembers(conversations::RemoveMembers),
    Send(messaging::Send),
    SendGroup(messaging::SendGroup),
    SendToDevices(messaging::SendToDevices),
    Ack(messaging::Ack),
    History(messaging::History),
    Commit(Box<mls::Commit>),
    GetGroupInfo(mls::GetGroupInfo),
    Invite(privacy::Invite),
    Purge(safety::PurgeMessage),
    SetTimer(settings::SetTimer),
    SetAdmin(settings::SetAdmin),
    ListAdmins(settings::ListAdmins),
    SetMemberAdds(settings::SetMemberAdds),
    /// A typing signal (on the stream or from a datagram): fanned out to
    /// online members, never stored, never refused.
    Typing(typing::Typing),
    /// Call signals for listed devices: pushed at once, held a minute in
    /// memory, never stored (see `realtime::calls`).
    CallSignal(calls::CallSignal),
}

/// Outbound bytes an ordinary answer reserves before its request runs
/// (acks, `Done`, short errors; a larger one is counted in full when built).
const SMALL_ANSWER: usize = 1024;

impl Command {
    /// Bytes of the connection's outbound budget this request reserves for
    /// its answer before it runs: a History page's worst case, and a small
    /// nominal size for everything else (see `outbound`).
    pub fn answer_reservation(&self, config: &crate::config::ServerConfig) -> usize {
        match self {
            Command::Owner(OwnerCommand::History(_)) => crate::cmd::history::max_page_frame(config),
            // A GroupInfo may be as large as a staged part (§4.12.1).
            Command::Owner(OwnerCommand::GetGroupInfo(_)) => {
                SMALL_ANSWER.saturating_add(config.max_mls_handshake_bytes)
            }
            _ => SMALL_ANSWER,
        }
    }

    /// The command a request body asks for. A body past a protocol limit
    /// (`tern_proto::limits`, the SDK checks the same) is refused as
    /// `InvalidArgument`; handshake bodies (Register, Authenticate,
    /// RequestLink) as `AlreadyAuthenticated`; bodies only servers send, as
    /// `UnsupportedBody`.
    pub fn from_body(body: Body) -> Result<Command, Reject> {
        use LocalCommand as L;
        use OwnerCommand as O;
        tern_proto::limits::check(&body)
            .map_err(|over| Reject::new(ErrorCode::InvalidArgument, over.to_string()))?;
        Ok(match body {
            Body::Sync(b) => Command::Local(L::Sync(b)),
            Body::UploadPrekeys(b) => Command::Local(L::UploadPrekeys(b)),
            Body::ClaimPrekeys(b) => Command::Local(L::ClaimPrekeys(b)),
            Body::UploadKeyPackages(b) => Command::Local(L::UploadKeyPackages(b)),
            Body::ClaimKeyPackages(b) => Command::Local(L::ClaimKeyPackages(b)),
            Body::ListDevices(b) => Command::Local(L::ListDevices(b)),
            Body::RevokeDevice(b) => Command::Local(L::RevokeDevice(b)),
            Body::ApproveLink(b) => Command::Local(L::ApproveLink(b)),
            Body::SetPrivacy(b) => Command::Local(L::SetPrivacy(b)),
            Body::ListInvitations(b) => Command::Local(L::ListInvitations(b)),
            Body::AnswerInvitation(b) => Command::Local(L::AnswerInvitation(b)),
            Body::Block(b) => Command::Local(L::Block(b)),
            Body::Unblock(b) => Command::Local(L::Unblock(b)),
            Body::ListBlocked(b) => Command::Local(L::ListBlocked(b)),
            Body::GetPrivacy(b) => Command::Local(L::GetPrivacy(b)),
            Body::AcceptRequest(b) => Command::Local(L::AcceptRequest(b)),
            Body::SetPresence(b) => Command::Local(L::SetPresence(b)),
            Body::SubscribePresence(b) => Command::Local(L::SubscribePresence(b)),
            Body::UnsubscribePresence(b) => Command::Local(L::UnsubscribePresence(b)),
            Body::CountOnline(b) => Command::Local(L::CountOnline(b)),
            Body::SetPresenceVisibility(b) => Command::Local(L::SetPresenceVisibility(b)),
            Body::GetTurnCredentials(b) => Command::Local(L::GetTurnCredentials(b)),
            Body::RegisterPush(b) => Command::Local(L::RegisterPush(b)),
            Body::UnregisterPush(b) => Command::Local(L::UnregisterPush(b)),
            Body::Invite(b) => Command::Owner(O::Invite(b)),
            Body::PurgeMessage(b) => Command::Owner(O::Purge(b)),
            Body::SetTimer(b) => Command::Owner(O::SetTimer(b)),
            Body::SetAdmin(b) => Command::Owner(O::SetAdmin(b)),
            Body::ListAdmins(b) => Command::Owner(O::ListAdmins(b)),
            Body::SetMemberAdds(b) => Command::Owner(O::SetMemberAdds(b)),
            Body::CreateConversation(b) => Command::Owner(O::Create(fresh_conversation_id(), b)),
            Body::AddMembers(b) => Command::Owner(O::AddMembers(b)),
            Body::RemoveMembers(b) => Command::Owner(O::RemoveMembers(b)),
            Body::Send(b) => Command::Owner(O::Send(b)),
            Body::SendGroup(b) => Command::Owner(O::SendGroup(b)),
            Body::SendToDevices(b) => Command::Owner(O::SendToDevices(b)),
            Body::Ack(b) => Command::Owner(O::Ack(b)),
            Body::History(b) => Command::Owner(O::History(b)),
            Body::Commit(b) => Command::Owner(O::Commit(b)),
            Body::GetGroupInfo(b) => Command::Owner(O::GetGroupInfo(b)),
            Body::Typing(b) => Command::Owner(O::Typing(b)),
            Body::CallSignal(b) => Command::Owner(O::CallSignal(b)),
            Body::Register(_) | Body::Authenticate(_) | Body::RequestLink(_) => {
                return Err(Reject::new(
                    ErrorCode::AlreadyAuthenticated,
                    "this connection is already authenticated",
                ))
            }
            _ => {
                return Err(Reject::new(
                    ErrorCode::UnsupportedBody,
                    "this body is sent by servers only",
                ))
            }
        })
    }

    pub fn route(&self) -> Route {
        match self {
            Command::Local(_) => Route::Local,
            Command::Owner(command) => Route::Owner(command.conversation()),
        }
    }
}

impl LocalCommand {
    /// Applies the request of `caller` on connection `conn_id` (presence
    /// subscriptions are per connection).
    pub async fn apply(self, ctx: &ShardCtx, caller: &Caller, conn_id: u64) -> Outcome {
        use LocalCommand as L;
        let conn = || crate::presence::ConnRef {
            user: caller.user.clone(),
            device: caller.device,
            conn_id,
        };
        let result = match self {
            L::Sync(b) => cmd::sync::apply(ctx, caller, b).await,
            L::UploadPrekeys(b) => cmd::keys::upload_prekeys(ctx, caller, *b).await,
            L::ClaimPrekeys(b) => cmd::keys::claim_prekeys(ctx, caller, b.user).await,
            L::UploadKeyPackages(b) => {
                cmd::keys::upload_key_packages(ctx, caller, b.key_packages, b.last_resort).await
            }
            L::ClaimKeyPackages(b) => cmd::keys::claim_key_packages(ctx, caller, b.users).await,
            L::ListDevices(b) => cmd::devices::list(ctx, b.user).await,
            L::RevokeDevice(b) => cmd::devices::revoke(ctx, caller, b.device).await,
            L::ApproveLink(b) => cmd::devices::approve(ctx, caller, b.link_id, b.approve).await,
            L::SetPrivacy(b) => cmd::reach::set_privacy(ctx, caller, b).await,
            L::ListInvitations(_) => cmd::consent::list(ctx, caller).await,
            L::AnswerInvitation(b) => {
                cmd::consent::answer(ctx, caller, b.conversation_id, b.accept).await
            }
            L::Block(b) => cmd::block::block(ctx, caller, b.user).await,
            L::Unblock(b) => cmd::block::unblock(ctx, caller, b.user).await,
            L::ListBlocked(_) => cmd::block::list(ctx, caller).await,
            L::GetPrivacy(_) => cmd::reach::get_privacy(ctx, caller).await,
            L::AcceptRequest(b) => cmd::reach::accept_request(ctx, caller, b.conversation_id).await,
            L::SetPresence(b) => cmd::presence::set(ctx, &conn(), b).await,
            L::SubscribePresence(b) => cmd::presence::subscribe(ctx, &conn(), b.users).await,
            L::UnsubscribePresence(b) => cmd::presence::unsubscribe(ctx, &conn(), b.users).await,
            L::CountOnline(b) => cmd::presence::count_online(ctx, caller, b.conversation_id).await,
            L::SetPresenceVisibility(b) => {
                cmd::presence::set_visibility(ctx, caller, b.visibility).await
            }
            L::GetTurnCredentials(_) => crate::realtime::turn::get(ctx, caller).await,
            L::RegisterPush(b) => crate::push::register(ctx, caller, b).await,
            L::UnregisterPush(_) => crate::push::unregister(ctx, caller).await,
        };
        Outcome::or_refused(result)
    }
}

impl OwnerCommand {
    /// The conversation whose owner applies the command.
    pub fn conversation(&self) -> ConversationId {
        use OwnerCommand as O;
        match self {
            O::Create(id, _) => *id,
            O::AddMembers(b) => b.conversation_id,
            O::RemoveMembers(b) => b.conversation_id,
            O::Send(b) => b.conversation_id,
            O::SendGroup(b) => b.conversation_id,
            O::SendToDevices(b) => b.conversation_id,
            O::Ack(b) => b.conversation_id,
            O::History(b) => b.conversation_id,
            O::Commit(b) => b.conversation_id,
            O::GetGroupInfo(b) => b.conversation_id,
            O::Invite(b) => b.conversation_id,
            O::Purge(b) => b.conversation_id,
            O::SetTimer(b) => b.conversation_id,
            O::SetAdmin(b) => b.conversation_id,
            O::ListAdmins(b) => b.conversation_id,
            O::SetMemberAdds(b) => b.conversation_id,
            O::Typing(b) => b.conversation_id,
            O::CallSignal(b) => b.conversation_id,
        }
    }

    /// The request body this command was built from, to forward it to the
    /// owner node in a cluster (`crate::node`). A `Create` gives up the id
    /// this node drew: the owner draws its own.
    pub fn into_body(self) -> Body {
        use OwnerCommand as O;
        match self {
            O::Create(_, b) => Body::CreateConversation(b),
            O::AddMembers(b) => Body::AddMembers(b),
            O::RemoveMembers(b) => Body::RemoveMembers(b),
            O::Send(b) => Body::Send(b),
            O::SendGroup(b) => Body::SendGroup(b),
            O::SendToDevices(b) => Body::SendToDevices(b),
            O::Ack(b) => Body::Ack(b),
            O::History(b) => Body::History(b),
            O::Commit(b) => Body::Commit(b),
            O::GetGroupInfo(b) => Body::GetGroupInfo(b),
            O::Invite(b) => Body::Invite(b),
            O::Purge(b) => Body::PurgeMessage(b),
            O::SetTimer(b) => Body::SetTimer(b),
            O::SetAdmin(b) => Body::SetAdmin(b),
            O::ListAdmins(b) => Body::ListAdmins(b),
            O::SetMemberAdds(b) => Body::SetMemberAdds(b),
            O::Typing(b) => Body::Typing(b),
            O::CallSignal(b) => Body::CallSignal(b),
        }
    }

    /// True for commands whose only write is a staged append (the sends):
    /// the driver writes staged appends before applying any other command,
    /// so that a command's own writes never overtake them.
    pub fn only_stages(&self) -> bool {
        matches!(
            self,
            OwnerCommand::Send(_) | OwnerCommand::SendGroup(_) | OwnerCommand::SendToDevices(_)
        )
    }

    pub async fn apply(self, owner: &mut Owner, caller: &Caller) -> Outcome {
        use OwnerCommand as O;
        match self {
            O::Create(id, b) => cmd::create::apply(owner, caller, id, b.kind, b.members).await,
            O::AddMembers(b) => {
                cmd::members::add(owner, caller, b.conversation_id, b.members).await
            }
            O::RemoveMembers(b) => {
                cmd::members::remove(owner, caller, b.conversation_id, b.members).await
            }
            O::Send(b) => cmd::send::apply(owner, caller, b.into()).await,
            O::SendGroup(b) => {
                let epoch = b.epoch;
                cmd::commit::send_in_epoch(owner, caller, b.into(), epoch).await
            }
            O::SendToDevices(b) => {
                let (send, payloads) = cmd::send::SendOp::per_device(b);
                cmd::send::apply_per_device(owner, caller, send, payloads).await
            }
            O::Ack(b) => cmd::ack::apply(owner, caller, b.conversation_id, b.seq).await,
            O::History(b) => {
                let (id, from, limit) = (b.conversation_id, b.from_seq, b.limit);
                cmd::history::apply(owner, caller, id, from, limit).await
            }
            O::Commit(b) => cmd::commit::apply(owner, caller, *b).await,
            O::GetGroupInfo(b) => cmd::commit::group_info(owner, caller, b.conversation_id).await,
            O::Invite(b) => cmd::consent::invite(owner, caller, b).await,
            O::Purge(b) => cmd::purge::apply(owner, caller, b).await,
            O::SetTimer(b) => cmd::timer::apply(owner, caller, b).await,
            O::SetAdmin(b) => cmd::admin::set(owner, caller, b).await,
            O::ListAdmins(b) => cmd::admin::list(owner, caller, b).await,
            O::SetMemberAdds(b) => cmd::admin::set_member_adds(owner, caller, b).await,
            O::Typing(b) => crate::realtime::typing::apply(owner, caller, b).await,
            O::CallSignal(b) => crate::realtime::calls::apply(owner, caller, b).await,
        }
    }
}

/// A random non-zero conversation id.
fn fresh_conversation_id() -> ConversationId {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}
