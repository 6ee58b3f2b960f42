//! Call history (issue 11): one row per call this device took part in
//! (rang for, placed, answered), written by the SDK when the call ends
//! ([`crate::secure::calls`]), as WhatsApp and Signal list calls: the
//! peer, incoming or outgoing, when it started, how it ended and, once
//! answered, how long it lasted. Never sent anywhere; a call is not a
//! message (the server keeps no trace of one).
//!
//! Table `calls` (schema version [`CALLS_SINCE`]): `call_id` (the caller's
//! random id) with `peer`, unique together; `conversation_id`, `incoming`
//! (1 or 0), `outcome` (the [`Outcome`] name), `started_ms` (ms since the
//! Unix epoch: the offer's server time for an incoming call, the local
//! time for an outgoing one), `duration_ms` (0 unless answered).

use rusqlite::{params, Row};

use super::{MessageStore, MessageStoreError};
use crate::calls::machine::End;

/// The schema version that added the `calls` table.
pub const CALLS_SINCE: i64 = 5;

/// The `calls` table (idempotent, so a migration step may run it again).
pub(super) const SCHEMA_CALLS: &str = "
CREATE TABLE IF NOT EXISTS calls (
    call_id INTEGER NOT NULL,
    peer TEXT NOT NULL,
    conversation_id INTEGER NOT NULL,
    incoming INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (call_id, peer)
);
CREATE INDEX IF NOT EXISTS calls_by_start ON calls (started_ms);
";

/// Who placed the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The peer called this account.
    Incoming,
    /// This device called the peer.
    Outgoing,
}

/// How a call ended, as the history shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected; the record's duration says for how long.
    Answered,
    /// Incoming, rang here and nobody answered before the caller gave up
    /// or 45 s passed.
    Missed,
    /// Incoming, declined on this device; or outgoing, declined by the peer.
    Declined,
    /// Outgoing, cancelled here before an answer.
    Cancelled,
    /// Outgoing, not answered within 45 s.
    NoAnswer,
    /// Outgoing: the peer was in another call.
    Busy,
    /// Incoming, answered on another device of this account.
    AnsweredElsewhere,
    /// Incoming, declined on another device of this account.
    DeclinedElsewhere,
}

impl Outcome {
    /// The outcome of a call that went `direction`, ended for `why`, and
    /// had `connected`.
    pub fn of(direction: Direction, why: End, connected: bool) -> Outcome {
        if connected {
            return Outcome::Answered;
        }
        match (direction, why) {
            (_, End::AnsweredElsewhere) => Outcome::AnsweredElsewhere,
            (_, End::DeclinedElsewhere) => Outcome::DeclinedElsewhere,
            (_, End::Busy) => Outcome::Busy,
            (Direction::Incoming, End::LocalHangup) => Outcome::Declined,
            (Direction::Incoming, End::RemoteHangup | End::NoAnswer) => Outcome::Missed,
            (Direction::Outgoing, End::LocalHangup) => Outcome::Cancelled,
            (Direction::Outgoing, End::RemoteHangup) => Outcome::Declined,
            (Direction::Outgoing, End::NoAnswer) => Outcome::NoAnswer,
        }
    }

    /// The stored name: `answered`, `missed`, `declined`, `cancelled`,
    /// `no-answer`, `busy`, `answered-elsewhere`, `declined-elsewhere`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Missed => "missed",
            Outcome::Declined => "declined",
            Outcome::Cancelled => "cancelled",
            Outcome::NoAnswer => "no-answer",
            Outcome::Busy => "busy",
            Outcome::AnsweredElsewhere => "answered-elsewhere",
            Outcome::DeclinedElsewhere => "declined-elsewhere",
        }
    }

    fn from_name(name: &str) -> Option<Outcome> {
        [
            Outcome::Answered,
            Outcome::Missed,
            Outcome::Declined,
            Outcome::Cancelled,
            Outcome::NoAnswer,
            Outcome::Busy,
            Outcome::AnsweredElsewhere,
            Outcome::DeclinedElsewhere,
        ]
        .into_iter()
        .find(|o| o.name() == name)
    }
}

/// One call in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The caller's random id of the call.
    pub call_id: u64,
    /// The direct conversation the signals went through.
    pub conversation_id: u64,
    /// The other user.
    pub peer: String,
    pub direction: Direction,
    pub outcome: Outcome,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// How long it was connected, ms (0 unless answered).
    pub duration_ms: u64,
}

impl MessageStore {
    /// Writes `call` (a call with the same id and peer is replaced).
    ///
    /// # Errors
    /// [`MessageStoreError::Sqlite`] when the file cannot be written.
    pub fn record_call(&self, call: &CallRecord) -> Result<(), MessageStoreError> {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO calls (call_id, peer, conversation_id, incoming, outcome, started_ms, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    call.call_id as i64,
                    call.peer,
                    call.conversation_id as i64,
                    call.direction == Direction::Incoming,
                    call.outcome.name(),
                    as_i64(call.started_ms),
                    as_i64(call.duration_ms),
                ],
            )
            .map(drop)
        })
    }

    /// The latest `limit` calls, newest first.
    ///
    /// # Errors
    /// [`MessageStoreError::ZeroLimit`]; [`MessageStoreError::Sqlite`];
    /// [`MessageStoreError::Damaged`] for a row with an unknown outcome.
    pub fn call_history(&self, limit: u32) -> Result<Vec<CallRecord>, MessageStoreError> {
        if limit == 0 {
            return Err(MessageStoreError::ZeroLimit);
        }
        let conn = self.lock();
        let rows: Vec<(CallRecord, String)> = conn
            .prepare(
                "SELECT call_id, conversation_id, peer, incoming, outcome, started_ms, duration_ms FROM calls ORDER BY started_ms DESC, rowid DESC LIMIT ?1",
            )
            .and_then(|mut s| s.query_map(params![limit], call_row)?.collect())
            .map_err(|e| self.failed(e))?;
        rows.into_iter()
            .map(|(mut record, outcome)| {
                record.outcome =
                    Outcome::from_name(&outcome).ok_or_else(|| MessageStoreError::Damaged {
                        conversation_id: record.conversation_id,
                        seq: 0,
                        reason: format!("call {} has unknown outcome {outcome:?}", record.call_id),
                    })?;
                Ok(record)
            })
            .collect()
    }
}

/// A row, its outcome name apart (checked by the caller).
fn call_row(row: &Row<'_>) -> rusqlite::Result<(CallRecord, String)> {
    let unsigned = |i: usize| row.get::<_, i64>(i).map(|v| v as u64);
    let incoming: bool = row.get(3)?;
    Ok((
        CallRecord {
            call_id: unsigned(0)?,
            conversation_id: unsigned(1)?,
            peer: row.get(2)?,
            direction: if incoming {
                Direction::Incoming
            } else {
                Direction::Outgoing
            },
            outcome: Outcome::Missed,
            started_ms: unsigned(5)?,
            duration_ms: unsigned(6)?,
        },
        row.get(4)?,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(call_id: u64, started_ms: u64, outcome: Outcome) -> CallRecord {
        CallRecord {
            call_id,
            conversation_id: 9,
            peer: "bob".into(),
            direction: Direction::Outgoing,
            outcome,
            started_ms,
            duration_ms: if outcome == Outcome::Answered {
                61_000
            } else {
                0
            },
        }
    }

    #[test]
    fn calls_come_back_newest_first_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(dir.path().join("m.sqlite3")).unwrap();
        assert!(store.call_history(10).unwrap().is_empty());
        store
            .record_call(&record(1, 1_000, Outcome::Answered))
            .unwrap();
        store
            .record_call(&record(u64::MAX, 3_000, Outcome::Busy))
            .unwrap();
        let mut missed = record(2, 2_000, Outcome::Missed);
        missed.direction = Direction::Incoming;
        store.record_call(&missed).unwrap();
        let all = store.call_history(10).unwrap();
        assert_eq!(
            all,
            vec![
                record(u64::MAX, 3_000, Outcome::Busy),
                missed,
                record(1, 1_000, Outcome::Answered)
            ]
        );
        assert_eq!(store.call_history(1).unwrap().len(), 1);
        assert!(matches!(
            store.call_history(0),
            Err(MessageStoreError::ZeroLimit)
        ));
        // Reopened: durable.
        drop(store);
        let store = MessageStore::open(dir.path().join("m.sqlite3")).unwrap();
        assert_eq!(store.call_history(10).unwrap().len(), 3);
    }

    #[test]
    fn outcomes_follow_direction_and_end() {
        use Direction::{Incoming, Outgoing};
        assert_eq!(
            Outcome::of(Incoming, End::RemoteHangup, true),
            Outcome::Answered
        );
        assert_eq!(Outcome::of(Incoming, End::NoAnswer, false), Outcome::Missed);
        assert_eq!(
            Outcome::of(Incoming, End::RemoteHangup, false),
            Outcome::Missed
        );
        assert_eq!(
            Outcome::of(Incoming, End::LocalHangup, false),
            Outcome::Declined
        );
        assert_eq!(
            Outcome::of(Outgoing, End::RemoteHangup, false),
            Outcome::Declined
        );
        assert_eq!(
            Outcome::of(Outgoing, End::LocalHangup, false),
            Outcome::Cancelled
        );
        assert_eq!(
            Outcome::of(Outgoing, End::NoAnswer, false),
            Outcome::NoAnswer
        );
        assert_eq!(Outcome::of(Outgoing, End::Busy, false), Outcome::Busy);
        assert_eq!(
            Outcome::of(Incoming, End::AnsweredElsewhere, false),
            Outcome::AnsweredElsewhere
        );
        for outcome in [Outcome::NoAnswer, Outcome::DeclinedElsewhere] {
            assert_eq!(Outcome::from_name(outcome.name()), Some(outcome));
        }
    }
}
