"""The one shape every DMSC transport offers (draft-dmsc-protocol-00, Section 9): QUIC's
:class:`~.quic.DmscConnection` and the datagram transports'
:class:`~.datagram.DatagramConnection` are :class:`Connection`\\ s, their listeners
:class:`Listener`\\ s, and a request handler sees the peer as a :class:`Peer` (a
:class:`~.peer.PeerInfo` of the connection).  The runtime and the agent SDK use only this
(:mod:`dmscproto.host.transports` picks a transport by name)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from cryptography import x509

from ..codec.messages import Message
from ..security.ca import Identity
from .errors import TransportError


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

    async def request(self, msg: Message, timeout: float | None = ...) -> Message: ...

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
