"""Who is at the other end of a DMSC connection, as a request handler sees it
(draft-dmsc-protocol-00, Section 9), for every transport, and how every transport runs
a request handler (:func:`dispatch`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography import x509

from ..codec.messages import Message
from ..security.ca import Identity

#: The transport's connection type (QUIC connection, datagram association).
ConnectionT = TypeVar("ConnectionT")


@dataclass(frozen=True, eq=False)
class PeerInfo(Generic[ConnectionT]):
    """The peer of one connection: the identity and certificate verified in the
    handshake (Section 10.2; None only over lab UDP, Section 9.4), its network address
    and the connection itself, over which requests can be sent back."""

    identity: Identity | None
    certificate: x509.Certificate | None
    address: Any
    connection: ConnectionT


#: A request handler: its answer goes back to the peer (None: no answer).
Handler = Callable[[Message, PeerInfo[ConnectionT]], Awaitable[Message | None]]


#: What a request handler gave: its answer (None: no answer), or the exception it raised.
Outcome = Message | None | BaseException


class Answer(asyncio.Future[Message | None]):
    """The answer to a request that a handler gives later (a protocol machine's pump
    does), an asyncio future whose transport is told of it in the call that gives it
    (:meth:`give`), not a loop turn later through a done callback: a gateway's relayed
    answer leaves with what that call sends.  Awaitable and cancellable as any future
    (awaiting it is the usual done callback)."""

    #: Who is told the answer, and the set the future stays in until it is given or
    #: cancelled (:func:`dispatch`); a class default, so that making one is asyncio's
    #: own ``__init__`` (one per request).
    _taker: tuple[Callable[[Outcome], None], set[asyncio.Future[Any]]] | None = None

    def give(self, answer: Message | None) -> None:
        self.set_result(answer)
        taker = self._taker
        if taker is None:
            return
        answered, running = taker  # as _settled, without asking this future its result
        running.discard(self)
        try:  # what the taker raises is reported as a done callback's would be
            answered(answer)
        except Exception as exc:
            self.get_loop().call_exception_handler({
                "message": "the taker of an answer failed", "exception": exc,
                "future": self})

    def cancel(self, msg: Any = None) -> bool:
        cancelled = super().cancel(msg)
        if cancelled and self._taker is not None:  # a cancelled one is not answered
            _settled(*self._taker, self)
        return cancelled


def dispatch(handler: Callable[[Message, PeerInfo[ConnectionT]], Awaitable[Message | None]],
             msg: Message, peer: PeerInfo[ConnectionT], answered: Callable[[Outcome], None],
             running: set[asyncio.Future[Any]]) -> None:
    """Run ``handler`` on ``msg`` and give ``answered`` its outcome.  A handler that
    returns an asyncio future (a protocol machine's pump does) is answered when the
    future is done, at once if it is, without a task (an :class:`Answer` in the call
    that gives it); a coroutine runs as a task.  Both stay in ``running`` until done,
    so that a closing connection can cancel them (a cancelled one is not answered)."""
    try:
        pending = handler(msg, peer)
    except Exception as exc:
        answered(exc)
        return
    future = pending if isinstance(pending, asyncio.Future) else asyncio.ensure_future(pending)
    if future.done():
        _settled(answered, running, future)
        return
    running.add(future)
    if isinstance(future, Answer):
        future._taker = (answered, running)
    else:
        future.add_done_callback(functools.partial(_settled, answered, running))


def _settled(answered: Callable[[Outcome], None], running: set[asyncio.Future[Any]],
             future: asyncio.Future[Any]) -> None:
    running.discard(future)
    if not future.cancelled():
        exc = future.exception()
        answered(future.result() if exc is None else exc)
