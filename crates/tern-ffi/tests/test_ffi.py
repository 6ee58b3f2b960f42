"""The tern SDK through its generated UniFFI Python bindings, against a real
server, chatting end to end encrypted with a user of the Rust `tern` CLI.

Started by crates/tern-ffi/run-python-test.sh, which builds everything, runs
the server and registers the CLI user; this file starts no server. It reads:

  TERN_ADDR, TERN_FINGERPRINT   the server (HOST:PORT, certificate SHA-256)
  TERN_BIN                      the tern binary (for the CLI user)
  TERN_CLI_STATE, TERN_CLI_USER the CLI user's state directory and handle
  TERN_WORK                     a scratch directory for the Python device
and imports `tern_ffi` (the generated module) from PYTHONPATH.
"""

import collections
import os
import re
import subprocess
import time
import unittest

import tern_ffi
from tern_ffi import (
    AdminSettings,
    DeliveryState,
    DirectStarts,
    Event,
    GroupAdds,
    MessageContent,
    OwnPresence,
    PresenceState,
    PresenceVisibility,
    Privacy,
    Reaction,
    Refusal,
    TernClient,
    TernError,
)

ADDR = os.environ["TERN_ADDR"]
FINGERPRINT = os.environ["TERN_FINGERPRINT"]
TERN = os.environ["TERN_BIN"]
CLI_STATE = os.environ["TERN_CLI_STATE"]
CLI_USER = os.environ["TERN_CLI_USER"]
WORK = os.environ["TERN_WORK"]
PY_USER = "pybob"


def cli(*args, timeout=60):
    """Runs `tern ARGS... --state CLI_STATE`; returns its stdout and stderr."""
    done = subprocess.run(
        [TERN, *args, "--state", CLI_STATE],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"tern {' '.join(args)} exited {done.returncode}: {done.stderr}"
        )
    return done.stdout, done.stderr


def next_message(client, deadline_s=30):
    """The next Message event (other events are skipped), or fails."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        event = client.next_event(1000)
        if event is None:
            continue
        if isinstance(event, Event.MESSAGE):
            return event.message
        if isinstance(event, (Event.UNDECRYPTABLE, Event.NOT_STORED)):
            raise AssertionError(f"unexpected {event}")
    raise AssertionError(f"no message within {deadline_s} s")


class FfiTest(unittest.TestCase):
    """One Python device (PY_USER) and the CLI user; the tests run in name order."""

    client = None
    state = os.path.join(WORK, "python-device")

    @classmethod
    def setUpClass(cls):
        cls.client = TernClient.register(
            ADDR, FINGERPRINT, cls.state, PY_USER, "python"
        )

    @classmethod
    def tearDownClass(cls):
        if cls.client is not None:
            cls.client.close()

    def test_1_direct_exchange_with_the_cli(self):
        client = self.client
        self.assertEqual(client.user(), PY_USER)
        self.assertEqual(client.device_id(), 1)

        # Python -> CLI
        conversation = client.create_direct(CLI_USER)
        seq = client.send_text(conversation, "hello from python")
        out, _ = cli("listen", "--count", "1")
        self.assertIn(
            f"[{conversation} #{seq}] {PY_USER}/1: hello from python", out
        )

        # CLI -> Python, in the same conversation
        out, _ = cli("create", "direct", PY_USER)
        self.assertEqual(int(out.strip()), conversation)
        cli("send", str(conversation), "hello from rust")
        message = next_message(client)
        self.assertEqual(message.conversation_id, conversation)
        self.assertEqual(message.sender_user, CLI_USER)
        self.assertEqual(message.text, "hello from rust")
        self.assertEqual(message.content_kind, 1)
        self.assertFalse(message.own)
        self.assertGreater(message.seq, seq)

        # Both in the local stores, on both sides.
        history = client.history(conversation, 10)
        self.assertEqual(
            [(m.sender_user, m.text, m.own) for m in history],
            [(PY_USER, "hello from python", True), (CLI_USER, "hello from rust", False)],
        )
        found = client.search("RUST", 10)
        self.assertEqual([m.text for m in found], ["hello from rust"])
        out, _ = cli("history", str(conversation))
        self.assertRegex(out, rf"{PY_USER}/1: hello from python\n.*{CLI_USER}/1: hello from rust")

        # Acknowledged: nothing is delivered again.
        self.assertIsNone(client.next_event(300))

    def test_2_group_with_the_cli(self):
        client = self.client
        group = client.create_group([CLI_USER])
        seq = client.send_text(group, "hello group")
        out, err = cli("listen", "--count", "1")
        self.assertIn(f"joined group {group}", err)
        self.assertIn(f"[{group} #{seq}] {PY_USER}/1: hello group", out)
        cli("send", str(group), "group reply")
        message = next_message(client)
        self.assertEqual(
            (message.conversation_id, message.sender_user, message.text),
            (group, CLI_USER, "group reply"),
        )

    def test_3_errors_are_typed(self):
        with self.assertRaises(TernError.Server) as caught:
            self.client.create_direct("nobody-here")
        self.assertEqual(caught.exception.code, "NotFound")
        with self.assertRaises(TernError.StateInUse):
            TernClient.open(self.state)
        with self.assertRaises(TernError.InvalidArgument):
            self.client.search("  ", 10)

    def test_4_reopen_after_close(self):
        self.client.close()
        with self.assertRaises(TernError.Closed):
            self.client.send_text(1, "after close")
        reopened = TernClient.open(self.state)
        try:
            self.assertEqual(reopened.user(), PY_USER)
            texts = [m.text for m in reopened.search("hello", 10)]
            self.assertIn("hello from python", texts)
            self.assertIn("hello group", texts)
        finally:
            reopened.close()


class Device:
    """A Python device and the events read from it but not yet wanted: a
    wait for one kind of event keeps the others for later waits."""

    def __init__(self, user):
        self.user = user
        self.state = os.path.join(WORK, f"device-{user}")
        self.client = TernClient.register(ADDR, FINGERPRINT, self.state, user, "python")
        self.backlog = collections.deque()

    def wait(self, wanted, what, deadline_s=30):
        """The first event (backlog first) for which `wanted` is true, or fails."""
        for event in list(self.backlog):
            if wanted(event):
                self.backlog.remove(event)
                return event
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            event = self.client.next_event(500)
            if event is None:
                continue
            if isinstance(event, (Event.UNDECRYPTABLE, Event.NOT_STORED)):
                raise AssertionError(f"{self.user}: unexpected {event}")
            if wanted(event):
                return event
            self.backlog.append(event)
        raise AssertionError(f"{self.user}: no {what} within {deadline_s} s")

    def message(self, conversation, content_type, what, sender=None):
        """The next message of `conversation` whose content is a `content_type`."""

        def wanted(event):
            return (
                isinstance(event, Event.MESSAGE)
                and event.message.conversation_id == conversation
                and isinstance(event.message.content, content_type)
                and (sender is None or event.message.sender_user == sender)
            )

        return self.wait(wanted, what).message

    def until(self, condition, what, deadline_s=30):
        """Reads events (kept in the backlog) until `condition()` holds, or fails:
        for state the SDK applies without an event (receipts, timers) or that
        a new query shows (presence)."""
        deadline = time.monotonic() + deadline_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user}: {what} not within {deadline_s} s")
            event = self.client.next_event(200)
            if event is not None:
                self.backlog.append(event)

    def view(self, conversation, seq):
        """The history view of message `seq`."""
        for entry in self.client.history_view(conversation, 100):
            if entry.message.seq == seq:
                return entry
        raise AssertionError(f"{self.user}: message {seq} not in the history")


class MessengerTest(unittest.TestCase):
    """Two Python devices (ann, ben) and a stranger (cy) through every
    messenger call of the bindings: requests, reactions, replies, edits,
    deletes, receipts, timers, group administration and info, presence,
    typing, blocking and privacy. The tests run in name order and build on
    each other's conversation."""

    ann = ben = cy = None
    direct = None
    first = None

    @classmethod
    def setUpClass(cls):
        cls.ann = Device("pyann")
        cls.ben = Device("pyben")
        cls.cy = Device("pycy")

    @classmethod
    def tearDownClass(cls):
        for device in (cls.ann, cls.ben, cls.cy):
            if device is not None:
                device.client.close()

    def test_1_a_request_accepted(self):
        ann, ben = self.ann, self.ben
        conversation = ann.client.create_direct(ben.user)
        seq = ann.client.send_text(conversation, "hi ben")
        got = ben.message(conversation, MessageContent.TEXT, "the first text")
        self.assertEqual((got.seq, got.text), (seq, "hi ben"))
        [request] = ben.client.requests()
        self.assertEqual(
            (request.conversation_id, request.sender, request.preview),
            (conversation, ann.user, "hi ben"),
        )
        self.assertGreaterEqual(request.head_seq, seq)
        ben.client.accept_request(conversation)
        self.assertEqual(ben.client.requests(), [])
        with self.assertRaises(TernError.Refused) as caught:
            ben.client.delete_request(conversation, False)
        self.assertEqual(caught.exception.reason, Refusal.NOT_A_REQUEST)
        type(self).direct, type(self).first = conversation, seq

    def test_2_reaction_reply_and_edit(self):
        ann, ben, conversation, first = self.ann, self.ben, self.direct, self.first
        ben.client.react(conversation, first, "👍")
        reaction = ann.message(conversation, MessageContent.REACTION, "the reaction")
        self.assertEqual((reaction.content.target_seq, reaction.content.emoji), (first, "👍"))
        self.assertEqual(ann.view(conversation, first).reactions, [Reaction(user=ben.user, emoji="👍")])

        reply_seq = ben.client.reply(conversation, first, "hello ann")
        reply = ann.message(conversation, MessageContent.REPLY, "the reply")
        self.assertEqual(reply.seq, reply_seq)
        self.assertEqual(
            (reply.content.reply_to_seq, reply.content.quote, reply.text),
            (first, "hi ben", "hello ann"),
        )

        ann.client.edit(conversation, first, "hi ben, edited")
        ben.message(conversation, MessageContent.EDIT, "the edit")
        edited = ben.view(conversation, first)
        self.assertEqual(edited.message.text, "hi ben, edited")
        self.assertIsNotNone(edited.edited_at_ms)

        with self.assertRaises(TernError.Refused) as caught:
            ben.client.edit(conversation, first, "not mine")
        self.assertEqual(caught.exception.reason, Refusal.NOT_SENDER)
        with self.assertRaises(TernError.NoSuchMessage) as caught:
            ben.client.react(conversation, 999_999, "👍")
        self.assertEqual(caught.exception.seq, 999_999)
        with self.assertRaises(TernError.InvalidArgument):
            ben.client.react(conversation, first, "")

    def test_3_read_receipts(self):
        ann, ben, conversation, first = self.ann, self.ben, self.direct, self.first
        self.assertTrue(ben.client.read_receipts())
        self.assertTrue(ben.client.mark_read(conversation, first))
        self.assertEqual(ben.client.read_position(conversation), first)
        self.assertFalse(ben.client.mark_read(conversation, first))

        def read_by_ben():
            return ann.view(conversation, first).overall == DeliveryState.READ

        ann.until(read_by_ben, "ben's read receipt")
        recipients = ann.view(conversation, first).recipients
        self.assertEqual([(r.user, r.state) for r in recipients], [(ben.user, DeliveryState.READ)])

        ben.client.set_read_receipts(False)
        self.assertFalse(ben.client.read_receipts())
        ben.client.set_read_receipts(True)

    def test_4_deletes(self):
        ann, ben, conversation = self.ann, self.ben, self.direct
        oops = ann.client.send_text(conversation, "oops")
        ben.message(conversation, MessageContent.TEXT, "the text to delete")
        ann.client.delete_for_everyone(conversation, oops)
        delete = ben.message(conversation, MessageContent.DELETE, "the delete")
        self.assertEqual(delete.content.target_seq, oops)
        self.assertTrue(ben.view(conversation, oops).deleted)
        self.assertTrue(ann.view(conversation, oops).deleted)
        self.assertNotIn("oops", [m.text for m in ben.client.history(conversation, 100)])

        with self.assertRaises(TernError.Refused) as caught:
            ben.client.delete_for_everyone(conversation, self.first)
        self.assertEqual(caught.exception.reason, Refusal.NOT_SENDER)
        with self.assertRaises(TernError.MessageDeleted):
            ann.client.delete_for_everyone(conversation, oops)

        ben.client.delete_for_me(conversation, self.first)
        self.assertTrue(ben.view(conversation, self.first).deleted)
        self.assertFalse(ann.view(conversation, self.first).deleted)
        with self.assertRaises(TernError.MessageDeleted):
            ben.client.delete_for_me(conversation, self.first)

    def test_5_a_timer(self):
        ann, ben, conversation = self.ann, self.ben, self.direct
        self.assertEqual(ann.client.timer_secs(conversation), 0)
        ann.client.set_timer(conversation, 3600)
        self.assertEqual(ann.client.timer_secs(conversation), 3600)
        ben.until(lambda: ben.client.timer_secs(conversation) == 3600, "the timer change")
        seq = ann.client.send_text(conversation, "gone in an hour")
        got = ben.message(conversation, MessageContent.TEXT, "the expiring text")
        self.assertEqual(got.seq, seq)
        for device in (ann, ben):
            view = device.view(conversation, seq)
            self.assertEqual(view.expires_at_ms, view.message.server_time_ms + 3_600_000)
        ann.client.set_timer(conversation, 0)
        self.assertEqual(ann.client.timer_secs(conversation), 0)

    def test_6_group_administrators_and_info(self):
        ann, ben = self.ann, self.ben
        group = ann.client.create_group([ben.user])
        ben.wait(
            lambda e: isinstance(e, Event.JOINED) and e.conversation_id == group,
            "the group's welcome",
        )
        self.assertEqual(ann.client.admin_settings(group), AdminSettings(admins=[ann.user], everyone_adds=False))
        with self.assertRaises(TernError.Server) as caught:
            ben.client.set_member_adds(group, True)
        self.assertEqual(caught.exception.code, "Forbidden")
        ann.client.set_member_adds(group, True)
        self.assertEqual(sorted(ann.client.set_admin(group, ben.user, True)), [ann.user, ben.user])
        settings = ben.client.admin_settings(group)
        self.assertEqual((sorted(settings.admins), settings.everyone_adds), ([ann.user, ben.user], True))

        seq = ann.client.set_group_info(group, "Trip", "Where we go", b"\x89PNG")
        got = ben.message(group, MessageContent.GROUP_INFO, "the group info")
        self.assertEqual((got.seq, got.content.name, got.content.avatar), (seq, "Trip", b"\x89PNG"))
        info = ben.client.group_info(group)
        self.assertEqual((info.name, info.topic, info.set_by, info.seq), ("Trip", "Where we go", ann.user, seq))
        self.assertIsNone(ben.client.group_info(self.direct))
        with self.assertRaises(TernError.Refused) as caught:
            ann.client.set_group_info(self.direct, "no", "", b"")
        self.assertEqual(caught.exception.reason, Refusal.NOT_A_GROUP)
        with self.assertRaises(TernError.InvalidArgument):
            ann.client.set_group_info(group, "x" * 129, "", b"")

        # cy (no contact of ann's) is invited, accepts, and is added then.
        cy = self.cy
        with self.assertRaises(TernError.Server) as caught:
            ann.client.add_members(group, [cy.user])
        self.assertEqual(caught.exception.code, "ConsentRequired")
        ann.client.invite(group, cy.user)
        invited = cy.wait(lambda e: isinstance(e, Event.INVITED), "the invitation")
        self.assertEqual((invited.conversation_id, invited.inviter), (group, ann.user))
        [invitation] = cy.client.invitations()
        self.assertEqual((invitation.conversation_id, invitation.inviter), (group, ann.user))
        cy.client.answer_invitation(group, True)
        answered = ann.wait(lambda e: isinstance(e, Event.INVITATION_ANSWERED), "the answer")
        self.assertEqual((answered.user, answered.accepted), (cy.user, True))
        self.assertEqual(cy.client.invitations(), [])
        ann.client.add_members(group, [cy.user])
        cy.wait(lambda e: isinstance(e, Event.JOINED) and e.conversation_id == group, "cy's welcome")

    def test_7_presence_and_typing(self):
        ann, ben, conversation = self.ann, self.ben, self.direct
        def seen(state, text):
            [entry] = ann.client.subscribe_presence([ben.user])
            return (entry.user, entry.state, entry.status_text) == (ben.user, state, text)

        ann.until(lambda: seen(PresenceState.ONLINE, None), "ben online")
        self.assertEqual(ann.client.count_online(conversation), 2)
        [unknown] = ann.client.subscribe_presence(["nobody-here"])
        self.assertEqual((unknown.state, unknown.last_seen_ms), (PresenceState.UNKNOWN, 0))

        ben.client.set_presence(OwnPresence.AWAY, "at lunch")
        ann.wait(
            lambda e: isinstance(e, Event.PRESENCE_CHANGED)
            and (e.entry.user, e.entry.state, e.entry.status_text)
            == (ben.user, PresenceState.AWAY, "at lunch"),
            "the event of ben going away",
        )
        ann.until(lambda: seen(PresenceState.AWAY, "at lunch"), "ben away")
        ben.client.set_presence_visibility(PresenceVisibility.NOBODY)
        ann.until(lambda: seen(PresenceState.UNKNOWN, None), "ben hidden")
        ben.client.set_presence_visibility(PresenceVisibility.SHARED)
        ben.client.set_presence(OwnPresence.ONLINE, "")
        ann.until(lambda: seen(PresenceState.ONLINE, None), "ben back")
        ann.client.unsubscribe_presence([ben.user])
        with self.assertRaises(TernError.InvalidArgument):
            ann.client.subscribe_presence([f"user{i}" for i in range(257)])

        for typing in (True, False):
            ben.client.typing(conversation, typing)
            event = ann.wait(
                lambda e: isinstance(e, Event.TYPING) and e.typing == typing,
                f"ben's typing {typing} event",
            )
            self.assertEqual((event.conversation_id, event.user), (conversation, ben.user))

    def test_8_a_block_drops_the_sends(self):
        ann, ben, conversation = self.ann, self.ben, self.direct
        ann.client.block(ben.user)
        self.assertEqual(ann.client.blocked(), [ben.user])
        ben.client.send_text(conversation, "while blocked")
        ann.client.unblock(ben.user)
        self.assertEqual(ann.client.blocked(), [])
        seq = ben.client.send_text(conversation, "after unblock")
        got = ann.message(conversation, MessageContent.TEXT, "the text after unblocking", ben.user)
        self.assertEqual((got.seq, got.text), (seq, "after unblock"))
        texts = [m.text for m in ann.client.history(conversation, 100)]
        self.assertNotIn("while blocked", texts)

    def test_9_privacy_and_a_deleted_request(self):
        ben, cy = self.ben, self.cy
        default = Privacy(group_adds=GroupAdds.CONTACTS, direct_starts=DirectStarts.EVERYONE)
        self.assertEqual(ben.client.privacy(), default)
        ben.client.set_privacy(None, DirectStarts.NOBODY)
        self.assertEqual(ben.client.privacy().direct_starts, DirectStarts.NOBODY)
        with self.assertRaises(TernError.Server) as caught:
            cy.client.create_direct(ben.user)
        self.assertEqual(caught.exception.code, "ConsentRequired")
        ben.client.set_privacy(GroupAdds.EVERYONE, DirectStarts.EVERYONE)
        self.assertEqual(
            ben.client.privacy(),
            Privacy(group_adds=GroupAdds.EVERYONE, direct_starts=DirectStarts.EVERYONE),
        )

        conversation = cy.client.create_direct(ben.user)
        cy.client.send_text(conversation, "buy now")
        ben.message(conversation, MessageContent.TEXT, "the stranger's text")
        self.assertIn(conversation, [r.conversation_id for r in ben.client.requests()])
        self.assertEqual(ben.client.delete_request(conversation, True), cy.user)
        self.assertEqual(ben.client.blocked(), [cy.user])
        self.assertEqual(ben.client.requests(), [])

    def test_9b_a_file_with_progress(self):
        ann, ben, conversation = self.ann, self.ben, self.direct
        path = os.path.join(WORK, "photo.jpg")
        data = bytes(i % 251 for i in range(300_000))
        with open(path, "wb") as f:
            f.write(data)

        class Progress(tern_ffi.TransferProgress):
            def __init__(self):
                self.seen = []

            def on_progress(self, done, total):
                self.seen.append((done, total))

        progress = Progress()
        details = tern_ffi.FileDetails(
            thumbnail=b"\xff\xd8\xff", width=640, height=480, duration_ms=0, content_type=None
        )
        seq = ann.client.send_file(conversation, path, details, progress)
        self.assertTrue(progress.seen, "progress was reported")
        done, total = progress.seen[-1]
        self.assertEqual(done, total)
        got = ben.message(conversation, MessageContent.ATTACHMENT, "the file", ann.user)
        self.assertEqual(got.seq, seq)
        c = got.content
        self.assertEqual(
            (c.file_name, c.content_type, c.size, c.thumbnail, c.width, c.height, c.voice),
            ("photo.jpg", "image/jpeg", len(data), b"\xff\xd8\xff", 640, 480, False),
        )
        out = os.path.join(WORK, "photo-received.jpg")
        self.assertEqual(ben.client.fetch_file(conversation, seq, out), len(data))
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data)
        with self.assertRaises(TernError.NoSuchMessage):
            ben.client.fetch_file(conversation, self.first, out + ".2")
        with self.assertRaises(TernError.File):
            ann.client.send_file(conversation, path + ".missing", details, None)
        too_big = tern_ffi.FileDetails(
            thumbnail=bytes(16 * 1024 + 1), width=0, height=0, duration_ms=0, content_type=None
        )
        with self.assertRaises(TernError.InvalidArgument):
            ann.client.send_file(conversation, path, too_big, None)


if __name__ == "__main__":
    unittest.main()
