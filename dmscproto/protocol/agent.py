"""The agent side, sans-I/O: registration, requests and serving ROUTE_REQUESTs
(draft-dmsc-protocol-00, Section 5).

:class:`AgentClient` composes an :class:`~.registration.AgentRegistration` and the
agent's outstanding :class:`~.requester.Requester` transactions, all talking to one home
gateway.  Like aioquic's ``QuicConnection``: feed it with :meth:`AgentClient.receive` and
:meth:`AgentClient.handle_timer`, drain :meth:`AgentClient.messages_to_send` and
:meth:`AgentClient.next_event`.

Access tokens (Section 10.3): :attr:`AgentClient.token`, set at construction or any time
later (the caller fetches and renews it, e.g. with
:func:`dmscproto.security.token_server.request_token`; the machines do no I/O), is put in
the ACCESS_TOKEN TLV of every REGISTER, REFRESH, DEREGISTER, DISCOVER and ROUTE_REQUEST
sent from then on.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

from ..codec.cose import SignedRecord
from ..codec.messages import (
    Discover,
    EchoRequest,
    Message,
    RouteReply,
    RouteRequest,
    TraceRequest,
)
from ..codec.registry import (
    DEFAULT_HOP_LIMIT,
    NONCE_SIZE,
    ErrorCode,
    MessageType,
    Scope,
    timer,
    transaction_time,
)
from ..codec.values import DiscoveryQuery, TraceContext
from .agent_registration import AgentRegistration
from .dispatch import Receiver, Role, dispatch_table
from .events import ProtocolEvent, RouteRequestReceived
from .liveness import GatewayLiveness
from .machine import (
    Handle,
    Outbox,
    ProtocolError,
    TransactionIds,
    earliest,
    error_answer,
    timestamp_ms,
)
from .requester import Requester, Requests


class AgentClient:
    """One agent and its home gateway ``gateway``."""

    def __init__(self, signed: SignedRecord, gateway: Handle, *,
                 rng: random.Random | None = None,
                 nonce: Callable[[], bytes] | None = None,
                 token: bytes | None = None,
                 request_timeout: float = timer("REQUEST_TIMEOUT"),
                 route_timeout: float = timer("ROUTE_TIMEOUT"),
                 keepalive: float | None = None) -> None:
        self.signed = signed
        self.agent_id = signed.record.agent_id
        self.gateway = gateway
        self.outbox = Outbox()
        self.txids = TransactionIds(rng)
        #: The access token sent with every request that carries one (module docstring).
        self.token = token
        if nonce is None:
            nonce = ((lambda: rng.randbytes(NONCE_SIZE)) if rng is not None
                     else (lambda: os.urandom(NONCE_SIZE)))
        self.registration = AgentRegistration(self.outbox, gateway, self.txids, nonce=nonce,
                                              token=lambda: self.token,
                                              request_timeout=request_timeout)
        self.requests = Requests(self.outbox)
        self.request_timeout = request_timeout
        self.route_timeout = route_timeout
        self._seq = 0
        #: The watch on the gateway (Section 6.8.3) with ``keepalive`` (seconds; the SDK
        #: uses AGENT_KEEPALIVE), started by :meth:`watch_gateway`; None: no keepalive.
        self.liveness = None if keepalive is None else GatewayLiveness(self.outbox, self,
                                                                       keepalive)
        #: Who takes each message type, in turn (derived from the machines' tables): an
        #: answer goes to the request outstanding with its transaction id, else to the
        #: registration; a ROUTE_REQUEST, which no machine runs, to the application.
        self._takers = dispatch_table(
            (Receiver(Requester, Role.CONTINUE, self._to_request),
             Receiver(AgentRegistration, Role.ALL, self._to_registration)),
            extra={MessageType.ROUTE_REQUEST: self._deliver})

    # --- local calls --------------------------------------------------------------------------
    def register(self, now: float, lease: int = int(timer("DEFAULT_LEASE"))) -> None:
        self.registration.register(self.signed, lease, now)

    def deregister(self, now: float) -> None:
        self.registration.deregister(now)

    def _request(self, msg: Message, now: float, timeout_ms: int | None = None) -> int:
        """Start a requester transaction with the transaction timeout (Section 9.3)."""
        self.requests.start(self.gateway, msg, now, transaction_time(
            msg.TYPE, timeout_ms, request_timeout=self.request_timeout,
            route_timeout=self.route_timeout))
        return msg.transaction_id

    def discover(self, query: DiscoveryQuery, now: float, *, scope: Scope = Scope.FEDERATED,
                 max_results: int = 10, trace: TraceContext | None = None) -> int:
        """Send DISCOVER; the answer is a RequestCompleted event.  Returns the txid."""
        return self._request(Discover(transaction_id=self.txids(), query=query, scope=scope,
                                      max_results=max_results, source_agent=self.agent_id,
                                      trace=trace, token=self.token), now)

    def route(self, payload: bytes, now: float, *, target: bytes | None = None,
              query: DiscoveryQuery | None = None, timeout_ms: int | None = None,
              trace: TraceContext | None = None) -> int:
        """Send ROUTE_REQUEST to ``target`` or the best match of ``query``.  The agent
        waits for the gateway's transaction timer (``timeout_ms``, else ROUTE_TIMEOUT) plus
        REQUEST_TIMEOUT, so that a TRANSACTION_TIMEOUT answer still reaches it."""
        return self._request(RouteRequest(
            transaction_id=self.txids(), source_agent=self.agent_id, target_agent=target,
            query=query, hop_limit=DEFAULT_HOP_LIMIT, path=(), payload=payload,
            timeout_ms=timeout_ms, trace=trace, token=self.token), now, timeout_ms)

    def echo(self, now: float, payload: bytes | None = None) -> int:
        """Send ECHO_REQUEST to the home gateway; the event's ``rtt`` is the round trip."""
        self._seq += 1
        return self._request(EchoRequest(transaction_id=self.txids(), sequence=self._seq,
                                         timestamp=timestamp_ms(now), payload=payload), now)

    def watch_gateway(self, now: float) -> None:
        """Start the agent keepalive (the association to the gateway is open)."""
        if self.liveness is not None:
            self.liveness.watch(now)

    def probe(self, now: float) -> None:
        """The keepalive's ECHO_REQUEST (its answer, or failure, is an event like any)."""
        self.echo(now)

    def trace(self, target: bytes, now: float, *, trace: TraceContext | None = None) -> int:
        """Send TRACE_REQUEST towards ``target`` (waiting as for a ROUTE_REQUEST)."""
        return self._request(TraceRequest(transaction_id=self.txids(), target_agent=target,
                                          hop_limit=DEFAULT_HOP_LIMIT, path=(), trace=trace),
                             now)

    def cancel(self, txid: int, now: float) -> bool:
        """Abandon the request ``txid`` (the caller stopped waiting): no event will
        report it; False if it was not outstanding."""
        return self.requests.cancel(txid, now)

    def reply(self, request: RouteRequestReceived, payload: bytes | None,
              status: ErrorCode = ErrorCode.SUCCESS, diagnostic: str | None = None) -> None:
        """Answer a ROUTE_REQUEST delivered to this agent."""
        self.outbox.send(self.gateway, RouteReply(
            transaction_id=request.transaction_id, status=status, target_agent=self.agent_id,
            payload=payload, diagnostic=diagnostic, trace=request.request.trace))

    # --- input and output ---------------------------------------------------------------------
    def receive(self, msg: Message, now: float) -> None:
        """A message from the home gateway.  One this agent cannot take raises
        :class:`ProtocolError` (a request is answered with ERROR first)."""
        if self.liveness is not None:
            self.liveness.heard(now)
        for take in self._takers.get(msg.TYPE, ()):
            if take(self.gateway, msg, now):
                return
        err = ProtocolError(ErrorCode.UNEXPECTED_MESSAGE,
                            f"{msg.TYPE.name} is not for an agent", msg.TYPE)
        answer = error_answer(msg, err.code, err.diagnostic)
        if answer is not None:
            self.outbox.send(self.gateway, answer)
        raise err

    def _to_request(self, source: Handle, msg: Message, now: float) -> bool:
        return self.requests.take(msg, now)

    def _to_registration(self, source: Handle, msg: Message, now: float) -> bool:
        self.registration.receive(msg, now)
        return True

    def _deliver(self, source: Handle, msg: Message, now: float) -> bool:
        assert isinstance(msg, RouteRequest)
        self.outbox.emit(RouteRequestReceived(msg.transaction_id, msg.source_agent,
                                              msg.payload, msg))
        return True

    def get_timer(self) -> float | None:
        return earliest(self.registration.get_timer(), self.requests.get_timer(),
                        None if self.liveness is None else self.liveness.get_timer())

    def handle_timer(self, now: float) -> None:
        self.registration.handle_timer(now)
        self.requests.handle_timer(now)
        if self.liveness is not None:
            self.liveness.handle_timer(now)

    def has_output(self) -> bool:
        """Whether messages or events are waiting to be drained."""
        return bool(self.outbox.messages or self.outbox.events)

    def messages_to_send(self) -> list[tuple[Handle, Message]]:
        # a plain forward, as next_event is: the SDK's pump drains the outbox itself
        # (agent.session._Machine), so nothing may be added here
        return self.outbox.messages_to_send()

    def next_event(self) -> ProtocolEvent | None:
        return self.outbox.next_event()
