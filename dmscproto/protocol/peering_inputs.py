"""The inputs and actions of :class:`~.peering.PeerSession`, one peer session
(draft-dmsc-protocol-00, Sections 6.1, 6.4, 6.7): for each input a small dataclass
carrying its data, and the input each received message type becomes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..codec.messages import Certificate, CertificateAck, Error, Message, Notify, Open
from ..codec.registry import MessageType
from .machine import ProtocolError, Refusal
from .typed import StepInput


class PeerInput(Enum):
    START = "start()"
    STOP = "close()"
    OPEN_REQUEST = "OPEN [request, accepted]"
    OPEN_ANSWER = "OPEN [answers ours, accepted]"
    OPEN_REQUEST_REFUSED = ("OPEN [request, refused: the port's check, or hold time "
                            "1..MIN_HOLD_TIME-1]")
    OPEN_ANSWER_REFUSED = "OPEN [answers ours, refused]"
    KEEPALIVE = "KEEPALIVE"
    SYNC = "UPDATE, DIGEST, SYNC_REQUEST, SYNC_ACK, DIGEST_REQUEST"
    SUMMARY = "SUMMARY (the gateway passes it to its summaries once established)"
    ERROR = "ERROR"
    NOTIFY = "NOTIFY"
    UNEXPECTED = "any other message, or one the sync machine refuses"
    SYNC_REFUSED = "the sync machine refuses what it applies on a timer (a slice)"
    KEEPALIVE_DUE = "keepalive timer"
    HOLD_EXPIRED = "hold timer"
    WATCH = "watch(): a relayed transaction waits on the session"
    ECHO_REPLY = "ECHO_REPLY"
    PROBE_DUE = "probe timer [relayed transactions wait]"
    PROBE_IDLE = "probe timer [none waits]"
    PROBE_LOST = "probe deadline"
    CERTIFICATE = "CERTIFICATE [accepted by the port's check]"
    CERTIFICATE_REFUSED = "CERTIFICATE [refused by the port's check]"
    OFFER = ("offer(): a relayed request names a certificate [not offered on the "
             "session]")
    OFFER_ACCEPTED = "CERTIFICATE_ACK [answers our offer: SUCCESS, its THUMBPRINT]"
    OFFER_REFUSED = "CERTIFICATE_ACK [answers our offer: another STATUS or THUMBPRINT]"


class PeerAction(Enum):
    SEND_OPEN = "send OPEN with our hold time; start the hold timer with it"
    ANSWER_OPEN = ("negotiate the hold time; answer OPEN with the request's transaction id; "
                   "restart the hold timer")
    REFUSE_OPEN = ("answer ERROR with the refusal's code, reason and RETRY_AFTER (the OPEN's "
                   "transaction id)")
    REFUSE_AND_CLOSE = ("answer ERROR with the refusal's code, reason and RETRY_AFTER; send "
                        "NOTIFY with the code; close")
    REFUSE_ANSWER_AND_CLOSE = "send NOTIFY with the refusal's code and reason; close"
    CONFIRM = "negotiate the hold time; send KEEPALIVE; establish"
    ESTABLISH = ("establish: restart the hold timer, start the keepalive timer, report "
                 "SessionEstablished, start sync (table transfer)")
    ESTABLISH_AND_SYNC = "establish, then pass the message to sync"
    RESTART_HOLD = "restart the hold timer"
    SYNC = "restart the hold timer; pass the message to sync"
    SEND_KEEPALIVE = "send KEEPALIVE; restart the keepalive timer"
    EXPIRE = "send NOTIFY HOLD_TIMER_EXPIRED; close"
    PEER_CLOSED = "close with the peer's STATUS"
    CEASE = "send NOTIFY CEASE; close"
    REFUSE_MESSAGE = "send NOTIFY UNEXPECTED_MESSAGE"
    CLOSE_UNEXPECTED = "send NOTIFY UNEXPECTED_MESSAGE; close"
    CLOSE_REFUSED = "send NOTIFY with the sync machine's code and reason; close"
    DROP = "nothing (a NOTIFY is never answered)"
    START_PROBING = "start the probe timer (unless running)"
    SEND_PROBE = "send ECHO_REQUEST; start the probe deadline"
    STOP_PROBING = "stop the probe timer"
    PROBE_EXPIRE = "send NOTIFY HOLD_TIMER_EXPIRED (probe unanswered); close"
    KEEP_CERTIFICATE = ("restart the hold timer; keep the certificate for the session; "
                        "answer CERTIFICATE_ACK SUCCESS with its THUMBPRINT")
    REFUSE_CERTIFICATE = ("restart the hold timer; answer CERTIFICATE_ACK with the "
                          "refusal's code and reason")
    SEND_CERTIFICATE = ("send CERTIFICATE with a new transaction id; note it offered (as "
                        "many noted as the peer keeps, the oldest forgotten first)")
    OFFER_HELD = "restart the hold timer; the offer's transaction ends"
    FORGET_OFFER = ("restart the hold timer; forget the offer (the certificate is passed "
                    "again when a request needs it)")


_I = PeerInput


# --- inputs --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Start(StepInput):
    KIND = _I.START


@dataclass(frozen=True, slots=True)
class Stop(StepInput):
    KIND = _I.STOP


@dataclass(frozen=True, slots=True)
class OpenRequest(StepInput):
    KIND = _I.OPEN_REQUEST
    msg: Open


@dataclass(frozen=True, slots=True)
class OpenAnswer(StepInput):
    KIND = _I.OPEN_ANSWER
    msg: Open


@dataclass(frozen=True, slots=True)
class OpenRequestRefused(StepInput):
    KIND = _I.OPEN_REQUEST_REFUSED
    msg: Open
    refusal: Refusal


@dataclass(frozen=True, slots=True)
class OpenAnswerRefused(StepInput):
    KIND = _I.OPEN_ANSWER_REFUSED
    msg: Open
    refusal: Refusal


@dataclass(frozen=True, slots=True)
class KeepaliveReceived(StepInput):
    KIND = _I.KEEPALIVE
    msg: Message


@dataclass(frozen=True, slots=True)
class SyncReceived(StepInput):
    KIND = _I.SYNC
    msg: Message


@dataclass(frozen=True, slots=True)
class SummaryReceived(StepInput):
    KIND = _I.SUMMARY
    msg: Message


@dataclass(frozen=True, slots=True)
class ErrorReceived(StepInput):
    KIND = _I.ERROR
    msg: Error


@dataclass(frozen=True, slots=True)
class NotifyReceived(StepInput):
    KIND = _I.NOTIFY
    msg: Notify


@dataclass(frozen=True, slots=True)
class Unexpected(StepInput):
    KIND = _I.UNEXPECTED
    msg: Message
    error: ProtocolError


@dataclass(frozen=True, slots=True)
class SyncRefused(StepInput):
    KIND = _I.SYNC_REFUSED
    error: ProtocolError


@dataclass(frozen=True, slots=True)
class KeepaliveDue(StepInput):
    KIND = _I.KEEPALIVE_DUE


@dataclass(frozen=True, slots=True)
class HoldExpired(StepInput):
    KIND = _I.HOLD_EXPIRED


@dataclass(frozen=True, slots=True)
class Watch(StepInput):
    KIND = _I.WATCH


@dataclass(frozen=True, slots=True)
class EchoReplyReceived(StepInput):
    KIND = _I.ECHO_REPLY
    msg: Message


@dataclass(frozen=True, slots=True)
class ProbeDue(StepInput):
    KIND = _I.PROBE_DUE


@dataclass(frozen=True, slots=True)
class ProbeIdle(StepInput):
    KIND = _I.PROBE_IDLE


@dataclass(frozen=True, slots=True)
class ProbeLost(StepInput):
    KIND = _I.PROBE_LOST


@dataclass(frozen=True, slots=True)
class CertificateReceived(StepInput):
    KIND = _I.CERTIFICATE
    msg: Certificate


@dataclass(frozen=True, slots=True)
class CertificateRefused(StepInput):
    KIND = _I.CERTIFICATE_REFUSED
    msg: Certificate
    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Offer(StepInput):
    KIND = _I.OFFER
    certificate: bytes


@dataclass(frozen=True, slots=True)
class OfferAccepted(StepInput):
    KIND = _I.OFFER_ACCEPTED
    msg: CertificateAck


@dataclass(frozen=True, slots=True)
class OfferRefused(StepInput):
    KIND = _I.OFFER_REFUSED
    msg: CertificateAck


_M = MessageType
#: The input a received message becomes, by type (OPEN: by the guards in ``_classify``).
INPUT_OF: dict[MessageType, type[KeepaliveReceived | SyncReceived | SummaryReceived
                                  | ErrorReceived | NotifyReceived | EchoReplyReceived]] = {
    _M.KEEPALIVE: KeepaliveReceived, _M.ECHO_REPLY: EchoReplyReceived,
    _M.UPDATE: SyncReceived, _M.DIGEST: SyncReceived,
    _M.SYNC_REQUEST: SyncReceived, _M.SYNC_ACK: SyncReceived, _M.DIGEST_REQUEST: SyncReceived,
    _M.SUMMARY: SummaryReceived, _M.ERROR: ErrorReceived, _M.NOTIFY: NotifyReceived,
}
