"""Who is at the other end of a DMSC connection, as a request handler sees it
(draft-dmsc-protocol-00, Section 9), for every transport."""

from __future__ import annotations

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
