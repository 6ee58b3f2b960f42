//! Refusals: the typed [`ErrorBody`] and the [`Conflict`] that also carries
//! the state to recover with. Both are the wire's `Error` table; a
//! `Conflict` is one with a current epoch or a device list.

use crate::body::{Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;

/// A typed error sent to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: fb::ErrorCode,
    pub message: String,
    pub retry_after_ms: u32,
}

impl ErrorBody {
    fn decode_fields(e: &fb::Error<'_>) -> ErrorBody {
        ErrorBody {
            code: e.code(),
            message: e.message().unwrap_or_default().to_owned(),
            retry_after_ms: e.retry_after_ms(),
        }
    }
}

impl WireBody for ErrorBody {
    const TAG: fb::Body = fb::Body::Error;
    type Table<'a> = fb::Error<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::ErrorArgs {
            code: self.code,
            message: Some(b.create_string(&self.message)),
            retry_after_ms: self.retry_after_ms,
            current_epoch: 0,
            devices: None,
        };
        fb::Error::create(b, &args).as_union_value()
    }

    fn decode(e: fb::Error<'_>) -> Result<Self, FrameError> {
        Ok(ErrorBody::decode_fields(&e))
    }
}

/// A refusal with the state the client needs to recover (current epoch,
/// current device set): `current_epoch` with `StaleEpoch`, `devices` (every
/// device to encrypt for) with `StaleDevices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub error: ErrorBody,
    pub current_epoch: u64,
    pub devices: Vec<(String, u32)>,
}

impl Conflict {
    /// Whether an `Error` table carries recovery state (and so reads as a `Conflict`).
    pub(crate) fn is_conflict(e: &fb::Error<'_>) -> bool {
        e.current_epoch() != 0 || e.devices().is_some()
    }
}

impl WireBody for Conflict {
    const TAG: fb::Body = fb::Body::Error;
    type Table<'a> = fb::Error<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let devices: Vec<_> = self
            .devices
            .iter()
            .map(|(user, device)| {
                let user = Some(b.create_string(user));
                fb::DeviceAddress::create(
                    b,
                    &fb::DeviceAddressArgs {
                        user,
                        device: *device,
                    },
                )
            })
            .collect();
        let args = fb::ErrorArgs {
            code: self.error.code,
            message: Some(b.create_string(&self.error.message)),
            retry_after_ms: self.error.retry_after_ms,
            current_epoch: self.current_epoch,
            devices: Some(b.create_vector(&devices)),
        };
        fb::Error::create(b, &args).as_union_value()
    }

    fn decode(e: fb::Error<'_>) -> Result<Self, FrameError> {
        let devices = e
            .devices()
            .map(|v| {
                v.iter()
                    .map(|d| (d.user().to_owned(), d.device()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Conflict {
            error: ErrorBody::decode_fields(&e),
            current_epoch: e.current_epoch(),
            devices,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family (a Conflict of each kind).
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            ErrorBody {
                code: fb::ErrorCode::NotMember,
                message: "no".into(),
                retry_after_ms: 9,
            }
            .into(),
            Conflict {
                error: ErrorBody {
                    code: fb::ErrorCode::StaleDevices,
                    message: "stale".into(),
                    retry_after_ms: 0,
                },
                current_epoch: 0,
                devices: vec![("b".into(), 1), ("b".into(), 3)],
            }
            .into(),
            Conflict {
                error: ErrorBody {
                    code: fb::ErrorCode::StaleEpoch,
                    message: "epoch".into(),
                    retry_after_ms: 0,
                },
                current_epoch: 7,
                devices: vec![],
            }
            .into(),
        ]
    }

    #[test]
    fn error_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
