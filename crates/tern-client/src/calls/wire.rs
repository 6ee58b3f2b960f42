//! The plaintext of one call signal (docs/E2EE.md §8.3), what a device
//! encrypts for each recipient device and sends inside a `CallSignal`
//! payload (never as a message: call signals are not stored):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | `CA`: a call signal ([`DOMAIN`]; no message content starts so) |
//! | 1 | type: 1 offer, 2 answer, 3 ICE candidate, 4 hangup, 5 busy |
//! | 8 | call id, u64 little-endian (the caller's random id) |
//! | rest | UTF-8: the SDP (offer, answer), the candidate (ICE), empty otherwise |
//!
//! At most [`MAX_SIGNAL_TEXT`] bytes of text, so that the ciphertext stays
//! under the server's 16 KiB per device.

use crate::calls::machine::Signal;

/// The first byte of every call signal plaintext. Message contents
/// (docs/E2EE.md §3) start with their version, `01`, so neither can be
/// taken for the other: a server that delivers one device's message
/// ciphertext as a call signal, or the reverse, gets it refused.
pub const DOMAIN: u8 = 0xCA;

/// Most bytes of SDP or candidate text in one signal.
pub const MAX_SIGNAL_TEXT: usize = 12 * 1024;

const OFFER: u8 = 1;
const ANSWER: u8 = 2;
const ICE: u8 = 3;
const HANGUP: u8 = 4;
const BUSY: u8 = 5;

/// Why bytes are no call signal (a faulty or newer sender: drop it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("a call signal is at least 10 bytes, got {0}")]
    Short(usize),
    #[error("not a call signal: it starts with {0:#04x}, not 0xca")]
    NotASignal(u8),
    #[error("unknown call signal type {0}; a newer client sent it, drop it")]
    UnknownType(u8),
    #[error("call signal text is not UTF-8")]
    NotUtf8,
    #[error("a hangup or busy signal carries no text")]
    UnexpectedText,
    #[error("call signal text of {0} bytes is over {MAX_SIGNAL_TEXT}")]
    TooLong(usize),
}

/// Encodes `signal`.
///
/// # Errors
/// [`SignalError::TooLong`] past [`MAX_SIGNAL_TEXT`] bytes of text.
pub fn encode(signal: &Signal) -> Result<Vec<u8>, SignalError> {
    let (tag, text) = match signal {
        Signal::Offer { sdp, .. } => (OFFER, sdp.as_str()),
        Signal::Answer { sdp, .. } => (ANSWER, sdp.as_str()),
        Signal::Ice { candidate, .. } => (ICE, candidate.as_str()),
        Signal::Hangup { .. } => (HANGUP, ""),
        Signal::Busy { .. } => (BUSY, ""),
    };
    if text.len() > MAX_SIGNAL_TEXT {
        return Err(SignalError::TooLong(text.len()));
    }
    let mut out = Vec::with_capacity(10 + text.len());
    out.push(DOMAIN);
    out.push(tag);
    out.extend_from_slice(&signal.call_id().to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(out)
}

/// Decodes a signal.
///
/// # Errors
/// [`SignalError`] for anything that is not a signal of this layout.
pub fn decode(bytes: &[u8]) -> Result<Signal, SignalError> {
    let Some((&domain, signal)) = bytes.split_first() else {
        return Err(SignalError::Short(0));
    };
    if domain != DOMAIN {
        return Err(SignalError::NotASignal(domain));
    }
    let Some((&tag, rest)) = signal.split_first() else {
        return Err(SignalError::Short(bytes.len()));
    };
    let (Some(id), Some(text)) = (rest.get(..8), rest.get(8..)) else {
        return Err(SignalError::Short(bytes.len()));
    };
    let mut id_bytes = [0u8; 8];
    id_bytes.copy_from_slice(id);
    let call_id = u64::from_le_bytes(id_bytes);
    if text.len() > MAX_SIGNAL_TEXT {
        return Err(SignalError::TooLong(text.len()));
    }
    let text = std::str::from_utf8(text).map_err(|_| SignalError::NotUtf8)?;
    let owned = || text.to_owned();
    match tag {
        OFFER => Ok(Signal::Offer {
            call_id,
            sdp: owned(),
        }),
        ANSWER => Ok(Signal::Answer {
            call_id,
            sdp: owned(),
        }),
        ICE => Ok(Signal::Ice {
            call_id,
            candidate: owned(),
        }),
        HANGUP | BUSY if !text.is_empty() => Err(SignalError::UnexpectedText),
        HANGUP => Ok(Signal::Hangup { call_id }),
        BUSY => Ok(Signal::Busy { call_id }),
        other => Err(SignalError::UnknownType(other)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_type_roundtrips() {
        for signal in [
            Signal::Offer {
                call_id: 1,
                sdp: "v=0".into(),
            },
            Signal::Answer {
                call_id: 2,
                sdp: "v=0".into(),
            },
            Signal::Ice {
                call_id: 3,
                candidate: "candidate:1 1 udp".into(),
            },
            Signal::Hangup { call_id: 4 },
            Signal::Busy { call_id: u64::MAX },
        ] {
            assert_eq!(decode(&encode(&signal).unwrap()).unwrap(), signal);
        }
    }

    #[test]
    fn exact_bytes() {
        let bytes = encode(&Signal::Hangup { call_id: 0x0102 }).unwrap();
        assert_eq!(bytes, [0xCA, 4, 2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn malformed_is_refused() {
        assert_eq!(decode(&[]), Err(SignalError::Short(0)));
        assert_eq!(decode(&[0xCA]), Err(SignalError::Short(1)));
        assert_eq!(decode(&[0xCA, 1, 0, 0]), Err(SignalError::Short(4)));
        assert_eq!(decode(&[1; 10]), Err(SignalError::NotASignal(1)));
        let mut unknown = [9; 10];
        unknown[0] = 0xCA;
        assert_eq!(decode(&unknown), Err(SignalError::UnknownType(9)));
        assert_eq!(
            decode(&[0xCA, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]),
            Err(SignalError::NotUtf8)
        );
        assert_eq!(
            decode(&[0xCA, 4, 0, 0, 0, 0, 0, 0, 0, 0, b'x']),
            Err(SignalError::UnexpectedText)
        );
        let long = Signal::Offer {
            call_id: 1,
            sdp: "x".repeat(MAX_SIGNAL_TEXT + 1),
        };
        assert!(matches!(encode(&long), Err(SignalError::TooLong(_))));
    }
}
