//! Checks of [`crate::KeyDirectory`]: long-term device keys, and the generic
//! single-use key pool, each pool check run for every [`KeyPool`].

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Barrier;

use super::{
    device, full_device_keys, full_keys_update, last_resort_key, ok, pool_key, pool_keys,
    signed_prekey, IDENTITY, KEM_PREKEY, RACERS, RACE_ROUNDS,
};
use crate::{
    ClaimedKey, DeviceId, DeviceKeys, DeviceKeysUpdate, KeyPool, PoolKey, Store, KEY_POOL_CAP,
};

async fn put(
    s: &dyn Store,
    (user, device): (&str, DeviceId),
    pool: KeyPool,
    keys: &[PoolKey],
    last_resort: Option<&PoolKey>,
) -> u32 {
    ok(
        s.put_keys(user, device, pool, keys, last_resort).await,
        "put_keys",
    )
}

async fn claim(
    s: &dyn Store,
    (user, device): (&str, DeviceId),
    pool: KeyPool,
) -> Option<ClaimedKey> {
    ok(s.claim_key(user, device, pool).await, "claim_key")
}

async fn count(s: &dyn Store, (user, device): (&str, DeviceId), pool: KeyPool) -> u32 {
    ok(s.key_count(user, device, pool).await, "key_count")
}

async fn keys_of(s: &dyn Store, (user, device): (&str, DeviceId)) -> Option<DeviceKeys> {
    ok(s.device_keys(user, device).await, "device_keys")
}

async fn update(s: &dyn Store, (user, device): (&str, DeviceId), update: DeviceKeysUpdate) -> bool {
    ok(
        s.put_device_keys(user, device, &update).await,
        "put_device_keys",
    )
}

/// A key handed out of the pool, with `remaining` left.
fn fresh(id: u64, remaining: u32) -> Option<ClaimedKey> {
    Some(ClaimedKey {
        key: pool_key(id),
        last_resort: false,
        remaining,
    })
}

/// The last-resort key `id`, handed out of an empty pool.
fn fallback(id: u64) -> Option<ClaimedKey> {
    Some(ClaimedKey {
        key: last_resort_key(id),
        last_resort: true,
        remaining: 0,
    })
}

/// Alice with devices 1 and 2, and "al" with device 1.
async fn alice_and_al(s: &dyn Store) {
    ok(s.create_account("alice", device(1)).await, "create_account");
    ok(s.create_account("al", device(1)).await, "create_account al");
    assert_eq!(
        ok(s.add_device("alice", "two", [2; 32], 2).await, "add_device"),
        Some(2)
    );
}

// ---------------------------------------------------------------------------
// Long-term device keys
// ---------------------------------------------------------------------------

/// put_device_keys/device_keys: `None` before an identity key (prekeys given
/// earlier are kept for it), each given field replaces only itself
/// (signed-prekey rotation), an empty update changes nothing, devices and
/// users are kept apart, a device that is not active gets `false`.
pub async fn device_keys_updates(s: Arc<dyn Store>) {
    let s = &*s;
    alice_and_al(s).await;
    let (one, two) = (("alice", 1), ("alice", 2));
    assert_eq!(keys_of(s, one).await, None, "nothing uploaded");
    let early = DeviceKeysUpdate {
        signed_prekey: Some(signed_prekey(1, 0x51)),
        kem_prekey: Some(Bytes::from_static(KEM_PREKEY)),
        ..DeviceKeysUpdate::default()
    };
    assert!(update(s, one, early).await);
    assert_eq!(keys_of(s, one).await, None, "no identity key yet");
    assert!(update(s, one, identity_only(IDENTITY)).await);
    let want = full_device_keys();
    assert_eq!(
        keys_of(s, one).await,
        Some(want.clone()),
        "earlier prekeys kept"
    );
    let want = partial_updates(s, want).await;

    // An identity alone: no prekeys. Devices and users are kept apart.
    assert!(update(s, two, identity_only(IDENTITY)).await);
    let bare = DeviceKeys {
        signed_prekey: None,
        kem_prekey: None,
        ..full_device_keys()
    };
    assert_eq!(keys_of(s, two).await, Some(bare));
    assert_eq!(keys_of(s, one).await, Some(want), "other device untouched");
    assert_eq!(keys_of(s, ("al", 1)).await, None, "prefix user");
    for inactive in [("alice", 3), ("nobody", 1), ("alic", 1)] {
        assert!(
            !update(s, inactive, full_keys_update()).await,
            "{inactive:?}"
        );
        assert_eq!(keys_of(s, inactive).await, None, "{inactive:?}");
    }
}

fn identity_only(identity: ([u8; 32], [u8; 64])) -> DeviceKeysUpdate {
    DeviceKeysUpdate {
        identity: Some(identity),
        ..DeviceKeysUpdate::default()
    }
}

/// On alice's device 1, which has `want`: each update replaces only the
/// fields it gives. Returns what is stored afterwards.
async fn partial_updates(s: &dyn Store, mut want: DeviceKeys) -> DeviceKeys {
    let one = ("alice", 1);
    let rotate = DeviceKeysUpdate {
        signed_prekey: Some(signed_prekey(3, 0x53)),
        ..DeviceKeysUpdate::default()
    };
    assert!(update(s, one, rotate).await);
    want.signed_prekey = Some(signed_prekey(3, 0x53));
    assert_eq!(
        keys_of(s, one).await,
        Some(want.clone()),
        "rotated, rest kept"
    );

    let kem = DeviceKeysUpdate {
        kem_prekey: Some(Bytes::new()),
        ..DeviceKeysUpdate::default()
    };
    assert!(update(s, one, kem).await);
    want.kem_prekey = Some(Bytes::new());
    assert_eq!(
        keys_of(s, one).await,
        Some(want.clone()),
        "KEM prekey replaced"
    );

    let empty = update(s, one, DeviceKeysUpdate::default()).await;
    assert!(empty, "an empty update of an active device");
    assert_eq!(keys_of(s, one).await, Some(want.clone()), "empty update");

    assert!(update(s, one, identity_only(([0x2d; 32], [0x6e; 64]))).await);
    (want.identity_key, want.identity_signature) = ([0x2d; 32], [0x6e; 64]);
    assert_eq!(
        keys_of(s, one).await,
        Some(want.clone()),
        "identity replaced"
    );
    want
}

// ---------------------------------------------------------------------------
// Single-use key pools
// ---------------------------------------------------------------------------

/// put_keys/claim_key/key_count, for every pool: lowest id first, ids
/// already in the pool (or repeated in one upload) ignored, counts, the
/// last-resort key (returned, never consumed, replaced by a new one), a
/// claimed id uploaded again, devices and users kept apart.
pub async fn key_pool_claims(s: Arc<dyn Store>) {
    let s = &*s;
    alice_and_al(s).await;
    for pool in KeyPool::ALL {
        pool_claims(s, pool).await;
        pool_last_resort(s, pool).await;
        pool_isolation(s, pool).await;
    }
}

async fn pool_claims(s: &dyn Store, pool: KeyPool) {
    let one = ("alice", 1);
    assert_eq!(claim(s, one, pool).await, None, "nothing uploaded");
    assert_eq!(count(s, one, pool).await, 0);
    assert_eq!(put(s, one, pool, &[], None).await, 0, "a count query");
    assert_eq!(put(s, one, pool, &pool_keys(&[20, 10]), None).await, 2);

    // Ids already in the pool, or repeated within the upload, are ignored.
    let mut upload = pool_keys(&[30, 10, 5, 30]);
    if let Some(ten) = upload.get_mut(1) {
        ten.key = Bytes::from_static(b"id 10 again, other bytes");
    }
    assert_eq!(put(s, one, pool, &upload, None).await, 4, "{pool:?}");
    assert_eq!(count(s, one, pool).await, 4);
    assert_eq!(put(s, one, pool, &[], None).await, 4, "a count query");

    for (id, remaining) in [(5, 3), (10, 2), (20, 1), (30, 0)] {
        assert_eq!(
            claim(s, one, pool).await,
            fresh(id, remaining),
            "{pool:?}: lowest id first, the first upload of id 10 kept"
        );
        assert_eq!(count(s, one, pool).await, remaining);
    }
    assert_eq!(claim(s, one, pool).await, None, "{pool:?}: no last resort");
}

async fn pool_last_resort(s: &dyn Store, pool: KeyPool) {
    let one = ("alice", 1);
    assert_eq!(put(s, one, pool, &[], Some(&last_resort_key(1))).await, 0);
    for _ in 0..2 {
        assert_eq!(
            claim(s, one, pool).await,
            fallback(1),
            "{pool:?}: last resort returned and not consumed"
        );
    }
    assert_eq!(count(s, one, pool).await, 0);

    // Keys uploaded later go first again; a claimed id can come back.
    assert_eq!(put(s, one, pool, &pool_keys(&[5]), None).await, 1);
    assert_eq!(claim(s, one, pool).await, fresh(5, 0));
    assert_eq!(
        claim(s, one, pool).await,
        fallback(1),
        "kept when not given"
    );

    // A new last resort replaces the old one.
    let keys = pool_keys(&[7]);
    assert_eq!(put(s, one, pool, &keys, Some(&last_resort_key(2))).await, 1);
    assert_eq!(claim(s, one, pool).await, fresh(7, 0));
    assert_eq!(claim(s, one, pool).await, fallback(2), "{pool:?}: replaced");
    assert_eq!(claim(s, one, pool).await, fallback(2));
}

async fn pool_isolation(s: &dyn Store, pool: KeyPool) {
    let (one, two) = (("alice", 1), ("alice", 2));
    assert_eq!(put(s, two, pool, &pool_keys(&[1, 2]), None).await, 2);
    assert_eq!(count(s, one, pool).await, 0, "{pool:?}: other device");
    assert_eq!(claim(s, two, pool).await, fresh(1, 1));
    assert_eq!(
        claim(s, one, pool).await,
        fallback(2),
        "other device's pool"
    );
    assert_eq!(claim(s, ("al", 1), pool).await, None, "prefix user");
    assert_eq!(count(s, ("al", 1), pool).await, 0, "prefix user");
    assert_eq!(claim(s, two, pool).await, fresh(2, 0));
    assert_eq!(
        claim(s, two, pool).await,
        None,
        "device 2 has no last resort"
    );
}

/// The pools of one device are independent: keys, counts and last resorts
/// of one never show in the other.
pub async fn key_pools_independent(s: Arc<dyn Store>) {
    let s = &*s;
    alice_and_al(s).await;
    let (one, [prekeys, packages]) = (("alice", 1), KeyPool::ALL);
    let keys = pool_keys(&[1, 2, 3]);
    assert_eq!(
        put(s, one, prekeys, &keys, Some(&last_resort_key(1))).await,
        3
    );
    let package = PoolKey {
        id: 2,
        key: Bytes::from_static(b"a KeyPackage with id 2"),
    };
    assert_eq!(
        put(s, one, packages, std::slice::from_ref(&package), None).await,
        1
    );
    assert_eq!(count(s, one, prekeys).await, 3);
    assert_eq!(count(s, one, packages).await, 1);

    let claimed = claim(s, one, packages).await;
    let want = ClaimedKey {
        key: package,
        last_resort: false,
        remaining: 0,
    };
    assert_eq!(claimed, Some(want));
    assert_eq!(
        claim(s, one, packages).await,
        None,
        "no last resort of its own"
    );
    assert_eq!(count(s, one, prekeys).await, 3, "the other pool untouched");
    assert_eq!(claim(s, one, prekeys).await, fresh(1, 2));
    assert_eq!(claim(s, one, prekeys).await, fresh(2, 1), "id 2 still here");
}

/// Each pool of a device holds at most [`KEY_POOL_CAP`] keys: an upload
/// keeps the first keys it brings, in the order given, until the pool is
/// full and ignores the rest.
pub async fn key_pool_cap(s: Arc<dyn Store>) {
    let s = &*s;
    alice_and_al(s).await;
    let cap = u64::from(KEY_POOL_CAP);
    let one = ("alice", 1);
    for pool in KeyPool::ALL {
        let first: Vec<u64> = (1..=cap - 10).collect();
        assert_eq!(
            put(s, one, pool, &pool_keys(&first), None).await,
            KEY_POOL_CAP - 10
        );
        let more: Vec<u64> = (cap + 1..cap + 200).collect();
        let full = put(s, one, pool, &pool_keys(&more), None).await;
        assert_eq!(full, KEY_POOL_CAP, "{pool:?}: over the cap");
        assert_eq!(count(s, one, pool).await, KEY_POOL_CAP);
        assert_eq!(claim(s, one, pool).await, fresh(1, KEY_POOL_CAP - 1));
        // Room for exactly one more.
        let refill = pool_keys(&[50_000, 50_001]);
        assert_eq!(put(s, one, pool, &refill, None).await, KEY_POOL_CAP);
        let mut kept = Vec::new();
        while let Some(claimed) = claim(s, one, pool).await {
            kept.push(claimed.key.id);
        }
        let want: Vec<u64> = (2..=cap - 10)
            .chain(cap + 1..=cap + 10)
            .chain([50_000])
            .collect();
        assert_eq!(kept, want, "{pool:?}: the first keys of each upload kept");
    }

    // One upload over the cap, in descending id order: the first given win.
    let two = ("alice", 2);
    for pool in KeyPool::ALL {
        let descending: Vec<u64> = (1..=cap + 5).rev().collect();
        let stored = put(s, two, pool, &pool_keys(&descending), None).await;
        assert_eq!(stored, KEY_POOL_CAP, "{pool:?}");
        assert_eq!(claim(s, two, pool).await, fresh(6, KEY_POOL_CAP - 1));
    }
}

/// Unknown users, unknown devices and revoked devices store nothing (0,
/// `false`) and have nothing to claim; nothing stored for a device id
/// before it exists shows up once it does.
pub async fn key_pool_inactive_devices(s: Arc<dyn Store>) {
    let s = &*s;
    alice_and_al(s).await;
    assert!(ok(s.revoke_device("alice", 2).await, "revoke_device"));
    let inactive = [("alice", 2), ("alice", 3), ("nobody", 1), ("alic", 1)];
    for who in inactive {
        assert!(!update(s, who, full_keys_update()).await, "{who:?}");
        for pool in KeyPool::ALL {
            let keys = pool_keys(&[1, 2]);
            let stored = put(s, who, pool, &keys, Some(&last_resort_key(1))).await;
            assert_eq!(stored, 0, "{who:?} {pool:?}: stores nothing");
            assert_eq!(put(s, who, pool, &[], None).await, 0, "{who:?}");
            assert_eq!(count(s, who, pool).await, 0, "{who:?} {pool:?}");
            assert_eq!(claim(s, who, pool).await, None, "{who:?} {pool:?}");
        }
        assert_eq!(keys_of(s, who).await, None, "{who:?}");
    }
    assert_eq!(
        ok(
            s.add_device("alice", "three", [3; 32], 3).await,
            "add_device"
        ),
        Some(3)
    );
    let three = ("alice", 3);
    assert_eq!(
        keys_of(s, three).await,
        None,
        "nothing from before it existed"
    );
    for pool in KeyPool::ALL {
        assert_eq!(count(s, three, pool).await, 0, "{pool:?}");
        assert_eq!(claim(s, three, pool).await, None, "{pool:?}");
    }
}

/// [`RACERS`] concurrent claims over 12 keys of each pool, in
/// [`RACE_ROUNDS`] rounds: each round hands out its keys exactly once
/// (distinct keys, distinct `remaining` counts), and the other claimers get
/// the round's last-resort key.
pub async fn key_pool_claim_race(s: Arc<dyn Store>) {
    ok(s.create_account("alice", device(1)).await, "create_account");
    for pool in KeyPool::ALL {
        for round in 0..u64::from(RACE_ROUNDS) {
            claim_race_round(&s, pool, round).await;
        }
    }
}

async fn claim_race_round(s: &Arc<dyn Store>, pool: KeyPool, round: u64) {
    const KEYS: u32 = 12;
    let one = ("alice", 1);
    let ids: BTreeSet<u64> = (1..=u64::from(KEYS)).map(|i| round * 1_000 + i).collect();
    let keys = pool_keys(&ids.iter().copied().collect::<Vec<_>>());
    let stored = put(s.as_ref(), one, pool, &keys, Some(&last_resort_key(round))).await;
    assert_eq!(stored, KEYS);
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let (s, barrier) = (Arc::clone(s), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            s.claim_key("alice", 1, pool).await
        }));
    }
    let (mut handed_out, mut remaining, mut fallbacks) = (BTreeSet::new(), BTreeSet::new(), 0);
    for task in tasks {
        let claimed = ok(ok(task.await, "join claim task"), "claim_key");
        let Some(claimed) = claimed else {
            panic!("conformance: claim_key returned None during the race");
        };
        if claimed.last_resort {
            fallbacks += 1;
            assert_eq!(Some(claimed), fallback(round));
            continue;
        }
        assert_eq!(claimed.key, pool_key(claimed.key.id), "intact key");
        let id = claimed.key.id;
        assert!(handed_out.insert(id), "{pool:?} key {id} handed out twice");
        assert!(
            remaining.insert(claimed.remaining),
            "remaining {} seen twice: claims not serialised",
            claimed.remaining
        );
    }
    assert_eq!(
        handed_out, ids,
        "{pool:?}: every key exactly once (round {round})"
    );
    assert_eq!(remaining, (0..KEYS).collect::<BTreeSet<_>>());
    assert_eq!(fallbacks, RACERS - ids.len());
    assert_eq!(count(s.as_ref(), one, pool).await, 0);
}
