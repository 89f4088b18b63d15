"""DMSC over DTLS 1.2 (draft-dmsc-protocol-00, Section 9.2).

About 475 lines, kept in one module: the sans-I/O endpoint and its two thin asyncio
bindings share the record parsing and the OpenSSL handling that only they need.

* DTLS 1.2 (RFC 6347) with ECDHE and AEAD cipher suites only, through pyOpenSSL's DTLS
  methods on memory BIOs: :class:`DtlsEndpoint` is sans-I/O (datagrams and ``now`` in,
  datagrams, a timer and :mod:`.datagram` channel events out); :func:`serve` and
  :func:`connect` are the asyncio bindings, with the API of :mod:`.quic`.
* ALPN ``dmsc/1`` as for QUIC (so that captures are recognised on any port); a peer
  that does not negotiate it is refused.
* Mutual certificate authentication: the server requires a client certificate, and
  each end checks the other's with the DMSC trust store
  (:meth:`~dmscproto.transport.tls.TlsIdentity.verifier`, Section 10: issued by a trusted
  domain authority for its own domain, valid, EKU clientAuth or serverAuth), the same
  check as QUIC.  A refusal is a fatal alert; the handshake fails.
* Cookie exchange before any state: a ClientHello from an address without an
  association is answered by a HelloVerifyRequest carrying a stateless cookie,
  HMAC-SHA256(per-endpoint secret, address | port), through one shared listening SSL
  object (``DTLSv1_listen``).  Only a ClientHello that returns a valid cookie, proving the
  source address, creates per-client state.  A valid new ClientHello from an address
  whose association is established starts a new association that replaces it (the
  client restarted, RFC 6347, 4.2.8); a late copy of the ClientHello that set up the
  association (same random) is ignored.
* One DMSC PDU per DTLS record and per datagram.  Datagrams are at most ``max_datagram``
  octets of UDP payload (default 1200): handshake messages are fragmented by DTLS to fit,
  and a PDU may be at most ``max_datagram`` - 37 octets (the DTLS record header, explicit
  nonce and AEAD tag): 1163 by default.  There is no DMSC-layer fragmentation: a larger
  PDU is refused (:class:`~.reliability.PduTooLarge`; a responder sends ERROR PDU_TOO_LARGE,
  Section 9.3).  Transfers that need large PDUs use QUIC.
* Reliability (retransmission, duplicate detection) is the DMSC layer's, Section 9.3.
* DTLS handshake retransmission uses OpenSSL's own timer (``DTLSv1_get_timeout`` /
  ``DTLSv1_handle_timeout``, which reads the real clock); ``now`` only decides when
  :meth:`DtlsEndpoint.handle_timer` is called.  An association whose handshake does not
  finish within ``handshake_timeout`` is dropped, and an established one idle for
  ``idle_timeout`` (default DEFAULT_LEASE, so that an agent refreshing at half its lease
  keeps its association) is closed with close_notify.  At most ``max_sessions``
  associations are kept; ClientHellos with valid cookies beyond that are ignored.
* A client that has heard nothing from the server when its first handshake timer
  expires sends a new ClientHello from a fresh SSL object instead of letting OpenSSL
  retransmit the first one: OpenSSL (4.0) copies the retransmission's record sequence
  number (1) into the HelloVerifyRequest, then sends the ServerHello with record sequence
  1 as well, which the client drops as a replay, and the handshake stalls.
* A key log in SSLKEYLOGFILE format is written on request, so Wireshark can decrypt.

OpenSSL (up to 4.0 at least) cannot use an Ed25519 certificate for a DTLS 1.2 *server*
(it gates Ed25519 server authentication on the TLS 1.2 version number, which DTLS does
not have); Ed25519 client certificates work.  A DTLS server therefore needs an ECDSA
P-256 certificate: :func:`p256_identity` issues one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL, crypto

from ..codec.registry import ALPN, DEFAULT_MAX_DATAGRAM, ErrorCode, timer
from ..security.ca import CertificateError, Credential, DomainAuthority, Identity, Kind
from .channel import ChannelEvent, PayloadReceived, PeerClosed, PeerConnected
from .datagram import DatagramConnection, DatagramNode, Handler, open_client, start_node
from .keylog import KeyLog
from .reliability import PduTooLarge, Reliability
from .reliability_events import Address
from .tap import DatagramTap
from .tls import TlsIdentity

#: DTLS 1.2 protocol version (RFC 6347, 4.1).
DTLS1_2_VERSION = 0xFEFD
#: ECDHE with AEAD only; their record overhead is at most 37 octets.
CIPHERS = (b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
           b"ECDHE-ECDSA-AES256-GCM-SHA384")
#: DTLS record header (13) + explicit nonce (8) + AEAD tag (16), the largest of CIPHERS.
RECORD_OVERHEAD = 37
_RECORD_HEADER = 13
_CT_HANDSHAKE, _CT_APPLICATION_DATA = 22, 23
_HT_CLIENT_HELLO = 1
_ALPN = ALPN.encode("ascii")
_READ_SIZE = 1 << 16


def p256_identity(authority: DomainAuthority, name: str, kind: Kind,
                  trust: TlsIdentity | None = None) -> TlsIdentity:
    """A TLS identity with a fresh ECDSA P-256 key, usable by a DTLS server (see the
    module docstring); trusts ``trust``'s anchors or else only ``authority``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = authority.issue(name, kind, public_key=key.public_key()).certificate
    return TlsIdentity(Credential(cert, key), trust.trust if trust else authority.trust_store)


def _records(data: bytes) -> Iterator[bytes]:
    """Split the DTLS records of one memory-BIO read (RFC 6347, 4.1)."""
    offset = 0
    while offset + _RECORD_HEADER <= len(data):
        end = offset + _RECORD_HEADER + int.from_bytes(data[offset + 11:offset + 13], "big")
        yield data[offset:end]
        offset = end


def _is_client_hello(data: bytes) -> bool:
    """An epoch-0 handshake record holding a ClientHello (it may start an association)."""
    return (len(data) > _RECORD_HEADER and data[0] == _CT_HANDSHAKE
            and data[3:5] == b"\0\0" and data[_RECORD_HEADER] == _HT_CLIENT_HELLO)


def _client_random(hello: bytes) -> bytes:
    """The ClientHello's random: after the record header, the 12-octet DTLS handshake
    header and client_version (RFC 6347, 4.2.2)."""
    start = _RECORD_HEADER + 12 + 2
    return hello[start:start + 32]


@dataclass(eq=False, slots=True)
class _Session:
    """Per-peer state, created only after a valid cookie (server) or by connect (client)."""

    addr: Address
    conn: SSL.Connection
    started: float
    last_seen: float
    established: bool = False
    heard: bool = False
    hello_random: bytes = b""
    identity: Identity | None = None
    refusal: str | None = None


class DtlsEndpoint:
    """Sans-I/O DTLS 1.2 for one UDP socket: a server (many peers) or a client; a
    :class:`~.channel.Channel`."""

    def __init__(self, tls: TlsIdentity, *, is_client: bool,
                 server_name: str | None = None, expect_domain: str | None = None,
                 max_datagram: int = DEFAULT_MAX_DATAGRAM, keylog: TextIO | None = None,
                 handshake_timeout: float = timer("REQUEST_TIMEOUT"),
                 idle_timeout: float = timer("DEFAULT_LEASE"),
                 max_sessions: int = 10000) -> None:
        key = tls.credential.private_key
        if not is_client and isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("OpenSSL cannot authenticate a DTLS 1.2 server with an Ed25519 "
                             "certificate; use an ECDSA P-256 one (p256_identity)")
        if max_datagram <= RECORD_OVERHEAD + 256:
            raise ValueError(f"max_datagram {max_datagram} is too small")
        self.is_client = is_client
        self.max_datagram = max_datagram
        self.max_pdu = max_datagram - RECORD_OVERHEAD
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.server_name = server_name
        #: Per-peer state by address: what a spoofed ClientHello flood must not grow.
        self.sessions: dict[Address, _Session] = {}
        self.hello_verify_requests = 0
        self._verifier = tls.verifier(server_name=server_name, expect_domain=expect_domain)
        self._usage = (ExtendedKeyUsageOID.SERVER_AUTH if is_client
                       else ExtendedKeyUsageOID.CLIENT_AUTH)
        self._cookie_secret = secrets.token_bytes(32)
        self._context = self._make_context(tls, keylog)
        self._listener = None if is_client else self._new_listener()
        self._now = 0.0
        self._dirty: set[_Session] = set()
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[ChannelEvent] = deque()

    # -- configuration ---------------------------------------------------------------------
    def _make_context(self, tls: TlsIdentity, keylog: TextIO | None) -> SSL.Context:
        ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD if self.is_client else SSL.DTLS_SERVER_METHOD)
        ctx.set_min_proto_version(DTLS1_2_VERSION)
        ctx.set_cipher_list(CIPHERS)
        ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION)
        assert tls.credential.private_key is not None
        ctx.use_certificate(tls.credential.certificate)
        ctx.use_privatekey(tls.credential.private_key)
        ctx.check_privatekey()
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        if self.is_client:
            ctx.set_alpn_protos([_ALPN])
        else:
            ctx.set_alpn_select_callback(
                lambda _conn, offered: _ALPN if _ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS)
            ctx.set_cookie_generate_callback(self._cookie)
            ctx.set_cookie_verify_callback(self._cookie_verify)
        if keylog is not None:
            log_file = keylog

            def write_keylog(_conn: SSL.Connection, line: bytes) -> None:
                log_file.write(line.decode("ascii") + "\n")
                log_file.flush()
            ctx.set_keylog_callback(write_keylog)
        return ctx

    def _verify(self, conn: SSL.Connection, cert: crypto.X509, _err: int, depth: int,
                _ok: int) -> bool:
        """The trust store is the only authority (as for QUIC): OpenSSL's own chain
        verdict is replaced by the DMSC check of the leaf."""
        if depth > 0:
            return True
        session = conn.get_app_data()
        assert isinstance(session, _Session)
        try:
            session.identity = self._verifier(cert.to_cryptography(), self._usage)
        except CertificateError as exc:
            session.refusal = f"{exc.code.name}: {exc}"
            return False
        return True

    def _cookie(self, conn: SSL.Connection) -> bytes:
        """HMAC of the source address: the listener's app data before the cookie is
        valid, the session's afterwards (OpenSSL checks the cookie again then)."""
        data = conn.get_app_data()
        addr = data.addr if isinstance(data, _Session) else data
        return hmac.new(self._cookie_secret, repr(addr).encode(), hashlib.sha256).digest()

    def _cookie_verify(self, conn: SSL.Connection, cookie: bytes) -> bool:
        return hmac.compare_digest(cookie, self._cookie(conn))

    def _new_connection(self) -> SSL.Connection:
        conn = SSL.Connection(self._context, None)
        conn.set_ciphertext_mtu(self.max_datagram)
        return conn

    def _new_listener(self) -> SSL.Connection:
        listener = self._new_connection()
        listener.set_accept_state()
        return listener

    # -- Channel API -----------------------------------------------------------------------
    def connect(self, addr: Address, now: float) -> None:
        """Client: start the handshake with ``addr``."""
        if not self.is_client:
            raise ValueError("a DTLS server does not connect")
        self._now = now
        session = _Session(addr, self._client_connection(), now, now)
        self.sessions[addr] = session
        self._start_client(session)

    def _client_connection(self) -> SSL.Connection:
        conn = self._new_connection()
        if self.server_name is not None:
            conn.set_tlsext_host_name(self.server_name.encode("idna"))
        conn.set_connect_state()
        return conn

    def _start_client(self, session: _Session) -> None:
        """Send a first ClientHello (record sequence 0) from the session's SSL object."""
        session.conn.set_app_data(session)
        self._drive(session)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._now = now
        session = self.sessions.get(addr)
        hello = _is_client_hello(data)
        if session is not None and not (session.established and hello):
            session.last_seen = now
            session.heard = True
            session.conn.bio_write(data)
            self._drive(session)
        elif session is not None and _client_random(data) == session.hello_random:
            return  # a late copy of the ClientHello that set up this association
        elif (self._listener is not None and hello
              and (session is not None or len(self.sessions) < self.max_sessions)):
            self._listen(data, addr, now)

    def _listen(self, data: bytes, addr: Address, now: float) -> None:
        """Stateless cookie exchange (RFC 6347, 4.2.1) on the shared listener."""
        listener = self._listener
        assert listener is not None
        listener.set_app_data(addr)
        listener.bio_write(data)
        try:
            listener.DTLSv1_listen()
        except SSL.WantReadError:  # no valid cookie: a HelloVerifyRequest, no state
            hvr = self._drain(listener)
            if hvr:
                self.hello_verify_requests += 1
                self._out.append((hvr, addr))
            return
        except SSL.Error:
            self._listener = self._new_listener()
            return
        self._listener = self._new_listener()
        old = self.sessions.pop(addr, None)
        if old is not None:
            self._events.append(PeerClosed(addr, "replaced by a new handshake"))
        session = _Session(addr, listener, now, now, hello_random=_client_random(data))
        listener.set_app_data(session)
        self.sessions[addr] = session
        self._drive(session)

    def send(self, addr: Address, payload: bytes) -> None:
        """Send one PDU in one record (and datagram) to an associated peer."""
        if len(payload) > self.max_pdu:
            raise PduTooLarge(f"PDU of {len(payload)} octets exceeds {self.max_pdu}")
        session = self.sessions.get(addr)
        if session is None or not session.established:
            raise ConnectionError(f"no DTLS association with {addr}")
        try:
            session.conn.write(payload)
        except SSL.Error as exc:
            self._fail(session, f"DTLS write failed: {exc}", ErrorCode.TARGET_UNREACHABLE)
            return
        self._dirty.add(session)

    def close(self, addr: Address) -> None:
        """Send close_notify and forget the peer."""
        session = self.sessions.pop(addr, None)
        if session is None:
            return
        if session.established:
            with contextlib.suppress(SSL.Error):
                session.conn.shutdown()
            self._queue_output(session)
        self._dirty.discard(session)
        self._events.append(PeerClosed(addr, "closed"))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self._now = now
        for session in self._dirty:
            self._queue_output(session)
        self._dirty.clear()
        out, self._out = self._out, []
        return out

    def next_event(self) -> ChannelEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = []
        for s in self.sessions.values():
            if s.established:
                times.append(s.last_seen + self.idle_timeout)
                continue
            times.append(s.started + self.handshake_timeout)
            timeout = s.conn.DTLSv1_get_timeout()
            if timeout is not None:
                times.append(self._now + timeout)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        for session in list(self.sessions.values()):
            if session.established:
                if now >= session.last_seen + self.idle_timeout:
                    self.close(session.addr)
            elif now >= session.started + self.handshake_timeout:
                self._fail(session, "DTLS handshake timed out", ErrorCode.TARGET_UNREACHABLE)
            elif self.is_client and not session.heard:
                if not session.conn.DTLSv1_get_timeout():  # OpenSSL's timer has expired
                    session.conn = self._client_connection()  # see the module docstring
                    self._start_client(session)
            else:
                try:
                    session.conn.DTLSv1_handle_timeout()
                except SSL.Error as exc:
                    self._fail(session, f"DTLS handshake failed: {exc}",
                               ErrorCode.UNTRUSTED_CERTIFICATE)
                    continue
                self._dirty.add(session)

    # -- internals -------------------------------------------------------------------------
    def _drive(self, session: _Session) -> None:
        conn = session.conn
        self._dirty.add(session)
        if not session.established:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                return
            except SSL.Error as exc:
                reason = session.refusal or f"DTLS handshake failed: {exc}"
                self._fail(session, reason, ErrorCode.UNTRUSTED_CERTIFICATE)
                return
            if session.identity is None:  # the verify callback always runs: defensive
                self._fail(session, "peer not authenticated", ErrorCode.UNTRUSTED_CERTIFICATE)
                return
            if conn.get_alpn_proto_negotiated() != _ALPN:
                conn.shutdown()
                self._fail(session, f"ALPN {ALPN} not negotiated", ErrorCode.UNEXPECTED_MESSAGE)
                return
            session.established = True
            self._events.append(PeerConnected(
                session.addr, session.identity,
                conn.get_peer_certificate(as_cryptography=True)))
        while True:
            try:
                data = conn.recv(_READ_SIZE)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self._fail(session, "peer sent close_notify", ErrorCode.TARGET_UNREACHABLE)
                return
            except SSL.Error as exc:
                self._fail(session, f"DTLS error: {exc}", ErrorCode.TARGET_UNREACHABLE)
                return
            self._events.append(PayloadReceived(session.addr, data))

    def _fail(self, session: _Session, reason: str, code: ErrorCode) -> None:
        """Drop a session; whatever it still has to say (an alert) is sent first."""
        self._queue_output(session)
        self._dirty.discard(session)
        if self.sessions.get(session.addr) is session:
            del self.sessions[session.addr]
            self._events.append(PeerClosed(session.addr, reason, code))

    def _queue_output(self, session: _Session) -> None:
        data = self._drain(session.conn)
        if data:
            self._out.extend((d, session.addr) for d in self._packetize(data))

    def _packetize(self, data: bytes) -> Iterator[bytes]:
        """Records to datagrams: each application-data record alone (one PDU per
        datagram), consecutive handshake records packed up to ``max_datagram``."""
        batch = b""
        for record in _records(data):
            if record[0] == _CT_APPLICATION_DATA or len(batch) + len(record) > self.max_datagram:
                if batch:
                    yield batch
                batch = b""
                if record[0] == _CT_APPLICATION_DATA:
                    yield record
                    continue
            batch += record
        if batch:
            yield batch

    @staticmethod
    def _drain(conn: SSL.Connection) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(conn.bio_read(_READ_SIZE))
            except SSL.WantReadError:
                return b"".join(chunks)


# --- asyncio bindings ---------------------------------------------------------------------
async def serve(host: str, port: int, tls: TlsIdentity, handler: Handler, *,
                pcap: DatagramTap | None = None, keylog: str | Path | TextIO | None = None,
                max_datagram: int = DEFAULT_MAX_DATAGRAM,
                reliability: Reliability | None = None) -> DatagramNode:
    """Listen for DMSC over DTLS on ``host``:``port`` (0 for an ephemeral port).

    ``tls`` must hold an ECDSA P-256 certificate (see the module docstring).  The result
    has ``address``, ``connections`` (by address), ``peers`` (by entity ID), ``close()``."""
    key_log = KeyLog(keylog)
    endpoint = DtlsEndpoint(tls, is_client=False, max_datagram=max_datagram,
                            keylog=key_log.file)
    return await start_node(endpoint, "dtls", handler, local_addr=(host, port),
                            pcap=pcap, reliability=reliability,
                            on_close=key_log.close)


async def connect(host: str, port: int, tls: TlsIdentity, *, server_name: str | None = None,
                  expect_domain: str | None = None, handler: Handler | None = None,
                  pcap: DatagramTap | None = None, keylog: str | Path | TextIO | None = None,
                  timeout: float = timer("REQUEST_TIMEOUT"),
                  max_datagram: int = DEFAULT_MAX_DATAGRAM,
                  reliability: Reliability | None = None) -> DatagramConnection:
    """Open a DMSC-over-DTLS association with a gateway (handshake done, both ends
    authenticated).  Options as :func:`dmscproto.transport.quic.connect`; ``timeout``
    defaults to REQUEST_TIMEOUT because OpenSSL's handshake retransmission timer starts
    at 1 s and doubles.  Under heavy loss a handshake can still time out: callers retry."""
    key_log = KeyLog(keylog)
    endpoint = DtlsEndpoint(tls, is_client=True, server_name=server_name,
                            expect_domain=expect_domain, max_datagram=max_datagram,
                            keylog=key_log.file)
    return await open_client(endpoint, "dtls", handler, host, port, timeout, pcap=pcap,
                             reliability=reliability, on_close=key_log.close)
