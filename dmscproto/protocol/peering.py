"""Gateway peering: one session with one peer gateway (draft-dmsc-protocol-00, Sections
6.1, 6.4, 6.7; draft-dmsc-state-machines-00).

The initiator sends OPEN (OPEN_SENT); the responder checks it, answers with its own OPEN
carrying the same transaction id (OPEN_CONFIRM) and waits for the initiator's KEEPALIVE
(or its first UPDATE, DIGEST or SYNC_REQUEST, which may overtake the KEEPALIVE on a
transport without ordering across transactions).  When both start at once, each answers
the other's OPEN and the answers to their own OPENs establish the session.

Timers (Section 6.4), each started and stopped only by the table's actions:

* the hold timer runs from OPEN on, restarted by every message received; when it
  expires the session sends NOTIFY HOLD_TIMER_EXPIRED and closes.  The session's hold
  time is the smaller of the two proposals; 0 means no hold timer and no KEEPALIVE;
  an OPEN proposing less than MIN_HOLD_TIME (but not 0) is refused;
* the keepalive timer runs while ESTABLISHED: a KEEPALIVE every keepalive interval,
  which is this end's configured interval (:class:`SessionTimers`, per peer) but never
  more than KEEPALIVE_FRACTION of the negotiated hold time, so a peer's hold timer
  expires only after about three KEEPALIVEs were lost.

While a relayed transaction waits on an established session, the session probes the
peer (Section 6.1.1; the rows of :mod:`.peering_probe`).

CERTIFICATE and CERTIFICATE_ACK (Section 6.10), received and offered, are the rows of
:mod:`.peering_certs`.

A closed session is reported (:class:`~.events.SessionClosed`); its owner closes the
association and dials again (Section 6.1.1).  Any message the session's state does not
expect is answered with NOTIFY UNEXPECTED_MESSAGE and closes the session.  Record
exchange on the established session is the sync machine the :class:`PeeringPort` starts.

The session is a :class:`~.typed.TypedMachine`: its inputs are the dataclasses of
:mod:`.peering_inputs`, every refusal (a refused OPEN, an unexpected message) has its
own rows, and the table is the whole behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..codec.messages import (
    Certificate,
    CertificateAck,
    Error,
    Keepalive,
    Message,
    Notify,
    Open,
)
from ..codec.registry import ErrorCode, GatewayCaps, MessageType, timer
from ..codec.values import CapabilityRecord, ExportPolicy
from .events import SessionClosed, SessionEstablished, SessionEvent
from .machine import (
    Handle,
    Outbox,
    ProtocolError,
    Refusal,
    TransactionIds,
    earliest,
)
from .peering_certs import SessionCertificateActions
from .peering_inputs import (
    INPUT_OF,
    CertificateReceived,
    CertificateRefused,
    ErrorReceived,
    HoldExpired,
    KeepaliveDue,
    KeepaliveReceived,
    NotifyReceived,
    Offer,
    OpenAnswer,
    OpenAnswerRefused,
    OpenRequest,
    OpenRequestRefused,
    PeerAction,
    PeerInput,
    ProbeDue,
    ProbeIdle,
    ProbeLost,
    Start,
    Stop,
    SummaryReceived,
    SyncReceived,
    SyncRefused,
    Unexpected,
    Watch,
)
from .peering_probe import SessionProbe
from .ports import PeeringPort, SessionSync
from .typed import StepInput, TypedMachine

ALL_CAPS = GatewayCaps.ROUTING | GatewayCaps.DIGEST_SYNC | GatewayCaps.FEDERATION \
    | GatewayCaps.OAM
MIN_HOLD_TIME = int(timer("MIN_HOLD_TIME"))
#: A session closed with one of these codes is not dialled, nor accepted from the peer,
#: for PEER_LIMIT_HOLD (Section 6.1.1; BGP's max-prefix restart timer is the model).
HELD_AFTER = frozenset({ErrorCode.MAX_RECORDS_EXCEEDED, ErrorCode.PATH_TOO_LONG})

#: Checks a received OPEN (identity against the association, federation policy); returns
#: the refusal to NOTIFY, or None to accept (the gateway's ``accept_open`` hook).
OpenCheck = Callable[[Handle, Open], Refusal | None]
#: The export filter towards a peer of a domain (None: export everything).
ExportFor = Callable[[str], Callable[[CapabilityRecord], bool] | None]


@dataclass(frozen=True, slots=True)
class LocalGateway:
    """What a gateway announces in OPEN (Section 6.4), but the hold time (per peer)."""

    gateway_id: bytes
    domain: str
    capabilities: int = int(ALL_CAPS)
    export_policy: ExportPolicy | None = None


@dataclass(frozen=True, slots=True)
class SessionTimers:
    """This end's timers towards one peer (Section 6.4): the hold time it proposes in
    OPEN and the largest interval between its KEEPALIVEs (None: KEEPALIVE_FRACTION of
    the negotiated hold time)."""

    hold_time: int = int(timer("HOLD_TIME"))
    keepalive: float | None = None

    def keepalive_for(self, hold_time: int) -> float | None:
        """The keepalive interval on a session of negotiated ``hold_time``."""
        if hold_time == 0:
            return None
        cap = hold_time * timer("KEEPALIVE_FRACTION")
        return cap if self.keepalive is None else min(self.keepalive, cap)


def acceptable_hold_time(seconds: int) -> bool:
    """0 (no hold timer) or at least MIN_HOLD_TIME (Section 6.4)."""
    return seconds == 0 or seconds >= MIN_HOLD_TIME


class PeerState(Enum):
    IDLE = "IDLE"
    OPEN_SENT = "OPEN_SENT"
    OPEN_CONFIRM = "OPEN_CONFIRM"
    ESTABLISHED = "ESTABLISHED"


_S, _I, _A = PeerState, PeerInput, PeerAction
_M = MessageType


_OPENING = (_S.OPEN_SENT, _S.OPEN_CONFIRM)
_ACTIVE = (*_OPENING, _S.ESTABLISHED)
#: Where a CERTIFICATE is taken: the peer may be established before us (Section 6.10).
_CERTIFYING = (_S.OPEN_CONFIRM, _S.ESTABLISHED)


class PeerSession(SessionProbe, SessionCertificateActions, TypedMachine):
    """One peer session (module docstring)."""

    NAME = "gateway-peering"
    TITLE = "Gateway peering session"
    EVENTS = SessionEvent
    State, Input, Action = PeerState, PeerInput, PeerAction
    INITIAL = PeerState.IDLE
    TIMERS = ("HOLD_TIME", "MIN_HOLD_TIME", "KEEPALIVE_FRACTION", "PROBE_IDLE_FRACTION",
              "PROBE_TIMEOUT_FRACTION")
    MESSAGE_INPUTS = {
        _M.OPEN: (_I.OPEN_REQUEST, _I.OPEN_ANSWER, _I.OPEN_REQUEST_REFUSED,
                  _I.OPEN_ANSWER_REFUSED),
        **{t: (cls.KIND,) for t, cls in INPUT_OF.items()},
        _M.CERTIFICATE: (_I.CERTIFICATE, _I.CERTIFICATE_REFUSED),
        _M.CERTIFICATE_ACK: (_I.OFFER_ACCEPTED, _I.OFFER_REFUSED),
    }
    TABLE = {
        (_S.IDLE, _I.START): (_A.SEND_OPEN, _S.OPEN_SENT),
        (_S.IDLE, _I.OPEN_REQUEST): (_A.ANSWER_OPEN, _S.OPEN_CONFIRM),
        (_S.IDLE, _I.OPEN_REQUEST_REFUSED): (_A.REFUSE_OPEN, _S.IDLE),
        (_S.IDLE, _I.NOTIFY): (_A.DROP, _S.IDLE),
        (_S.IDLE, _I.UNEXPECTED): (_A.REFUSE_MESSAGE, _S.IDLE),
        (_S.OPEN_SENT, _I.OPEN_ANSWER): (_A.CONFIRM, _S.ESTABLISHED),
        (_S.OPEN_SENT, _I.OPEN_REQUEST): (_A.ANSWER_OPEN, _S.OPEN_CONFIRM),
        (_S.OPEN_SENT, _I.ERROR): (_A.PEER_CLOSED, _S.IDLE),
        (_S.OPEN_CONFIRM, _I.OPEN_ANSWER): (_A.CONFIRM, _S.ESTABLISHED),
        (_S.OPEN_CONFIRM, _I.KEEPALIVE): (_A.ESTABLISH, _S.ESTABLISHED),
        (_S.OPEN_CONFIRM, _I.SYNC): (_A.ESTABLISH_AND_SYNC, _S.ESTABLISHED),
        (_S.OPEN_CONFIRM, _I.SUMMARY): (_A.ESTABLISH, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.KEEPALIVE): (_A.RESTART_HOLD, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.SUMMARY): (_A.RESTART_HOLD, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.SYNC): (_A.SYNC, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.ERROR): (_A.SYNC, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.KEEPALIVE_DUE): (_A.SEND_KEEPALIVE, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.SYNC_REFUSED): (_A.CLOSE_REFUSED, _S.IDLE),
        (_S.ESTABLISHED, _I.WATCH): (_A.START_PROBING, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.ECHO_REPLY): (_A.RESTART_HOLD, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.PROBE_DUE): (_A.SEND_PROBE, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.PROBE_IDLE): (_A.STOP_PROBING, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.PROBE_LOST): (_A.PROBE_EXPIRE, _S.IDLE),
        **{(s, _I.CERTIFICATE): (_A.KEEP_CERTIFICATE, s) for s in _CERTIFYING},
        **{(s, _I.CERTIFICATE_REFUSED): (_A.REFUSE_CERTIFICATE, s) for s in _CERTIFYING},
        (_S.ESTABLISHED, _I.OFFER): (_A.SEND_CERTIFICATE, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.OFFER_ACCEPTED): (_A.OFFER_HELD, _S.ESTABLISHED),
        (_S.ESTABLISHED, _I.OFFER_REFUSED): (_A.FORGET_OFFER, _S.ESTABLISHED),
        **{(s, _I.OPEN_REQUEST_REFUSED): (_A.REFUSE_AND_CLOSE, _S.IDLE) for s in _OPENING},
        **{(s, _I.OPEN_ANSWER_REFUSED): (_A.REFUSE_ANSWER_AND_CLOSE, _S.IDLE)
           for s in _OPENING},
        **{(s, _I.NOTIFY): (_A.PEER_CLOSED, _S.IDLE) for s in _ACTIVE},
        **{(s, _I.HOLD_EXPIRED): (_A.EXPIRE, _S.IDLE) for s in _ACTIVE},
        **{(s, _I.STOP): (_A.CEASE, _S.IDLE) for s in _ACTIVE},
        **{(s, _I.UNEXPECTED): (_A.CLOSE_UNEXPECTED, _S.IDLE) for s in _ACTIVE},
    }

    def __init__(self, outbox: Outbox, handle: Handle, local: LocalGateway,
                 port: PeeringPort, txids: TransactionIds, *,
                 timers: SessionTimers = SessionTimers()) -> None:
        super().__init__(outbox)
        self.handle = handle
        self.local = local
        self.port = port
        self.timers = timers
        self._txids = txids
        self.peer_id: bytes | None = None
        self.peer_domain: str | None = None
        #: Whether the peer announced OAM in OPEN (it answers ECHO_REQUEST: probing).
        self.peer_oam = False
        #: The negotiated hold time once OPEN is received (our proposal until then).
        self.hold_time = timers.hold_time
        self.keepalive: float | None = None
        self.sync: SessionSync | None = None
        self._open_txid: int | None = None
        self._hold_at: float | None = None
        self._keepalive_at: float | None = None
        #: Probing (module doc): when to send ECHO_REQUEST if nothing is heard, and,
        #: once sent, when the session closes if still nothing is heard.
        self._probe_at: float | None = None
        self._probe_deadline: float | None = None
        self._probes = 0
        self._init_offers()

    # --- inputs -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Open the session actively (local call)."""
        self.run(Start(), now)

    def close(self, now: float) -> None:
        """Close the session with NOTIFY CEASE (local call)."""
        self.run(Stop(), now)

    def watch(self, now: float) -> None:
        """A relayed transaction now waits on the session (local call): probe the peer
        while any does (module doc), if it answers ECHO_REQUEST (OAM in its OPEN)."""
        if self.rows_for(_I.WATCH) and self.keepalive is not None and self.peer_oam:
            self.run(Watch(), now)

    def offer(self, der: bytes, now: float) -> None:
        """A relayed request about to go out on the session names the certificate
        ``der``, which the peer does not hold from the handshake: offer it, unless it
        was offered already (:mod:`.peering_certs`)."""
        if self.rows_for(_I.OFFER) and not self.offered(der):
            self.run(Offer(der), now)

    def receive(self, msg: Message, now: float) -> None:
        """A message on the session's association.  One the state does not expect (or
        the sync machine refuses) is answered and raises :class:`ProtocolError` after
        its UNEXPECTED transition."""
        inp = self._classify(msg, now)
        if not self.rows_for(inp.KIND):
            inp = Unexpected(msg, self.unexpected(msg))
        try:
            self.run(inp, now)
        except ProtocolError as err:  # the sync machine refused it
            self.run(Unexpected(msg, err), now)
            raise
        if isinstance(inp, Unexpected):
            raise inp.error

    def _classify(self, msg: Message, now: float) -> StepInput:
        if isinstance(msg, Open):
            refusal = self.port.check_open(self.handle, msg, now)
            if refusal is None and not acceptable_hold_time(msg.hold_time):
                refusal = Refusal(ErrorCode.INVALID_TLV_VALUE,
                                  f"hold time {msg.hold_time} s: 0 or at least "
                                  f"{MIN_HOLD_TIME} s")
            answer = msg.transaction_id == self._open_txid
            if refusal is not None:
                return (OpenAnswerRefused(msg, refusal) if answer
                        else OpenRequestRefused(msg, refusal))
            return OpenAnswer(msg) if answer else OpenRequest(msg)
        if isinstance(msg, Certificate):
            refused = self.port.check_certificate(self.handle, msg.certificate, now)
            return CertificateReceived(msg) if refused is None \
                else CertificateRefused(msg, refused)
        if isinstance(msg, CertificateAck) and self.awaits(msg):
            return self._classify_ack(msg)
        cls = INPUT_OF.get(msg.TYPE)
        if cls is None:
            return Unexpected(msg, self.unexpected(msg))
        return cls(msg)  # type: ignore[arg-type]

    def get_timer(self) -> float | None:
        return earliest(self._hold_at, self._keepalive_at, self._probe_at,
                        self._probe_deadline,
                        None if self.sync is None else self.sync.get_timer())

    def handle_timer(self, now: float) -> None:
        if self._hold_at is not None and now >= self._hold_at:
            self.run(HoldExpired(), now)
            return
        if self._probe_deadline is not None and now >= self._probe_deadline:
            self.run(ProbeLost(), now)
            return
        if self._probe_at is not None and now >= self._probe_at:
            self.run(ProbeDue() if self.port.relays_waiting(self.handle) else ProbeIdle(),
                     now)
        if self.sync is not None:
            try:
                self.sync.handle_timer(now)
            except ProtocolError as err:  # e.g. a slice beyond the peer's record limit
                self.run(SyncRefused(err), now)
                return
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self.run(KeepaliveDue(), now)

    # --- helpers (called by actions only) -----------------------------------------------------
    def _send(self, msg: Message) -> None:
        self.outbox.send(self.handle, msg)

    def _notify(self, status: ErrorCode, diagnostic: str | None) -> None:
        self._send(Notify(transaction_id=self._txids(), status=status, diagnostic=diagnostic))

    def _open(self, txid: int) -> Open:
        loc = self.local
        return Open(transaction_id=txid, gateway_id=loc.gateway_id, domain=loc.domain,
                    hold_time=self.timers.hold_time, capabilities=loc.capabilities,
                    export_policy=loc.export_policy)

    def _learn_peer(self, o: Open) -> None:
        self.peer_id, self.peer_domain = o.gateway_id, o.domain
        self.peer_oam = bool(o.capabilities & GatewayCaps.OAM)
        self.hold_time = min(self.timers.hold_time, o.hold_time)
        self.keepalive = self.timers.keepalive_for(self.hold_time)

    def _restart_hold_timer(self, now: float, hold_time: int) -> None:
        """The peer was heard from: the hold timer restarts, and a probe in progress is
        answered (the probe timer restarts)."""
        self._hold_at = now + hold_time if hold_time else None
        if self._probe_at is not None or self._probe_deadline is not None:
            self._probe_deadline = None
            self._probe_at = now + self._probe_idle()

    def _close(self, status: ErrorCode, *, by_peer: bool) -> None:
        self.sync = None
        self._init_offers()
        self._hold_at = self._keepalive_at = self._open_txid = None
        self._probe_at = self._probe_deadline = None
        self.outbox.emit(SessionClosed(self.handle, self.peer_id, status, by_peer))

    # --- actions ------------------------------------------------------------------------------
    def _send_open(self, now: float, inp: Start) -> None:
        self._open_txid = self._txids()
        self._send(self._open(self._open_txid))
        self._restart_hold_timer(now, self.timers.hold_time)

    def _answer_open(self, now: float, inp: OpenRequest) -> None:
        self._learn_peer(inp.msg)
        self._send(self._open(inp.msg.transaction_id))
        self._restart_hold_timer(now, self.hold_time)

    def _refuse_open(self, now: float, inp: OpenRequestRefused) -> None:
        r = inp.refusal
        self._send(Error(transaction_id=inp.msg.transaction_id, status=r.code,
                         offending_type=int(MessageType.OPEN), diagnostic=r.diagnostic,
                         retry_after=r.retry_after))

    def _refuse_and_close(self, now: float, inp: OpenRequestRefused) -> None:
        self._refuse_open(now, inp)
        self._notify(inp.refusal.code, inp.refusal.diagnostic)
        self._close(inp.refusal.code, by_peer=False)

    def _refuse_answer_and_close(self, now: float, inp: OpenAnswerRefused) -> None:
        self._notify(inp.refusal.code, inp.refusal.diagnostic)
        self._close(inp.refusal.code, by_peer=False)

    def _confirm(self, now: float, inp: OpenAnswer) -> None:
        self._learn_peer(inp.msg)
        self._send(Keepalive(transaction_id=self._txids()))
        self._establish(now, inp)

    def _establish(self, now: float, inp: StepInput) -> None:
        assert self.peer_id is not None and self.peer_domain is not None
        self._open_txid = None
        self._restart_hold_timer(now, self.hold_time)
        self._keepalive_at = None if self.keepalive is None else now + self.keepalive
        self.sync = self.port.start_sync(self.handle, self.peer_id, self.peer_domain)
        self.outbox.emit(SessionEstablished(self.handle, self.peer_id, self.peer_domain,
                                            self.hold_time, self.keepalive))
        self.sync.start(now)

    def _establish_and_sync(self, now: float, inp: SyncReceived) -> None:
        self._establish(now, inp)
        self._sync(now, inp)

    def _restart_hold(self, now: float, inp: KeepaliveReceived | SummaryReceived) -> None:
        self._restart_hold_timer(now, self.hold_time)

    def _sync(self, now: float, inp: SyncReceived | ErrorReceived) -> None:
        assert self.sync is not None
        self._restart_hold_timer(now, self.hold_time)
        self.sync.receive(inp.msg, now)

    def _send_keepalive(self, now: float, inp: KeepaliveDue) -> None:
        assert self.keepalive is not None
        self._send(Keepalive(transaction_id=self._txids()))
        self._keepalive_at = now + self.keepalive

    def _expire(self, now: float, inp: HoldExpired) -> None:
        self._notify(ErrorCode.HOLD_TIMER_EXPIRED, f"nothing received for {self.hold_time} s")
        self._close(ErrorCode.HOLD_TIMER_EXPIRED, by_peer=False)

    def _peer_closed(self, now: float, inp: NotifyReceived | ErrorReceived) -> None:
        self._close(inp.msg.status, by_peer=True)

    def _cease(self, now: float, inp: Stop) -> None:
        self._notify(ErrorCode.CEASE, None)
        self._close(ErrorCode.CEASE, by_peer=False)

    def _refuse_message(self, now: float, inp: Unexpected) -> None:
        self._notify(inp.error.code, inp.error.diagnostic)

    def _close_unexpected(self, now: float, inp: Unexpected) -> None:
        self._notify(inp.error.code, inp.error.diagnostic)
        self._close(inp.error.code, by_peer=False)

    def _close_refused(self, now: float, inp: SyncRefused) -> None:
        self._notify(inp.error.code, inp.error.diagnostic)
        self._close(inp.error.code, by_peer=False)

    def _drop(self, now: float, inp: NotifyReceived) -> None:
        """A NOTIFY outside a session is never answered."""
