"""The transports a gateway or an agent can run on (draft Section 9), behind one shape.

QUIC (:mod:`dmscproto.transport.quic`, Section 9.1) and DTLS 1.2
(:mod:`dmscproto.transport.dtls`, Section 9.2) offer the same asyncio API: ``serve(host,
port, tls, handler, pcap=, keylog=)`` returns a listener with ``address`` and
``close()``; ``connect(host, port, tls, server_name=, expect_domain=, handler=, pcap=,
keylog=)`` returns an authenticated connection with ``request``, ``send``, ``close``,
``closed``, ``wait_closed`` and ``peer``; handlers get ``(message, peer)`` where
``peer.connection`` is the connection.  The runtime only uses that shape, so a transport
is picked by name.

``udp`` is lab mode (:mod:`dmscproto.transport.udp`, Section 9.4): cleartext, no
authentication, peers without identity.  Its ``serve`` and ``connect`` refuse to run
unless the caller passes ``lab=True`` itself; the TLS identity and key log are unused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..codec.registry import limit
from ..errors import require_extra
from ..transport import quic, udp
from ..transport.contract import Connection, Handler, Listener, Peer
from ..transport.tap import DatagramTap
from ..transport.tls import TlsIdentity

__all__ = ["TRANSPORTS", "Connection", "Handler", "Listener", "Peer", "Transport",
           "transport_named"]


@dataclass(frozen=True)
class Transport:
    """A transport by name, with its ``serve`` and ``connect`` (each transport module's,
    called with what it takes)."""

    name: str
    #: Whether a server needs an ECDSA P-256 certificate (DTLS with OpenSSL).
    server_needs_p256: bool = False
    #: Cleartext lab mode (Section 9.4): only with ``lab=True`` from the caller.
    lab: bool = False
    #: What it needs beyond a plain install: (``dmscproto[EXTRA]``, a module of it, its
    #: PyPI package).
    extra: tuple[str, str, str] | None = None

    def _require(self) -> None:
        if self.extra is not None:
            extra, module, package = self.extra
            require_extra(module, extra, f"the {self.name} transport", package)

    async def serve(self, host: str, port: int, tls: TlsIdentity, handler: Handler, *,
                    pcap: DatagramTap | None = None,
                    keylog: str | Path | TextIO | None = None, lab: bool = False,
                    limits: Callable[[str], float] = limit) -> Listener:
        """Listen; ``limits(name)`` gives the resource limits of Section 10.7 (QUIC's
        handshake and connection limits)."""
        self._require()
        if self.name == "udp":
            return await udp.serve(host, port, handler, lab=lab, pcap=pcap)
        if self.name == "dtls":
            from ..transport import dtls  # the optional extra, checked above
            return await dtls.serve(host, port, tls, handler, pcap=pcap, keylog=keylog)
        return await quic.serve(host, port, tls, handler, pcap=pcap, keylog=keylog,
                                limits=quic.QuicLimits.of(limits))

    async def connect(self, host: str, port: int, tls: TlsIdentity, *,
                      server_name: str | None = None, expect_domain: str | None = None,
                      handler: Handler | None = None, pcap: DatagramTap | None = None,
                      keylog: str | Path | TextIO | None = None, lab: bool = False
                      ) -> Connection:
        self._require()
        if self.name == "udp":
            return await udp.connect(host, port, lab=lab, handler=handler, pcap=pcap)
        if self.name == "dtls":
            from ..transport import dtls  # the optional extra, checked above
            return await dtls.connect(host, port, tls, server_name=server_name,
                                      expect_domain=expect_domain, handler=handler,
                                      pcap=pcap, keylog=keylog)
        return await quic.connect(host, port, tls, server_name=server_name,
                                  expect_domain=expect_domain, handler=handler, pcap=pcap,
                                  keylog=keylog)


TRANSPORTS: dict[str, Transport] = {
    "quic": Transport("quic"),
    "dtls": Transport("dtls", server_needs_p256=True,
                      extra=("dtls", "OpenSSL.SSL", "pyOpenSSL")),
    "udp": Transport("udp", lab=True),
}


def transport_named(name: str) -> Transport:
    """The transport called ``name`` (``quic``, ``dtls`` or ``udp``); ValueError
    otherwise."""
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise ValueError(f"unknown transport {name!r} (one of {', '.join(TRANSPORTS)})") \
            from None
