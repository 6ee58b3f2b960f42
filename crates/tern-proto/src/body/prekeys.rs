//! The prekey directory for Olm sessions: a device uploads its identity key,
//! signed, one-time and last-resort prekeys ([`UploadPrekeys`]), a sender
//! claims one bundle per device of a user ([`ClaimPrekeys`] →
//! [`PrekeyBundle`]), and the server reports pool sizes ([`KeyCounts`],
//! also the answer to MLS KeyPackage uploads) and pushes [`KeysLow`].

use bytes::Bytes;
use flatbuffers::WIPOffset;

use crate::body::{bytes_of, fixed, opt_bytes, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// A prekey signed by the device key over the prekey transcript.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPrekeyData {
    pub id: u32,
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

impl SignedPrekeyData {
    fn encode<'a>(&self, b: &mut Builder<'a>) -> WIPOffset<fb::SignedPrekey<'a>> {
        let args = fb::SignedPrekeyArgs {
            id: self.id,
            public_key: Some(b.create_vector(&self.public_key[..])),
            signature: Some(b.create_vector(&self.signature[..])),
        };
        fb::SignedPrekey::create(b, &args)
    }

    fn decode(k: fb::SignedPrekey<'_>) -> Result<Self, FrameError> {
        Ok(SignedPrekeyData {
            id: k.id(),
            public_key: fixed(k.public_key(), "prekey")?,
            signature: fixed(k.signature(), "prekey signature")?,
        })
    }
}

/// A single-use prekey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimePrekeyData {
    pub id: u32,
    pub public_key: [u8; 32],
}

impl OneTimePrekeyData {
    fn encode<'a>(&self, b: &mut Builder<'a>) -> WIPOffset<fb::OneTimePrekey<'a>> {
        let args = fb::OneTimePrekeyArgs {
            id: self.id,
            public_key: Some(b.create_vector(&self.public_key[..])),
        };
        fb::OneTimePrekey::create(b, &args)
    }

    fn decode(k: fb::OneTimePrekey<'_>) -> Result<Self, FrameError> {
        Ok(OneTimePrekeyData {
            id: k.id(),
            public_key: fixed(k.public_key(), "one-time prekey")?,
        })
    }
}

/// A device's key upload; answered by [`KeyCounts`]. `identity` is the
/// Curve25519 identity key with the device key's signature over it (both
/// or neither); at most 100 one-time prekeys per upload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UploadPrekeys {
    pub identity: Option<([u8; 32], [u8; 64])>,
    pub signed_prekey: Option<SignedPrekeyData>,
    pub one_time: Vec<OneTimePrekeyData>,
    pub last_resort: Option<SignedPrekeyData>,
    pub kem_prekey: Option<Bytes>,
}

impl WireBody for UploadPrekeys {
    const TAG: fb::Body = fb::Body::UploadPrekeys;
    type Table<'a> = fb::UploadPrekeys<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let otks: Vec<_> = self.one_time.iter().map(|k| k.encode(b)).collect();
        let args = fb::UploadPrekeysArgs {
            identity_key: self.identity.as_ref().map(|(k, _)| b.create_vector(&k[..])),
            identity_signature: self.identity.as_ref().map(|(_, s)| b.create_vector(&s[..])),
            signed_prekey: self.signed_prekey.as_ref().map(|k| k.encode(b)),
            one_time_prekeys: Some(b.create_vector(&otks)),
            last_resort: self.last_resort.as_ref().map(|k| k.encode(b)),
            kem_prekey: opt_bytes(b, &self.kem_prekey),
        };
        fb::UploadPrekeys::create(b, &args).as_union_value()
    }

    fn decode(u: fb::UploadPrekeys<'_>) -> Result<Self, FrameError> {
        let identity = match (u.identity_key(), u.identity_signature()) {
            (Some(k), Some(s)) => {
                Some((fixed(k, "identity_key")?, fixed(s, "identity_signature")?))
            }
            (None, None) => None,
            _ => {
                return Err(FrameError::Malformed(
                    "identity_key and identity_signature go together".into(),
                ))
            }
        };
        let one_time = u
            .one_time_prekeys()
            .map(|v| {
                v.iter()
                    .map(OneTimePrekeyData::decode)
                    .collect::<Result<_, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(UploadPrekeys {
            identity,
            signed_prekey: u
                .signed_prekey()
                .map(SignedPrekeyData::decode)
                .transpose()?,
            one_time,
            last_resort: u.last_resort().map(SignedPrekeyData::decode).transpose()?,
            kem_prekey: bytes_of(u.kem_prekey()),
        })
    }
}

impl Request for UploadPrekeys {
    type Response = KeyCounts;
}

/// How many one-time prekeys and KeyPackages the device has left: the
/// answer to [`UploadPrekeys`] and to `mls::UploadKeyPackages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCounts {
    pub one_time_prekeys: u32,
    pub key_packages: u32,
}

impl WireBody for KeyCounts {
    const TAG: fb::Body = fb::Body::KeyCounts;
    type Table<'a> = fb::KeyCounts<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::KeyCountsArgs {
            one_time_prekeys: self.one_time_prekeys,
            key_packages: self.key_packages,
        };
        fb::KeyCounts::create(b, &args).as_union_value()
    }

    fn decode(c: fb::KeyCounts<'_>) -> Result<Self, FrameError> {
        Ok(KeyCounts {
            one_time_prekeys: c.one_time_prekeys(),
            key_packages: c.key_packages(),
        })
    }
}

/// Fetches one bundle per active device of `user`, consuming one one-time
/// prekey each; answered by [`PrekeyBundle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimPrekeys {
    pub user: String,
}

impl WireBody for ClaimPrekeys {
    const TAG: fb::Body = fb::Body::ClaimPrekeys;
    type Table<'a> = fb::ClaimPrekeys<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::ClaimPrekeysArgs {
            user: Some(b.create_string(&self.user)),
        };
        fb::ClaimPrekeys::create(b, &args).as_union_value()
    }

    fn decode(c: fb::ClaimPrekeys<'_>) -> Result<Self, FrameError> {
        Ok(ClaimPrekeys {
            user: c.user().to_owned(),
        })
    }
}

impl Request for ClaimPrekeys {
    type Response = PrekeyBundle;
}

/// One device's bundle as handed to a claimer. `one_time_prekey` is absent
/// when none were left; `last_resort` is present then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBundleData {
    pub device: u32,
    pub device_key: [u8; 32],
    pub identity_key: [u8; 32],
    pub identity_signature: [u8; 64],
    pub signed_prekey: Option<SignedPrekeyData>,
    pub one_time_prekey: Option<OneTimePrekeyData>,
    pub last_resort: Option<SignedPrekeyData>,
    pub kem_prekey: Option<Bytes>,
}

impl DeviceBundleData {
    fn encode<'a>(&self, b: &mut Builder<'a>) -> WIPOffset<fb::DeviceBundle<'a>> {
        let args = fb::DeviceBundleArgs {
            device: self.device,
            device_key: Some(b.create_vector(&self.device_key[..])),
            identity_key: Some(b.create_vector(&self.identity_key[..])),
            identity_signature: Some(b.create_vector(&self.identity_signature[..])),
            signed_prekey: self.signed_prekey.as_ref().map(|k| k.encode(b)),
            one_time_prekey: self.one_time_prekey.as_ref().map(|k| k.encode(b)),
            last_resort: self.last_resort.as_ref().map(|k| k.encode(b)),
            kem_prekey: opt_bytes(b, &self.kem_prekey),
        };
        fb::DeviceBundle::create(b, &args)
    }

    fn decode(d: fb::DeviceBundle<'_>) -> Result<Self, FrameError> {
        Ok(DeviceBundleData {
            device: d.device(),
            device_key: fixed(d.device_key(), "device_key")?,
            identity_key: fixed(d.identity_key(), "identity_key")?,
            identity_signature: fixed(d.identity_signature(), "identity_signature")?,
            signed_prekey: d
                .signed_prekey()
                .map(SignedPrekeyData::decode)
                .transpose()?,
            one_time_prekey: d
                .one_time_prekey()
                .map(OneTimePrekeyData::decode)
                .transpose()?,
            last_resort: d.last_resort().map(SignedPrekeyData::decode).transpose()?,
            kem_prekey: bytes_of(d.kem_prekey()),
        })
    }
}

/// The answer to [`ClaimPrekeys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyBundle {
    pub user: String,
    pub devices: Vec<DeviceBundleData>,
}

impl WireBody for PrekeyBundle {
    const TAG: fb::Body = fb::Body::PrekeyBundle;
    type Table<'a> = fb::PrekeyBundle<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self.devices.iter().map(|d| d.encode(b)).collect();
        let args = fb::PrekeyBundleArgs {
            user: Some(b.create_string(&self.user)),
            devices: Some(b.create_vector(&items)),
        };
        fb::PrekeyBundle::create(b, &args).as_union_value()
    }

    fn decode(p: fb::PrekeyBundle<'_>) -> Result<Self, FrameError> {
        let devices = p
            .devices()
            .iter()
            .map(DeviceBundleData::decode)
            .collect::<Result<_, _>>()?;
        Ok(PrekeyBundle {
            user: p.user().to_owned(),
            devices,
        })
    }
}

/// Server push: this device's key pools run low; upload more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysLow {
    pub one_time_prekeys: u32,
    pub key_packages: u32,
}

impl WireBody for KeysLow {
    const TAG: fb::Body = fb::Body::KeysLow;
    type Table<'a> = fb::KeysLow<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::KeysLowArgs {
            one_time_prekeys: self.one_time_prekeys,
            key_packages: self.key_packages,
        };
        fb::KeysLow::create(b, &args).as_union_value()
    }

    fn decode(c: fb::KeysLow<'_>) -> Result<Self, FrameError> {
        Ok(KeysLow {
            one_time_prekeys: c.one_time_prekeys(),
            key_packages: c.key_packages(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        let signed = SignedPrekeyData {
            id: 1,
            public_key: [1; 32],
            signature: [2; 64],
        };
        let otk = OneTimePrekeyData {
            id: 2,
            public_key: [3; 32],
        };
        vec![
            UploadPrekeys {
                identity: Some(([7; 32], [8; 64])),
                signed_prekey: Some(signed.clone()),
                one_time: vec![otk.clone()],
                last_resort: Some(signed.clone()),
                kem_prekey: Some(Bytes::from_static(b"kem")),
            }
            .into(),
            KeyCounts {
                one_time_prekeys: 3,
                key_packages: 4,
            }
            .into(),
            KeysLow {
                one_time_prekeys: 1,
                key_packages: 0,
            }
            .into(),
            ClaimPrekeys { user: "b".into() }.into(),
            PrekeyBundle {
                user: "b".into(),
                devices: vec![DeviceBundleData {
                    device: 1,
                    device_key: [1; 32],
                    identity_key: [2; 32],
                    identity_signature: [3; 64],
                    signed_prekey: Some(signed),
                    one_time_prekey: Some(otk),
                    last_resort: None,
                    kem_prekey: None,
                }],
            }
            .into(),
        ]
    }

    #[test]
    fn prekey_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }

    #[test]
    fn identity_key_without_signature_is_malformed() {
        let mut b = Builder::new();
        let args = fb::UploadPrekeysArgs {
            identity_key: Some(b.create_vector(&[7u8; 32][..])),
            ..Default::default()
        };
        let union = fb::UploadPrekeys::create(&mut b, &args).as_union_value();
        let f = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: 1,
                body_type: fb::Body::UploadPrekeys,
                body: Some(union),
            },
        );
        b.finish(f, None);
        let err =
            crate::frame::Frame::decode(b.finished_data(), &crate::codec::Limits::server_inbound())
                .expect_err("rejects");
        assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");
    }
}
