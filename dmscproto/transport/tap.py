"""Where a transport records the datagrams it sends and receives (captures, draft-dmsc-
protocol-00, Section 9): any object with ``write_udp``, such as
:class:`dmscproto.analysis.pcap.PcapWriter`, which the runtime passes in.  A transport
knows only this Protocol, not the capture format."""

from __future__ import annotations

from typing import Protocol

Address = tuple[str, int]


class DatagramTap(Protocol):
    """Sees every UDP datagram of one socket, as sent or received."""

    def write_udp(self, src: Address, dst: Address, payload: bytes, timestamp: float) -> None:
        ...
