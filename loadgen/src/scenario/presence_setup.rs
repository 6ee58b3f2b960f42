//! Setting up `tern-load presence`: who follows whom (user `i` follows
//! `i+1 ..= i+S` modulo N), the groups that make every follow legal under
//! the default `Shared` visibility, and the subscriptions themselves (one
//! SubscribePresence per user, checked to show every followed user).

use std::sync::Arc;

use tern_client::connection::RawConnection;
use tern_proto::body::presence::{PresenceState, SubscribePresence};
use tern_proto::ConversationKind;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::args::ClientArgs;
use crate::conn::{call, user_name, Device};
use crate::error::{LoadError, Result};
use crate::setup::CreateJob;

/// The users (indices) user `i` of `n` follows when each follows `s`.
pub fn follows(i: usize, n: usize, s: usize) -> impl Iterator<Item = usize> {
    let n = n.max(1);
    (1..=s).map(move |d| (i + d) % n)
}

/// One group per block of `s` users, created by the block's first user and
/// holding that block and the next (modulo `n`): user `i` of block `b`
/// follows at most `i + s <= (b+2)s - 1`, so it shares group `b` with
/// every user it follows.
pub fn groups(run: &str, n: usize, s: usize) -> Vec<CreateJob> {
    let s = s.max(1);
    (0..n.div_ceil(s))
        .map(|b| {
            let creator = b * s;
            let mut members: Vec<usize> = (creator + 1..creator + 2 * s)
                .map(|i| i % n.max(1))
                .filter(|&i| i != creator)
                .collect();
            members.sort_unstable();
            members.dedup();
            CreateJob {
                creator,
                kind: ConversationKind::Group,
                members: members.iter().map(|&i| user_name(run, "u", i)).collect(),
            }
        })
        .collect()
}

/// Subscribes every device (device `i` is user `i`) to the users it follows,
/// at most `client.setup_concurrency` at once, and returns the connections in
/// order.
///
/// # Errors
/// A refusal, a timeout, or a followed user answered other than visible
/// (the groups did not make the subscription legal).
pub async fn subscribe_all(
    run: &str,
    devices: Vec<(Device, RawConnection)>,
    s: usize,
    client: &ClientArgs,
) -> Result<Vec<RawConnection>> {
    let n = devices.len();
    let limit = Arc::new(Semaphore::new(client.setup_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (i, (_, mut conn)) in devices.into_iter().enumerate() {
        let users: Vec<String> = follows(i, n, s).map(|j| user_name(run, "u", j)).collect();
        let (limit, timeout) = (limit.clone(), client.timeout());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let req = SubscribePresence { users };
            let snapshot = call(&mut conn, 10, req, "presence subscription", timeout).await?;
            if let Some(hidden) = snapshot
                .entries
                .iter()
                .find(|e| e.state == PresenceState::Unknown)
            {
                return Err(LoadError::Usage(format!(
                    "{} may not see {}'s presence: the setup's groups should have made it visible",
                    user_name("", "u", i),
                    hidden.user
                )));
            }
            Ok::<_, LoadError>((i, conn))
        });
    }
    let mut slots: Vec<Option<RawConnection>> = (0..n).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, conn) = joined.map_err(|e| LoadError::Task(e.to_string()))??;
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some(conn);
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Whether user `a` and user `b` share one of the groups.
    fn share(jobs: &[CreateJob], a: usize, b: usize) -> bool {
        let name = |i| user_name("r", "u", i);
        jobs.iter().any(|j| {
            let has = |i: usize| j.creator == i || j.members.contains(&name(i));
            has(a) && has(b)
        })
    }

    #[test]
    fn every_follow_shares_a_group() {
        for (n, s) in [(1000, 50), (20, 5), (23, 5), (7, 6), (10, 3)] {
            let jobs = groups("r", n, s);
            assert_eq!(jobs.len(), n.div_ceil(s));
            for i in 0..n {
                for j in follows(i, n, s) {
                    assert!(share(&jobs, i, j), "n {n} s {s}: {i} and {j}");
                }
            }
            for job in &jobs {
                assert!(!job.members.contains(&user_name("r", "u", job.creator)));
            }
        }
    }

    #[test]
    fn follows_wrap_around() {
        assert_eq!(follows(8, 10, 3).collect::<Vec<_>>(), vec![9, 0, 1]);
    }
}
