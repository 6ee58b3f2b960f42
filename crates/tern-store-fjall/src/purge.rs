//! Deleting a message for everyone: `purge_message` overwrites the record
//! with its tombstone (at once, like any write), and `erase_purged` then
//! erases the old payloads from the files fjall keeps them in, as far as
//! fjall 3.1 lets a user of its API do so. The server runs the erasure in
//! the background after answering, because it rewrites the whole `messages`
//! keyspace.
//!
//! Where a payload lives after the overwrite, and what the erasure does
//! about each:
//! - the `messages` memtable: the overwrite replaces it in memory; the
//!   memtable is then sealed and flushed (`rotate_memtable_and_wait`), so
//!   the table written from it holds only the tombstone;
//! - older tables of the `messages` keyspace (the value as first flushed):
//!   a major compaction rewrites every table of the keyspace. It drops a
//!   shadowed version only below fjall's garbage-collection watermark, which
//!   fjall raises to the latest write when a memtable is sealed; so the
//!   erasure first writes its own record (keyspace `erasures`), making the
//!   tombstones older than the latest write, then seals and compacts;
//! - the replaced table files: deleted when the last version of the tree
//!   that lists them is dropped, which fjall does when a later memtable is
//!   sealed (any keyspace's); so the erasure writes its record again and
//!   seals the `erasures` memtable;
//! - the journal: fjall writes every batch to its journal, and the API
//!   offers no way to rotate or rewrite it. The payload stays in the journal
//!   file it was written to until that file is full (64 MB of later writes),
//!   is rotated, and every keyspace has flushed past it; the store's journal
//!   bound (`store_journal_mib`) makes fjall flush the stragglers, so the file
//!   is deleted within that many MiB of later writes. Erasing at once would
//!   need a journal rotation hook in fjall.
//!
//! Purges share erasures: each overwrite takes a ticket, and an erasure
//! covers every ticket taken before it started; a call finding its tickets
//! covered returns at once, so a burst of purges costs one or two
//! compactions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tern_store::{BackendError, ConversationId, Seq, StoredMessage};

use crate::{codec, layout as keys, lock, Ctx, Inner};

/// Coalesces the erasures of concurrent purges.
#[derive(Default)]
pub(crate) struct Eraser {
    /// Held while an erasure runs.
    running: Mutex<()>,
    /// Purges whose overwrite is committed (a ticket each).
    committed: AtomicU64,
    /// Every ticket up to this one is erased.
    erased: AtomicU64,
}

impl Inner {
    pub(crate) fn purge_message(
        &self,
        id: ConversationId,
        seq: Seq,
        flags: u32,
    ) -> Result<Option<StoredMessage>, BackendError> {
        let tombstone = {
            let _stripe = self.stripe(id);
            let key = keys::msg(id, seq);
            let Some(value) = self.ks.msgs.get(key).ctx("reading message")? else {
                return Ok(None);
            };
            let mut msg = codec::decode_message(id, seq, &value)?;
            msg.payload = bytes::Bytes::new();
            msg.flags = flags;
            let mut batch = self.db.batch();
            batch.insert(&self.ks.msgs, key, codec::message(&msg));
            self.write(batch, "writing a tombstone")?;
            msg
        };
        self.eraser.committed.fetch_add(1, Ordering::SeqCst);
        Ok(Some(tombstone))
    }

    pub(crate) fn erase_purged(&self) -> Result<(), BackendError> {
        self.eraser.erase(self)
    }
}

impl Eraser {
    /// Writes the erasure's record: a write later than every tombstone
    /// (see the module docs for why the erasure needs one).
    fn record(&self, inner: &Inner, upto: u64) -> Result<(), BackendError> {
        let mut batch = inner.db.batch();
        batch.insert(&inner.ks.erasures, "last", upto.to_be_bytes());
        inner.write(batch, "recording an erasure")
    }

    /// Flushes the `messages` memtable and compacts the keyspace, unless
    /// every overwrite committed before this call is erased already.
    fn erase(&self, inner: &Inner) -> Result<(), BackendError> {
        let ticket = self.committed.load(Ordering::SeqCst);
        let _running = lock(&self.running);
        if self.erased.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let upto = self.committed.load(Ordering::SeqCst);
        let msgs = &inner.ks.msgs;
        self.record(inner, upto)?;
        msgs.rotate_memtable_and_wait()
            .ctx("flushing messages after a purge")?;
        msgs.major_compact()
            .ctx("compacting messages after a purge")?;
        self.record(inner, upto)?;
        inner
            .ks
            .erasures
            .rotate_memtable_and_wait()
            .ctx("releasing the replaced message tables")?;
        self.erased.store(upto, Ordering::SeqCst);
        Ok(())
    }
}
