"""dmsc decode: show PDUs from hex, a binary file or a capture (draft-dmsc-protocol-00,
Sections 4-7; lab UDP captures, Section 9.4).

Input:
  dmsc decode HEX...     one PDU as hex; the arguments are joined, and whitespace, line
                         breaks, colons, 0x prefixes and # comments are ignored; with no
                         argument or '-', the hex is read from stdin
  --stream               the hex holds several PDUs back to back
  --file PATH            binary PDUs back to back ('-' is stdin), split by the length
                         in each header as a stream receiver does
  --pcap FILE            the DMSC messages of the UDP datagrams to or from --port (the
                         lab UDP port by default, every port with --any-port), one PDU
                         per datagram; QUIC and DTLS datagrams are counted, not decrypted

Output is readable text, or JSON Lines with --json (one object per PDU, or per packet
with --pcap).  A malformed PDU prints its error code name, offset and reason (on stderr
for text, as a JSON object on stdout with --json) and the exit status is 1; unusable
input (bad hex, unreadable file, bad options) exits with 2.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..codec import DecodeError, Message, decode, peek_length
from ..codec.registry import HEADER_SIZE, UDP_PORT, VERSION
from ..codec.render import error_text, error_to_dict, message_text, message_to_dict, summary
from . import EXIT_FAILURE, EXIT_OK, Subparsers, UsageError

if TYPE_CHECKING:
    from ..analysis.pcap import UdpPacket

#: What ``dmsc decode`` ignores in hex input: ``#`` comments, ``0x`` prefixes, whitespace,
#: colons, and the fence and ``vector NAME OUTCOME`` lines of a test vector pasted from
#: the draft's appendix.
_HEX_NOISE = re.compile(r"(?m)^[ \t]*(?:~~~+|```+|vector[ \t])[^\n]*|#[^\n]*"
                        r"|(?<![0-9A-Fa-f])0[xX]|[\s:]")
_NOT_HEX = re.compile(r"[^0-9A-Fa-f]")
#: First octet of a pcapng file; ``read_udp`` reads classic pcap only.
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
#: Classic pcap magic numbers (micro- and nanosecond, either byte order).
_PCAP_MAGICS = frozenset(struct.pack(e + "I", m) for e in "<>" for m in (0xA1B2C3D4, 0xA1B23C4D))
#: Wireshark dissector generated from the registry (issue 6), for the tshark hint.
_DISSECTOR = "tools/wireshark/dmsc.lua"


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "decode", help="decode PDUs from hex, a binary file or a pcap capture",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("hex", nargs="*", metavar="HEX",
                        help="the PDU as hex; none or '-' reads hex from stdin")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", metavar="PATH",
                        help="binary PDUs back to back ('-' for stdin)")
    source.add_argument("--pcap", metavar="FILE",
                        help="list the DMSC messages of a pcap capture (UDP)")
    parser.add_argument("--stream", action="store_true",
                        help="hex input holds several PDUs back to back")
    parser.add_argument("--json", action="store_true",
                        help="JSON Lines: one object per PDU (or per packet with --pcap)")
    parser.add_argument("--port", type=int,
                        help=f"with --pcap: the DMSC UDP port (default {UDP_PORT})")
    parser.add_argument("--any-port", action="store_true",
                        help="with --pcap: look at UDP datagrams on every port")
    parser.add_argument("--keylog", metavar="FILE",
                        help="with --pcap: TLS key log (SSLKEYLOGFILE format) of the capture; "
                             "QUIC/DTLS decryption is not supported yet, see the note printed")
    return parser


def parse_hex(text: str) -> bytes:
    """Octets from hex text, ignoring whitespace, colons, ``0x`` prefixes and ``#`` comments."""
    digits = _HEX_NOISE.sub("", text)
    bad = _NOT_HEX.search(digits)
    if bad is not None:
        raise UsageError(f"not hex: {bad.group()!r} (binary input goes through --file)")
    if len(digits) % 2:
        raise UsageError(f"odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One PDU of the input: where it starts, how long it is, and what it decoded to."""

    offset: int
    length: int
    result: Message | DecodeError


def split_pdus(data: bytes) -> Iterator[Decoded]:
    """Decode back-to-back PDUs, framed by the length in each header (Section 4.1).

    Stops after a PDU whose header cannot be framed (the rest is reported as one
    error); a PDU that is framed but malformed is reported and decoding goes on.
    """
    offset = 0
    while offset < len(data):
        rest = data[offset:]
        try:
            length = peek_length(rest)
        except DecodeError as exc:
            yield Decoded(offset, len(rest), exc)
            return
        if length is None or length > len(rest):
            yield Decoded(offset, len(rest), _decode(rest))
            return
        yield Decoded(offset, length, _decode(rest[:length]))
        offset += length


def _decode(data: bytes) -> Message | DecodeError:
    try:
        return decode(data)
    except DecodeError as exc:
        return exc


def _read_input(args: argparse.Namespace) -> tuple[bytes, bool]:
    """The input octets and whether they are a stream of PDUs."""
    if args.file is not None:
        if args.hex:
            raise UsageError("give hex arguments or --file, not both")
        if args.file == "-":
            return sys.stdin.buffer.read(), True
        try:
            return Path(args.file).read_bytes(), True
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    if args.hex not in ([], ["-"]):
        return parse_hex(" ".join(args.hex)), args.stream
    try:
        text = sys.stdin.buffer.read().decode("ascii")
    except UnicodeDecodeError:
        raise UsageError("stdin is not hex text (binary input goes through --file -)") from None
    return parse_hex(text), args.stream


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _decode_octets(args: argparse.Namespace) -> int:
    data, stream = _read_input(args)
    if not data:
        raise UsageError("no input")
    items = list(split_pdus(data)) if stream else [Decoded(0, len(data), _decode(data))]
    status = EXIT_OK
    for n, item in enumerate(items):
        where = f"PDU at input offset {item.offset}" if stream else ""
        if isinstance(item.result, DecodeError):
            status = EXIT_FAILURE
            if args.json:
                _print_json({"pdu_offset": item.offset, **error_to_dict(item.result)})
            else:
                sys.stdout.flush()
                print(f"dmsc decode: {where}{': ' if where else ''}{error_text(item.result)}",
                      file=sys.stderr)
        elif args.json:
            _print_json({"pdu_offset": item.offset,
                         **message_to_dict(item.result, item.length)})
        else:
            if stream:
                print(("\n" if n else "") + f"# {where}")
            print(message_text(item.result, item.length))
    return status


# --- captures ----------------------------------------------------------------------------
def encrypted_kind(payload: bytes) -> str | None:
    """"DTLS" or "QUIC" when a datagram is a DTLS record (RFC 9147, Section 4) or a QUIC
    packet (RFC 9000, Section 17: fixed bit set), None otherwise.  A DMSC PDU starts
    with the version octet, which is neither."""
    if not payload or payload[0] == VERSION:
        return None
    if len(payload) >= 3 and 20 <= payload[0] <= 25 and payload[1] == 0xFE:
        return "DTLS"
    if payload[0] & 0x40:
        return "QUIC"
    return None


def _read_capture(name: str) -> list[UdpPacket]:
    from ..analysis.pcap import read_udp

    path = Path(name)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from None
    if magic == _PCAPNG_MAGIC:
        raise UsageError(f"{name} is pcapng; convert it first: editcap -F pcap {name} out.pcap")
    if magic not in _PCAP_MAGICS:
        raise UsageError(f"{name} is not a pcap file (it starts with {magic.hex() or 'nothing'}"
                         ", not a pcap magic number)")
    try:
        return list(read_udp(path))
    except (struct.error, ValueError) as exc:
        raise UsageError(f"{name} is not a readable pcap file: {exc}") from None


def looks_like_dmsc(payload: bytes) -> bool:
    """Whether a datagram on an unknown port is DMSC, malformed or not: the current
    version, or a header whose length field is the datagram's length (a PDU of another
    version, say)."""
    if payload[:1] == bytes([VERSION]):
        return True
    return (len(payload) >= HEADER_SIZE
            and struct.unpack_from(">I", payload, 4)[0] == len(payload))


def _tshark_hint(args: argparse.Namespace, encrypted: dict[tuple[str, int], int]) -> str:
    """The tshark command that decrypts and dissects what ``dmsc decode`` could not."""
    keylog = args.keylog or "KEYLOG"
    cmd = f"tshark -r {args.pcap} -X lua_script:{_DISSECTOR} -o tls.keylog_file:{keylog}"
    for kind, port in sorted(encrypted):
        cmd += f" -d udp.port=={port},{kind.lower()}"
    return cmd


def _decode_pcap(args: argparse.Namespace) -> int:
    packets = _read_capture(args.pcap)
    start = packets[0].time if packets else 0.0
    decoded = malformed = 0
    encrypted: dict[tuple[str, int], int] = {}  # (kind, server port) -> datagrams
    for frame, pkt in enumerate(packets, 1):
        ports = (pkt.src[1], pkt.dst[1])
        if not args.any_port and args.port not in ports:
            continue
        kind = encrypted_kind(pkt.payload)
        if kind is None and args.any_port and not looks_like_dmsc(pkt.payload):
            continue  # another protocol on another port
        src, dst = f"{pkt.src[0]}:{pkt.src[1]}", f"{pkt.dst[0]}:{pkt.dst[1]}"
        out: dict[str, Any] = {"frame": frame, "time": pkt.time, "src": src, "dst": dst,
                               "length": len(pkt.payload)}
        if kind is not None:
            port = args.port if args.port in ports else min(ports)
            encrypted[kind, port] = encrypted.get((kind, port), 0) + 1
            out["encrypted"] = kind
            what = f"{kind} (encrypted, {len(pkt.payload)} octets)"
        else:
            result = _decode(pkt.payload)
            if isinstance(result, DecodeError):
                malformed += 1
                out["error"] = error_to_dict(result)
                what = f"MALFORMED  {error_text(result)}"
            else:
                decoded += 1
                out["message"] = message_to_dict(result, len(pkt.payload))
                what = f"{result.TYPE.name}  txid={result.transaction_id}  {summary(result)}"
        if args.json:
            _print_json(out)
        else:
            print(f"{frame:5d} {pkt.time - start:10.6f}  {src} -> {dst}  {what}".rstrip())

    total = sum(encrypted.values())
    if not args.json:
        parts = [f"{len(packets)} UDP datagrams", f"{decoded} DMSC messages",
                 f"{malformed} malformed", f"{total} encrypted"]
        print(f"# {', '.join(parts)}")
    if not (decoded or malformed or total) and packets and not args.any_port:
        seen = sorted({min(p.src[1], p.dst[1]) for p in packets})
        print(f"dmsc decode: no datagram to or from port {args.port}; the capture's UDP "
              f"ports include {', '.join(map(str, seen[:8]))}: try --any-port or --port N",
              file=sys.stderr)
        return EXIT_FAILURE
    if not total:
        return EXIT_FAILURE if malformed else EXIT_OK
    used = f"the key log {args.keylog} was not used" if args.keylog else "they are not shown"
    print(f"dmsc decode: {total} encrypted datagram(s) (QUIC/DTLS); dmsc decode does not "
          f"decrypt QUIC or DTLS yet, so {used}.  Wireshark/tshark can, with the key log "
          f"and the generated dissector:\n  {_tshark_hint(args, encrypted)}", file=sys.stderr)
    # what the user asked to see was not shown: do not report success
    return EXIT_FAILURE


def run(args: argparse.Namespace) -> int:
    if args.pcap is None:
        for option in ("keylog", "any_port", "port"):
            if getattr(args, option) not in (None, False):
                raise UsageError(f"--{option.replace('_', '-')} needs --pcap")
        return _decode_octets(args)
    if args.hex or args.stream:
        raise UsageError("--pcap takes no hex input and no --stream")
    if args.keylog is not None and not Path(args.keylog).is_file():
        raise UsageError(f"key log {args.keylog} not found")
    if args.port is None:
        args.port = UDP_PORT
    return _decode_pcap(args)
