"""Gateway peering: one session with one peer gateway (draft-dmsc-protocol-00, 6.1, 6.4,
6.7; draft-dmsc-state-machines-00).

The initiator sends OPEN (OPEN_SENT); the responder checks it, answers with its own OPEN
carrying the same transaction id (OPEN_CONFIRM) and waits for the initiator's KEEPALIVE
(or its first UPDATE, DIGEST or SYNC_REQUEST, which may overtake the KEEPALIVE on a
transport without ordering across transactions).  When both start at once, each answers
the other's OPEN and the answers to their own OPENs establish the session.  The hold time
is the smaller of the two proposals (0: no hold timer and no KEEPALIVE).  Each side sends
KEEPALIVE after KEEPALIVE_FRACTION of the hold time without sending anything, and closes
the session with NOTIFY HOLD_TIMER_EXPIRED after a hold time without receiving anything.
Any message the session's state does not expect is answered with NOTIFY
UNEXPECTED_MESSAGE and closes the session.  Record exchange on the established session is
:class:`~.sync.PeerSync`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..codec.messages import Error, Keepalive, Message, Notify, Open
from ..codec.registry import ErrorCode, GatewayCaps, MessageType, timer
from ..codec.values import CapabilityRecord, ExportPolicy
from ..gateway.core import GatewayCore
from .events import SessionClosed, SessionEstablished
from .machine import (
    Handle,
    Machine,
    Outbox,
    ProtocolError,
    Refusal,
    TransactionIds,
    earliest,
    expect,
)
from .registration import RecordVerifier
from .sync import PeerSync, SyncPeer

#: Checks a received OPEN (identity against the association, federation policy); returns
#: the refusal to NOTIFY, or None to accept.
OpenCheck = Callable[[Handle, Open], Refusal | None]
#: The export filter towards a peer of a domain (None: export everything).
ExportFor = Callable[[str], Callable[[CapabilityRecord], bool] | None]

ALL_CAPS = GatewayCaps.ROUTING | GatewayCaps.DIGEST_SYNC | GatewayCaps.FEDERATION \
    | GatewayCaps.OAM


@dataclass(frozen=True, slots=True)
class LocalGateway:
    """What a gateway announces in OPEN (Section 6.4)."""

    gateway_id: bytes
    domain: str
    hold_time: int = int(timer("HOLD_TIME"))
    capabilities: int = int(ALL_CAPS)
    export_policy: ExportPolicy | None = None


class PeerState(Enum):
    IDLE = "IDLE"
    OPEN_SENT = "OPEN_SENT"
    OPEN_CONFIRM = "OPEN_CONFIRM"
    ESTABLISHED = "ESTABLISHED"


class PeerInput(Enum):
    START = "start()"
    STOP = "close()"
    OPEN_REQUEST = "OPEN [request, accepted]"
    OPEN_ANSWER = "OPEN [answers ours, accepted]"
    OPEN_REFUSED = "OPEN [refused]"
    KEEPALIVE = "KEEPALIVE"
    UPDATE = "UPDATE"
    DIGEST = "DIGEST"
    SYNC_REQUEST = "SYNC_REQUEST"
    ERROR = "ERROR"
    NOTIFY = "NOTIFY"
    KEEPALIVE_DUE = "keepalive timer"
    HOLD_EXPIRY = "hold timer"


class PeerAction(Enum):
    SEND_OPEN = "send OPEN, start hold timer with the proposed hold time"
    ANSWER_OPEN = ("answer OPEN with the request's transaction id; negotiate the hold time; "
                   "start hold timer")
    REFUSE_OPEN = "send NOTIFY with the check's error and reason; close"
    CONFIRM = "negotiate the hold time; send KEEPALIVE; establish"
    ESTABLISH = "establish: report SessionEstablished, start sync (DIGEST at once)"
    ESTABLISH_AND_SYNC = "establish, then pass the message to sync"
    RESTART_HOLD = "restart hold timer"
    SYNC = "restart hold timer; pass the message to sync"
    SEND_KEEPALIVE = "send KEEPALIVE"
    EXPIRE = "send NOTIFY HOLD_TIMER_EXPIRED; close"
    PEER_CLOSED = "close (the peer's STATUS)"
    CEASE = "send NOTIFY CEASE; close"


_S, _I, _A = PeerState, PeerInput, PeerAction
_OPENING = (_S.OPEN_SENT, _S.OPEN_CONFIRM)
_ACTIVE = (*_OPENING, _S.ESTABLISHED)
_SYNC_INPUTS = (_I.UPDATE, _I.DIGEST, _I.SYNC_REQUEST)


class PeerSession(Machine):
    """One peer session (Sections 6.1, 6.4, 6.7)."""

    NAME = "gateway-peering"
    TITLE = "Gateway peering session"
    State, Input, Action = PeerState, PeerInput, PeerAction
    INITIAL = PeerState.IDLE
    TIMERS = ("HOLD_TIME", "KEEPALIVE_FRACTION")
    MESSAGE_INPUTS = {
        MessageType.OPEN: (_I.OPEN_REQUEST, _I.OPEN_ANSWER, _I.OPEN_REFUSED),
        MessageType.KEEPALIVE: (_I.KEEPALIVE,), MessageType.UPDATE: (_I.UPDATE,),
        MessageType.DIGEST: (_I.DIGEST,), MessageType.SYNC_REQUEST: (_I.SYNC_REQUEST,),
        MessageType.ERROR: (_I.ERROR,), MessageType.NOTIFY: (_I.NOTIFY,),
    }
    TABLE = {
        (_S.IDLE, _I.START): (_A.SEND_OPEN, _S.OPEN_SENT),
        (_S.IDLE, _I.OPEN_REQUEST): (_A.ANSWER_OPEN, _S.OPEN_CONFIRM),
        (_S.IDLE, _I.OPEN_REFUSED): (_A.REFUSE_OPEN, _S.IDLE),
        (_S.OPEN_SENT, _I.OPEN_ANSWER): (_A.CONFIRM, _S.ESTABLISHED),
        (_S.OPEN_SENT, _I.OPEN_REQUEST): (_A.ANSWER_OPEN, _S.OPEN_CONFIRM),
        (_S.OPEN_SENT, _I.ERROR): (_A.PEER_CLOSED, _S.IDLE),
        (_S.OPEN_CONFIRM, _I.OPEN_ANSWER): (_A.CONFIRM, _S.ESTABLISHED),
        (_S.OPEN_CONFIRM, _I.KEEPALIVE): (_A.ESTABLISH, _S.ESTABLISHED),
        **{(_S.OPEN_CONFIRM, i): (_A.ESTABLISH_AND_SYNC, _S.ESTABLISHED)
           for i in _SYNC_INPUTS},
        (_S.ESTABLISHED, _I.KEEPALIVE): (_A.RESTART_HOLD, _S.ESTABLISHED),
        **{(_S.ESTABLISHED, i): (_A.SYNC, _S.ESTABLISHED) for i in (*_SYNC_INPUTS, _I.ERROR)},
        (_S.ESTABLISHED, _I.KEEPALIVE_DUE): (_A.SEND_KEEPALIVE, _S.ESTABLISHED),
        **{(s, _I.OPEN_REFUSED): (_A.REFUSE_OPEN, _S.IDLE) for s in _OPENING},
        **{(s, _I.NOTIFY): (_A.PEER_CLOSED, _S.IDLE) for s in _ACTIVE},
        **{(s, _I.HOLD_EXPIRY): (_A.EXPIRE, _S.IDLE) for s in _ACTIVE},
        **{(s, _I.STOP): (_A.CEASE, _S.IDLE) for s in _ACTIVE},
    }

    def __init__(self, outbox: Outbox, handle: Handle, local: LocalGateway, core: GatewayCore,
                 txids: TransactionIds, verifier: RecordVerifier, *,
                 accept_open: OpenCheck = lambda _h, _o: None,
                 export_for: ExportFor = lambda _domain: None,
                 keepalive_fraction: float = timer("KEEPALIVE_FRACTION"),
                 digest_interval: float = timer("DIGEST_INTERVAL"),
                 request_timeout: float = timer("REQUEST_TIMEOUT")) -> None:
        super().__init__(outbox)
        self.handle = handle
        self.local = local
        self.core = core
        self._txids = txids
        self.verifier = verifier
        self.accept_open = accept_open
        self.export_for = export_for
        self.keepalive_fraction = keepalive_fraction
        self.digest_interval = digest_interval
        self.request_timeout = request_timeout
        self.peer_id: bytes | None = None
        self.peer_domain: str | None = None
        self.hold_time = local.hold_time
        self.sync: PeerSync | None = None
        self._open_txid: int | None = None
        self._refusal = Refusal(ErrorCode.POLICY_DENIED, "OPEN refused")
        self._hold_deadline: float | None = None
        self._last_sent = 0.0

    # --- inputs -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Open the session actively (local call)."""
        self.step(_I.START, now)

    def close(self, now: float) -> None:
        """Close the session with NOTIFY CEASE (local call)."""
        self.step(_I.STOP, now)

    def receive(self, msg: Message, now: float) -> None:
        try:
            self.step(self._classify(msg), now, msg)
            if self.state in (_S.OPEN_CONFIRM, _S.ESTABLISHED):
                self._hold_deadline = now + self.hold_time if self.hold_time else None
        except ProtocolError as err:
            self.refuse(self.handle, msg, err)
            raise

    def _classify(self, msg: Message) -> PeerInput:
        if isinstance(msg, Open):
            refusal = self.accept_open(self.handle, msg)
            if refusal is not None:
                self._refusal = refusal
                return _I.OPEN_REFUSED
            if self._open_txid is not None and msg.transaction_id == self._open_txid:
                return _I.OPEN_ANSWER
            return _I.OPEN_REQUEST
        inputs = self.MESSAGE_INPUTS.get(msg.TYPE)
        if inputs is None:
            raise self.unexpected(msg)
        return inputs[0]  # type: ignore[no-any-return]

    def refuse(self, source: Handle, msg: Message, err: ProtocolError) -> None:
        """An unexpected message closes the session with NOTIFY (Section 6.1); a NOTIFY
        is never answered."""
        if msg.TYPE is MessageType.NOTIFY:
            return
        self._notify(err.code, err.diagnostic, self._last_sent)
        if self.state is not _S.IDLE:
            self._close(err.code, by_peer=False)
            self.state = _S.IDLE

    def get_timer(self) -> float | None:
        keepalive = None
        if self.state is _S.ESTABLISHED and self.hold_time:
            keepalive = self._last_sent + self.keepalive_fraction * self.hold_time
        return earliest(self._hold_deadline, keepalive,
                        None if self.sync is None else self.sync.get_timer())

    def handle_timer(self, now: float) -> None:
        if self._hold_deadline is not None and now >= self._hold_deadline:
            self.step(_I.HOLD_EXPIRY, now)
            return
        if self.sync is not None:
            self.sync.handle_timer(now)
        if self.state is _S.ESTABLISHED and self.hold_time \
                and now >= self._last_sent + self.keepalive_fraction * self.hold_time:
            self.step(_I.KEEPALIVE_DUE, now)

    # --- helpers ------------------------------------------------------------------------------
    def send(self, msg: Message, now: float) -> None:
        """Send on the session (sync uses it too), for the keepalive timer's sake."""
        self._last_sent = now
        self.outbox.send(self.handle, msg)

    def _notify(self, status: ErrorCode, diagnostic: str | None, now: float) -> None:
        self.send(Notify(transaction_id=self._txids(), status=status, diagnostic=diagnostic),
                  now)

    def _open(self, txid: int) -> Open:
        loc = self.local
        return Open(transaction_id=txid, gateway_id=loc.gateway_id, domain=loc.domain,
                    hold_time=loc.hold_time, capabilities=loc.capabilities,
                    export_policy=loc.export_policy)

    def _learn_peer(self, msg: Message | None) -> None:
        o = expect(msg, Open)
        self.peer_id, self.peer_domain = o.gateway_id, o.domain
        self.hold_time = min(self.local.hold_time, o.hold_time)

    def _close(self, status: ErrorCode, *, by_peer: bool) -> None:
        self.sync = None
        self._hold_deadline = self._open_txid = None
        self.outbox.emit(SessionClosed(self.handle, self.peer_id, status, by_peer))

    # --- actions ------------------------------------------------------------------------------
    def _send_open(self, now: float, msg: Message | None) -> None:
        self._open_txid = self._txids()
        self._hold_deadline = now + self.local.hold_time if self.local.hold_time else None
        self.send(self._open(self._open_txid), now)

    def _answer_open(self, now: float, msg: Message | None) -> None:
        self._learn_peer(msg)
        assert msg is not None
        self.send(self._open(msg.transaction_id), now)

    def _refuse_open(self, now: float, msg: Message | None) -> None:
        self._notify(self._refusal.code, self._refusal.diagnostic, now)
        if self.state is not _S.IDLE:
            self._close(self._refusal.code, by_peer=False)

    def _confirm(self, now: float, msg: Message | None) -> None:
        self._learn_peer(msg)
        self.send(Keepalive(transaction_id=self._txids()), now)
        self._establish(now, msg)

    def _establish(self, now: float, msg: Message | None) -> None:
        assert self.peer_id is not None and self.peer_domain is not None
        self._open_txid = None
        self.sync = PeerSync(self.outbox, self.core,
                             SyncPeer(self.handle, self.peer_id, self.peer_domain, self.send,
                                      self.export_for(self.peer_domain)),
                             self._txids, self.verifier, digest_interval=self.digest_interval,
                             request_timeout=self.request_timeout)
        self.outbox.emit(SessionEstablished(self.handle, self.peer_id, self.peer_domain,
                                            self.hold_time))
        self.sync.start(now)

    def _establish_and_sync(self, now: float, msg: Message | None) -> None:
        self._establish(now, msg)
        self._sync(now, msg)

    def _restart_hold(self, now: float, msg: Message | None) -> None:
        """The hold timer restarts on every message received (in :meth:`receive`)."""

    def _sync(self, now: float, msg: Message | None) -> None:
        assert self.sync is not None and msg is not None
        self.sync.receive(msg, now)

    def _send_keepalive(self, now: float, msg: Message | None) -> None:
        self.send(Keepalive(transaction_id=self._txids()), now)

    def _expire(self, now: float, msg: Message | None) -> None:
        self._notify(ErrorCode.HOLD_TIMER_EXPIRED, f"nothing received for {self.hold_time} s",
                     now)
        self._close(ErrorCode.HOLD_TIMER_EXPIRED, by_peer=False)

    def _peer_closed(self, now: float, msg: Message | None) -> None:
        assert isinstance(msg, Notify | Error)
        self._close(msg.status, by_peer=True)

    def _cease(self, now: float, msg: Message | None) -> None:
        self._notify(ErrorCode.CEASE, None, now)
        self._close(ErrorCode.CEASE, by_peer=False)
