//! Push notifications for devices with no connection (issue 11,
//! docs/PROTOCOL.md §4.13). This module owns the `RegisterPush` /
//! `UnregisterPush` commands ([`register`], [`unregister`]), the
//! [`Pusher`] handle the delivery path offers wake-ups to, and (in
//! [`worker`]) the pusher thread that coalesces them per device, `POST`s
//! them ([`http`]), retries with backoff and drops endpoints that answer
//! 404/410.
//!
//! A wake-up is content-free by construction: what reaches the worker is a
//! user, a device, a conversation id and an urgency flag, never a frame, so
//! no ciphertext, sender or plaintext can leak into a push body. The
//! delivery path never waits: [`Pusher::offer`] is a `try_send` into a
//! bounded queue, and a full queue drops and counts.

pub mod config;
pub mod endpoint;
pub mod http;
pub mod live;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tern_proto::body::messaging::Done;
use tern_proto::body::push::{PushEndpoint, RegisterPush, MAX_PUSH_TOKEN_LEN};
use tern_proto::fb::ErrorCode;
use tern_store::{DeviceId, Store, UserId};

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;

pub use config::PushConfig;
use live::{LiveDevices, NoEndpoint};

/// One wake-up for one device: nothing of the message itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wake {
    pub user: UserId,
    pub device: DeviceId,
    pub conversation_id: u64,
    /// A call: sent at once, with `Urgency: high`.
    pub urgent: bool,
}

/// What the pusher thread's queue carries.
#[derive(Debug)]
pub(crate) enum Job {
    Wake(Wake),
    /// The server stops: the thread ends (see [`Pusher::stop`]).
    Stop,
}

/// What the pusher did, since the server started.
#[derive(Debug, Default)]
pub struct PushStats {
    /// Wake-ups refused because the queue (or the worker's device table) was full.
    pub dropped: AtomicU64,
    /// Wake-ups an endpoint accepted (2xx).
    pub sent: AtomicU64,
    /// Failed tries (connection error, timeout, 429, 5xx), retried or not.
    pub failures: AtomicU64,
    /// Wake-ups given up (tries spent, or another 4xx).
    pub abandoned: AtomicU64,
    /// Endpoints removed because they answered 404 or 410.
    pub gone: AtomicU64,
}

impl PushStats {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The delivery path's handle on the pusher thread (shared by every shard).
#[derive(Debug)]
pub struct Pusher {
    tx: SyncSender<Job>,
    live: Arc<LiveDevices>,
    stats: Arc<PushStats>,
    /// Devices the worker found without an endpoint (cleared on register).
    no_endpoint: Arc<NoEndpoint>,
    stopping: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Pusher {
    /// Starts the pusher thread (`tern-push`).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(
        config: &PushConfig,
        store: Arc<dyn Store>,
        live: Arc<LiveDevices>,
    ) -> std::io::Result<Pusher> {
        let (tx, rx) = mpsc::sync_channel(config.queue);
        let stats = Arc::new(PushStats::default());
        let no_endpoint = Arc::new(NoEndpoint::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = worker::Worker::new(
            config.clone(),
            store,
            Arc::clone(&live),
            Arc::clone(&stats),
            Arc::clone(&no_endpoint),
            Arc::clone(&stopping),
        );
        let thread = std::thread::Builder::new()
            .name("tern-push".into())
            .spawn(move || worker.run(rx))?;
        Ok(Pusher {
            tx,
            live,
            stats,
            no_endpoint,
            stopping,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Ends the pusher thread and waits for it (and so for its hold on the
    /// store): pending wake-ups are dropped; one in flight finishes first
    /// (at most `push.timeout_ms`). Later offers are ignored.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.tx.try_send(Job::Stop);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// The counters.
    pub fn stats(&self) -> &PushStats {
        &self.stats
    }

    /// The listed devices a wake-up could be for: not `except` (the
    /// sender's device), with no live connection here, and not known to
    /// have no endpoint. In a cluster, those connected to another node are
    /// taken out next (`crate::node::delivery`).
    pub fn candidates(
        &self,
        recipients: &[(UserId, DeviceId)],
        except: Option<&Caller>,
    ) -> Vec<(UserId, DeviceId)> {
        let wanted = |(user, device): &&(UserId, DeviceId)| {
            !(except.is_some_and(|c| c.user == *user && c.device == *device)
                || self.live.is_live(user, *device)
                || self.known_without_endpoint(user, *device))
        };
        recipients.iter().filter(wanted).cloned().collect()
    }

    /// Offers a wake-up for each listed device that has no live connection
    /// (skipping `except`, the sender's device). Never waits.
    pub fn offer(
        &self,
        recipients: &[(UserId, DeviceId)],
        except: Option<&Caller>,
        conversation_id: u64,
        urgent: bool,
    ) {
        for (user, device) in self.candidates(recipients, except) {
            let wake = Wake {
                user,
                device,
                conversation_id,
                urgent,
            };
            match self.tx.try_send(Job::Wake(wake)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => PushStats::add(&self.stats.dropped),
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    fn known_without_endpoint(&self, user: &str, device: DeviceId) -> bool {
        self.no_endpoint.contains(user, device)
    }

    /// Forgets that `user`'s `device` had no endpoint (it registered one
    /// here or, in a cluster, on another node).
    pub(crate) fn endpoint_changed(&self, user: &str, device: DeviceId) {
        self.no_endpoint.remove(user, device);
    }
}

/// RegisterPush: checks the endpoint and stores it for the calling device.
///
/// # Errors
/// `InvalidArgument` for a bad URL or token (the message says what is
/// wrong); `NotConfigured` for a gateway token where the server has no
/// `push.gateway_url`; `Internal` when the store fails.
pub async fn register(
    ctx: &ShardCtx,
    caller: &Caller,
    body: RegisterPush,
) -> Result<Outcome, Reject> {
    let push = &ctx.config.push;
    match &body.endpoint {
        PushEndpoint::WebPush { url } => {
            endpoint::parse_device_url(url, push.url_policy())
                .map_err(|e| Reject::new(ErrorCode::InvalidArgument, format!("push url: {e}")))?;
        }
        PushEndpoint::Gateway { token } => {
            if push.gateway_url.is_none() {
                return Err(Reject::new(
                    ErrorCode::NotConfigured,
                    "this server has no push gateway (push.gateway_url); register a Web Push url",
                ));
            }
            if token.is_empty() || token.len() > MAX_PUSH_TOKEN_LEN {
                return Err(Reject::new(
                    ErrorCode::InvalidArgument,
                    format!("push token must be 1 to {MAX_PUSH_TOKEN_LEN} bytes"),
                ));
            }
        }
    }
    let bytes = endpoint::encode(&body.endpoint);
    store_endpoint(ctx, caller, Some(&bytes)).await
}

/// UnregisterPush: removes the calling device's endpoint.
///
/// # Errors
/// `Internal` when the store fails.
pub async fn unregister(ctx: &ShardCtx, caller: &Caller) -> Result<Outcome, Reject> {
    store_endpoint(ctx, caller, None).await
}

async fn store_endpoint(
    ctx: &ShardCtx,
    caller: &Caller,
    bytes: Option<&[u8]>,
) -> Result<Outcome, Reject> {
    ctx.store
        .set_push_endpoint(&caller.user, caller.device, bytes)
        .await
        .map_err(Reject::store)?;
    if let Some(pusher) = ctx.mesh.pusher.get() {
        pusher.endpoint_changed(&caller.user, caller.device);
    }
    if let Some(node) = ctx.mesh.cluster.get() {
        node.broadcast(&crate::node::wire::NodePush::EndpointChanged {
            user: caller.user.clone(),
            device: caller.device,
        });
    }
    Ok(Outcome::durable(Ok(Done.into())))
}
