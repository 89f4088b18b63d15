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
import logging
import time
from collections.abc import Awaitable, Coroutine, Iterable, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

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
    Provider,
    Skill,
    TraceContext,
)
from ..errors import DeadlineExceeded, NotConnected
from ..security.ca import Credential, TrustStore
from .results import AgentError, Found, Handler, Trace
from .session import (
    DEFAULT_LEASE,
    DEFAULT_MODE,
    RECONNECT_FIRST,
    RECONNECT_MAX,
    AgentSession,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger(__name__)

#: Read on every call, bound once (an Enum member read is ~60 ns, timeit).
_ROUTE_REQUEST, _SUCCESS = MessageType.ROUTE_REQUEST, ErrorCode.SUCCESS


def _skill(s: str | Skill) -> Skill:
    return s if isinstance(s, Skill) else Skill(id=s, name=s)


def _spanned(span: AbstractContextManager[object] | None,
             waited: Coroutine[Any, Any, Message]) -> Awaitable[Message]:
    """``waited`` within ``span`` (its client span), if telemetry gave one: no context
    manager entered per request when nothing records."""
    return waited if span is None else _within(span, waited)


async def _within(span: AbstractContextManager[object],
                  waited: Coroutine[Any, Any, Message]) -> Message:
    with span:
        return await waited


class Agent(AgentSession):
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

    async def __aenter__(self) -> Agent:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # --- serving (Section 5.3) ------------------------------------------------------------
    def handler(self, fn: Handler) -> Handler:
        """Decorator: ``fn(payload, request)`` answers ROUTE_REQUESTs for this agent; an
        :class:`AgentError` it raises is the answer's STATUS and DIAGNOSTIC, any other
        exception INTERNAL_ERROR."""
        self._serve_with(fn)
        return fn

    def serve(self, fn: Handler) -> None:
        """Answer ROUTE_REQUESTs with ``fn`` (same as the :meth:`handler` decorator)."""
        self._serve_with(fn)

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
        answer = await _spanned(span, self._transaction(
            lambda client, now: client.discover(q, now, scope=scope,
                                                max_results=max_results, trace=ctx),
            timeout))
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
        ctx, span = self._spans.request(_ROUTE_REQUEST, trace)
        try:
            answer = await _spanned(span, self._transaction(
                lambda client, now: client.route(payload, now, target=agent, query=query,
                                                 timeout_ms=timeout_ms, trace=ctx),
                timeout))
        except AgentError as exc:  # the gateways' deadline: the same as the local one
            if timeout is not None and exc.code is ErrorCode.TRANSACTION_TIMEOUT:
                raise DeadlineExceeded(f"no answer within {timeout:g} s") from exc
            raise
        assert isinstance(answer, RouteReply)
        if answer.status is not _SUCCESS:
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
        answer = await _spanned(span, self._transaction(
            lambda client, now: client.trace(target, now, trace=ctx), timeout))
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
        # the machine's request timer ends the wait (TRANSACTION_TIMEOUT), as for REGISTER
        status = await self._deregistration
        if status is not ErrorCode.SUCCESS:
            log.warning("no DEREGISTER_ACK for %s: %s", self.uri, status.name)

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
