"""The certificate exchange of a peer session (draft-dmsc-protocol-00, Section 6.10): the
actions of :class:`~.peering.PeerSession`'s certificate rows, and the certificates the
session offered the peer.

Received: a CERTIFICATE on an established session, or on one in OPEN_CONFIRM (the
peer, established already, may pass a certificate before its KEEPALIVE arrives), is
checked by the port; an accepted one is kept for the session and answered
CERTIFICATE_ACK SUCCESS with its thumbprint, a refused one answered CERTIFICATE_ACK
with the refusal, the session staying up either way.

Offered: before a relayed ROUTE_REQUEST whose origin assertion names a certificate the
peer does not hold from the handshake goes out on the session, the relay offers that
certificate (:meth:`SessionCertificateActions.offer`): the session sends CERTIFICATE
once, without waiting for its answer, so that the first request does not cost a
CERTIFICATE_UNKNOWN round trip.  The answer ends the offer's transaction; a refusal
forgets the offer (a request that needs the certificate then passes it itself, as
Section 6.10 says).  At most SESSION_MAX_CERTIFICATES offers are remembered, the
oldest forgotten first, as the receiver keeps at most that many.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ..codec.messages import Certificate, CertificateAck, Message
from ..codec.registry import ErrorCode, limit
from .certificates import thumbprint
from .machine import Handle, Outbox, TransactionIds
from .peering_inputs import (
    CertificateReceived,
    CertificateRefused,
    Offer,
    OfferAccepted,
    OfferRefused,
)
from .ports import PeeringPort
from .typed import StepInput


class SessionCertificateActions:
    """The certificate part of :class:`~.peering.PeerSession` (its base, which sets the
    attributes declared here; module doc)."""

    handle: Handle
    port: PeeringPort
    outbox: Outbox
    hold_time: int
    _txids: TransactionIds
    _restart_hold_timer: Callable[[float, int], None]
    _send: Callable[[Message], None]
    #: How many offers are remembered (the receiver keeps as many certificates).
    max_offers = int(limit("SESSION_MAX_CERTIFICATES"))

    def _init_offers(self) -> None:
        #: Offered certificates by thumbprint, with the transaction id of the
        #: CERTIFICATE still unanswered (None once answered SUCCESS).
        self._offers: OrderedDict[bytes, int | None] = OrderedDict()

    def offered(self, der: bytes) -> bool:
        """Whether ``der`` was offered on the session (and not refused)."""
        return thumbprint(der) in self._offers

    def awaits(self, msg: Message) -> bool:
        """Whether ``msg`` is the CERTIFICATE_ACK of an offer of the session."""
        return isinstance(msg, CertificateAck) \
            and msg.transaction_id in self._offers.values()

    def _classify_ack(self, msg: CertificateAck) -> StepInput:
        key = next(k for k, txid in self._offers.items() if txid == msg.transaction_id)
        if msg.status is ErrorCode.SUCCESS and msg.thumbprint == key:
            return OfferAccepted(msg)
        return OfferRefused(msg)

    # --- actions ------------------------------------------------------------------------------
    def _keep_certificate(self, now: float, inp: CertificateReceived) -> None:
        self._restart_hold_timer(now, self.hold_time)
        key = self.port.keep_certificate(self.handle, inp.msg.certificate)
        self._send(CertificateAck(transaction_id=inp.msg.transaction_id,
                                  status=ErrorCode.SUCCESS, thumbprint=key))

    def _refuse_certificate(self, now: float, inp: CertificateRefused) -> None:
        self._restart_hold_timer(now, self.hold_time)
        r = inp.refusal
        self._send(CertificateAck(transaction_id=inp.msg.transaction_id, status=r.code,
                                  diagnostic=r.diagnostic, retry_after=r.retry_after))

    def _send_certificate(self, now: float, inp: Offer) -> None:
        txid = self._txids()
        self._offers[thumbprint(inp.certificate)] = txid
        while len(self._offers) > self.max_offers:
            self._offers.popitem(last=False)
        self._send(Certificate(transaction_id=txid, certificate=inp.certificate))

    def _offer_held(self, now: float, inp: OfferAccepted) -> None:
        self._restart_hold_timer(now, self.hold_time)
        assert inp.msg.thumbprint is not None
        self._offers[inp.msg.thumbprint] = None

    def _forget_offer(self, now: float, inp: OfferRefused) -> None:
        self._restart_hold_timer(now, self.hold_time)
        for key in [k for k, txid in self._offers.items()
                    if txid == inp.msg.transaction_id]:
            del self._offers[key]
