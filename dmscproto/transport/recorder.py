"""The capture tap of one UDP socket driven by a library that sends on it itself (aioquic,
:mod:`.quic`): every datagram sent and received goes to a :class:`~.tap.DatagramTap`
(draft-dmsc-protocol-00, Section 9).  The datagram transports record in their own node
(:mod:`.datagram`)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import cast

from aioquic.quic.connection import NetworkAddress

from .tap import DatagramTap


def _ipv4(addr: NetworkAddress) -> tuple[str, int] | None:
    host = str(addr[0]).removeprefix("::ffff:")
    try:
        return (host, int(addr[1])) if ipaddress.ip_address(host).version == 4 else None
    except ValueError:
        return None


class SocketRecorder:
    """Writes the datagrams of one UDP socket to a pcap (IPv4 only: the pcap format
    used has synthetic IPv4 headers; IPv6 datagrams are not recorded).  A socket bound
    to 0.0.0.0 is recorded as 127.0.0.1 when talking to a loopback peer."""

    def __init__(self, pcap: DatagramTap, transport: asyncio.DatagramTransport) -> None:
        self._pcap = pcap
        self._local = _ipv4(transport.get_extra_info("sockname"))
        self._transport = transport

    def sendto(self, data: bytes, addr: NetworkAddress | None = None) -> None:
        self._transport.sendto(data, addr)
        peer = _ipv4(addr or self._transport.get_extra_info("peername"))
        self._record(data, self._local_for(peer), peer)

    def received(self, data: bytes, addr: NetworkAddress) -> None:
        peer = _ipv4(addr)
        self._record(data, peer, self._local_for(peer))

    def _local_for(self, peer: tuple[str, int] | None) -> tuple[str, int] | None:
        if (self._local is not None and self._local[0] == "0.0.0.0" and peer is not None
                and ipaddress.ip_address(peer[0]).is_loopback):
            return ("127.0.0.1", self._local[1])
        return self._local

    def _record(self, data: bytes, src: tuple[str, int] | None,
                dst: tuple[str, int] | None) -> None:
        if src is not None and dst is not None:
            self._pcap.write_udp(src, dst, data, time.time())


def sender_for(transport: asyncio.DatagramTransport,
            recorder: SocketRecorder | None) -> asyncio.DatagramTransport:
    return cast(asyncio.DatagramTransport, recorder) if recorder else transport
