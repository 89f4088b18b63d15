"""A peer session on a real gateway node and SQLite registry, brought into each of its
states, for the row cases of :mod:`test_rows_peering`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from row_cases import ME, PEER, wire

from dmscproto.codec.messages import Message, Notify, Open
from dmscproto.codec.registry import ErrorCode
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.node import GatewayNode
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.events import ProtocolEvent, SessionClosed
from dmscproto.protocol.machine import Outbox, Refusal, TransactionIds
from dmscproto.protocol.peering import LocalGateway, PeerSession, PeerState, SessionTimers
from dmscproto.testing.harness import T0

S = PeerState
HOLD, KEEP = 90, 10.0  # what this end proposes, its keepalive interval
T1 = T0 + 1


@dataclass
class Peer:
    """A session on a gateway node, in a state; ``refuse`` is what the node's OPEN check
    (its ``accept_open`` hook) answers, ``waiting`` whether relays wait on the peer."""

    s: PeerSession
    node: GatewayNode
    out: Outbox
    refuse: list[Refusal | None]
    waiting: list[bool]
    mine: int = 0  # the transaction id of our OPEN, if we sent one

    def feed(self, msg: Message, at: float = T1) -> None:
        self.s.receive(wire(msg), at)

    def sent(self) -> list[Message]:
        return [wire(m) for _, m in self.out.messages_to_send()]

    def events(self) -> list[ProtocolEvent]:
        out = list(self.out.events)
        self.out.events.clear()
        return out

    def closed(self, status: ErrorCode, *, by_peer: bool, peer: bytes | None = PEER) -> None:
        """The session closed (reported, every timer stopped, back to IDLE)."""
        assert self.events() == [SessionClosed("peer", peer, status, by_peer)]
        assert self.s.state is S.IDLE and self.s.get_timer() is None and self.s.sync is None

    def hold_until(self, deadline: float) -> None:
        """The hold timer runs out at ``deadline``, not before."""
        self.s.handle_timer(deadline - 0.01)
        assert self.s.state is S.ESTABLISHED
        self.sent()
        self.s.handle_timer(deadline)
        assert [(type(m), m.status) for m in self.sent() if isinstance(m, Notify)] == [
            (Notify, ErrorCode.HOLD_TIMER_EXPIRED)]
        assert self.s.state is S.IDLE


def peer_open(txid: int = 9, hold: int = HOLD, caps: int = 0) -> Open:
    return Open(transaction_id=txid, gateway_id=PEER, domain="b.example", hold_time=hold,
                capabilities=caps)


UNTRUSTED = Refusal(ErrorCode.UNTRUSTED_CERTIFICATE, "not from a federated authority")


def rig(state: PeerState, tmp_path: Path, *, collided: bool = False, caps: int = 0,
        accept_certificate: bool = False, max_peer_records: int | None = None) -> Peer:
    """A session in ``state`` at T0: OPEN_SENT and ESTABLISHED opened by us,
    OPEN_CONFIRM by the peer (``collided``: both at once, our OPEN unanswered).  With
    ``max_peer_records`` an UPDATE is applied in slices of a record or two."""
    core = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"),
                       **({} if max_peer_records is None
                          else {"max_peer_records": max_peer_records}))
    refuse: list[Refusal | None] = [None]
    waiting = [True]
    ticks = iter(range(10**6))  # a slice clock: one second a reading
    node = GatewayNode(core, accept_open=lambda _h, _o: refuse[0],
                       accept_certificate=lambda _h, _d, _t: None if accept_certificate
                       else UNTRUSTED,
                       slice_clock=None if max_peer_records is None
                       else lambda: float(next(ticks)), learn_slice=2.5)
    node.relays_waiting = lambda _h: waiting[0]  # type: ignore[method-assign]
    out = Outbox()
    node._out = out  # the session's sync machine writes where the test reads
    p = Peer(PeerSession(out, "peer", LocalGateway(ME, "a.example"), node, TransactionIds(),
                         timers=SessionTimers(HOLD, KEEP)), node, out, refuse, waiting)
    if state is not S.IDLE and (state is not S.OPEN_CONFIRM or collided):
        p.s.start(T0)
        [mine] = p.sent()
        p.mine = mine.transaction_id
    if state is S.OPEN_CONFIRM:
        p.feed(peer_open(), T0)
    elif state is S.ESTABLISHED:
        p.feed(peer_open(p.mine, caps=caps), T0)
    p.sent()
    p.events()
    assert p.s.state is state
    return p
