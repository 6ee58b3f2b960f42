//! UDP sockets for the sharded QUIC server.
//!
//! Every shard binds its own UDP socket to the same `addr:port` with
//! `SO_REUSEPORT` ([`bind_shard_sockets`]); the kernel spreads datagrams over
//! them by 4-tuple hash. When a client migrates (new source port or address)
//! its datagrams may land on another shard's socket, so each socket is wrapped
//! by [`shard_socket`] in a router that reads the owning shard from the
//! connection ID of every short-header datagram (see `server::cid`) and hands
//! foreign ones to their owner over a bounded channel. The owner's socket
//! yields them from `poll_recv` as if it had received them itself. Sending
//! always uses the shard's own socket: all share `addr:port`, so peers see one
//! server address.
//!
//! ```text
//! let channels = ForwardingChannels::new(n, DEFAULT_INBOX_CAPACITY)?; // once
//! let sockets = bind_shard_sockets(addr, n)?;                  // once
//! // in shard i's thread, inside its tokio runtime:
//! let socket = shard_socket(parts_i, std_socket_i)?;            // -> Endpoint
//! ```

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::sync::mpsc;

use super::cid::shard_of_datagram;

/// Kernel receive/send buffer size asked for on every shard socket (the
/// kernel may clamp it to `net.core.rmem_max` / `wmem_max`).
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Default capacity, in datagrams, of each shard's inbox of forwarded
/// datagrams. When it is full, further forwarded datagrams are dropped.
pub const DEFAULT_INBOX_CAPACITY: usize = 1024;

/// Rounds of all-foreign batches one `poll_recv` call routes before it
/// yields to the runtime, so forwarding cannot starve the endpoint driver.
const MAX_FOREIGN_ROUNDS: usize = 16;

/// Binds a nonblocking UDP socket to `addr` with `SO_REUSEADDR` and
/// `SO_REUSEPORT` set and large kernel buffers; IPv6 sockets also accept
/// IPv4-mapped traffic (`IPV6_V6ONLY` off).
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!("could not raise UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!("could not raise UDP send buffer: {e}");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds `shards` sockets to `addr` with [`bind_reuseport`]. With port 0 a
/// free port is picked first by [`pick_free_port`] and all shards bind it.
pub fn bind_shard_sockets(addr: SocketAddr, shards: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    if addr.port() != 0 {
        refuse_if_served(addr)?;
        return bind_all(addr, shards);
    }
    let mut last = io::Error::from(io::ErrorKind::AddrInUse);
    for _ in 0..PORT_PICK_ATTEMPTS {
        match bind_all(pick_free_port(addr)?, shards) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            bound => return bound,
        }
    }
    Err(last)
}

/// Tries of [`bind_shard_sockets`] with port 0 when another process takes
/// the picked port between the pick and the bind.
const PORT_PICK_ATTEMPTS: usize = 8;

fn bind_all(addr: SocketAddr, shards: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    (0..shards.max(1)).map(|_| bind_reuseport(addr)).collect()
}

/// `addr` with a port no socket holds, picked by the kernel for a probe bound
/// *without* `SO_REUSEPORT`. Letting a reuseport socket pick the port instead
/// is unsafe: Linux's UDP autobind skips ports held by other reuseport
/// sockets of the same user (`udp_lib_lport_inuse`), so two servers started
/// on port 0 could share one port and receive each other's clients.
fn pick_free_port(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(false)?;
    }
    probe.bind(&addr.into())?;
    let picked = probe.local_addr()?.as_socket();
    picked.ok_or_else(|| io::Error::other("probe socket has no IP address"))
}

/// Fails with `AddrInUse` if another process already has `addr`.
/// `SO_REUSEPORT` would otherwise let a second server join the first one's
/// port silently and split its clients between them: a probe bound
/// *without* the option is refused while any socket, with or without it,
/// holds the address.
fn refuse_if_served(addr: SocketAddr) -> io::Result<()> {
    drop(std::net::UdpSocket::bind(addr)?);
    Ok(())
}

/// Forwarding channels that cannot be built.
#[derive(Debug, Error)]
pub enum ForwardingError {
    /// Shard ids are one byte (they go into byte 0 of each connection ID).
    #[error("shard count must be between 1 and 256, got {0}: lower the configured shard count")]
    ShardCount(usize),
    /// A zero-capacity channel cannot carry datagrams.
    #[error("shard inbox capacity must be at least 1")]
    InboxCapacity,
}

/// Datagram counters of one shard.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Datagrams this shard received for another shard and handed over.
    pub forwarded_out: AtomicU64,
    /// Datagrams other shards handed to this shard and it delivered to quinn.
    pub forwarded_in: AtomicU64,
    /// Datagrams this shard could not hand over (owner's inbox full or gone,
    /// or too large for the receive buffer).
    pub dropped: AtomicU64,
}

/// Forwarding counters of all shards, shared by the shards and readable by
/// stats and tests.
#[derive(Debug)]
pub struct ForwardingStats {
    shards: Box<[ForwardCounters]>,
}

impl ForwardingStats {
    /// Counters of shard `shard_id`, if it exists.
    pub fn shard(&self, shard_id: u8) -> Option<&ForwardCounters> {
        self.shards.get(usize::from(shard_id))
    }

    /// Datagrams handed between shards, counted at the sender.
    pub fn forwarded_out_total(&self) -> u64 {
        self.sum(|c| &c.forwarded_out)
    }

    /// Handed-over datagrams delivered to their owner's endpoint.
    pub fn forwarded_in_total(&self) -> u64 {
        self.sum(|c| &c.forwarded_in)
    }

    /// Datagrams dropped while handing over.
    pub fn dropped_total(&self) -> u64 {
        self.sum(|c| &c.dropped)
    }

    fn sum(&self, field: impl Fn(&ForwardCounters) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|c| field(c).load(Ordering::Relaxed))
            .sum()
    }
}

/// A datagram handed from the shard that received it to the shard owning
/// its connection.
#[derive(Debug)]
struct Forwarded {
    data: Bytes,
    addr: SocketAddr,
    ecn: Option<EcnCodepoint>,
    dst_ip: Option<IpAddr>,
}

/// The inbox channels of `N` shards. Build it once, then move each
/// [`ShardSocketParts`] into its shard's thread.
pub struct ForwardingChannels {
    parts: Vec<ShardSocketParts>,
    stats: Arc<ForwardingStats>,
}

impl ForwardingChannels {
    /// Creates inboxes of `inbox_capacity` datagrams for `shards` shards.
    pub fn new(shards: usize, inbox_capacity: usize) -> Result<Self, ForwardingError> {
        if shards == 0 || shards > 256 {
            return Err(ForwardingError::ShardCount(shards));
        }
        if inbox_capacity == 0 {
            return Err(ForwardingError::InboxCapacity);
        }
        let stats = Arc::new(ForwardingStats {
            shards: (0..shards).map(|_| ForwardCounters::default()).collect(),
        });
        let (senders, inboxes): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::channel(inbox_capacity)).unzip();
        let peers: Arc<[mpsc::Sender<Forwarded>]> = senders.into();
        let parts = (0u8..=255)
            .zip(inboxes)
            .map(|(shard_id, inbox)| ShardSocketParts {
                shard_id,
                inbox,
                peers: peers.clone(),
                stats: stats.clone(),
            })
            .collect();
        Ok(Self { parts, stats })
    }

    /// The counters shared by all shards.
    pub fn stats(&self) -> Arc<ForwardingStats> {
        self.stats.clone()
    }

    /// One [`ShardSocketParts`] per shard, in shard-id order.
    pub fn into_parts(self) -> Vec<ShardSocketParts> {
        self.parts
    }
}

/// What one shard needs to route datagrams: its id, its inbox, and the
/// inboxes of all shards. `Send`, so it can move into the shard's thread.
#[derive(Debug)]
pub struct ShardSocketParts {
    shard_id: u8,
    inbox: mpsc::Receiver<Forwarded>,
    peers: Arc<[mpsc::Sender<Forwarded>]>,
    stats: Arc<ForwardingStats>,
}

impl ShardSocketParts {
    /// The id of the shard these parts belong to.
    pub fn shard_id(&self) -> u8 {
        self.shard_id
    }
}

/// Wraps shard `parts.shard_id()`'s bound socket in the routing socket that
/// quinn's `Endpoint::new_with_abstract_socket` takes. Must be called inside
/// the shard's tokio runtime (it registers the socket with its reactor).
pub fn shard_socket(
    parts: ShardSocketParts,
    socket: std::net::UdpSocket,
) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    Ok(Arc::new(ShardSocket::new(parts, socket)?))
}

/// A shard's UDP socket plus its inbox of datagrams forwarded by others.
struct ShardSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    shard_id: u8,
    inbox: Mutex<mpsc::Receiver<Forwarded>>,
    peers: Arc<[mpsc::Sender<Forwarded>]>,
    stats: Arc<ForwardingStats>,
    /// Alternates which source `poll_recv` tries first, for fairness.
    inbox_first: AtomicBool,
}

impl fmt::Debug for ShardSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardSocket")
            .field("shard_id", &self.shard_id)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for ShardSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    /// Yields datagrams from the socket (minus those handed to other shards)
    /// or from the inbox; when both are empty, wakers are registered on both.
    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if self.inbox_first.fetch_xor(true, Ordering::Relaxed) {
            if let Poll::Ready(n) = self.poll_inbox(cx, bufs, meta) {
                return Poll::Ready(Ok(n));
            }
            return self.poll_socket(cx, bufs, meta);
        }
        match self.poll_socket(cx, bufs, meta) {
            Poll::Pending => self.poll_inbox(cx, bufs, meta).map(Ok),
            ready => ready,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

impl ShardSocket {
    fn new(parts: ShardSocketParts, socket: std::net::UdpSocket) -> io::Result<Self> {
        Ok(Self {
            inner: TokioRuntime.wrap_udp_socket(socket)?,
            shard_id: parts.shard_id,
            inbox: Mutex::new(parts.inbox),
            peers: parts.peers,
            stats: parts.stats,
            inbox_first: AtomicBool::new(false),
        })
    }

    fn counters(&self) -> Option<&ForwardCounters> {
        self.stats.shard(self.shard_id)
    }

    fn count(&self, field: impl Fn(&ForwardCounters) -> &AtomicU64) {
        if let Some(c) = self.counters() {
            field(c).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads from the real socket until a batch keeps at least one local
    /// datagram; returns how many `meta` entries are filled.
    fn poll_socket(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        for _ in 0..MAX_FOREIGN_ROUNDS {
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let kept = self.route_batch(bufs, meta, n);
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Hands foreign datagrams of the first `n` entries to their owners and
    /// compacts the rest to the front; returns the number of entries kept.
    fn route_batch(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let mut kept = 0;
        for read in 0..n.min(bufs.len()).min(meta.len()) {
            let (Some(m), Some(buf)) = (meta.get(read).copied(), bufs.get_mut(read)) else {
                break;
            };
            let len = self.route_datagrams(buf, &m);
            if len == 0 || (kept != read && !move_slot(bufs, read, kept, len)) {
                continue;
            }
            if let Some(slot) = meta.get_mut(kept) {
                *slot = RecvMeta { len, ..m };
                kept += 1;
            }
        }
        kept
    }

    /// Routes the datagrams of one (possibly GRO-coalesced) buffer. All-local
    /// buffers are left untouched; otherwise foreign datagrams are handed over
    /// and local ones moved together. Returns the new length of `buf`.
    fn route_datagrams(&self, buf: &mut [u8], m: &RecvMeta) -> usize {
        let len = m.len.min(buf.len());
        let stride = if m.stride == 0 {
            len
        } else {
            m.stride.min(len)
        };
        let Some(data) = buf.get_mut(..len) else {
            return 0;
        };
        if stride == 0 || data.chunks(stride).all(|d| self.owner(d).is_none()) {
            return len;
        }
        let (mut write, mut read) = (0, 0);
        while read < len {
            let end = (read + stride).min(len);
            match data
                .get(read..end)
                .and_then(|d| self.owner(d).map(|o| (o, d)))
            {
                Some((owner, datagram)) => self.forward(owner, datagram, m),
                None => {
                    data.copy_within(read..end, write);
                    write += end - read;
                }
            }
            read = end;
        }
        write
    }

    /// The other shard owning `datagram`, if any. Datagrams naming no shard
    /// of these channels stay here (quinn drops them after `validate`).
    fn owner(&self, datagram: &[u8]) -> Option<u8> {
        shard_of_datagram(datagram)
            .filter(|&s| s != self.shard_id && usize::from(s) < self.peers.len())
    }

    fn forward(&self, owner: u8, datagram: &[u8], m: &RecvMeta) {
        let item = Forwarded {
            data: Bytes::copy_from_slice(datagram),
            addr: m.addr,
            ecn: m.ecn,
            dst_ip: m.dst_ip,
        };
        let sent = self
            .peers
            .get(usize::from(owner))
            .is_some_and(|tx| tx.try_send(item).is_ok());
        self.count(|c| if sent { &c.forwarded_out } else { &c.dropped });
    }

    /// Copies forwarded datagrams into the buffers, one per entry; `Pending`
    /// (with the waker registered) when the inbox is empty.
    fn poll_inbox(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<usize> {
        let mut inbox = self
            .inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut filled = 0;
        let mut next = match inbox.poll_recv(cx) {
            Poll::Ready(Some(item)) => Some(item),
            _ => return Poll::Pending,
        };
        while let Some(item) = next.take() {
            if self.deliver(&item, bufs.get_mut(filled), meta.get_mut(filled)) {
                filled += 1;
            }
            if filled < bufs.len().min(meta.len()) {
                next = inbox.try_recv().ok();
            }
        }
        if filled == 0 {
            // Everything was undeliverable; make sure we are polled again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(filled)
    }

    /// Writes one forwarded datagram into a receive slot; false (and counted
    /// as dropped) when there is no slot or it is too small.
    fn deliver(
        &self,
        item: &Forwarded,
        buf: Option<&mut IoSliceMut<'_>>,
        meta: Option<&mut RecvMeta>,
    ) -> bool {
        let len = item.data.len();
        let (Some(dst), Some(meta)) = (buf.and_then(|b| b.get_mut(..len)), meta) else {
            self.count(|c| &c.dropped);
            return false;
        };
        dst.copy_from_slice(&item.data);
        *meta = RecvMeta {
            addr: item.addr,
            len,
            stride: len,
            ecn: item.ecn,
            dst_ip: item.dst_ip,
        };
        self.count(|c| &c.forwarded_in);
        true
    }
}

/// Copies the first `len` bytes of buffer `from` into buffer `to` (`to <
/// from`); false if either is out of range or too small.
fn move_slot(bufs: &mut [IoSliceMut<'_>], from: usize, to: usize, len: usize) -> bool {
    if to >= from {
        return false;
    }
    let (low, high) = bufs.split_at_mut(from);
    let src = high.first().and_then(|b| b.get(..len));
    let dst = low.get_mut(to).and_then(|b| b.get_mut(..len));
    match (src, dst) {
        (Some(src), Some(dst)) => {
            dst.copy_from_slice(src);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A datagram of `len` bytes: short header for `shard`, or a long header.
    fn datagram(shard: Option<u8>, len: usize, fill: u8) -> Vec<u8> {
        let mut d = vec![fill; len];
        match shard {
            Some(s) => (d[0], d[1]) = (0x40, s),
            None => d[0] = 0xc0,
        }
        d
    }

    fn meta(len: usize, stride: usize) -> RecvMeta {
        RecvMeta {
            addr: "192.0.2.7:4433"
                .parse()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            len,
            stride,
            ecn: None,
            dst_ip: None,
        }
    }

    /// Shard sockets 0..3 of one mesh (needs a tokio runtime context).
    fn sockets() -> Result<Vec<ShardSocket>, Box<dyn std::error::Error>> {
        let mesh = ForwardingChannels::new(3, 4)?;
        let std_sockets = bind_shard_sockets("127.0.0.1:0".parse()?, 3)?;
        let made = mesh
            .into_parts()
            .into_iter()
            .zip(std_sockets)
            .map(|(p, s)| ShardSocket::new(p, s));
        Ok(made.collect::<io::Result<_>>()?)
    }

    #[test]
    fn mixed_gro_batches_are_split_and_forwarded() -> TestResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _guard = rt.enter();
        let shards = sockets()?;
        let (a, b, c) = (
            datagram(Some(0), 20, 1),
            datagram(Some(1), 20, 2),
            datagram(Some(0), 10, 3),
        );
        let (foreign, long) = (datagram(Some(2), 20, 4), datagram(Some(1), 15, 5));
        let long = [&[0xc0u8][..], &long[1..]].concat();
        let mut storage = [[0u8; 64]; 4];
        storage[0][..50].copy_from_slice(&[a.clone(), b.clone(), c.clone()].concat());
        storage[1][..20].copy_from_slice(&foreign);
        storage[2][..15].copy_from_slice(&long);
        storage[3][..20].copy_from_slice(&a);
        let mut metas = [meta(50, 20), meta(20, 20), meta(15, 15), meta(20, 20)];
        let mut bufs: Vec<IoSliceMut> = storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();

        assert_eq!(shards[0].route_batch(&mut bufs, &mut metas, 4), 3);
        assert_eq!((metas[0].len, metas[0].stride), (30, 20));
        assert_eq!(&bufs[0][..30], &[a.clone(), c].concat()[..]);
        assert_eq!((metas[1].len, &bufs[1][..15]), (15, &long[..]));
        assert_eq!((metas[2].len, &bufs[2][..20]), (20, &a[..]));
        let stats = &shards[0].stats;
        assert_eq!((stats.forwarded_out_total(), stats.dropped_total()), (2, 0));

        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for (shard, want) in [(1, b), (2, foreign)] {
            let mut out = [[0u8; 64]; 2];
            let mut out_bufs: Vec<IoSliceMut> =
                out.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let mut out_meta = [RecvMeta::default(); 2];
            assert_eq!(
                shards[shard].poll_inbox(&mut cx, &mut out_bufs, &mut out_meta),
                Poll::Ready(1)
            );
            assert_eq!(
                (out_meta[0].len, out_meta[0].stride, out_meta[0].addr),
                (20, 20, metas[0].addr)
            );
            assert_eq!(&out_bufs[0][..20], &want[..]);
            assert!(shards[shard]
                .poll_inbox(&mut cx, &mut out_bufs, &mut out_meta)
                .is_pending());
        }
        assert_eq!(stats.forwarded_in_total(), 2);
        Ok(())
    }

    #[test]
    fn all_local_batches_are_untouched() -> TestResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _guard = rt.enter();
        let shards = sockets()?;
        let batch = [
            datagram(Some(1), 20, 1),
            datagram(Some(1), 20, 2),
            datagram(None, 7, 3),
        ]
        .concat();
        let mut storage = [[0u8; 64]; 1];
        storage[0][..47].copy_from_slice(&batch);
        let mut metas = [meta(47, 20)];
        let mut bufs: Vec<IoSliceMut> = storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        assert_eq!(shards[1].route_batch(&mut bufs, &mut metas, 1), 1);
        assert_eq!((metas[0].len, &bufs[0][..47]), (47, &batch[..]));
        assert_eq!(shards[1].stats.forwarded_out_total(), 0);
        Ok(())
    }

    #[test]
    fn mesh_rejects_bad_sizes() {
        assert!(matches!(
            ForwardingChannels::new(0, 8),
            Err(ForwardingError::ShardCount(0))
        ));
        assert!(matches!(
            ForwardingChannels::new(257, 8),
            Err(ForwardingError::ShardCount(257))
        ));
        assert!(matches!(
            ForwardingChannels::new(2, 0),
            Err(ForwardingError::InboxCapacity)
        ));
        let mesh = ForwardingChannels::new(3, 8);
        let ids: Vec<u8> = mesh
            .map(|m| m.into_parts().iter().map(|p| p.shard_id()).collect())
            .unwrap_or_default();
        assert_eq!(ids, vec![0, 1, 2]);
    }

    /// The race behind a flaky load test: a server on port 0 must never get
    /// a port that another reuseport server (same user) already holds. With
    /// the kernel picking among ~28k ephemeral ports for reuseport sockets,
    /// 600 servers hold a shared port with probability ~99.8 %.
    #[test]
    fn port_zero_never_joins_another_servers_port() -> io::Result<()> {
        let any: SocketAddr = "127.0.0.1:0".parse().map_err(io::Error::other)?;
        let held: Vec<_> = (0..600)
            .map(|_| bind_shard_sockets(any, 1))
            .collect::<io::Result<_>>()?;
        let mut ports = std::collections::HashSet::new();
        for sockets in &held {
            let port = sockets.first().map(|s| s.local_addr()).transpose()?;
            assert!(
                ports.insert(port.map(|a| a.port())),
                "two servers share {port:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn shard_sockets_share_one_port() -> io::Result<()> {
        let sockets = bind_shard_sockets("127.0.0.1:0".parse().map_err(io::Error::other)?, 3)?;
        let port = sockets
            .first()
            .map(|s| s.local_addr())
            .transpose()?
            .map(|a| a.port());
        for s in &sockets {
            assert_eq!(Some(s.local_addr()?.port()), port);
        }
        Ok(())
    }
}
