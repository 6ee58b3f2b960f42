//! Frame bodies of the end-to-end-encryption milestone: multi-device linking,
//! the prekey directory, the MLS delivery service, per-device sends and
//! refusals that carry recovery state. Owned types plus their FlatBuffers
//! encoding; [`super::frame`] dispatches here for these tags.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use super::codec::FrameError;
use super::fb;
use super::frame::{fixed, missing, owned_strings, strings, Body, ErrorBody};

/// One recipient device's ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePayload {
    pub user: String,
    pub device: u32,
    pub payload: Bytes,
}

/// A refusal with the state the client needs to recover (current epoch,
/// current device set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub error: ErrorBody,
    pub current_epoch: u64,
    pub devices: Vec<(String, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPrekeyData {
    pub id: u32,
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimePrekeyData {
    pub id: u32,
    pub public_key: [u8; 32],
}

/// A device's key upload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UploadPrekeysBody {
    pub identity: Option<([u8; 32], [u8; 64])>,
    pub signed_prekey: Option<SignedPrekeyData>,
    pub one_time: Vec<OneTimePrekeyData>,
    pub last_resort: Option<SignedPrekeyData>,
    pub kem_prekey: Option<Bytes>,
}

/// One device's bundle as handed to a claimer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBundleData {
    pub device: u32,
    pub device_key: [u8; 32],
    pub identity_key: [u8; 32],
    pub identity_signature: [u8; 64],
    pub signed_prekey: Option<SignedPrekeyData>,
    pub one_time_prekey: Option<OneTimePrekeyData>,
    pub last_resort: Option<SignedPrekeyData>,
    pub kem_prekey: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfoData {
    pub device: u32,
    pub name: String,
    pub device_key: [u8; 32],
    pub created_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKeyPackageData {
    pub user: String,
    pub device: u32,
    pub key_package: Bytes,
    pub last_resort: bool,
}

/// An MLS commit offered for one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitBody {
    pub conversation_id: u64,
    pub epoch: u64,
    pub commit: Bytes,
    pub welcome: Option<Bytes>,
    pub group_info: Bytes,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

type Builder<'a> = FlatBufferBuilder<'a>;
type Union = WIPOffset<flatbuffers::UnionWIPOffset>;

fn signed<'a>(b: &mut Builder<'a>, k: &SignedPrekeyData) -> WIPOffset<fb::SignedPrekey<'a>> {
    let args = fb::SignedPrekeyArgs {
        id: k.id,
        public_key: Some(b.create_vector(&k.public_key[..])),
        signature: Some(b.create_vector(&k.signature[..])),
    };
    fb::SignedPrekey::create(b, &args)
}

fn one_time<'a>(b: &mut Builder<'a>, k: &OneTimePrekeyData) -> WIPOffset<fb::OneTimePrekey<'a>> {
    let args = fb::OneTimePrekeyArgs {
        id: k.id,
        public_key: Some(b.create_vector(&k.public_key[..])),
    };
    fb::OneTimePrekey::create(b, &args)
}

fn opt_bytes<'a>(b: &mut Builder<'a>, v: &Option<Bytes>) -> Option<WIPOffset<Vector<'a, u8>>> {
    v.as_ref().map(|v| b.create_vector(&v[..]))
}

/// Encodes a body of this module; `None` for bodies it does not own.
pub fn encode(b: &mut Builder<'_>, body: &Body) -> Option<(fb::Body, Union)> {
    encode_devices(b, body)
        .or_else(|| encode_prekeys(b, body))
        .or_else(|| encode_mls(b, body))
}

fn encode_devices(b: &mut Builder<'_>, body: &Body) -> Option<(fb::Body, Union)> {
    Some(match body {
        Body::SendGroup {
            conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            epoch,
            payload,
        } => {
            let args = fb::SendArgs {
                conversation_id: *conversation_id,
                client_message_id: *client_message_id,
                expires_in_secs: *expires_in_secs,
                flags: *flags,
                payload: Some(b.create_vector(&payload[..])),
                device_payloads: None,
                has_mls_epoch: true,
                mls_epoch: *epoch,
            };
            (fb::Body::Send, fb::Send::create(b, &args).as_union_value())
        }
        Body::SendToDevices {
            conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            device_payloads,
        } => {
            let items: Vec<_> = device_payloads
                .iter()
                .map(|p| {
                    let args = fb::DevicePayloadArgs {
                        user: Some(b.create_string(&p.user)),
                        device: p.device,
                        payload: Some(b.create_vector(&p.payload[..])),
                    };
                    fb::DevicePayload::create(b, &args)
                })
                .collect();
            let args = fb::SendArgs {
                conversation_id: *conversation_id,
                client_message_id: *client_message_id,
                expires_in_secs: *expires_in_secs,
                flags: *flags,
                payload: None,
                device_payloads: Some(b.create_vector(&items)),
                has_mls_epoch: false,
                mls_epoch: 0,
            };
            (fb::Body::Send, fb::Send::create(b, &args).as_union_value())
        }
        Body::Conflict(c) => {
            let devices: Vec<_> = c
                .devices
                .iter()
                .map(|(user, device)| {
                    let user = Some(b.create_string(user));
                    fb::DeviceAddress::create(
                        b,
                        &fb::DeviceAddressArgs {
                            user,
                            device: *device,
                        },
                    )
                })
                .collect();
            let args = fb::ErrorArgs {
                code: c.error.code,
                message: Some(b.create_string(&c.error.message)),
                retry_after_ms: c.error.retry_after_ms,
                current_epoch: c.current_epoch,
                devices: Some(b.create_vector(&devices)),
            };
            (
                fb::Body::Error,
                fb::Error::create(b, &args).as_union_value(),
            )
        }
        Body::RequestLink {
            user,
            device_name,
            device_key,
            signature,
        } => {
            let args = fb::RequestLinkArgs {
                user: Some(b.create_string(user)),
                device_name: Some(b.create_string(device_name)),
                device_key: Some(b.create_vector(&device_key[..])),
                signature: Some(b.create_vector(&signature[..])),
            };
            (
                fb::Body::RequestLink,
                fb::RequestLink::create(b, &args).as_union_value(),
            )
        }
        Body::LinkRequest {
            link_id,
            user,
            device_name,
            device_key,
        } => {
            let args = fb::LinkRequestArgs {
                link_id: *link_id,
                user: Some(b.create_string(user)),
                device_name: Some(b.create_string(device_name)),
                device_key: Some(b.create_vector(&device_key[..])),
            };
            (
                fb::Body::LinkRequest,
                fb::LinkRequest::create(b, &args).as_union_value(),
            )
        }
        Body::ApproveLink { link_id, approve } => {
            let args = fb::ApproveLinkArgs {
                link_id: *link_id,
                approve: *approve,
            };
            (
                fb::Body::ApproveLink,
                fb::ApproveLink::create(b, &args).as_union_value(),
            )
        }
        Body::ListDevices { user } => {
            let args = fb::ListDevicesArgs {
                user: Some(b.create_string(user)),
            };
            (
                fb::Body::ListDevices,
                fb::ListDevices::create(b, &args).as_union_value(),
            )
        }
        Body::DeviceList { user, devices } => {
            let items: Vec<_> = devices
                .iter()
                .map(|d| {
                    let args = fb::DeviceInfoArgs {
                        device: d.device,
                        name: Some(b.create_string(&d.name)),
                        device_key: Some(b.create_vector(&d.device_key[..])),
                        created_ms: d.created_ms,
                    };
                    fb::DeviceInfo::create(b, &args)
                })
                .collect();
            let args = fb::DeviceListArgs {
                user: Some(b.create_string(user)),
                devices: Some(b.create_vector(&items)),
            };
            (
                fb::Body::DeviceList,
                fb::DeviceList::create(b, &args).as_union_value(),
            )
        }
        Body::RevokeDevice { device } => (
            fb::Body::RevokeDevice,
            fb::RevokeDevice::create(b, &fb::RevokeDeviceArgs { device: *device }).as_union_value(),
        ),
        Body::DeviceListChanged { user, devices } => {
            let args = fb::DeviceListChangedArgs {
                user: Some(b.create_string(user)),
                devices: Some(b.create_vector(devices)),
            };
            (
                fb::Body::DeviceListChanged,
                fb::DeviceListChanged::create(b, &args).as_union_value(),
            )
        }
        _ => return None,
    })
}

fn encode_prekeys(b: &mut Builder<'_>, body: &Body) -> Option<(fb::Body, Union)> {
    Some(match body {
        Body::UploadPrekeys(u) => {
            let otks: Vec<_> = u.one_time.iter().map(|k| one_time(b, k)).collect();
            let args = fb::UploadPrekeysArgs {
                identity_key: u.identity.as_ref().map(|(k, _)| b.create_vector(&k[..])),
                identity_signature: u.identity.as_ref().map(|(_, s)| b.create_vector(&s[..])),
                signed_prekey: u.signed_prekey.as_ref().map(|k| signed(b, k)),
                one_time_prekeys: Some(b.create_vector(&otks)),
                last_resort: u.last_resort.as_ref().map(|k| signed(b, k)),
                kem_prekey: opt_bytes(b, &u.kem_prekey),
            };
            (
                fb::Body::UploadPrekeys,
                fb::UploadPrekeys::create(b, &args).as_union_value(),
            )
        }
        Body::KeyCounts {
            one_time_prekeys,
            key_packages,
        } => {
            let args = fb::KeyCountsArgs {
                one_time_prekeys: *one_time_prekeys,
                key_packages: *key_packages,
            };
            (
                fb::Body::KeyCounts,
                fb::KeyCounts::create(b, &args).as_union_value(),
            )
        }
        Body::KeysLow {
            one_time_prekeys,
            key_packages,
        } => {
            let args = fb::KeysLowArgs {
                one_time_prekeys: *one_time_prekeys,
                key_packages: *key_packages,
            };
            (
                fb::Body::KeysLow,
                fb::KeysLow::create(b, &args).as_union_value(),
            )
        }
        Body::ClaimPrekeys { user } => {
            let args = fb::ClaimPrekeysArgs {
                user: Some(b.create_string(user)),
            };
            (
                fb::Body::ClaimPrekeys,
                fb::ClaimPrekeys::create(b, &args).as_union_value(),
            )
        }
        Body::PrekeyBundle { user, devices } => {
            let items: Vec<_> = devices.iter().map(|d| bundle(b, d)).collect();
            let args = fb::PrekeyBundleArgs {
                user: Some(b.create_string(user)),
                devices: Some(b.create_vector(&items)),
            };
            (
                fb::Body::PrekeyBundle,
                fb::PrekeyBundle::create(b, &args).as_union_value(),
            )
        }
        _ => return None,
    })
}

fn bundle<'a>(b: &mut Builder<'a>, d: &DeviceBundleData) -> WIPOffset<fb::DeviceBundle<'a>> {
    let args = fb::DeviceBundleArgs {
        device: d.device,
        device_key: Some(b.create_vector(&d.device_key[..])),
        identity_key: Some(b.create_vector(&d.identity_key[..])),
        identity_signature: Some(b.create_vector(&d.identity_signature[..])),
        signed_prekey: d.signed_prekey.as_ref().map(|k| signed(b, k)),
        one_time_prekey: d.one_time_prekey.as_ref().map(|k| one_time(b, k)),
        last_resort: d.last_resort.as_ref().map(|k| signed(b, k)),
        kem_prekey: opt_bytes(b, &d.kem_prekey),
    };
    fb::DeviceBundle::create(b, &args)
}

fn encode_mls(b: &mut Builder<'_>, body: &Body) -> Option<(fb::Body, Union)> {
    Some(match body {
        Body::UploadKeyPackages {
            key_packages,
            last_resort,
        } => {
            let items: Vec<_> = key_packages
                .iter()
                .map(|k| {
                    let data = Some(b.create_vector(&k[..]));
                    fb::KeyPackageData::create(b, &fb::KeyPackageDataArgs { data })
                })
                .collect();
            let args = fb::UploadKeyPackagesArgs {
                key_packages: Some(b.create_vector(&items)),
                last_resort: opt_bytes(b, last_resort),
            };
            (
                fb::Body::UploadKeyPackages,
                fb::UploadKeyPackages::create(b, &args).as_union_value(),
            )
        }
        Body::ClaimKeyPackages { users } => {
            let args = fb::ClaimKeyPackagesArgs {
                users: Some(strings(b, users)),
            };
            (
                fb::Body::ClaimKeyPackages,
                fb::ClaimKeyPackages::create(b, &args).as_union_value(),
            )
        }
        Body::KeyPackages(entries) => {
            let items: Vec<_> = entries
                .iter()
                .map(|e| {
                    let args = fb::ClaimedKeyPackageArgs {
                        user: Some(b.create_string(&e.user)),
                        device: e.device,
                        key_package: Some(b.create_vector(&e.key_package[..])),
                        last_resort: e.last_resort,
                    };
                    fb::ClaimedKeyPackage::create(b, &args)
                })
                .collect();
            let args = fb::KeyPackagesArgs {
                entries: Some(b.create_vector(&items)),
            };
            (
                fb::Body::KeyPackages,
                fb::KeyPackages::create(b, &args).as_union_value(),
            )
        }
        Body::Commit(c) => {
            let args = fb::CommitArgs {
                conversation_id: c.conversation_id,
                epoch: c.epoch,
                commit: Some(b.create_vector(&c.commit[..])),
                welcome: opt_bytes(b, &c.welcome),
                group_info: Some(b.create_vector(&c.group_info[..])),
                added: Some(strings(b, &c.added)),
                removed: Some(strings(b, &c.removed)),
            };
            (
                fb::Body::Commit,
                fb::Commit::create(b, &args).as_union_value(),
            )
        }
        Body::CommitAccepted {
            conversation_id,
            epoch,
            seq,
        } => {
            let args = fb::CommitAcceptedArgs {
                conversation_id: *conversation_id,
                epoch: *epoch,
                seq: *seq,
            };
            (
                fb::Body::CommitAccepted,
                fb::CommitAccepted::create(b, &args).as_union_value(),
            )
        }
        Body::GetGroupInfo { conversation_id } => {
            let args = fb::GetGroupInfoArgs {
                conversation_id: *conversation_id,
            };
            (
                fb::Body::GetGroupInfo,
                fb::GetGroupInfo::create(b, &args).as_union_value(),
            )
        }
        Body::GroupInfo {
            conversation_id,
            epoch,
            group_info,
        } => {
            let args = fb::GroupInfoArgs {
                conversation_id: *conversation_id,
                epoch: *epoch,
                group_info: Some(b.create_vector(&group_info[..])),
            };
            (
                fb::Body::GroupInfo,
                fb::GroupInfo::create(b, &args).as_union_value(),
            )
        }
        _ => return None,
    })
}

// ---------- decoding ----------

fn bytes_of(v: Option<Vector<'_, u8>>) -> Option<Bytes> {
    v.map(|v| Bytes::copy_from_slice(v.bytes()))
}

fn signed_from(k: fb::SignedPrekey<'_>) -> Result<SignedPrekeyData, FrameError> {
    Ok(SignedPrekeyData {
        id: k.id(),
        public_key: fixed(k.public_key(), "prekey")?,
        signature: fixed(k.signature(), "prekey signature")?,
    })
}

fn one_time_from(k: fb::OneTimePrekey<'_>) -> Result<OneTimePrekeyData, FrameError> {
    Ok(OneTimePrekeyData {
        id: k.id(),
        public_key: fixed(k.public_key(), "one-time prekey")?,
    })
}

/// Decodes a `Send` that carries per-device payloads.
pub fn decode_send_to_devices(
    s: &fb::Send<'_>,
    list: Vector<'_, ForwardsUOffset<fb::DevicePayload<'_>>>,
) -> Body {
    let device_payloads = list
        .iter()
        .map(|p| DevicePayload {
            user: p.user().to_owned(),
            device: p.device(),
            payload: Bytes::copy_from_slice(p.payload().bytes()),
        })
        .collect();
    Body::SendToDevices {
        conversation_id: s.conversation_id(),
        client_message_id: s.client_message_id(),
        expires_in_secs: s.expires_in_secs(),
        flags: s.flags(),
        device_payloads,
    }
}

/// Decodes an `Error` that carries recovery state.
pub fn decode_conflict(e: &fb::Error<'_>, error: ErrorBody) -> Body {
    let devices = e
        .devices()
        .map(|v| {
            v.iter()
                .map(|d| (d.user().to_owned(), d.device()))
                .collect()
        })
        .unwrap_or_default();
    Body::Conflict(Conflict {
        error,
        current_epoch: e.current_epoch(),
        devices,
    })
}

/// Decodes a body of this module (tags after `Error`).
pub fn decode(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    match f.body_type() {
        fb::Body::RequestLink
        | fb::Body::LinkRequest
        | fb::Body::ApproveLink
        | fb::Body::ListDevices
        | fb::Body::DeviceList
        | fb::Body::RevokeDevice
        | fb::Body::DeviceListChanged => decode_devices(f),
        fb::Body::UploadPrekeys
        | fb::Body::KeyCounts
        | fb::Body::ClaimPrekeys
        | fb::Body::PrekeyBundle
        | fb::Body::KeysLow => decode_prekeys(f),
        _ => decode_mls(f),
    }
}

fn decode_devices(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    match f.body_type() {
        fb::Body::RequestLink => {
            let r = f
                .body_as_request_link()
                .ok_or_else(|| missing("RequestLink body"))?;
            Ok(Body::RequestLink {
                user: r.user().to_owned(),
                device_name: r.device_name().unwrap_or_default().to_owned(),
                device_key: fixed(r.device_key(), "device_key")?,
                signature: fixed(r.signature(), "signature")?,
            })
        }
        fb::Body::LinkRequest => {
            let r = f
                .body_as_link_request()
                .ok_or_else(|| missing("LinkRequest body"))?;
            Ok(Body::LinkRequest {
                link_id: r.link_id(),
                user: r.user().to_owned(),
                device_name: r.device_name().unwrap_or_default().to_owned(),
                device_key: fixed(r.device_key(), "device_key")?,
            })
        }
        fb::Body::ApproveLink => {
            let a = f
                .body_as_approve_link()
                .ok_or_else(|| missing("ApproveLink body"))?;
            Ok(Body::ApproveLink {
                link_id: a.link_id(),
                approve: a.approve(),
            })
        }
        fb::Body::ListDevices => {
            let l = f
                .body_as_list_devices()
                .ok_or_else(|| missing("ListDevices body"))?;
            Ok(Body::ListDevices {
                user: l.user().to_owned(),
            })
        }
        fb::Body::DeviceList => {
            let l = f
                .body_as_device_list()
                .ok_or_else(|| missing("DeviceList body"))?;
            let devices = l
                .devices()
                .iter()
                .map(|d| {
                    let key = d.device_key().ok_or_else(|| missing("device_key"))?;
                    Ok(DeviceInfoData {
                        device: d.device(),
                        name: d.name().unwrap_or_default().to_owned(),
                        device_key: fixed(key, "device_key")?,
                        created_ms: d.created_ms(),
                    })
                })
                .collect::<Result<_, FrameError>>()?;
            Ok(Body::DeviceList {
                user: l.user().to_owned(),
                devices,
            })
        }
        fb::Body::RevokeDevice => {
            let r = f
                .body_as_revoke_device()
                .ok_or_else(|| missing("RevokeDevice body"))?;
            Ok(Body::RevokeDevice { device: r.device() })
        }
        _ => {
            let c = f
                .body_as_device_list_changed()
                .ok_or_else(|| missing("DeviceListChanged body"))?;
            Ok(Body::DeviceListChanged {
                user: c.user().to_owned(),
                devices: c.devices().map(|v| v.iter().collect()).unwrap_or_default(),
            })
        }
    }
}

fn decode_prekeys(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    match f.body_type() {
        fb::Body::UploadPrekeys => {
            let u = f
                .body_as_upload_prekeys()
                .ok_or_else(|| missing("UploadPrekeys body"))?;
            let identity = match (u.identity_key(), u.identity_signature()) {
                (Some(k), Some(s)) => {
                    Some((fixed(k, "identity_key")?, fixed(s, "identity_signature")?))
                }
                (None, None) => None,
                _ => {
                    return Err(FrameError::Malformed(
                        "identity_key and identity_signature go together".into(),
                    ))
                }
            };
            let one_time = u
                .one_time_prekeys()
                .map(|v| v.iter().map(one_time_from).collect::<Result<_, _>>())
                .transpose()?
                .unwrap_or_default();
            Ok(Body::UploadPrekeys(Box::new(UploadPrekeysBody {
                identity,
                signed_prekey: u.signed_prekey().map(signed_from).transpose()?,
                one_time,
                last_resort: u.last_resort().map(signed_from).transpose()?,
                kem_prekey: bytes_of(u.kem_prekey()),
            })))
        }
        fb::Body::KeyCounts => {
            let c = f
                .body_as_key_counts()
                .ok_or_else(|| missing("KeyCounts body"))?;
            Ok(Body::KeyCounts {
                one_time_prekeys: c.one_time_prekeys(),
                key_packages: c.key_packages(),
            })
        }
        fb::Body::KeysLow => {
            let c = f
                .body_as_keys_low()
                .ok_or_else(|| missing("KeysLow body"))?;
            Ok(Body::KeysLow {
                one_time_prekeys: c.one_time_prekeys(),
                key_packages: c.key_packages(),
            })
        }
        fb::Body::ClaimPrekeys => {
            let c = f
                .body_as_claim_prekeys()
                .ok_or_else(|| missing("ClaimPrekeys body"))?;
            Ok(Body::ClaimPrekeys {
                user: c.user().to_owned(),
            })
        }
        _ => {
            let p = f
                .body_as_prekey_bundle()
                .ok_or_else(|| missing("PrekeyBundle body"))?;
            let devices = p
                .devices()
                .iter()
                .map(bundle_from)
                .collect::<Result<_, _>>()?;
            Ok(Body::PrekeyBundle {
                user: p.user().to_owned(),
                devices,
            })
        }
    }
}

fn bundle_from(d: fb::DeviceBundle<'_>) -> Result<DeviceBundleData, FrameError> {
    Ok(DeviceBundleData {
        device: d.device(),
        device_key: fixed(d.device_key(), "device_key")?,
        identity_key: fixed(d.identity_key(), "identity_key")?,
        identity_signature: fixed(d.identity_signature(), "identity_signature")?,
        signed_prekey: d.signed_prekey().map(signed_from).transpose()?,
        one_time_prekey: d.one_time_prekey().map(one_time_from).transpose()?,
        last_resort: d.last_resort().map(signed_from).transpose()?,
        kem_prekey: bytes_of(d.kem_prekey()),
    })
}

fn decode_mls(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    match f.body_type() {
        fb::Body::UploadKeyPackages => {
            let u = f
                .body_as_upload_key_packages()
                .ok_or_else(|| missing("UploadKeyPackages body"))?;
            let key_packages = u
                .key_packages()
                .map(|v| {
                    v.iter()
                        .map(|k| Bytes::copy_from_slice(k.data().bytes()))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Body::UploadKeyPackages {
                key_packages,
                last_resort: bytes_of(u.last_resort()),
            })
        }
        fb::Body::ClaimKeyPackages => {
            let c = f
                .body_as_claim_key_packages()
                .ok_or_else(|| missing("ClaimKeyPackages body"))?;
            Ok(Body::ClaimKeyPackages {
                users: owned_strings(Some(c.users())),
            })
        }
        fb::Body::KeyPackages => {
            let k = f
                .body_as_key_packages()
                .ok_or_else(|| missing("KeyPackages body"))?;
            let entries = k
                .entries()
                .iter()
                .map(|e| ClaimedKeyPackageData {
                    user: e.user().to_owned(),
                    device: e.device(),
                    key_package: Bytes::copy_from_slice(e.key_package().bytes()),
                    last_resort: e.last_resort(),
                })
                .collect();
            Ok(Body::KeyPackages(entries))
        }
        fb::Body::Commit => {
            let c = f.body_as_commit().ok_or_else(|| missing("Commit body"))?;
            Ok(Body::Commit(Box::new(CommitBody {
                conversation_id: c.conversation_id(),
                epoch: c.epoch(),
                commit: Bytes::copy_from_slice(c.commit().bytes()),
                welcome: bytes_of(c.welcome()),
                group_info: Bytes::copy_from_slice(c.group_info().bytes()),
                added: owned_strings(c.added()),
                removed: owned_strings(c.removed()),
            })))
        }
        fb::Body::CommitAccepted => {
            let c = f
                .body_as_commit_accepted()
                .ok_or_else(|| missing("CommitAccepted body"))?;
            Ok(Body::CommitAccepted {
                conversation_id: c.conversation_id(),
                epoch: c.epoch(),
                seq: c.seq(),
            })
        }
        fb::Body::GetGroupInfo => {
            let g = f
                .body_as_get_group_info()
                .ok_or_else(|| missing("GetGroupInfo body"))?;
            Ok(Body::GetGroupInfo {
                conversation_id: g.conversation_id(),
            })
        }
        fb::Body::GroupInfo => {
            let g = f
                .body_as_group_info()
                .ok_or_else(|| missing("GroupInfo body"))?;
            Ok(Body::GroupInfo {
                conversation_id: g.conversation_id(),
                epoch: g.epoch(),
                group_info: bytes_of(g.group_info()).unwrap_or_default(),
            })
        }
        other => Err(FrameError::UnsupportedBody(other.0)),
    }
}
