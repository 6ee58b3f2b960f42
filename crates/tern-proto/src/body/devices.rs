//! An account's devices: the [`LinkPrompt`] pushed to linked devices when
//! a new one asks to join and their [`ApproveLink`] decision, listing and
//! revoking devices, and the [`DeviceListChanged`] push. (The new device's
//! own `RequestLink` opens its connection, so it lives in
//! [`super::auth`].)

use crate::body::messaging::Done;
use crate::body::{fixed, missing, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Server push to the account's devices: a new device asks to be linked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPrompt {
    pub link_id: u64,
    pub user: String,
    pub device_name: String,
    pub device_key: [u8; 32],
}

impl WireBody for LinkPrompt {
    const TAG: fb::Body = fb::Body::LinkPrompt;
    type Table<'a> = fb::LinkPrompt<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::LinkPromptArgs {
            link_id: self.link_id,
            user: Some(b.create_string(&self.user)),
            device_name: Some(b.create_string(&self.device_name)),
            device_key: Some(b.create_vector(&self.device_key[..])),
        };
        fb::LinkPrompt::create(b, &args).as_union_value()
    }

    fn decode(r: fb::LinkPrompt<'_>) -> Result<Self, FrameError> {
        Ok(LinkPrompt {
            link_id: r.link_id(),
            user: r.user().to_owned(),
            device_name: r.device_name().unwrap_or_default().to_owned(),
            device_key: fixed(r.device_key(), "device_key")?,
        })
    }
}

/// A linked device's decision on a [`LinkPrompt`]; answered by [`Done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApproveLink {
    pub link_id: u64,
    pub approve: bool,
}

impl WireBody for ApproveLink {
    const TAG: fb::Body = fb::Body::ApproveLink;
    type Table<'a> = fb::ApproveLink<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::ApproveLinkArgs {
            link_id: self.link_id,
            approve: self.approve,
        };
        fb::ApproveLink::create(b, &args).as_union_value()
    }

    fn decode(a: fb::ApproveLink<'_>) -> Result<Self, FrameError> {
        Ok(ApproveLink {
            link_id: a.link_id(),
            approve: a.approve(),
        })
    }
}

impl Request for ApproveLink {
    type Response = Done;
}

/// Lists `user`'s active devices; answered by [`DeviceList`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListDevices {
    pub user: String,
}

impl WireBody for ListDevices {
    const TAG: fb::Body = fb::Body::ListDevices;
    type Table<'a> = fb::ListDevices<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::ListDevicesArgs {
            user: Some(b.create_string(&self.user)),
        };
        fb::ListDevices::create(b, &args).as_union_value()
    }

    fn decode(l: fb::ListDevices<'_>) -> Result<Self, FrameError> {
        Ok(ListDevices {
            user: l.user().to_owned(),
        })
    }
}

impl Request for ListDevices {
    type Response = DeviceList;
}

/// One device as listed in a [`DeviceList`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfoData {
    pub device: u32,
    pub name: String,
    pub device_key: [u8; 32],
    pub created_ms: u64,
}

/// The answer to [`ListDevices`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    pub user: String,
    pub devices: Vec<DeviceInfoData>,
}

impl WireBody for DeviceList {
    const TAG: fb::Body = fb::Body::DeviceList;
    type Table<'a> = fb::DeviceList<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self
            .devices
            .iter()
            .map(|d| {
                let args = fb::DeviceInfoArgs {
                    device: d.device,
                    name: Some(b.create_string(&d.name)),
                    device_key: Some(b.create_vector(&d.device_key[..])),
                    created_ms: d.created_ms,
                };
                fb::DeviceInfo::create(b, &args)
            })
            .collect();
        let args = fb::DeviceListArgs {
            user: Some(b.create_string(&self.user)),
            devices: Some(b.create_vector(&items)),
        };
        fb::DeviceList::create(b, &args).as_union_value()
    }

    fn decode(l: fb::DeviceList<'_>) -> Result<Self, FrameError> {
        let devices = l
            .devices()
            .iter()
            .map(|d| {
                let key = d.device_key().ok_or_else(|| missing("device_key"))?;
                Ok(DeviceInfoData {
                    device: d.device(),
                    name: d.name().unwrap_or_default().to_owned(),
                    device_key: fixed(key, "device_key")?,
                    created_ms: d.created_ms(),
                })
            })
            .collect::<Result<_, FrameError>>()?;
        Ok(DeviceList {
            user: l.user().to_owned(),
            devices,
        })
    }
}

/// Revokes one of the caller's own devices; answered by [`Done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeDevice {
    pub device: u32,
}

impl WireBody for RevokeDevice {
    const TAG: fb::Body = fb::Body::RevokeDevice;
    type Table<'a> = fb::RevokeDevice<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        fb::RevokeDevice::create(
            b,
            &fb::RevokeDeviceArgs {
                device: self.device,
            },
        )
        .as_union_value()
    }

    fn decode(r: fb::RevokeDevice<'_>) -> Result<Self, FrameError> {
        Ok(RevokeDevice { device: r.device() })
    }
}

impl Request for RevokeDevice {
    type Response = Done;
}

/// Server push: a user's device set changed; re-fetch before encrypting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceListChanged {
    pub user: String,
    pub devices: Vec<u32>,
}

impl WireBody for DeviceListChanged {
    const TAG: fb::Body = fb::Body::DeviceListChanged;
    type Table<'a> = fb::DeviceListChanged<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::DeviceListChangedArgs {
            user: Some(b.create_string(&self.user)),
            devices: Some(b.create_vector(&self.devices)),
        };
        fb::DeviceListChanged::create(b, &args).as_union_value()
    }

    fn decode(c: fb::DeviceListChanged<'_>) -> Result<Self, FrameError> {
        Ok(DeviceListChanged {
            user: c.user().to_owned(),
            devices: c.devices().map(|v| v.iter().collect()).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            LinkPrompt {
                link_id: 9,
                user: "a".into(),
                device_name: "laptop".into(),
                device_key: [4; 32],
            }
            .into(),
            ApproveLink {
                link_id: 9,
                approve: true,
            }
            .into(),
            ListDevices { user: "a".into() }.into(),
            DeviceList {
                user: "a".into(),
                devices: vec![DeviceInfoData {
                    device: 1,
                    name: "p".into(),
                    device_key: [6; 32],
                    created_ms: 5,
                }],
            }
            .into(),
            RevokeDevice { device: 2 }.into(),
            DeviceListChanged {
                user: "a".into(),
                devices: vec![1, 3],
            }
            .into(),
        ]
    }

    #[test]
    fn device_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
