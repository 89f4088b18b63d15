"""What the reference captures are (tools/gen_fixtures.py): the lab flows, the QUIC
captures, and the ``pcap-fixtures/README.md`` written from them (each datagram decoded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dmscproto.codec import (
    DecodeError,
    ErrorCode,
    Message,
    MessageType,
    decode,
)
from dmscproto.codec.registry import (
    HEADER_SIZE,
    UDP_PORT,
    Flags,
)
from dmscproto.codec.wire import HEADER_STRUCT


@dataclass(frozen=True, slots=True)
class Flow:
    """One lab capture: a window of the recording (or, for peering, every session
    message between the gateways)."""

    name: str
    title: str
    description: str


FLOWS = (
    Flow("lab-registration.pcap", "Registration (Section 5.1)",
         "The weather agent registers its signed capability record and is granted a "
         "lease; a second key claiming the same agent name, from another address, is "
         "refused with NAME_CONFLICT."),
    Flow("lab-refresh.pcap", "Lease refresh (Section 5.1)",
         "The planner agent registers and refreshes its lease."),
    Flow("lab-deregistration.pcap", "Deregistration (Section 5.1)",
         "The planner agent deregisters; a REFRESH after that is answered "
         "UNKNOWN_AGENT."),
    Flow("lab-discovery-local.pcap", "Local discovery (Section 5.2)",
         "The planner agent asks its own gateway, scope LOCAL, for agents with the skill "
         "'forecast' and gets the weather agent's signed record back, with the score of "
         "the default ranking."),
    Flow("lab-discovery-federated.pcap", "Federated discovery (Section 5.2)",
         "The translator agent of b.example discovers, scope FEDERATED, by skill, tag and "
         "intent; its gateway answers from the record it learned from a.example's "
         "gateway (it holds a record of that domain, so it does not relay the DISCOVER, "
         "Section 5.2.1)."),
    Flow("lab-route-local.pcap", "Routed call within a domain (Section 5.3)",
         "The planner agent calls the weather agent of its domain through their gateway: "
         "ROUTE_REQUEST in, delivered to the target (hop limit and path unchanged: local "
         "delivery consumes no hop), ROUTE_REPLY back. Each hop is its own transaction."),
    Flow("lab-route-cross-domain.pcap", "Routed call across domains (Section 5.3)",
         "The translator agent of b.example calls the weather agent of a.example: its "
         "gateway forwards to a.example's gateway (hop limit decremented, its id appended "
         "to the path), which delivers to the agent; the reply returns along the path."),
    Flow("lab-route-errors.pcap", "Routing errors (Section 5.3)",
         "A one-shot client (never registered: an unregistered lab sender, Section 9.4) "
         "sends a request by capability query that matches nothing (NO_ROUTE), then the "
         "same PDU again with the RETRANSMISSION flag, answered from the gateway's "
         "duplicate cache; a request with hop limit 0 for an agent of the other domain "
         "(HOP_LIMIT_EXCEEDED); one whose path vector already holds the gateway "
         "(LOOP_DETECTED); and at a.example's gateway, a request with hop limit 0 for "
         "an agent registered there, which is delivered."),
    Flow("lab-peering.pcap", "Gateway peering and sync (Section 6)",
         "Every session message between the two gateways during the whole recording: "
         "OPEN both ways (the answering OPEN has the same transaction id), each "
         "gateway's table transfer closed by a DIGEST, UPDATEs (numbered by SEQUENCE) "
         "advertising the records registered in the other captures and purging those "
         "deregistered, SYNC_ACKs, periodic DIGESTs of the digest tree root, KEEPALIVEs "
         "(hold time 3 s), each gateway's SUMMARY of its domain's capabilities (Section "
         "6.9) after each change, and the NOTIFY CEASE that closes the session when the "
         "gateways stop."),
    Flow("lab-echo-trace.pcap", "Echo and trace (Section 6.8)",
         "The weather agent pings its gateway, then traces the route to the translator "
         "agent of the other domain: each gateway on the path adds its hop record."),
    Flow("lab-errors.pcap", "Malformed PDUs and refusals (Sections 4.4, 5, 5.4)",
         "A client sends one damaged request per decoding error; the gateway answers each "
         "with an ERROR naming the error code and the request's type (a PDU too short to "
         "carry a transaction id gets no answer). Then refusals of requests that decoded, "
         "each in the request's answer message with STATUS: a REFRESH with a stale "
         "TIMESTAMP, a DISCOVER whose SOURCE_AGENT is not the sender's (DISCOVER_REPLY "
         "IDENTITY_MISMATCH, not ERROR), a REGISTER with a forged signature; and an OPEN "
         "naming a domain that is not configured, refused with NOTIFY."),
)


# --- README -----------------------------------------------------------------------------
README_HEAD = """\
# pcap-fixtures: reference captures of DMSC

Generated by `tools/gen_fixtures.py` (do not edit by hand; `--check` verifies this
README against the captures).

**Lab UDP captures (`lab-*.pcap`) are recorded from real gateways**: `tools/gen_fixtures.py
--record` runs two lab-mode gateways (`dmscproto.runtime.gateway.GatewayRuntime`, domains
`a.example` and `b.example`, peered over cleartext UDP, draft Section 9.4) and their agents
(the SDK, and raw lab clients for one-shot requests, refusals and damaged PDUs) on
loopback, with the gateways writing every datagram they send and receive.  Each capture
is the part of that recording in which its flow ran (session messages between the
gateways all go to `lab-peering.pcap`), with two changes: the loopback addresses and
ephemeral ports are replaced by documentation ones (RFC 5737), and times start at
2026-09-21T12:26:40Z, keeping the recorded intervals.  The PDUs are the octets the
gateways and agents sent, so every recording differs (keys, nonces, timestamps,
transaction ids); `tests/test_fixtures.py` checks each capture against the draft's rules.

Addresses: domain `a.example` is `192.0.2.0/24` (gateway `192.0.2.1`, weather agent `.10`,
planner agent `.11` and `.12`, an impostor `.66` and `.67`, a one-shot client `.99`, the
sender of damaged PDUs `.98`), domain `b.example` is `198.51.100.0/24` (gateway
`198.51.100.1`, translator agent `.20`, a one-shot client `.99`).  Gateways use UDP port
{port}, agents ephemeral ports.

## Viewing them

With the dissector generated from the codec registry (`tools/gen_wireshark.py`):

```sh
tshark -X lua_script:tools/wireshark/dmsc.lua -r pcap-fixtures/lab-registration.pcap
tshark -X lua_script:tools/wireshark/dmsc.lua -r pcap-fixtures/lab-registration.pcap -V -Y dmsc
wireshark -X lua_script:tools/wireshark/dmsc.lua pcap-fixtures/lab-registration.pcap
dmsc decode --pcap pcap-fixtures/lab-registration.pcap
```

or in scapy: `from dmscproto.analysis.scapy_dmsc import DMSC` (binds UDP port {port}),
then `rdpcap("pcap-fixtures/lab-registration.pcap")` (the link type is raw IPv4).

## Lab UDP captures
"""


def readme(directory: Path, quic: list[QuicCapture]) -> str:
    """README.md for the lab captures in ``directory`` (each datagram decoded) and the
    QUIC captures present."""
    from dmscproto.analysis.pcap import read_udp
    parts = [README_HEAD.format(port=UDP_PORT)]
    for flow in FLOWS:
        parts.append(f"\n### `{flow.name}`: {flow.title}\n\n{flow.description}\n\n")
        parts.append("| # | from | to | message |\n|---|---|---|---|\n")
        for i, pkt in enumerate(read_udp(directory / flow.name), 1):
            try:
                msg = decode(pkt.payload)
            except DecodeError as exc:
                what = f"damaged {_header_text(pkt.payload)}: {exc.code.name}"
            else:
                what = f"{msg.TYPE.name} txid={msg.transaction_id}" + _status(msg)
                if msg.flags & Flags.RETRANSMISSION:
                    what += " (RETRANSMISSION)"
            parts.append(f"| {i} | {pkt.src[0]}:{pkt.src[1]} | {pkt.dst[0]}:{pkt.dst[1]} "
                         f"| {what} |\n")
    parts.append(QUIC_README)
    for q in quic:
        parts.append(f"\n### `{q.name}` (key log `{q.keylog}`)\n\n{q.description}\n")
    if not quic:
        parts.append("\nNone recorded yet.\n")
    return "".join(parts)


def _header_text(pdu: bytes) -> str:
    """What the header of a damaged PDU says (type and transaction id), if it is whole."""
    if len(pdu) < HEADER_SIZE:
        return f"PDU of {len(pdu)} octets"
    _version, mtype, _flags, _length, txid = HEADER_STRUCT.unpack_from(pdu)
    name = MessageType(mtype).name if mtype in MessageType._value2member_map_ \
        else f"type 0x{mtype:02x}"
    return f"{name} txid={txid}"


def _status(msg: Message) -> str:
    status = getattr(msg, "status", None)
    return f" {status.name}" if isinstance(status, ErrorCode) else ""


QUIC_README = """
## QUIC captures

Recorded, not synthesized: `tools/gen_fixtures.py --quic` runs real DMSC-over-QUIC
sessions (draft Section 9.1; `dmscproto.transport.quic`, mutual TLS 1.3 with
certificates from throwaway domain authorities, ALPN `dmsc/1`) on loopback, with the
transport writing every datagram to the capture and the TLS secrets to the key log
(SSLKEYLOGFILE format). They differ on every run (fresh keys, connection ids and
times). Decrypt them with the key log:

```sh
tshark -X lua_script:tools/wireshark/dmsc.lua \\
    -o tls.keylog_file:pcap-fixtures/quic-session.keylog \\
    -r pcap-fixtures/quic-session.pcap -Y dmsc
```

The dissector is registered for ALPN `dmsc/1` in Wireshark's QUIC ALPN table
(`quic.proto`). It joins a PDU that spans several STREAM frames itself, per
connection direction and stream id, and shows it in the frame that completes it:
Wireshark 4.0 (Debian 12's `tshark`) does not hand a STREAM continuation back to a
dissector that asks for more data with `desegment_len`. This needs the QUIC fields of
the protocol tree, so it does not work in tshark's two-pass mode (`-2`), whose first
pass builds no tree. Tested with tshark 4.0 only.
"""


# --- QUIC ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QuicCapture:
    name: str
    keylog: str
    description: str


QUIC_CAPTURES = [
    QuicCapture("quic-session.pcap", "quic-session.keylog",
                "An agent connects to a gateway over QUIC (mutual TLS 1.3, ALPN dmsc/1) and "
                "sends REGISTER, ECHO-REQUEST and DISCOVER, each on a new bidirectional "
                "stream; a stand-in for the gateway (the gateway runtime is not used) "
                "answers each on the same stream with the example REGISTER-ACK and "
                "ECHO-REPLY, and a DISCOVER-REPLY with four signed records that spans two "
                "QUIC packets (the dissector joins it, see above)."),
]
