"""A small tern/1 client written from docs/PROTOCOL.md and schema/tern.fbs only.

It shares no code with tern: QUIC and TLS come from aioquic, frames from the
Python code flatc generates from schema/tern.fbs (package ``tern.fb``, found on
``sys.path``; conformance/run.sh generates it), signatures from
``cryptography``.

What it implements, by section of PROTOCOL.md:

- §1   QUIC v1, ALPN ``tern/1``, SNI ``localhost``; the negotiated ALPN is checked;
       a PING every 25 s keeps an idle connection alive.
- §1.1 certificate pinning: aioquic runs with ``verify_mode = CERT_NONE``
       and the client compares the SHA-256 of the leaf certificate's DER
       bytes with the pinned fingerprint before anything is sent.
- §1.2 the control stream is the first bidirectional stream (id 0).
- §2   frames: u32 little-endian length, then one ``Frame`` FlatBuffer.
- §2.1 request ids count up from 1; answers are matched by id, everything
       else (request id 0, or an id nobody waits for) is queued as a push.
- §3.1 the TLS exporter, computed from aioquic's key schedule: the
       ``exp master`` secret is derived at the moment aioquic derives
       ``s ap traffic`` (same transcript hash), then RFC 8446 §7.5.
- §3.2 the auth transcripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ssl
import struct
from dataclasses import dataclass
from typing import Any, Dict, Optional

import flatbuffers
from aioquic import tls
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from tern.fb import Body as _body_mod
from tern.fb import ErrorCode as _error_mod
from tern.fb.Frame import Frame, FrameT

ALPN = "tern/1"
EXPORTER_LABEL = b"EXPORTER-tern/1-channel-binding"
CLIENT_MAX_FRAME = 4_194_304  # §2: largest frame a client accepts from the server

Body = _body_mod.Body
ErrorCode = _error_mod.ErrorCode
BODY_NAMES = {v: k for k, v in vars(Body).items() if not k.startswith("_")}
ERROR_NAMES = {v: k for k, v in vars(ErrorCode).items() if not k.startswith("_")}


class Close:
    """§1.3 application close codes."""

    NORMAL = 0
    PROTOCOL_VIOLATION = 1
    FRAME_TOO_LARGE = 2
    TIMEOUT = 3
    TOO_SLOW = 4
    SHUTTING_DOWN = 5
    AUTH_FAILED = 6


# ---------------------------------------------------------------- TLS exporter

_orig_setup_traffic_protection = tls.Context._setup_traffic_protection


def _setup_traffic_protection_hook(self, direction, epoch, label):
    # §3.1: exporter_master_secret uses the transcript hash of "s ap traffic"
    # (ClientHello..server Finished). aioquic derives "s ap traffic" right after
    # extracting the master secret, with exactly that transcript in its hash.
    if label == b"s ap traffic":
        self.tern_exporter_master = self.key_schedule.derive_secret(b"exp master")
        self.tern_hash_algorithm = self.key_schedule.algorithm
    _orig_setup_traffic_protection(self, direction, epoch, label)


tls.Context._setup_traffic_protection = _setup_traffic_protection_hook


def hkdf_expand_label(algorithm: hashes.HashAlgorithm, secret: bytes, label: bytes,
                      context: bytes, length: int) -> bytes:
    """RFC 8446 §7.1 HKDF-Expand-Label."""
    full = b"tls13 " + label
    info = struct.pack(">H", length) + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(algorithm=algorithm, length=length, info=info).derive(secret)


def _hash(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def tls_exporter(algorithm: hashes.HashAlgorithm, exporter_master: bytes, label: bytes,
                 context: bytes, length: int) -> bytes:
    """RFC 8446 §7.5 TLS-Exporter from the exporter master secret."""
    secret = hkdf_expand_label(algorithm, exporter_master, label, _hash(algorithm, b""),
                               algorithm.digest_size)
    return hkdf_expand_label(algorithm, secret, b"exporter", _hash(algorithm, context), length)


# ---------------------------------------------------------------- transcripts


def transcript(context: str, exporter: bytes, user: str, extra: bytes) -> bytes:
    """§3.2: context || 00 || exporter(32) || len(handle) || handle || extra."""
    handle = user.encode("ascii")
    assert len(exporter) == 32
    return context.encode("ascii") + b"\x00" + exporter + bytes([len(handle)]) + handle + extra


class DeviceKey:
    def __init__(self, private: Optional[Ed25519PrivateKey] = None):
        self.private = private or Ed25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def register_signature(self, exporter: bytes, user: str) -> bytes:
        return self.sign(transcript("tern/1 register", exporter, user, self.public))

    def authenticate_signature(self, exporter: bytes, user: str, device: int) -> bytes:
        return self.sign(transcript("tern/1 authenticate", exporter, user, struct.pack(">I", device)))


# ---------------------------------------------------------------- frames


def encode_frame(request_id: int, body_type: int, body: Any) -> bytes:
    """One frame: u32 LE length + Frame FlatBuffer (§2)."""
    builder = flatbuffers.Builder(256)
    builder.Finish(FrameT(requestId=request_id, bodyType=body_type, body=body).Pack(builder))
    data = bytes(builder.Output())
    return struct.pack("<I", len(data)) + data


def decode_frame(data: bytes) -> FrameT:
    return FrameT.InitFromObj(Frame.GetRootAs(data, 0))


def s(value: Any) -> Optional[str]:
    """flatc's Python code returns strings as bytes."""
    if value is None:
        return None
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def b(value: Any) -> bytes:
    """A [ubyte] field as bytes (flatc gives a list of ints or a numpy array)."""
    if value is None:
        return b""
    return bytes(bytearray(list(value)))


class ProtocolError(Exception):
    pass


class PinMismatch(ProtocolError):
    pass


class ConnectionClosed(ProtocolError):
    def __init__(self, closed: "Closed"):
        super().__init__(f"connection closed: {closed}")
        self.closed = closed


@dataclass
class Closed:
    error_code: int
    application: bool  # an application CONNECTION_CLOSE (tern close code) vs transport
    reason: str


class ErrorAnswer(ProtocolError):
    """A request answered with Error (§5)."""

    def __init__(self, request_id: int, error: Any):
        self.request_id = request_id
        self.error = error
        self.code = error.code
        super().__init__(f"request {request_id}: {ERROR_NAMES.get(error.code, error.code)}: "
                         f"{s(error.message)}")


# ---------------------------------------------------------------- connection


class TernProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.control_stream: Optional[int] = None
        self._rx = bytearray()
        self.pending: Dict[int, asyncio.Future] = {}
        self.pushes: asyncio.Queue = asyncio.Queue()
        self.closed: asyncio.Future = asyncio.get_event_loop().create_future()
        self.violation: Optional[str] = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            if event.stream_id != self.control_stream:
                self.violation = f"data on stream {event.stream_id}: the server never opens streams"
                return
            self._rx += event.data
            self._parse()
        elif isinstance(event, ConnectionTerminated):
            if not self.closed.done():
                self.closed.set_result(Closed(event.error_code, event.frame_type is None,
                                              event.reason_phrase))
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionClosed(self.closed.result()))
            self.pending.clear()

    def _parse(self) -> None:
        while len(self._rx) >= 4:
            (n,) = struct.unpack_from("<I", self._rx, 0)
            if n == 0 or n > CLIENT_MAX_FRAME:
                self.violation = f"server sent a frame of length {n}"
                self._rx.clear()
                return
            if len(self._rx) < 4 + n:
                return
            data = bytes(self._rx[4:4 + n])
            del self._rx[:4 + n]
            frame = decode_frame(data)
            fut = self.pending.pop(frame.requestId, None) if frame.requestId else None
            if fut is not None and not fut.done():
                fut.set_result(frame)
            else:
                self.pushes.put_nowait(frame)


class Connection:
    """One authenticated-or-not tern connection (use ``async with open_connection(...)``)."""

    def __init__(self, protocol: TernProtocol):
        self.p = protocol
        self.next_id = 1
        tls_ctx = protocol._quic.tls
        if tls_ctx.alpn_negotiated != ALPN:
            raise ProtocolError(f"ALPN {tls_ctx.alpn_negotiated!r} negotiated, not {ALPN}")
        self.exporter = tls_exporter(tls_ctx.tern_hash_algorithm, tls_ctx.tern_exporter_master,
                                     EXPORTER_LABEL, b"", 32)
        self.user: Optional[str] = None
        self.device: Optional[int] = None

    # -- raw I/O
    def send_raw(self, data: bytes, end_stream: bool = False) -> None:
        if self.p.control_stream is None:
            self.p.control_stream = self.p._quic.get_next_available_stream_id(is_unidirectional=False)
        self.p._quic.send_stream_data(self.p.control_stream, data, end_stream=end_stream)
        self.p.transmit()

    def send_frame(self, request_id: int, body_type: int, body: Any) -> None:
        self.send_raw(encode_frame(request_id, body_type, body))

    def take_id(self) -> int:
        rid = self.next_id
        self.next_id += 1
        return rid

    def expect(self, request_id: int) -> asyncio.Future:
        fut = asyncio.get_event_loop().create_future()
        if self.p.closed.done():
            fut.set_exception(ConnectionClosed(self.p.closed.result()))
        else:
            self.p.pending[request_id] = fut
        return fut

    async def call_raw(self, data: bytes, request_id: int, timeout: float = 5.0) -> FrameT:
        """Send pre-encoded bytes and wait for the answer naming ``request_id``."""
        fut = self.expect(request_id)
        self.send_raw(data)
        return await asyncio.wait_for(fut, timeout)

    async def call(self, body_type: int, body: Any, timeout: float = 5.0) -> FrameT:
        """Send one request; return its answer frame (success or Error)."""
        rid = self.take_id()
        fut = self.expect(rid)
        self.send_frame(rid, body_type, body)
        frame = await asyncio.wait_for(fut, timeout)
        assert frame.requestId == rid
        return frame

    async def request(self, body_type: int, body: Any, expect: int, timeout: float = 5.0) -> Any:
        """Send one request; return the success body, raise ErrorAnswer on Error."""
        frame = await self.call(body_type, body, timeout)
        if frame.bodyType == Body.Error:
            raise ErrorAnswer(frame.requestId, frame.body)
        if frame.bodyType != expect:
            raise ProtocolError(f"expected {BODY_NAMES.get(expect)}, got "
                                f"{BODY_NAMES.get(frame.bodyType, frame.bodyType)}")
        return frame.body

    async def next_push(self, timeout: float = 5.0) -> FrameT:
        get = asyncio.ensure_future(self.p.pushes.get())
        done, _ = await asyncio.wait({get, self.p.closed}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        if self.p.closed.done():
            # a push may have been queued in the same datagram as the close
            if not self.p.pushes.empty():
                return self.p.pushes.get_nowait()
            raise ConnectionClosed(self.p.closed.result())
        raise asyncio.TimeoutError("no push")

    async def wait_closed(self, timeout: float = 5.0) -> Closed:
        return await asyncio.wait_for(asyncio.shield(self.p.closed), timeout)

    def drain_pushes(self) -> list:
        out = []
        while not self.p.pushes.empty():
            out.append(self.p.pushes.get_nowait())
        return out

    # -- authentication (§3)
    async def register(self, user: str, key: DeviceKey, device_name: str = "conformance") -> Any:
        from tern.fb.Register import RegisterT
        body = RegisterT(user=user, deviceName=device_name, deviceKey=list(key.public),
                         signature=list(key.register_signature(self.exporter, user)))
        ok = await self.request(Body.Register, body, Body.Registered)
        self.user, self.device = s(ok.user), ok.device
        return ok

    async def authenticate(self, user: str, device: int, key: DeviceKey) -> Any:
        from tern.fb.Authenticate import AuthenticateT
        body = AuthenticateT(user=user, device=device,
                             signature=list(key.authenticate_signature(self.exporter, user, device)))
        ok = await self.request(Body.Authenticate, body, Body.Authenticated)
        self.user, self.device = s(ok.user), ok.device
        return ok


class _Opened:
    def __init__(self, host: str, port: int, fingerprint: str, idle_timeout: float):
        config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN],
                                   verify_mode=ssl.CERT_NONE, server_name="localhost",
                                   idle_timeout=idle_timeout)
        self._cm = connect(host, port, configuration=config, create_protocol=TernProtocol)
        self.pin = normalize_fingerprint(fingerprint)

    async def __aenter__(self) -> Connection:
        protocol = await self._cm.__aenter__()
        try:
            cert = protocol._quic.tls._peer_certificate
            der = cert.public_bytes(serialization.Encoding.DER)
            if not hmac.compare_digest(hashlib.sha256(der).hexdigest(), self.pin):
                raise PinMismatch("server certificate does not match the pinned fingerprint")
            conn = Connection(protocol)
        except BaseException:
            protocol.close()
            await self._cm.__aexit__(None, None, None)
            raise
        # §1: the server pings only when its idle timeout is under 50 s, so the
        # client keeps the connection alive itself.
        self._keep_alive = asyncio.ensure_future(_keep_alive(protocol))
        return conn

    async def __aexit__(self, *exc) -> None:
        self._keep_alive.cancel()
        await self._cm.__aexit__(*exc)


KEEP_ALIVE_SECS = 25.0


async def _keep_alive(protocol: TernProtocol) -> None:
    with contextlib.suppress(Exception):
        while not protocol.closed.done():
            await asyncio.sleep(KEEP_ALIVE_SECS)
            if protocol.closed.done():
                return
            await asyncio.wait_for(protocol.ping(), KEEP_ALIVE_SECS)


def normalize_fingerprint(fp: str) -> str:
    """§1.1: 64 hex digits; ``:`` separators and either case are accepted."""
    fp = fp.replace(":", "").strip().lower()
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise ValueError(f"not a SHA-256 fingerprint: {fp!r}")
    return fp


def open_connection(host: str, port: int, fingerprint: str, idle_timeout: float = 60.0) -> _Opened:
    return _Opened(host, port, fingerprint, idle_timeout)
