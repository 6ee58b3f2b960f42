//! Every CQL statement the store runs, prepared once when the store opens
//! ([`Statements::prepare`]) and kept here; a statement that does not
//! prepare (the schema is older than this binary) fails the open with a
//! `Misconfigured` error that says to run `tern migrate`; one that failed
//! for want of a node is a retryable `Unavailable`.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use tern_store::{BackendError, BackendErrorKind};

macro_rules! statements {
    ($($name:ident = $cql:expr;)+) => {
        /// The prepared statements, one field per statement (named by
        /// what it does).
        #[derive(Debug)]
        pub(crate) struct Statements {
            $(pub(crate) $name: PreparedStatement,)+
        }

        impl Statements {
            /// Prepares every statement on `session` (whose keyspace is
            /// set); each `SELECT` runs at `read`, the rest at the
            /// session's level.
            pub(crate) async fn prepare(
                session: &Session,
                read: Consistency,
            ) -> Result<Self, BackendError> {
                Ok(Statements {
                    $($name: prepare(session, stringify!($name), $cql, read).await?,)+
                })
            }
        }
    };
}

async fn prepare(
    session: &Session,
    name: &str,
    cql: &str,
    read: Consistency,
) -> Result<PreparedStatement, BackendError> {
    let mut prepared = session.prepare(cql).await.map_err(|e| {
        let kind = crate::error::prepare_kind(&e);
        let hint = match kind {
            BackendErrorKind::Misconfigured => "is the keyspace migrated (`tern migrate`)?",
            _ => "the cluster did not answer; retry when its nodes are up",
        };
        BackendError::new(
            kind,
            format!("preparing {name} ({cql}) failed: {e}; {hint}"),
        )
    })?;
    prepared.set_is_idempotent(!cql.contains(" IF "));
    if cql.starts_with("SELECT") {
        prepared.set_consistency(read);
    }
    Ok(prepared)
}

statements! {
    // accounts and devices
    account_create_highest = "UPDATE devices SET highest = ? WHERE uid = ? IF highest = null";
    account_bump_highest = "UPDATE devices SET highest = ? WHERE uid = ? IF highest = ?";
    device_insert = "INSERT INTO devices (uid, device, name, public_key, created_ms) VALUES (?, ?, ?, ?, ?)";
    account_highest = "SELECT highest FROM devices WHERE uid = ? LIMIT 1";
    device_get = "SELECT device, name, public_key, created_ms FROM devices WHERE uid = ? AND device = ?";
    devices_get = "SELECT device, name, public_key, created_ms FROM devices WHERE uid = ?";
    device_delete = "DELETE FROM devices WHERE uid = ? AND device = ? IF EXISTS";
    cursors_delete = "DELETE FROM cursors WHERE uid = ? AND device = ?";
    push_put = "INSERT INTO push_endpoints (uid, device, endpoint) VALUES (?, ?, ?)";
    push_delete = "DELETE FROM push_endpoints WHERE uid = ? AND device = ?";
    push_get = "SELECT endpoint FROM push_endpoints WHERE uid = ? AND device = ?";
    // key directory
    device_keys_update = "UPDATE devices SET identity_key = ?, identity_signature = ?, spk_id = ?, spk_public = ?, spk_signature = ?, kem_prekey = ? WHERE uid = ? AND device = ? IF EXISTS";
    device_keys_get = "SELECT identity_key, identity_signature, spk_id, spk_public, spk_signature, kem_prekey FROM devices WHERE uid = ? AND device = ?";
    pool_ids = "SELECT key_id FROM pool_keys WHERE uid = ? AND device = ? AND pool = ?";
    pool_insert = "INSERT INTO pool_keys (uid, device, pool, key_id, key_bytes) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS";
    pool_first = "SELECT key_id, key_bytes FROM pool_keys WHERE uid = ? AND device = ? AND pool = ? LIMIT 1";
    pool_claim = "DELETE FROM pool_keys WHERE uid = ? AND device = ? AND pool = ? AND key_id = ? IF EXISTS";
    pool_count = "SELECT COUNT(*) FROM pool_keys WHERE uid = ? AND device = ? AND pool = ?";
    pool_clear = "DELETE FROM pool_keys WHERE uid = ? AND device = ? AND pool = ?";
    last_resort_put = "INSERT INTO pool_last_resort (uid, device, pool, key_id, key_bytes) VALUES (?, ?, ?, ?, ?)";
    last_resort_get = "SELECT key_id, key_bytes FROM pool_last_resort WHERE uid = ? AND device = ? AND pool = ?";
    last_resort_clear = "DELETE FROM pool_last_resort WHERE uid = ? AND device = ? AND pool = ?";
    // conversations and membership
    conversation_create = "UPDATE conversations SET kind = ?, creator = ?, created_ms = ?, head = ?, epoch = ? WHERE id = ? IF kind = null";
    conversation_undo = "DELETE kind, creator, created_ms, head, epoch FROM conversations WHERE id = ? IF head = ?";
    conversation_get = "SELECT kind, creator, created_ms, head, epoch, fence FROM conversations WHERE id = ? LIMIT 1";
    key_claim = "INSERT INTO conversation_keys (unique_key, id) VALUES (?, ?) IF NOT EXISTS";
    key_get = "SELECT id FROM conversation_keys WHERE unique_key = ?";
    members_first = "SELECT uid FROM members WHERE id = ? LIMIT ?";
    members_after = "SELECT uid FROM members WHERE id = ? AND uid > ? LIMIT ?";
    member_put = "INSERT INTO members (id, uid, since) VALUES (?, ?, ?)";
    member_delete = "DELETE FROM members WHERE id = ? AND uid = ?";
    index_put = "INSERT INTO user_conversations (uid, id, since, kind) VALUES (?, ?, ?, ?)";
    index_delete = "DELETE FROM user_conversations WHERE uid = ? AND id = ?";
    index_from = "SELECT id, kind FROM user_conversations WHERE uid = ? AND id >= ? LIMIT ?";
    index_after = "SELECT id FROM user_conversations WHERE uid = ? AND id > ? LIMIT ?";
    index_since = "SELECT since FROM user_conversations WHERE uid = ? AND id = ?";
    settings_get = "SELECT timer_secs, admins, everyone_adds FROM conversation_settings WHERE id = ?";
    settings_put = "INSERT INTO conversation_settings (id, timer_secs, admins, everyone_adds) VALUES (?, ?, ?, ?)";
    // the message log
    head_advance = "UPDATE conversations SET head = ? WHERE id = ? IF head = ?";
    head_advance_fenced = "UPDATE conversations SET head = ? WHERE id = ? IF head = ? AND fence = ?";
    commit_advance = "UPDATE conversations SET head = ?, epoch = ?, group_info = ? WHERE id = ? IF head = ? AND epoch = ?";
    commit_advance_fenced = "UPDATE conversations SET head = ?, epoch = ?, group_info = ? WHERE id = ? IF head = ? AND epoch = ? AND fence = ?";
    idempotency_put = "INSERT INTO conversations (id, sender_user, sender_device, client_message_id, seq, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?";
    idempotency_get = "SELECT seq FROM conversations WHERE id = ? AND sender_user = ? AND sender_device = ? AND client_message_id = ?";
    idempotency_delete = "DELETE FROM conversations WHERE id = ? AND sender_user = ? AND sender_device = ? AND client_message_id = ?";
    message_put = "INSERT INTO messages (conversation_id, bucket, seq, sender_user, sender_device, client_message_id, server_time_ms, expires_at_ms, flags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
    message_get = "SELECT seq, sender_user, sender_device, client_message_id, server_time_ms, expires_at_ms, flags, payload, TTL(sender_user) FROM messages WHERE conversation_id = ? AND bucket = ? AND seq = ?";
    messages_from = "SELECT seq, sender_user, sender_device, client_message_id, server_time_ms, expires_at_ms, flags, payload, TTL(sender_user) FROM messages WHERE conversation_id = ? AND bucket = ? AND seq >= ? LIMIT ?";
    message_delete = "DELETE FROM messages WHERE conversation_id = ? AND bucket = ? AND seq = ?";
    expiry_hour_put = "INSERT INTO expiry_hours (part, hour) VALUES (0, ?) USING TTL ?";
    expiry_hours_due = "SELECT hour FROM expiry_hours WHERE part = 0 AND hour <= ?";
    expiry_hour_delete = "DELETE FROM expiry_hours WHERE part = 0 AND hour = ?";
    expiry_put = "INSERT INTO expiry (hour, shard, expires_at_ms, conversation_id, seq, sender_user, sender_device, client_message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
    expiry_due = "SELECT expires_at_ms, conversation_id, seq, sender_user, sender_device, client_message_id FROM expiry WHERE hour = ? AND shard = ? AND expires_at_ms <= ? LIMIT ?";
    expiry_any = "SELECT expires_at_ms FROM expiry WHERE hour = ? AND shard = ? LIMIT 1";
    expiry_delete = "DELETE FROM expiry WHERE hour = ? AND shard = ? AND expires_at_ms = ? AND conversation_id = ? AND seq = ?";
    cursor_get = "SELECT seq FROM cursors WHERE uid = ? AND device = ? AND conversation_id = ?";
    cursor_put = "INSERT INTO cursors (uid, device, conversation_id, seq) VALUES (?, ?, ?, ?)";
    cursors_from = "SELECT conversation_id, seq FROM cursors WHERE uid = ? AND device = ? AND conversation_id >= ? LIMIT ?";
    // groups and ownership
    group_info_get = "SELECT group_info FROM conversations WHERE id = ? LIMIT 1";
    ownership_get = "SELECT fence, owner FROM conversations WHERE id = ? LIMIT 1";
    ownership_claim = "UPDATE conversations SET fence = ?, owner = ? WHERE id = ? IF fence = ?";
    ownership_claim_first = "UPDATE conversations SET fence = ?, owner = ? WHERE id = ? IF fence = null";
    // consent
    group_adds_put = "UPDATE user_settings SET group_adds = ? WHERE uid = ?";
    direct_starts_put = "UPDATE user_settings SET direct_starts = ? WHERE uid = ?";
    presence_put = "UPDATE user_settings SET presence = ? WHERE uid = ?";
    user_settings_get = "SELECT group_adds, direct_starts, presence FROM user_settings WHERE uid = ?";
    contact_put = "INSERT INTO contacts (uid, contact) VALUES (?, ?)";
    contact_get = "SELECT contact FROM contacts WHERE uid = ? AND contact = ?";
    invitation_put = "INSERT INTO invitations (uid, conversation_id, inviter, created_ms, accepted) VALUES (?, ?, ?, ?, ?)";
    invitations_get = "SELECT conversation_id, inviter, created_ms, accepted FROM invitations WHERE uid = ?";
    invitation_get = "SELECT conversation_id, inviter, created_ms, accepted FROM invitations WHERE uid = ? AND conversation_id = ?";
    invitation_drop = "DELETE FROM invitations WHERE uid = ? AND conversation_id = ?";
    blocks_version = "SELECT version FROM blocks WHERE uid = ? LIMIT 1";
    blocks_get = "SELECT other FROM blocks WHERE uid = ?";
    block_get = "SELECT other FROM blocks WHERE uid = ? AND other = ?";
    blocks_bump_first = "UPDATE blocks SET version = ? WHERE uid = ? IF version = null";
    blocks_bump = "UPDATE blocks SET version = ? WHERE uid = ? IF version = ?";
    block_put = "INSERT INTO blocks (uid, other) VALUES (?, ?)";
    block_delete = "DELETE FROM blocks WHERE uid = ? AND other = ?";
}
