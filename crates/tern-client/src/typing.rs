//! Typing indicators in the SDK (issue 11, docs/PROTOCOL.md §4.9).
//!
//! Sending: [`Client::typing`] sends a `Typing` signal as a QUIC datagram
//! (RFC 9221; one frame FlatBuffer without the stream's length prefix,
//! request id 0) when the connection takes datagrams of that size, else as
//! a request on the control stream. Signals are fire and forget: a lost one
//! is repaired by the next refresh (an app typing for a while repeats
//! `typing(conv, true)` every [`TYPING_REFRESH_MS`]).
//!
//! Receiving: `TypingChanged` pushes (datagram or stream) arrive as notices
//! ([`crate::Client::next_notice`]); [`typing_change`] picks them out and
//! [`TypingState`] (sans-IO: time is passed in, so it is tested with a fake
//! clock, like [`crate::ordering`]) turns them into per-user "started" and
//! "stopped" events, expiring a device's typing [`TYPING_EXPIRY_MS`] after
//! its last signal, as WhatsApp and Signal clients do.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tern_proto::body::typing::{Typing, TypingChanged};
use tern_proto::{Body, Frame, Limits};
use tokio::sync::mpsc;

use crate::sdk::{Client, ClientError, Event};

pub use tern_proto::body::typing::{TYPING_EXPIRY_MS, TYPING_REFRESH_MS};

impl Client {
    /// Says this device starts (`true`) or stops (`false`) typing in
    /// `conversation_id`. Sent as a datagram when the live connection takes
    /// one, else on the stream (then it waits for the server's `Done`). The
    /// server never refuses it: to a non-member, past the rate limit (4 at
    /// once, then 2 a second per conversation) or blocked, it is dropped
    /// silently.
    ///
    /// # Errors
    /// [`ClientError::Closed`], or, on the stream, the request's errors
    /// (timeout, disconnected).
    pub async fn typing(&self, conversation_id: u64, typing: bool) -> Result<(), ClientError> {
        let body = Typing {
            conversation_id,
            typing,
        };
        if let (Some(connection), true) = self.live_connection() {
            let datagram = Frame::new(0, body)
                .encode()
                .slice(tern_proto::codec::LEN_PREFIX..);
            let fits = connection
                .max_datagram_size()
                .is_some_and(|max| datagram.len() <= max);
            if fits && connection.send_datagram(datagram).is_ok() {
                return Ok(());
            }
        }
        self.request(body).await?;
        Ok(())
    }

    /// [`Client::typing`] on the control stream, returning once the server
    /// took it: for a sender that closes right after (a one-shot command),
    /// whose datagram could still be unsent when the connection closes.
    ///
    /// # Errors
    /// The request's errors (closed, timeout, disconnected).
    pub async fn typing_on_stream(
        &self,
        conversation_id: u64,
        typing: bool,
    ) -> Result<(), ClientError> {
        let body = Typing {
            conversation_id,
            typing,
        };
        self.request(body).await?;
        Ok(())
    }
}

/// The typing change a notice carries, if it is a `TypingChanged`.
pub fn typing_change(notice: &Body) -> Option<&TypingChanged> {
    match notice {
        Body::TypingChanged(changed) => Some(changed),
        _ => None,
    }
}

/// Reads one connection's datagrams until it ends: each `TypingChanged`
/// (request id 0) becomes a notice; anything else is dropped (datagrams
/// are unreliable, so nothing depends on one).
pub(crate) async fn read_datagrams(
    connection: quinn::Connection,
    events: mpsc::UnboundedSender<Event>,
) {
    let limits = Limits::client_inbound();
    while let Ok(datagram) = connection.read_datagram().await {
        if let Some(body) = decode_push(&datagram, &limits) {
            if events.send(Event::Notice(body)).is_err() {
                return;
            }
        }
    }
}

fn decode_push(datagram: &Bytes, limits: &Limits) -> Option<Body> {
    let frame = Frame::decode(datagram, limits).ok()?;
    match (frame.request_id, frame.body) {
        (0, body @ Body::TypingChanged(_)) => Some(body),
        _ => None,
    }
}

/// A change of who is typing, per user (a user types while any of their
/// devices does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypingEvent {
    Started { conversation_id: u64, user: String },
    Stopped { conversation_id: u64, user: String },
}

type DeviceKey = (u64, String, u32);

/// Who is typing where, from `TypingChanged` signals and the time (ms of
/// any clock that does not go back) the app passes in.
#[derive(Debug, Default)]
pub struct TypingState {
    /// (conversation, user, device) → when its typing expires, ms.
    expires: BTreeMap<DeviceKey, u64>,
}

impl TypingState {
    pub fn new() -> Self {
        TypingState::default()
    }

    /// Takes a signal received at `now_ms` (after expiring what is due);
    /// returns the events it causes, expiries first.
    pub fn on_signal(&mut self, signal: &TypingChanged, now_ms: u64) -> Vec<TypingEvent> {
        let mut events = self.expire(now_ms);
        let (conv, user) = (signal.conversation_id, signal.user.clone());
        let was = self.is_typing(conv, &user);
        let key = (conv, user.clone(), signal.device);
        match signal.typing {
            true => self
                .expires
                .insert(key, now_ms.saturating_add(TYPING_EXPIRY_MS)),
            false => self.expires.remove(&key),
        };
        let now = self.is_typing(conv, &user);
        let conversation_id = conv;
        match (was, now) {
            (false, true) => events.push(TypingEvent::Started {
                conversation_id,
                user,
            }),
            (true, false) => events.push(TypingEvent::Stopped {
                conversation_id,
                user,
            }),
            _ => {}
        }
        events
    }

    /// Ends every device's typing that expired by `now_ms`: a `Stopped`
    /// for each user none of whose devices types any more.
    pub fn expire(&mut self, now_ms: u64) -> Vec<TypingEvent> {
        let due: Vec<DeviceKey> = self
            .expires
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(key, _)| key.clone())
            .collect();
        let mut stopped = BTreeSet::new();
        for key in due {
            self.expires.remove(&key);
            stopped.insert((key.0, key.1));
        }
        stopped
            .into_iter()
            .filter(|(conv, user)| !self.is_typing(*conv, user))
            .map(|(conversation_id, user)| TypingEvent::Stopped {
                conversation_id,
                user,
            })
            .collect()
    }

    /// When the next expiry is due (pass it to a timer, then call
    /// [`TypingState::expire`]); `None` when nobody types.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expires.values().min().copied()
    }

    /// The users typing in `conversation_id`, sorted.
    pub fn typing_in(&self, conversation_id: u64) -> Vec<String> {
        let users: BTreeSet<&String> = self
            .expires
            .keys()
            .filter(|(conv, _, _)| *conv == conversation_id)
            .map(|(_, user, _)| user)
            .collect();
        users.into_iter().cloned().collect()
    }

    fn is_typing(&self, conversation_id: u64, user: &str) -> bool {
        self.expires
            .keys()
            .any(|(conv, u, _)| *conv == conversation_id && u == user)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn signal(user: &str, device: u32, typing: bool) -> TypingChanged {
        TypingChanged {
            conversation_id: 7,
            user: user.into(),
            device,
            typing,
        }
    }

    fn started(user: &str) -> TypingEvent {
        TypingEvent::Started {
            conversation_id: 7,
            user: user.into(),
        }
    }

    fn stopped(user: &str) -> TypingEvent {
        TypingEvent::Stopped {
            conversation_id: 7,
            user: user.into(),
        }
    }

    #[test]
    fn typing_expires_ten_seconds_after_the_last_refresh() {
        let mut state = TypingState::new();
        assert_eq!(
            state.on_signal(&signal("bob", 1, true), 1_000),
            [started("bob")]
        );
        assert_eq!(state.next_expiry(), Some(11_000));
        // A refresh at 6 s moves the expiry; nothing new to tell.
        assert!(state.on_signal(&signal("bob", 1, true), 6_000).is_empty());
        assert!(state.expire(11_000).is_empty(), "refreshed at 6 s");
        assert_eq!(state.typing_in(7), ["bob"]);
        assert!(state.expire(15_999).is_empty());
        assert_eq!(state.expire(16_000), [stopped("bob")]);
        assert!(state.typing_in(7).is_empty());
        assert_eq!(state.next_expiry(), None);
    }

    #[test]
    fn a_user_types_while_any_device_does() {
        let mut state = TypingState::new();
        assert_eq!(
            state.on_signal(&signal("bob", 1, true), 0),
            [started("bob")]
        );
        assert!(state.on_signal(&signal("bob", 2, true), 5_000).is_empty());
        assert!(state.on_signal(&signal("bob", 1, false), 6_000).is_empty());
        assert_eq!(state.typing_in(7), ["bob"]);
        assert_eq!(state.expire(15_000), [stopped("bob")]);
    }

    #[test]
    fn stop_ends_at_once_and_a_late_stop_says_nothing() {
        let mut state = TypingState::new();
        state.on_signal(&signal("bob", 1, true), 0);
        state.on_signal(&signal("carol", 1, true), 0);
        assert_eq!(
            state.on_signal(&signal("bob", 1, false), 100),
            [stopped("bob")]
        );
        assert!(state.on_signal(&signal("bob", 1, false), 200).is_empty());
        assert_eq!(state.typing_in(7), ["carol"]);
        // An expiry found while taking a signal is reported first.
        let events = state.on_signal(&signal("bob", 1, true), 10_000);
        assert_eq!(events, [stopped("carol"), started("bob")]);
    }

    #[test]
    fn datagram_pushes_decode_only_typing_changed_with_id_zero() {
        let limits = Limits::client_inbound();
        let bare = |id: u64, body: Body| Frame::new(id, body).encode().slice(4..);
        let change = signal("bob", 1, true);
        let got = decode_push(&bare(0, change.clone().into()), &limits);
        assert_eq!(got, Some(Body::TypingChanged(change.clone())));
        assert_eq!(decode_push(&bare(3, change.into()), &limits), None);
        assert_eq!(decode_push(&Bytes::from_static(b"junk"), &limits), None);
    }
}
