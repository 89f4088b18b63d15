"""What a gateway does on its node's events and the messages it sends (draft-dmsc-protocol-00,
Sections 5.1, 6 and 10.7): a log line for each session, registration and refusal,
closing the association of a session that ended and of a registration taken over,
the dialled peers' state, and the :class:`Observer`'s callbacks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from ..codec.messages import Error, Message, Update
from ..codec.registry import ANSWER_TO, ErrorCode, MessageType
from ..host.config import GatewayConfig
from ..host.logs import facts
from ..host.pump import Association
from ..host.transports import Connection
from ..management.metrics import GatewayMetrics
from ..protocol.events import (
    AgentRegistered,
    AgentRemoved,
    LateMessage,
    ProtocolViolation,
    RecordRefused,
    SessionClosed,
    SessionEstablished,
    TableChanged,
    TransactionEnded,
)
from ..protocol.machine import Handle
from ..protocol.peering import HELD_AFTER
from ..protocol.tracecontext import trace_id_of
from .loop import HeapFreezer
from .peers import PeerLink

log = logging.getLogger("dmsc.gateway")

_M = MessageType
#: Answers whose error STATUS is this gateway's own decision, and the request each
#: answers (ROUTE_REPLY and TRACE_REPLY may be relayed: their hop logs a refusal,
#: :mod:`..host.telemetry`; ERROR names its request in OFFENDING_TYPE).
_REFUSALS = {_M.REGISTER_ACK: _M.REGISTER, _M.REFRESH_ACK: _M.REFRESH,
             _M.DEREGISTER_ACK: _M.DEREGISTER, _M.DISCOVER_REPLY: _M.DISCOVER}
#: Requests whose refusal before their hop began is logged from ProtocolViolation.
_HOPS = frozenset({_M.ROUTE_REQUEST, _M.TRACE_REQUEST})
del _M


@dataclass
class Observer:
    """Optional callbacks for every message the gateway sends and receives and every
    event of its node (the demo's step display, tests).  Whether ``event`` is set is
    read when the gateway starts: the node reports relayed transactions' ends
    (TransactionEnded) only if it is."""

    sent: Callable[[Handle, Message], None] | None = None
    received: Callable[[Handle, Message], None] | None = None
    event: Callable[[object], None] | None = None


class Reactions:
    """The gateway runtime's part that reacts to what its node does (module docstring)."""

    config: GatewayConfig
    observer: Observer
    metrics: GatewayMetrics | None
    _peers: list[PeerLink]
    _assocs: dict[Connection, Association]
    _freezer: HeapFreezer | None
    _stopping: bool

    def _sent(self, dest: Handle, msg: Message) -> None:
        """Every message sent: one INFO line per request this gateway refused.  The
        records of an UPDATE may have been decoded to be sent: the heap grew."""
        if isinstance(msg, Update) and self._freezer is not None:
            self._freezer.grew(len(msg.advertise))
        request: MessageType | int | None = _REFUSALS.get(msg.TYPE)
        if isinstance(msg, Error) and msg.offending_type is not None:
            request = msg.offending_type
            with suppress(ValueError):
                request = MessageType(request)
        if request is not None and (
                status := getattr(msg, "status", ErrorCode.SUCCESS)) is not ErrorCode.SUCCESS:
            log.info("request refused", extra=facts(
                peer=_uri(dest), request=request, status=status,
                reason=getattr(msg, "diagnostic", None),
                trace_id=trace_id_of(getattr(msg, "trace", None))))
        if self.observer.sent is not None:
            self.observer.sent(dest, msg)

    def _on_event(self, event: object) -> None:
        if type(event) is TransactionEnded:  # made only for the observer (node.py)
            if self.observer.event is not None:
                self.observer.event(event)
            return
        if self.metrics is not None:
            self.metrics.event(event)
        if isinstance(event, SessionEstablished | SessionClosed):
            for peer in self._peers:
                if peer.connection is not None and isinstance(event.handle, Association) \
                        and event.handle.link is peer.connection:
                    if isinstance(event, SessionEstablished):
                        peer.established.set()
                        peer.redial.reset()
                    else:
                        peer.established.clear()
                        if event.status in HELD_AFTER:
                            peer.redial.hold(self.config.limit("PEER_LIMIT_HOLD"))
                elif isinstance(event, SessionClosed) and isinstance(event.handle, Association) \
                        and peer.reached is not None and event.handle.identity == peer.reached:
                    peer.elsewhere_closed.set()  # its dialler may dial again
        if isinstance(event, SessionClosed) and not self._stopping:
            self._close_association(event.handle, event.status)
        if isinstance(event, SessionEstablished):
            log.info("peer session established", extra=facts(
                peer=_uri(event.handle), gateway_id=event.gateway_id, domain=event.domain,
                hold_time=event.hold_time))
        elif isinstance(event, SessionClosed):
            log.info("peer session closed", extra=facts(
                peer=_uri(event.handle), status=event.status, by_peer=event.by_peer))
        elif isinstance(event, AgentRegistered):
            log.info("agent registered", extra=facts(
                agent=_uri(event.handle), agent_id=event.agent_id, lease=event.lease))
            if isinstance(event.replaced, Association):  # Section 5.1: tell the other one
                log.warning("registration replaced", extra=facts(
                    agent=_uri(event.handle), agent_id=event.agent_id))
                event.replaced.link.close(
                    ErrorCode.NAME_CONFLICT,
                    f"{_uri(event.handle)} registered again on another connection")
        elif isinstance(event, AgentRemoved):
            log.info("agent removed", extra=facts(agent_id=event.withdrawn.agent_id,
                                                  status=event.status))
            if isinstance(event.bound, Association):  # Section 5.1: tell the agent
                event.bound.link.close(
                    ErrorCode.UNKNOWN_AGENT, "registration removed from another connection")
        elif isinstance(event, LateMessage):
            log.debug("late message dropped", extra=facts(
                peer=_uri(event.handle), message=event.message_type))
        elif isinstance(event, ProtocolViolation) and event.message_type in _HOPS:
            log.info("request refused", extra=facts(
                peer=_uri(event.handle), request=event.message_type, status=event.status,
                reason=event.diagnostic))
        elif isinstance(event, ProtocolViolation) and event.message_type not in ANSWER_TO:
            log.warning("message refused", extra=facts(
                peer=_uri(event.handle), message=event.message_type, status=event.status,
                reason=event.diagnostic))
        elif isinstance(event, TableChanged) and self._freezer is not None:
            self._freezer.grew(len(event.advertised))
        elif isinstance(event, RecordRefused):
            log.warning("advertised record refused", extra=facts(
                peer=_uri(event.handle), agent_id=event.agent_id, status=event.status,
                reason=event.diagnostic))
        if self.observer.event is not None:
            self.observer.event(event)

    def _close_association(self, handle: Handle, status: ErrorCode) -> None:
        """A session ended: close its association (Section 6.1.1), once what the node
        queued for it (its NOTIFY) is on its way; the peer is then dialled again."""
        for conn, assoc in self._assocs.items():
            if assoc is handle:
                asyncio.get_running_loop().call_soon(conn.close, status, "session closed")
                return


def both(first: Callable[[Handle, Message], None],
          then: Callable[[Handle, Message], None] | None) -> Callable[[Handle, Message], None]:
    """``first``, then ``then`` if there is one."""
    if then is None:
        return first

    def both(handle: Handle, msg: Message) -> None:
        first(handle, msg)
        then(handle, msg)
    return both


def _uri(handle: Handle) -> str:
    return handle.identity.uri if isinstance(handle, Association) and handle.identity \
        else repr(handle)
