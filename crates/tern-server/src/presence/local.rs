//! The in-process [`Presence`] backend of a single node: each shard keeps
//! the records of the users homed on it and the subscriptions of its own
//! connections, and the shards talk through their presence inboxes on the
//! mesh ([`Msg`]). One task per shard ([`run`]) drains the inbox: it applies
//! changes to home records, arms one flush timer per dirty user, and pushes
//! changes to this shard's subscribed connections.
//!
//! With `presence_backend = "redis"` the same code runs with a
//! [`RedisPresence`]: a home then publishes every (coalesced) change to
//! Redis instead of to watching shards, and a shard reads its subjects'
//! snapshots from Redis and hears of their changes through it
//! ([`super::redis`]); records, subscriptions and coalescing stay here.
//!
//! Ordering: a shard's messages to one home arrive in the order sent, and a
//! shard sends `Unwatch` only with `try_send` (it never waits), right when
//! its last subscription to a user ends, so a later `Watch` from the same
//! shard can never be overtaken by an earlier `Unwatch`. A message that
//! does not fit an inbox is dropped only where that is harmless: an
//! `Unwatch` (the home keeps sending, and the shard unwatches again on the
//! next change), a change (the home pushes again after the interval).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::record::{Push, Record, Snapshot};
use super::redis::{self, RedisPresence};
use super::subs::{Revocation, Subscriptions, Target, TooMany};
use super::{home_shard, ConnRef, Grant, Presence};
use crate::clock::Clock;
use crate::mesh::Mesh;
use crate::shard::{ServerStats, ShardCtx};
use tern_proto::body::presence::{PresenceChanged, PresenceEntry, PresenceState};
use tern_proto::{Body, Frame};
use tern_store::{DeviceId, UserId};

/// What a shard's presence inbox carries.
#[derive(Debug)]
pub enum Msg {
    // ----- to a user's home -----
    Connected {
        user: UserId,
        device: DeviceId,
    },
    Disconnected {
        user: UserId,
        device: DeviceId,
    },
    Set {
        user: UserId,
        device: DeviceId,
        state: PresenceState,
        status_text: Option<String>,
    },
    /// `shard` has connections subscribed to `users`: watch them, answer
    /// their snapshots.
    Watch {
        users: Vec<UserId>,
        shard: usize,
        reply: oneshot::Sender<Vec<Snapshot>>,
    },
    /// No connection of `shard` watches `user` any more.
    Unwatch {
        user: UserId,
        shard: usize,
    },
    Lookup {
        users: Vec<UserId>,
        reply: oneshot::Sender<Vec<Snapshot>>,
    },
    /// `user`'s coalescing interval ended.
    Flush {
        user: UserId,
    },
    // ----- to a watching shard -----
    Changed {
        subject: UserId,
        snapshot: Snapshot,
    },
    Revoke(Revocation),
    /// Redis came back (or change messages were lost): subscribe again to
    /// every watched user and re-read them.
    Resync,
}

/// One shard's part of the in-process presence.
pub struct LocalPresence {
    shard: usize,
    mesh: Arc<Mesh>,
    clock: Clock,
    homes: RefCell<HashMap<UserId, Record>>,
    subs: RefCell<Subscriptions>,
    /// Set with the Redis backend: where homes publish and watchers read.
    redis: Option<Rc<RedisPresence>>,
}

impl LocalPresence {
    /// One shard's presence: in-process, or through `redis` when given.
    pub fn new(
        shard: usize,
        mesh: Arc<Mesh>,
        clock: Clock,
        redis: Option<Rc<RedisPresence>>,
    ) -> Rc<Self> {
        Rc::new(LocalPresence {
            shard,
            mesh,
            clock,
            homes: RefCell::default(),
            subs: RefCell::default(),
            redis,
        })
    }

    /// Every user homed here with a device connected (or one that set a
    /// state), with its snapshot and when it was last pushed (server ms):
    /// what the Redis heartbeat rewrites.
    pub fn online_views(&self) -> Vec<(UserId, Snapshot, u64)> {
        let now = self.clock.now_ms();
        let homes = self.homes.borrow();
        let online = homes.iter().filter_map(|(user, record)| {
            let snapshot = record.snapshot();
            let changed = record.last_push_ms().unwrap_or(now);
            (snapshot.state != PresenceState::Offline).then(|| (user.clone(), snapshot, changed))
        });
        online.collect()
    }

    fn home(&self, user: &str) -> usize {
        home_shard(user, self.mesh.shards())
    }

    /// Sends `make(users of one home, reply)` to each home of `users` and
    /// puts the answers back in the order of `users` (Offline where a home
    /// did not answer: it is shutting down).
    async fn ask_homes(
        &self,
        users: &[UserId],
        make: impl Fn(Vec<UserId>, oneshot::Sender<Vec<Snapshot>>) -> Msg,
    ) -> Vec<Snapshot> {
        let mut by_home: HashMap<usize, Vec<usize>> = HashMap::new();
        for (index, user) in users.iter().enumerate() {
            by_home.entry(self.home(user)).or_default().push(index);
        }
        let mut out = vec![Snapshot::offline(); users.len()];
        for (home, indexes) in by_home {
            let names = indexes.iter().filter_map(|i| users.get(*i).cloned());
            let (tx, rx) = oneshot::channel();
            self.mesh.to_presence(home, make(names.collect(), tx)).await;
            let Ok(answers) = rx.await else { continue };
            for (index, snapshot) in indexes.into_iter().zip(answers) {
                if let Some(slot) = out.get_mut(index) {
                    *slot = snapshot;
                }
            }
        }
        out
    }

    fn unwatch(&self, users: Vec<UserId>) {
        if let Some(redis) = self.redis.clone() {
            if !users.is_empty() {
                tokio::task::spawn_local(async move { redis.unwatch(&users).await });
            }
            return;
        }
        for user in users {
            let home = self.home(&user);
            let shard = self.shard;
            self.mesh.try_presence(home, Msg::Unwatch { user, shard });
        }
    }

    // ----- the home side -----

    /// Applies a change to `user`'s record and pushes or arms its timer.
    fn change(&self, user: UserId, edit: impl FnOnce(&mut Record, u64) -> Push) {
        let now = self.clock.now_ms();
        let push = {
            let mut homes = self.homes.borrow_mut();
            let relayed = self.redis.is_some();
            let record = homes.entry(user.clone()).or_insert_with(|| match relayed {
                true => Record::relayed(),
                false => Record::default(),
            });
            edit(record, now)
        };
        if let (Some(redis), true) = (self.redis.clone(), push != Push::Now) {
            // Redis holds the current state at once; only the
            // announcements to watchers are coalesced.
            let snapshot = self.homes.borrow().get(&user).map(Record::snapshot);
            let (user, changed) = (user.clone(), now);
            if let Some(snapshot) = snapshot {
                tokio::task::spawn_local(async move {
                    redis.store(&user, &snapshot, changed).await;
                });
            }
        }
        self.follow(user, push, now);
    }

    fn follow(&self, user: UserId, push: Push, now: u64) {
        match push {
            Push::Nothing => self.forget_if_empty(&user),
            Push::Now => self.push_now(user, now),
            Push::At(at) => self.arm(user, at.saturating_sub(now)),
        }
    }

    fn forget_if_empty(&self, user: &str) {
        let mut homes = self.homes.borrow_mut();
        if homes.get(user).is_some_and(Record::is_empty) {
            homes.remove(user);
        }
    }

    /// Hands `user`'s current snapshot to every watching shard.
    fn push_now(&self, user: UserId, now: u64) {
        let mut homes = self.homes.borrow_mut();
        let Some(record) = homes.get_mut(&user) else {
            return;
        };
        let snapshot = record.snapshot();
        if let Some(redis) = self.redis.clone() {
            record.pushed(snapshot.clone(), now);
            tokio::task::spawn_local(async move { redis.publish(&user, &snapshot, now).await });
            return;
        }
        let mut all = true;
        for shard in record.watchers.iter() {
            let changed = Msg::Changed {
                subject: user.clone(),
                snapshot: snapshot.clone(),
            };
            all &= self.mesh.try_presence(shard, changed);
        }
        if all {
            record.pushed(snapshot, now);
            return;
        }
        let again = record.retry(now);
        drop(homes);
        if let Push::At(at) = again {
            self.arm(user, at.saturating_sub(now));
        }
    }

    /// One timer per dirty user: a `Flush` after `delay_ms`.
    fn arm(&self, user: UserId, delay_ms: u64) {
        let sleep = self.clock.sleep(Duration::from_millis(delay_ms));
        let (mesh, shard) = (self.mesh.clone(), self.shard);
        tokio::task::spawn_local(async move {
            sleep.await;
            mesh.to_presence(shard, Msg::Flush { user }).await;
        });
    }

    fn flush(&self, user: UserId) {
        let due = self
            .homes
            .borrow_mut()
            .get_mut(&user)
            .and_then(Record::flush);
        match due {
            Some(_) => self.push_now(user, self.clock.now_ms()),
            None => self.forget_if_empty(&user),
        }
    }

    fn watch(&self, users: Vec<UserId>, shard: usize) -> Vec<Snapshot> {
        let mut homes = self.homes.borrow_mut();
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            let record = homes.entry(user).or_default();
            record.watchers.insert(shard);
            out.push(record.snapshot());
        }
        out
    }

    fn lookup_here(&self, users: &[UserId]) -> Vec<Snapshot> {
        let homes = self.homes.borrow();
        let snapshot = |u: &UserId| {
            homes
                .get(u)
                .map_or_else(Snapshot::offline, Record::snapshot)
        };
        users.iter().map(snapshot).collect()
    }

    // ----- the watching side -----

    fn changed(&self, ctx: &ShardCtx, subject: UserId, snapshot: &Snapshot) {
        let targets = self.subs.borrow_mut().changed(&subject, snapshot);
        if targets.is_empty() {
            if !self.subs.borrow().watches(&subject) {
                self.unwatch(vec![subject]);
            }
            return;
        }
        let frame = push_frame(snapshot.entry(&subject));
        deliver(ctx, &targets, &frame);
    }

    fn revoked(&self, ctx: &ShardCtx, revocation: &Revocation) {
        let (told, unwatched) = self.subs.borrow_mut().revoke(revocation);
        for (subject, target) in told {
            let frame = push_frame(PresenceEntry::unknown(subject));
            deliver(ctx, std::slice::from_ref(&target), &frame);
        }
        self.unwatch(unwatched);
    }

    fn handle(&self, ctx: &ShardCtx, msg: Msg) {
        match msg {
            Msg::Connected { user, device } => self.change(user, |r, now| r.connect(device, now)),
            Msg::Disconnected { user, device } => {
                self.change(user, |r, now| r.disconnect(device, now))
            }
            Msg::Set {
                user,
                device,
                state,
                status_text,
            } => self.change(user, |r, now| {
                r.set(device, state, status_text.as_deref(), now)
            }),
            Msg::Watch {
                users,
                shard,
                reply,
            } => {
                let _ = reply.send(self.watch(users, shard));
            }
            Msg::Unwatch { user, shard } => {
                if let Some(record) = self.homes.borrow_mut().get_mut(&user) {
                    record.watchers.remove(shard);
                }
                self.forget_if_empty(&user);
            }
            Msg::Lookup { users, reply } => {
                let _ = reply.send(self.lookup_here(&users));
            }
            Msg::Flush { user } => self.flush(user),
            Msg::Changed { subject, snapshot } => self.changed(ctx, subject, &snapshot),
            Msg::Revoke(revocation) => self.revoked(ctx, &revocation),
            Msg::Resync => self.resync(),
        }
    }
}

impl LocalPresence {
    /// Subscribes again to every watched user and re-reads them (Redis).
    pub fn resync(&self) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let subjects = self.subs.borrow().subjects();
        let (mesh, shard) = (self.mesh.clone(), self.shard);
        tokio::task::spawn_local(async move { redis.resync(subjects, shard, &mesh).await });
    }

    /// The current presence of `subjects`: from their homes, or Redis.
    async fn snapshots(&self, subjects: &[UserId], fresh: &[UserId]) -> Vec<Snapshot> {
        if let Some(redis) = &self.redis {
            redis.watch(fresh).await;
            let snapshots = redis.read(subjects).await;
            for (subject, snapshot) in subjects.iter().zip(&snapshots) {
                redis.tell(subject, snapshot);
            }
            return snapshots;
        }
        let shard = self.shard;
        self.ask_homes(subjects, |users, reply| Msg::Watch {
            users,
            shard,
            reply,
        })
        .await
    }
}

/// The encoded push telling a subscriber about `entry`.
fn push_frame(entry: PresenceEntry) -> Bytes {
    Frame::new(0, Body::PresenceChanged(PresenceChanged { entry })).encode()
}

fn deliver(ctx: &ShardCtx, targets: &[Target], frame: &Bytes) {
    let sessions = ctx.sessions.borrow();
    for target in targets {
        let result = sessions.deliver_to_conn(&target.viewer, target.conn_id, frame);
        ServerStats::add(&ctx.stats.deliveries, result.delivered);
        ServerStats::add(&ctx.stats.closed_slow, result.closed_slow);
    }
}

/// Drains this shard's presence inbox until the mesh closes it.
pub async fn run(presence: Rc<LocalPresence>, ctx: Rc<ShardCtx>, mut inbox: mpsc::Receiver<Msg>) {
    if let Some(redis) = presence.redis.clone() {
        redis::spawn_tasks(
            redis,
            presence.clone(),
            presence.shard,
            presence.mesh.clone(),
        );
    }
    let mut batch = Vec::with_capacity(64);
    while inbox.recv_many(&mut batch, 64).await > 0 {
        for msg in batch.drain(..) {
            presence.handle(&ctx, msg);
        }
    }
}

#[async_trait(?Send)]
impl Presence for LocalPresence {
    async fn connected(&self, conn: &ConnRef) {
        let msg = Msg::Connected {
            user: conn.user.clone(),
            device: conn.device,
        };
        self.mesh.to_presence(self.home(&conn.user), msg).await;
    }

    async fn disconnected(&self, conn: &ConnRef) {
        let unwatched = self.subs.borrow_mut().close(conn.conn_id);
        self.unwatch(unwatched);
        let msg = Msg::Disconnected {
            user: conn.user.clone(),
            device: conn.device,
        };
        self.mesh.to_presence(self.home(&conn.user), msg).await;
    }

    async fn set(&self, conn: &ConnRef, state: PresenceState, status_text: Option<String>) {
        let msg = Msg::Set {
            user: conn.user.clone(),
            device: conn.device,
            state,
            status_text,
        };
        self.mesh.to_presence(self.home(&conn.user), msg).await;
    }

    async fn lookup(&self, users: &[UserId]) -> Vec<Snapshot> {
        if let Some(redis) = &self.redis {
            return redis.read(users).await;
        }
        self.ask_homes(users, |users, reply| Msg::Lookup { users, reply })
            .await
    }

    async fn subscribe(&self, conn: &ConnRef, grants: &[Grant]) -> Result<Vec<Snapshot>, TooMany> {
        let pairs: Vec<(UserId, bool)> = grants
            .iter()
            .map(|g| (g.subject.clone(), g.shared))
            .collect();
        let fresh = self
            .subs
            .borrow_mut()
            .add(&conn.user, conn.conn_id, &pairs)?;
        let subjects: Vec<UserId> = pairs.into_iter().map(|(u, _)| u).collect();
        let mut snapshots = self.snapshots(&subjects, &fresh).await;
        let held = self.subs.borrow_mut().settle(conn.conn_id, &subjects);
        for (subject, snapshot) in subjects.iter().zip(snapshots.iter_mut()) {
            if let Some(newer) = held.get(subject).filter(|h| h.version > snapshot.version) {
                *snapshot = newer.clone();
            }
        }
        Ok(snapshots)
    }

    async fn unsubscribe(&self, conn: &ConnRef, users: &[UserId]) {
        let unwatched = self.subs.borrow_mut().remove(conn.conn_id, users);
        self.unwatch(unwatched);
    }

    async fn revoke(&self, revocation: Revocation) {
        for shard in 0..self.mesh.shards() {
            self.mesh
                .to_presence(shard, Msg::Revoke(revocation.clone()))
                .await;
        }
    }
}
