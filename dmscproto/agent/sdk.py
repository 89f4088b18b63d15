"""The agent SDK: register, serve, discover and call in a few lines (Section 5).

An :class:`Agent` holds the agent's certificate and key (its identity, Section 3.2) and
talks to its home gateway over one QUIC connection (Section 9.1) with mutual TLS.  The
protocol is the sans-I/O :class:`~dmscproto.protocol.agent.AgentClient` (registration
with lease refresh, request transactions), driven by a
:class:`~dmscproto.host.pump.Pump`; this module only turns its events into awaitable
results and runs the application's handler for ROUTE_REQUESTs the gateway delivers
over the same connection::

    agent = Agent.from_files("hello.pem", "hello.key", ["ca.pem"], gateway="127.0.0.1:4433")

    @agent.handler
    async def hello(payload: bytes, request: Request) -> bytes:
        return b"hello, " + payload

    async with agent:
        await agent.register(skills=["greet"])
        await agent.wait_closed()

Contract: every failure is a :class:`~dmscproto.errors.DmscError` with a ``code``:
:class:`AgentError` when a request fails (the gateway's STATUS, or TRANSACTION_TIMEOUT
or TARGET_UNREACHABLE when its answer could not come),
:class:`~dmscproto.transport.errors.TransportError` when the gateway cannot be reached
(:meth:`Agent.connect`), :class:`~dmscproto.errors.NotConnected` before
:meth:`Agent.connect`, and :class:`~dmscproto.errors.DeadlineExceeded` (a
``TimeoutError``) when a ``timeout=`` passes.  A request whose caller stops waiting
(a deadline, a cancelled task) is abandoned at both ends: the protocol machine forgets
it and its QUIC stream is stopped.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from ..analysis.pcap import PcapWriter
from ..codec.cose import SignedRecord
from ..codec.messages import DiscoverReply, Message, RouteReply, TraceReply
from ..codec.registry import ID_SIZE, ErrorCode, MessageType, Scope, timer
from ..codec.signing import sign_record, spki
from ..codec.values import (
    AttrValue,
    CapabilityRecord,
    DiscoveryQuery,
    Endpoint,
    HopRecord,
    Provider,
    Skill,
    TraceContext,
)
from ..errors import DeadlineExceeded, DmscError, NotConnected
from ..host.pump import Association, Pump
from ..host.telemetry import AgentSpans
from ..host.transports import Connection, Peer, transport_named
from ..protocol.agent import AgentClient
from ..protocol.events import (
    Deregistered,
    GatewayLost,
    LeaseRefreshed,
    Registered,
    RegistrationFailed,
    RegistrationLost,
    RequestCompleted,
    RequestFailed,
    RouteRequestReceived,
)
from ..security.ca import Credential, Identity, TrustStore
from ..transport.tls import TlsIdentity

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger(__name__)

#: Reconnection delays (seconds): the first, and the cap of the doubling.
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 10.0
#: Media type of payloads unless the agent says otherwise.
DEFAULT_MODE = "text/plain"
#: The lease asked for unless the caller says otherwise (seconds).
DEFAULT_LEASE = int(timer("DEFAULT_LEASE"))


class AgentError(DmscError):
    """The gateway refused or failed a request: ``code`` is the STATUS it answered with
    (also as ``status``), ``diagnostic`` its DIAGNOSTIC text, if any, and
    ``retry_after`` the seconds after which the gateway said the same request would be
    accepted (its RETRY_AFTER, Section 10.7), if it said so."""

    def __init__(self, status: ErrorCode, diagnostic: str | None = None,
                 retry_after: float | None = None) -> None:
        self.diagnostic = diagnostic
        self.retry_after = retry_after
        super().__init__(diagnostic or "", status)

    @property
    def status(self) -> ErrorCode:
        """The error code (the same as ``code``)."""
        return self.code

    @classmethod
    def of(cls, status: ErrorCode, diagnostic: str | None,
           retry_after_ms: int | None) -> AgentError:
        """The error for an answer: :class:`RateLimited` for RATE_LIMITED."""
        after = None if retry_after_ms is None else retry_after_ms / 1000
        kind = RateLimited if status is ErrorCode.RATE_LIMITED else AgentError
        return kind(status, diagnostic, after)


class RateLimited(AgentError):
    """RATE_LIMITED: the gateway refused the request for the sender's rate or cost
    (Section 10.7); a caller should wait ``retry_after`` seconds (when the gateway gave
    the hint) before sending it again."""


@dataclass(frozen=True, slots=True)
class Found:
    """One discovery answer: the signed record and its score (Section 5.2)."""

    score: int
    signed: SignedRecord

    @property
    def record(self) -> CapabilityRecord:
        return self.signed.record

    @property
    def agent_id(self) -> bytes:
        return self.signed.record.agent_id

    @property
    def agent_uri(self) -> str:
        return self.signed.record.agent_uri


@dataclass(frozen=True, slots=True)
class Request:
    """A routed request delivered to this agent."""

    source_agent: bytes
    payload: bytes
    transaction_id: int
    #: The W3C trace context the request carried (Section 7.5), if any.
    trace: TraceContext | None = None
    #: The caller's deadline (the TIMEOUT TLV) in seconds, if it gave one.
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Trace:
    """What a TRACE_REQUEST found (Section 6.8): the gateways on the path, in order, and
    how the trace ended (SUCCESS when it reached the target's gateway)."""

    status: ErrorCode
    hops: tuple[HopRecord, ...]
    diagnostic: str | None = None

    @property
    def reached(self) -> bool:
        return self.status is ErrorCode.SUCCESS


#: An application handler: payload and request in, answer payload out.
Handler = Callable[[bytes, Request], Awaitable[bytes] | bytes]


class _Machine:
    """:class:`AgentClient` in the :class:`~dmscproto.host.pump.Machine` shape (its
    only peer is the home gateway, so ``receive`` needs no source)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.messages_to_send = client.messages_to_send
        self.next_event = client.next_event

    def receive(self, source: object, msg: Message, now: float) -> None:
        self.client.receive(msg, now)

    def get_timer(self) -> float | None:
        return self.client.get_timer()

    def handle_timer(self, now: float) -> None:
        self.client.handle_timer(now)


def _skill(s: str | Skill) -> Skill:
    return s if isinstance(s, Skill) else Skill(id=s, name=s)


def _server_name(host: str) -> str | None:
    """The name checked against the gateway certificate: the gateway's host name, or
    none for an IP address (the certificate must still be of the agent's domain)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


class Agent:
    """One DMSC agent (module docstring).  ``gateway`` is the home gateway's
    ``host:port``; the gateway certificate must be of the agent's own domain and carry
    ``server_name`` (default: the gateway's host when it is a name; no name is checked
    for an IP address); ``transport``
    is ``quic`` (default) or ``dtls``, or ``udp`` together with ``lab=True`` (lab mode,
    Section 9.4: cleartext, the gateway is not authenticated, and the agent's token, if
    any, travels in clear).  When the connection is lost (the gateway
    restarted, say) the agent reconnects with backoff and registers again, unless
    ``reconnect`` is false; requests in flight then fail with TARGET_UNREACHABLE.
    ``token`` is an access token from the domain authority (a JWT bound to the agent's
    certificate), sent with every request, for gateways that require one.
    ``keepalive`` (seconds, default AGENT_KEEPALIVE; None: off) is the agent keepalive
    (Section 6.8.3): ECHO_REQUEST after that much silence from the gateway, and the
    gateway taken for lost, the connection closed and re-opened, after three such
    intervals, instead of the transport's idle timeout.

    Every request carries a W3C trace context (Section 7.5): the caller's (``trace=``),
    else one the agent creates; with ``opentelemetry-api`` installed, a CLIENT span per
    request and a SERVER span around each handler, recorded by ``tracer_provider``
    (default: the global one).  The gateways on the path continue that trace."""

    def __init__(self, credential: Credential, trust: TrustStore, *, gateway: str,
                 server_name: str | None = None, pcap: PcapWriter | None = None,
                 keylog: str | Path | TextIO | None = None,
                 tls: TlsIdentity | None = None, transport: str = "quic",
                 reconnect: bool = True, token: bytes | str | None = None,
                 lab: bool = False,
                 keepalive: float | None = timer("AGENT_KEEPALIVE"),
                 tracer_provider: TracerProvider | None = None) -> None:
        self.tls = tls or TlsIdentity(credential, trust)
        self.identity: Identity = self.tls.identity
        self._spans = AgentSpans(self.identity.uri, provider=tracer_provider)
        host, _, port = gateway.rpartition(":")
        self.gateway = (host.strip("[]"), int(port))
        self.server_name = server_name or _server_name(self.gateway[0])
        self.transport = transport_named(transport)
        self.lab = lab
        self._pcap = pcap
        self._keylog = keylog
        self._handler: Handler | None = None
        self._conn: Connection | None = None
        self._assoc: Association | None = None
        self._pump: Pump | None = None
        self._client: AgentClient | None = None
        self._waiters: dict[int, asyncio.Future[Message]] = {}
        self._registration: asyncio.Future[Registered] | None = None
        self._register_lock = asyncio.Lock()
        self._deregistration: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed: asyncio.Event | None = None
        self._token = token.encode() if isinstance(token, str) else token
        self._closing = False
        self._watcher: asyncio.Task[None] | None = None
        #: Whether to reconnect (and register again) when the connection is lost.
        self.reconnect = reconnect
        #: Why the agent stopped by itself (the connection lost for good, the
        #: registration taken over by another process), after :meth:`wait_closed`.
        self.close_reason: DmscError | None = None
        self.keepalive = keepalive
        #: The signed record registered last, the lease asked for and the one granted.
        self.signed: SignedRecord | None = None
        self.requested_lease = DEFAULT_LEASE
        self.lease = 0

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path, anchors: Iterable[str | Path], *,
                   gateway: str, server_name: str | None = None,
                   pcap: PcapWriter | None = None, keylog: str | Path | TextIO | None = None,
                   transport: str = "quic", reconnect: bool = True,
                   token: bytes | str | None = None, lab: bool = False,
                   keepalive: float | None = timer("AGENT_KEEPALIVE"),
                   tracer_provider: TracerProvider | None = None) -> Agent:
        """An agent from its certificate and key files and its domain's anchor(s); the
        options are :class:`Agent`'s."""
        return cls(Credential.load(cert, key), TrustStore.load(anchors), gateway=gateway,
                   server_name=server_name, pcap=pcap, keylog=keylog, transport=transport,
                   reconnect=reconnect, token=token, lab=lab, keepalive=keepalive,
                   tracer_provider=tracer_provider)

    @classmethod
    def from_config(cls, path: str | Path, *, reconnect: bool = True) -> Agent:
        """An agent from its TOML file (``[agent]``: certificate, key, trust anchors,
        gateway, server name, transport, token file; see
        :class:`~dmscproto.host.config.AgentConfig`), as ``dmsc agent --config``
        reads it.  Raises :class:`~dmscproto.host.config.ConfigError`."""
        from ..host.config import AgentConfig

        c = AgentConfig.load(path)
        token = None if c.token is None else c.token.read_text(encoding="ascii").strip()
        return cls.from_files(c.certificate, c.key, c.trust_anchors,
                              gateway="{}:{}".format(*c.gateway), server_name=c.server_name,
                              transport=c.transport, reconnect=reconnect, token=token,
                              lab=c.lab, keepalive=c.keepalive)

    @property
    def address(self) -> str:
        """The home gateway as ``host:port``."""
        return "{}:{}".format(*self.gateway)

    @property
    def agent_id(self) -> bytes:
        return self.identity.entity_id

    @property
    def uri(self) -> str:
        return self.identity.uri

    @property
    def token(self) -> bytes | None:
        """The access token sent with every request (Section 10.3), if any."""
        return self._token

    @token.setter
    def token(self, value: bytes | str | None) -> None:
        self._token = value.encode() if isinstance(value, str) else value
        if self._client is not None:
            self._client.token = self._token

    @property
    def registered(self) -> bool:
        return self._client is not None and self._client.registration.agent_id is not None

    # --- connection --------------------------------------------------------------------
    async def connect(self, *, attempts: int = 1) -> None:
        """Open the connection to the home gateway (both ends authenticated), trying up to
        ``attempts`` times with backoff (a DTLS handshake can time out under loss).
        Raises :class:`~dmscproto.transport.errors.TransportError` saying why the
        gateway could not be reached."""
        if self._conn is not None:
            return
        delay = RECONNECT_FIRST
        for attempt in range(1, attempts + 1):
            try:
                await self._open()
                break
            except (ConnectionError, OSError, TimeoutError) as exc:
                if attempt >= attempts:
                    raise
                log.info("connection attempt %d to %s:%d failed: %s", attempt,
                         *self.gateway, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
        self._closed = asyncio.Event()  # connected: there is something to wait for
        self._watcher = asyncio.get_running_loop().create_task(self._keep())

    async def _open(self) -> None:
        host, port = self.gateway
        conn = await self.transport.connect(
            host, port, self.tls, server_name=self.server_name,
            expect_domain=self.identity.domain, handler=self._serve, pcap=self._pcap,
            keylog=self._keylog, lab=self.lab)
        assert conn.peer.identity is not None or self.lab  # lab: nobody authenticated
        self._conn = conn
        self._assoc = Association(conn, conn.peer.identity, conn.peer.certificate)
        # discover, call, echo and trace need no registration: the record is given
        # by register()
        self._client = AgentClient(self.signed or self.record(()), self._assoc,
                                   token=self._token, keepalive=self.keepalive)
        self._pump = Pump(_Machine(self._client), on_event=self._on_event)
        self._pump.call(self._client.watch_gateway, self._pump.now())

    async def _keep(self) -> None:
        """When the connection is lost: reconnect with backoff, register again."""
        assert self._closed is not None
        while True:
            assert self._conn is not None
            await self._conn.wait_closed()
            if self._closing:
                break
            error = self._conn.close_error
            if error is not None and error.code is ErrorCode.NAME_CONFLICT:
                # Section 5.1: the same identity registered on another connection; going
                # back would only take the registration back and forth
                self.close_reason = AgentError(
                    ErrorCode.NAME_CONFLICT,
                    f"{self.uri} was registered again by another process with the same "
                    "identity; this one no longer gets requests")
                log.error("%s", self.close_reason)
            elif error is not None and error.code is ErrorCode.UNKNOWN_AGENT:
                log.warning("the registration of %s was removed from another connection "
                            "(a DEREGISTER by another process with the same identity)",
                            self.uri)
            if self.close_reason is None and not self.reconnect:
                self.close_reason = error or NotConnected("connection lost")
            if self.close_reason is not None:
                self._fail_waiters(self.close_reason)
                break
            was_registered = self.registered
            log.warning("connection to %s:%d lost; reconnecting", *self.gateway)
            self._fail_waiters(AgentError(ErrorCode.TARGET_UNREACHABLE, "connection lost"))
            if self._pump is not None:
                await self._pump.close()
            delay = RECONNECT_FIRST
            while True:
                try:
                    await self._open()
                    break
                except (ConnectionError, OSError, TimeoutError) as exc:
                    log.info("reconnect to %s:%d failed: %s", *self.gateway, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
            log.warning("reconnected to %s:%d", *self.gateway)
            if was_registered and self.signed is not None:
                try:
                    await self.register(signed=self.signed, lease=self.requested_lease)
                    log.warning("registered %s again", self.uri)
                except DmscError as exc:
                    log.warning("registering %s again failed: %s", self.uri, exc)
        self._closed.set()

    def _fail_waiters(self, error: DmscError) -> None:
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()

    async def __aenter__(self) -> Agent:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def _on_event(self, event: object) -> None:
        if isinstance(event, Registered):
            self.lease = event.lease
            if self._registration is not None and not self._registration.done():
                self._registration.set_result(event)
            log.info("registered %s, lease %d s", self.uri, event.lease)
        elif isinstance(event, RegistrationFailed):
            if self._registration is not None and not self._registration.done():
                self._registration.set_exception(AgentError.of(
                    event.status, event.diagnostic, event.retry_after))
            else:
                log.warning("re-registration of %s failed: %s", self.uri, event.status.name)
        elif isinstance(event, LeaseRefreshed):
            self.lease = event.lease
            log.debug("lease of %s refreshed: %d s", self.uri, event.lease)
        elif isinstance(event, RegistrationLost):
            log.warning("gateway lost the registration of %s (%s); registering again",
                        self.uri, event.status.name)
        elif isinstance(event, Deregistered):
            if self._deregistration is not None and not self._deregistration.done():
                self._deregistration.set_result(None)
        elif isinstance(event, RequestCompleted | RequestFailed):
            waiter = self._waiters.pop(event.transaction_id, None)
            if waiter is None or waiter.done():
                return
            if isinstance(event, RequestCompleted):
                waiter.set_result(event.answer)
            else:
                waiter.set_exception(AgentError.of(event.status, event.diagnostic,
                                                   event.retry_after))
        elif isinstance(event, GatewayLost):
            log.warning("nothing from %s:%d for %.1f s; closing the connection",
                        *self.gateway, event.silent_s)
            if self._conn is not None:
                self._conn.close(ErrorCode.HOLD_TIMER_EXPIRED, "gateway silent")
        elif isinstance(event, RouteRequestReceived):
            task = asyncio.get_running_loop().create_task(self._answer(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _serve(self, msg: Message, peer: Peer) -> Awaitable[Message | None]:
        """Requests the gateway sends over this connection (ROUTE_REQUEST): the pump's
        future of the machine's answer."""
        if self._pump is None or self._assoc is None:
            nothing: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
            nothing.set_result(None)
            return nothing
        return self._pump.deliver(self._assoc, msg)

    async def _answer(self, event: RouteRequestReceived) -> None:
        assert self._pump is not None and self._client is not None
        msg = event.request
        request = Request(event.source_agent, event.payload, event.transaction_id, msg.trace,
                          None if msg.timeout_ms is None else msg.timeout_ms / 1000)
        status, payload, diagnostic = ErrorCode.SUCCESS, None, None
        if self._handler is None:
            status = ErrorCode.TARGET_UNREACHABLE
        else:
            try:
                with self._spans.serve(MessageType.ROUTE_REQUEST, event.request.trace):
                    result = self._handler(event.payload, request)
                    payload = await result if inspect.isawaitable(result) else result
                    if not isinstance(payload, bytes):
                        raise TypeError("a handler returns bytes, not "
                                        f"{type(payload).__name__}")
            except AgentError as exc:  # the handler's own refusal
                status, diagnostic = exc.code, exc.diagnostic
            except Exception:
                log.exception("handler of %s failed", self.uri)
                status = ErrorCode.INTERNAL_ERROR
        self._pump.call(self._client.reply, event, payload, status, diagnostic)

    # --- registration (Section 5.1) -----------------------------------------------------
    def record(self, skills: Sequence[str | Skill], *, name: str | None = None,
               description: str | None = None, version: str = "1.0",
               input_modes: Sequence[str] = (DEFAULT_MODE,),
               output_modes: Sequence[str] = (DEFAULT_MODE,),
               provider: Provider | None = None,
               attributes: dict[str, AttrValue] | None = None,
               lease: int = DEFAULT_LEASE) -> SignedRecord:
        """The agent's capability record (Section 7.2), signed with its key.  The
        record version is the issue time in milliseconds, so each new record of this
        agent supersedes the last, across restarts too."""
        key = self.tls.credential.private_key
        assert key is not None
        now = time.time()
        host, port = self.gateway
        rec = CapabilityRecord(
            agent_uri=self.uri, agent_id=self.agent_id, name=name or self.identity.name,
            version=version, skills=tuple(_skill(s) for s in skills),
            default_input_modes=tuple(input_modes), default_output_modes=tuple(output_modes),
            endpoints=(Endpoint(self.transport.name,
                                f"{self.transport.name}://{host}:{port}"),),
            domain=self.identity.domain, issued_at=int(now), lease=lease,
            record_version=int(now * 1000), public_key=spki(key.public_key()),
            description=description, provider=provider, attributes=dict(attributes or {}))
        return sign_record(rec, key)

    async def register(self, skills: Sequence[str | Skill] = (), *,
                       lease: int = DEFAULT_LEASE, name: str | None = None,
                       description: str | None = None, version: str = "1.0",
                       input_modes: Sequence[str] = (DEFAULT_MODE,),
                       output_modes: Sequence[str] = (DEFAULT_MODE,),
                       provider: Provider | None = None,
                       attributes: dict[str, AttrValue] | None = None,
                       signed: SignedRecord | None = None) -> int:
        """REGISTER the agent's record (built by :meth:`record` from ``skills`` and the
        other fields, or ``signed``) and keep it registered: REFRESH before the lease
        ends, REGISTER again if the gateway lost it.  Calling it again (other skills,
        say) replaces the registered record; concurrent calls run one after the other,
        so :attr:`signed` is the record the gateway acknowledged last.  Connects first
        if needed.  Returns the lease granted; raises :class:`AgentError` if the
        gateway refuses (the agent is then not registered)."""
        async with self._register_lock:
            await self.connect()
            pump, client = self._machine()
            record = signed or self.record(
                skills, name=name, description=description, version=version,
                input_modes=input_modes, output_modes=output_modes, provider=provider,
                attributes=attributes, lease=lease)
            client.signed = record
            try:
                event = await self._register_once(pump, client, lease)
            except AgentError as exc:
                if exc.status is not ErrorCode.TRANSACTION_TIMEOUT:
                    self.signed = None
                    raise
                # the gateway may have committed it: the same record again is answered
                # SUCCESS either way (Section 5.1), so the agent knows where it stands
                log.info("REGISTER of %s timed out; sending it again", self.identity.uri)
                try:
                    event = await self._register_once(pump, client, lease)
                except AgentError:
                    self.signed = None
                    raise
            self.signed, self.requested_lease = record, lease
            return event.lease

    async def _register_once(self, pump: Pump, client: AgentClient, lease: int) -> Registered:
        future: asyncio.Future[Registered] = asyncio.get_running_loop().create_future()
        self._registration = future
        pump.call(client.register, pump.now(), lease)
        return await future

    # --- serving (Section 5.3) ------------------------------------------------------------
    def handler(self, fn: Handler) -> Handler:
        """Decorator: ``fn(payload, request)`` answers ROUTE_REQUESTs for this agent; an
        :class:`AgentError` it raises is the answer's STATUS and DIAGNOSTIC, any other
        exception INTERNAL_ERROR."""
        self._handler = fn
        return fn

    def serve(self, fn: Handler) -> None:
        """Answer ROUTE_REQUESTs with ``fn`` (same as the :meth:`handler` decorator)."""
        self._handler = fn

    # --- requests (Sections 5.2, 5.3, 6.8) ------------------------------------------------
    def _machine(self) -> tuple[Pump, AgentClient]:
        if self._pump is None or self._client is None or self._conn is None:
            raise NotConnected("not connected: use `async with agent:` or "
                               "`await agent.connect()` first")
        if self._conn.closed:
            raise NotConnected(f"the connection to {self.address} is closed"
                               + ("; reconnecting" if self.reconnect and not self._closing
                                  else ""))
        return self._pump, self._client

    async def _transaction(self, start: Callable[[AgentClient, float], int],
                           timeout: float | None) -> Message:
        """Start a request and wait for its answer, at most ``timeout`` seconds.  If the
        caller stops waiting (the deadline, a cancellation), the request is abandoned:
        the machine forgets it and its transport transaction is stopped."""
        pump, client = self._machine()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        txid = pump.call(start, client, pump.now())
        self._waiters[txid] = future
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await future
        except TimeoutError:
            if not deadline.expired():
                raise
            raise DeadlineExceeded(f"no answer within {timeout:g} s") from None
        finally:
            self._waiters.pop(txid, None)
            pump.call(client.cancel, txid, pump.now())
            pump.abandon(self._assoc, txid)  # if its transport transaction still runs

    async def discover(self, query: DiscoveryQuery | None = None, *,
                       skills: Sequence[str] = (), tags: Sequence[str] = (),
                       intent: str | None = None, domain: str | None = None,
                       scope: Scope = Scope.FEDERATED, max_results: int = 10,
                       timeout: float | None = None,
                       trace: TraceContext | None = None) -> list[Found]:
        """DISCOVER: records matching ``query`` (or one built from ``skills``, ``tags``,
        ``intent`` and ``domain``), best first; an empty list when none matches.
        ``timeout`` (seconds) raises :class:`~dmscproto.errors.DeadlineExceeded`;
        ``trace`` is the caller's trace context (class docstring)."""
        q = query or DiscoveryQuery(skills=tuple(skills), tags=tuple(tags), intent=intent,
                                    domain=domain)
        ctx, span = self._spans.request(MessageType.DISCOVER, trace)
        with span:
            answer = await self._transaction(
                lambda client, now: client.discover(q, now, scope=scope,
                                                    max_results=max_results, trace=ctx),
                timeout)
        assert isinstance(answer, DiscoverReply)
        if answer.status is not ErrorCode.SUCCESS:
            raise AgentError.of(answer.status, answer.diagnostic, answer.retry_after)
        return [Found(r.score, r.record) for r in answer.results]

    async def call(self, target: bytes | Found | DiscoveryQuery, payload: bytes, *,
                   timeout: float | None = None, trace: TraceContext | None = None) -> bytes:
        """ROUTE_REQUEST: send ``payload`` to an agent (its Agent ID or a
        :class:`Found`) or to the best match of a query, through the gateways; return
        the answer's payload.  Raises :class:`AgentError` with the routing error.
        ``timeout`` (seconds) is sent to the gateways (the TIMEOUT TLV) and is also the
        local deadline: past it, :class:`~dmscproto.errors.DeadlineExceeded` (a
        ``TimeoutError``) is raised and the request abandoned.  ``trace`` is the caller's
        trace context (class docstring)."""
        timeout_ms = None if timeout is None else max(1, int(timeout * 1000))
        if isinstance(target, DiscoveryQuery):
            query: DiscoveryQuery | None = target
            agent: bytes | None = None
        else:
            query, agent = None, target.agent_id if isinstance(target, Found) else target
            if len(agent) != ID_SIZE:
                raise ValueError(f"an Agent ID is {ID_SIZE} octets")
        ctx, span = self._spans.request(MessageType.ROUTE_REQUEST, trace)
        try:
            with span:
                answer = await self._transaction(
                    lambda client, now: client.route(payload, now, target=agent, query=query,
                                                     timeout_ms=timeout_ms, trace=ctx),
                    timeout)
        except AgentError as exc:  # the gateways' deadline: the same as the local one
            if timeout is not None and exc.code is ErrorCode.TRANSACTION_TIMEOUT:
                raise DeadlineExceeded(f"no answer within {timeout:g} s") from exc
            raise
        assert isinstance(answer, RouteReply)
        if answer.status is not ErrorCode.SUCCESS:
            if timeout is not None and answer.status is ErrorCode.TRANSACTION_TIMEOUT:
                raise DeadlineExceeded(f"no answer within {timeout:g} s: "
                                       f"{answer.diagnostic or 'the gateway gave up'}")
            raise AgentError.of(answer.status, answer.diagnostic, answer.retry_after)
        return answer.payload or b""

    async def trace(self, target: bytes, *, timeout: float | None = None,
                    trace: TraceContext | None = None) -> Trace:
        """TRACE_REQUEST towards an agent: every gateway on the path, and whether the
        trace reached the target's gateway (:attr:`Trace.status`).  ``trace`` is the
        caller's trace context (class docstring)."""
        ctx, span = self._spans.request(MessageType.TRACE_REQUEST, trace)
        with span:
            answer = await self._transaction(
                lambda client, now: client.trace(target, now, trace=ctx), timeout)
        assert isinstance(answer, TraceReply)
        return Trace(answer.status, answer.hops, answer.diagnostic)

    async def echo(self, payload: bytes | None = None, *,
                   timeout: float | None = None) -> float:
        """ECHO_REQUEST to the home gateway; the round-trip time in seconds."""
        sent = time.perf_counter()
        await self._transaction(lambda client, now: client.echo(now, payload), timeout)
        return time.perf_counter() - sent

    # --- shutdown ---------------------------------------------------------------------
    async def wait_closed(self) -> None:
        """Wait until :meth:`close` is called, or the connection is lost for good
        (without ``reconnect``).  Raises :class:`~dmscproto.errors.NotConnected` if
        the agent never connected."""
        if self._closed is None:
            raise NotConnected("wait_closed() before connect(): nothing to wait for")
        await self._closed.wait()

    async def deregister(self) -> None:
        """DEREGISTER the record and stay connected (:meth:`register` brings it back);
        nothing when not registered."""
        async with self._register_lock:
            await self._deregister()

    async def _deregister(self) -> None:
        if not (self.registered and self._conn is not None and not self._conn.closed):
            return
        assert self._pump is not None and self._client is not None
        self._deregistration = asyncio.get_running_loop().create_future()
        self._pump.call(self._client.deregister, self._pump.now())
        try:
            await asyncio.wait_for(self._deregistration, timer("REQUEST_TIMEOUT"))
        except (TimeoutError, ConnectionError):
            log.warning("no DEREGISTER_ACK for %s", self.uri)

    async def close(self, *, deregister: bool = True) -> None:
        """DEREGISTER (unless ``deregister`` is false: the gateway then expires the
        record when its lease ends) and close the connection."""
        self._closing = True
        if deregister:
            await self._deregister()
        for task in list(self._tasks):
            task.cancel()
        self._fail_waiters(AgentError(ErrorCode.CEASE, "agent closed"))
        if self._pump is not None:
            await self._pump.close()
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
        if self._watcher is not None:  # it may be reconnecting
            self._watcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._watcher
        if self._closed is not None:
            self._closed.set()
