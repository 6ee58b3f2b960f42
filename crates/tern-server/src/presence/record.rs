//! One user's presence as its home keeps it, without I/O: which devices
//! are connected and what state each set, the account's status text, last
//! seen, the shards watching the user, and the coalescing of pushes (at
//! most one per [`PRESENCE_PUSH_INTERVAL_MS`], the latest state wins).
//!
//! The user's state: Offline with no device connected; Busy if a connected
//! device is busy; else Online if one is online; else Away ("online while
//! any device is connected and not away"). Last seen is the server time the
//! state last left Online or Busy (to Away or Offline).

use std::collections::BTreeMap;
use std::sync::Arc;

use tern_proto::body::presence::{PresenceEntry, PresenceState, PRESENCE_PUSH_INTERVAL_MS};
use tern_store::DeviceId;

use crate::locations::ShardSet;

/// A user's presence at one moment, before any privacy is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Online, Away, Busy or Offline (never Unknown).
    pub state: PresenceState,
    pub status_text: Option<Arc<str>>,
    /// Server time (ms) the user last went away or offline; 0: not since
    /// this server started.
    pub last_seen_ms: u64,
    /// Counts the user's changes: a higher version is newer.
    pub version: u64,
}

impl Snapshot {
    /// A user the home holds nothing about.
    pub fn offline() -> Self {
        Snapshot {
            state: PresenceState::Offline,
            status_text: None,
            last_seen_ms: 0,
            version: 0,
        }
    }

    /// Whether the user counts as online (Online or Busy).
    pub fn is_online(&self) -> bool {
        matches!(self.state, PresenceState::Online | PresenceState::Busy)
    }

    /// The wire entry of `user` showing this snapshot.
    pub fn entry(&self, user: &str) -> PresenceEntry {
        PresenceEntry {
            user: user.to_owned(),
            state: self.state,
            status_text: self.status_text.as_deref().map(str::to_owned),
            last_seen_ms: self.last_seen_ms,
        }
    }

    /// The same presence, ignoring the version.
    fn same_as(&self, other: &Snapshot) -> bool {
        (self.state, &self.status_text, self.last_seen_ms)
            == (other.state, &other.status_text, other.last_seen_ms)
    }
}

#[derive(Clone, Copy, Debug)]
struct Device {
    connections: u32,
    /// Online, Away or Busy as the device set it (Online until it does).
    state: PresenceState,
}

/// What the home should do after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Nothing (no change, nobody watching, or a flush is already due).
    Nothing,
    /// Push the current snapshot to the watchers now.
    Now,
    /// Arm a timer: flush at this server time (ms).
    At(u64),
}

/// One user's presence at its home.
#[derive(Debug, Default)]
pub struct Record {
    devices: BTreeMap<DeviceId, Device>,
    status_text: Option<Arc<str>>,
    last_seen_ms: u64,
    version: u64,
    /// Shards with a connection subscribed to this user.
    pub watchers: ShardSet,
    /// When the last push went out (server ms).
    last_push_ms: Option<u64>,
    /// What the last push said.
    pushed: Option<Snapshot>,
    /// A flush timer is armed.
    flush_due: bool,
    /// Every change is pushed (coalesced) whether or not a shard watches:
    /// the Redis backend publishes each user's state for the cluster.
    pub relayed: bool,
}

impl Record {
    /// An empty record of the Redis backend, whose changes are all pushed.
    pub fn relayed() -> Self {
        Record {
            relayed: true,
            ..Record::default()
        }
    }

    /// The user's presence now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state(),
            status_text: self.status_text.clone(),
            last_seen_ms: self.last_seen_ms,
            version: self.version,
        }
    }

    fn state(&self) -> PresenceState {
        let connected = || self.devices.values().filter(|d| d.connections > 0);
        if connected().next().is_none() {
            PresenceState::Offline
        } else if connected().any(|d| d.state == PresenceState::Busy) {
            PresenceState::Busy
        } else if connected().any(|d| d.state == PresenceState::Online) {
            PresenceState::Online
        } else {
            PresenceState::Away
        }
    }

    /// A connection of `device` opened.
    pub fn connect(&mut self, device: DeviceId, now_ms: u64) -> Push {
        self.change(now_ms, |r| {
            let entry = r.devices.entry(device).or_insert(Device {
                connections: 0,
                state: PresenceState::Online,
            });
            entry.connections = entry.connections.saturating_add(1);
        })
    }

    /// A connection of `device` closed.
    pub fn disconnect(&mut self, device: DeviceId, now_ms: u64) -> Push {
        self.change(now_ms, |r| {
            if let Some(entry) = r.devices.get_mut(&device) {
                entry.connections = entry.connections.saturating_sub(1);
                // A device that set nothing special is forgotten when it leaves.
                if entry.connections == 0 && entry.state == PresenceState::Online {
                    r.devices.remove(&device);
                }
            }
        })
    }

    /// `device` set its state (Online, Away or Busy) and, with `Some`, the
    /// account's status text (empty clears it).
    pub fn set(
        &mut self,
        device: DeviceId,
        state: PresenceState,
        status_text: Option<&str>,
        now_ms: u64,
    ) -> Push {
        self.change(now_ms, |r| {
            let entry = r.devices.entry(device).or_insert(Device {
                connections: 0,
                state,
            });
            entry.state = state;
            if entry.connections == 0 && state == PresenceState::Online {
                r.devices.remove(&device);
            }
            if let Some(text) = status_text {
                r.status_text = (!text.is_empty()).then(|| Arc::from(text));
            }
        })
    }

    /// Applies `edit`; on a visible change, bumps the version, moves last
    /// seen when the user stopped being online, and says when to push.
    fn change(&mut self, now_ms: u64, edit: impl FnOnce(&mut Record)) -> Push {
        let before = self.snapshot();
        edit(self);
        let after_state = self.state();
        let was_online = before.is_online();
        let is_online = matches!(after_state, PresenceState::Online | PresenceState::Busy);
        if was_online && !is_online {
            self.last_seen_ms = now_ms;
        }
        if self.snapshot().same_as(&before) {
            return Push::Nothing;
        }
        self.version = self.version.saturating_add(1);
        self.due(now_ms)
    }

    /// Whether to push now, later, or not at all.
    fn due(&mut self, now_ms: u64) -> Push {
        if (self.watchers.is_empty() && !self.relayed) || self.flush_due {
            return Push::Nothing;
        }
        match self.last_push_ms {
            Some(last) if now_ms < last.saturating_add(PRESENCE_PUSH_INTERVAL_MS) => {
                self.flush_due = true;
                Push::At(last.saturating_add(PRESENCE_PUSH_INTERVAL_MS))
            }
            _ => Push::Now,
        }
    }

    /// The timer armed by [`Push::At`] fired: the snapshot to push, if it
    /// differs from the last one pushed.
    pub fn flush(&mut self) -> Option<Snapshot> {
        self.flush_due = false;
        let now = self.snapshot();
        match &self.pushed {
            Some(pushed) if pushed.same_as(&now) => None,
            _ => Some(now),
        }
    }

    /// When the last push went out (server ms), if one did.
    pub fn last_push_ms(&self) -> Option<u64> {
        self.last_push_ms
    }

    /// Records that `snapshot` was pushed at `now_ms`.
    pub fn pushed(&mut self, snapshot: Snapshot, now_ms: u64) {
        self.last_push_ms = Some(now_ms);
        self.pushed = Some(snapshot);
    }

    /// A push could not be handed to every watcher: try again after the
    /// interval (the latest state then).
    pub fn retry(&mut self, now_ms: u64) -> Push {
        self.pushed = None;
        if self.flush_due {
            return Push::Nothing;
        }
        self.flush_due = true;
        Push::At(now_ms.saturating_add(PRESENCE_PUSH_INTERVAL_MS))
    }

    /// Whether the record says nothing worth keeping: no device state, no
    /// status text, never seen, nobody watching, no flush due.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.status_text.is_none()
            && self.last_seen_ms == 0
            && self.watchers.is_empty()
            && !self.flush_due
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn watched() -> Record {
        let mut r = Record::default();
        r.watchers.insert(1);
        r
    }

    #[test]
    fn online_follows_connections_and_last_seen_the_last_disconnect() {
        let mut r = watched();
        assert_eq!(r.snapshot().state, PresenceState::Offline);
        assert_eq!(r.connect(1, 10), Push::Now);
        r.connect(2, 11);
        assert_eq!(r.snapshot().state, PresenceState::Online);
        r.disconnect(1, 20);
        assert_eq!(r.snapshot().state, PresenceState::Online);
        assert_eq!(r.snapshot().last_seen_ms, 0);
        r.disconnect(2, 30);
        let s = r.snapshot();
        assert_eq!((s.state, s.last_seen_ms), (PresenceState::Offline, 30));
        assert!(!r.is_empty(), "last seen is kept");
    }

    #[test]
    fn away_needs_every_device_away_and_busy_wins() {
        let mut r = watched();
        r.connect(1, 1);
        r.connect(2, 1);
        r.set(1, PresenceState::Away, None, 5);
        assert_eq!(r.snapshot().state, PresenceState::Online);
        r.set(2, PresenceState::Away, Some("lunch"), 6);
        let s = r.snapshot();
        assert_eq!((s.state, s.last_seen_ms), (PresenceState::Away, 6));
        assert_eq!(s.status_text.as_deref(), Some("lunch"));
        r.set(1, PresenceState::Busy, None, 7);
        assert_eq!(r.snapshot().state, PresenceState::Busy);
        r.set(1, PresenceState::Online, Some(""), 8);
        assert_eq!(r.snapshot().status_text, None);
    }

    #[test]
    fn pushes_are_coalesced_to_one_per_interval() {
        let mut r = watched();
        assert_eq!(r.connect(1, 1_000), Push::Now);
        r.pushed(r.snapshot(), 1_000);
        assert_eq!(r.set(1, PresenceState::Away, None, 1_100), Push::At(2_000));
        assert_eq!(r.set(1, PresenceState::Busy, None, 1_200), Push::Nothing);
        assert_eq!(r.set(1, PresenceState::Away, None, 1_300), Push::Nothing);
        let due = r.flush().expect("the latest state");
        assert_eq!(due.state, PresenceState::Away);
        r.pushed(due, 2_000);
        r.set(1, PresenceState::Away, Some("back soon"), 2_100);
        r.set(1, PresenceState::Away, Some(""), 2_200);
        assert_eq!(r.flush(), None, "back to what was pushed: nothing to say");
    }

    #[test]
    fn a_relayed_record_pushes_with_nobody_watching() {
        let mut r = Record::relayed();
        assert_eq!(r.connect(1, 1), Push::Now);
    }

    #[test]
    fn nobody_watching_means_no_push() {
        let mut r = Record::default();
        assert_eq!(r.connect(1, 1), Push::Nothing);
        r.disconnect(1, 2);
        r.set(3, PresenceState::Online, None, 3);
        assert!(r.devices.is_empty());
    }
}
