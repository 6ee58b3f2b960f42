//! The blob conformance checks on this crate's blob stores: the filesystem
//! backend (in a temporary directory) and the in-memory one.

mod fs {
    tern_store::blob_conformance_tests!(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = tern_store::blob::fs::FsBlobStore::open(dir.path().join("blobs"))
            .expect("open the blob store");
        (store, dir)
    });
}

mod memory {
    tern_store::blob_conformance_tests!(|| (tern_store::blob::memory::MemBlobStore::new(), ()));
}
