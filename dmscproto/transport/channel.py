"""The sans-I/O security layer below the datagram reliability (draft-dmsc-protocol-00,
Sections 9.2, 9.4): DTLS (:mod:`.dtls`) or lab mode's cleartext (:mod:`.udp`), driven by
:class:`~.datagram.DatagramNode`."""


from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from ..codec.registry import (
    ErrorCode,
)
from ..security.ca import Identity
from .reliability_events import Address

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class PeerConnected:
    """A peer's association is up, with its verified identity and certificate (None in
    lab mode)."""

    addr: Address
    identity: Identity | None = None
    certificate: x509.Certificate | None = None


@dataclass(frozen=True, slots=True)
class PayloadReceived:
    """One datagram payload (one PDU) from an associated peer."""

    addr: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """A peer's association ended (close alert, handshake failure, idle timeout)."""

    addr: Address
    reason: str
    code: ErrorCode = ErrorCode.TARGET_UNREACHABLE


ChannelEvent = PeerConnected | PayloadReceived | PeerClosed


class Channel(Protocol):
    """The sans-I/O security layer a :class:`DatagramNode` drives (DTLS or lab cleartext)."""

    max_pdu: int

    def connect(self, addr: Address, now: float) -> None: ...
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...
    def send(self, addr: Address, payload: bytes) -> None: ...
    def close(self, addr: Address) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def next_event(self) -> ChannelEvent | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
