//! Integration tests of the embedded backend [`FjallStore`]: the shared
//! conformance suite, group commit batching, reopening (messages, and the
//! devices / key directory / epochs), a real process crash, and journal
//! recovery after deliberate truncation and byte flips.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tern_store::conformance::{self, message};
use tern_store::prelude::*;
use tern_store::{
    AppendOutcome, CommitOutcome, CommitRecord, ConversationKind, ConversationRecord,
    CreateOutcome, DeviceKeysUpdate, KeyPool, PoolKey, SignedPrekey, Store, StoredMessage,
};
use tern_store_fjall::{FjallOptions, FjallStore, OpenError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn open(dir: &Path) -> Result<FjallStore, OpenError> {
    FjallStore::open(dir)
}

async fn create_group(s: &dyn Store, id: u64) -> TestResult {
    let record = conformance::conversation(id, ConversationKind::Group, "alice", &["alice", "bob"]);
    assert_eq!(
        s.create_conversation(&record, None).await?,
        CreateOutcome::Created
    );
    Ok(())
}

/// The shared conformance suite, one test per check, each on a fresh
/// store in its own temporary directory.
mod conformance_suite {
    tern_store::conformance_tests!(|| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = super::open(dir.path()).unwrap_or_else(|e| panic!("open: {e}"));
        (store, dir)
    });
}

/// 200 tasks append to their own conversation, then all persist at once:
/// every persist succeeds, and fewer fsyncs than requests were needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batches_concurrent_persists() -> TestResult {
    const TASKS: u64 = 200;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(dir.path())?);
    for id in 1..=TASKS {
        create_group(store.as_ref(), id).await?;
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let mut tasks = Vec::new();
    for id in 1..=TASKS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let outcome = store.append_message(&message(id, 1, id)).await?;
            store.persist().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(outcome)
        }));
    }
    for task in tasks {
        let outcome = task.await?.map_err(|e| e.to_string())?;
        assert_eq!(outcome, AppendOutcome::Appended);
    }
    let (fsyncs, served) = store.commit_stats();
    eprintln!("group commit: {served} persist requests served by {fsyncs} fsyncs");
    assert_eq!(served, TASKS);
    assert!(
        fsyncs >= 1 && fsyncs < served,
        "no batching: {fsyncs} fsyncs for {served} requests"
    );
    Ok(())
}

/// Under load the commit thread spaces its syncs by the configured
/// interval: persists issued while it waits (here: within 300 ms of the
/// last sync) all share the next sync, where back-to-back syncing could
/// need up to one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_are_spaced_by_the_interval_under_load() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = FjallOptions {
        sync_interval: std::time::Duration::from_millis(300),
        ..FjallOptions::default()
    };
    let store = Arc::new(FjallStore::open_with(dir.path(), options)?);
    for id in 1..=10 {
        create_group(store.as_ref(), id).await?;
    }
    store.persist().await?;
    let (first, _) = store.commit_stats();
    let mut persists = Vec::new();
    for id in 1..=10 {
        let store = Arc::clone(&store);
        persists.push(tokio::spawn(async move {
            store.append_message(&message(id, 1, id)).await?;
            store.persist().await?;
            Ok::<_, tern_store::AppendError>(())
        }));
    }
    for persist in persists {
        persist.await??;
    }
    let (fsyncs, served) = store.commit_stats();
    assert_eq!(served, 11);
    assert_eq!(
        fsyncs - first,
        1,
        "ten persists inside the interval took {} syncs",
        fsyncs - first
    );
    Ok(())
}

/// A persist waits for writes that returned before it, even when it is issued
/// from another task, and a store with no writes still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_from_many_tasks_then_drop() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(dir.path())?);
    let (before, _) = store.commit_stats();
    assert_eq!(before, 0);
    store.persist().await?;
    let (fsyncs, served) = store.commit_stats();
    assert_eq!((fsyncs, served), (1, 1));
    drop(store);
    // The commit thread and the database are gone: the directory reopens.
    let again = open(dir.path())?;
    again.persist().await?;
    Ok(())
}

async fn write_everything(s: &dyn Store) -> TestResult {
    s.create_account("alice", conformance::device(1)).await?;
    let direct = conformance::conversation(5, ConversationKind::Direct, "alice", &["alice", "bob"]);
    s.create_conversation(&direct, Some(b"alice|bob")).await?;
    create_group(s, 6).await?;
    s.update_members(6, &["carol".to_string()], &["bob".to_string()])
        .await?;
    for seq in 1..=20 {
        let mut msg = message(5, seq, seq);
        msg.expires_at_ms = if seq <= 3 { 50 } else { u64::MAX };
        s.append_message(&msg).await?;
    }
    s.advance_cursor("alice", 1, 5, 12).await?;
    assert_eq!(s.sweep_expired(100, 10).await?, 3);
    Ok(())
}

async fn check_everything(s: &dyn Store, head: u64) -> TestResult {
    assert_eq!(s.devices("alice").await?, vec![conformance::device(1)]);
    let other = conformance::conversation(99, ConversationKind::Direct, "bob", &["alice", "bob"]);
    let existing = s.create_conversation(&other, Some(b"alice|bob")).await?;
    assert!(
        matches!(existing, CreateOutcome::Existing(ref r) if r.id == 5 && r.head_seq == head),
        "{existing:?}"
    );
    let group = s.conversation(6).await?.ok_or("group lost")?;
    assert_eq!(
        group.members.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["alice", "carol"]
    );
    assert_eq!(s.user_conversations("alice").await?, vec![5, 6]);
    assert_eq!(s.user_conversations("bob").await?, vec![5]);
    assert_eq!(s.user_conversations("carol").await?, vec![6]);
    let msgs = s.messages(5, 0, 100, 0).await?;
    assert_eq!(
        msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (4..=head).collect::<Vec<_>>()
    );
    assert_eq!(msgs.first(), Some(&message(5, 4, 4)));
    assert_eq!(
        s.cursors("alice", 1).await?,
        [(5, 12)].into_iter().collect()
    );
    let dup = s.append_message(&message(5, 21, 7)).await?;
    assert!(
        matches!(dup, AppendOutcome::Duplicate(ref m) if m.seq == 7),
        "idempotency keys survive: {dup:?}"
    );
    Ok(())
}

/// Everything persisted survives drop + reopen, twice (the second session
/// appends to a journal recovered by the first reopen).
#[tokio::test]
async fn reopen_keeps_persisted_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = open(dir.path())?;
        write_everything(&store).await?;
        store.persist().await?;
    }
    {
        let store = open(dir.path())?;
        check_everything(&store, 20).await?;
        store.append_message(&message(5, 21, 21)).await?;
        store.persist().await?;
    }
    let store = open(dir.path())?;
    check_everything(&store, 21).await?;
    Ok(())
}

fn pool_keys(ids: std::ops::RangeInclusive<u64>) -> Vec<PoolKey> {
    ids.map(|id| PoolKey {
        id,
        key: Bytes::from(format!("key-{id}")),
    })
    .collect()
}

const IDENTITY: ([u8; 32], [u8; 64]) = ([0x1d; 32], [0x5e; 64]);

fn signed_prekey() -> SignedPrekey {
    SignedPrekey {
        id: 1,
        public: [0x51; 32],
        signature: [0x52; 64],
    }
}

fn group_commit(id: u64, epoch: u64, head: u64) -> CommitRecord {
    CommitRecord {
        conversation_id: id,
        epoch,
        group_info: Bytes::from(format!("group info {}", epoch + 1)),
        add: vec!["carol".to_owned()],
        remove: vec![],
        commit: message(id, head + 1, 1_000 + epoch),
        welcome: Some(message(id, head + 2, 2_000 + epoch)),
        fence: None,
    }
}

/// Devices, revocations, the key directory and MLS epochs survive drop +
/// reopen: ids are not reused, claimed keys stay claimed, the CAS resumes.
#[tokio::test]
async fn reopen_keeps_key_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let last = PoolKey {
        id: 99,
        key: Bytes::from_static(b"last resort"),
    };
    {
        let store = open(dir.path())?;
        store
            .create_account("alice", conformance::device(1))
            .await?;
        assert_eq!(store.add_device("alice", "two", [2; 32], 2).await?, Some(2));
        assert_eq!(
            store.add_device("alice", "three", [3; 32], 3).await?,
            Some(3)
        );
        assert!(store.revoke_device("alice", 3).await?);
        let update = DeviceKeysUpdate {
            identity: Some(IDENTITY),
            signed_prekey: Some(signed_prekey()),
            kem_prekey: None,
        };
        assert!(store.put_device_keys("alice", 2, &update).await?);
        for pool in KeyPool::ALL {
            let keys = pool_keys(1..=5);
            assert_eq!(
                store.put_keys("alice", 2, pool, &keys, Some(&last)).await?,
                5
            );
            let claimed = store.claim_key("alice", 2, pool).await?.ok_or("empty")?;
            assert_eq!(claimed.key, pool_keys(1..=1)[0]);
        }
        create_group(&store, 6).await?;
        let accepted = store.accept_commit(&group_commit(6, 0, 0)).await?;
        assert!(matches!(accepted, CommitOutcome::Accepted(_)));
        store.persist().await?;
    }
    let store = open(dir.path())?;
    assert_eq!(
        store
            .devices("alice")
            .await?
            .iter()
            .map(|d| d.device)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        store.add_device("alice", "four", [4; 32], 4).await?,
        Some(4),
        "3 stays used"
    );
    let keys = store.device_keys("alice", 2).await?.ok_or("keys lost")?;
    assert_eq!((keys.identity_key, keys.identity_signature), IDENTITY);
    assert_eq!(keys.signed_prekey, Some(signed_prekey()));
    for pool in KeyPool::ALL {
        assert_eq!(store.key_count("alice", 2, pool).await?, 4);
        let claimed = store.claim_key("alice", 2, pool).await?.ok_or("lost")?;
        assert_eq!(
            claimed.key,
            pool_keys(2..=2)[0],
            "claimed keys stay claimed"
        );
        assert_eq!(claimed.remaining, 3);
    }
    assert_eq!(store.group_epoch(6).await?, 1);
    assert_eq!(
        store.group_info(6).await?,
        Some(Bytes::from_static(b"group info 1"))
    );
    let record = store.conversation(6).await?.ok_or("group lost")?;
    assert!(record.members.contains("carol"));
    assert_eq!(record.head_seq, 2, "Commit and Welcome were stored");
    assert_eq!(
        store.accept_commit(&group_commit(6, 0, 2)).await?,
        CommitOutcome::Stale { current: 1 }
    );
    Ok(())
}

#[tokio::test]
async fn second_open_is_locked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let _first = open(dir.path())?;
    match open(dir.path()) {
        Err(e @ OpenError::Locked { .. }) => {
            assert!(e.to_string().contains("another process"), "{e}")
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second open of a locked directory succeeded"),
    }
    Ok(())
}

#[tokio::test]
async fn unusable_path_is_a_typed_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x")?;
    match open(&file) {
        Err(e) => eprintln!("typed error as expected: {e}"),
        Ok(_) => panic!("opened a store inside a regular file"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A real crash: a child process appends, persists and aborts.
// ---------------------------------------------------------------------------

const CRASH_DIR_ENV: &str = "TERN_TEST_CRASH_DIR";
const CRASH_PERSISTED: u64 = 50;

/// Child side of `crash_keeps_persisted_writes`; a no-op in a normal run.
#[tokio::test]
async fn crash_child() -> TestResult {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return Ok(());
    };
    let store = open(Path::new(&dir))?;
    create_group(&store, 1).await?;
    for seq in 1..=CRASH_PERSISTED {
        store.append_message(&message(1, seq, seq)).await?;
    }
    store.persist().await?;
    println!("PERSISTED {CRASH_PERSISTED}");
    for seq in CRASH_PERSISTED + 1..=CRASH_PERSISTED + 10 {
        store.append_message(&message(1, seq, seq)).await?;
    }
    // No destructors, no shutdown sync: like a kill -9 after the ack.
    std::process::abort();
}

#[tokio::test]
async fn crash_keeps_persisted_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR_ENV, dir.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("PERSISTED 50"),
        "child did not persist: {stdout}"
    );
    assert!(!output.status.success(), "child should have aborted");
    let store = open(dir.path())?;
    let recovered = store.messages(1, 0, 1000, 0).await?;
    assert!(
        recovered.len() as u64 >= CRASH_PERSISTED,
        "lost acknowledged writes: {}",
        recovered.len()
    );
    let head = store
        .conversation(1)
        .await?
        .ok_or("conversation lost")?
        .head_seq;
    assert_eq!(
        head,
        recovered.len() as u64,
        "head and messages out of step"
    );
    for (i, msg) in recovered.iter().enumerate() {
        assert_eq!(msg, &message(1, i as u64 + 1, i as u64 + 1));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Journal recovery after deliberate damage
// ---------------------------------------------------------------------------

const FIXTURE_MESSAGES: u64 = 40;

/// One conversation, 40 messages, each persisted on its own (one journal
/// batch each), then a clean shutdown. Returns the messages sent.
async fn build_fixture(dir: &Path) -> Result<Vec<StoredMessage>, Box<dyn std::error::Error>> {
    let store = open(dir)?;
    create_group(&store, 1).await?;
    store.persist().await?;
    let mut sent = Vec::new();
    for seq in 1..=FIXTURE_MESSAGES {
        let msg = message(1, seq, seq);
        store.append_message(&msg).await?;
        store.persist().await?;
        sent.push(msg);
    }
    Ok(sent)
}

/// fjall keeps its journals as `<n>.jnl` at the top of the data directory.
fn journals(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jnl") {
            found.push(path);
        }
    }
    found.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
    });
    Ok(found)
}

/// The active journal and the length of its written part (journals are
/// preallocated with zeros; every batch ends with a non-zero trailer).
fn active_journal(dir: &Path) -> Result<(PathBuf, usize), Box<dyn std::error::Error>> {
    let path = journals(dir)?.pop().ok_or("no journal file")?;
    let bytes = std::fs::read(&path)?;
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Ok((path, end))
}

/// Drops most of the zeroed preallocation of a closed journal (keeping 4 KiB
/// of zeros after the data) so that each damaged copy is cheap to make.
fn shrink_preallocation(journal: &Path, end: usize) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(journal)?;
    file.set_len(end as u64 + 4096)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Opens a damaged copy. On success the store must hold a prefix of
/// `expected` with a matching head and must accept the next append, which is
/// then added to `expected` (cut to the prefix); returns the prefix length.
async fn recover(
    dir: &Path,
    expected: &mut Vec<StoredMessage>,
) -> Result<Option<usize>, Box<dyn std::error::Error>> {
    let store = match open(dir) {
        Ok(store) => store,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            eprintln!("  refused to open: {e}");
            return Ok(None);
        }
    };
    let got = store.messages(1, 0, 1000, 0).await?;
    let kept = got.len();
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert!(
        expected.get(..kept) == Some(got.as_slice()),
        "not an intact prefix: {seqs:?}"
    );
    let record: Option<ConversationRecord> = store.conversation(1).await?;
    match record {
        Some(record) => assert_eq!(
            record.head_seq, kept as u64,
            "head and messages out of step"
        ),
        None => assert_eq!(kept, 0, "messages without their conversation"),
    }
    expected.truncate(kept);
    if kept > 0 {
        let next = message(1, kept as u64 + 1, 1_000 + kept as u64);
        assert_eq!(store.append_message(&next).await?, AppendOutcome::Appended);
        store.persist().await?;
        expected.push(next);
    }
    Ok(Some(kept))
}

/// Torn tails are discarded: every batch before the cut survives, the store
/// opens and keeps working (also after a further reopen).
#[tokio::test]
async fn recovery_after_truncated_journal_tail() -> TestResult {
    let base = tempfile::tempdir()?;
    let pristine = base.path().join("pristine");
    let sent = build_fixture(&pristine).await?;
    let (journal, end) = active_journal(&pristine)?;
    shrink_preallocation(&journal, end)?;
    for cut in [1usize, 7, 13, 40, 64, 1_000, end / 2, end] {
        let dir = base.path().join(format!("cut-{cut}"));
        copy_dir(&pristine, &dir)?;
        let (journal, _) = active_journal(&dir)?;
        let file = std::fs::OpenOptions::new().write(true).open(&journal)?;
        file.set_len(end.saturating_sub(cut) as u64)?;
        drop(file);
        let mut log = sent.clone();
        let kept = recover(&dir, &mut log)
            .await?
            .ok_or("a torn tail must not stop the store from opening")?;
        eprintln!("cut {cut} of {end} bytes: kept {kept} messages");
        if cut < 64 {
            assert_eq!(
                kept as u64,
                FIXTURE_MESSAGES - 1,
                "only the torn last batch may be lost"
            );
        }
        let reopened = recover(&dir, &mut log)
            .await?
            .ok_or("second reopen failed")?;
        assert!(
            reopened == kept + 1 || kept == 0,
            "the post-recovery append was lost"
        );
    }
    Ok(())
}

/// Byte ranges of the batch-start seqno fields of a fjall journal: the one
/// part of a batch its checksum does not cover. Entries: start = tag 1, u32
/// count, u64 seqno; item = tag 2, type, compression, u64 keyspace, u16 key
/// len, u32 value len, u32 stored len, key, value; end = tag 3, u64
/// checksum, 4 magic bytes; clear = tag 4, u64 keyspace. Integers are LE.
fn start_seqno_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let le = |at: usize, n: usize| {
        let field = bytes.get(at..at + n)?;
        Some(
            field
                .iter()
                .rev()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b)),
        )
    };
    let (mut ranges, mut pos) = (Vec::new(), 0);
    while let Some(&tag) = bytes.get(pos) {
        pos += match tag {
            1 => {
                ranges.push(pos + 5..pos + 13);
                13
            }
            2 => match (le(pos + 11, 2), le(pos + 17, 4)) {
                (Some(key), Some(value)) => 21 + key + value,
                _ => break,
            },
            3 => 13,
            4 => 9,
            _ => break,
        };
    }
    ranges
}

/// After a flip in a batch-start seqno (not covered by fjall's checksum) the
/// head may be rolled back; what must still hold: no altered message bytes,
/// and no acknowledged message is ever overwritten by a new append.
async fn recover_weak(
    dir: &Path,
    sent: &[StoredMessage],
) -> Result<Option<usize>, Box<dyn std::error::Error>> {
    let store = match open(dir) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("  refused to open: {e}");
            return Ok(None);
        }
    };
    let got = store.messages(1, 0, 1000, 0).await?;
    for msg in &got {
        assert!(sent.contains(msg), "altered message at seq {}", msg.seq);
    }
    let Some(record) = store.conversation(1).await? else {
        return Ok(Some(got.len()));
    };
    let next = message(1, record.head_seq + 1, 5_000);
    let stored_already = got.iter().any(|m| m.seq == next.seq);
    match store.append_message(&next).await {
        Ok(outcome) => assert!(
            !stored_already && outcome == AppendOutcome::Appended,
            "overwrote seq {}",
            next.seq
        ),
        Err(e) => {
            assert!(stored_already, "append failed without cause: {e}");
            eprintln!("  rolled-back head detected on append: {e}");
        }
    }
    Ok(Some(got.len()))
}

/// Flipped bytes anywhere in the journal: the store either opens with an
/// intact prefix of what was persisted, or refuses with a typed error. It
/// never panics and never returns altered message bytes. (Flips inside a
/// batch-start seqno are checked by `recover_weak`, see there.)
#[tokio::test]
async fn recovery_after_flipped_journal_bytes() -> TestResult {
    let base = tempfile::tempdir()?;
    let pristine = base.path().join("pristine");
    let sent = build_fixture(&pristine).await?;
    let (journal, end) = active_journal(&pristine)?;
    shrink_preallocation(&journal, end)?;
    let unchecked = start_seqno_ranges(std::fs::read(&journal)?.get(..end).ok_or("short journal")?);
    assert_eq!(
        unchecked.len() as u64,
        FIXTURE_MESSAGES + 1,
        "journal layout changed: one batch per write expected"
    );
    let mut positions: Vec<usize> = (0..end).step_by((end / 97).max(1)).collect();
    positions.extend([end.saturating_sub(1), end.saturating_sub(12), end / 2 + 1]);
    positions.extend(
        unchecked
            .iter()
            .flat_map(|r| [r.start, r.end - 1])
            .step_by(7),
    );
    let (mut opened, mut refused, mut weak) = (0, 0, 0);
    for pos in positions {
        let dir = base.path().join(format!("flip-{pos}"));
        copy_dir(&pristine, &dir)?;
        let (journal, _) = active_journal(&dir)?;
        let mut bytes = std::fs::read(&journal)?;
        let byte = bytes.get_mut(pos).ok_or("position out of range")?;
        *byte ^= 0xFF;
        std::fs::write(&journal, &bytes)?;
        let in_seqno = unchecked.iter().any(|r| r.contains(&pos));
        eprintln!(
            "flip at {pos} of {end}{}:",
            if in_seqno { " (batch seqno)" } else { "" }
        );
        let outcome = match in_seqno {
            true => {
                weak += 1;
                recover_weak(&dir, &sent).await?
            }
            false => recover(&dir, &mut sent.clone()).await?,
        };
        match outcome {
            Some(kept) => {
                eprintln!("  opened with {kept} messages");
                opened += 1;
            }
            None => refused += 1,
        }
    }
    eprintln!(
        "flips: {opened} opened, {refused} refused with a typed error, {weak} in unchecked seqnos"
    );
    Ok(())
}
