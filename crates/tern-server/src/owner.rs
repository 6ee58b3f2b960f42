//! The conversation owner: the one task per shard that sequences, authorises,
//! persists and fans out the conversations hashed to this shard.
//!
//! It takes commands in batches: applies each (writes go to the store at
//! once), then makes the whole batch durable with one `persist` (group commit
//! across shards happens in the store), and only then answers and performs
//! the effects, in order. While one batch is being persisted the next one
//! queues up.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::cmd;
use crate::effects::{self, Effect, Outcome};
use crate::mesh::{encode_reply, Caller, OwnerRequest, Reject};
use crate::ratelimit::ConversationSends;
use crate::shard::{ServerStats, ShardCtx};
use tern_proto::fb::ErrorCode;
use tern_store::{
    ConversationId, ConversationRecord, ConversationSettings, DeviceId, FenceToken, Fences,
    MembersError, StoredMessage, UserId,
};

/// Most requests taken into one batch.
const MAX_BATCH: usize = 512;
/// Conversations cached per owner before the cache is reset.
const MAX_CACHED: usize = 200_000;

/// Client message ids remembered per conversation for the idempotency check.
const RECENT_IDS: usize = 256;

/// What the owner knows about one conversation.
pub struct ConvState {
    pub record: ConversationRecord,
    /// Every device of every member, shared by all fan-outs of this conversation.
    pub recipients: Arc<[(UserId, DeviceId)]>,
    /// The last [`RECENT_IDS`] messages sequenced here since the conversation
    /// was cached: a retried send is answered from this index without
    /// taking a seq (the store still checks every append).
    pub recent: RecentIds,
    /// Direct conversations: whether the member who did not create it has
    /// been recorded, by this process, as having the creator for a contact
    /// (done on its first send; see `cmd::consent::note_reply`).
    pub contact_noted: bool,
    /// Direct conversations: per sender, whether the other member blocked
    /// it, with the block-list generation it was read at (see `cmd::block`).
    pub blocked_senders: HashMap<UserId, (u64, bool)>,
    /// The conversation's settings (timer), as stored.
    pub settings: ConversationSettings,
}

/// `(sender user, sender device, client message id)` → the stored message's
/// `(seq, server_time_ms)`, oldest evicted first.
#[derive(Default)]
pub struct RecentIds {
    by_key: HashMap<(UserId, DeviceId, u64), (u64, u64)>,
    order: std::collections::VecDeque<(UserId, DeviceId, u64)>,
}

impl RecentIds {
    pub fn get(&self, user: &str, device: DeviceId, cmid: u64) -> Option<(u64, u64)> {
        self.by_key.get(&(user.to_owned(), device, cmid)).copied()
    }

    pub fn insert(&mut self, user: &str, device: DeviceId, cmid: u64, seq: u64, time_ms: u64) {
        let key = (user.to_owned(), device, cmid);
        if self.by_key.insert(key.clone(), (seq, time_ms)).is_none() {
            self.order.push_back(key);
        }
        if self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }
}

impl ConvState {
    pub fn is_member(&self, user: &str) -> bool {
        self.record.members.contains(user)
    }

    /// Refuses callers who are not members.
    /// Refuses callers who are not members, and devices that are no longer
    /// active (requests a revoked device pipelined behind its revocation:
    /// the revocation makes every owner reload its recipients first).
    pub fn require_member(&self, caller: &Caller) -> Result<(), Reject> {
        if !self.is_member(&caller.user) {
            return Err(Reject::new(
                ErrorCode::NotMember,
                format!(
                    "{} is not a member of conversation {}",
                    caller.user, self.record.id
                ),
            ));
        }
        let active = self
            .recipients
            .iter()
            .any(|(user, device)| *device == caller.device && *user == caller.user);
        match active {
            true => Ok(()),
            false => Err(Reject::new(
                ErrorCode::AuthFailed,
                format!("{}/{} was revoked", caller.user, caller.device),
            )),
        }
    }
}

/// The owner state of one shard.
pub struct Owner {
    pub ctx: Rc<ShardCtx>,
    convs: HashMap<ConversationId, ConvState>,
    /// Send buckets of the conversations owned here (kept apart from the
    /// cache, whose resets must not refill them).
    sends: ConversationSends,
    /// Typing-signal buckets per (conversation, device) (see `realtime::typing`).
    pub typing: crate::realtime::typing::TypingLimits,
    /// In a cluster: the fencing token of each conversation this node
    /// claimed (`tern_store::OwnershipStore`), passed with every append.
    /// Kept apart from the cache: a cache reset must not re-claim.
    fences: HashMap<ConversationId, FenceToken>,
}

impl Owner {
    pub fn new(ctx: Rc<ShardCtx>) -> Self {
        Owner {
            sends: ConversationSends::new(&ctx.config),
            typing: crate::realtime::typing::TypingLimits::default(),
            ctx,
            convs: HashMap::new(),
            fences: HashMap::new(),
        }
    }

    /// The token appends of `id` carry: `None` on a single node, else the
    /// one this node's claim returned (claimed on first use).
    pub async fn fence(&mut self, id: ConversationId) -> Result<Option<FenceToken>, Reject> {
        let Some(node) = self.ctx.node_id() else {
            return Ok(None);
        };
        if let Some(token) = self.fences.get(&id) {
            return Ok(Some(*token));
        }
        let claimed = self.ctx.store.claim_ownership(id, node).await;
        let token = claimed.map_err(Reject::store)?;
        self.fences.insert(id, token);
        Ok(Some(token))
    }

    /// The fences of the conversations of `msgs` this node holds.
    fn fences_of(&self, msgs: &[StoredMessage]) -> Fences {
        let mut fences = Fences::none();
        for msg in msgs {
            if let Some(token) = self.fences.get(&msg.conversation_id) {
                fences.insert(msg.conversation_id, *token);
            }
        }
        fences
    }

    /// Drops every claim (the cluster's live nodes changed): conversations
    /// still owned here are claimed again on their next append.
    pub fn drop_fences(&mut self) {
        self.fences.clear();
    }

    /// Charges one appended message to conversation `id` and to `user`'s
    /// account (`sends_per_conversation_*`, `sends_per_account_*`).
    ///
    /// # Errors
    /// `RateLimited` with `retry_after_ms`; nothing is charged then.
    pub fn take_send(&mut self, user: &str, id: ConversationId) -> Result<(), Reject> {
        let now = self.ctx.clock.now_ms();
        self.sends.take(&self.ctx.limits, user, id, now)
    }

    /// The cached state of a conversation, loaded from the store on a miss.
    pub async fn conversation(&mut self, id: ConversationId) -> Result<&mut ConvState, Reject> {
        if !self.convs.contains_key(&id) {
            let record = self
                .ctx
                .store
                .conversation(id)
                .await
                .map_err(Reject::store)?;
            let record = record.ok_or_else(|| {
                Reject::new(
                    ErrorCode::NotFound,
                    format!("conversation {id} does not exist"),
                )
            })?;
            self.cache(record).await?;
        }
        self.fence(id).await?;
        self.convs
            .get_mut(&id)
            .ok_or_else(|| Reject::internal("conversation cache"))
    }

    /// Changes membership in the store and refreshes the cached recipients.
    pub async fn update_members(
        &mut self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, Reject> {
        let record = self
            .ctx
            .store
            .update_members(id, add, remove)
            .await
            .map_err(|e| match e {
                MembersError::NoSuchConversation(id) => Reject::new(
                    ErrorCode::NotFound,
                    format!("conversation {id} does not exist"),
                ),
                MembersError::Backend(e) => Reject::store(e),
            })?;
        self.cache(record.clone()).await?;
        Ok(record)
    }

    /// Caches a (new or changed) record with its recipient devices.
    pub async fn cache(&mut self, record: ConversationRecord) -> Result<(), Reject> {
        let recipients = self.recipients(&record).await?;
        if self.convs.len() >= MAX_CACHED {
            self.convs.clear();
        }
        // A changed record (members, head) keeps the ids seen so far and
        // the settings; a newly cached one reads its settings.
        let (recent, contact_noted, settings) = match self.convs.remove(&record.id) {
            Some(old) => (old.recent, old.contact_noted, old.settings),
            None => {
                let settings = self.ctx.store.settings(record.id).await;
                let settings = settings.map_err(Reject::store)?;
                (RecentIds::default(), false, settings)
            }
        };
        let state = ConvState {
            record,
            recipients,
            recent,
            contact_noted,
            blocked_senders: HashMap::new(),
            settings,
        };
        self.convs.insert(state.record.id, state);
        Ok(())
    }

    async fn recipients(
        &self,
        record: &ConversationRecord,
    ) -> Result<Arc<[(UserId, DeviceId)]>, Reject> {
        let mut out = Vec::new();
        for member in &record.members {
            let devices = self
                .ctx
                .store
                .devices(member)
                .await
                .map_err(Reject::store)?;
            out.extend(devices.into_iter().map(|d| (member.clone(), d.device)));
        }
        Ok(out.into())
    }

    /// Drops the cached state of `id` when `caller` is a member whose device
    /// is missing from its recipients: the device was added elsewhere (on
    /// another node, whose news has not arrived yet), so the next access
    /// reloads it from the store instead of refusing the device. A revoked
    /// device is still refused after the reload. The claim is kept.
    pub fn refresh_for(&mut self, id: ConversationId, caller: &Caller) {
        let stale = self.convs.get(&id).is_some_and(|state| {
            let known = state.recipients.iter();
            state.is_member(&caller.user)
                && !known
                    .clone()
                    .any(|(user, device)| *device == caller.device && *user == caller.user)
        });
        if stale {
            self.convs.remove(&id);
        }
    }

    /// Forgets conversations whose recipients include `user` (its devices changed).
    pub fn forget_user(&mut self, user: &str) {
        self.convs.retain(|_, state| !state.is_member(user));
    }

    /// Indexes a message the store has written, so that its retries are
    /// answered without the store.
    pub fn remember(&mut self, msg: &StoredMessage) {
        if let Some(state) = self.convs.get_mut(&msg.conversation_id) {
            let (user, device, cmid) = (&msg.sender_user, msg.sender_device, msg.client_message_id);
            state
                .recent
                .insert(user, device, cmid, msg.seq, msg.server_time_ms);
        }
    }

    /// Forgets one conversation's cached state (its head may be stale, or
    /// another node took it over: its claim is dropped too).
    pub fn forget(&mut self, id: ConversationId) {
        self.convs.remove(&id);
        self.fences.remove(&id);
    }

    /// Forgets cached state (after a failed persist the heads may be stale).
    pub fn forget_all(&mut self) {
        self.convs.clear();
    }
}

/// Runs the owner loop of one shard until its inbox closes.
pub async fn run(ctx: Rc<ShardCtx>, mut inbox: mpsc::Receiver<OwnerRequest>) {
    let mut owner = Owner::new(ctx);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut view = owner.ctx.mesh.cluster_version();
    while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // In a cluster, once the live nodes change, what was cached and
        // claimed may belong to another node now: reload and claim again.
        let now = owner.ctx.mesh.cluster_version();
        if now != view {
            view = now;
            owner.forget_all();
            owner.drop_fences();
        }
        process_batch(&mut owner, batch.drain(..)).await;
    }
}

struct Pending {
    request_id: u64,
    reply_to: oneshot::Sender<Bytes>,
    outcome: Outcome,
}

/// Applies a batch, writes its staged appends in one store write, persists
/// once, then answers and performs effects in order (see [`crate::effects`]).
async fn process_batch(owner: &mut Owner, requests: impl Iterator<Item = OwnerRequest>) {
    let mut pending: Vec<Pending> = Vec::new();
    for request in requests {
        match request {
            OwnerRequest::Command {
                request_id,
                caller,
                command,
                reply,
            } => {
                if !command.only_stages() {
                    write_staged(owner, &mut pending).await;
                }
                owner.refresh_for(command.conversation(), &caller);
                let span = tracing::debug_span!(
                    "owner",
                    request_id,
                    conversation = command.conversation()
                );
                let outcome = command.apply(owner, &caller).instrument(span).await;
                pending.push(Pending {
                    request_id,
                    reply_to: reply,
                    outcome,
                });
            }
            OwnerRequest::ForgetUser(user) => owner.forget_user(&user),
        }
    }
    write_staged(owner, &mut pending).await;
    let store = owner.ctx.store.clone();
    let started = std::time::Instant::now();
    let durable = pending.iter().any(|p| p.outcome.is_durable());
    if !effects::settle(store.as_ref(), pending.iter_mut().map(|p| &mut p.outcome)).await {
        owner.forget_all();
    }
    let telemetry = &owner.ctx.stats.telemetry;
    if durable {
        telemetry.persisted(started.elapsed());
    }
    for p in pending {
        for effect in &p.outcome.effects {
            if let Effect::Deliver(fanout) = effect {
                telemetry.fanout(fanout.recipients.len());
            }
        }
        let _ = p.reply_to.send(encode_reply(p.request_id, p.outcome.reply));
        let stored = p
            .outcome
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::Deliver(_)));
        ServerStats::add(&owner.ctx.stats.messages_stored, stored.count() as u64);
        effects::perform(owner.ctx.delivery.as_ref(), p.outcome.effects).await;
    }
}

/// Appends every staged message of `pending` in one store write and
/// settles each staged outcome with its result.
async fn write_staged(owner: &mut Owner, pending: &mut [Pending]) {
    let (mut outcomes, msgs): (Vec<&mut Outcome>, Vec<StoredMessage>) = pending
        .iter_mut()
        .filter_map(|p| {
            let msg = p.outcome.append.take()?;
            Some((&mut p.outcome, msg))
        })
        .unzip();
    if msgs.is_empty() {
        return;
    }
    let store = owner.ctx.store.clone();
    let started = std::time::Instant::now();
    let fences = owner.fences_of(&msgs);
    let appended = store.append_messages(&msgs, &fences).await;
    owner.ctx.stats.telemetry.appended(started.elapsed());
    match appended {
        Ok(results) => {
            let stats = owner.ctx.stats.clone();
            for ((outcome, msg), result) in outcomes.iter_mut().zip(&msgs).zip(results) {
                if cmd::send::resolve_append(outcome, result, &stats) {
                    owner.forget(msg.conversation_id);
                } else {
                    owner.remember(msg);
                }
            }
        }
        Err(error) => {
            for outcome in outcomes.iter_mut() {
                outcome.reply = Err(Reject::store(error.clone()));
                outcome.effects.clear();
            }
            owner.forget_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_answer_retries_and_forget_the_oldest() {
        let mut recent = RecentIds::default();
        recent.insert("alice", 1, 7, 1, 100);
        assert_eq!(recent.get("alice", 1, 7), Some((1, 100)));
        assert_eq!(recent.get("alice", 2, 7), None, "keyed by device too");
        for cmid in 1000..1000 + RECENT_IDS as u64 {
            recent.insert("bob", 1, cmid, cmid, 0);
        }
        assert_eq!(recent.get("alice", 1, 7), None, "the oldest is evicted");
        assert!(recent.get("bob", 1, 1000).is_some());
        assert_eq!(recent.order.len(), RECENT_IDS);
        assert_eq!(recent.by_key.len(), RECENT_IDS);
    }
}
