//! Checks of [`crate::AccountStore`]: accounts, device ids, revocation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::Barrier;

use super::{
    device, full_device_keys, full_keys_update, last_resort_key, ok, pool_key, pool_keys,
    RACE_ROUNDS,
};
use crate::{CreateAccountError, DeviceId, DeviceRecord, KeyPool, Store};

/// create_account, device, devices and `UserExists`.
pub async fn accounts(s: Arc<dyn Store>) {
    let s = &*s;
    ok(
        s.create_account("alice", device(7)).await,
        "create_account alice",
    );
    assert_eq!(ok(s.device("alice", 7).await, "device"), Some(device(7)));
    assert_eq!(
        ok(s.device("alice", 1).await, "device"),
        None,
        "unknown device"
    );
    assert_eq!(ok(s.device("bob", 7).await, "device"), None, "unknown user");
    assert_eq!(ok(s.devices("alice").await, "devices"), vec![device(7)]);
    assert_eq!(
        ok(s.devices("bob").await, "devices"),
        vec![],
        "unknown user has no devices"
    );

    let again = s.create_account("alice", device(8)).await;
    assert!(
        matches!(&again, Err(CreateAccountError::UserExists(u)) if u == "alice"),
        "{again:?}"
    );
    assert_eq!(
        ok(s.devices("alice").await, "devices"),
        vec![device(7)],
        "a refused create writes nothing"
    );

    // Handles that prefix one another are distinct users.
    assert_eq!(ok(s.devices("al").await, "devices"), vec![]);
    ok(s.create_account("al", device(1)).await, "create_account al");
    ok(
        s.create_account("alice.b-c_9", device(2)).await,
        "create_account alice.b-c_9",
    );
    assert_eq!(ok(s.devices("al").await, "devices"), vec![device(1)]);
    assert_eq!(ok(s.devices("alice").await, "devices"), vec![device(7)]);
    let long = "a".repeat(32);
    ok(
        s.create_account(&long, device(3)).await,
        "create_account 32-char handle",
    );
    assert_eq!(ok(s.device(&long, 3).await, "device"), Some(device(3)));
}

/// 16 concurrent creates of one handle: exactly one wins.
pub async fn create_account_race(s: Arc<dyn Store>) {
    const N: u32 = 16;
    let barrier = Arc::new(Barrier::new(N as usize));
    let mut tasks = Vec::new();
    for i in 1..=N {
        let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (i, s.create_account("racer", device(i)).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match ok(task.await, "join create_account task") {
            (i, Ok(())) => winners.push(i),
            (_, Err(CreateAccountError::UserExists(u))) => assert_eq!(u, "racer"),
            (_, Err(e)) => panic!("conformance: create_account race: {e:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one create_account wins: {winners:?}"
    );
    let devices = ok(s.devices("racer").await, "devices");
    assert_eq!(
        devices,
        winners.iter().map(|&i| device(i)).collect::<Vec<_>>(),
        "the winner's device is stored"
    );
}

/// add_device numbers from the highest id ever assigned; ids of revoked
/// devices are never reused; unknown users get `None`; the account survives
/// the revocation of its last device.
pub async fn add_device_ids(s: Arc<dyn Store>) {
    let s = &*s;
    assert_eq!(
        ok(
            s.add_device("alice", "phone", [9; 32], 77).await,
            "add_device"
        ),
        None,
        "unknown user"
    );
    ok(s.create_account("alice", device(1)).await, "create_account");
    ok(s.create_account("al", device(7)).await, "create_account al");
    let second = ok(
        s.add_device("alice", "laptop", [9; 32], 77).await,
        "add_device",
    );
    assert_eq!(second, Some(2));
    let stored = ok(s.device("alice", 2).await, "device");
    let expected = DeviceRecord {
        device: 2,
        name: "laptop".to_string(),
        public_key: [9; 32],
        created_ms: 77,
    };
    assert_eq!(
        stored,
        Some(expected.clone()),
        "the added device round-trips"
    );
    assert_eq!(
        ok(
            s.add_device("alice", "tablet", [3; 32], 78).await,
            "add_device"
        ),
        Some(3)
    );
    assert_eq!(
        ok(s.add_device("al", "x", [1; 32], 1).await, "add_device al"),
        Some(8),
        "next after the first device's id, per user"
    );
    let ids = |devices: Vec<DeviceRecord>| devices.iter().map(|d| d.device).collect::<Vec<_>>();
    assert_eq!(ids(ok(s.devices("alice").await, "devices")), vec![1, 2, 3]);

    // Revoking the highest id must not free it.
    assert!(ok(s.revoke_device("alice", 3).await, "revoke_device"));
    assert_eq!(
        ok(
            s.add_device("alice", "new", [4; 32], 79).await,
            "add_device"
        ),
        Some(4),
        "the id of a revoked device is not reused"
    );
    // Revoking every device keeps the account and its counter.
    for id in [1, 2, 4] {
        assert!(ok(s.revoke_device("alice", id).await, "revoke_device"));
    }
    assert_eq!(ok(s.devices("alice").await, "devices"), vec![]);
    let again = s.create_account("alice", device(1)).await;
    assert!(
        matches!(&again, Err(CreateAccountError::UserExists(u)) if u == "alice"),
        "a handle is not freed by revoking its devices: {again:?}"
    );
    assert_eq!(ok(s.device("alice", 1).await, "device"), None);
    assert_eq!(
        ok(
            s.add_device("alice", "back", [5; 32], 80).await,
            "add_device"
        ),
        Some(5)
    );
    assert_eq!(ids(ok(s.devices("alice").await, "devices")), vec![5]);
    assert_eq!(
        ids(ok(s.devices("al").await, "devices")),
        vec![7, 8],
        "no prefix leak"
    );
    assert_eq!(
        ok(
            s.add_device("alic", "x", [1; 32], 1).await,
            "add_device alic"
        ),
        None,
        "a prefix of a handle is not a user"
    );
}

/// 16 concurrent add_device calls for one user, racing a revoke of the
/// newest device, in [`RACE_ROUNDS`] * 2 rounds: each round's adds get 16
/// distinct ids following every id handed out before; all of them are stored.
pub async fn add_device_race(s: Arc<dyn Store>) {
    const N: u32 = 16;
    ok(s.create_account("racer", device(1)).await, "create_account");
    let mut all = BTreeSet::from([1]);
    for round in 0..RACE_ROUNDS * 2 {
        let highest = all.last().copied().unwrap_or(1);
        let barrier = Arc::new(Barrier::new(N as usize + 1));
        let mut tasks = Vec::new();
        for i in 0..N {
            let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                s.add_device("racer", &format!("device {round}/{i}"), [7; 32], 1)
                    .await
            }));
        }
        // The newest device is revoked meanwhile: its id must stay used.
        let revoker = {
            let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                s.revoke_device("racer", highest).await
            })
        };
        let mut ids = BTreeSet::new();
        for task in tasks {
            let id = ok(ok(task.await, "join add_device task"), "add_device");
            match id {
                Some(id) => assert!(ids.insert(id), "device id {id} handed out twice"),
                None => panic!("conformance: add_device of an existing user returned None"),
            }
        }
        assert!(ok(ok(revoker.await, "join revoke task"), "revoke_device"));
        assert_eq!(
            ids,
            (highest + 1..=highest + N).collect::<BTreeSet<_>>(),
            "round {round}"
        );
        all.remove(&highest);
        all.extend(ids);
        let stored: BTreeSet<DeviceId> = ok(s.devices("racer").await, "devices")
            .iter()
            .map(|d| d.device)
            .collect();
        assert_eq!(stored, all, "every added device is stored (round {round})");
    }
}

/// A revoked device is invisible, its device keys, key pools (last resorts
/// included) and cursors are gone, later uploads for it store nothing;
/// other devices are untouched and new devices start clean.
pub async fn revoke_device(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(
        !ok(s.revoke_device("alice", 1).await, "revoke unknown user"),
        "unknown user"
    );
    ok(s.create_account("alice", device(1)).await, "create_account");
    assert_eq!(
        ok(
            s.add_device("alice", "second", [2; 32], 2).await,
            "add_device"
        ),
        Some(2)
    );
    give_everything(s, 1).await;
    give_everything(s, 2).await;
    assert!(ok(s.revoke_device("alice", 2).await, "revoke_device"));
    assert!(
        !ok(s.revoke_device("alice", 2).await, "revoke again"),
        "a revoked device is not active"
    );
    assert!(!ok(
        s.revoke_device("alice", 9).await,
        "revoke unknown device"
    ));
    assert_eq!(
        ok(s.device("alice", 2).await, "device"),
        None,
        "cannot authenticate"
    );
    assert_eq!(ok(s.devices("alice").await, "devices"), vec![device(1)]);
    assert_bare(s, 2, "revoked").await;

    // A late upload for the revoked device stores nothing.
    let late = s.put_device_keys("alice", 2, &full_keys_update()).await;
    assert!(!ok(late, "put_device_keys revoked"));
    for pool in KeyPool::ALL {
        let (keys, last_resort) = (pool_keys(&[4]), last_resort_key(8));
        let late = s.put_keys("alice", 2, pool, &keys, Some(&last_resort));
        assert_eq!(ok(late.await, "put_keys revoked"), 0, "{pool:?}");
    }
    assert_bare(s, 2, "revoked, after late uploads").await;

    // Device 1 keeps everything.
    assert_eq!(
        ok(s.device_keys("alice", 1).await, "device_keys"),
        Some(full_device_keys())
    );
    for pool in KeyPool::ALL {
        assert_eq!(ok(s.key_count("alice", 1, pool).await, "key_count"), 3);
        let claimed = ok(s.claim_key("alice", 1, pool).await, "claim_key");
        assert_eq!(
            claimed.map(|c| (c.key, c.last_resort, c.remaining)),
            Some((pool_key(1), false, 2)),
            "{pool:?}"
        );
    }
    assert_eq!(
        ok(s.cursors("alice", 1).await, "cursors"),
        [(30, 5)].into_iter().collect()
    );

    // The next device starts clean.
    assert_eq!(
        ok(
            s.add_device("alice", "third", [3; 32], 3).await,
            "add_device"
        ),
        Some(3)
    );
    assert_bare(s, 3, "a new device").await;
}

/// Gives alice's device `id` its device keys, keys 1..=3 and a last-resort
/// key in every pool, and a cursor.
async fn give_everything(s: &dyn Store, id: DeviceId) {
    let stored = s.put_device_keys("alice", id, &full_keys_update()).await;
    assert!(ok(stored, "put_device_keys"));
    for pool in KeyPool::ALL {
        let (keys, last_resort) = (pool_keys(&[1, 2, 3]), last_resort_key(9));
        let put = s.put_keys("alice", id, pool, &keys, Some(&last_resort));
        assert_eq!(ok(put.await, "put_keys"), 3, "{pool:?}");
    }
    assert_eq!(
        ok(s.advance_cursor("alice", id, 30, 5).await, "advance_cursor"),
        5
    );
}

/// Alice's device `id` has no device keys, no pool keys, no last-resort
/// keys and no cursors.
async fn assert_bare(s: &dyn Store, id: DeviceId, why: &str) {
    assert_eq!(
        ok(s.device_keys("alice", id).await, "device_keys"),
        None,
        "{why}: device keys"
    );
    for pool in KeyPool::ALL {
        assert_eq!(
            ok(s.claim_key("alice", id, pool).await, "claim_key"),
            None,
            "{why}: {pool:?} pool and its last resort"
        );
        assert_eq!(
            ok(s.key_count("alice", id, pool).await, "key_count"),
            0,
            "{why}: {pool:?} count"
        );
    }
    assert_eq!(
        ok(s.cursors("alice", id).await, "cursors"),
        BTreeMap::new(),
        "{why}: cursors"
    );
}
