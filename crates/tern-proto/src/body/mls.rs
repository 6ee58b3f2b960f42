//! The MLS delivery service: KeyPackage upload and claim, the one
//! [`Commit`] accepted per epoch of a group, and the latest GroupInfo the
//! server keeps for external joins.

use bytes::Bytes;

use crate::body::prekeys::KeyCounts;
use crate::body::{bytes_of, fixed, opt_bytes, owned_strings, strings, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// A device's KeyPackages (single use) and its last-resort one; answered by
/// [`KeyCounts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadKeyPackages {
    pub key_packages: Vec<Bytes>,
    pub last_resort: Option<Bytes>,
}

impl WireBody for UploadKeyPackages {
    const TAG: fb::Body = fb::Body::UploadKeyPackages;
    type Table<'a> = fb::UploadKeyPackages<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self
            .key_packages
            .iter()
            .map(|k| {
                let data = Some(b.create_vector(&k[..]));
                fb::KeyPackageData::create(b, &fb::KeyPackageDataArgs { data })
            })
            .collect();
        let args = fb::UploadKeyPackagesArgs {
            key_packages: Some(b.create_vector(&items)),
            last_resort: opt_bytes(b, &self.last_resort),
        };
        fb::UploadKeyPackages::create(b, &args).as_union_value()
    }

    fn decode(u: fb::UploadKeyPackages<'_>) -> Result<Self, FrameError> {
        let key_packages = u
            .key_packages()
            .map(|v| {
                v.iter()
                    .map(|k| Bytes::copy_from_slice(k.data().bytes()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(UploadKeyPackages {
            key_packages,
            last_resort: bytes_of(u.last_resort()),
        })
    }
}

impl Request for UploadKeyPackages {
    type Response = KeyCounts;
}

/// One KeyPackage per active device of each user (single use, except last
/// resort); answered by [`KeyPackages`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimKeyPackages {
    pub users: Vec<String>,
}

impl WireBody for ClaimKeyPackages {
    const TAG: fb::Body = fb::Body::ClaimKeyPackages;
    type Table<'a> = fb::ClaimKeyPackages<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::ClaimKeyPackagesArgs {
            users: Some(strings(b, &self.users)),
        };
        fb::ClaimKeyPackages::create(b, &args).as_union_value()
    }

    fn decode(c: fb::ClaimKeyPackages<'_>) -> Result<Self, FrameError> {
        Ok(ClaimKeyPackages {
            users: owned_strings(Some(c.users())),
        })
    }
}

impl Request for ClaimKeyPackages {
    type Response = KeyPackages;
}

/// One claimed KeyPackage of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKeyPackageData {
    pub user: String,
    pub device: u32,
    pub key_package: Bytes,
    pub last_resort: bool,
}

/// The answer to [`ClaimKeyPackages`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPackages {
    pub entries: Vec<ClaimedKeyPackageData>,
}

impl WireBody for KeyPackages {
    const TAG: fb::Body = fb::Body::KeyPackages;
    type Table<'a> = fb::KeyPackages<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self
            .entries
            .iter()
            .map(|e| {
                let args = fb::ClaimedKeyPackageArgs {
                    user: Some(b.create_string(&e.user)),
                    device: e.device,
                    key_package: Some(b.create_vector(&e.key_package[..])),
                    last_resort: e.last_resort,
                };
                fb::ClaimedKeyPackage::create(b, &args)
            })
            .collect();
        let args = fb::KeyPackagesArgs {
            entries: Some(b.create_vector(&items)),
        };
        fb::KeyPackages::create(b, &args).as_union_value()
    }

    fn decode(k: fb::KeyPackages<'_>) -> Result<Self, FrameError> {
        let entries = k
            .entries()
            .iter()
            .map(|e| ClaimedKeyPackageData {
                user: e.user().to_owned(),
                device: e.device(),
                key_package: Bytes::copy_from_slice(e.key_package().bytes()),
                last_resort: e.last_resort(),
            })
            .collect();
        Ok(KeyPackages { entries })
    }
}

/// An MLS commit offered for one epoch; answered by [`CommitAccepted`].
/// Exactly one Commit is accepted per epoch; `added`/`removed` change the
/// server's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub conversation_id: u64,
    pub epoch: u64,
    /// Empty when staged ([`StagedParts::commit`]).
    pub commit: Bytes,
    /// `None` when staged ([`StagedParts::welcome`]).
    pub welcome: Option<Bytes>,
    /// Empty when staged ([`StagedParts::group_info`]).
    pub group_info: Bytes,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The parts sent ahead on stage streams of the same connection
    /// (docs/PROTOCOL.md §4.12.1); none for a Commit that fits a frame.
    pub staged: StagedParts,
}

/// A stage id: the 16 random bytes a client names a staged part by
/// ([`crate::blob_stream::Op::Stage`]).
pub type StageId = [u8; crate::blob_stream::BLOB_ID_LEN];

/// Which parts of a [`Commit`] were staged (sent ahead on a stage stream,
/// docs/PROTOCOL.md §4.12.1) instead of carried inline, by stage id. A
/// staged part's inline field is empty (`commit`, `group_info`) or absent
/// (`welcome`); the server puts the staged bytes there before the Commit
/// runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StagedParts {
    pub commit: Option<StageId>,
    pub welcome: Option<StageId>,
    pub group_info: Option<StageId>,
}

impl StagedParts {
    /// Whether no part is staged.
    pub fn is_empty(&self) -> bool {
        self.commit.is_none() && self.welcome.is_none() && self.group_info.is_none()
    }
}

/// A stage id field: absent, or exactly 16 bytes.
fn stage_id(
    v: Option<flatbuffers::Vector<'_, u8>>,
    what: &str,
) -> Result<Option<StageId>, FrameError> {
    v.map(|v| fixed(v, what)).transpose()
}

impl WireBody for Commit {
    const TAG: fb::Body = fb::Body::Commit;
    type Table<'a> = fb::Commit<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let mut id = |v: Option<StageId>| v.map(|v| b.create_vector(&v[..]));
        let (commit_stage_id, welcome_stage_id, group_info_stage_id) = (
            id(self.staged.commit),
            id(self.staged.welcome),
            id(self.staged.group_info),
        );
        let args = fb::CommitArgs {
            conversation_id: self.conversation_id,
            epoch: self.epoch,
            commit: Some(b.create_vector(&self.commit[..])),
            welcome: opt_bytes(b, &self.welcome),
            group_info: Some(b.create_vector(&self.group_info[..])),
            added: Some(strings(b, &self.added)),
            removed: Some(strings(b, &self.removed)),
            commit_stage_id,
            welcome_stage_id,
            group_info_stage_id,
        };
        fb::Commit::create(b, &args).as_union_value()
    }

    fn decode(c: fb::Commit<'_>) -> Result<Self, FrameError> {
        let staged = StagedParts {
            commit: stage_id(c.commit_stage_id(), "Commit.commit_stage_id")?,
            welcome: stage_id(c.welcome_stage_id(), "Commit.welcome_stage_id")?,
            group_info: stage_id(c.group_info_stage_id(), "Commit.group_info_stage_id")?,
        };
        Ok(Commit {
            conversation_id: c.conversation_id(),
            epoch: c.epoch(),
            commit: Bytes::copy_from_slice(c.commit().bytes()),
            welcome: bytes_of(c.welcome()),
            group_info: Bytes::copy_from_slice(c.group_info().bytes()),
            added: owned_strings(c.added()),
            removed: owned_strings(c.removed()),
            staged,
        })
    }
}

impl Request for Commit {
    type Response = CommitAccepted;
}

/// A [`Commit`] accepted: the group's epoch after it and the seq where it
/// sits in the conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitAccepted {
    pub conversation_id: u64,
    pub epoch: u64,
    pub seq: u64,
}

impl WireBody for CommitAccepted {
    const TAG: fb::Body = fb::Body::CommitAccepted;
    type Table<'a> = fb::CommitAccepted<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::CommitAcceptedArgs {
            conversation_id: self.conversation_id,
            epoch: self.epoch,
            seq: self.seq,
        };
        fb::CommitAccepted::create(b, &args).as_union_value()
    }

    fn decode(c: fb::CommitAccepted<'_>) -> Result<Self, FrameError> {
        Ok(CommitAccepted {
            conversation_id: c.conversation_id(),
            epoch: c.epoch(),
            seq: c.seq(),
        })
    }
}

/// Fetches the latest GroupInfo of a group the caller belongs to;
/// answered by [`GroupInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetGroupInfo {
    pub conversation_id: u64,
}

impl WireBody for GetGroupInfo {
    const TAG: fb::Body = fb::Body::GetGroupInfo;
    type Table<'a> = fb::GetGroupInfo<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::GetGroupInfoArgs {
            conversation_id: self.conversation_id,
        };
        fb::GetGroupInfo::create(b, &args).as_union_value()
    }

    fn decode(g: fb::GetGroupInfo<'_>) -> Result<Self, FrameError> {
        Ok(GetGroupInfo {
            conversation_id: g.conversation_id(),
        })
    }
}

impl Request for GetGroupInfo {
    type Response = GroupInfo;
}

/// The answer to [`GetGroupInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub conversation_id: u64,
    pub epoch: u64,
    pub group_info: Bytes,
}

impl WireBody for GroupInfo {
    const TAG: fb::Body = fb::Body::GroupInfo;
    type Table<'a> = fb::GroupInfo<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::GroupInfoArgs {
            conversation_id: self.conversation_id,
            epoch: self.epoch,
            group_info: Some(b.create_vector(&self.group_info[..])),
        };
        fb::GroupInfo::create(b, &args).as_union_value()
    }

    fn decode(g: fb::GroupInfo<'_>) -> Result<Self, FrameError> {
        Ok(GroupInfo {
            conversation_id: g.conversation_id(),
            epoch: g.epoch(),
            group_info: bytes_of(g.group_info()).unwrap_or_default(),
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
            UploadKeyPackages {
                key_packages: vec![Bytes::from_static(b"kp1")],
                last_resort: Some(Bytes::from_static(b"lr")),
            }
            .into(),
            ClaimKeyPackages {
                users: vec!["b".into(), "c".into()],
            }
            .into(),
            KeyPackages {
                entries: vec![ClaimedKeyPackageData {
                    user: "b".into(),
                    device: 1,
                    key_package: Bytes::from_static(b"kp"),
                    last_resort: true,
                }],
            }
            .into(),
            Commit {
                conversation_id: 1,
                epoch: 2,
                commit: Bytes::from_static(b"c"),
                welcome: Some(Bytes::from_static(b"w")),
                group_info: Bytes::from_static(b"gi"),
                added: vec!["b".into()],
                removed: vec![],
                staged: StagedParts::default(),
            }
            .into(),
            CommitAccepted {
                conversation_id: 1,
                epoch: 3,
                seq: 4,
            }
            .into(),
            GetGroupInfo { conversation_id: 1 }.into(),
            GroupInfo {
                conversation_id: 1,
                epoch: 3,
                group_info: Bytes::from_static(b"gi"),
            }
            .into(),
        ]
    }

    #[test]
    fn mls_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }

    /// A Commit naming staged parts (PROTOCOL.md §4.12.1) round-trips; a
    /// stage id of another length is malformed.
    #[test]
    fn staged_parts_round_trip_and_a_short_stage_id_is_malformed() {
        let staged = Commit {
            conversation_id: 1,
            epoch: 2,
            commit: Bytes::from_static(b"c"),
            welcome: None,
            group_info: Bytes::new(),
            added: vec!["b".into()],
            removed: vec![],
            staged: StagedParts {
                commit: None,
                welcome: Some([7; 16]),
                group_info: Some([8; 16]),
            },
        };
        crate::body::tests::roundtrip_all(vec![staged.into()]);

        let mut b = flatbuffers::FlatBufferBuilder::new();
        let args = fb::CommitArgs {
            commit: Some(b.create_vector(&[1u8][..])),
            group_info: Some(b.create_vector(&[2u8][..])),
            welcome_stage_id: Some(b.create_vector(&[3u8; 15][..])),
            ..Default::default()
        };
        let table = fb::Commit::create(&mut b, &args);
        b.finish(table, None);
        let commit = flatbuffers::root::<fb::Commit>(b.finished_data()).unwrap();
        let err = Commit::decode(commit).unwrap_err();
        assert!(
            err.to_string()
                .contains("welcome_stage_id must be 16 bytes"),
            "{err}"
        );
    }
}
