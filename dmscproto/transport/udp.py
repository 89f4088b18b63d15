"""Lab mode: DMSC over cleartext UDP (draft-dmsc-protocol-00, Section 9.4).

One PDU per datagram on UDP port ``UDP_PORT`` (or any port), with the datagram
reliability of Section 9.3 and nothing else: no authentication, no confidentiality, no
cookie exchange.  It exists for captures that any tool can read (the pcap fixtures, the
scapy layer, the Wireshark dissector) and for conformance tests of the datagram rules.

It is never a default: :func:`serve` and :func:`connect` refuse to run unless called with
``lab=True``, and each logs a WARNING when it starts.  Peers have no identity
(``PeerInfo.identity`` is None): a gateway grants nothing on the strength of a lab
association itself; a lab gateway (``gateway.lab = true``) binds an association to what
the protocol proves instead, a REGISTER's signed record or an OPEN
(:mod:`dmscproto.runtime.lab`, which lists what lab mode does not protect).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque

from ..codec.registry import DEFAULT_MAX_DATAGRAM, UDP_PORT, limit, timer
from .channel import ChannelEvent, PayloadReceived, PeerClosed, PeerConnected
from .datagram import DatagramConnection, DatagramNode, Handler, open_client, start_node
from .reliability import PduTooLarge, Reliability
from .reliability_events import Address
from .tap import DatagramTap

log = logging.getLogger(__name__)

__all__ = ["UDP_PORT", "CleartextEndpoint", "connect", "serve"]


class CleartextEndpoint:
    """Sans-I/O lab channel: a datagram payload is a PDU as is.  A peer is associated by
    its first datagram (server) or by :meth:`connect` (client) and forgotten after
    ``idle_timeout`` without traffic; at most ``max_peers`` are associated at once, the
    least recently heard is forgotten to make room (LAB_MAX_PEERS, Section 10.7: every
    source address of a datagram would otherwise hold state for an hour)."""

    def __init__(self, *, max_datagram: int = DEFAULT_MAX_DATAGRAM,
                 idle_timeout: float = timer("DEFAULT_LEASE"),
                 max_peers: int = int(limit("LAB_MAX_PEERS"))) -> None:
        self.max_pdu = max_datagram
        self.idle_timeout = idle_timeout
        self.max_peers = max_peers
        #: Last time each associated peer was heard from (or connected to), least
        #: recently heard first.
        self.peers: OrderedDict[Address, float] = OrderedDict()
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[ChannelEvent] = deque()

    def _heard(self, addr: Address, now: float) -> None:
        if addr in self.peers:
            self.peers.move_to_end(addr)
        else:
            while len(self.peers) >= self.max_peers:
                old, _ = self.peers.popitem(last=False)
                self._events.append(PeerClosed(old, "too many lab associations"))
            self._events.append(PeerConnected(addr))
        self.peers[addr] = now

    def connect(self, addr: Address, now: float) -> None:
        self._heard(addr, now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._heard(addr, now)
        self._events.append(PayloadReceived(addr, data))

    def send(self, addr: Address, payload: bytes) -> None:
        if len(payload) > self.max_pdu:
            raise PduTooLarge(f"PDU of {len(payload)} octets exceeds {self.max_pdu}")
        self._out.append((payload, addr))

    def close(self, addr: Address) -> None:
        if self.peers.pop(addr, None) is not None:
            self._events.append(PeerClosed(addr, "closed"))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> ChannelEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return next(iter(self.peers.values())) + self.idle_timeout if self.peers else None

    def handle_timer(self, now: float) -> None:
        while self.peers:
            addr, seen = next(iter(self.peers.items()))
            if now < seen + self.idle_timeout:
                break
            del self.peers[addr]
            self._events.append(PeerClosed(addr, "idle"))


def _require_lab(lab: bool, what: str) -> None:
    if lab is not True:
        raise ValueError(f"cleartext UDP {what} refused: lab mode must be asked for "
                         "explicitly (lab=True); use QUIC or DTLS (Section 9.4)")


async def serve(host: str, port: int, handler: Handler, *, lab: bool,
                pcap: DatagramTap | None = None, max_datagram: int = DEFAULT_MAX_DATAGRAM,
                reliability: Reliability | None = None) -> DatagramNode:
    """Listen for DMSC over cleartext UDP (lab mode; ``lab=True`` is required).  The
    registered port is :data:`UDP_PORT`; 0 picks an ephemeral one."""
    _require_lab(lab, "server")
    node = await start_node(CleartextEndpoint(max_datagram=max_datagram), "udp", handler,
                            local_addr=(host, port), pcap=pcap,
                            reliability=reliability)
    log.warning("LAB MODE: serving DMSC over CLEARTEXT UDP on %s:%d - no authentication, "
                "no confidentiality; for captures and tests only (Section 9.4)", *node.address)
    return node


async def connect(host: str, port: int, *, lab: bool, handler: Handler | None = None,
                  pcap: DatagramTap | None = None, timeout: float = timer("REQUEST_TIMEOUT"),
                  max_datagram: int = DEFAULT_MAX_DATAGRAM,
                  reliability: Reliability | None = None) -> DatagramConnection:
    """Talk DMSC over cleartext UDP to ``host``:``port`` (lab mode; ``lab=True`` is
    required)."""
    _require_lab(lab, "client")
    log.warning("LAB MODE: sending DMSC over CLEARTEXT UDP to %s:%d - no authentication, "
                "no confidentiality; for captures and tests only (Section 9.4)", host, port)
    return await open_client(CleartextEndpoint(max_datagram=max_datagram), "udp", handler,
                             host, port, timeout, pcap=pcap, reliability=reliability)
