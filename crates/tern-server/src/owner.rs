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

use crate::effects::{self, Effect, Outcome};
use crate::mesh::{encode_reply, Caller, OwnerRequest, Reject};
use crate::shard::{ServerStats, ShardCtx};
use tern_proto::fb::ErrorCode;
use tern_store::{ConversationId, ConversationRecord, DeviceId, MembersError, UserId};

/// Most requests taken into one batch.
const MAX_BATCH: usize = 512;
/// Conversations cached per owner before the cache is reset.
const MAX_CACHED: usize = 200_000;

/// What the owner knows about one conversation.
pub struct ConvState {
    pub record: ConversationRecord,
    /// Every device of every member, shared by all fan-outs of this conversation.
    pub recipients: Arc<[(UserId, DeviceId)]>,
}

impl ConvState {
    pub fn is_member(&self, user: &str) -> bool {
        self.record.members.contains(user)
    }

    /// Refuses callers who are not members.
    pub fn require_member(&self, caller: &Caller) -> Result<(), Reject> {
        if self.is_member(&caller.user) {
            return Ok(());
        }
        Err(Reject::new(
            ErrorCode::NotMember,
            format!(
                "{} is not a member of conversation {}",
                caller.user, self.record.id
            ),
        ))
    }
}

/// The owner state of one shard.
pub struct Owner {
    pub ctx: Rc<ShardCtx>,
    convs: HashMap<ConversationId, ConvState>,
}

impl Owner {
    pub fn new(ctx: Rc<ShardCtx>) -> Self {
        Owner {
            ctx,
            convs: HashMap::new(),
        }
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
        self.convs
            .insert(record.id, ConvState { record, recipients });
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

    /// Forgets conversations whose recipients include `user` (its devices changed).
    pub fn forget_user(&mut self, user: &str) {
        self.convs.retain(|_, state| !state.is_member(user));
    }

    /// Forgets one conversation's cached state (its head may be stale).
    pub fn forget(&mut self, id: ConversationId) {
        self.convs.remove(&id);
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
    while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        process_batch(&mut owner, batch.drain(..)).await;
    }
}

struct Pending {
    request_id: u64,
    reply_to: oneshot::Sender<Bytes>,
    outcome: Outcome,
}

/// Applies a batch, persists it once, then answers and performs effects in
/// order (see [`crate::effects`]).
async fn process_batch(owner: &mut Owner, requests: impl Iterator<Item = OwnerRequest>) {
    let mut pending = Vec::new();
    for request in requests {
        match request {
            OwnerRequest::Command {
                request_id,
                caller,
                command,
                reply,
            } => {
                let outcome = command.apply(owner, &caller).await;
                pending.push(Pending {
                    request_id,
                    reply_to: reply,
                    outcome,
                });
            }
            OwnerRequest::ForgetUser(user) => owner.forget_user(&user),
        }
    }
    let store = owner.ctx.store.clone();
    if !effects::settle(store.as_ref(), pending.iter_mut().map(|p| &mut p.outcome)).await {
        owner.forget_all();
    }
    for p in pending {
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
