//! The bodies that open a connection: creating an account (`Register`),
//! proving an existing device (`Authenticate`), asking to join an account
//! as a new device (`RequestLink`), and the server's answers. Every proof is
//! a signature over a transcript bound to the connection (see
//! [`crate::auth`]).

use crate::body::{fixed, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Creates an account with its first device; answered by [`Registered`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    pub user: String,
    pub device_name: String,
    pub device_key: [u8; 32],
    pub signature: [u8; 64],
}

impl WireBody for Register {
    const TAG: fb::Body = fb::Body::Register;
    type Table<'a> = fb::Register<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::RegisterArgs {
            user: Some(b.create_string(&self.user)),
            device_name: Some(b.create_string(&self.device_name)),
            device_key: Some(b.create_vector(&self.device_key[..])),
            signature: Some(b.create_vector(&self.signature[..])),
        };
        fb::Register::create(b, &args).as_union_value()
    }

    fn decode(r: fb::Register<'_>) -> Result<Self, FrameError> {
        Ok(Register {
            user: r.user().to_owned(),
            device_name: r.device_name().unwrap_or_default().to_owned(),
            device_key: fixed(r.device_key(), "device_key")?,
            signature: fixed(r.signature(), "signature")?,
        })
    }
}

impl Request for Register {
    type Response = Registered;
}

/// A device accepted: the answer to [`Register`] and to an approved [`RequestLink`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub user: String,
    pub device: u32,
}

impl WireBody for Registered {
    const TAG: fb::Body = fb::Body::Registered;
    type Table<'a> = fb::Registered<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::RegisteredArgs {
            user: Some(b.create_string(&self.user)),
            device: self.device,
        };
        fb::Registered::create(b, &args).as_union_value()
    }

    fn decode(r: fb::Registered<'_>) -> Result<Self, FrameError> {
        Ok(Registered {
            user: r.user().to_owned(),
            device: r.device(),
        })
    }
}

/// Proves possession of a registered device key on this connection;
/// answered by [`Authenticated`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticate {
    pub user: String,
    pub device: u32,
    pub signature: [u8; 64],
}

impl WireBody for Authenticate {
    const TAG: fb::Body = fb::Body::Authenticate;
    type Table<'a> = fb::Authenticate<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::AuthenticateArgs {
            user: Some(b.create_string(&self.user)),
            device: self.device,
            signature: Some(b.create_vector(&self.signature[..])),
        };
        fb::Authenticate::create(b, &args).as_union_value()
    }

    fn decode(a: fb::Authenticate<'_>) -> Result<Self, FrameError> {
        Ok(Authenticate {
            user: a.user().to_owned(),
            device: a.device(),
            signature: fixed(a.signature(), "signature")?,
        })
    }
}

impl Request for Authenticate {
    type Response = Authenticated;
}

/// The connection is authenticated as `user`'s `device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub user: String,
    pub device: u32,
    pub server_time_ms: u64,
}

impl WireBody for Authenticated {
    const TAG: fb::Body = fb::Body::Authenticated;
    type Table<'a> = fb::Authenticated<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::AuthenticatedArgs {
            user: Some(b.create_string(&self.user)),
            device: self.device,
            server_time_ms: self.server_time_ms,
        };
        fb::Authenticated::create(b, &args).as_union_value()
    }

    fn decode(a: fb::Authenticated<'_>) -> Result<Self, FrameError> {
        Ok(Authenticated {
            user: a.user().to_owned(),
            device: a.device(),
            server_time_ms: a.server_time_ms(),
        })
    }
}

/// First frame of a new device joining an existing account: waits until a
/// linked device approves (answered with [`Registered`]) or denies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLink {
    pub user: String,
    pub device_name: String,
    pub device_key: [u8; 32],
    pub signature: [u8; 64],
}

impl WireBody for RequestLink {
    const TAG: fb::Body = fb::Body::RequestLink;
    type Table<'a> = fb::RequestLink<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::RequestLinkArgs {
            user: Some(b.create_string(&self.user)),
            device_name: Some(b.create_string(&self.device_name)),
            device_key: Some(b.create_vector(&self.device_key[..])),
            signature: Some(b.create_vector(&self.signature[..])),
        };
        fb::RequestLink::create(b, &args).as_union_value()
    }

    fn decode(r: fb::RequestLink<'_>) -> Result<Self, FrameError> {
        Ok(RequestLink {
            user: r.user().to_owned(),
            device_name: r.device_name().unwrap_or_default().to_owned(),
            device_key: fixed(r.device_key(), "device_key")?,
            signature: fixed(r.signature(), "signature")?,
        })
    }
}

impl Request for RequestLink {
    type Response = Registered;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            Register {
                user: "a".into(),
                device_name: "phone".into(),
                device_key: [1; 32],
                signature: [2; 64],
            }
            .into(),
            Registered {
                user: "a".into(),
                device: 1,
            }
            .into(),
            Authenticate {
                user: "a".into(),
                device: 1,
                signature: [3; 64],
            }
            .into(),
            Authenticated {
                user: "a".into(),
                device: 1,
                server_time_ms: 5,
            }
            .into(),
            RequestLink {
                user: "a".into(),
                device_name: "laptop".into(),
                device_key: [4; 32],
                signature: [5; 64],
            }
            .into(),
        ]
    }

    #[test]
    fn auth_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
