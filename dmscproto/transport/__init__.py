"""DMSC transports (draft-dmsc-protocol-00, Section 9).

:mod:`.quic` (9.1, mutual TLS 1.3 from :mod:`.tls`), :mod:`.dtls` (9.2) and lab
:mod:`.udp` (9.4), the latter two over the datagram reliability of :mod:`.datagram`
(9.3).  All share :class:`~.peer.PeerInfo`, :class:`~.errors.TransportError` and the
key log of :mod:`.keylog`; this package exports the QUIC API, the default transport.
"""

from .errors import TransportError
from .quic import (
    ConnectionClosed,
    ConnectionPool,
    DmscConnection,
    Handler,
    PeerInfo,
    QuicServer,
    connect,
    serve,
)
from .tls import TlsIdentity

__all__ = ["ConnectionClosed", "ConnectionPool", "DmscConnection", "Handler", "PeerInfo",
           "QuicServer", "TlsIdentity", "TransportError", "connect", "serve"]
