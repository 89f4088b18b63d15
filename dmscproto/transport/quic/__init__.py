"""DMSC over QUIC (draft-dmsc-protocol-00, Section 9.1): asyncio glue around aioquic.

* ALPN ``dmsc/1``; mutual TLS 1.3 with domain certificates (:mod:`..tls`).
* One bidirectional stream per transaction (:mod:`.streams`): the requester opens a new
  stream and writes the request PDU and FIN, the responder answers on the same stream
  with the response PDU and FIN (or a bare FIN when it has no answer).  Either end may
  open streams: a gateway sends a ROUTE-REQUEST to an agent over the connection the
  agent opened.
* A malformed PDU on a stream is answered with an ERROR carrying the decoding error
  code (Section 4.4); the connection keeps serving.
* QUIC application error codes (STOP_SENDING, CONNECTION_CLOSE) are DMSC error codes
  (:mod:`.errors`).
* Every datagram sent and received can be written to a pcap file (synthetic IPv4/UDP
  headers, no root needed), and the TLS secrets to an SSLKEYLOGFILE-format key log.

The connection (:mod:`.link`: handshake confirmation, keepalive, closing; its socket
drained by :mod:`.sockets`, its timer and transmits run by :mod:`..driver`), the
transactions on it (:mod:`.streams`), the listening endpoint (:mod:`.server`) and the
client side (:mod:`.client`: connect, connection pool).
"""

from .client import CONNECT_TIMEOUT, ConnectionPool, connect
from .errors import ConnectionClosed
from .link import IDLE_TIMEOUT, KEEPALIVE_INTERVAL
from .server import QuicLimits, QuicServer, QuicServerCounters, serve
from .streams import REQUEST_TIMEOUT, DmscConnection, Handler, PeerInfo

__all__ = ["CONNECT_TIMEOUT", "IDLE_TIMEOUT", "KEEPALIVE_INTERVAL", "REQUEST_TIMEOUT",
           "ConnectionClosed", "ConnectionPool", "DmscConnection", "Handler", "PeerInfo",
           "QuicLimits", "QuicServer", "QuicServerCounters", "connect", "serve"]
