//! The presence subscriptions of one shard's connections, without I/O:
//! which connection watches which user (at most
//! [`MAX_PRESENCE_SUBSCRIPTIONS`] each), indexed by subject (to fan a change
//! out) and by viewer (to revoke what a privacy change no longer allows).
//! A subscription is *pending* from the moment it is registered until its
//! snapshot is answered; a change arriving meanwhile is kept (the newest
//! wins) instead of pushed, so that no push can overtake the answer.
//! Everything of a connection goes when it closes.

use std::collections::{HashMap, HashSet};

use tern_proto::body::presence::MAX_PRESENCE_SUBSCRIPTIONS;
use tern_store::UserId;

use super::record::Snapshot;

/// One connection's subscription to one user.
#[derive(Debug)]
struct Sub {
    /// Granted because the two share a conversation (not only because the
    /// subject shows its presence to everyone).
    shared: bool,
    /// Still waiting for its snapshot to be answered.
    pending: bool,
    /// A change that came while pending.
    held: Option<Snapshot>,
}

#[derive(Debug)]
struct ConnSubs {
    viewer: UserId,
    subjects: HashMap<UserId, Sub>,
}

/// Why a subscription was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a connection may watch at most {MAX_PRESENCE_SUBSCRIPTIONS} users; unsubscribe some first (this request would make {would_be})")]
pub struct TooMany {
    pub would_be: usize,
}

/// A connection that gets a push, and who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub viewer: UserId,
    pub conn_id: u64,
}

/// Which subscriptions a revocation ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// `a` and `b` no longer see each other (a block, either way).
    Pair { a: UserId, b: UserId },
    /// `user` hides its presence: nobody sees it, and it sees nobody.
    Hidden { user: UserId },
    /// `user` shows its presence only to those it shares a conversation
    /// with: subscriptions granted otherwise end.
    Narrowed { user: UserId },
}

/// The subscriptions of one shard's connections.
#[derive(Debug, Default)]
pub struct Subscriptions {
    conns: HashMap<u64, ConnSubs>,
    by_subject: HashMap<UserId, HashSet<u64>>,
    by_viewer: HashMap<UserId, HashSet<u64>>,
}

impl Subscriptions {
    /// Registers pending subscriptions of `conn_id` (of `viewer`) to
    /// `grants` (subject, shared); users it watches already keep theirs.
    /// Returns the subjects no connection of this shard watched before.
    ///
    /// # Errors
    /// [`TooMany`] when the connection would pass the cap (nothing registered).
    pub fn add(
        &mut self,
        viewer: &str,
        conn_id: u64,
        grants: &[(UserId, bool)],
    ) -> Result<Vec<UserId>, TooMany> {
        let held = self.conns.get(&conn_id).map_or(0, |c| c.subjects.len());
        let fresh: HashSet<&UserId> = grants
            .iter()
            .map(|(u, _)| u)
            .filter(|u| {
                self.conns
                    .get(&conn_id)
                    .is_none_or(|c| !c.subjects.contains_key(*u))
            })
            .collect();
        let would_be = held + fresh.len();
        if would_be > MAX_PRESENCE_SUBSCRIPTIONS {
            return Err(TooMany { would_be });
        }
        let conn = self.conns.entry(conn_id).or_insert_with(|| ConnSubs {
            viewer: viewer.to_owned(),
            subjects: HashMap::new(),
        });
        self.by_viewer
            .entry(viewer.to_owned())
            .or_default()
            .insert(conn_id);
        let mut first = Vec::new();
        for (subject, shared) in grants {
            if conn.subjects.contains_key(subject) {
                continue;
            }
            conn.subjects.insert(
                subject.clone(),
                Sub {
                    shared: *shared,
                    pending: true,
                    held: None,
                },
            );
            let watchers = self.by_subject.entry(subject.clone()).or_default();
            if watchers.is_empty() {
                first.push(subject.clone());
            }
            watchers.insert(conn_id);
        }
        Ok(first)
    }

    /// Ends the pending state of `conn_id`'s subscriptions to `subjects`:
    /// returns, per subject, a change held meanwhile.
    pub fn settle(&mut self, conn_id: u64, subjects: &[UserId]) -> HashMap<UserId, Snapshot> {
        let mut held = HashMap::new();
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return held;
        };
        for subject in subjects {
            if let Some(sub) = conn.subjects.get_mut(subject) {
                sub.pending = false;
                if let Some(snapshot) = sub.held.take() {
                    held.insert(subject.clone(), snapshot);
                }
            }
        }
        held
    }

    /// The connections to push a change of `subject` to now; pending ones
    /// keep it instead. Empty when no connection here watches `subject`.
    pub fn changed(&mut self, subject: &str, snapshot: &Snapshot) -> Vec<Target> {
        let Some(conn_ids) = self.by_subject.get(subject) else {
            return Vec::new();
        };
        let mut targets = Vec::new();
        for conn_id in conn_ids {
            let Some(conn) = self.conns.get_mut(conn_id) else {
                continue;
            };
            let Some(sub) = conn.subjects.get_mut(subject) else {
                continue;
            };
            if sub.pending {
                let newer = sub
                    .held
                    .as_ref()
                    .is_none_or(|h| h.version < snapshot.version);
                if newer {
                    sub.held = Some(snapshot.clone());
                }
            } else {
                targets.push(Target {
                    viewer: conn.viewer.clone(),
                    conn_id: *conn_id,
                });
            }
        }
        targets
    }

    /// Every user some connection here watches.
    pub fn subjects(&self) -> Vec<UserId> {
        self.by_subject.keys().cloned().collect()
    }

    /// Whether any connection here watches `subject`.
    pub fn watches(&self, subject: &str) -> bool {
        self.by_subject.contains_key(subject)
    }

    /// Ends `conn_id`'s subscriptions to `subjects`; returns the subjects
    /// no connection here watches any more.
    pub fn remove(&mut self, conn_id: u64, subjects: &[UserId]) -> Vec<UserId> {
        let mut unwatched = Vec::new();
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return unwatched;
        };
        for subject in subjects {
            if conn.subjects.remove(subject).is_some()
                && drop_watcher(&mut self.by_subject, subject, conn_id)
            {
                unwatched.push(subject.clone());
            }
        }
        if conn.subjects.is_empty() {
            self.forget_conn(conn_id);
        }
        unwatched
    }

    /// Ends every subscription of a closed connection; returns the
    /// subjects no connection here watches any more.
    pub fn close(&mut self, conn_id: u64) -> Vec<UserId> {
        let subjects: Vec<UserId> = self
            .conns
            .get(&conn_id)
            .map(|c| c.subjects.keys().cloned().collect())
            .unwrap_or_default();
        let unwatched = self.remove(conn_id, &subjects);
        self.forget_conn(conn_id);
        unwatched
    }

    fn forget_conn(&mut self, conn_id: u64) {
        if let Some(conn) = self.conns.remove(&conn_id) {
            if let Some(set) = self.by_viewer.get_mut(&conn.viewer) {
                set.remove(&conn_id);
                if set.is_empty() {
                    self.by_viewer.remove(&conn.viewer);
                }
            }
        }
    }

    /// Ends the subscriptions `revocation` no longer allows: returns
    /// (subject, target) for each ended one (to tell it the subject is now
    /// Unknown) and the subjects no connection here watches any more.
    pub fn revoke(&mut self, revocation: &Revocation) -> (Vec<(UserId, Target)>, Vec<UserId>) {
        let ended = self.matching(revocation);
        let mut told = Vec::new();
        let mut unwatched = Vec::new();
        for (subject, conn_id) in ended {
            let Some(conn) = self.conns.get(&conn_id) else {
                continue;
            };
            let target = Target {
                viewer: conn.viewer.clone(),
                conn_id,
            };
            unwatched.extend(self.remove(conn_id, std::slice::from_ref(&subject)));
            told.push((subject, target));
        }
        (told, unwatched)
    }

    /// (subject, connection) of every subscription `revocation` ends.
    fn matching(&self, revocation: &Revocation) -> Vec<(UserId, u64)> {
        let mut out = Vec::new();
        let mut of_subject = |subject: &str, keep: &dyn Fn(&str, &Sub) -> bool| {
            for conn_id in self.by_subject.get(subject).into_iter().flatten() {
                let Some(conn) = self.conns.get(conn_id) else {
                    continue;
                };
                if let Some(sub) = conn.subjects.get(subject) {
                    if !keep(&conn.viewer, sub) {
                        out.push((subject.to_owned(), *conn_id));
                    }
                }
            }
        };
        match revocation {
            Revocation::Pair { a, b } => {
                of_subject(a, &|viewer, _| viewer != b);
                of_subject(b, &|viewer, _| viewer != a);
            }
            Revocation::Narrowed { user } => of_subject(user, &|_, sub| sub.shared),
            Revocation::Hidden { user } => {
                of_subject(user, &|viewer, _| viewer == user);
                for conn_id in self.by_viewer.get(user).into_iter().flatten() {
                    let subjects = self.conns.get(conn_id).into_iter();
                    for subject in subjects.flat_map(|c| c.subjects.keys()) {
                        if subject != user {
                            out.push((subject.clone(), *conn_id));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Takes `conn_id` off `subject`'s watchers; true if none are left.
fn drop_watcher(
    by_subject: &mut HashMap<UserId, HashSet<u64>>,
    subject: &str,
    conn_id: u64,
) -> bool {
    let Some(set) = by_subject.get_mut(subject) else {
        return false;
    };
    set.remove(&conn_id);
    if set.is_empty() {
        by_subject.remove(subject);
        return true;
    }
    false
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use tern_proto::body::presence::PresenceState;

    fn snap(version: u64) -> Snapshot {
        Snapshot {
            state: PresenceState::Online,
            status_text: None,
            last_seen_ms: 0,
            version,
        }
    }

    fn grants(users: &[&str]) -> Vec<(UserId, bool)> {
        users.iter().map(|u| ((*u).to_owned(), true)).collect()
    }

    #[test]
    fn pending_subscriptions_hold_the_newest_change() {
        let mut s = Subscriptions::default();
        assert_eq!(
            s.add("v", 1, &grants(&["a"])).unwrap(),
            vec!["a".to_owned()]
        );
        assert!(s.changed("a", &snap(3)).is_empty());
        assert!(s.changed("a", &snap(2)).is_empty());
        let held = s.settle(1, &["a".to_owned()]);
        assert_eq!(held["a"].version, 3);
        assert_eq!(s.changed("a", &snap(4)).len(), 1);
    }

    #[test]
    fn the_cap_counts_distinct_subjects_per_connection() {
        let mut s = Subscriptions::default();
        let many: Vec<String> = (0..MAX_PRESENCE_SUBSCRIPTIONS)
            .map(|i| format!("u{i}"))
            .collect();
        let all: Vec<(UserId, bool)> = many.iter().map(|u| (u.clone(), true)).collect();
        s.add("v", 1, &all).unwrap();
        s.add("v", 1, &all[..10]).unwrap();
        assert_eq!(
            s.add("v", 1, &grants(&["extra"])).unwrap_err().would_be,
            MAX_PRESENCE_SUBSCRIPTIONS + 1
        );
        s.add("v", 2, &grants(&["extra"])).unwrap();
    }

    #[test]
    fn closing_and_revoking_report_unwatched_subjects() {
        let mut s = Subscriptions::default();
        s.add("v", 1, &grants(&["a", "b"])).unwrap();
        s.add("w", 2, &[("a".to_owned(), false)]).unwrap();
        s.settle(1, &["a".to_owned(), "b".to_owned()]);
        let (told, unwatched) = s.revoke(&Revocation::Narrowed { user: "a".into() });
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].1.conn_id, 2);
        assert!(unwatched.is_empty(), "conn 1 still watches a");
        let (told, unwatched) = s.revoke(&Revocation::Hidden { user: "v".into() });
        assert_eq!(told.len(), 2);
        assert_eq!(unwatched.len(), 2);
        assert!(!s.watches("a") && !s.watches("b"));
        s.add("v", 3, &grants(&["c"])).unwrap();
        assert_eq!(s.close(3), vec!["c".to_owned()]);
        assert!(s.conns.is_empty() && s.by_viewer.is_empty());
    }

    #[test]
    fn a_block_ends_both_directions_only() {
        let mut s = Subscriptions::default();
        s.add("a", 1, &grants(&["b", "c"])).unwrap();
        s.add("b", 2, &grants(&["a"])).unwrap();
        let (told, _) = s.revoke(&Revocation::Pair {
            a: "a".into(),
            b: "b".into(),
        });
        assert_eq!(told.len(), 2);
        assert!(s.watches("c"));
    }
}
