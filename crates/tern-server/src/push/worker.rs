//! The pusher thread: takes wake-ups from the bounded queue, coalesces them
//! per device (at most one `POST` per `coalesce_ms`; a call goes at once),
//! reads the device's endpoint from the store, `POST`s the content-free
//! body, retries failures with exponential backoff up to a bound, and
//! removes endpoints that answer 404 or 410 (RFC 8030 §7.3). Everything
//! here blocks this thread only; shards never wait on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_proto::body::push::PushEndpoint;
use tern_store::{DeviceId, Store, UserId};

use super::endpoint::{self, Url, UrlPolicy};
use super::http::{self, HttpError};
use super::live::{LiveDevices, NoEndpoint};
use super::{Job, PushConfig, PushStats, Wake};

/// Most devices with a wake-up pending or a coalescing window open; past
/// it a wake-up for another device is dropped and counted.
const MAX_DEVICES: usize = 100_000;
/// Longest sleep when nothing is due (also how often idle entries go).
const IDLE: Duration = Duration::from_secs(1);

/// One request: where, which addresses it may reach (`None`: any, the
/// operator's gateway), extra headers, JSON body.
type Request = (Url, Option<UrlPolicy>, Vec<(&'static str, String)>, Vec<u8>);

/// A wake-up waiting for its time.
#[derive(Debug)]
struct Pending {
    conversation_id: u64,
    count: u32,
    urgent: bool,
    due: Instant,
    /// Tries made so far.
    tries: u32,
}

/// One device's coalescing state.
#[derive(Debug)]
struct Slot {
    /// No wake-up before this (the end of the last one's window).
    quiet_until: Instant,
    pending: Option<Pending>,
}

/// What one try came to.
enum Tried {
    Sent,
    Gone,
    Retry,
    GiveUp,
}

pub(super) struct Worker {
    config: PushConfig,
    store: Arc<dyn Store>,
    live: Arc<LiveDevices>,
    stats: Arc<PushStats>,
    no_endpoint: Arc<NoEndpoint>,
    slots: HashMap<(UserId, DeviceId), Slot>,
    tls: Option<Arc<rustls::ClientConfig>>,
    gateway: Option<Url>,
    stopping: Arc<AtomicBool>,
}

impl Worker {
    pub(super) fn new(
        config: PushConfig,
        store: Arc<dyn Store>,
        live: Arc<LiveDevices>,
        stats: Arc<PushStats>,
        no_endpoint: Arc<NoEndpoint>,
        stopping: Arc<AtomicBool>,
    ) -> Self {
        let tls = http::tls_config(&config.ca_file)
            .map_err(|e| tracing::warn!(error = %e, "no CA bundle: https wake-ups will fail"))
            .ok();
        let gateway = config
            .gateway_url
            .as_deref()
            .and_then(|u| endpoint::parse_url(u, config.url_policy()).ok());
        Worker {
            config,
            store,
            live,
            stats,
            no_endpoint,
            slots: HashMap::new(),
            tls,
            gateway,
            stopping,
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Runs until told to stop, or every sender is gone.
    pub(super) fn run(mut self, rx: Receiver<Job>) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            tracing::error!("the pusher cannot build its runtime; no push notifications");
            return;
        };
        while !self.stopping() {
            let wait = self.next_due().map_or(IDLE, |due| {
                due.saturating_duration_since(Instant::now()).min(IDLE)
            });
            match rx.recv_timeout(wait) {
                Ok(job) => {
                    self.job(job);
                    while let Ok(more) = rx.try_recv() {
                        self.job(more);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.fire_due(&rt);
        }
    }

    fn job(&mut self, job: Job) {
        match job {
            Job::Wake(wake) => self.take(wake),
            Job::Stop => {}
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter_map(|s| s.pending.as_ref().map(|p| p.due))
            .min()
    }

    /// Merges a wake-up into its device's pending one, or schedules it.
    fn take(&mut self, wake: Wake) {
        let now = Instant::now();
        let key = (wake.user, wake.device);
        if !self.slots.contains_key(&key) && self.slots.len() >= MAX_DEVICES {
            PushStats::add(&self.stats.dropped);
            return;
        }
        let slot = self.slots.entry(key).or_insert(Slot {
            quiet_until: now,
            pending: None,
        });
        match &mut slot.pending {
            Some(p) => {
                p.conversation_id = wake.conversation_id;
                p.count = p.count.saturating_add(1);
                if wake.urgent && !p.urgent {
                    p.urgent = true;
                    p.due = p.due.min(now);
                }
            }
            None => {
                let due = match wake.urgent {
                    true => now,
                    false => slot.quiet_until.max(now),
                };
                slot.pending = Some(Pending {
                    conversation_id: wake.conversation_id,
                    count: 1,
                    urgent: wake.urgent,
                    due,
                    tries: 0,
                });
            }
        }
    }

    /// Tries every due wake-up; forgets idle devices.
    fn fire_due(&mut self, rt: &tokio::runtime::Runtime) {
        let now = Instant::now();
        let due: Vec<(UserId, DeviceId)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.pending.as_ref().is_some_and(|p| p.due <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if self.stopping() {
                return;
            }
            let Some(mut pending) = self.slots.get_mut(&key).and_then(|s| s.pending.take()) else {
                continue;
            };
            let outcome = self.try_once(rt, &key, &pending);
            let coalesce = Duration::from_millis(self.config.coalesce_ms);
            let after = Instant::now();
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            match outcome {
                Tried::Sent => slot.quiet_until = after + coalesce,
                Tried::Gone | Tried::GiveUp => {}
                Tried::Retry => {
                    pending.tries += 1;
                    if pending.tries >= self.config.retry_attempts {
                        PushStats::add(&self.stats.abandoned);
                    } else {
                        pending.due = after + backoff(&self.config, pending.tries);
                        slot.pending = Some(pending);
                    }
                }
            }
        }
        self.slots
            .retain(|_, s| s.pending.is_some() || s.quiet_until > now);
    }

    /// One `POST` of `pending` to the device's endpoint.
    fn try_once(
        &self,
        rt: &tokio::runtime::Runtime,
        (user, device): &(UserId, DeviceId),
        pending: &Pending,
    ) -> Tried {
        if self.live.is_live(user, *device) {
            // It connected meanwhile: it syncs by itself.
            return Tried::GiveUp;
        }
        let stored = match rt.block_on(self.store.push_endpoint(user, *device)) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "reading a push endpoint failed; will retry");
                PushStats::add(&self.stats.failures);
                return Tried::Retry;
            }
        };
        let Some(target) = stored.as_deref().and_then(endpoint::decode) else {
            self.no_endpoint.insert(user, *device);
            return Tried::GiveUp;
        };
        let Some((url, only, headers, body)) = self.request(&target, pending) else {
            PushStats::add(&self.stats.abandoned);
            return Tried::GiveUp;
        };
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let tls = self.tls.as_ref();
        match http::post(&url, only, &headers, &body, timeout, tls) {
            Ok(code) if (200..300).contains(&code) => {
                PushStats::add(&self.stats.sent);
                Tried::Sent
            }
            Ok(404 | 410) if matches!(target, PushEndpoint::WebPush { .. }) => {
                self.forget(rt, user, *device, stored.as_deref());
                Tried::Gone
            }
            Ok(code) if code == 429 || code >= 500 => {
                PushStats::add(&self.stats.failures);
                Tried::Retry
            }
            Ok(code) => {
                tracing::debug!(code, "push endpoint refused a wake-up");
                PushStats::add(&self.stats.abandoned);
                Tried::GiveUp
            }
            Err(e) => {
                tracing::debug!(error = %e, "push failed; will retry");
                PushStats::add(&self.stats.failures);
                match e {
                    HttpError::NoRoots | HttpError::ServerName(_) | HttpError::NotPublic(_) => {
                        Tried::GiveUp
                    }
                    _ => Tried::Retry,
                }
            }
        }
    }

    /// The URL, headers and body of one wake-up: the conversation id and
    /// count only (docs/PROTOCOL.md §4.13). `None` for an endpoint that is
    /// no longer valid under this server's policy, or a gateway token with
    /// no gateway configured.
    fn request(&self, target: &PushEndpoint, p: &Pending) -> Option<Request> {
        match target {
            PushEndpoint::WebPush { url } => {
                let url = endpoint::parse_device_url(url, self.config.url_policy()).ok()?;
                let (ttl, urgency) = match p.urgent {
                    true => ("60", "high"),
                    false => ("86400", "normal"),
                };
                let headers = vec![("TTL", ttl.to_owned()), ("Urgency", urgency.to_owned())];
                let body = serde_json::json!({
                    "conversation_id": p.conversation_id,
                    "count": p.count,
                });
                let only = Some(self.config.url_policy());
                Some((url, only, headers, body.to_string().into_bytes()))
            }
            PushEndpoint::Gateway { token } => {
                let url = self.gateway.clone()?;
                let prio = if p.urgent { "high" } else { "low" };
                let body = serde_json::json!({ "notification": {
                    "conversation_id": p.conversation_id,
                    "counts": { "unread": p.count },
                    "prio": prio,
                    "devices": [{ "pushkey": token }],
                }});
                Some((url, None, Vec::new(), body.to_string().into_bytes()))
            }
        }
    }

    /// Removes a gone endpoint, unless the device registered another since.
    fn forget(
        &self,
        rt: &tokio::runtime::Runtime,
        user: &str,
        device: DeviceId,
        was: Option<&[u8]>,
    ) {
        PushStats::add(&self.stats.gone);
        let current = rt
            .block_on(self.store.push_endpoint(user, device))
            .ok()
            .flatten();
        if current.as_deref() != was {
            return;
        }
        let removed = rt.block_on(async {
            self.store.set_push_endpoint(user, device, None).await?;
            self.store.persist().await
        });
        match removed {
            Ok(()) => self.no_endpoint.insert(user, device),
            Err(e) => tracing::warn!(error = %e, "removing a gone push endpoint failed"),
        }
    }
}

/// The wait before try `tries + 1`: `retry_initial_ms` doubled per earlier
/// failure, at most `retry_max_ms`.
fn backoff(config: &PushConfig, tries: u32) -> Duration {
    let factor = 1u64 << tries.saturating_sub(1).min(30);
    let ms = config
        .retry_initial_ms
        .saturating_mul(factor)
        .min(config.retry_max_ms);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound() {
        let config = PushConfig {
            retry_initial_ms: 100,
            retry_max_ms: 350,
            ..PushConfig::default()
        };
        let waits: Vec<u128> = (1..=4).map(|t| backoff(&config, t).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 350, 350]);
    }
}
