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

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO, cast

from cryptography import x509

from ..analysis.pcap import PcapWriter
from ..codec.messages import Message
from ..codec.registry import limit
from ..errors import require_extra
from ..security.ca import Identity
from ..transport.errors import TransportError
from ..transport.tls import TlsIdentity


class Connection(Protocol):
    """An association, as every transport provides it (authenticated but in lab mode)."""

    @property
    def peer(self) -> Peer: ...

    @property
    def closed(self) -> bool: ...

    @property
    def max_pdu(self) -> int: ...

    @property
    def close_error(self) -> TransportError | None: ...

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
    def address(self) -> Any: ...

    @property
    def connection(self) -> Connection: ...


class Listener(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...

    def close(self) -> None: ...


Handler = Callable[[Message, Peer], Awaitable[Message | None]]


@dataclass(frozen=True)
class Transport:
    """A transport by name, with its ``serve`` and ``connect``."""

    name: str
    module: str
    #: Whether a server needs an ECDSA P-256 certificate (DTLS with OpenSSL).
    server_needs_p256: bool = False
    #: Cleartext lab mode (Section 9.4): only with ``lab=True`` from the caller.
    lab: bool = False
    #: What it needs beyond a plain install: (``dmscproto[EXTRA]``, a module of it, its
    #: PyPI package).
    extra: tuple[str, str, str] | None = None

    def _api(self) -> Any:
        if self.extra is not None:
            extra, module, package = self.extra
            require_extra(module, extra, f"the {self.name} transport", package)
        return importlib.import_module(self.module)

    async def serve(self, host: str, port: int, tls: TlsIdentity, handler: Handler, *,
                    pcap: PcapWriter | None = None,
                    keylog: str | Path | TextIO | None = None, lab: bool = False,
                    limits: Callable[[str], float] = limit) -> Listener:
        """Listen; ``limits(name)`` gives the resource limits of Section 10.7 (QUIC's
        handshake and connection limits)."""
        if self.lab:
            return cast(Listener, await self._api().serve(host, port, handler, lab=lab,
                                                          pcap=pcap))
        api = self._api()
        extra = {"limits": api.QuicLimits.of(limits)} if self.name == "quic" else {}
        return cast(Listener, await api.serve(host, port, tls, handler, pcap=pcap,
                                              keylog=keylog, **extra))

    async def connect(self, host: str, port: int, tls: TlsIdentity, *,
                      server_name: str | None = None, expect_domain: str | None = None,
                      handler: Handler | None = None, pcap: PcapWriter | None = None,
                      keylog: str | Path | TextIO | None = None, lab: bool = False
                      ) -> Connection:
        if self.lab:
            return cast(Connection, await self._api().connect(host, port, lab=lab,
                                                              handler=handler, pcap=pcap))
        return cast(Connection, await self._api().connect(
            host, port, tls, server_name=server_name, expect_domain=expect_domain,
            handler=handler, pcap=pcap, keylog=keylog))


TRANSPORTS: dict[str, Transport] = {
    "quic": Transport("quic", "dmscproto.transport.quic"),
    "dtls": Transport("dtls", "dmscproto.transport.dtls", server_needs_p256=True,
                      extra=("dtls", "OpenSSL.SSL", "pyOpenSSL")),
    "udp": Transport("udp", "dmscproto.transport.udp", lab=True),
}


def transport_named(name: str) -> Transport:
    """The transport called ``name`` (``quic``, ``dtls`` or ``udp``); ValueError
    otherwise."""
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise ValueError(f"unknown transport {name!r} (one of {', '.join(TRANSPORTS)})") \
            from None
