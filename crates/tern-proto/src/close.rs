//! QUIC application close codes a tern server or client uses, so a peer can
//! tell why its connection ended.

/// Normal close (client leaving, server draining finished).
pub const NORMAL: u32 = 0;
/// The peer broke framing (truncated stream, bad length) and the stream is out of sync.
pub const PROTOCOL_VIOLATION: u32 = 1;
/// A frame longer than the limit was announced.
pub const FRAME_TOO_LARGE: u32 = 2;
/// A frame or authentication did not arrive in time.
pub const TIMEOUT: u32 = 3;
/// The peer did not read its deliveries fast enough; it should reconnect and sync.
pub const TOO_SLOW: u32 = 4;
/// The server is shutting down; reconnect later.
pub const SHUTTING_DOWN: u32 = 5;
/// Too many failed authentication attempts.
pub const AUTH_FAILED: u32 = 6;

/// A short human description of a close code.
pub fn describe(code: u64) -> &'static str {
    match code {
        0 => "normal close",
        1 => "protocol violation",
        2 => "frame too large",
        3 => "timeout",
        4 => "too slow reading deliveries; reconnect and sync",
        5 => "server shutting down; reconnect later",
        6 => "authentication failed",
        _ => "unknown reason",
    }
}
