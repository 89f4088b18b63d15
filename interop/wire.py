"""What the runner checks: the DMSC messages of a case's capture, decoded with this
project's codec (interop/README.md, "How traffic is checked").

The capture is the runner's own: every datagram passes a recording relay in front of
each gateway listener (:class:`dmscproto.sandbox.relay.Relay` with a tap), written as it
left its sender.  Lab UDP datagrams are DMSC PDUs, one per datagram (Section 9.3), and
are decoded directly.  QUIC and DTLS are decrypted by tshark with the key log the
endpoints wrote (``DMSC_KEYLOG``): the runner takes the decrypted QUIC stream data
(reassembled per stream and direction: one PDU each way per stream, Section 9.1) and
DTLS application data (one PDU per record, Section 9.2) from tshark's JSON and decodes
them itself; tshark's own DMSC dissector is not used.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmscproto.analysis.pcap import read_udp
from dmscproto.cli.decode import split_pdus
from dmscproto.codec import DecodeError, decode
from dmscproto.codec.messages import Message, Open

Address = tuple[str, int]
#: The Wireshark dissector generated from the codec registry (to look at a capture).
LUA = Path(__file__).resolve().parent.parent / "tools" / "wireshark" / "dmsc.lua"
#: tshark's time limit for one capture (seconds).
TSHARK_TIMEOUT = 60


class WireError(Exception):
    """The capture cannot be checked (no tshark for an encrypted one, tshark failed)."""


@dataclass(frozen=True)
class WireMessage:
    """One DMSC PDU seen on the wire.  ``listener`` names the gateway listener of its
    flow, ``up`` is true from the dialling side to that listener; ``stream`` tells flows
    (and QUIC streams) apart; ``msg`` is None when the PDU does not decode (``error``)."""

    time: float
    src: Address
    dst: Address
    listener: str
    up: bool
    stream: tuple[object, ...]
    data: bytes
    msg: Message | None = None
    error: DecodeError | None = None

    @property
    def type_name(self) -> str:
        return self.msg.TYPE.name if self.msg is not None else "MALFORMED"

    def line(self, start: float, dialler: str) -> str:
        """One line of ``trace.txt``; ``dialler`` names the other end of the flow."""
        src, dst = (dialler, self.listener) if self.up else (self.listener, dialler)
        what = (self.type_name if self.error is None
                else f"MALFORMED ({self.error.code.name}: {self.error})")
        status = getattr(self.msg, "status", None)
        return (f"{self.time - start:9.4f}  {src:>14} -> {dst:<14} "
                f"{what}{' ' + status.name if status is not None else ''} "
                f"txid={self.msg.transaction_id if self.msg else '-'}")


@dataclass
class Trace:
    """The decoded messages of one case, in time order, and what could not be read."""

    messages: list[WireMessage] = field(default_factory=list)
    datagrams: int = 0
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The messages, one a line; the far end of a flow that carries OPEN is the other
        gateway, of any other flow an agent (by its port)."""
        start = self.messages[0].time if self.messages else 0.0
        peers = {m.stream[0] for m in self.messages if isinstance(m.msg, Open)}
        others = {"gateway": "peer-gateway", "peer-gateway": "gateway"}

        def dialler(m: WireMessage) -> str:
            if m.stream[0] in peers:
                return others.get(m.listener, "gateway")
            return f"agent:{(m.src if m.up else m.dst)[1]}"
        return "\n".join([*(m.line(start, dialler(m)) for m in self.messages),
                          *self.notes]) + "\n"


def _message(time: float, src: Address, dst: Address, listeners: dict[int, str],
             stream: tuple[object, ...], data: bytes) -> WireMessage:
    up = dst[1] in listeners
    listener = listeners[dst[1] if up else src[1]]
    try:
        return WireMessage(time, src, dst, listener, up, stream, data, msg=decode(data))
    except DecodeError as exc:
        return WireMessage(time, src, dst, listener, up, stream, data, error=exc)


def read_trace(pcap: Path, keylog: Path | None, transport: str,
               listeners: dict[int, str]) -> Trace:
    """The DMSC messages of ``pcap``; ``listeners`` maps each gateway listener's port to
    its name."""
    if transport == "udp":
        trace = Trace()
        for pkt in read_udp(pcap):
            trace.datagrams += 1
            flow = pkt.src if pkt.dst[1] in listeners else pkt.dst
            trace.messages.append(_message(pkt.time, pkt.src, pkt.dst, listeners, (flow,),
                                           pkt.payload))
        return trace
    tshark = shutil.which("tshark")
    if tshark is None:
        raise WireError(f"tshark is needed to decrypt the {transport.upper()} capture "
                        "(install Wireshark's tshark)")
    base = [tshark, "-n", "-r", str(pcap)]
    if keylog is not None:
        base += ["-o", f"tls.keylog_file:{keylog}"]
    for port in listeners:
        base += ["-d", f"udp.port=={port},{transport}"]
    run = subprocess.run([*base, "-T", "json", "--no-duplicate-keys"], capture_output=True,
                         text=True, timeout=TSHARK_TIMEOUT, check=False)
    if run.returncode != 0:
        raise WireError(f"tshark failed: {run.stderr.strip()[-500:]}")
    packets = json.loads(run.stdout or "[]")
    trace = Trace(datagrams=len(packets))
    trace.notes.append("# decrypted with: " + shlex.join([*base, "-X", f"lua_script:{LUA}"]))
    if transport == "quic":
        trace.messages = list(_quic(packets, listeners))
    else:
        trace.messages = list(_dtls(packets, listeners))
    trace.messages.sort(key=lambda m: m.time)
    encrypted = sum(1 for p in packets if "data" not in p["_source"]["layers"]
                    and "quic" not in p["_source"]["layers"])
    if not trace.messages and trace.datagrams:
        trace.notes.append(f"no DMSC message decrypted from {trace.datagrams} datagrams "
                           f"({encrypted} not {transport.upper()}): is the key log complete?")
    return trace


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _addresses(layers: dict[str, Any]) -> tuple[float, Address, Address]:
    ip, udp = layers["ip"], layers["udp"]
    return (float(layers["frame"]["frame.time_epoch"]),
            (ip["ip.src"], int(udp["udp.srcport"])), (ip["ip.dst"], int(udp["udp.dstport"])))


def _dtls(packets: list[dict[str, Any]], listeners: dict[int, str]) -> Iterator[WireMessage]:
    for packet in packets:
        layers = packet["_source"]["layers"]
        if "data" not in layers:
            continue
        time, src, dst = _addresses(layers)
        flow = src if dst[1] in listeners else dst
        for data in _list(layers["data"]):
            for payload in _list(data.get("data.data")):
                yield _message(time, src, dst, listeners, (flow,), _hex(payload))


def _quic(packets: list[dict[str, Any]], listeners: dict[int, str]) -> Iterator[WireMessage]:
    """Reassemble each QUIC stream's data per direction; each is one DMSC PDU (or
    several back to back)."""
    streams: dict[tuple[object, ...], dict[int, bytes]] = {}
    seen: dict[tuple[object, ...], tuple[float, Address, Address]] = {}
    for packet in packets:
        layers = packet["_source"]["layers"]
        time, src, dst = _addresses(layers)
        for quic in _list(layers.get("quic")):
            info = quic.get("QUIC Connection information", {})
            conn = _list(info.get("quic.connection.number"))[:1]
            for frame in _list(quic.get("quic.frame")):
                if "quic.stream_data" not in frame:
                    continue
                offset = int(frame.get("quic.stream.offset", 0))
                key = (*conn, int(frame["quic.stream.stream_id"]), src)
                streams.setdefault(key, {})[offset] = _hex(frame["quic.stream_data"])
                seen.setdefault(key, (time, src, dst))  # first sent (QUIC may resend)
    for key, parts in streams.items():
        data = b""
        for offset in sorted(parts):
            data = data[:offset] + parts[offset]
        if not data:  # a bare FIN: the answer to a one-way message
            continue
        time, src, dst = seen[key]
        for piece in _pdus(data):
            yield _message(time, src, dst, listeners, key[:-1], piece)


def _pdus(data: bytes) -> list[bytes]:
    """A stream direction's PDUs: usually one; several back to back when they decode."""
    items = list(split_pdus(data))
    if len(items) > 1 and not any(isinstance(i.result, DecodeError) for i in items):
        return [data[i.offset:i.offset + i.length] for i in items]
    return [data]
