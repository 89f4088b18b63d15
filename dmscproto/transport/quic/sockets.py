"""The UDP sockets of DMSC over QUIC (draft-dmsc-protocol-00, Section 9.1): opened
non-blocking, and drained of every datagram already waiting in one event-loop turn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from aioquic.quic.connection import NetworkAddress

from ..driver import turn_budget

#: Most datagrams read from a socket in one event-loop turn (asyncio reads one).
DRAIN = 64
#: Datagrams read before the loop's turn budget is asked whether more fit in this
#: turn (:class:`~..driver.TurnBudget`): a few are read at once.
_FREE = 3
#: Largest UDP payload read.
_MAX_DATAGRAM = 65535


def drain(sock: socket.socket, received: Callable[[bytes, NetworkAddress], None],
          error: Callable[[Exception], None]) -> None:
    """Hand ``received`` the datagrams already waiting on ``sock`` (non-blocking), up to
    DRAIN and while the loop's turn budget lasts: one event-loop turn serves them and
    their answers leave in one transmit pass (asyncio's datagram transport reads one
    datagram per turn); the rest wait for the next turn."""
    budget = turn_budget(asyncio.get_running_loop())
    for n in range(DRAIN - 1):
        if n >= _FREE and not budget.fits(0.0):
            return
        try:
            data, addr = sock.recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # an ICMP error on a connected socket, or closed
            error(exc)
            return
        received(data, addr)


async def udp_socket(host: str, port: int, *, bind: bool) -> socket.socket:
    """A non-blocking UDP socket bound to (``bind``) or connected to ``host``:``port``,
    the first address of ``host`` that works (as ``create_datagram_endpoint`` does); the
    caller keeps it to drain it (:func:`drain`)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE if bind else 0)
    error: OSError = OSError(f"no address for {host}:{port}")
    for family, kind, proto, _name, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if bind:
                sock.bind(addr)
            else:
                sock.connect(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error
