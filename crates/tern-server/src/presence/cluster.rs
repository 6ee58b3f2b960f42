//! One node's view of a user as the Redis backend stores it, and how the
//! views of every node merge into the user's presence, without I/O.
//!
//! A user's Redis hash holds one field per node (the node's id) whose value
//! is [`View::encode`]: the state of the user's devices on that node, the
//! last seen and status text that node knows, when the view last changed
//! and when it was last written. A node rewrites its views of online users
//! every heartbeat; a view that is online but older than the staleness
//! bound belongs to a node that stopped (crashed, cut off) and counts as
//! offline, last seen when it was written. So a node's liveness needs no
//! per-field TTL (Redis 7.0, Debian's, has none) and no node registry.
//!
//! Merging: Busy if a node says Busy, else Online, else Away, else Offline
//! (the single-node rule of [`super::record`], over nodes); last seen is
//! the latest; the status text is the one of the most recently changed
//! view (the text is the account's, set from one device on one node); the
//! version is the latest change time, so a later merge is never older.

use std::sync::Arc;

use tern_proto::body::presence::PresenceState;

use super::record::Snapshot;

/// One node's view of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub state: PresenceState,
    pub last_seen_ms: u64,
    /// Server time (ms) the node's view last changed.
    pub changed_ms: u64,
    /// Server time (ms) the node last wrote it (changes and heartbeats).
    pub written_ms: u64,
    pub status_text: Option<String>,
}

impl View {
    /// The view of a node whose home record shows `snapshot`.
    pub fn of(snapshot: &Snapshot, changed_ms: u64, written_ms: u64) -> View {
        View {
            state: snapshot.state,
            last_seen_ms: snapshot.last_seen_ms,
            changed_ms,
            written_ms,
            status_text: snapshot.status_text.as_deref().map(str::to_owned),
        }
    }

    /// `state:last_seen:changed:written:` then `-` (no text) or `+text`.
    pub fn encode(&self) -> String {
        let text = match &self.status_text {
            Some(text) => format!("+{text}"),
            None => "-".to_owned(),
        };
        let state = state_char(self.state);
        format!(
            "{state}:{}:{}:{}:{text}",
            self.last_seen_ms, self.changed_ms, self.written_ms
        )
    }

    /// The view `value` encodes; `None` for anything else (a foreign or
    /// corrupted field is ignored, never trusted).
    pub fn decode(value: &str) -> Option<View> {
        let mut parts = value.splitn(5, ':');
        let state = char_state(parts.next()?)?;
        let last_seen_ms = parts.next()?.parse().ok()?;
        let changed_ms = parts.next()?.parse().ok()?;
        let written_ms = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        let status_text = match rest.strip_prefix('+') {
            Some(text) => Some(text.to_owned()),
            None if rest == "-" => None,
            None => return None,
        };
        Some(View {
            state,
            last_seen_ms,
            changed_ms,
            written_ms,
            status_text,
        })
    }

    /// This view as of `now_ms`: online views not written within
    /// `stale_after_ms` are offline, last seen when last written.
    fn current(mut self, now_ms: u64, stale_after_ms: u64) -> View {
        let online = self.state != PresenceState::Offline;
        if online && now_ms.saturating_sub(self.written_ms) > stale_after_ms {
            self.state = PresenceState::Offline;
            self.last_seen_ms = self.last_seen_ms.max(self.written_ms);
        }
        self
    }
}

fn state_char(state: PresenceState) -> char {
    match state {
        PresenceState::Online => 'o',
        PresenceState::Away => 'a',
        PresenceState::Busy => 'b',
        _ => 'f',
    }
}

fn char_state(text: &str) -> Option<PresenceState> {
    Some(match text {
        "o" => PresenceState::Online,
        "a" => PresenceState::Away,
        "b" => PresenceState::Busy,
        "f" => PresenceState::Offline,
        _ => return None,
    })
}

fn rank(state: PresenceState) -> u8 {
    match state {
        PresenceState::Busy => 3,
        PresenceState::Online => 2,
        PresenceState::Away => 1,
        _ => 0,
    }
}

/// The user's presence from every node's view (Offline, never seen, when
/// there is none).
pub fn merge(views: impl IntoIterator<Item = View>, now_ms: u64, stale_after_ms: u64) -> Snapshot {
    let mut out = Snapshot::offline();
    let mut text_changed: Option<u64> = None;
    for view in views {
        let view = view.current(now_ms, stale_after_ms);
        if rank(view.state) > rank(out.state) {
            out.state = view.state;
        }
        out.last_seen_ms = out.last_seen_ms.max(view.last_seen_ms);
        out.version = out.version.max(view.changed_ms);
        if text_changed.is_none_or(|at| view.changed_ms > at) {
            text_changed = Some(view.changed_ms);
            out.status_text = view.status_text.as_deref().map(Arc::from);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn view(state: PresenceState, changed: u64, written: u64, text: Option<&str>) -> View {
        View {
            state,
            last_seen_ms: 0,
            changed_ms: changed,
            written_ms: written,
            status_text: text.map(str::to_owned),
        }
    }

    #[test]
    fn views_round_trip_and_junk_is_refused() {
        for text in [None, Some(""), Some("a:b:c"), Some("-"), Some("é")] {
            let v = View {
                last_seen_ms: 7,
                ..view(PresenceState::Busy, 1, 2, text)
            };
            assert_eq!(View::decode(&v.encode()), Some(v));
        }
        for junk in ["", "x:1:2:3:-", "o:1:2:3", "o:1:2:3:text", "o:-1:2:3:-"] {
            assert_eq!(View::decode(junk), None, "{junk}");
        }
    }

    #[test]
    fn busy_wins_then_online_then_away_and_the_newest_text() {
        let merged = merge(
            [
                view(PresenceState::Away, 10, 100, Some("old")),
                view(PresenceState::Online, 20, 100, None),
            ],
            100,
            50,
        );
        assert_eq!(merged.state, PresenceState::Online);
        assert_eq!(merged.status_text, None, "the newer view cleared it");
        assert_eq!(merged.version, 20);
        let busy = merge([view(PresenceState::Busy, 5, 100, Some("x"))], 100, 50);
        assert_eq!(busy.state, PresenceState::Busy);
        assert_eq!(merge([], 1, 1), Snapshot::offline());
    }

    #[test]
    fn a_silent_node_counts_as_offline_last_seen_at_its_last_write() {
        let merged = merge([view(PresenceState::Online, 10, 100, None)], 200, 50);
        assert_eq!(
            (merged.state, merged.last_seen_ms),
            (PresenceState::Offline, 100)
        );
        let fresh = merge([view(PresenceState::Online, 10, 100, None)], 140, 50);
        assert_eq!(fresh.state, PresenceState::Online);
    }
}
