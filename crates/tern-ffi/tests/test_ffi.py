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

import os
import re
import subprocess
import time
import unittest

import tern_ffi
from tern_ffi import Event, TernClient, TernError

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


if __name__ == "__main__":
    unittest.main()
