//! Conformance checks of [`BlobStore`] backends (the module docs of
//! [`crate::blob`] are the contract): resumable uploads, ranges, owners
//! kept apart, atomic completion under a race, deletion. A backend runs
//! them with [`blob_conformance_tests!`](crate::blob_conformance_tests).

// A test suite: a failed unwrap is a failed check, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use crate::blob::{BlobError, BlobId, BlobStatus, BlobStore};

/// Expands to one `#[test]` per blob check, each on a fresh store from
/// `factory` (returning `(store, guard)`; the guard lives until the check
/// ends). With `optional:` the factory returns an `Option` of that, and a
/// check given `None` (a test server that is not installed) passes without
/// running; the factory says so.
#[macro_export]
macro_rules! blob_conformance_tests {
    (optional: $factory:expr $(,)?) => {
        $crate::blob_conformance_tests!(@list optional $factory);
    };
    ($factory:expr $(,)?) => {
        $crate::blob_conformance_tests!(@list plain $factory);
    };
    (@list $mode:ident $factory:expr) => {
        $crate::blob_conformance_tests!(@checks $mode $factory;
            blob_upload_resume_read,
            blob_complete_wrong_total,
            blob_owners_apart,
            blob_delete_abandon,
            blob_complete_race,
            blob_sweep_abandoned,
            blob_usage_and_expiry,
        );
    };
    (@checks plain $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (store, _guard) = ($factory)();
                $crate::conformance::blob::$check(::std::sync::Arc::new(store))
            }
        )+
    };
    (@checks optional $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                let Some((store, _guard)) = ($factory)() else {
                    return;
                };
                $crate::conformance::blob::$check(::std::sync::Arc::new(store))
            }
        )+
    };
}

const ID: BlobId = [7; 16];

fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 256) as u8).collect()
}

fn read_all(s: &dyn BlobStore, id: &BlobId, offset: u64, len: usize) -> Vec<u8> {
    let mut reader = s.reader(id).expect("reader of a complete blob");
    let mut out = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = reader
            .read_at(offset + got as u64, &mut out[got..])
            .expect("read_at");
        if n == 0 {
            break;
        }
        got += n;
    }
    out.truncate(got);
    out
}

/// An upload dropped half way resumes at exactly the bytes it holds, a
/// wrong offset is refused with the right one, and the completed blob reads
/// back by range.
pub fn blob_upload_resume_read(s: Arc<dyn BlobStore>) {
    let data = bytes(300_000);
    assert_eq!(s.status("alice", &ID).unwrap(), BlobStatus::Absent);
    let mut w = s.writer("alice", &ID, 0).expect("a new upload");
    w.write(&data[..120_000]).unwrap();
    assert_eq!(w.len(), 120_000);
    assert!(
        matches!(s.writer("alice", &ID, 120_000), Err(BlobError::Busy)),
        "one writer per upload"
    );
    drop(w);
    assert_eq!(
        s.status("alice", &ID).unwrap(),
        BlobStatus::Partial(120_000)
    );
    assert!(matches!(s.reader(&ID), Err(BlobError::NotFound)));
    for asked in [0, 100_000, 130_000] {
        match s.writer("alice", &ID, asked) {
            Err(BlobError::OffsetMismatch {
                have: 120_000,
                asked: a,
            }) => assert_eq!(a, asked),
            other => panic!("resume at {asked}: {:?}", other.err()),
        }
    }
    let mut w = s.writer("alice", &ID, 120_000).expect("resume");
    w.write(&data[120_000..]).unwrap();
    w.complete(data.len() as u64).expect("complete");
    assert_eq!(
        s.status("alice", &ID).unwrap(),
        BlobStatus::Complete(300_000)
    );
    assert_eq!(s.status("bob", &ID).unwrap(), BlobStatus::Complete(300_000));
    assert_eq!(s.reader(&ID).unwrap().len(), 300_000);
    assert_eq!(read_all(s.as_ref(), &ID, 0, data.len()), data);
    assert_eq!(
        read_all(s.as_ref(), &ID, 250_000, 10),
        data[250_000..250_010]
    );
    assert_eq!(read_all(s.as_ref(), &ID, 299_990, 100), data[299_990..]);
    assert!(read_all(s.as_ref(), &ID, 400_000, 10).is_empty());
    assert!(matches!(
        s.writer("alice", &ID, 0),
        Err(BlobError::AlreadyExists)
    ));
}

/// Completing with a wrong total is refused and keeps the partial.
pub fn blob_complete_wrong_total(s: Arc<dyn BlobStore>) {
    let mut w = s.writer("alice", &ID, 0).unwrap();
    w.write(&bytes(10)).unwrap();
    assert!(matches!(
        w.complete(11),
        Err(BlobError::Incomplete {
            have: 10,
            total: 11
        })
    ));
    assert_eq!(s.status("alice", &ID).unwrap(), BlobStatus::Partial(10));
    let w = s.writer("alice", &ID, 10).unwrap();
    w.complete(10).expect("the right total completes");
    let empty: BlobId = [8; 16];
    s.writer("alice", &empty, 0)
        .unwrap()
        .complete(0)
        .expect("an empty blob");
    assert_eq!(s.status("x", &empty).unwrap(), BlobStatus::Complete(0));
}

/// Each owner has its own partial upload; the first to complete wins.
pub fn blob_owners_apart(s: Arc<dyn BlobStore>) {
    let mut a = s.writer("alice", &ID, 0).unwrap();
    a.write(b"alice's").unwrap();
    drop(a);
    assert_eq!(s.status("bob", &ID).unwrap(), BlobStatus::Absent);
    assert!(matches!(
        s.writer("bob", &ID, 7),
        Err(BlobError::OffsetMismatch { have: 0, .. })
    ));
    let mut b = s.writer("bob", &ID, 0).unwrap();
    b.write(b"bob's").unwrap();
    b.complete(5).expect("bob completes first");
    let a = s.writer("alice", &ID, 7);
    assert!(matches!(a, Err(BlobError::AlreadyExists)));
    assert_eq!(read_all(s.as_ref(), &ID, 0, 100), b"bob's");
}

/// Deleting and abandoning.
pub fn blob_delete_abandon(s: Arc<dyn BlobStore>) {
    s.writer("alice", &ID, 0).unwrap().complete(0).unwrap();
    s.delete(&ID).expect("delete");
    assert!(matches!(s.reader(&ID), Err(BlobError::NotFound)));
    assert!(matches!(s.delete(&ID), Err(BlobError::NotFound)));
    assert_eq!(s.status("alice", &ID).unwrap(), BlobStatus::Absent);
    let mut w = s.writer("alice", &ID, 0).unwrap();
    w.write(b"abc").unwrap();
    drop(w);
    s.abandon("alice", &ID).unwrap();
    s.abandon("alice", &ID).expect("abandoning nothing is fine");
    assert_eq!(s.status("alice", &ID).unwrap(), BlobStatus::Absent);
}

/// Many owners complete one id at once: exactly one wins, and the blob is
/// wholly the winner's bytes.
pub fn blob_complete_race(s: Arc<dyn BlobStore>) {
    for round in 0..super::RACE_ROUNDS {
        let id: BlobId = [round as u8; 16];
        let writers: Vec<_> = (0..super::RACERS)
            .map(|i| {
                let owner = format!("user{i}");
                let mut w = s.writer(&owner, &id, 0).unwrap();
                w.write(&vec![i as u8; 4096]).unwrap();
                w
            })
            .collect();
        let won: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = writers
                .into_iter()
                .map(|w| scope.spawn(move || w.complete(4096)))
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join().expect("no panic") {
                    Ok(()) => true,
                    Err(BlobError::AlreadyExists) => false,
                    Err(e) => panic!("complete race: {e}"),
                })
                .collect()
        });
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}");
        let winner = won.iter().position(|w| *w).unwrap() as u8;
        assert_eq!(read_all(s.as_ref(), &id, 0, 8192), vec![winner; 4096]);
    }
}

/// Sweeping deletes partial uploads written before the cut-off, never one
/// with an open writer, and never a complete blob.
pub fn blob_sweep_abandoned(s: Arc<dyn BlobStore>) {
    use std::time::{Duration, SystemTime};
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let later = SystemTime::now() + Duration::from_secs(3600);
    let done: BlobId = [1; 16];
    s.writer("alice", &done, 0).unwrap().complete(0).unwrap();
    let mut w = s.writer("alice", &ID, 0).unwrap();
    w.write(b"half").unwrap();
    drop(w);
    let open_id: BlobId = [2; 16];
    let mut open = s.writer("bob", &open_id, 0).unwrap();
    open.write(b"busy").unwrap();
    assert_eq!(
        s.sweep_abandoned(hour_ago).unwrap(),
        0,
        "fresh uploads stay"
    );
    assert_eq!(s.status("alice", &ID).unwrap(), BlobStatus::Partial(4));
    assert_eq!(
        s.sweep_abandoned(later).unwrap(),
        1,
        "only the idle partial"
    );
    assert_eq!(s.status("alice", &ID).unwrap(), BlobStatus::Absent);
    assert_eq!(s.status("bob", &open_id).unwrap(), BlobStatus::Partial(4));
    assert_eq!(s.status("x", &done).unwrap(), BlobStatus::Complete(0));
    open.write(b"more").unwrap();
    open.complete(8).expect("the open upload completes");
}

/// Usage counts an owner's complete and partial bytes, never another
/// owner's; the expiry sweep deletes complete blobs completed before the
/// cut-off (never partial uploads), and their bytes leave the usage, as do
/// a deleted blob's.
pub fn blob_usage_and_expiry(s: Arc<dyn BlobStore>) {
    use std::time::{Duration, SystemTime};
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(s.usage("alice").unwrap(), 0);
    let (a, b, c): (BlobId, BlobId, BlobId) = ([1; 16], [2; 16], [3; 16]);
    for (id, len) in [(a, 1000), (b, 500)] {
        let mut w = s.writer("alice", &id, 0).unwrap();
        w.write(&bytes(len)).unwrap();
        w.complete(len as u64).unwrap();
    }
    let mut w = s.writer("alice", &c, 0).unwrap();
    w.write(&bytes(30)).unwrap();
    drop(w);
    let mut w = s.writer("bob", &ID, 0).unwrap();
    w.write(&bytes(70)).unwrap();
    w.complete(70).unwrap();
    assert_eq!(s.usage("alice").unwrap(), 1530, "complete and partial");
    assert_eq!(s.usage("bob").unwrap(), 70);
    s.delete(&b).unwrap();
    assert_eq!(s.usage("alice").unwrap(), 1030, "a deleted blob is freed");
    assert_eq!(s.sweep_expired(hour_ago).unwrap(), 0, "fresh blobs stay");
    assert_eq!(s.status("x", &a).unwrap(), BlobStatus::Complete(1000));
    assert_eq!(s.sweep_expired(later).unwrap(), 2, "both complete blobs");
    assert!(matches!(s.reader(&a), Err(BlobError::NotFound)));
    assert!(matches!(s.reader(&ID), Err(BlobError::NotFound)));
    assert_eq!(s.status("alice", &c).unwrap(), BlobStatus::Partial(30));
    assert_eq!(s.usage("alice").unwrap(), 30, "only the partial is left");
    assert_eq!(s.usage("bob").unwrap(), 0);
    assert_eq!(s.sweep_expired(later).unwrap(), 0);
}
