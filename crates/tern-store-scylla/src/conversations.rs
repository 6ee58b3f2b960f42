//! [`ConversationStore`] on ScyllaDB. A conversation's record and head are
//! static columns of its `conversations` partition, created with `IF kind =
//! null` (its id: `IdTaken` when set); a unique key (direct pair,
//! note-to-self) is then claimed `IF NOT EXISTS` in `conversation_keys`,
//! and a creation that loses that race deletes its record (an LWT too, `IF
//! head = 0`: a plain delete of cells an LWT wrote is ordered by its
//! coordinator's clock, not after the Paxos ballot, so under clock skew it
//! could be shadowed and leave the record behind) and returns the winner
//! (`Existing`). Membership is `members` (per conversation) plus the
//! users' `user_conversations` index, changed together in logged batches.

use std::collections::BTreeSet;

use async_trait::async_trait;
use tern_store::{
    BackendError, ConversationId, ConversationKind, ConversationRecord, ConversationSettings,
    ConversationStore, CreateConversationError, CreateOutcome, MembersError, Seq, UserId,
};

use crate::codec::{dec, dec32, enc, enc32};
use crate::db::{next_page, BatchBuilder, READ_PAGE};
use crate::error;
use crate::ScyllaStore;

/// `kind, creator, created_ms, head, epoch, fence` (static columns).
pub(crate) type StateRow = (
    Option<i8>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A conversation's static state as read.
#[derive(Clone, Debug)]
pub(crate) struct State {
    pub(crate) kind: ConversationKind,
    pub(crate) creator: UserId,
    pub(crate) created_ms: u64,
    /// The stored head column (`None` reads as 0).
    pub(crate) head_col: Option<i64>,
    pub(crate) epoch_col: Option<i64>,
    pub(crate) fence_col: Option<i64>,
}

impl State {
    pub(crate) fn head(&self) -> Seq {
        self.head_col.map_or(0, dec)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch_col.map_or(0, dec)
    }

    pub(crate) fn fence(&self) -> u64 {
        self.fence_col.map_or(0, dec)
    }
}

pub(crate) fn kind_tag(kind: ConversationKind) -> i8 {
    match kind {
        ConversationKind::Direct => 1,
        ConversationKind::Group => 2,
        ConversationKind::NoteToSelf => 3,
    }
}

fn kind_of(tag: i8) -> Result<ConversationKind, BackendError> {
    match tag {
        1 => Ok(ConversationKind::Direct),
        2 => Ok(ConversationKind::Group),
        3 => Ok(ConversationKind::NoteToSelf),
        other => Err(error::decode(
            "conversation",
            format!("unknown kind {other}"),
        )),
    }
}

impl ScyllaStore {
    /// The static state of conversation `id`, or `None` if it was never created.
    pub(crate) async fn state(&self, id: ConversationId) -> Result<Option<State>, BackendError> {
        let row: Option<StateRow> = self
            .db
            .first("conversation", &self.db.st.conversation_get, (enc(id),))
            .await?;
        let Some((Some(kind), creator, created_ms, head_col, epoch_col, fence_col)) = row else {
            return Ok(None);
        };
        Ok(Some(State {
            kind: kind_of(kind)?,
            creator: creator.unwrap_or_default(),
            created_ms: created_ms.map_or(0, dec),
            head_col,
            epoch_col,
            fence_col,
        }))
    }

    pub(crate) async fn members(
        &self,
        id: ConversationId,
    ) -> Result<BTreeSet<UserId>, BackendError> {
        let st = &self.db.st;
        let first = (enc(id), READ_PAGE);
        let mut page: Vec<(String,)> = self.db.rows("members", &st.members_first, first).await?;
        let mut out = BTreeSet::new();
        loop {
            let full = usize::try_from(READ_PAGE).is_ok_and(|n| page.len() >= n);
            let last = page.last().map(|(user,)| user.clone());
            out.extend(page.into_iter().map(|(user,)| user));
            let (true, Some(last)) = (full, last) else {
                return Ok(out);
            };
            let after = (enc(id), last, READ_PAGE);
            page = self.db.rows("members", &st.members_after, after).await?;
        }
    }

    /// Every row of `user`'s conversation index: `(id, kind)`, ascending
    /// id, read in pages.
    async fn user_index(&self, user: &str) -> Result<Vec<(i64, Option<i8>)>, BackendError> {
        let mut out = Vec::new();
        let mut from = i64::MIN;
        loop {
            let values = (user, from, READ_PAGE);
            let page: Vec<(i64, Option<i8>)> = self
                .db
                .rows("user_conversations", &self.db.st.index_from, values)
                .await?;
            let next = next_page(page.len(), page.last().map(|(id, _)| *id));
            out.extend(page);
            match next {
                Some(next) => from = next,
                None => return Ok(out),
            }
        }
    }

    pub(crate) fn record(
        id: ConversationId,
        state: &State,
        members: BTreeSet<UserId>,
    ) -> ConversationRecord {
        ConversationRecord {
            id,
            kind: state.kind,
            creator: state.creator.clone(),
            members,
            created_ms: state.created_ms,
            head_seq: state.head(),
        }
    }

    /// Adds to `batch` the membership writes of adding `add` (those not in
    /// `members` already, from seq `since`) then removing `remove`.
    pub(crate) fn membership_writes(
        &self,
        batch: &mut BatchBuilder,
        id: ConversationId,
        kind: ConversationKind,
        members: &mut BTreeSet<UserId>,
        change: (&[UserId], &[UserId], Seq),
    ) {
        let (add, remove, since) = change;
        let st = &self.db.st;
        for user in add {
            if members.insert(user.clone()) {
                batch.push(&st.member_put, (enc(id), user.clone(), enc(since)));
                let index = (user.clone(), enc(id), enc(since), kind_tag(kind));
                batch.push(&st.index_put, index);
            }
        }
        for user in remove {
            members.remove(user);
            batch.push(&st.member_delete, (enc(id), user.clone()));
            batch.push(&st.index_delete, (user.clone(), enc(id)));
        }
    }

    async fn existing(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, BackendError> {
        let Some(state) = self.state(id).await? else {
            return Ok(None);
        };
        let members = self.members(id).await?;
        Ok(Some(Self::record(id, &state, members)))
    }
}

#[async_trait]
impl ConversationStore for ScyllaStore {
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique_key: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError> {
        let st = &self.db.st;
        if let Some(key) = unique_key {
            if let Some(id) = self.conversation_by_key(key).await? {
                if let Some(existing) = self.existing(id).await? {
                    return Ok(CreateOutcome::Existing(existing));
                }
            }
        }
        let id = enc(record.id);
        let create = (
            kind_tag(record.kind),
            record.creator.as_str(),
            enc(record.created_ms),
            enc(0),
            enc(0),
            id,
        );
        if !self
            .db
            .applied("create_conversation", &st.conversation_create, create)
            .await?
        {
            return Err(CreateConversationError::IdTaken(record.id));
        }
        if let Some(key) = unique_key {
            if !self
                .db
                .applied("create_conversation: unique key", &st.key_claim, (key, id))
                .await?
            {
                self.db
                    .applied(
                        "create_conversation: undo",
                        &st.conversation_undo,
                        (id, enc(0)),
                    )
                    .await?;
                if let Some(winner) = self.conversation_by_key(key).await? {
                    if let Some(existing) = self.existing(winner).await? {
                        return Ok(CreateOutcome::Existing(existing));
                    }
                }
                return Err(BackendError::unavailable(
                    "create_conversation: the unique key was taken by a creation still under way",
                )
                .into());
            }
        }
        let mut batch = BatchBuilder::default();
        let mut members = BTreeSet::new();
        let add: Vec<UserId> = record.members.iter().cloned().collect();
        let change = (add.as_slice(), &[][..], 1);
        self.membership_writes(&mut batch, record.id, record.kind, &mut members, change);
        self.db.batch("create_conversation: members", batch).await?;
        Ok(CreateOutcome::Created)
    }

    async fn conversation_by_key(
        &self,
        unique_key: &[u8],
    ) -> Result<Option<ConversationId>, BackendError> {
        let row: Option<(Option<i64>,)> = self
            .db
            .first("conversation_by_key", &self.db.st.key_get, (unique_key,))
            .await?;
        Ok(row.and_then(|(id,)| id).map(dec))
    }

    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, BackendError> {
        self.existing(id).await
    }

    async fn update_members(
        &self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, MembersError> {
        let state = self
            .state(id)
            .await?
            .ok_or(MembersError::NoSuchConversation(id))?;
        let mut members = self.members(id).await?;
        let since = state.head().saturating_add(1);
        let mut batch = BatchBuilder::default();
        self.membership_writes(
            &mut batch,
            id,
            state.kind,
            &mut members,
            (add, remove, since),
        );
        self.db.batch("update_members", batch).await?;
        Ok(Self::record(id, &state, members))
    }

    async fn user_conversations(&self, user: &str) -> Result<Vec<ConversationId>, BackendError> {
        let rows = self.user_index(user).await?;
        Ok(rows.into_iter().map(|(id, _)| dec(id)).collect())
    }

    async fn user_conversations_after(
        &self,
        user: &str,
        after: ConversationId,
        limit: usize,
    ) -> Result<Vec<ConversationId>, BackendError> {
        if limit == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let st = &self.db.st.index_after;
        let rows: Vec<(i64,)> = self
            .db
            .rows("user_conversations_after", st, (user, enc(after), limit))
            .await?;
        Ok(rows.into_iter().map(|(id,)| dec(id)).collect())
    }

    async fn group_count(&self, user: &str) -> Result<usize, BackendError> {
        let rows = self.user_index(user).await?;
        let group = kind_tag(ConversationKind::Group);
        Ok(rows.iter().filter(|(_, kind)| *kind == Some(group)).count())
    }

    async fn member_since(
        &self,
        id: ConversationId,
        user: &str,
    ) -> Result<Option<Seq>, BackendError> {
        let row: Option<(Option<i64>,)> = self
            .db
            .first("member_since", &self.db.st.index_since, (user, enc(id)))
            .await?;
        Ok(row.and_then(|(since,)| since).map(dec))
    }

    async fn settings(&self, id: ConversationId) -> Result<ConversationSettings, BackendError> {
        type Row = (Option<i32>, Option<Vec<String>>, Option<bool>);
        let row: Option<Row> = self
            .db
            .first("settings", &self.db.st.settings_get, (enc(id),))
            .await?;
        Ok(match row {
            Some((timer, admins, everyone_adds)) => ConversationSettings {
                timer_secs: timer.map_or(0, dec32),
                admins: admins.into_iter().flatten().collect(),
                everyone_adds: everyone_adds.unwrap_or(false),
            },
            None => ConversationSettings::default(),
        })
    }

    async fn put_settings(
        &self,
        id: ConversationId,
        settings: &ConversationSettings,
    ) -> Result<(), BackendError> {
        let admins: Vec<String> = settings.admins.iter().cloned().collect();
        let values = (
            enc(id),
            enc32(settings.timer_secs),
            admins,
            settings.everyone_adds,
        );
        self.db
            .run("put_settings", &self.db.st.settings_put, values)
            .await?;
        Ok(())
    }
}
