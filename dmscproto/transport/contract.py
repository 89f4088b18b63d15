"""The one shape every DMSC transport offers (draft-dmsc-protocol-00, Section 9): QUIC's
:class:`~.quic.DmscConnection` and the datagram transports'
:class:`~.datagram.DatagramConnection` are :class:`Connection`\\ s, their listeners
:class:`Listener`\\ s, and a request handler sees the peer as a :class:`Peer` (a
:class:`~.peer.PeerInfo` of the connection).  The runtime and the agent SDK use only this
(:mod:`dmscproto.host.transports` picks a transport by name)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from cryptography import x509

from ..codec.messages import Message, RouteRequest
from ..codec.registry import ErrorCode, transaction_time
from ..security.ca import Identity
from .errors import TransportError


def transaction_time_of(msg: Message, *, request_timeout: float | None = None) -> float:
    """How long the requester of ``msg`` waits for its answer, on every transport
    (Section 9.3; :func:`~dmscproto.codec.registry.transaction_time`, a ROUTE_REQUEST's
    TIMEOUT included); ``request_timeout`` overrides REQUEST_TIMEOUT."""
    return transaction_time(msg.TYPE, msg.timeout_ms if isinstance(msg, RouteRequest) else None,
                            request_timeout=request_timeout)


#: Told how a transaction this end started ended: its answer, or why there is none
#: (:class:`TransportError`, or a DecodeError for a malformed answer).
Done = Callable[[Message | Exception], None]


class Connection(Protocol):
    """An association, authenticated in both directions (but in lab mode)."""

    @property
    def peer(self) -> Peer: ...

    @property
    def closed(self) -> bool: ...

    @property
    def max_pdu(self) -> int:
        """The largest PDU this association carries (Section 9)."""

    @property
    def close_error(self) -> TransportError | None:
        """Why it closed, once closed (None: closed by this end, or still open)."""

    async def request(self, msg: Message, timeout: float | None = None) -> Message:
        """Send request ``msg`` and return its answer, which may be ERROR; the transaction
        ends after ``timeout`` seconds, by default ``msg``'s transaction time
        (:func:`transaction_time_of`)."""

    def start_request(self, msg: Message, done: Done, timeout: float | None = None) -> int:
        """:meth:`request` without a task: ``done`` is called once with the outcome (at
        once when the answer arrives, not later in the loop), unless the transaction is
        stopped first; returns the key :meth:`stop_request` takes."""

    def stop_request(self, key: int, code: ErrorCode = ErrorCode.CEASE) -> None:
        """Abandon a transaction :meth:`start_request` started (no ``done`` call): on
        QUIC its stream is stopped with ``code``."""

    def send(self, msg: Message) -> None: ...

    def close(self, error_code: int = ..., reason_phrase: str = ...) -> None: ...

    async def wait_closed(self) -> None: ...


class Peer(Protocol):
    """Who is at the other end of a connection (None identity: lab mode only)."""

    @property
    def identity(self) -> Identity | None: ...

    @property
    def certificate(self) -> x509.Certificate | None: ...

    @property
    def address(self) -> object: ...

    @property
    def connection(self) -> Connection: ...


class Listener(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...

    def close(self) -> None: ...


#: A request handler: its answer goes back to the peer (None: no answer).
Handler = Callable[[Message, Peer], Awaitable[Message | None]]


def settle(future: asyncio.Future[Message], outcome: Message | Exception) -> None:
    """A :data:`Done` that completes ``future`` (unless it is done already): how
    ``request`` is made of ``start_request``."""
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
