"""The test vectors of draft-dmsc-protocol-00, Appendix A, for ``tools/gen_draft.py``:
the valid vectors (each example PDU with its decoded listing), the invalid ones (a valid
example changed one way, with the error code a decoder must give), their index and the
digest example (gen_draft.py keeps the tables and the command line).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

import cbor2

from dmscproto.codec import cbor, decode, encode
from dmscproto.codec import registry as reg
from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.errors import DecodeError
from dmscproto.codec.messages import Message
from dmscproto.codec.registry import (
    ErrorCode,
    MessageType,
    TlvType,
)
from dmscproto.codec.render import message_text
from dmscproto.codec.wire import HEADER_STRUCT, TLV_HEADER_STRUCT
from dmscproto.testing.examples import examples

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is not a package
from draft_regions import table

#: Hex digits per line in a test vector (32 octets).
HEX_WIDTH = 64
#: Longest line in a figure: 72 columns (RFC 7322) less the 3 of its indentation.
ARTWORK_WIDTH = 69


# --- test vectors (Appendix A) -------------------------------------------------------------
def hex_lines(data: bytes) -> str:
    h = data.hex()
    return "\n".join(h[i:i + HEX_WIDTH] for i in range(0, len(h), HEX_WIDTH)) + "\n"


def _wrap(line: str) -> list[str]:
    """Fit a ``key: value`` line of a decoded listing into ARTWORK_WIDTH: the value
    moves to its own line, and a hex value is cut into pieces of an even length."""
    m = re.fullmatch(r"(?P<ind> *)(?P<key>[^:]+): (?P<val>.+)", line)
    if len(line) <= ARTWORK_WIDTH or m is None:
        return [line]
    ind = m["ind"] + "    "
    val, width = m["val"], ARTWORK_WIDTH - len(ind)
    if re.fullmatch(r"[0-9a-f]+", val):
        step = min(HEX_WIDTH, width - width % 2)
        pieces = [val[i:i + step] for i in range(0, len(val), step)]
    else:
        pieces = [val]
    return [f"{m['ind']}{m['key']}:", *(ind + p for p in pieces)]


def decoded_listing(msg: Message, length: int) -> str:
    lines = [w for line in message_text(msg, length).splitlines() for w in _wrap(line)]
    return "\n".join(lines) + "\n"


def vector_block(name: str, expect: str, data: bytes) -> str:
    return f"~~~~\nvector {name} {expect}\n{hex_lines(data)}~~~~\n"


def gen_vectors_valid() -> str:
    out = []
    for name, msg in examples().items():
        data = encode(msg)
        out.append(f"### {name} {{#vector-{name}}}\n\n"
                   f"{msg.TYPE.name}, {len(data)} octets.\n\n")
        out.append(vector_block(name, "valid", data))
        out.append(f"\nDecoded:\n\n~~~~\n{decoded_listing(decode(data), len(data))}~~~~\n\n")
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class RawPdu:
    """A PDU taken apart into header fields and TLVs, to be mutated and rebuilt."""

    version: int
    type: int
    flags: int
    length: int | None
    txid: int
    tlvs: list[tuple[int, bytes]]

    @classmethod
    def parse(cls, data: bytes) -> RawPdu:
        version, mtype, flags, _length, txid = HEADER_STRUCT.unpack_from(data)
        tlvs, off = [], reg.HEADER_SIZE
        while off < len(data):
            t, n = TLV_HEADER_STRUCT.unpack_from(data, off)
            tlvs.append((t, data[off + 4: off + 4 + n]))
            off += reg.TLV_HEADER_SIZE + n
        return cls(version, mtype, flags, None, txid, tlvs)

    def build(self) -> bytes:
        body = b"".join(TLV_HEADER_STRUCT.pack(t, len(v)) + v for t, v in self.tlvs)
        length = reg.HEADER_SIZE + len(body) if self.length is None else self.length
        return HEADER_STRUCT.pack(self.version, self.type, self.flags, length, self.txid) + body

    def value(self, tlv: TlvType) -> bytes:
        return next(v for t, v in self.tlvs if t == tlv)

    def replace(self, tlv: TlvType, value: bytes) -> RawPdu:
        return dataclasses.replace(
            self, tlvs=[(t, value if t == tlv else v) for t, v in self.tlvs])


@functools.cache
def _ex(name: str) -> bytes:
    return encode(examples()[name])


def _example(name: str) -> RawPdu:
    return RawPdu.parse(_ex(name))


def _without(p: RawPdu, tlv: TlvType) -> RawPdu:
    return dataclasses.replace(p, tlvs=[(t, v) for t, v in p.tlvs if t != tlv])


def _with(p: RawPdu, tlv: int, value: bytes) -> RawPdu:
    return dataclasses.replace(p, tlvs=[*p.tlvs, (tlv, value)])


def _last_tlv_length_plus_one(data: bytes) -> bytes:
    n = len(RawPdu.parse(data).tlvs[-1][1])
    off = len(data) - n - 2
    return data[:off] + (n + 1).to_bytes(2, "big") + data[off + 2:]


def _query_non_shortest() -> bytes:
    p = _example("route-request-by-query")
    q = p.value(TlvType.QUERY)  # a1 01 ...: map(1), key 1
    return p.replace(TlvType.QUERY, q[:1] + b"\x18\x01" + q[2:]).build()


def _policy_key_order() -> bytes:
    p = _example("open")
    policy = cbor.loads(p.value(TlvType.EXPORT_POLICY))
    swapped = cbor2.dumps(dict(reversed(list(policy.items()))))
    return p.replace(TlvType.EXPORT_POLICY, swapped).build()


def _cose_tag_17() -> bytes:
    p = _example("register")
    rec = p.value(TlvType.SIGNED_RECORD)
    return p.replace(TlvType.SIGNED_RECORD, b"\xd1" + rec[1:]).build()


def _uri_domain_mismatch() -> bytes:
    p = _example("register")
    signed = SignedRecord.decode(p.value(TlvType.SIGNED_RECORD))
    payload = cbor.loads(signed.payload)
    payload[1] = payload[1].replace("a.example", "b.example")
    bad = dataclasses.replace(signed, payload=cbor.dumps(payload))
    return p.replace(TlvType.SIGNED_RECORD, bad.encode()).build()


def _query_bad_utf8() -> bytes:
    p = _example("route-request-by-query")
    q = p.value(TlvType.QUERY)
    i = q.index(b"forecast")
    return p.replace(TlvType.QUERY, q[:i] + b"\xff" + q[i + 1:]).build()


def _query_duplicate_key() -> bytes:
    p = _example("route-request-by-query")
    q = p.value(TlvType.QUERY)  # a1 01 81 68 "forecast": map(1), key 1
    return p.replace(TlvType.QUERY, b"\xa2" + q[1:] + b"\x01\x81\x61x").build()


def _protected_non_deterministic() -> bytes:
    p = _example("register")
    rec = p.value(TlvType.SIGNED_RECORD)  # d2 84 43 a1 01 27: tag 18, array(4), bstr(3)
    assert rec[1:6] == bytes.fromhex("8443a10127")
    return p.replace(TlvType.SIGNED_RECORD, rec[:1] + bytes.fromhex("8444a1013807")
                     + rec[6:]).build()


def _result_without_record() -> bytes:
    p = _example("discover-reply")
    return p.replace(TlvType.RESULT, p.value(TlvType.RESULT)[:2]).build()


def _advertise_without_record() -> bytes:
    p = _example("update")
    adv = p.value(TlvType.ADVERTISE)
    return p.replace(TlvType.ADVERTISE, adv[:9 + 16 * adv[8]]).build()


def _repeat_first(p: RawPdu) -> RawPdu:
    return dataclasses.replace(p, tlvs=[p.tlvs[0], *p.tlvs])


def _swap_first_two(p: RawPdu) -> RawPdu:
    return dataclasses.replace(p, tlvs=[p.tlvs[1], p.tlvs[0], *p.tlvs[2:]])


#: Negative vectors: (name, expected code, how the base example is changed, builder).
NEGATIVE: tuple[tuple[str, ErrorCode, str, Callable[[], bytes]], ...] = (
    ("truncated-header", ErrorCode.TRUNCATED,
     "The first 15 octets of `keepalive`: the common header is incomplete.",
     lambda: _ex("keepalive")[:15]),
    ("truncated-body", ErrorCode.TRUNCATED,
     "`refresh-ack` without its last octet; the header still announces 30 octets.",
     lambda: _ex("refresh-ack")[:-1]),
    ("trailing-data", ErrorCode.TRAILING_DATA,
     "`keepalive` followed by one extra zero octet that the header does not announce.",
     lambda: _ex("keepalive") + b"\x00"),
    ("length-below-header", ErrorCode.LENGTH_MISMATCH,
     "`keepalive` with the header's Length set to 15, less than the header itself.",
     lambda: dataclasses.replace(_example("keepalive"), length=15).build()),
    ("tlv-length-overrun", ErrorCode.LENGTH_MISMATCH,
     "`refresh-ack` with the Length of its last TLV (STATUS) one larger (3), so the TLV "
     "runs past the end of the PDU, whose Length is unchanged.",
     lambda: _last_tlv_length_plus_one(_ex("refresh-ack"))),
    ("unsupported-version", ErrorCode.UNSUPPORTED_VERSION,
     "`keepalive` with Version 2.",
     lambda: dataclasses.replace(_example("keepalive"), version=2).build()),
    ("unknown-message-type", ErrorCode.UNKNOWN_MESSAGE_TYPE,
     "`keepalive` with Message Type 0x66, which is unassigned.",
     lambda: dataclasses.replace(_example("keepalive"), type=0x66).build()),
    ("unknown-critical-tlv", ErrorCode.UNKNOWN_CRITICAL_TLV,
     "`keepalive` with an unassigned critical TLV 0x8042 carrying \"future\" appended.",
     lambda: _with(_example("keepalive"), 0x8042, b"future").build()),
    ("critical-tlv-not-in-message", ErrorCode.UNKNOWN_CRITICAL_TLV,
     "`keepalive` with a STATUS TLV (SUCCESS) appended; STATUS is registered but not "
     "defined for KEEPALIVE, and it is critical.",
     lambda: _with(_example("keepalive"), TlvType.STATUS, b"\x00\x00").build()),
    ("duplicate-tlv", ErrorCode.DUPLICATE_TLV,
     "`refresh-ack` with its LEASE TLV sent twice in a row.",
     lambda: _repeat_first(_example("refresh-ack")).build()),
    ("pdu-too-large", ErrorCode.PDU_TOO_LARGE,
     "The 16-octet header of `keepalive` with Length 65536 (MAX_PDU_SIZE + 1) and no "
     "body: the receiver refuses it before reading further.",
     lambda: dataclasses.replace(_example("keepalive"),
                                 length=reg.MAX_PDU_SIZE + 1).build()),
    ("malformed-cbor", ErrorCode.MALFORMED_CBOR,
     "`route-request-by-query` with the QUERY value's array head changed from 0x81 to "
     "0x82: the array announces two skills and holds one.",
     lambda: _example("route-request-by-query").replace(
         TlvType.QUERY,
         _example("route-request-by-query").value(TlvType.QUERY).replace(b"\x81", b"\x82", 1))
     .build()),
    ("non-shortest-integer", ErrorCode.NON_DETERMINISTIC_CBOR,
     "`route-request-by-query` with map key 1 of the QUERY value written in two octets "
     "(0x18 0x01) instead of one; lengths adjusted.",
     _query_non_shortest),
    ("map-key-order", ErrorCode.NON_DETERMINISTIC_CBOR,
     "`open` with the EXPORT_POLICY map's two keys in descending order (2, then 1).",
     _policy_key_order),
    ("cbor-invalid-utf8", ErrorCode.MALFORMED_CBOR,
     "`route-request-by-query` with the first octet of the text string \"forecast\" in "
     "the QUERY value replaced by 0xFF: a CBOR text string that is not UTF-8 (Section "
     "7.1).",
     _query_bad_utf8),
    ("duplicate-map-key", ErrorCode.NON_DETERMINISTIC_CBOR,
     "`route-request-by-query` with the QUERY map holding key 1 twice (the second time "
     "with an array holding \"x\"); lengths adjusted (Section 7.1).",
     _query_duplicate_key),
    ("cose-protected-non-deterministic", ErrorCode.MALFORMED_COSE,
     "`register` with the algorithm -8 in the protected header written in two octets "
     "(0x38 0x07) instead of one: the protected header is not the profile's "
     "deterministic map (Section 7.2.1); lengths adjusted.",
     _protected_non_deterministic),
    ("result-without-record", ErrorCode.MALFORMED_CBOR,
     "`discover-reply` with the RESULT value cut after its 2-octet score: the signed "
     "record that fills the rest is empty (Section 4.3).",
     _result_without_record),
    ("advertise-without-record", ErrorCode.MALFORMED_CBOR,
     "`update` with the ADVERTISE value cut after its version and path: the signed "
     "record that fills the rest is empty (Section 4.3).",
     _advertise_without_record),
    ("cose-wrong-tag", ErrorCode.MALFORMED_COSE,
     "`register` with the SIGNED_RECORD's CBOR tag 18 (0xD2) changed to 17 (0xD1, "
     "COSE_Mac0).",
     _cose_tag_17),
    ("missing-tlv", ErrorCode.MISSING_TLV,
     "`refresh-ack` without its STATUS TLV.",
     lambda: _without(_example("refresh-ack"), TlvType.STATUS).build()),
    ("invalid-tlv-length", ErrorCode.INVALID_TLV_LENGTH,
     "`refresh-ack` with a 3-octet LEASE value (0x000E10) instead of 4 octets.",
     lambda: _example("refresh-ack").replace(TlvType.LEASE, b"\x00\x0e\x10").build()),
    ("invalid-scope", ErrorCode.INVALID_TLV_VALUE,
     "`discover` with SCOPE 3, which is not a registered scope.",
     lambda: _example("discover").replace(TlvType.SCOPE, b"\x03").build()),
    ("invalid-utf8", ErrorCode.INVALID_TLV_VALUE,
     "`notify` with the first octet of the DIAGNOSTIC text replaced by 0xFF.",
     lambda: _example("notify").replace(
         TlvType.DIAGNOSTIC, b"\xff" + _example("notify").value(TlvType.DIAGNOSTIC)[1:])
     .build()),
    ("record-uri-domain-mismatch", ErrorCode.INVALID_TLV_VALUE,
     "`register` with the record's agent-uri changed to dmsc://b.example/weather while "
     "its domain stays a.example (the signature is left as is; decoding does not "
     "verify it).",
     _uri_domain_mismatch),
    ("tlv-order", ErrorCode.TLV_ORDER,
     "`refresh-ack` with its two TLVs swapped: STATUS (0x8005) before LEASE (0x8004).",
     lambda: _swap_first_two(_example("refresh-ack")).build()),
)


def negative_vectors() -> list[tuple[str, ErrorCode, str, bytes]]:
    """The negative vectors, each checked to fail with its expected code."""
    out = []
    for name, code, why, build in NEGATIVE:
        data = build()
        try:
            decode(data)
        except DecodeError as exc:
            if exc.code is not code:
                raise AssertionError(f"{name}: {exc.code.name}, expected {code.name}") from None
        else:
            raise AssertionError(f"{name}: decodes, expected {code.name}")
        out.append((name, code, why, data))
    return out


def gen_vectors_invalid() -> str:
    out = []
    for name, code, why, data in negative_vectors():
        out.append(f"### {name} {{#vector-{name}}}\n\n{why} Expected: {code.name}.\n\n")
        out.append(vector_block(name, code.name, data))
        out.append("\n")
    return "".join(out)


def gen_vector_index() -> str:
    """Which vectors cover each message type and each decoding error."""
    by_type: dict[MessageType, list[str]] = {}
    for name, msg in examples().items():
        by_type.setdefault(msg.TYPE, []).append(name)
    by_code: dict[ErrorCode, list[str]] = {}
    for name, code, _why, _data in negative_vectors():
        by_code.setdefault(code, []).append(name)
    rows = [(m.name, ", ".join(by_type[m])) for m in MessageType]
    rows += [(e.name, ", ".join(v)) for e, v in sorted(by_code.items())]
    return table(("Message type or error", "Vectors"), rows, "Vector index")


def gen_digest_example() -> str:
    """The digest tree summary of the ``digest-entries`` vector, worked out (Section
    6.6.1): each entry's hash, the leaf it falls into, and their XOR."""
    msg = examples()["digest-entries"]
    entries = [e for chunk in msg.entries for e in chunk]  # type: ignore[attr-defined]
    out = []
    acc = 0
    for e in entries:
        data = e.agent_id + e.version.to_bytes(8, "big")
        h = hashlib.sha256(data).digest()
        acc ^= int.from_bytes(h)
        leaf = int.from_bytes(e.agent_id[:2]) >> (16 - 4 * reg.DIGEST_LEAF_LEVEL)
        out.append(f"Entry (Agent ID, version {e.version}), leaf {leaf:#05x}; hash input and "
                   f"its SHA-256:\n\n~~~~\n{hex_lines(data)}{hex_lines(h)}~~~~\n\n")
    out.append(f"Summary: count {len(entries)}, hash (the XOR of the entries' hashes):\n\n"
               f"~~~~\n{hex_lines(acc.to_bytes(32))}~~~~\n")
    return "".join(out)
