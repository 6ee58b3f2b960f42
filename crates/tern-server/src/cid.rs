//! Shard-aware QUIC connection IDs.
//!
//! Every connection ID the server issues is [`CID_LEN`] bytes long: byte 0 is
//! the id of the shard that owns the connection, the rest is random. A
//! short-header (1-RTT) packet carries our connection ID right after its first
//! byte, so any shard can tell from [`shard_of_datagram`] which shard a packet
//! belongs to and hand it over (see `server::socket`). This is the plaintext
//! "server id in the first byte" scheme of QUIC-LB: it reveals the shard (not
//! the connection) to on-path observers.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, EndpointConfig, InvalidCid};
use rand::RngCore;

/// Length of every server-issued connection ID.
pub const CID_LEN: usize = 8;

/// Header-form bit of a QUIC packet's first byte: set for long headers.
const LONG_HEADER_BIT: u8 = 0x80;

/// Generates connection IDs whose first byte is the owning shard's id.
#[derive(Debug, Clone)]
pub struct ShardCidGenerator {
    shard_id: u8,
    lifetime: Option<Duration>,
}

impl ShardCidGenerator {
    /// A generator for the shard `shard_id`; issued IDs never expire.
    pub fn new(shard_id: u8) -> Self {
        Self {
            shard_id,
            lifetime: None,
        }
    }

    /// Makes quinn retire issued IDs after `lifetime` (and issue fresh ones).
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// The shard whose id this generator writes into byte 0.
    pub fn shard_id(&self) -> u8 {
        self.shard_id
    }
}

impl ConnectionIdGenerator for ShardCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.shard_id;
        if let Some(rest) = bytes.get_mut(1..) {
            rand::thread_rng().fill_bytes(rest);
        }
        ConnectionId::new(&bytes)
    }

    /// Accepts only IDs this shard could have issued, so a stray packet for
    /// another shard's connection is dropped rather than answered with a
    /// stateless reset that would kill a healthy connection.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        match cid.first() {
            Some(&shard) if cid.len() == CID_LEN && shard == self.shard_id => Ok(()),
            _ => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}

/// The quinn endpoint configuration for shard `shard_id`: default settings
/// with a [`ShardCidGenerator`] for that shard.
pub fn shard_endpoint_config(shard_id: u8) -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config.cid_generator(move || Box::new(ShardCidGenerator::new(shard_id)));
    config
}

/// Like [`shard_endpoint_config`], signing stateless resets with
/// `reset_key` (the server's persisted one, so they survive a restart).
pub fn shard_endpoint_config_with_reset(
    shard_id: u8,
    reset_key: std::sync::Arc<dyn quinn_proto::crypto::HmacKey>,
) -> EndpointConfig {
    let mut config = EndpointConfig::new(reset_key);
    config.cid_generator(move || Box::new(ShardCidGenerator::new(shard_id)));
    config
}

/// The shard named by the destination connection ID of a short-header
/// datagram, or `None` for a long-header packet (handshake traffic, always
/// handled where it lands) or a datagram too short to hold our ID.
///
/// Only the header-form bit is checked, not the fixed bit (0x40): quinn
/// greases that bit (RFC 9287) once both sides advertise support.
pub fn shard_of_datagram(datagram: &[u8]) -> Option<u8> {
    let first = *datagram.first()?;
    if first & LONG_HEADER_BIT != 0 || datagram.len() < 1 + CID_LEN {
        return None;
    }
    datagram.get(1).copied()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn packet(first: u8, cid: &ConnectionId) -> Vec<u8> {
        let mut p = vec![first];
        p.extend_from_slice(cid);
        p.extend_from_slice(&[0xaa; 20]);
        p
    }

    #[test]
    fn generated_ids_carry_the_shard_and_are_random() {
        let mut g = ShardCidGenerator::new(7);
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_eq!(a.first(), Some(&7));
        assert_ne!(a, b, "the 7 random bytes should differ");
        assert_eq!(g.cid_len(), CID_LEN);
        assert_eq!(g.cid_lifetime(), None);
    }

    #[test]
    fn validate_accepts_only_own_shard() {
        let mut mine = ShardCidGenerator::new(3);
        let mut other = ShardCidGenerator::new(4);
        let own = mine.generate_cid();
        assert!(mine.validate(&own).is_ok());
        assert!(mine.validate(&other.generate_cid()).is_err());
        assert!(mine.validate(&ConnectionId::new(&[3, 1, 2])).is_err());
    }

    #[test]
    fn shard_is_read_from_short_headers() {
        let cid = ShardCidGenerator::new(9).generate_cid();
        assert_eq!(shard_of_datagram(&packet(0x41, &cid)), Some(9));
        // Greased fixed bit: still a short header.
        assert_eq!(shard_of_datagram(&packet(0x01, &cid)), Some(9));
    }

    #[test]
    fn long_headers_and_short_datagrams_are_local() {
        let cid = ShardCidGenerator::new(2).generate_cid();
        assert_eq!(shard_of_datagram(&packet(0xc0, &cid)), None); // Initial
        assert_eq!(shard_of_datagram(&packet(0xe0, &cid)), None); // Handshake
        assert_eq!(shard_of_datagram(&[]), None);
        assert_eq!(shard_of_datagram(&[0x40, 2, 0, 0]), None);
        assert_eq!(shard_of_datagram(&[0x40, 2, 1, 2, 3, 4, 5, 6, 7]), Some(2));
    }

    #[test]
    fn endpoint_config_builds() {
        let _ = shard_endpoint_config(1);
    }
}
