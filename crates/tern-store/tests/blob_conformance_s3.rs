//! The blob conformance checks on the S3 backend, against a real
//! S3-compatible server: moto (`scripts/install-moto.sh`), started on a
//! free port per check by [`moto::Moto`], each check in its own bucket.
//! Without moto they print a "skipped" line and pass, unless `CI` is set.

#[path = "s3_support/moto.rs"]
mod moto;

mod s3 {
    tern_store::blob_conformance_tests!(optional: || {
        let server = super::moto::Moto::start()?;
        let config = server.bucket("conformance");
        let store = tern_store::blob::s3::S3BlobStore::open(&config).expect("open the S3 store");
        Some((store, server))
    });
}

/// Beyond the conformance checks: what only the S3 backend has (multipart
/// parts, and the errors that name a misconfiguration).
mod s3_only {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use tern_store::blob::s3::{S3BlobStore, PART_LEN};
    use tern_store::blob::{BlobStatus, BlobStore};

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 % 251) as u8).collect()
    }

    /// A blob of several multipart parts, dropped mid-part (the tail goes
    /// into the record) and resumed, reads back whole and by ranges that
    /// cross part boundaries.
    #[test]
    fn multipart_upload_resumes_across_parts() {
        let Some(server) = super::moto::Moto::start() else {
            return;
        };
        let s = S3BlobStore::open(&server.bucket("multipart")).unwrap();
        let id = [9u8; 16];
        let total = 2 * PART_LEN + 12_345;
        let data = bytes(total);
        let first = PART_LEN + 1_000_000;
        let mut w = s.writer("alice", &id, 0).unwrap();
        for piece in data[..first].chunks(256 * 1024) {
            w.write(piece).unwrap();
        }
        drop(w);
        assert_eq!(
            s.status("alice", &id).unwrap(),
            BlobStatus::Partial(first as u64)
        );
        assert_eq!(s.usage("alice").unwrap(), first as u64);
        let mut w = s.writer("alice", &id, first as u64).unwrap();
        for piece in data[first..].chunks(256 * 1024) {
            w.write(piece).unwrap();
        }
        w.complete(total as u64).unwrap();
        assert_eq!(
            s.status("bob", &id).unwrap(),
            BlobStatus::Complete(total as u64)
        );
        assert_eq!(s.usage("alice").unwrap(), total as u64);
        let mut r = s.reader(&id).unwrap();
        assert_eq!(r.len(), total as u64);
        let mut whole = vec![0u8; total];
        let mut at = 0;
        while at < total {
            let n = r.read_at(at as u64, &mut whole[at..]).unwrap();
            assert!(n > 0, "short read at {at}");
            at += n;
        }
        assert!(whole == data, "the blob reads back byte for byte");
        let mut across = vec![0u8; 100];
        let from = PART_LEN - 50;
        assert_eq!(r.read_at(from as u64, &mut across).unwrap(), 100);
        assert_eq!(across, data[from..from + 100]);
        assert_eq!(
            s.sweep_abandoned(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
                .unwrap(),
            0
        );
    }

    /// Two servers of a cluster (two stores on one bucket) complete the
    /// same id at once: exactly one wins (the manifest is created only if
    /// absent), and both then read the winner's bytes.
    #[test]
    fn two_servers_race_for_one_id() {
        let Some(server) = super::moto::Moto::start() else {
            return;
        };
        let config = server.bucket("cluster");
        let stores = [
            S3BlobStore::open(&config).unwrap(),
            S3BlobStore::open(&config).unwrap(),
        ];
        let mut wins = [0u64; 2];
        for round in 0..4u8 {
            let id = [round; 16];
            let won: Vec<bool> = std::thread::scope(|scope| {
                let handles: Vec<_> = stores
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        scope.spawn(move || {
                            let mut w = s.writer(&format!("user{i}"), &id, 0).unwrap();
                            w.write(&[i as u8; 1000]).unwrap();
                            w.complete(1000)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| match h.join().unwrap() {
                        Ok(()) => true,
                        Err(tern_store::blob::BlobError::AlreadyExists) => false,
                        Err(e) => panic!("{e}"),
                    })
                    .collect()
            });
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}");
            let winner = won.iter().position(|w| *w).unwrap() as u8;
            for s in &stores {
                let mut buf = [0u8; 1000];
                assert_eq!(s.reader(&id).unwrap().read_at(0, &mut buf).unwrap(), 1000);
                assert_eq!(buf, [winner; 1000]);
            }
            wins[usize::from(winner)] += 1000;
            for (i, bytes) in wins.iter().enumerate() {
                let usage = stores[1 - i].usage(&format!("user{i}")).unwrap();
                assert_eq!(usage, *bytes, "the winner's blobs only, never the loser's");
            }
        }
    }

    /// Credentials S3 refuses are named as such when the store opens.
    #[test]
    fn refused_credentials_are_named_at_open() {
        let Some(server) = super::moto::Moto::start_checking(true) else {
            return;
        };
        let text = S3BlobStore::open(&server.config("any-bucket"))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("refused the credentials") && text.contains("AWS_ACCESS_KEY_ID"),
            "{text}"
        );
    }

    /// A missing bucket and an endpoint nobody answers are refused when
    /// the store opens, with a message that says what to fix.
    #[test]
    fn misconfiguration_is_named_at_open() {
        let Some(server) = super::moto::Moto::start() else {
            return;
        };
        let e = S3BlobStore::open(&server.config("no-such-bucket")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("\"no-such-bucket\" does not exist") && text.contains("create it"),
            "{text}"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = server.config("x");
        config.endpoint = Some(format!("http://127.0.0.1:{port}"));
        let text = S3BlobStore::open(&config).unwrap_err().to_string();
        assert!(text.contains("is unreachable"), "{text}");
        // The same over https: the TLS client (ring, the platform's roots)
        // is built, and the refused connection is named as such.
        config.endpoint = Some(format!("https://127.0.0.1:{port}"));
        let text = S3BlobStore::open(&config).unwrap_err().to_string();
        assert!(text.contains("is unreachable"), "{text}");
    }
}
