//! Pending device-link requests, server-wide: a new device's `RequestLink`
//! leaves a small record here (user, device name, key, expiry, decision),
//! not a live connection. The account's devices decide with `ApproveLink`
//! on any shard; the new device reconnects and repeats its `RequestLink`
//! (same key, a proof for the new connection) to collect the decision.
//!
//! Bounded: at most [`MAX_PENDING_PER_USER`] records per user and
//! [`MAX_PENDING`] in all; records expire `link_timeout_secs` after the
//! first request, on the server clock, and are kept as expired for as long
//! again, so a device repeating an expired request is told `Timeout`
//! instead of prompting the account anew. In a cluster this registry
//! belongs in the shared store (it is per process today).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Pending link requests one user may have at once.
pub const MAX_PENDING_PER_USER: usize = 4;
/// Pending link requests the whole server keeps (about 200 bytes each).
pub const MAX_PENDING: usize = 10_000;

/// Where a link request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Waiting,
    Approved,
    Denied,
}

/// What a `RequestLink` found or made.
pub struct LinkTicket {
    pub link_id: u64,
    pub state: LinkState,
    /// True when this request made the record (the account's devices must
    /// be prompted, and the rate limits were spent).
    pub fresh: bool,
    /// Woken when a decision is recorded.
    pub decided: Arc<Notify>,
}

/// Why no record could be made.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkFull {
    /// The user already has [`MAX_PENDING_PER_USER`] pending requests.
    User,
    /// The server holds [`MAX_PENDING`] pending requests.
    Server,
}

struct Record {
    user: String,
    device_key: [u8; 32],
    expires_ms: u64,
    state: LinkState,
    decided: Arc<Notify>,
}

/// The registry; shared by every shard.
#[derive(Default)]
pub struct LinkRequests {
    records: Mutex<HashMap<u64, Record>>,
}

impl LinkRequests {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live record of `user`'s device `device_key`, or a new one made
    /// by `may_create` (which checks rate limits; its refusal is returned).
    pub fn find_or_create<E>(
        &self,
        user: &str,
        device_key: &[u8; 32],
        now_ms: u64,
        ttl_ms: u64,
        may_create: impl FnOnce() -> Result<(), E>,
    ) -> Result<Result<LinkTicket, LinkFull>, E> {
        let mut records = self.lock();
        records.retain(|_, r| r.expires_ms.saturating_add(ttl_ms) > now_ms);
        let found = records
            .iter()
            .find(|(_, r)| r.user == user && r.device_key == *device_key);
        if let Some((&link_id, record)) = found {
            return Ok(Ok(ticket(link_id, record, false)));
        }
        may_create()?;
        if records.len() >= MAX_PENDING {
            return Ok(Err(LinkFull::Server));
        }
        if records.values().filter(|r| r.user == user).count() >= MAX_PENDING_PER_USER {
            return Ok(Err(LinkFull::User));
        }
        let link_id = fresh_id(&records);
        let record = Record {
            user: user.to_owned(),
            device_key: *device_key,
            expires_ms: now_ms.saturating_add(ttl_ms),
            state: LinkState::Waiting,
            decided: Arc::new(Notify::new()),
        };
        let made = ticket(link_id, &record, true);
        records.insert(link_id, record);
        Ok(Ok(made))
    }

    /// The current state of `link_id` (`None` once taken or expired).
    pub fn state(&self, link_id: u64, now_ms: u64) -> Option<LinkState> {
        let records = self.lock();
        let record = records.get(&link_id)?;
        (record.expires_ms > now_ms).then_some(record.state)
    }

    /// Records `approver`'s decision on one of its account's waiting
    /// requests; false when there is none under `link_id`.
    pub fn decide(&self, link_id: u64, approver: &str, approve: bool, now_ms: u64) -> bool {
        let mut records = self.lock();
        let Some(record) = records.get_mut(&link_id) else {
            return false;
        };
        let open = record.user == approver
            && record.state == LinkState::Waiting
            && record.expires_ms > now_ms;
        if open {
            record.state = match approve {
                true => LinkState::Approved,
                false => LinkState::Denied,
            };
            record.decided.notify_waiters();
        }
        open
    }

    /// Removes a decided record (its device was added, or it was denied).
    pub fn take(&self, link_id: u64) {
        self.lock().remove(&link_id);
    }

    /// Records held now, expired ones included until the next request.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn ticket(link_id: u64, record: &Record, fresh: bool) -> LinkTicket {
    LinkTicket {
        link_id,
        state: record.state,
        fresh,
        decided: record.decided.clone(),
    }
}

fn fresh_id(records: &HashMap<u64, Record>) -> u64 {
    loop {
        let id = rand::random::<u64>() | 1;
        if !records.contains_key(&id) {
            return id;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn create(links: &LinkRequests, user: &str, key: u8, now: u64) -> Result<LinkTicket, LinkFull> {
        links
            .find_or_create::<()>(user, &[key; 32], now, 1_000, || Ok(()))
            .unwrap()
    }

    #[test]
    fn a_repeated_request_finds_its_record_and_collects_the_decision() {
        let links = LinkRequests::default();
        let first = create(&links, "alice", 1, 0).unwrap();
        assert!(first.fresh);
        let again = create(&links, "alice", 1, 10).unwrap();
        assert!(!again.fresh);
        assert_eq!(again.link_id, first.link_id);
        assert!(
            !links.decide(first.link_id, "mallory", true, 20),
            "only the user's devices decide"
        );
        assert!(links.decide(first.link_id, "alice", true, 20));
        assert!(
            !links.decide(first.link_id, "alice", false, 21),
            "decided once"
        );
        assert_eq!(
            create(&links, "alice", 1, 30).unwrap().state,
            LinkState::Approved
        );
        links.take(first.link_id);
        assert!(links.is_empty());
    }

    #[test]
    fn records_expire_and_are_bounded_per_user() {
        let links = LinkRequests::default();
        for key in 0..MAX_PENDING_PER_USER as u8 {
            create(&links, "alice", key, 0).unwrap();
        }
        assert_eq!(create(&links, "alice", 99, 0).err(), Some(LinkFull::User));
        assert!(
            create(&links, "bob", 99, 0).is_ok(),
            "other users are not affected"
        );
        let again = create(&links, "alice", 0, 1_000).unwrap();
        assert!(!again.fresh, "an expired record is kept for as long again");
        assert_eq!(
            links.state(again.link_id, 1_000),
            None,
            "and reads as expired"
        );
        assert_eq!(
            create(&links, "alice", 99, 1_000).err(),
            Some(LinkFull::User)
        );
        let later = create(&links, "alice", 99, 2_000).unwrap();
        assert!(later.fresh, "then it makes room");
        assert_eq!(links.len(), 1);
    }

    #[test]
    fn a_refusal_by_the_rate_limit_makes_no_record() {
        let links = LinkRequests::default();
        let refused = links.find_or_create("alice", &[1; 32], 0, 1_000, || Err("limited"));
        assert_eq!(refused.err(), Some("limited"));
        assert!(links.is_empty());
    }
}
