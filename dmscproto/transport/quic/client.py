"""The client side of DMSC over QUIC (draft-dmsc-protocol-00, Section 9.1): connecting
to a gateway, and a pool of one reused connection per peer address."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TextIO

from ...codec.messages import Message
from ...codec.registry import QUIC_CLOSE_WAIT, QUIC_CONNECT_TIMEOUT, ErrorCode
from ..errors import TransportError
from ..keylog import KeyLog
from ..tap import DatagramTap
from ..tls import DmscQuicConnection, TlsIdentity
from .errors import ConnectionClosed
from .link import IDLE_TIMEOUT, KEEPALIVE_INTERVAL
from .sockets import udp_socket
from .streams import DmscConnection, Handler

#: How long connect() waits for the handshake and its confirmation.
CONNECT_TIMEOUT = QUIC_CONNECT_TIMEOUT


async def connect(host: str, port: int, tls: TlsIdentity, *, server_name: str | None = None,
                  expect_domain: str | None = None, handler: Handler | None = None,
                  pcap: DatagramTap | None = None, keylog: str | Path | TextIO | None = None,
                  timeout: float = CONNECT_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                  keepalive: float | None = KEEPALIVE_INTERVAL) -> DmscConnection:
    """Open a DMSC connection to a gateway and wait until both ends are authenticated.

    ``server_name`` is sent as SNI and checked against the server certificate's DNS
    names; ``expect_domain`` requires the server's identity to be in that domain.
    ``handler`` serves requests the server sends over this connection; ``keepalive``
    (seconds, None for none) keeps an idle connection open by sending PINGs."""
    loop = asyncio.get_running_loop()
    sock = await udp_socket(host, port, bind=False)
    addr = sock.getpeername()
    key_log = KeyLog(keylog)
    quic = DmscQuicConnection(
        configuration=tls.configuration(is_client=True, server_name=server_name,
                                        keylog=key_log.file, idle_timeout=idle_timeout),
        verifier=tls.verifier(server_name=server_name, expect_domain=expect_domain))
    transport, conn = await loop.create_datagram_endpoint(
        lambda: DmscConnection(quic, handler=handler, pcap=pcap, owns_transport=True,
                               on_close=lambda _c: key_log.close(), keepalive=keepalive,
                               sock=sock),
        sock=sock)
    try:
        conn.connect(addr)
        await asyncio.wait_for(conn.wait_established(), timeout)
    except BaseException as exc:
        conn.close(ErrorCode.CEASE)
        transport.close()
        key_log.close()
        where = f"{host}:{port}"
        if isinstance(exc, TimeoutError):
            raise TransportError(ErrorCode.TARGET_UNREACHABLE,
                                 f"no QUIC handshake with {where} within {timeout:g} s "
                                 "(is a DMSC gateway listening there?)") from None
        if isinstance(exc, TransportError) and not isinstance(exc, ConnectionClosed):
            raise TransportError(exc.code, f"{where}: {exc.reason}") from None
        raise
    return conn


class ConnectionPool:
    """One reused connection per peer address (Section 9.1), opened on first use."""

    def __init__(self, tls: TlsIdentity, *, handler: Handler | None = None,
                 pcap: DatagramTap | None = None, keylog: str | Path | TextIO | None = None,
                 **connect_options: Any) -> None:
        self.tls = tls
        self._handler = handler
        self._pcap = pcap
        self._keylog = KeyLog(keylog)
        self._options = connect_options
        self._conns: dict[tuple[str, int], asyncio.Task[DmscConnection]] = {}

    async def get(self, host: str, port: int, **options: Any) -> DmscConnection:
        key = (host, port)
        task = self._conns.get(key)
        if task is not None and task.done() and (task.exception() or task.result().closed):
            task = None
        if task is None:
            task = asyncio.ensure_future(connect(
                host, port, self.tls, handler=self._handler, pcap=self._pcap,
                keylog=self._keylog.file, **{**self._options, **options}))
            self._conns[key] = task
        return await asyncio.shield(task)

    async def request(self, host: str, port: int, msg: Message,
                      timeout: float | None = None) -> Message:
        """:meth:`DmscConnection.request` on the connection to ``host``:``port``
        (``timeout`` by default ``msg``'s transaction time, Section 9.3)."""
        return await (await self.get(host, port)).request(msg, timeout)

    async def close(self) -> None:
        """Close every connection and wait (briefly) for them to finish closing."""
        conns = [t.result() for t in self._conns.values()
                 if t.done() and not t.cancelled() and t.exception() is None]
        for task in self._conns.values():
            task.cancel()
        self._conns.clear()
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([asyncio.ensure_future(c.wait_closed()) for c in conns],
                               timeout=QUIC_CLOSE_WAIT)
        self._keylog.close()

