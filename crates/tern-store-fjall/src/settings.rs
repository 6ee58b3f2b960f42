//! Conversation settings ([`tern_store::ConversationSettings`]) in keyspace
//! `settings`: conversation u64 → `version u8 (1) · timer_secs u32`. A
//! reader ignores bytes past the fields it knows, so later versions append.

use tern_store::{BackendError, ConversationId, ConversationSettings};

use crate::{layout as keys, Ctx, Inner};

const VERSION: u8 = 1;

impl Inner {
    pub(crate) fn settings(
        &self,
        id: ConversationId,
    ) -> Result<ConversationSettings, BackendError> {
        let value = self
            .ks
            .settings
            .get(keys::conv(id))
            .ctx("reading conversation settings")?;
        value.map_or_else(|| Ok(ConversationSettings::default()), |v| decode(id, &v))
    }

    pub(crate) fn put_settings(
        &self,
        id: ConversationId,
        settings: &ConversationSettings,
    ) -> Result<(), BackendError> {
        let mut value = vec![VERSION];
        value.extend_from_slice(&settings.timer_secs.to_be_bytes());
        let mut batch = self.db.batch();
        batch.insert(&self.ks.settings, keys::conv(id), value);
        self.write(batch, "writing conversation settings")
    }
}

fn decode(id: ConversationId, value: &[u8]) -> Result<ConversationSettings, BackendError> {
    match value.first() {
        Some(&v) if v >= VERSION => Ok(ConversationSettings {
            timer_secs: keys::u32_at(value, 1, "conversation settings")?,
        }),
        _ => Err(BackendError::corrupt(format!(
            "corrupt settings of conversation {id}"
        ))),
    }
}
