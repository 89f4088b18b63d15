"""Minimal pcap (libpcap format, LINKTYPE_IPV4) writing and reading with synthetic
IPv4/UDP headers, so transports can record captures without root or tcpdump."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_IPV4 = 228
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class UdpPacket:
    """One UDP datagram read back from a capture."""

    time: float
    src: Address
    dst: Address
    payload: bytes


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PcapWriter:
    """Appends UDP datagrams to a pcap file, each wrapped in IPv4/UDP headers."""

    def __init__(self, path: str | Path) -> None:
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(_GLOBAL.pack(PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_IPV4))
        self._ident = 0

    def write_udp(self, src: Address, dst: Address, payload: bytes, timestamp: float) -> None:
        udp = _UDP.pack(src[1], dst[1], 8 + len(payload), 0) + payload
        self._ident = (self._ident + 1) & 0xFFFF
        hdr = _IPV4.pack(0x45, 0, 20 + len(udp), self._ident, 0x4000, 64, 17, 0,
                         ipaddress.IPv4Address(src[0]).packed,
                         ipaddress.IPv4Address(dst[0]).packed)
        hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
        packet = hdr + udp
        sec = int(timestamp)
        usec = round((timestamp - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self._file.write(_RECORD.pack(sec, usec, len(packet), len(packet)) + packet)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_udp(path: str | Path) -> Iterator[UdpPacket]:
    """Yield the IPv4/UDP datagrams of a pcap file (LINKTYPE_IPV4, RAW or Ethernet)."""
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16: offset + 16 + caplen]
        offset += 16 + caplen
        ip = frame[14:] if linktype == 1 else frame
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, ulen, _ = _UDP.unpack_from(ip, ihl)
        src = str(ipaddress.IPv4Address(ip[12:16]))
        dst = str(ipaddress.IPv4Address(ip[16:20]))
        yield UdpPacket(sec + frac / (1e9 if nano else 1e6), (src, sport), (dst, dport),
                        ip[ihl + 8: ihl + ulen])
