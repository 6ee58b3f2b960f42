//! Commits too large for a frame (docs/PROTOCOL.md §4.12.1, issue 12): the
//! Welcome and GroupInfo of a 1,500-member MLS group are about 264 KB each,
//! the server's frame cap 256 KiB. [`Client::commit`] sends the largest
//! parts ahead on stage streams of the connection (blob stream op 4) until
//! the rest fits a frame, then the `Commit` naming them by stage id. Parts
//! that fit stay inline, so small groups send exactly what they did.

use bytes::Bytes;
use tern_proto::blob_stream::Status;
use tern_proto::body::mls::{Commit, CommitAccepted, StageId, StagedParts};
use tern_proto::codec::LEN_PREFIX;
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, Frame};

use crate::attachment::transfer::{self, TransferError};
use crate::sdk::{Client, ClientError};

/// How long a stage waits for a live connection.
const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// When to stage again after the server said it stages too much now.
const BUSY_RETRY_MS: u32 = 1000;

/// Which part of a Commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Commit,
    Welcome,
    GroupInfo,
}

impl Client {
    /// Sends an MLS `Commit` (PROTOCOL.md §4.3), staging the parts that do
    /// not fit the server's frame cap first (§4.12.1), largest first. When
    /// the connection changed between staging and the Commit (the server
    /// answers `NotStaged`), it stages again once.
    ///
    /// # Errors
    /// The Commit's own ([`ClientError::Conflict`] with `StaleEpoch`, …);
    /// [`ClientError::Disconnected`] when the connection went while
    /// staging (the Commit was not sent); [`ClientError::TooLarge`] when a
    /// part is larger than the server stages (`max_mls_handshake_bytes`);
    /// [`ClientError::Server`] with `RateLimited` and `retry_after_ms` when
    /// the server stages too much now.
    pub async fn commit(&self, commit: Commit) -> Result<CommitAccepted, ClientError> {
        let mut staged_again = false;
        loop {
            let body = self.stage_parts(commit.clone()).await?;
            match self.request(body).await {
                Err(ClientError::Server { code, .. })
                    if code == ErrorCode::NotStaged && !staged_again =>
                {
                    staged_again = true;
                }
                other => return other,
            }
        }
    }

    /// `commit` with its largest parts staged until the rest fits a frame.
    async fn stage_parts(&self, mut commit: Commit) -> Result<Commit, ClientError> {
        let max = self.max_frame_len();
        while frame_len(&commit) > max {
            let Some(part) = largest_inline(&commit) else {
                break;
            };
            let bytes = take(&mut commit, part);
            let id: StageId = rand::random();
            self.stage(&id, &bytes).await?;
            name(&mut commit.staged, part, id);
        }
        Ok(commit)
    }

    async fn stage(&self, id: &StageId, part: &[u8]) -> Result<(), ClientError> {
        let connection = self
            .blob_connection(CONNECTION_WAIT)
            .await
            .ok_or(ClientError::Disconnected)?;
        transfer::stage(&connection, id, part)
            .await
            .map_err(|e| staging_error(e, part.len()))
    }
}

/// The Commit's request frame length, without the length prefix.
fn frame_len(commit: &Commit) -> usize {
    let frame = Frame::new(1, Body::Commit(Box::new(commit.clone()))).encode();
    frame.len().saturating_sub(LEN_PREFIX)
}

/// The largest part still inline (none when all are staged or empty).
fn largest_inline(commit: &Commit) -> Option<Part> {
    let welcome = commit.welcome.as_ref().map_or(0, Bytes::len);
    [
        (Part::Commit, commit.commit.len()),
        (Part::Welcome, welcome),
        (Part::GroupInfo, commit.group_info.len()),
    ]
    .into_iter()
    .filter(|(_, len)| *len > 0)
    .max_by_key(|(_, len)| *len)
    .map(|(part, _)| part)
}

/// Takes `part`'s bytes out of the inline fields.
fn take(commit: &mut Commit, part: Part) -> Bytes {
    match part {
        Part::Commit => std::mem::take(&mut commit.commit),
        Part::Welcome => commit.welcome.take().unwrap_or_default(),
        Part::GroupInfo => std::mem::take(&mut commit.group_info),
    }
}

fn name(staged: &mut StagedParts, part: Part, id: StageId) {
    let slot = match part {
        Part::Commit => &mut staged.commit,
        Part::Welcome => &mut staged.welcome,
        Part::GroupInfo => &mut staged.group_info,
    };
    *slot = Some(id);
}

fn staging_error(e: TransferError, len: usize) -> ClientError {
    match e {
        TransferError::Refused {
            status: Status::TooLarge,
            value,
            ..
        } => ClientError::TooLarge {
            len,
            max: usize::try_from(value).unwrap_or(usize::MAX),
        },
        TransferError::Refused {
            status: Status::Busy,
            message,
            ..
        } => ClientError::Server {
            code: ErrorCode::RateLimited,
            message,
            retry_after_ms: BUSY_RETRY_MS,
        },
        TransferError::Refused {
            status: Status::Incomplete,
            ..
        }
        | TransferError::NotConnected
        | TransferError::Lost(_) => ClientError::Disconnected,
        TransferError::Refused { message, .. } => ClientError::Unexpected(message),
        TransferError::Malformed | TransferError::Io(_) => ClientError::Unexpected(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn commit(c: usize, w: Option<usize>, g: usize) -> Commit {
        Commit {
            conversation_id: 1,
            epoch: 2,
            commit: Bytes::from(vec![1; c]),
            welcome: w.map(|w| Bytes::from(vec![2; w])),
            group_info: Bytes::from(vec![3; g]),
            added: vec!["bob".into()],
            removed: vec![],
            staged: StagedParts::default(),
        }
    }

    #[test]
    fn the_largest_part_is_staged_first_and_staged_parts_leave_the_frame() {
        let mut c = commit(10, Some(300), 200);
        assert_eq!(largest_inline(&c), Some(Part::Welcome));
        let before = frame_len(&c);
        let welcome = take(&mut c, Part::Welcome);
        assert_eq!(welcome.len(), 300);
        name(&mut c.staged, Part::Welcome, [9; 16]);
        assert!(c.welcome.is_none());
        assert_eq!(largest_inline(&c), Some(Part::GroupInfo));
        assert!(frame_len(&c) < before - 250, "the Welcome left the frame");
        take(&mut c, Part::GroupInfo);
        take(&mut c, Part::Commit);
        assert_eq!(largest_inline(&c), None);
    }
}
