//! The conformance suite on the backends of this crate: one test per check
//! per backend.

mod memory {
    tern_store::conformance_tests!(|| (tern_store::memory::MemStore::new(), ()));
}

/// The fault-injecting wrapper with no faults injected is transparent.
mod faulty {
    use tern_store::faulty::FaultyStore;
    use tern_store::memory::MemStore;

    tern_store::conformance_tests!(|| (FaultyStore::new(MemStore::new()), ()));
}
