//! End-to-end encrypted calls on a [`SecureClient`] (issue 11, docs/E2EE.md
//! §8.3, PROTOCOL.md §4.11): the SDK owns this device's
//! [`CallMachine`], seals every signal it sends per recipient device with
//! the same Olm sessions as one-to-one messages (so the server relays and
//! holds only ciphertext), opens the `CallSignalled` pushes it receives,
//! feeds them to the machine and tells the app what to do as
//! [`CallEvent`]s ([`SecureClient::next_call_event`]).
//!
//! Routing follows WhatsApp and Signal: an offer (and a cancel before any
//! answer, or after a busy) goes to every device of the callee; an answer,
//! decline, ICE candidate or hangup goes to the one device of the peer in
//! the call; an answer or decline also goes to this account's other
//! devices, which stop ringing; a busy goes back to the device that offered. Media is the
//! app's business: the SDP and candidate strings are carried opaquely.
//! Every finished call is written to the call history
//! ([`crate::message_store::calls`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use super::{lock, Inner, SecureClient, SecureError};
use crate::calls::machine::{Action, CallError, CallMachine, End, Peer, Phase, Signal};
use crate::calls::wire::{self, SignalError};
use crate::message_store::calls::{CallRecord, Direction, Outcome};
use crate::message_store::MessageStoreError;
use crate::olm::CryptoError;
use tern_proto::body::calls::CallSignalled;
use tern_proto::body::devices::ListDevices;

/// Call signal ids remembered to drop repeats (a replay after reconnecting).
const SEEN_SIGNALS: usize = 256;
/// Call events waiting for the app; past this the oldest are dropped.
const EVENT_QUEUE: usize = 64;
/// How often an unanswered call is checked for its 45 s.
const TICK: Duration = Duration::from_millis(500);

/// What the app hears about calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// An incoming call rings on this device: `sdp` is the caller's offer.
    /// Answer with [`SecureClient::answer_call`], decline with
    /// [`SecureClient::hang_up`].
    Ringing {
        call_id: u64,
        conversation_id: u64,
        from: Peer,
        sdp: String,
    },
    /// The incoming call stopped ringing here before this device answered.
    StoppedRinging { call_id: u64, why: End },
    /// Connected with the peer's `device`; on the caller `sdp` is the
    /// callee's answer, on the callee `None`.
    Connected {
        call_id: u64,
        device: u32,
        sdp: Option<String>,
    },
    /// An ICE candidate of the peer for the media stack.
    Candidate { call_id: u64, candidate: String },
    /// The call ended.
    Ended { call_id: u64, why: End },
}

/// Why a call operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CallOpError {
    /// Not possible in this device's call state (busy, nothing ringing,
    /// no call).
    #[error(transparent)]
    State(#[from] CallError),
    /// The SDP or candidate text is too long (12 KiB).
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("a call needs another user; this device is {0}'s")]
    SelfCall(String),
    /// None of the user's devices has published keys to encrypt to; they
    /// must connect once first.
    #[error(
        "none of {0}'s devices can be reached (no keys published); they must connect once first"
    )]
    Unreachable(String),
    /// Encryption or the request failed; for a new call the call is over.
    #[error(transparent)]
    Secure(#[from] SecureError),
}

/// Who a signal goes to.
#[derive(Clone, Debug)]
enum Route {
    /// Every current device of the user.
    AllOf(String),
    /// One device.
    Device(Peer),
}

/// The call this device is in, beyond the machine's phase.
#[derive(Clone, Debug)]
struct Current {
    conversation_id: u64,
    peer: String,
    direction: Direction,
    started_ms: u64,
    connected_ms: Option<u64>,
}

struct State {
    machine: CallMachine,
    current: Option<Current>,
    seen: VecDeque<u64>,
    seen_set: HashSet<u64>,
}

impl State {
    /// False for a signal id seen before (remembering it otherwise).
    fn first_sight(&mut self, signal_id: u64) -> bool {
        if !self.seen_set.insert(signal_id) {
            return false;
        }
        self.seen.push_back(signal_id);
        if self.seen.len() > SEEN_SIGNALS {
            if let Some(old) = self.seen.pop_front() {
                self.seen_set.remove(&old);
            }
        }
        true
    }
}

/// The SDK's call state of one device, kept on the client.
pub(super) struct Calls {
    state: std::sync::Mutex<State>,
    events: mpsc::Sender<CallEvent>,
    receiver: Mutex<mpsc::Receiver<CallEvent>>,
}

impl Calls {
    pub(super) fn new(own_user: &str) -> Calls {
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        Calls {
            state: std::sync::Mutex::new(State {
                machine: CallMachine::new(own_user),
                current: None,
                seen: VecDeque::new(),
                seen_set: HashSet::new(),
            }),
            events,
            receiver: Mutex::new(receiver),
        }
    }
}

impl SecureClient {
    /// Calls `peer` with the WebRTC offer `sdp`: every device of `peer`
    /// rings. Returns the new call's id. The outcome comes as
    /// [`CallEvent`]s; an unanswered call ends after 45 s.
    ///
    /// # Errors
    /// [`CallOpError::State`] (`Busy`) when this device is in a call;
    /// [`CallOpError::SelfCall`]; [`CallOpError::Unreachable`] when no
    /// device of `peer` has keys; [`CallOpError::Secure`] when the
    /// conversation or the send fails (the call is then over).
    pub async fn place_call(&self, peer: &str, sdp: String) -> Result<u64, CallOpError> {
        if peer == self.user() {
            return Err(CallOpError::SelfCall(peer.to_owned()));
        }
        let inner = &self.inner;
        if *lock(&inner.calls.state).machine.phase() != Phase::Idle {
            return Err(CallError::Busy.into());
        }
        let conversation_id = self.direct(peer).await?;
        let call_id = rand::random::<u64>() | 1;
        let now = now_ms();
        let actions = {
            let mut state = lock(&inner.calls.state);
            let actions = state.machine.place(call_id, peer, sdp, now)?;
            state.current = Some(Current {
                conversation_id,
                peer: peer.to_owned(),
                direction: Direction::Outgoing,
                started_ms: now,
                connected_ms: None,
            });
            actions
        };
        let route = Route::AllOf(peer.to_owned());
        if let Err(e) = inner.perform(actions, &route, conversation_id).await {
            let mut state = lock(&inner.calls.state);
            if state.machine.phase() != &Phase::Idle {
                let _ = state.machine.hangup();
            }
            state.current = None;
            return Err(e);
        }
        Ok(call_id)
    }

    /// Answers the call ringing here with the WebRTC answer `sdp`: the
    /// caller connects, this account's other devices stop ringing.
    ///
    /// # Errors
    /// [`CallOpError::State`] (`NotRinging`); [`CallOpError::Secure`].
    pub async fn answer_call(&self, sdp: String) -> Result<(), CallOpError> {
        self.operate(|m| m.answer(sdp)).await
    }

    /// Hangs up, cancels an outgoing call, or declines a ringing one.
    ///
    /// # Errors
    /// [`CallOpError::State`] (`NoCall`); [`CallOpError::Secure`] when the
    /// peer could not be told (the call is over here regardless).
    pub async fn hang_up(&self) -> Result<(), CallOpError> {
        self.operate(CallMachine::hangup).await
    }

    /// Sends one of this device's ICE candidates to the peer.
    ///
    /// # Errors
    /// [`CallOpError::State`] (`NoCall`) unless placing or in a call;
    /// [`CallOpError::Signal`] for a candidate over 12 KiB.
    pub async fn send_candidate(&self, candidate: String) -> Result<(), CallOpError> {
        self.operate(|m| m.candidate(candidate)).await
    }

    /// Ends this device's call if it has gone unanswered for 45 s at
    /// `now_ms` (ms since the Unix epoch): a caller cancels it on the
    /// callee's devices, a ringing device stops. The SDK does this by
    /// itself twice a second with the wall clock; an app (or a test) may
    /// call it with its own clock. Failures to tell the peer are logged.
    pub async fn expire_calls(&self, now_ms: u64) {
        self.inner.tick_calls(now_ms).await;
    }

    /// This device's latest `limit` calls, newest first (the local
    /// history, [`crate::message_store::calls`]).
    ///
    /// # Errors
    /// [`MessageStoreError::ZeroLimit`], or the store cannot be read.
    pub fn call_history(&self, limit: u32) -> Result<Vec<CallRecord>, MessageStoreError> {
        self.inner.messages.call_history(limit)
    }

    /// The call state of this device.
    pub fn call_phase(&self) -> Phase {
        lock(&self.inner.calls.state).machine.phase().clone()
    }

    /// The next call event: waits for one as long as the client exists
    /// (`None` is never returned before). Events the app leaves unread
    /// past 64 are dropped (the calls still end and enter the history).
    pub async fn next_call_event(&self) -> Option<CallEvent> {
        self.inner.calls.receiver.lock().await.recv().await
    }

    /// Runs a user operation on the machine and performs its actions.
    async fn operate(
        &self,
        op: impl FnOnce(&mut CallMachine) -> Result<Vec<Action>, CallError>,
    ) -> Result<(), CallOpError> {
        let inner = &self.inner;
        let (actions, route, conversation_id) = {
            let mut state = lock(&inner.calls.state);
            let route = route_of(state.machine.phase());
            let conversation_id = state.current.as_ref().map_or(0, |c| c.conversation_id);
            (op(&mut state.machine)?, route, conversation_id)
        };
        let Some(route) = route else {
            return Ok(());
        };
        inner.perform(actions, &route, conversation_id).await
    }
}

/// Where `phase`'s signals to the peer go.
fn route_of(phase: &Phase) -> Option<Route> {
    match phase {
        Phase::Idle => None,
        Phase::Outgoing { peer, .. } => Some(Route::AllOf(peer.clone())),
        Phase::Ringing { from, .. } => Some(Route::Device(from.clone())),
        Phase::Connected { peer, device, .. } => Some(Route::Device(Peer {
            user: peer.clone(),
            device: *device,
        })),
    }
}

impl Inner {
    /// Opens a `CallSignalled` push and feeds it to the machine; a repeat,
    /// or one that does not decrypt or decode, is dropped (logged).
    pub(super) async fn on_call_signalled(&self, pushed: CallSignalled) {
        if !lock(&self.calls.state).first_sight(pushed.signal_id) {
            return;
        }
        let signal = match self.open_signal(&pushed).await {
            Ok(signal) => signal,
            // A signal another process of this device already opened (the
            // server replays the last minute's signals on every connect).
            Err(error @ SecureError::Olm(CryptoError::Replay { .. })) => {
                tracing::debug!(%error, "dropped a call signal opened before");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, sender = %pushed.sender, "dropped a call signal");
                return;
            }
        };
        let from = Peer {
            user: pushed.sender.clone(),
            device: pushed.sender_device,
        };
        let at = pushed.server_time_ms.min(now_ms());
        let (actions, route) = {
            let mut state = lock(&self.calls.state);
            let was_idle = state.machine.phase() == &Phase::Idle;
            // A busy goes back to the offering device; anything else to the
            // peer of the call as it was (the callee's devices, after busy).
            let route = match &signal {
                Signal::Offer { .. } => Some(Route::Device(from.clone())),
                _ => route_of(state.machine.phase()),
            };
            let actions = state.machine.on_signal(&from, signal, at);
            if was_idle && state.machine.phase() != &Phase::Idle {
                state.current = Some(Current {
                    conversation_id: pushed.conversation_id,
                    peer: from.user.clone(),
                    direction: Direction::Incoming,
                    started_ms: at,
                    connected_ms: None,
                });
            }
            (actions, route)
        };
        let Some(route) = route else {
            return;
        };
        if let Err(error) = self.perform(actions, &route, pushed.conversation_id).await {
            tracing::warn!(%error, "could not send a call signal in reply");
        }
    }

    async fn open_signal(&self, pushed: &CallSignalled) -> Result<Signal, SecureError> {
        let mut crypto = self.crypto.lock().await;
        let plaintext =
            crypto
                .olm
                .decrypt(&pushed.sender, pushed.sender_device, &pushed.payload)?;
        crypto.save_olm()?;
        wire::decode(&plaintext).map_err(|e| SecureError::Protocol(e.to_string()))
    }

    /// Ends an unanswered call after its 45 s.
    async fn tick_calls(&self, now: u64) {
        let (actions, route, conversation_id) = {
            let mut state = lock(&self.calls.state);
            if state.machine.phase() == &Phase::Idle {
                return;
            }
            let route = route_of(state.machine.phase());
            let conversation_id = state.current.as_ref().map_or(0, |c| c.conversation_id);
            (state.machine.tick(now), route, conversation_id)
        };
        if let Some(route) = route {
            if let Err(error) = self.perform(actions, &route, conversation_id).await {
                tracing::warn!(%error, "could not tell the peer the call went unanswered");
            }
        }
    }

    /// Sends the signals among `actions` (to the peer by `route`, or to
    /// this account's other devices) and hands the rest to the app; a
    /// finished call is written to the history.
    async fn perform(
        &self,
        actions: Vec<Action>,
        route: &Route,
        conversation_id: u64,
    ) -> Result<(), CallOpError> {
        let mut first_error = None;
        for action in actions {
            let sent = match action {
                Action::ToPeer(signal) => self.seal(conversation_id, route, &signal).await,
                Action::ToOwnDevices(signal) => {
                    let own = Route::AllOf(self.identity.user.clone());
                    match self.seal(conversation_id, &own, &signal).await {
                        Err(CallOpError::Unreachable(_)) => Ok(()),
                        other => other,
                    }
                }
                other => {
                    self.to_app(other);
                    Ok(())
                }
            };
            if let Err(e) = sent {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Turns a machine action into the app's event, noting the call's
    /// progress and writing the history at its end.
    fn to_app(&self, action: Action) {
        let event = {
            let mut state = lock(&self.calls.state);
            match action {
                Action::Ring { call_id, from, sdp } => CallEvent::Ringing {
                    call_id,
                    conversation_id: state.current.as_ref().map_or(0, |c| c.conversation_id),
                    from,
                    sdp,
                },
                Action::Connected {
                    call_id,
                    device,
                    sdp,
                } => {
                    if let Some(current) = state.current.as_mut() {
                        current.connected_ms = Some(now_ms());
                    }
                    CallEvent::Connected {
                        call_id,
                        device,
                        sdp,
                    }
                }
                Action::Candidate { call_id, candidate } => {
                    CallEvent::Candidate { call_id, candidate }
                }
                Action::StopRinging { call_id, why } => {
                    self.record(state.current.take(), call_id, why);
                    CallEvent::StoppedRinging { call_id, why }
                }
                Action::Ended { call_id, why } => {
                    self.record(state.current.take(), call_id, why);
                    CallEvent::Ended { call_id, why }
                }
                Action::ToPeer(_) | Action::ToOwnDevices(_) => return,
            }
        };
        if self.calls.events.try_send(event).is_err() {
            // An app that does not follow calls (`tern listen`) is no fault.
            tracing::debug!("call event dropped: the app is not reading call events");
        }
    }

    /// Writes a finished call to the history (logged on failure: history
    /// is a record, not the call).
    fn record(&self, current: Option<Current>, call_id: u64, why: End) {
        let Some(call) = current else {
            return;
        };
        let ended_ms = now_ms();
        let record = CallRecord {
            call_id,
            conversation_id: call.conversation_id,
            peer: call.peer,
            direction: call.direction,
            outcome: Outcome::of(call.direction, why, call.connected_ms.is_some()),
            started_ms: call.started_ms,
            duration_ms: call
                .connected_ms
                .map_or(0, |at| ended_ms.saturating_sub(at)),
        };
        if let Err(error) = self.messages.record_call(&record) {
            tracing::warn!(%error, "could not write the call history");
        }
    }

    /// Seals `signal` for `route`'s devices (Olm, like a one-to-one
    /// message) and sends it as one `CallSignal`. Devices without keys are
    /// left out; none left is [`CallOpError::Unreachable`].
    async fn seal(
        &self,
        conversation_id: u64,
        route: &Route,
        signal: &Signal,
    ) -> Result<(), CallOpError> {
        let plaintext = wire::encode(signal)?;
        let targets = self.route_targets(route).await?;
        let (mut payloads, _skipped) = self.encrypt_for(&targets, &plaintext).await?;
        payloads.retain(|p| !p.payload.is_empty());
        if payloads.is_empty() {
            let user = match route {
                Route::AllOf(user) => user.clone(),
                Route::Device(peer) => peer.user.clone(),
            };
            return Err(CallOpError::Unreachable(user));
        }
        self.client
            .call_signal(conversation_id, payloads)
            .await
            .map_err(SecureError::from)?;
        Ok(())
    }

    /// The devices of `route`, this device left out.
    async fn route_targets(&self, route: &Route) -> Result<Vec<(String, u32)>, SecureError> {
        let me = (self.identity.user.as_str(), self.identity.device);
        match route {
            Route::Device(peer) => Ok(vec![(peer.user.clone(), peer.device)]),
            Route::AllOf(user) => {
                let list = self
                    .client
                    .request(ListDevices { user: user.clone() })
                    .await?;
                Ok(list
                    .devices
                    .iter()
                    .filter(|d| (user.as_str(), d.device) != me)
                    .map(|d| (user.clone(), d.device))
                    .collect())
            }
        }
    }
}

/// Ticks the client's calls until the client is gone or closed.
pub(super) async fn tick_loop(inner: Weak<Inner>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.client.is_closed() {
            return;
        }
        inner.tick_calls(now_ms()).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
