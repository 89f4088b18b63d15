"""The demo's packet capture (``dmsc demo --capture DIR``): one pcap for every endpoint
of the process, its TLS key log, and the commands that show them."""

from __future__ import annotations

from pathlib import Path

from ..analysis.pcap import PcapWriter
from .display import Display

PCAP_NAME = "dmsc-demo.pcap"
KEYLOG_NAME = "keys.log"
#: The Wireshark dissector generated from the codec registry (tools/gen_wireshark.py).
LUA = Path(__file__).resolve().parents[2] / "tools" / "wireshark" / "dmsc.lua"


class OncePcap(PcapWriter):
    """A pcap shared by every endpoint of one process: each datagram is offered twice
    (by its sender and by its receiver) and written once."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._seen: set[tuple[object, object, bytes]] = set()

    def write_udp(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes,
                  timestamp: float) -> None:
        key = (src, dst, payload)
        if key in self._seen:
            self._seen.discard(key)
            return
        self._seen.add(key)
        super().write_udp(src, dst, payload, timestamp)


def show_capture(display: Display, capture: Path, *, lab: bool) -> None:
    """Where the capture is and the commands that show it: with the key log (QUIC,
    DTLS), or in clear (lab mode: the dissector's UDP heuristic finds DMSC on the demo's
    ephemeral ports)."""
    pcap, keys = capture / PCAP_NAME, capture / KEYLOG_NAME
    lua = LUA if LUA.is_file() else Path("tools/wireshark/dmsc.lua")
    if not lab:
        display.line(f"\nCapture: {pcap}\nKey log: {keys}\nShow it (Wireshark's tshark, "
                     "with the DMSC dissector):")
        display.line(f"  tshark -r {pcap} -o tls.keylog_file:{keys} -X lua_script:{lua}")
        return
    display.line(f"\nCapture: {pcap} (lab mode: cleartext, no key log)\nShow it:\n"
                 f"  dmsc decode --pcap {pcap} --any-port\n"
                 f"  tshark -r {pcap} -X lua_script:{lua}")
