//! In-order, once-only delivery as a state machine without I/O (in the
//! style of quinn-proto): the SDK feeds it what the server said and polls it
//! for what to do next. No tokio, no quinn: everything here runs (and is
//! tested) without a server.
//!
//! # The contract
//!
//! Per conversation, every message reaches the application **in seq order,
//! at most once per process**, except this device's own sends (the server
//! never pushes them back, but History pages contain them). Seqs that exist
//! on the server are never skipped, except ones the server no longer has
//! (expired): a History page says which range it covered, and a seq missing
//! from that range is gone, so it cannot wedge the stream.
//!
//! # Inputs and outputs
//!
//! | input | when |
//! |---|---|
//! | [`OrderedDelivery::on_connected`] | a (re)connection is authenticated |
//! | [`OrderedDelivery::on_sync`] / [`OrderedDelivery::on_sync_failed`] | the answer to an [`Action::Sync`] |
//! | [`OrderedDelivery::on_deliver`] | a `Deliver` push arrived |
//! | [`OrderedDelivery::on_page`] / [`OrderedDelivery::on_fetch_failed`] | the answer to an [`Action::Fetch`] |
//!
//! [`OrderedDelivery::poll_action`] then yields, in order:
//!
//! - [`Action::Emit`]: hand this message to the application;
//! - [`Action::Sync`]: send `Sync { all: true }` and feed back its answer;
//! - [`Action::Fetch`]: send `History` for a gap and feed back its page.
//!
//! # Positions
//!
//! For each conversation the machine keeps `delivered`: every seq up to it
//! was emitted, skipped as this device's own, found gone, or acknowledged
//! (the server's delivery cursor, learnt from Sync). Messages that arrive
//! ahead of `delivered + 1` are held until the gap before them is filled
//! from History. After a (re)connect everything is held until the Sync
//! answer gives each conversation its cursor and head: a conversation this
//! process has not seen yet starts at its cursor, not at seq 1. One first
//! seen after that (a conversation created or joined later) starts at 0,
//! so a new member is given the history it may read.
//!
//! Delivery is exactly-once within one process; a new process starts from
//! the cursors the application acknowledged, so what was emitted but not
//! acknowledged before a restart is emitted again (at least once overall).

use std::collections::{BTreeMap, HashMap, VecDeque};

use tern_proto::body::messaging::HistoryPage;
use tern_proto::{ConversationState, Message};

/// What the driver of an [`OrderedDelivery`] must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand this message to the application: in seq order within its
    /// conversation, and once.
    Emit(Message),
    /// Send `Sync { all: true }`; feed the answer to [`OrderedDelivery::on_sync`],
    /// or report a failure with [`OrderedDelivery::on_sync_failed`].
    Sync,
    /// Send `History` for this range; feed the page to [`OrderedDelivery::on_page`],
    /// or report a failure with [`OrderedDelivery::on_fetch_failed`].
    Fetch(Fetch),
}

/// A History request that fills a gap: seqs `from_seq..=to_seq` are known
/// to have existed and were not delivered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub conversation: u64,
    pub from_seq: u64,
    /// The highest seq known to exist when the fetch was issued (inclusive).
    pub to_seq: u64,
}

impl Fetch {
    /// The page size to ask for: the whole range (the server caps it at its
    /// `max_history_page`; the rest is fetched with further pages).
    pub fn limit(&self) -> u32 {
        let count = self.to_seq.saturating_sub(self.from_seq).saturating_add(1);
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// One conversation's position.
#[derive(Debug, Default)]
struct Conversation {
    /// Every seq up to this one is done (emitted, own, gone or acknowledged).
    delivered: u64,
    /// The highest seq known to exist (from Sync, pushes and pages).
    head: u64,
    /// Messages past `delivered + 1`, waiting for the gap before them.
    held: BTreeMap<u64, Message>,
    /// The `from_seq` of the History request in flight, if any.
    fetching: Option<u64>,
    /// The last page made no progress: fetch again only after news (a
    /// push, a Sync or a reconnect), never in a loop.
    stalled: bool,
}

impl Conversation {
    /// Drops held messages at or below `delivered`.
    fn forget_delivered(&mut self) {
        let keep = self.held.split_off(&(self.delivered.saturating_add(1)));
        self.held = keep;
    }

    /// The highest seq known to exist.
    fn target(&self) -> u64 {
        let held = self.held.keys().next_back().copied().unwrap_or(0);
        self.head.max(held)
    }
}

/// The ordering state machine. See the module docs.
#[derive(Debug)]
pub struct OrderedDelivery {
    user: String,
    device: u32,
    conversations: HashMap<u64, Conversation>,
    /// A Sync answer is awaited since the last connect: nothing is emitted
    /// or fetched meanwhile (pushes are held).
    syncing: bool,
    actions: VecDeque<Action>,
}

impl OrderedDelivery {
    /// A machine for the device `user`/`device`, whose own messages are
    /// never emitted.
    pub fn new(user: impl Into<String>, device: u32) -> OrderedDelivery {
        OrderedDelivery {
            user: user.into(),
            device,
            conversations: HashMap::new(),
            syncing: false,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Seqs up to this one are done in `conversation` (0 if unknown).
    pub fn delivered(&self, conversation: u64) -> u64 {
        self.conversations
            .get(&conversation)
            .map_or(0, |c| c.delivered)
    }

    /// Whether a Sync answer is awaited (pushes are held until it comes).
    pub fn is_syncing(&self) -> bool {
        self.syncing
    }

    /// A connection was (re)established. Requests of the previous one are
    /// forgotten (their answers are lost with it) and a Sync is asked for.
    pub fn on_connected(&mut self) {
        for conversation in self.conversations.values_mut() {
            conversation.fetching = None;
            conversation.stalled = false;
        }
        // Fetches not yet issued belong to the old connection; the Sync
        // answer decides what to fetch now. A queued Sync still serves.
        let sync_queued = self.actions.iter().any(|a| matches!(a, Action::Sync));
        self.actions
            .retain(|a| matches!(a, Action::Emit(_) | Action::Sync));
        if !sync_queued {
            self.actions.push_back(Action::Sync);
        }
        self.syncing = true;
    }

    /// The answer to [`Action::Sync`]: each conversation's cursor (this
    /// device's acknowledged seq) and head.
    ///
    /// Any answer ends the hold, even one asked for before the latest
    /// reconnect: it still places every conversation that existed when this
    /// process asked, and one created later can only have been acknowledged
    /// after this process emitted it, so its position is known here.
    pub fn on_sync(&mut self, states: &[ConversationState]) {
        for state in states {
            let conversation = self.conversations.entry(state.conversation_id).or_default();
            conversation.delivered = conversation.delivered.max(state.cursor);
            conversation.head = conversation.head.max(state.head_seq);
            conversation.stalled = false;
            conversation.forget_delivered();
        }
        self.syncing = false;
        let ids: Vec<u64> = self.conversations.keys().copied().collect();
        for id in ids {
            self.advance(id);
        }
    }

    /// The Sync request failed: it is asked for again (the driver decides
    /// how long to wait first). Pushes stay held meanwhile.
    pub fn on_sync_failed(&mut self) {
        if !self.actions.iter().any(|a| matches!(a, Action::Sync)) {
            self.actions.push_back(Action::Sync);
        }
    }

    /// A `Deliver` push.
    pub fn on_deliver(&mut self, message: Message) {
        let id = message.conversation_id;
        let conversation = self.conversations.entry(id).or_default();
        conversation.head = conversation.head.max(message.seq);
        conversation.stalled = false;
        if message.seq <= conversation.delivered {
            return;
        }
        conversation.held.entry(message.seq).or_insert(message);
        self.advance(id);
    }

    /// The answer to [`Action::Fetch`]. The page covers `from_seq` up to
    /// (not including) its `next_seq`: a seq in that range that it does not
    /// hold is gone (expired) and is skipped.
    pub fn on_page(&mut self, page: HistoryPage) {
        let id = page.conversation_id;
        let conversation = self.conversations.entry(id).or_default();
        conversation.head = conversation.head.max(page.head_seq);
        for message in page.messages {
            if message.conversation_id == id && message.seq > conversation.delivered {
                conversation.held.entry(message.seq).or_insert(message);
            }
        }
        // A page nobody asked for (or one from before a reconnect) only
        // contributes its messages: without its start, its range says nothing.
        let mut covered = BTreeMap::new();
        if let Some(from) = conversation.fetching.take() {
            if page.next_seq > from {
                // `delivered + 1 >= from` (fetches start there and
                // `delivered` only grows), so `delivered + 1 .. next_seq` is
                // all covered by the page: emit what is held there, in order,
                // and step over the rest.
                let rest = conversation.held.split_off(&page.next_seq);
                covered = std::mem::replace(&mut conversation.held, rest);
                conversation.delivered = conversation.delivered.max(page.next_seq - 1);
            } else {
                conversation.stalled = true;
            }
        }
        for message in covered.into_values() {
            self.emit(message);
        }
        self.advance(id);
    }

    /// The History request for `conversation` failed. It is not retried at
    /// once: the next push in the conversation, the next Sync, or the
    /// driver's [`OrderedDelivery::retry_fetch`] after a pause fetches the
    /// gap again.
    pub fn on_fetch_failed(&mut self, conversation: u64) {
        if let Some(c) = self.conversations.get_mut(&conversation) {
            c.fetching = None;
        }
    }

    /// Asks again for the gap of `conversation` whose fetch failed (the
    /// driver calls it after a backoff, so that held messages do not wait
    /// for the next push); nothing if no gap is left or a fetch is in flight.
    pub fn retry_fetch(&mut self, conversation: u64) {
        self.advance(conversation);
    }

    /// Emits what is contiguous, then asks for the next gap (unless a Sync
    /// is awaited, a fetch is in flight, or the last one made no progress).
    fn advance(&mut self, id: u64) {
        if self.is_syncing() {
            return;
        }
        let mut ready = Vec::new();
        let fetch = {
            let Some(conversation) = self.conversations.get_mut(&id) else {
                return;
            };
            while let Some(message) = conversation
                .held
                .remove(&(conversation.delivered.saturating_add(1)))
            {
                conversation.delivered = message.seq;
                ready.push(message);
            }
            let target = conversation.target();
            if target > conversation.delivered
                && conversation.fetching.is_none()
                && !conversation.stalled
            {
                let from_seq = conversation.delivered + 1;
                conversation.fetching = Some(from_seq);
                Some(Fetch {
                    conversation: id,
                    from_seq,
                    to_seq: target,
                })
            } else {
                None
            }
        };
        for message in ready {
            self.emit(message);
        }
        if let Some(fetch) = fetch {
            self.actions.push_back(Action::Fetch(fetch));
        }
    }

    /// Queues a message for the application, unless this device sent it.
    fn emit(&mut self, message: Message) {
        let own = message.sender_device == self.device && message.sender_user == self.user;
        if !own {
            self.actions.push_back(Action::Emit(message));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;
    use tern_proto::ConversationKind;

    const ME: &str = "me";
    const MY_DEVICE: u32 = 1;
    const C: u64 = 7;
    const D: u64 = 9;

    fn msg(conversation: u64, seq: u64, from: &str) -> Message {
        Message {
            conversation_id: conversation,
            seq,
            sender_user: from.to_owned(),
            sender_device: 1,
            client_message_id: seq,
            server_time_ms: seq,
            expires_at_ms: 0,
            flags: 0,
            payload: Bytes::from(format!("{conversation}:{seq}")),
        }
    }

    fn peer(seq: u64) -> Message {
        msg(C, seq, "peer")
    }

    fn own(seq: u64) -> Message {
        msg(C, seq, ME)
    }

    /// A complete page of `messages` for `conversation`, ending before `next_seq`.
    fn page(conversation: u64, messages: Vec<Message>, head: u64, next_seq: u64) -> HistoryPage {
        HistoryPage {
            conversation_id: conversation,
            messages,
            head_seq: head,
            next_seq,
        }
    }

    fn state(conversation: u64, cursor: u64, head: u64) -> ConversationState {
        ConversationState {
            conversation_id: conversation,
            kind: ConversationKind::Direct,
            head_seq: head,
            cursor,
            timer_secs: 0,
            request_from: None,
        }
    }

    fn machine() -> OrderedDelivery {
        OrderedDelivery::new(ME, MY_DEVICE)
    }

    /// A machine that has connected and synced with nothing pending.
    fn synced(states: &[ConversationState]) -> OrderedDelivery {
        let mut o = machine();
        o.on_connected();
        assert_eq!(o.poll_action(), Some(Action::Sync));
        o.on_sync(states);
        o
    }

    fn drain(o: &mut OrderedDelivery) -> Vec<Action> {
        std::iter::from_fn(|| o.poll_action()).collect()
    }

    /// Seqs emitted (asserting nothing else was asked for).
    fn emitted(o: &mut OrderedDelivery) -> Vec<u64> {
        drain(o)
            .into_iter()
            .map(|a| match a {
                Action::Emit(m) => m.seq,
                other => panic!("expected only emits, got {other:?}"),
            })
            .collect()
    }

    fn fetch(conversation: u64, from_seq: u64, to_seq: u64) -> Action {
        Action::Fetch(Fetch {
            conversation,
            from_seq,
            to_seq,
        })
    }

    fn emit(m: Message) -> Action {
        Action::Emit(m)
    }

    #[test]
    fn in_order_pushes_are_emitted_at_once() {
        let mut o = synced(&[]);
        for seq in 1..=3 {
            o.on_deliver(peer(seq));
            assert_eq!(drain(&mut o), vec![emit(peer(seq))]);
        }
        assert_eq!(o.delivered(C), 3);
    }

    #[test]
    fn out_of_order_push_waits_for_its_gap_and_fetches_it() {
        let mut o = synced(&[]);
        o.on_deliver(peer(1));
        o.on_deliver(peer(3));
        assert_eq!(drain(&mut o), vec![emit(peer(1)), fetch(C, 2, 3)]);
        // The missing push arrives before the page: it is emitted with 3.
        o.on_deliver(peer(2));
        assert_eq!(emitted(&mut o), vec![2, 3]);
        // The page then repeats 2 and 3: nothing more, no new fetch.
        o.on_page(page(C, vec![peer(2), peer(3)], 3, 4));
        assert!(drain(&mut o).is_empty());
        assert_eq!(o.delivered(C), 3);
    }

    #[test]
    fn duplicate_pushes_are_dropped() {
        let mut o = synced(&[]);
        o.on_deliver(peer(1));
        o.on_deliver(peer(1));
        o.on_deliver(peer(2));
        o.on_deliver(peer(1));
        o.on_deliver(peer(2));
        assert_eq!(emitted(&mut o), vec![1, 2]);
        // Held duplicates too: 4 twice while 3 is missing.
        o.on_deliver(peer(4));
        o.on_deliver(peer(4));
        assert_eq!(drain(&mut o), vec![fetch(C, 3, 4)]);
        o.on_page(page(C, vec![peer(3), peer(4)], 4, 5));
        assert_eq!(emitted(&mut o), vec![3, 4]);
    }

    #[test]
    fn gap_before_a_push_is_filled_by_a_page() {
        let mut o = synced(&[]);
        o.on_deliver(peer(5));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 5)]);
        o.on_page(page(C, (1..=5).map(peer).collect(), 5, 6));
        assert_eq!(emitted(&mut o), vec![1, 2, 3, 4, 5]);
        o.on_deliver(peer(6));
        assert_eq!(emitted(&mut o), vec![6]);
    }

    #[test]
    fn page_overlapping_held_and_later_pushes_emits_each_once() {
        let mut o = synced(&[]);
        o.on_deliver(peer(1));
        o.on_deliver(peer(4));
        assert_eq!(drain(&mut o), vec![emit(peer(1)), fetch(C, 2, 4)]);
        // Pushes keep coming while the page is on its way.
        o.on_deliver(peer(5));
        o.on_deliver(peer(7));
        assert!(drain(&mut o).is_empty(), "one fetch at a time");
        // The page overlaps the held 4 and 5 and reaches past them to 6
        // (the server cut it there).
        o.on_page(page(C, (2..=6).map(peer).collect(), 7, 7));
        assert_eq!(emitted(&mut o), vec![2, 3, 4, 5, 6, 7]);
        // A late duplicate of anything is dropped.
        o.on_deliver(peer(5));
        assert!(drain(&mut o).is_empty());
    }

    #[test]
    fn own_messages_are_skipped_but_advance_the_position() {
        let mut o = synced(&[]);
        o.on_deliver(peer(3));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 3)]);
        o.on_page(page(C, vec![own(1), peer(2), own(3)], 3, 4));
        // 3 is held from the push as a peer's, but the page's own entry
        // for 1 is skipped.
        assert_eq!(emitted(&mut o), vec![2, 3]);
        assert_eq!(o.delivered(C), 3);
        // A push right after an own message needs no fetch.
        let mut o = synced(&[]);
        o.on_deliver(peer(2));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 2)]);
        o.on_page(page(C, vec![own(1), peer(2)], 2, 3));
        assert_eq!(emitted(&mut o), vec![2]);
        // Another device of the same user is not "own".
        let other_device = Message {
            sender_device: 2,
            ..own(3)
        };
        o.on_deliver(other_device.clone());
        assert_eq!(drain(&mut o), vec![emit(other_device)]);
        // An own message pushed anyway (the server should not) is not emitted.
        o.on_deliver(own(4));
        o.on_deliver(peer(5));
        assert_eq!(emitted(&mut o), vec![5]);
    }

    #[test]
    fn expired_seqs_inside_a_page_do_not_wedge_the_stream() {
        let mut o = synced(&[]);
        o.on_deliver(peer(1));
        o.on_deliver(peer(6));
        assert_eq!(drain(&mut o), vec![emit(peer(1)), fetch(C, 2, 6)]);
        // 2, 4 and 5 expired: the page covers 2..=6 and holds only 3 and 6.
        o.on_page(page(C, vec![peer(3), peer(6)], 6, 7));
        assert_eq!(emitted(&mut o), vec![3, 6]);
        assert_eq!(o.delivered(C), 6);
        o.on_deliver(peer(7));
        assert_eq!(emitted(&mut o), vec![7]);
    }

    #[test]
    fn everything_expired_is_stepped_over() {
        let mut o = synced(&[state(C, 0, 4)]);
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 4)]);
        o.on_page(page(C, vec![], 4, 5));
        assert!(drain(&mut o).is_empty());
        assert_eq!(o.delivered(C), 4);
    }

    #[test]
    fn a_held_push_that_expired_before_the_page_is_still_emitted() {
        let mut o = synced(&[]);
        o.on_deliver(peer(3));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 3)]);
        // 3 expired between its push and the page: we have it anyway.
        o.on_page(page(C, vec![peer(1), peer(2)], 3, 4));
        assert_eq!(emitted(&mut o), vec![1, 2, 3]);
    }

    #[test]
    fn a_short_page_continues_with_the_next_one() {
        let mut o = synced(&[state(C, 0, 10)]);
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 10)]);
        // The server capped the page at 3 messages.
        o.on_page(page(C, (1..=3).map(peer).collect(), 10, 4));
        let actions = drain(&mut o);
        assert_eq!(
            actions,
            vec![emit(peer(1)), emit(peer(2)), emit(peer(3)), fetch(C, 4, 10)]
        );
        // The head moved meanwhile: the page says so, and fetching goes on to it.
        o.on_page(page(C, (4..=10).map(peer).collect(), 12, 11));
        let actions = drain(&mut o);
        assert_eq!(actions.len(), 8);
        assert_eq!(actions.last(), Some(&fetch(C, 11, 12)));
        o.on_page(page(C, vec![peer(11), peer(12)], 12, 13));
        assert_eq!(emitted(&mut o), vec![11, 12]);
    }

    #[test]
    fn fetch_limit_covers_the_range() {
        let f = Fetch {
            conversation: C,
            from_seq: 4,
            to_seq: 10,
        };
        assert_eq!(f.limit(), 7);
        let huge = Fetch {
            conversation: C,
            from_seq: 1,
            to_seq: u64::MAX,
        };
        assert_eq!(huge.limit(), u32::MAX);
    }

    #[test]
    fn restart_catches_up_from_the_cursor() {
        // A fresh process: the device acknowledged 7 of 10 earlier.
        let mut o = machine();
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        assert!(o.is_syncing());
        // A push arriving before the Sync answer is held, not emitted or fetched.
        o.on_deliver(peer(11));
        assert!(drain(&mut o).is_empty());
        o.on_sync(&[state(C, 7, 10)]);
        assert!(!o.is_syncing());
        assert_eq!(drain(&mut o), vec![fetch(C, 8, 11)]);
        o.on_page(page(C, (8..=11).map(peer).collect(), 11, 12));
        assert_eq!(emitted(&mut o), vec![8, 9, 10, 11]);
    }

    #[test]
    fn restart_does_not_redeliver_a_conversation_that_was_caught_up() {
        // Sync lists every conversation: one fully acknowledged at 10...
        let mut o = synced(&[state(C, 10, 10)]);
        assert!(drain(&mut o).is_empty());
        // ...so its next push is emitted as it is, without fetching 1..=10.
        o.on_deliver(peer(11));
        assert_eq!(emitted(&mut o), vec![11]);
    }

    #[test]
    fn a_push_held_during_sync_at_or_below_the_cursor_is_dropped() {
        let mut o = machine();
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        o.on_deliver(peer(4));
        o.on_deliver(peer(5));
        o.on_sync(&[state(C, 4, 5)]);
        assert_eq!(emitted(&mut o), vec![5]);
    }

    #[test]
    fn a_conversation_first_seen_after_sync_starts_at_the_beginning() {
        // A group this device joined after connecting: its history is its to read.
        let mut o = synced(&[state(C, 3, 3)]);
        o.on_deliver(msg(D, 2, "peer"));
        assert_eq!(drain(&mut o), vec![fetch(D, 1, 2)]);
        o.on_page(page(D, vec![msg(D, 1, "peer"), msg(D, 2, "peer")], 2, 3));
        assert_eq!(emitted(&mut o), vec![1, 2]);
    }

    #[test]
    fn reconnect_forgets_requests_in_flight_and_keeps_positions() {
        let mut o = synced(&[state(C, 0, 2)]);
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 2)]);
        o.on_page(page(C, vec![peer(1), peer(2)], 2, 3));
        assert_eq!(emitted(&mut o), vec![1, 2]);
        o.on_deliver(peer(4));
        assert_eq!(drain(&mut o), vec![fetch(C, 3, 4)]);
        // The connection drops before the page comes.
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        // The app never acknowledged: the cursor is still 0, but 1 and 2
        // were emitted in this process and are not emitted again.
        o.on_sync(&[state(C, 0, 5)]);
        assert_eq!(o.delivered(C), 2);
        assert_eq!(drain(&mut o), vec![fetch(C, 3, 5)]);
        o.on_page(page(C, (1..=5).map(peer).collect(), 5, 6));
        assert_eq!(emitted(&mut o), vec![3, 4, 5]);
    }

    #[test]
    fn reconnect_drops_fetches_not_yet_issued() {
        let mut o = synced(&[]);
        o.on_deliver(peer(3));
        // The driver has not polled the fetch when the connection drops.
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        o.on_sync(&[state(C, 0, 3)]);
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 3)]);
    }

    #[test]
    fn emits_queued_before_a_reconnect_are_kept() {
        let mut o = synced(&[]);
        o.on_deliver(peer(1));
        o.on_connected();
        assert_eq!(drain(&mut o), vec![emit(peer(1)), Action::Sync]);
    }

    #[test]
    fn a_page_from_before_a_reconnect_only_contributes_its_messages() {
        let mut o = synced(&[]);
        o.on_deliver(peer(3));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 3)]);
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        // The old fetch's page still arrives, during the new Sync: its
        // messages are held; its range (2 missing) says nothing now.
        o.on_page(page(C, vec![peer(1), peer(3)], 3, 4));
        assert!(drain(&mut o).is_empty());
        o.on_sync(&[state(C, 0, 3)]);
        assert_eq!(drain(&mut o), vec![emit(peer(1)), fetch(C, 2, 3)]);
        o.on_page(page(C, vec![peer(2), peer(3)], 3, 4));
        assert_eq!(emitted(&mut o), vec![2, 3]);
    }

    #[test]
    fn a_failed_sync_is_asked_for_again_and_pushes_stay_held() {
        let mut o = machine();
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        o.on_deliver(peer(1));
        o.on_sync_failed();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        assert!(o.is_syncing());
        o.on_sync(&[state(C, 0, 1)]);
        assert_eq!(emitted(&mut o), vec![1]);
    }

    #[test]
    fn two_connects_before_the_sync_is_issued_need_one_sync() {
        let mut o = machine();
        o.on_connected();
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        o.on_sync(&[]);
        assert!(!o.is_syncing());
    }

    #[test]
    fn a_sync_answered_after_a_reconnect_still_places_conversations() {
        let mut o = machine();
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        o.on_deliver(peer(4));
        // The older Sync's answer comes first: it ends the hold.
        o.on_sync(&[state(C, 2, 3)]);
        assert!(!o.is_syncing());
        assert_eq!(drain(&mut o), vec![fetch(C, 3, 4)]);
        // The newer one only confirms (positions never move back).
        o.on_sync(&[state(C, 0, 4)]);
        assert!(drain(&mut o).is_empty());
        o.on_page(page(C, vec![peer(3), peer(4)], 4, 5));
        assert_eq!(emitted(&mut o), vec![3, 4]);
    }

    #[test]
    fn an_old_sync_failing_after_a_reconnect_does_not_wedge() {
        let mut o = machine();
        o.on_connected();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        o.on_connected();
        // The first Sync fails while the second is still queued: one Sync.
        o.on_sync_failed();
        assert_eq!(drain(&mut o), vec![Action::Sync]);
        o.on_deliver(peer(1));
        o.on_sync(&[state(C, 0, 1)]);
        assert_eq!(emitted(&mut o), vec![1]);
    }

    #[test]
    fn a_failed_fetch_is_retried_on_the_next_push() {
        let mut o = synced(&[]);
        o.on_deliver(peer(2));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 2)]);
        o.on_fetch_failed(C);
        assert!(drain(&mut o).is_empty(), "no retry loop");
        o.on_deliver(peer(3));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 3)]);
        o.on_page(page(C, (1..=3).map(peer).collect(), 3, 4));
        assert_eq!(emitted(&mut o), vec![1, 2, 3]);
    }

    #[test]
    fn a_failed_fetch_is_asked_again_by_the_driver_after_its_pause() {
        let mut o = synced(&[]);
        o.on_deliver(peer(2));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 2)]);
        o.on_fetch_failed(C);
        o.retry_fetch(C);
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 2)], "the same gap again");
        o.retry_fetch(C);
        assert!(
            drain(&mut o).is_empty(),
            "not while that fetch is in flight"
        );
        o.on_page(page(C, (1..=2).map(peer).collect(), 2, 3));
        assert_eq!(emitted(&mut o), vec![1, 2]);
        o.retry_fetch(C);
        assert!(drain(&mut o).is_empty(), "no gap left");
    }

    #[test]
    fn a_page_without_progress_stalls_until_news() {
        let mut o = synced(&[]);
        o.on_deliver(peer(2));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 2)]);
        // A page that covers nothing (a confused server) is not asked for again at once.
        o.on_page(page(C, vec![], 0, 1));
        assert!(drain(&mut o).is_empty());
        o.on_deliver(peer(3));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 3)]);
    }

    #[test]
    fn conversations_are_independent() {
        let mut o = synced(&[state(C, 0, 0), state(D, 5, 5)]);
        o.on_deliver(msg(C, 2, "peer"));
        o.on_deliver(msg(D, 6, "peer"));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 2), emit(msg(D, 6, "peer"))]);
        o.on_deliver(msg(D, 7, "peer"));
        assert_eq!(emitted(&mut o), vec![7]);
        o.on_page(page(C, vec![msg(C, 1, "peer"), msg(C, 2, "peer")], 2, 3));
        assert_eq!(emitted(&mut o), vec![1, 2]);
        assert_eq!((o.delivered(C), o.delivered(D)), (2, 7));
    }

    #[test]
    fn a_page_entry_of_another_conversation_is_ignored() {
        let mut o = synced(&[]);
        o.on_deliver(peer(2));
        assert_eq!(drain(&mut o), vec![fetch(C, 1, 2)]);
        o.on_page(page(C, vec![msg(D, 1, "peer"), peer(2)], 2, 3));
        let out = drain(&mut o);
        assert_eq!(out, vec![emit(peer(2))]);
    }

    /// A simulated server for one conversation: `len` messages, some sent by
    /// this device, some expired (gone from History, maybe pushed before).
    struct Log {
        messages: Vec<Message>,
        expired: BTreeSet<u64>,
    }

    impl Log {
        fn page(&self, from: u64, limit: u32, cap: usize) -> HistoryPage {
            let head = self.messages.len() as u64;
            let take = (limit as usize).min(cap);
            let live: Vec<Message> = self
                .messages
                .iter()
                .filter(|m| m.seq >= from && !self.expired.contains(&m.seq))
                .take(take + 1)
                .cloned()
                .collect();
            let truncated = live.len() > take;
            let messages: Vec<Message> = live.into_iter().take(take).collect();
            let next_seq = match messages.last() {
                Some(last) if truncated => last.seq + 1,
                _ => (head + 1).max(from),
            };
            page(C, messages, head, next_seq)
        }
    }

    /// Random interleavings of shuffled, duplicated pushes, capped pages,
    /// reconnects and failures: the output is always strictly increasing,
    /// never holds an own message, and holds every live message of a peer.
    #[test]
    fn random_interleavings_keep_the_contract() {
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let len = rng.gen_range(1..40u64);
            let log = Log {
                messages: (1..=len)
                    .map(|s| if rng.gen_bool(0.2) { own(s) } else { peer(s) })
                    .collect(),
                expired: (1..=len).filter(|_| rng.gen_bool(0.2)).collect(),
            };
            // Pushes: every peer message (the server never echoes own ones),
            // some twice, in a random order.
            let mut pushes: Vec<Message> = log
                .messages
                .iter()
                .filter(|m| m.sender_user != ME)
                .flat_map(|m| {
                    let copies = if rng.gen_bool(0.3) { 2 } else { 1 };
                    std::iter::repeat_n(m.clone(), copies)
                })
                .collect();
            pushes.shuffle(&mut rng);
            let cap = rng.gen_range(1..8usize);

            let mut o = machine();
            o.on_connected();
            let mut out: Vec<u64> = Vec::new();
            let mut pending: Vec<Action> = Vec::new();
            let mut steps = 0;
            loop {
                steps += 1;
                assert!(steps < 10_000, "seed {seed}: no progress");
                pending.extend(std::iter::from_fn(|| o.poll_action()));
                // Emits are taken at once; other actions are answered in a
                // random order relative to pushes.
                pending.retain(|a| match a {
                    Action::Emit(m) => {
                        out.push(m.seq);
                        false
                    }
                    _ => true,
                });
                let answer = !pending.is_empty() && (pushes.is_empty() || rng.gen_bool(0.5));
                if answer {
                    let action = pending.remove(rng.gen_range(0..pending.len()));
                    match action {
                        Action::Sync if rng.gen_bool(0.1) => o.on_sync_failed(),
                        Action::Sync => o.on_sync(&[state(C, 0, len)]),
                        Action::Fetch(f) if rng.gen_bool(0.1) => o.on_fetch_failed(f.conversation),
                        Action::Fetch(f) => o.on_page(log.page(f.from_seq, f.limit(), cap)),
                        Action::Emit(_) => unreachable!(),
                    }
                } else if let Some(m) = pushes.pop() {
                    if rng.gen_bool(0.05) {
                        // The connection drops: answers in flight are lost.
                        pending.clear();
                        o.on_connected();
                    }
                    o.on_deliver(m);
                } else if pending.is_empty() {
                    if o.delivered(C) < len {
                        // Only failures are left behind: a reconnect resumes.
                        o.on_connected();
                        continue;
                    }
                    break;
                }
            }
            assert!(
                out.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: out of order or repeated: {out:?}"
            );
            let own_seqs: BTreeSet<u64> = log
                .messages
                .iter()
                .filter(|m| m.sender_user == ME)
                .map(|m| m.seq)
                .collect();
            assert!(
                out.iter().all(|s| !own_seqs.contains(s)),
                "seed {seed}: own message emitted: {out:?}"
            );
            for m in &log.messages {
                if m.sender_user != ME && !log.expired.contains(&m.seq) {
                    assert!(
                        out.contains(&m.seq),
                        "seed {seed}: live message {} never emitted: {out:?}",
                        m.seq
                    );
                }
            }
            assert_eq!(o.delivered(C), len, "seed {seed}");
        }
    }
}
