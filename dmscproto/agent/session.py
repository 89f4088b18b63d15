"""An agent's session with its home gateway (draft-dmsc-protocol-00, Sections 5.1 and
9): the connection, opened again with backoff when it is lost (and the record
registered again), the sans-I/O :class:`~dmscproto.protocol.agent.AgentClient` driven by
a :class:`~dmscproto.host.pump.Pump`, its events turned into awaitable results, and
the application's handler run for each ROUTE_REQUEST the gateway delivers.
:class:`~.sdk.Agent`, the API, is built on it."""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..analysis.pcap import PcapWriter
from ..codec.cose import SignedRecord
from ..codec.messages import Message
from ..codec.registry import ErrorCode, MessageType, timer
from ..codec.values import (
    Skill,
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
from ..transport.driver import EndOfTurn, end_of_turn
from ..transport.tls import TlsIdentity
from .results import AgentError, Handler, Request

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("dmscproto.agent.sdk")  # the SDK's one logger

#: Reconnection delays (seconds): the first, and the cap of the doubling.
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 10.0
#: Media type of payloads unless the agent says otherwise.
DEFAULT_MODE = "text/plain"
#: The lease asked for unless the caller says otherwise (seconds).
DEFAULT_LEASE = int(timer("DEFAULT_LEASE"))


class _Machine:
    """:class:`AgentClient` in the :class:`~dmscproto.host.pump.Machine` shape (its
    only peer is the home gateway, so ``receive`` needs no source)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        # its outbox's own (the pump drains it after every call and message: 14 calls of
        # these a routed call, one frame each less)
        self.messages_to_send = client.outbox.messages_to_send
        self.next_event = client.outbox.next_event
        # the pump asks it after handing events over, rather than draining once more
        self.has_output = client.has_output
        self.get_timer = client.get_timer
        self.handle_timer = client.handle_timer

    def receive(self, source: object, msg: Message, now: float) -> None:
        self.client.receive(msg, now)


#: The events of a request ending, the most frequent (a tuple made once, where
#: ``A | B`` would make a union on every event).
_ENDED = (RequestCompleted, RequestFailed)
#: Read for every request served, bound once (an Enum member read is ~60 ns, timeit).
_ROUTE_REQUEST = MessageType.ROUTE_REQUEST


def _payload(result: object) -> bytes:
    """A handler's result, which must be bytes (else TypeError: INTERNAL_ERROR)."""
    if not isinstance(result, bytes):
        raise TypeError(f"a handler returns bytes, not {type(result).__name__}")
    return result


def _server_name(host: str) -> str | None:
    """The name checked against the gateway certificate: the gateway's host name, or
    none for an IP address (the certificate must still be of the agent's domain)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


class AgentSession:
    """The session part of :class:`~.sdk.Agent` (module docstring; the options are
    :class:`~.sdk.Agent`'s)."""

    #: The event loop of the connection, and its end of turn (set by :meth:`_open`).
    _loop: asyncio.AbstractEventLoop
    _turn: EndOfTurn

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
        self._handler_async = False  # a coroutine function: it runs in a task
        self._conn: Connection | None = None
        self._assoc: Association | None = None
        self._pump: Pump | None = None
        self._client: AgentClient | None = None
        self._waiters: dict[int, asyncio.Future[Message]] = {}
        self._registration: asyncio.Future[Registered] | None = None
        self._register_lock = asyncio.Lock()
        self._deregistration: asyncio.Future[ErrorCode] | None = None
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

    if TYPE_CHECKING:  # Agent's API (.sdk), used here
        @property
        def uri(self) -> str: ...

        @property
        def address(self) -> str: ...

        @property
        def registered(self) -> bool: ...

        def record(self, skills: Sequence[str | Skill]) -> SignedRecord: ...

        async def register(self, skills: Sequence[str | Skill] = (), *,
                           lease: int = DEFAULT_LEASE,
                           signed: SignedRecord | None = None) -> int: ...

    # --- connection (the API is in .sdk) -----------------------------------------
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
        self._loop = asyncio.get_running_loop()  # a getpid syscall: looked up once
        self._turn = end_of_turn(self._loop)
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
        if self._deregistration is not None and not self._deregistration.done():
            self._deregistration.set_result(ErrorCode.TARGET_UNREACHABLE)  # pump closed

    def _on_event(self, event: object) -> None:
        if isinstance(event, _ENDED):  # the calls' events first
            waiter = self._waiters.pop(event.transaction_id, None)
            if waiter is None or waiter.done():
                return
            if isinstance(event, RequestCompleted):
                waiter.set_result(event.answer)
            else:
                waiter.set_exception(AgentError.of(event.status, event.diagnostic,
                                                   event.retry_after))
            # the task it wakes sends its next request in the loop turn it runs in, not
            # in one more (strace, route calls one at a time: 4 -> 3 epoll_wait a call)
            self._turn.follow()
        elif isinstance(event, RouteRequestReceived):
            self._answer(event)
        elif isinstance(event, Registered):
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
                self._deregistration.set_result(event.status)
        elif isinstance(event, GatewayLost):
            log.warning("nothing from %s:%d for %.1f s; closing the connection",
                        *self.gateway, event.silent_s)
            if self._conn is not None:
                self._conn.close(ErrorCode.HOLD_TIMER_EXPIRED, "gateway silent")

    def _serve(self, msg: Message, peer: Peer) -> Awaitable[Message | None]:
        """Requests the gateway sends over this connection (ROUTE_REQUEST): the pump's
        future of the machine's answer."""
        if self._pump is None or self._assoc is None:
            nothing: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
            nothing.set_result(None)
            return nothing
        return self._pump.deliver(self._assoc, msg)

    def _serve_with(self, handler: Handler) -> None:
        """Answer ROUTE_REQUESTs with ``handler`` (whether it is a coroutine function is
        looked up once, not for every request)."""
        self._handler = handler
        self._handler_async = inspect.iscoroutinefunction(handler)

    def _answer(self, event: RouteRequestReceived) -> None:
        """Answer a ROUTE_REQUEST delivered to this agent with its handler's result.  A
        plain function with no span to record around it runs at once, within the pump's
        flush, so that the transport sends the answer in the callback that received the
        request (no task, no callback more); a coroutine function, or any handler with
        a span to record, runs in a task (the span current while it runs)."""
        handler, client = self._handler, self._client
        assert client is not None  # the pump that handed the event over is its
        if handler is None:
            self._reply(event, ErrorCode.TARGET_UNREACHABLE)
            return
        msg = event.request
        request = Request(event.source_agent, event.payload, event.transaction_id, msg.trace,
                          None if msg.timeout_ms is None else msg.timeout_ms / 1000)
        span = self._spans.serve(_ROUTE_REQUEST, msg.trace)
        if span is not None or self._handler_async:
            self._spawn(self._answer_later(event, request, span))
            return
        try:
            result = handler(event.payload, request)
            # queued only: the pump's flush that handed this event over sends it (no
            # local call, and no flush, of its own)
            if isinstance(result, bytes):
                client.reply(event, result)
                return
            if not inspect.isawaitable(result):
                client.reply(event, _payload(result))  # not bytes: TypeError
                return
        except Exception as exc:
            self._failed(event, exc)
            return
        self._spawn(self._answer_later(event, request, None, result))

    async def _answer_later(self, event: RouteRequestReceived, request: Request,
                            span: AbstractContextManager[object] | None,
                            result: Awaitable[bytes] | None = None) -> None:
        """The handler's answer in a task: ``result`` is what it returned (None: it is
        called here, within ``span``)."""
        assert self._handler is not None
        try:
            with span or nullcontext():
                called = self._handler(event.payload, request) if result is None else result
                payload = _payload(await called if inspect.isawaitable(called) else called)
        except Exception as exc:
            self._failed(event, exc)
            return
        self._reply(event, ErrorCode.SUCCESS, payload)

    def _failed(self, event: RouteRequestReceived, exc: Exception) -> None:
        """The handler raised: its own refusal (:class:`AgentError`: its STATUS and
        DIAGNOSTIC), or INTERNAL_ERROR."""
        if isinstance(exc, AgentError):
            self._reply(event, exc.code, None, exc.diagnostic)
            return
        log.error("handler of %s failed", self.uri, exc_info=exc)
        self._reply(event, ErrorCode.INTERNAL_ERROR)

    def _reply(self, event: RouteRequestReceived, status: ErrorCode,
               payload: bytes | None = None, diagnostic: str | None = None) -> None:
        assert self._pump is not None and self._client is not None
        self._pump.call(self._client.reply, event, payload, status, diagnostic)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._turn.follow()  # an answer given at its first step leaves in that turn

    # --- registration (Section 5.1) -----------------------------------------------------
    async def _register_once(self, pump: Pump, client: AgentClient, lease: int) -> Registered:
        future: asyncio.Future[Registered] = asyncio.get_running_loop().create_future()
        self._registration = future
        pump.call(client.register, pump.now(), lease)
        return await future

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
        future: asyncio.Future[Message] = self._loop.create_future()
        txid = pump.call(start, client, pump.now())
        self._waiters[txid] = future
        try:
            if timeout is None:
                return await future
            async with asyncio.timeout(timeout) as deadline:
                return await future
        except TimeoutError:
            if timeout is None or not deadline.expired():
                raise
            raise DeadlineExceeded(f"no answer within {timeout:g} s") from None
        finally:
            self._waiters.pop(txid, None)
            if txid in client.requests:  # not answered: the machine forgets it
                pump.call(client.cancel, txid, pump.now())
            pump.abandon(self._assoc, txid)  # if its transport transaction still runs
