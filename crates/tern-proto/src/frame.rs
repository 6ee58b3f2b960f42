//! A frame and its body: [`Body`] wraps one struct per wire body (each with
//! its encoding and decoding, see [`crate::body`]), and this module
//! dispatches between the union tag and those structs.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use crate::body::{
    auth, calls, conversations, devices, errors, messaging, missing, mls, prekeys, presence,
    privacy, push, reach, safety, settings, sync, typing, Builder, Union, WireBody,
};
use crate::codec::{FrameError, Limits, LEN_PREFIX};
use crate::fb;

/// Every frame body of protocol version 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Register(auth::Register),
    Registered(auth::Registered),
    Authenticate(auth::Authenticate),
    Authenticated(auth::Authenticated),
    CreateConversation(conversations::CreateConversation),
    ConversationInfo(conversations::ConversationInfo),
    AddMembers(conversations::AddMembers),
    RemoveMembers(conversations::RemoveMembers),
    Send(messaging::Send),
    SendAck(messaging::SendAck),
    Deliver(messaging::Message),
    Ack(messaging::Ack),
    Done(messaging::Done),
    Sync(sync::Sync),
    SyncResult(sync::SyncResult),
    History(messaging::History),
    HistoryPage(messaging::HistoryPage),
    Error(errors::ErrorBody),
    // ----- end-to-end encryption -----
    /// A `Send` of an MLS application message encrypted in `epoch`.
    SendGroup(messaging::SendGroup),
    /// A `Send` with one ciphertext per recipient device.
    SendToDevices(messaging::SendToDevices),
    /// An `Error` carrying the state to recover with (epoch, device set).
    Conflict(errors::Conflict),
    RequestLink(auth::RequestLink),
    LinkPrompt(devices::LinkPrompt),
    ApproveLink(devices::ApproveLink),
    ListDevices(devices::ListDevices),
    DeviceList(devices::DeviceList),
    RevokeDevice(devices::RevokeDevice),
    DeviceListChanged(devices::DeviceListChanged),
    UploadPrekeys(Box<prekeys::UploadPrekeys>),
    KeyCounts(prekeys::KeyCounts),
    ClaimPrekeys(prekeys::ClaimPrekeys),
    PrekeyBundle(prekeys::PrekeyBundle),
    KeysLow(prekeys::KeysLow),
    UploadKeyPackages(mls::UploadKeyPackages),
    ClaimKeyPackages(mls::ClaimKeyPackages),
    KeyPackages(mls::KeyPackages),
    Commit(Box<mls::Commit>),
    CommitAccepted(mls::CommitAccepted),
    GetGroupInfo(mls::GetGroupInfo),
    GroupInfo(mls::GroupInfo),
    // ----- privacy and consent -----
    SetPrivacy(privacy::SetPrivacy),
    Invite(privacy::Invite),
    Invited(privacy::Invited),
    ListInvitations(privacy::ListInvitations),
    Invitations(privacy::Invitations),
    AnswerInvitation(privacy::AnswerInvitation),
    InvitationAnswered(privacy::InvitationAnswered),
    // ----- blocking -----
    Block(safety::Block),
    Unblock(safety::Unblock),
    ListBlocked(safety::ListBlocked),
    Blocked(safety::Blocked),
    // ----- deleting for everyone -----
    PurgeMessage(safety::PurgeMessage),
    // ----- conversation settings -----
    SetTimer(settings::SetTimer),
    TimerChanged(settings::TimerChanged),
    SetAdmin(settings::SetAdmin),
    ListAdmins(settings::ListAdmins),
    Admins(settings::Admins),
    SetMemberAdds(settings::SetMemberAdds),
    // ----- who may reach me -----
    GetPrivacy(reach::GetPrivacy),
    Privacy(reach::Privacy),
    AcceptRequest(reach::AcceptRequest),
    // ----- presence -----
    SetPresence(presence::SetPresence),
    SubscribePresence(presence::SubscribePresence),
    UnsubscribePresence(presence::UnsubscribePresence),
    PresenceSnapshot(presence::PresenceSnapshot),
    PresenceChanged(presence::PresenceChanged),
    CountOnline(presence::CountOnline),
    OnlineCount(presence::OnlineCount),
    SetPresenceVisibility(presence::SetPresenceVisibility),
    // ----- typing -----
    Typing(typing::Typing),
    TypingChanged(typing::TypingChanged),
    // ----- calls -----
    GetTurnCredentials(calls::GetTurnCredentials),
    TurnCredentials(calls::TurnCredentials),
    CallSignal(calls::CallSignal),
    CallSignalled(calls::CallSignalled),
    // ----- push notifications -----
    RegisterPush(push::RegisterPush),
    UnregisterPush(push::UnregisterPush),
}

/// `From<Struct> for Body` and `TryFrom<Body> for Struct` (which hands any
/// other body back) for every body struct; boxed variants box and unbox.
macro_rules! body_conversions {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for Body {
            fn from(body: $ty) -> Body {
                Body::$variant(body)
            }
        }

        impl TryFrom<Body> for $ty {
            type Error = Body;

            fn try_from(body: Body) -> Result<Self, Body> {
                match body {
                    Body::$variant(inner) => Ok(inner),
                    other => Err(other),
                }
            }
        }
    )*};
    (boxed $($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for Body {
            fn from(body: $ty) -> Body {
                Body::$variant(Box::new(body))
            }
        }

        impl TryFrom<Body> for $ty {
            type Error = Body;

            fn try_from(body: Body) -> Result<Self, Body> {
                match body {
                    Body::$variant(inner) => Ok(*inner),
                    other => Err(other),
                }
            }
        }
    )*};
}

body_conversions! {
    Register(auth::Register),
    Registered(auth::Registered),
    Authenticate(auth::Authenticate),
    Authenticated(auth::Authenticated),
    CreateConversation(conversations::CreateConversation),
    ConversationInfo(conversations::ConversationInfo),
    AddMembers(conversations::AddMembers),
    RemoveMembers(conversations::RemoveMembers),
    Send(messaging::Send),
    SendAck(messaging::SendAck),
    Deliver(messaging::Message),
    Ack(messaging::Ack),
    Done(messaging::Done),
    Sync(sync::Sync),
    SyncResult(sync::SyncResult),
    History(messaging::History),
    HistoryPage(messaging::HistoryPage),
    Error(errors::ErrorBody),
    SendGroup(messaging::SendGroup),
    SendToDevices(messaging::SendToDevices),
    Conflict(errors::Conflict),
    RequestLink(auth::RequestLink),
    LinkPrompt(devices::LinkPrompt),
    ApproveLink(devices::ApproveLink),
    ListDevices(devices::ListDevices),
    DeviceList(devices::DeviceList),
    RevokeDevice(devices::RevokeDevice),
    DeviceListChanged(devices::DeviceListChanged),
    KeyCounts(prekeys::KeyCounts),
    ClaimPrekeys(prekeys::ClaimPrekeys),
    PrekeyBundle(prekeys::PrekeyBundle),
    KeysLow(prekeys::KeysLow),
    UploadKeyPackages(mls::UploadKeyPackages),
    ClaimKeyPackages(mls::ClaimKeyPackages),
    KeyPackages(mls::KeyPackages),
    CommitAccepted(mls::CommitAccepted),
    GetGroupInfo(mls::GetGroupInfo),
    GroupInfo(mls::GroupInfo),
    SetPrivacy(privacy::SetPrivacy),
    Invite(privacy::Invite),
    Invited(privacy::Invited),
    ListInvitations(privacy::ListInvitations),
    Invitations(privacy::Invitations),
    AnswerInvitation(privacy::AnswerInvitation),
    InvitationAnswered(privacy::InvitationAnswered),
    Block(safety::Block),
    Unblock(safety::Unblock),
    ListBlocked(safety::ListBlocked),
    Blocked(safety::Blocked),
    PurgeMessage(safety::PurgeMessage),
    SetTimer(settings::SetTimer),
    TimerChanged(settings::TimerChanged),
    SetAdmin(settings::SetAdmin),
    ListAdmins(settings::ListAdmins),
    Admins(settings::Admins),
    SetMemberAdds(settings::SetMemberAdds),
    GetPrivacy(reach::GetPrivacy),
    Privacy(reach::Privacy),
    AcceptRequest(reach::AcceptRequest),
    SetPresence(presence::SetPresence),
    SubscribePresence(presence::SubscribePresence),
    UnsubscribePresence(presence::UnsubscribePresence),
    PresenceSnapshot(presence::PresenceSnapshot),
    PresenceChanged(presence::PresenceChanged),
    CountOnline(presence::CountOnline),
    OnlineCount(presence::OnlineCount),
    SetPresenceVisibility(presence::SetPresenceVisibility),
    Typing(typing::Typing),
    TypingChanged(typing::TypingChanged),
    // ----- calls -----
    GetTurnCredentials(calls::GetTurnCredentials),
    TurnCredentials(calls::TurnCredentials),
    CallSignal(calls::CallSignal),
    CallSignalled(calls::CallSignalled),
    // ----- push notifications -----
    RegisterPush(push::RegisterPush),
    UnregisterPush(push::UnregisterPush),
}

body_conversions! {
    boxed
    UploadPrekeys(prekeys::UploadPrekeys),
    Commit(mls::Commit),
}

/// One frame: a request id (0 for server pushes) and a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub request_id: u64,
    pub body: Body,
}

impl Frame {
    pub fn new(request_id: u64, body: impl Into<Body>) -> Self {
        Frame {
            request_id,
            body: body.into(),
        }
    }

    /// An error response to `request_id`.
    pub fn error(request_id: u64, code: fb::ErrorCode, message: impl Into<String>) -> Self {
        let body = Body::Error(errors::ErrorBody {
            code,
            message: message.into(),
            retry_after_ms: 0,
        });
        Frame { request_id, body }
    }

    /// Encodes the frame with its little-endian u32 length prefix, ready to write.
    pub fn encode(&self) -> Bytes {
        let mut b = FlatBufferBuilder::with_capacity(self.size_hint());
        let (body_type, body) = self.body.encode(&mut b);
        let frame = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: self.request_id,
                body_type,
                body: Some(body),
            },
        );
        b.finish(frame, None);
        let data = b.finished_data();
        let mut out = bytes::BytesMut::with_capacity(data.len() + LEN_PREFIX);
        out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(data);
        out.freeze()
    }

    /// Verifies and decodes one frame (without its length prefix).
    pub fn decode(buf: &[u8], limits: &Limits) -> Result<Frame, FrameError> {
        let frame = limits.verify(buf)?;
        let body = Body::decode(&frame)?;
        Ok(Frame {
            request_id: frame.request_id(),
            body,
        })
    }

    fn size_hint(&self) -> usize {
        match &self.body {
            Body::Send(s) => s.payload.len() + 128,
            Body::Deliver(m) => m.payload.len() + 160,
            Body::HistoryPage(p) => {
                p.messages
                    .iter()
                    .map(|m| m.payload.len() + 160)
                    .sum::<usize>()
                    + 64
            }
            _ => 256,
        }
    }
}

/// The union tag and value of one body.
fn put<T: WireBody>(b: &mut Builder<'_>, body: &T) -> (fb::Body, Union) {
    (T::TAG, body.encode(b))
}

/// Reads a body from its table, `Malformed` when the table is absent.
fn get<'a, T>(table: Option<T::Table<'a>>, tag: fb::Body) -> Result<Body, FrameError>
where
    T: WireBody + Into<Body>,
{
    let name = tag.variant_name().unwrap_or("union");
    let table = table.ok_or_else(|| missing(&format!("{name} body")))?;
    Ok(T::decode(table)?.into())
}

impl Body {
    /// Writes the body: its union tag and value.
    fn encode(&self, b: &mut Builder<'_>) -> (fb::Body, Union) {
        match self {
            Body::Register(x) => put(b, x),
            Body::Registered(x) => put(b, x),
            Body::Authenticate(x) => put(b, x),
            Body::Authenticated(x) => put(b, x),
            Body::CreateConversation(x) => put(b, x),
            Body::ConversationInfo(x) => put(b, x),
            Body::AddMembers(x) => put(b, x),
            Body::RemoveMembers(x) => put(b, x),
            Body::Send(x) => put(b, x),
            Body::SendAck(x) => put(b, x),
            Body::Deliver(x) => put(b, x),
            Body::Ack(x) => put(b, x),
            Body::Done(x) => put(b, x),
            Body::Sync(x) => put(b, x),
            Body::SyncResult(x) => put(b, x),
            Body::History(x) => put(b, x),
            Body::HistoryPage(x) => put(b, x),
            Body::Error(x) => put(b, x),
            Body::SendGroup(x) => put(b, x),
            Body::SendToDevices(x) => put(b, x),
            Body::Conflict(x) => put(b, x),
            Body::RequestLink(x) => put(b, x),
            Body::LinkPrompt(x) => put(b, x),
            Body::ApproveLink(x) => put(b, x),
            Body::ListDevices(x) => put(b, x),
            Body::DeviceList(x) => put(b, x),
            Body::RevokeDevice(x) => put(b, x),
            Body::DeviceListChanged(x) => put(b, x),
            Body::UploadPrekeys(x) => put(b, x.as_ref()),
            Body::KeyCounts(x) => put(b, x),
            Body::ClaimPrekeys(x) => put(b, x),
            Body::PrekeyBundle(x) => put(b, x),
            Body::KeysLow(x) => put(b, x),
            Body::UploadKeyPackages(x) => put(b, x),
            Body::ClaimKeyPackages(x) => put(b, x),
            Body::KeyPackages(x) => put(b, x),
            Body::Commit(x) => put(b, x.as_ref()),
            Body::CommitAccepted(x) => put(b, x),
            Body::GetGroupInfo(x) => put(b, x),
            Body::GroupInfo(x) => put(b, x),
            Body::SetPrivacy(x) => put(b, x),
            Body::Invite(x) => put(b, x),
            Body::Invited(x) => put(b, x),
            Body::ListInvitations(x) => put(b, x),
            Body::Invitations(x) => put(b, x),
            Body::AnswerInvitation(x) => put(b, x),
            Body::InvitationAnswered(x) => put(b, x),
            Body::Block(x) => put(b, x),
            Body::Unblock(x) => put(b, x),
            Body::ListBlocked(x) => put(b, x),
            Body::Blocked(x) => put(b, x),
            Body::PurgeMessage(x) => put(b, x),
            Body::SetTimer(x) => put(b, x),
            Body::TimerChanged(x) => put(b, x),
            Body::SetAdmin(x) => put(b, x),
            Body::ListAdmins(x) => put(b, x),
            Body::Admins(x) => put(b, x),
            Body::SetMemberAdds(x) => put(b, x),
            Body::GetPrivacy(x) => put(b, x),
            Body::Privacy(x) => put(b, x),
            Body::AcceptRequest(x) => put(b, x),
            Body::SetPresence(x) => put(b, x),
            Body::SubscribePresence(x) => put(b, x),
            Body::UnsubscribePresence(x) => put(b, x),
            Body::PresenceSnapshot(x) => put(b, x),
            Body::PresenceChanged(x) => put(b, x),
            Body::CountOnline(x) => put(b, x),
            Body::OnlineCount(x) => put(b, x),
            Body::SetPresenceVisibility(x) => put(b, x),
            Body::Typing(x) => put(b, x),
            Body::TypingChanged(x) => put(b, x),
            Body::GetTurnCredentials(x) => put(b, x),
            Body::TurnCredentials(x) => put(b, x),
            Body::CallSignal(x) => put(b, x),
            Body::CallSignalled(x) => put(b, x),
            Body::RegisterPush(x) => put(b, x),
            Body::UnregisterPush(x) => put(b, x),
        }
    }

    /// Reads the body of a verified frame by its union tag.
    fn decode(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
        use fb::Body as Tag;
        let tag = f.body_type();
        if tag == Tag::NONE {
            return Err(missing("body"));
        }
        if tag.0 > Tag::ENUM_MAX {
            return Err(FrameError::UnsupportedBody(tag.0));
        }
        match tag {
            Tag::Register => get::<auth::Register>(f.body_as_register(), tag),
            Tag::Registered => get::<auth::Registered>(f.body_as_registered(), tag),
            Tag::Authenticate => get::<auth::Authenticate>(f.body_as_authenticate(), tag),
            Tag::Authenticated => get::<auth::Authenticated>(f.body_as_authenticated(), tag),
            Tag::CreateConversation => {
                get::<conversations::CreateConversation>(f.body_as_create_conversation(), tag)
            }
            Tag::ConversationInfo => {
                get::<conversations::ConversationInfo>(f.body_as_conversation_info(), tag)
            }
            Tag::AddMembers => get::<conversations::AddMembers>(f.body_as_add_members(), tag),
            Tag::RemoveMembers => {
                get::<conversations::RemoveMembers>(f.body_as_remove_members(), tag)
            }
            // One table, three bodies: per-device payloads, an MLS epoch, or neither.
            Tag::Send => match f.body_as_send() {
                Some(s) if s.device_payloads().is_some() => {
                    get::<messaging::SendToDevices>(Some(s), tag)
                }
                Some(s) if s.has_mls_epoch() => get::<messaging::SendGroup>(Some(s), tag),
                s => get::<messaging::Send>(s, tag),
            },
            Tag::SendAck => get::<messaging::SendAck>(f.body_as_send_ack(), tag),
            Tag::Deliver => get::<messaging::Message>(f.body_as_deliver(), tag),
            Tag::Ack => get::<messaging::Ack>(f.body_as_ack(), tag),
            Tag::Done => Ok(Body::Done(messaging::Done)),
            Tag::Sync => get::<sync::Sync>(f.body_as_sync(), tag),
            Tag::SyncResult => get::<sync::SyncResult>(f.body_as_sync_result(), tag),
            Tag::History => get::<messaging::History>(f.body_as_history(), tag),
            Tag::HistoryPage => get::<messaging::HistoryPage>(f.body_as_history_page(), tag),
            // One table, two bodies: a Conflict carries recovery state.
            Tag::Error => match f.body_as_error() {
                Some(e) if errors::Conflict::is_conflict(&e) => {
                    get::<errors::Conflict>(Some(e), tag)
                }
                e => get::<errors::ErrorBody>(e, tag),
            },
            Tag::RequestLink => get::<auth::RequestLink>(f.body_as_request_link(), tag),
            Tag::LinkPrompt => get::<devices::LinkPrompt>(f.body_as_link_prompt(), tag),
            Tag::ApproveLink => get::<devices::ApproveLink>(f.body_as_approve_link(), tag),
            Tag::ListDevices => get::<devices::ListDevices>(f.body_as_list_devices(), tag),
            Tag::DeviceList => get::<devices::DeviceList>(f.body_as_device_list(), tag),
            Tag::RevokeDevice => get::<devices::RevokeDevice>(f.body_as_revoke_device(), tag),
            Tag::DeviceListChanged => {
                get::<devices::DeviceListChanged>(f.body_as_device_list_changed(), tag)
            }
            Tag::UploadPrekeys => get::<prekeys::UploadPrekeys>(f.body_as_upload_prekeys(), tag),
            Tag::KeyCounts => get::<prekeys::KeyCounts>(f.body_as_key_counts(), tag),
            Tag::ClaimPrekeys => get::<prekeys::ClaimPrekeys>(f.body_as_claim_prekeys(), tag),
            Tag::PrekeyBundle => get::<prekeys::PrekeyBundle>(f.body_as_prekey_bundle(), tag),
            Tag::KeysLow => get::<prekeys::KeysLow>(f.body_as_keys_low(), tag),
            Tag::UploadKeyPackages => {
                get::<mls::UploadKeyPackages>(f.body_as_upload_key_packages(), tag)
            }
            Tag::ClaimKeyPackages => {
                get::<mls::ClaimKeyPackages>(f.body_as_claim_key_packages(), tag)
            }
            Tag::KeyPackages => get::<mls::KeyPackages>(f.body_as_key_packages(), tag),
            Tag::Commit => get::<mls::Commit>(f.body_as_commit(), tag),
            Tag::CommitAccepted => get::<mls::CommitAccepted>(f.body_as_commit_accepted(), tag),
            Tag::GetGroupInfo => get::<mls::GetGroupInfo>(f.body_as_get_group_info(), tag),
            Tag::GroupInfo => get::<mls::GroupInfo>(f.body_as_group_info(), tag),
            Tag::SetPrivacy => get::<privacy::SetPrivacy>(f.body_as_set_privacy(), tag),
            Tag::Invite => get::<privacy::Invite>(f.body_as_invite(), tag),
            Tag::Invited => get::<privacy::Invited>(f.body_as_invited(), tag),
            Tag::ListInvitations => {
                get::<privacy::ListInvitations>(f.body_as_list_invitations(), tag)
            }
            Tag::Invitations => get::<privacy::Invitations>(f.body_as_invitations(), tag),
            Tag::AnswerInvitation => {
                get::<privacy::AnswerInvitation>(f.body_as_answer_invitation(), tag)
            }
            Tag::InvitationAnswered => {
                get::<privacy::InvitationAnswered>(f.body_as_invitation_answered(), tag)
            }
            Tag::Block => get::<safety::Block>(f.body_as_block(), tag),
            Tag::Unblock => get::<safety::Unblock>(f.body_as_unblock(), tag),
            Tag::ListBlocked => get::<safety::ListBlocked>(f.body_as_list_blocked(), tag),
            Tag::Blocked => get::<safety::Blocked>(f.body_as_blocked(), tag),
            Tag::PurgeMessage => get::<safety::PurgeMessage>(f.body_as_purge_message(), tag),
            Tag::SetTimer => get::<settings::SetTimer>(f.body_as_set_timer(), tag),
            Tag::TimerChanged => get::<settings::TimerChanged>(f.body_as_timer_changed(), tag),
            Tag::SetAdmin => get::<settings::SetAdmin>(f.body_as_set_admin(), tag),
            Tag::ListAdmins => get::<settings::ListAdmins>(f.body_as_list_admins(), tag),
            Tag::Admins => get::<settings::Admins>(f.body_as_admins(), tag),
            Tag::SetMemberAdds => get::<settings::SetMemberAdds>(f.body_as_set_member_adds(), tag),
            Tag::GetPrivacy => get::<reach::GetPrivacy>(f.body_as_get_privacy(), tag),
            Tag::Privacy => get::<reach::Privacy>(f.body_as_privacy(), tag),
            Tag::AcceptRequest => get::<reach::AcceptRequest>(f.body_as_accept_request(), tag),
            Tag::SetPresence => get::<presence::SetPresence>(f.body_as_set_presence(), tag),
            Tag::SubscribePresence => {
                get::<presence::SubscribePresence>(f.body_as_subscribe_presence(), tag)
            }
            Tag::UnsubscribePresence => {
                get::<presence::UnsubscribePresence>(f.body_as_unsubscribe_presence(), tag)
            }
            Tag::PresenceSnapshot => {
                get::<presence::PresenceSnapshot>(f.body_as_presence_snapshot(), tag)
            }
            Tag::PresenceChanged => {
                get::<presence::PresenceChanged>(f.body_as_presence_changed(), tag)
            }
            Tag::CountOnline => get::<presence::CountOnline>(f.body_as_count_online(), tag),
            Tag::OnlineCount => get::<presence::OnlineCount>(f.body_as_online_count(), tag),
            Tag::SetPresenceVisibility => {
                get::<presence::SetPresenceVisibility>(f.body_as_set_presence_visibility(), tag)
            }
            Tag::Typing => get::<typing::Typing>(f.body_as_typing(), tag),
            Tag::TypingChanged => get::<typing::TypingChanged>(f.body_as_typing_changed(), tag),
            Tag::GetTurnCredentials => {
                get::<calls::GetTurnCredentials>(f.body_as_get_turn_credentials(), tag)
            }
            Tag::TurnCredentials => {
                get::<calls::TurnCredentials>(f.body_as_turn_credentials(), tag)
            }
            Tag::CallSignal => get::<calls::CallSignal>(f.body_as_call_signal(), tag),
            Tag::CallSignalled => get::<calls::CallSignalled>(f.body_as_call_signalled(), tag),
            Tag::RegisterPush => get::<push::RegisterPush>(f.body_as_register_push(), tag),
            Tag::UnregisterPush => get::<push::UnregisterPush>(f.body_as_unregister_push(), tag),
            other => Err(FrameError::UnsupportedBody(other.0)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::HashSet;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::body::{
        auth, calls, conversations, devices, errors, messaging, mls, prekeys, presence, privacy,
        push, reach, safety, settings, sync, typing,
    };

    /// Every family's samples: at least one of every body.
    fn samples() -> Vec<Body> {
        [
            auth::tests::samples(),
            conversations::tests::samples(),
            messaging::tests::samples(),
            sync::tests::samples(),
            errors::tests::samples(),
            devices::tests::samples(),
            prekeys::tests::samples(),
            mls::tests::samples(),
            privacy::tests::samples(),
            safety::tests::samples(),
            settings::tests::samples(),
            reach::tests::samples(),
            presence::tests::samples(),
            typing::tests::samples(),
            calls::tests::samples(),
            push::tests::samples(),
        ]
        .concat()
    }

    #[test]
    fn every_body_has_a_sample() {
        let variants: HashSet<_> = samples().iter().map(std::mem::discriminant).collect();
        // 77 bodies: raise this when adding one (and give it a sample).
        assert_eq!(variants.len(), 77, "a body lacks a round-trip sample");
    }

    /// The bytes of every sample frame of the protocol-v1 bodies, as encoded
    /// before bodies became structs: the wire format must not move under a
    /// Rust-side refactor. Bodies added later have new union tags (members
    /// are only appended) and are left out, so adding one does not change
    /// the digest; changing an existing sample does.
    #[test]
    fn wire_bytes_are_unchanged() {
        let mut digest = Sha256::new();
        for body in samples() {
            let wire = Frame::new(7, body).encode();
            let frame = Limits::client_inbound()
                .verify(&wire[LEN_PREFIX..])
                .expect("verifies");
            if frame.body_type().0 <= fb::Body::GroupInfo.0 {
                digest.update(&wire);
            }
        }
        assert_eq!(
            hex::encode(digest.finalize()),
            "a28f66e16ad3d6cc4cc5f312bbb74dac4978387bccb385bdb655bc6cd77d38d0"
        );
    }

    #[test]
    fn wrong_key_length_is_malformed() {
        let mut b = FlatBufferBuilder::new();
        let args = fb::AuthenticateArgs {
            user: Some(b.create_string("a")),
            device: 1,
            signature: Some(b.create_vector(&[0u8; 10][..])),
        };
        let body = fb::Authenticate::create(&mut b, &args).as_union_value();
        let f = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: 1,
                body_type: fb::Body::Authenticate,
                body: Some(body),
            },
        );
        b.finish(f, None);
        let err = Frame::decode(b.finished_data(), &Limits::server_inbound()).expect_err("rejects");
        assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn unknown_union_tag_is_unsupported() {
        let mut b = FlatBufferBuilder::new();
        let body = fb::Done::create(&mut b, &fb::DoneArgs {}).as_union_value();
        let f = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: 1,
                body_type: fb::Body(200),
                body: Some(body),
            },
        );
        b.finish(f, None);
        let err = Frame::decode(b.finished_data(), &Limits::server_inbound()).expect_err("rejects");
        assert_eq!(err, FrameError::UnsupportedBody(200));
    }

    #[test]
    fn missing_body_is_malformed() {
        let mut b = FlatBufferBuilder::new();
        let f = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: 1,
                body_type: fb::Body::NONE,
                body: None,
            },
        );
        b.finish(f, None);
        let err = Frame::decode(b.finished_data(), &Limits::server_inbound()).expect_err("rejects");
        assert!(matches!(err, FrameError::Malformed(_)));
    }

    #[test]
    fn try_from_hands_other_bodies_back() {
        let body = Body::from(messaging::Done);
        let back = sync::SyncResult::try_from(body.clone()).expect_err("not a SyncResult");
        assert_eq!(back, body);
        let upload = prekeys::UploadPrekeys::default();
        let boxed = Body::from(upload.clone());
        assert_eq!(prekeys::UploadPrekeys::try_from(boxed), Ok(upload));
    }
}
