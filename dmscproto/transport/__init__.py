"""DMSC transports (draft-dmsc-protocol-00, Section 9): QUIC with mutual TLS 1.3."""

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
