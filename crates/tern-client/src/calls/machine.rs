//! A sans-IO call state machine (issue 11): what one device does with a
//! call, fed with decrypted call signals, the user's actions and the time
//! (unix ms, passed in: no clock, no I/O, so tests drive it by hand). It
//! answers with [`Action`]s for the app: ring, stop ringing, send a signal
//! to the peer or to this account's other devices, report the end.
//!
//! Behaviour follows WhatsApp and Signal: every device of the callee rings;
//! the first to answer (or decline) tells the others, which stop ringing
//! ("answered elsewhere"); a device already in a call answers a new offer
//! with busy, and the caller then cancels the call on the callee's other
//! devices; an unanswered call ends after [`NO_ANSWER_MS`] on both sides.

/// How long a call rings before it ends unanswered, ms (both sides).
pub const NO_ANSWER_MS: u64 = 45_000;

/// A call signal's meaning (the decrypted content; the server only relays
/// ciphertext). `call_id` is the caller's random id for the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    Offer { call_id: u64, sdp: String },
    Answer { call_id: u64, sdp: String },
    Ice { call_id: u64, candidate: String },
    Hangup { call_id: u64 },
    Busy { call_id: u64 },
}

impl Signal {
    /// The call the signal is about.
    pub fn call_id(&self) -> u64 {
        match self {
            Signal::Offer { call_id, .. }
            | Signal::Answer { call_id, .. }
            | Signal::Ice { call_id, .. }
            | Signal::Hangup { call_id }
            | Signal::Busy { call_id } => *call_id,
        }
    }
}

/// Who sent a signal: a user's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub user: String,
    pub device: u32,
}

/// Why a call ended (or stopped ringing here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Another device of this account answered.
    AnsweredElsewhere,
    /// Another device of this account declined.
    DeclinedElsewhere,
    /// The peer hung up (or cancelled before an answer).
    RemoteHangup,
    /// This device hung up or declined.
    LocalHangup,
    /// The callee is in another call.
    Busy,
    /// Nobody answered within [`NO_ANSWER_MS`].
    NoAnswer,
}

/// What the app does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ring: an incoming call from `from`, whose offer is `sdp` (the
    /// caller's WebRTC session description, opaque here).
    Ring {
        call_id: u64,
        from: Peer,
        sdp: String,
    },
    /// Stop ringing (an incoming call ended before this device answered).
    StopRinging { call_id: u64, why: End },
    /// Send `signal` to the peer's device(s) (all of them before an answer).
    ToPeer(Signal),
    /// Send `signal` to this account's other devices.
    ToOwnDevices(Signal),
    /// The call is connected with the peer's `device`: start media. On the
    /// caller, `sdp` is the callee's answer; on the callee it is `None`
    /// (it made the answer from the offer of [`Action::Ring`]).
    Connected {
        call_id: u64,
        device: u32,
        sdp: Option<String>,
    },
    /// Pass an ICE candidate to the media stack.
    Candidate { call_id: u64, candidate: String },
    /// The call ended.
    Ended { call_id: u64, why: End },
}

/// Where this device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// Calling `peer`, since `since_ms`.
    Outgoing {
        call_id: u64,
        peer: String,
        since_ms: u64,
    },
    /// Ringing for a call from `from`, since `since_ms`.
    Ringing {
        call_id: u64,
        from: Peer,
        since_ms: u64,
    },
    /// In a call with `peer`'s `device`.
    Connected {
        call_id: u64,
        peer: String,
        device: u32,
    },
}

/// Why a user action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("already in a call; hang up first")]
    Busy,
    #[error("no call is ringing on this device")]
    NotRinging,
    #[error("no call to hang up")]
    NoCall,
}

/// One device's call state. `own_user` tells this account's other devices
/// apart from the peer.
#[derive(Clone, Debug)]
pub struct CallMachine {
    own_user: String,
    phase: Phase,
}

impl CallMachine {
    pub fn new(own_user: &str) -> Self {
        CallMachine {
            own_user: own_user.to_owned(),
            phase: Phase::Idle,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Calls `peer` (the app sends the offer to every device of the peer).
    ///
    /// # Errors
    /// [`CallError::Busy`] unless idle.
    pub fn place(
        &mut self,
        call_id: u64,
        peer: &str,
        sdp: String,
        now_ms: u64,
    ) -> Result<Vec<Action>, CallError> {
        if self.phase != Phase::Idle {
            return Err(CallError::Busy);
        }
        self.phase = Phase::Outgoing {
            call_id,
            peer: peer.to_owned(),
            since_ms: now_ms,
        };
        Ok(vec![Action::ToPeer(Signal::Offer { call_id, sdp })])
    }

    /// Answers the ringing call: the answer to the caller's device, and
    /// "answered" to this account's other devices, which stop ringing.
    ///
    /// # Errors
    /// [`CallError::NotRinging`].
    pub fn answer(&mut self, sdp: String) -> Result<Vec<Action>, CallError> {
        let Phase::Ringing { call_id, from, .. } = &self.phase else {
            return Err(CallError::NotRinging);
        };
        let (call_id, from) = (*call_id, from.clone());
        self.phase = Phase::Connected {
            call_id,
            peer: from.user,
            device: from.device,
        };
        let answer = Signal::Answer { call_id, sdp };
        Ok(vec![
            Action::ToPeer(answer.clone()),
            Action::ToOwnDevices(answer),
            Action::Connected {
                call_id,
                device: from.device,
                sdp: None,
            },
        ])
    }

    /// Hangs up, cancels or declines: tells the peer (and, declining, this
    /// account's other devices).
    ///
    /// # Errors
    /// [`CallError::NoCall`] when idle.
    pub fn hangup(&mut self) -> Result<Vec<Action>, CallError> {
        let (call_id, declining) = match &self.phase {
            Phase::Idle => return Err(CallError::NoCall),
            Phase::Ringing { call_id, .. } => (*call_id, true),
            Phase::Outgoing { call_id, .. } | Phase::Connected { call_id, .. } => (*call_id, false),
        };
        self.phase = Phase::Idle;
        let hangup = Signal::Hangup { call_id };
        let mut out = vec![Action::ToPeer(hangup.clone())];
        if declining {
            out.push(Action::ToOwnDevices(hangup));
        }
        out.push(Action::Ended {
            call_id,
            why: End::LocalHangup,
        });
        Ok(out)
    }

    /// Passes one of this device's ICE candidates (RFC 8839 `candidate:`
    /// attribute text) to the peer, during a call being placed or connected.
    ///
    /// # Errors
    /// [`CallError::NoCall`] when idle or ringing (answer first).
    pub fn candidate(&self, candidate: String) -> Result<Vec<Action>, CallError> {
        match &self.phase {
            Phase::Outgoing { call_id, .. } | Phase::Connected { call_id, .. } => {
                Ok(vec![Action::ToPeer(Signal::Ice {
                    call_id: *call_id,
                    candidate,
                })])
            }
            Phase::Idle | Phase::Ringing { .. } => Err(CallError::NoCall),
        }
    }

    /// Handles a decrypted signal from `from` at `now_ms`.
    pub fn on_signal(&mut self, from: &Peer, signal: Signal, now_ms: u64) -> Vec<Action> {
        let own = from.user == self.own_user;
        let id = signal.call_id();
        match (&self.phase, signal) {
            (Phase::Idle, Signal::Offer { call_id, sdp }) if !own => {
                self.phase = Phase::Ringing {
                    call_id,
                    from: from.clone(),
                    since_ms: now_ms,
                };
                vec![Action::Ring {
                    call_id,
                    from: from.clone(),
                    sdp,
                }]
            }
            (phase, Signal::Offer { call_id, .. }) if !own && current(phase) != Some(call_id) => {
                vec![Action::ToPeer(Signal::Busy { call_id })]
            }
            (Phase::Ringing { call_id, .. }, Signal::Answer { .. }) if own && *call_id == id => {
                self.stop(id, End::AnsweredElsewhere)
            }
            (Phase::Ringing { call_id, .. }, Signal::Hangup { .. }) if *call_id == id => {
                let why = if own {
                    End::DeclinedElsewhere
                } else {
                    End::RemoteHangup
                };
                self.stop(id, why)
            }
            (Phase::Outgoing { call_id, peer, .. }, Signal::Answer { sdp, .. })
                if *call_id == id && *peer == from.user =>
            {
                self.phase = Phase::Connected {
                    call_id: id,
                    peer: peer.clone(),
                    device: from.device,
                };
                vec![Action::Connected {
                    call_id: id,
                    device: from.device,
                    sdp: Some(sdp),
                }]
            }
            (Phase::Outgoing { call_id, .. }, Signal::Busy { .. }) if *call_id == id && !own => {
                // The callee is in a call: their other devices stop ringing.
                let mut out = vec![Action::ToPeer(Signal::Hangup { call_id: id })];
                out.extend(self.end(id, End::Busy));
                out
            }
            (Phase::Outgoing { call_id, .. }, Signal::Hangup { .. }) if *call_id == id && !own => {
                self.end(id, End::RemoteHangup)
            }
            (
                Phase::Connected {
                    call_id, device, ..
                },
                Signal::Hangup { .. },
            ) if *call_id == id && !own && *device == from.device => {
                self.end(id, End::RemoteHangup)
            }
            (phase, Signal::Ice { candidate, .. }) if current(phase) == Some(id) && !own => {
                vec![Action::Candidate {
                    call_id: id,
                    candidate,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Ends a call unanswered after [`NO_ANSWER_MS`]: the caller cancels
    /// (hangup to the peer), a ringing device stops.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        match &self.phase {
            Phase::Outgoing {
                call_id, since_ms, ..
            } if now_ms.saturating_sub(*since_ms) >= NO_ANSWER_MS => {
                let call_id = *call_id;
                let mut out = vec![Action::ToPeer(Signal::Hangup { call_id })];
                out.extend(self.end(call_id, End::NoAnswer));
                out
            }
            Phase::Ringing {
                call_id, since_ms, ..
            } if now_ms.saturating_sub(*since_ms) >= NO_ANSWER_MS => {
                let call_id = *call_id;
                self.stop(call_id, End::NoAnswer)
            }
            _ => Vec::new(),
        }
    }

    fn stop(&mut self, call_id: u64, why: End) -> Vec<Action> {
        self.phase = Phase::Idle;
        vec![Action::StopRinging { call_id, why }]
    }

    fn end(&mut self, call_id: u64, why: End) -> Vec<Action> {
        self.phase = Phase::Idle;
        vec![Action::Ended { call_id, why }]
    }
}

fn current(phase: &Phase) -> Option<u64> {
    match phase {
        Phase::Idle => None,
        Phase::Outgoing { call_id, .. }
        | Phase::Ringing { call_id, .. }
        | Phase::Connected { call_id, .. } => Some(*call_id),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn dev(user: &str, device: u32) -> Peer {
        Peer {
            user: user.into(),
            device,
        }
    }

    fn offer(call_id: u64) -> Signal {
        Signal::Offer {
            call_id,
            sdp: "o".into(),
        }
    }

    #[test]
    fn every_callee_device_rings_and_one_answer_stops_the_others() {
        let (mut phone, mut tablet) = (CallMachine::new("bob"), CallMachine::new("bob"));
        let alice = dev("alice", 1);
        for m in [&mut phone, &mut tablet] {
            assert_eq!(
                m.on_signal(&alice, offer(7), 0),
                vec![Action::Ring {
                    call_id: 7,
                    from: alice.clone(),
                    sdp: "o".into(),
                }]
            );
        }
        let out = phone.answer("a".into()).unwrap();
        assert!(out.contains(&Action::Connected {
            call_id: 7,
            device: 1,
            sdp: None,
        }));
        let Some(Action::ToOwnDevices(answered)) = out.get(1).cloned() else {
            panic!("{out:?}")
        };
        let stop = tablet.on_signal(&dev("bob", 1), answered, 1_000);
        assert_eq!(
            stop,
            vec![Action::StopRinging {
                call_id: 7,
                why: End::AnsweredElsewhere
            }]
        );
        assert_eq!(tablet.phase(), &Phase::Idle);
        // The caller connects on the answer.
        let mut caller = CallMachine::new("alice");
        caller.place(7, "bob", "o".into(), 0).unwrap();
        let answer = Signal::Answer {
            call_id: 7,
            sdp: "a".into(),
        };
        assert_eq!(
            caller.on_signal(&dev("bob", 1), answer, 500),
            vec![Action::Connected {
                call_id: 7,
                device: 1,
                sdp: Some("a".into()),
            }]
        );
    }

    #[test]
    fn declining_on_one_device_stops_the_others() {
        let (mut phone, mut tablet) = (CallMachine::new("bob"), CallMachine::new("bob"));
        phone.on_signal(&dev("alice", 1), offer(7), 0);
        tablet.on_signal(&dev("alice", 1), offer(7), 0);
        let out = phone.hangup().unwrap();
        assert!(out.contains(&Action::ToOwnDevices(Signal::Hangup { call_id: 7 })));
        let stop = tablet.on_signal(&dev("bob", 1), Signal::Hangup { call_id: 7 }, 10);
        assert_eq!(
            stop,
            vec![Action::StopRinging {
                call_id: 7,
                why: End::DeclinedElsewhere
            }]
        );
    }

    #[test]
    fn a_device_in_a_call_answers_busy() {
        let mut bob = CallMachine::new("bob");
        bob.on_signal(&dev("alice", 1), offer(7), 0);
        bob.answer("a".into()).unwrap();
        let out = bob.on_signal(&dev("carol", 1), offer(9), 10);
        assert_eq!(out, vec![Action::ToPeer(Signal::Busy { call_id: 9 })]);
        let mut carol = CallMachine::new("carol");
        carol.place(9, "bob", "o".into(), 0).unwrap();
        let ended = carol.on_signal(&dev("bob", 1), Signal::Busy { call_id: 9 }, 20);
        assert_eq!(
            ended,
            vec![
                Action::ToPeer(Signal::Hangup { call_id: 9 }),
                Action::Ended {
                    call_id: 9,
                    why: End::Busy
                }
            ]
        );
        assert_eq!(carol.phase(), &Phase::Idle);
        assert!(matches!(bob.phase(), Phase::Connected { call_id: 7, .. }));
    }

    #[test]
    fn no_answer_after_45_seconds_on_both_sides() {
        let mut alice = CallMachine::new("alice");
        let mut bob = CallMachine::new("bob");
        alice.place(7, "bob", "o".into(), 1_000).unwrap();
        bob.on_signal(&dev("alice", 1), offer(7), 1_000);
        assert!(alice.tick(1_000 + NO_ANSWER_MS - 1).is_empty());
        assert!(bob.tick(1_000 + NO_ANSWER_MS - 1).is_empty());
        let out = alice.tick(1_000 + NO_ANSWER_MS);
        assert_eq!(
            out,
            vec![
                Action::ToPeer(Signal::Hangup { call_id: 7 }),
                Action::Ended {
                    call_id: 7,
                    why: End::NoAnswer
                }
            ]
        );
        let out = bob.tick(1_000 + NO_ANSWER_MS);
        assert_eq!(
            out,
            vec![Action::StopRinging {
                call_id: 7,
                why: End::NoAnswer
            }]
        );
    }

    #[test]
    fn hangup_ends_a_connected_call_and_stale_signals_are_ignored() {
        let mut bob = CallMachine::new("bob");
        bob.on_signal(&dev("alice", 1), offer(7), 0);
        bob.answer("a".into()).unwrap();
        assert!(bob
            .on_signal(&dev("alice", 1), Signal::Hangup { call_id: 6 }, 5)
            .is_empty());
        let ice = Signal::Ice {
            call_id: 7,
            candidate: "c".into(),
        };
        assert_eq!(
            bob.on_signal(&dev("alice", 1), ice, 6),
            vec![Action::Candidate {
                call_id: 7,
                candidate: "c".into()
            }]
        );
        let out = bob.on_signal(&dev("alice", 1), Signal::Hangup { call_id: 7 }, 10);
        assert_eq!(
            out,
            vec![Action::Ended {
                call_id: 7,
                why: End::RemoteHangup
            }]
        );
        assert_eq!(bob.hangup(), Err(CallError::NoCall));
        assert_eq!(bob.candidate("c".into()), Err(CallError::NoCall));
        assert_eq!(bob.answer("a".into()), Err(CallError::NotRinging));
    }

    #[test]
    fn a_caller_cannot_place_two_calls() {
        let mut alice = CallMachine::new("alice");
        alice.place(1, "bob", "o".into(), 0).unwrap();
        assert_eq!(alice.place(2, "carol", "o".into(), 0), Err(CallError::Busy));
        let ice = Signal::Ice {
            call_id: 1,
            candidate: "c".into(),
        };
        assert_eq!(alice.candidate("c".into()), Ok(vec![Action::ToPeer(ice)]));
    }
}
