//! Conversation settings ([`tern_store::ConversationSettings`]) in keyspace
//! `settings`: conversation u64 → `version u8 · timer_secs u32`, from
//! version 2 `· admins: count u16 · user¹ …`, from version 3 `·
//! everyone_adds u8`. A reader ignores bytes past
//! the fields its version knows, so later versions append.

use tern_store::{BackendError, ConversationId, ConversationSettings};

use crate::{layout as keys, Ctx, Inner};

const VERSION: u8 = 3;

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
        let count = u16::try_from(settings.admins.len()).map_err(|_| {
            BackendError::corrupt(format!("too many administrators to store for {id}"))
        })?;
        value.extend_from_slice(&count.to_be_bytes());
        for admin in &settings.admins {
            value.extend_from_slice(&keys::user(admin)?);
        }
        value.push(u8::from(settings.everyone_adds));
        let mut batch = self.db.batch();
        batch.insert(&self.ks.settings, keys::conv(id), value);
        self.write(batch, "writing conversation settings")
    }
}

fn decode(id: ConversationId, value: &[u8]) -> Result<ConversationSettings, BackendError> {
    let corrupt = || BackendError::corrupt(format!("corrupt settings of conversation {id}"));
    let version = *value.first().ok_or_else(corrupt)?;
    let timer_secs = keys::u32_at(value, 1, "conversation settings")?;
    let mut settings = ConversationSettings {
        timer_secs,
        ..ConversationSettings::default()
    };
    if version < 2 {
        return Ok(settings);
    }
    let count_bytes = value.get(5..7).ok_or_else(corrupt)?;
    let count = u16::from_be_bytes(<[u8; 2]>::try_from(count_bytes).map_err(|_| corrupt())?);
    let mut rest = value.get(7..).ok_or_else(corrupt)?;
    for _ in 0..count {
        let (&len, tail) = rest.split_first().ok_or_else(corrupt)?;
        let name = tail.get(..usize::from(len)).ok_or_else(corrupt)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt())?;
        settings.admins.insert(name);
        rest = tail.get(usize::from(len)..).ok_or_else(corrupt)?;
    }
    if version >= 3 {
        settings.everyone_adds = *rest.first().ok_or_else(corrupt)? != 0;
    }
    Ok(settings)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::decode;

    #[test]
    fn version_1_values_have_no_administrators() {
        let settings = decode(7, &[1, 0, 0, 0, 60]).expect("decodes");
        assert_eq!(settings.timer_secs, 60);
        assert!(settings.admins.is_empty());
        assert!(
            decode(7, &[2, 0, 0, 0, 60, 0, 1, 5, b'a']).is_err(),
            "truncated"
        );
        let v2 = decode(7, &[2, 0, 0, 0, 60, 0, 1, 1, b'a']).expect("version 2");
        assert_eq!((v2.admins.len(), v2.everyone_adds), (1, false));
    }
}
