//! Call signalling on the conversation's owner shard (issue 11,
//! docs/PROTOCOL.md §4.11). A `CallSignal` carries one end-to-end encrypted
//! payload per listed device (offer, answer, ICE, hangup, busy: the server
//! cannot tell which); the owner checks it and pushes each payload as
//! `CallSignalled` to that device's connections at once, on the stream
//! (a signal is urgent and may be larger than a datagram). Nothing is
//! stored: each signal is also held in memory ([`CallHold`]) for at most
//! [`CALL_HOLD_MS`] so that a device that connects within that time (a
//! phone woken by a push notification, a flaky link) still rings, and one
//! that connects later never rings for a call long over.
//!
//! - the sender must be a member with an active device (`NotMember`);
//! - every payload must name a current device of a member other than the
//!   sending device, each at most once, with at most [`MAX_CALL_PAYLOAD`]
//!   bytes (`InvalidArgument` naming the first that does not);
//! - payloads for a user who blocks the sender, or whom the sender blocks,
//!   are dropped silently (as for messages, the sender cannot tell);
//! - memory is bounded by the hold's limits per device and in devices; a
//!   connection's signals are paced like its other requests (in-flight limit).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::delivery::{Fanout, Frames};
use crate::effects::{Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use crate::shard::ShardCtx;
use tern_proto::body::calls::{
    CallSignal, CallSignalled, CALL_HOLD_MS, CALL_HOLD_PER_DEVICE, MAX_CALL_PAYLOAD,
};
use tern_proto::body::messaging::{DevicePayload, Done};
use tern_proto::fb::ErrorCode;
use tern_proto::Frame;
use tern_store::{DeviceId, UserId};

/// Most devices the hold keeps signals for; past it, expired entries are
/// swept and, if still full, a signal for a new device is not held (it is
/// still delivered live). About 32 × 16 KiB worst case per device.
pub const MAX_HELD_DEVICES: usize = 50_000;

/// One held signal: when the server took it (unix ms) and its push frame.
#[derive(Debug)]
struct Held {
    at_ms: u64,
    frame: Bytes,
}

/// Call signals held for devices that may connect within [`CALL_HOLD_MS`],
/// shared by every shard (the sender's owner holds, the device's shard
/// takes). Bounded: [`CALL_HOLD_PER_DEVICE`] per device (oldest dropped),
/// [`MAX_HELD_DEVICES`] devices.
#[derive(Debug, Default)]
pub struct CallHold {
    held: Mutex<HashMap<(UserId, DeviceId), VecDeque<Held>>>,
}

impl CallHold {
    /// Holds `frame` for `user`'s `device`, taken at `at_ms`.
    pub fn hold(&self, user: &str, device: DeviceId, at_ms: u64, frame: Bytes) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (user.to_owned(), device);
        if !held.contains_key(&key) && held.len() >= MAX_HELD_DEVICES {
            held.retain(|_, queue| {
                queue.retain(|h| fresh(h, at_ms));
                !queue.is_empty()
            });
            if held.len() >= MAX_HELD_DEVICES {
                return;
            }
        }
        let queue = held.entry(key).or_default();
        queue.retain(|h| fresh(h, at_ms));
        if queue.len() >= CALL_HOLD_PER_DEVICE {
            queue.pop_front();
        }
        queue.push_back(Held { at_ms, frame });
    }

    /// Takes the signals held for `user`'s `device` that are at most
    /// [`CALL_HOLD_MS`] old at `now_ms`, oldest first.
    pub fn take(&self, user: &str, device: DeviceId, now_ms: u64) -> Vec<Bytes> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(queue) = held.remove(&(user.to_owned(), device)) else {
            return Vec::new();
        };
        queue
            .into_iter()
            .filter(|h| fresh(h, now_ms))
            .map(|h| h.frame)
            .collect()
    }

    /// How many devices have signals held (expired ones included until swept).
    pub fn devices(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn fresh(held: &Held, now_ms: u64) -> bool {
    now_ms.saturating_sub(held.at_ms) <= CALL_HOLD_MS
}

/// Applies one call signal: holds each payload and pushes it to the
/// connected devices; answers `Done`, or the refusal of [`checked`].
pub async fn apply(owner: &mut Owner, caller: &Caller, signal: CallSignal) -> Outcome {
    Outcome::or_refused(checked(owner, caller, signal).await)
}

/// The signal's outcome.
///
/// # Errors
/// Conversation errors (`NotFound`, `NotMember`); `InvalidArgument` for a
/// payload naming no current device of a member, the sending device, a
/// device twice, or one over [`MAX_CALL_PAYLOAD`] bytes; `Internal` on a
/// store failure reading blocks.
async fn checked(
    owner: &mut Owner,
    caller: &Caller,
    signal: CallSignal,
) -> Result<Outcome, Reject> {
    let ctx = owner.ctx.clone();
    let id = signal.conversation_id;
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    check_payloads(&state.recipients, caller, &signal.device_payloads)?;
    let now_ms = ctx.clock.now_ms();
    let mut out = Vec::with_capacity(signal.device_payloads.len());
    let mut payloads = signal.device_payloads;
    payloads.sort_by(|a, b| a.user.cmp(&b.user));
    let mut verdict: Option<(String, bool)> = None;
    for payload in payloads {
        let reaches = match &verdict {
            Some((user, reaches)) if *user == payload.user => *reaches,
            _ => {
                let reaches = payload.user == caller.user
                    || !super::blocked(&ctx, caller, &payload.user).await?;
                verdict = Some((payload.user.clone(), reaches));
                reaches
            }
        };
        if reaches {
            out.push(signalled(caller, id, now_ms, payload));
        }
    }
    for (user, device, frame) in &out {
        ctx.mesh.calls.hold(user, *device, now_ms, frame.clone());
    }
    let done = Outcome::immediate(Ok(Done.into()));
    if out.is_empty() {
        return Ok(done);
    }
    let recipients: Vec<_> = out.iter().map(|(u, d, _)| (u.clone(), *d)).collect();
    let frames: Vec<_> = out.into_iter().map(|(_, _, f)| f).collect();
    let fanout = Fanout {
        recipients: recipients.into(),
        except: None,
        frames: Frames::PerDevice(frames.into()),
    };
    let wake = crate::effects::Wake {
        recipients: Arc::clone(&fanout.recipients),
        except: Some(caller.clone()),
        conversation_id: id,
        urgent: true,
    };
    Ok(done.with(Effect::Signal(fanout)).with(Effect::Wake(wake)))
}

/// The push frame of one payload, with a fresh signal id.
fn signalled(
    caller: &Caller,
    conversation_id: u64,
    now_ms: u64,
    payload: DevicePayload,
) -> (UserId, DeviceId, Bytes) {
    let push = CallSignalled {
        signal_id: rand::random(),
        conversation_id,
        sender: caller.user.clone(),
        sender_device: caller.device,
        server_time_ms: now_ms,
        payload: payload.payload,
    };
    (payload.user, payload.device, Frame::new(0, push).encode())
}

fn check_payloads(
    recipients: &[(UserId, DeviceId)],
    caller: &Caller,
    payloads: &[DevicePayload],
) -> Result<(), Reject> {
    let invalid = |message: String| Err(Reject::new(ErrorCode::InvalidArgument, message));
    if payloads.is_empty() {
        return invalid("a CallSignal names at least one device".to_owned());
    }
    let mut seen = std::collections::HashSet::with_capacity(payloads.len());
    for p in payloads {
        let name = format!("{}'s device {}", p.user, p.device);
        if p.user == caller.user && p.device == caller.device {
            return invalid("a CallSignal is not sent to the sending device".to_owned());
        }
        if !recipients
            .iter()
            .any(|(u, d)| *u == p.user && *d == p.device)
        {
            return invalid(format!(
                "{name} is no current device of a member; list the devices again (ListDevices)"
            ));
        }
        if !seen.insert((p.user.as_str(), p.device)) {
            return invalid(format!("{name} is named twice"));
        }
        if p.payload.len() > MAX_CALL_PAYLOAD {
            return invalid(format!(
                "the payload for {name} is {} bytes, over {MAX_CALL_PAYLOAD}",
                p.payload.len()
            ));
        }
    }
    Ok(())
}

/// Pushes the signals held for a device that just authenticated on this
/// shard (it is located first, so a signal is live, held, or both; clients
/// drop repeated signal ids).
pub fn replay(ctx: &ShardCtx, caller: &Caller) {
    let frames = ctx
        .mesh
        .calls
        .take(&caller.user, caller.device, ctx.clock.now_ms());
    let sessions = ctx.sessions.borrow();
    for frame in frames {
        let recipients = vec![(caller.user.clone(), caller.device)];
        sessions.deliver(&Fanout::shared(recipients.into(), None, frame));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hold_keeps_a_minute_then_forgets() {
        let hold = CallHold::default();
        hold.hold("bob", 1, 1_000, Bytes::from_static(b"a"));
        hold.hold("bob", 1, 30_000, Bytes::from_static(b"b"));
        let taken = hold.take("bob", 1, 1_000 + CALL_HOLD_MS + 1);
        assert_eq!(taken, vec![Bytes::from_static(b"b")]);
        assert!(hold.take("bob", 1, 30_001).is_empty(), "taken once");
        assert_eq!(hold.devices(), 0);
    }

    #[test]
    fn hold_is_bounded_per_device() {
        let hold = CallHold::default();
        for i in 0..(CALL_HOLD_PER_DEVICE as u64 + 5) {
            hold.hold("bob", 1, 1_000 + i, Bytes::from(i.to_be_bytes().to_vec()));
        }
        let taken = hold.take("bob", 1, 2_000);
        assert_eq!(taken.len(), CALL_HOLD_PER_DEVICE);
        assert_eq!(taken[0], Bytes::from(5u64.to_be_bytes().to_vec()));
    }

    #[test]
    fn payload_checks() {
        let recipients: Vec<(UserId, DeviceId)> =
            vec![("alice".into(), 1), ("alice".into(), 2), ("bob".into(), 1)];
        let caller = Caller {
            user: "alice".into(),
            device: 1,
        };
        let p = |user: &str, device, len| DevicePayload {
            user: user.into(),
            device,
            payload: Bytes::from(vec![0; len]),
        };
        assert!(check_payloads(&recipients, &caller, &[p("bob", 1, 9), p("alice", 2, 9)]).is_ok());
        for bad in [
            vec![],
            vec![p("alice", 1, 9)],
            vec![p("carol", 1, 9)],
            vec![p("bob", 2, 9)],
            vec![p("bob", 1, 9), p("bob", 1, 9)],
            vec![p("bob", 1, MAX_CALL_PAYLOAD + 1)],
        ] {
            let reject = check_payloads(&recipients, &caller, &bad).unwrap_err();
            assert_eq!(reject.code, ErrorCode::InvalidArgument);
        }
    }
}
