//! MLS membership change in a 1,500-member group: what it costs the committer
//! to stage a commit adding one device (commit + Welcome + GroupInfo with the
//! ratchet tree, serialized), and what it costs one member to process and
//! apply such a commit. The group is built once, outside the measured loops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tempfile::TempDir;
use tern_client::mls::{MlsClient, Processed};

const MEMBERS: usize = 1_500;
const GROUP: u64 = 42;

fn device(name: &str) -> (TempDir, MlsClient) {
    let dir = tempfile::tempdir().unwrap();
    let client = MlsClient::load_or_create(dir.path(), &format!("{name}/1")).unwrap();
    (dir, client)
}

struct Group {
    _dirs: Vec<TempDir>,
    committer: MlsClient,
    member: MlsClient,
}

/// `MEMBERS` devices: the committer creates the group and adds everyone else
/// in one commit; one member joins from the Welcome.
fn build_group() -> Group {
    let started = Instant::now();
    let (committer_dir, mut committer) = device("committer");
    committer.create_group(GROUP).unwrap();
    let mut dirs = vec![committer_dir];
    let mut key_packages = Vec::with_capacity(MEMBERS - 1);
    let mut member = None;
    for i in 0..MEMBERS - 1 {
        let (dir, mut client) = device(&format!("m{i}"));
        key_packages.push(client.key_packages(1).unwrap().pop().unwrap());
        dirs.push(dir);
        if i == 0 {
            member = Some(client);
        }
    }
    let add_all = Instant::now();
    let bundle = committer.add_members(GROUP, &key_packages).unwrap();
    committer.confirm_commit(GROUP).unwrap();
    let add_all = add_all.elapsed();
    let mut member = member.unwrap();
    let join = Instant::now();
    member.join(bundle.welcome.as_ref().unwrap()).unwrap();
    let join = join.elapsed();
    assert_eq!(member.members(GROUP).unwrap().len(), MEMBERS);
    let save = Instant::now();
    member.save().unwrap();
    let save = save.elapsed();
    let storage = std::fs::metadata(dirs[1].path().join("mls/storage.bin"))
        .unwrap()
        .len();
    eprintln!(
        "setup {MEMBERS} members in {:.1?}: add {} in one commit {add_all:.1?} (commit {} B, welcome {} B, group info {} B); \
         join from Welcome {join:.1?}; member save {save:.1?} ({storage} B on disk)",
        started.elapsed(),
        MEMBERS - 1,
        bundle.commit.len(),
        bundle.welcome.as_ref().map_or(0, Vec::len),
        bundle.group_info.len(),
    );
    Group {
        _dirs: dirs,
        committer,
        member,
    }
}

fn mls(c: &mut Criterion) {
    let mut g = build_group();
    let (_newcomer_dir, mut newcomer) = device("newcomer");
    let newcomer_kp = newcomer.key_packages(1).unwrap().pop().unwrap();
    {
        let bundle = g
            .committer
            .add_members(GROUP, std::slice::from_ref(&newcomer_kp))
            .unwrap();
        eprintln!(
            "add-one commit: commit {} B, welcome {} B, group info {} B",
            bundle.commit.len(),
            bundle.welcome.as_ref().map_or(0, Vec::len),
            bundle.group_info.len()
        );
        g.committer.discard_commit(GROUP).unwrap();
    }

    let mut group = c.benchmark_group("mls_group_1500");
    group.sample_size(10);
    // Stage (not apply) a commit adding one device; discarded after each
    // iteration, so the group stays at 1,500 members.
    group.bench_function("commit_add_one_member", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let bundle = g
                    .committer
                    .add_members(GROUP, std::slice::from_ref(&newcomer_kp))
                    .unwrap();
                spent += start.elapsed();
                assert_eq!(bundle.added.len(), 1);
                g.committer.discard_commit(GROUP).unwrap();
            }
            spent
        })
    });
    // A member processes and applies a commit adding one device. Each
    // iteration adds a new device (untimed), so the group grows by one per
    // iteration (1,500 + a few dozen).
    let mut counter = 0u64;
    group.bench_function("member_process_add_commit", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                counter += 1;
                let (_dir, mut extra) = device(&format!("extra{counter}"));
                let kp = extra.key_packages(1).unwrap().pop().unwrap();
                let bundle = g.committer.add_members(GROUP, &[kp]).unwrap();
                g.committer.confirm_commit(GROUP).unwrap();
                let start = Instant::now();
                let processed = g.member.process(GROUP, &bundle.commit).unwrap();
                spent += start.elapsed();
                assert!(matches!(
                    processed,
                    Processed::Commit {
                        removed_me: false,
                        ..
                    }
                ));
            }
            spent
        })
    });
    group.finish();
    eprintln!(
        "group size at the end: {}",
        g.member.members(GROUP).unwrap().len()
    );
}

criterion_group!(benches, mls);
criterion_main!(benches);
