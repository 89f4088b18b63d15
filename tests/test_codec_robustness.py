"""Every class of malformed PDU raises :class:`DecodeError` with its registered code and
the octet offset where decoding failed (draft-dmsc-protocol-00, Section 4.4); encoding
refuses what cannot be sent (:class:`EncodeError`).

PDUs are taken apart and rebuilt here with ``struct`` alone, independently of the codec,
so a framing bug in the codec cannot hide itself in the test's own input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2
import pytest

from dmscproto.codec import (
    DecodeError,
    DiscoverReply,
    EncodeError,
    ErrorCode,
    Keepalive,
    MessageType,
    RawTlv,
    Refresh,
    RefreshAck,
    RouteRequest,
    SignedRecord,
    TlvType,
    decode,
    encode,
    peek_length,
)
from dmscproto.codec.pdu import PduDecoder
from dmscproto.codec.registry import (
    HEADER_SIZE,
    MAX_PDU_SIZE,
    TLV_HEADER_SIZE,
    VERSION,
    ErrorClass,
)
from dmscproto.testing.examples import examples

EX: dict[str, Any] = examples()  # Any: tests replace fields of every type
HEADER = struct.Struct(">BBHIQ")


@dataclass
class Raw:
    """A PDU taken apart: header fields and (type, value) TLVs in wire order."""

    type: int
    tlvs: list[tuple[int, bytes]] = field(default_factory=list)
    version: int = VERSION
    flags: int = 0
    txid: int = 0
    length: int | None = None  # None: the real length

    @classmethod
    def of(cls, name: str) -> Raw:
        data = encode(EX[name])
        version, mtype, flags, length, txid = HEADER.unpack_from(data)
        assert length == len(data)
        tlvs, off = [], HEADER_SIZE
        while off < length:
            t, n = struct.unpack_from(">HH", data, off)
            tlvs.append((t, data[off + 4: off + 4 + n]))
            off += 4 + n
        return cls(mtype, tlvs, version, flags, txid)

    def body(self) -> bytes:
        return b"".join(struct.pack(">HH", t, len(v)) + v for t, v in self.tlvs)

    def build(self) -> bytes:
        body = self.body()
        length = HEADER_SIZE + len(body) if self.length is None else self.length
        return HEADER.pack(self.version, self.type, self.flags, length, self.txid) + body

    def tlv_offset(self, index: int) -> int:
        """Offset of TLV ``index`` (its type field); ``len(tlvs)`` gives the end."""
        return HEADER_SIZE + sum(TLV_HEADER_SIZE + len(v) for _, v in self.tlvs[:index])

    def value_offset(self, tlv: int) -> int:
        """Offset of the value of the first TLV of type ``tlv``."""
        i = [t for t, _ in self.tlvs].index(tlv)
        return self.tlv_offset(i) + TLV_HEADER_SIZE

    def value(self, tlv: int) -> bytes:
        return dict(self.tlvs)[tlv]

    def with_value(self, tlv: int, value: bytes) -> Raw:
        return replace(self, tlvs=[(t, value if t == tlv else v) for t, v in self.tlvs])


def stepped(data: bytes) -> Any:
    """``data`` decoded a TLV at a time (:class:`PduDecoder`, what a QUIC connection does
    with a large request): every test here checks that it agrees with :func:`decode`."""
    decoder = PduDecoder(data)
    while (msg := decoder.step(1)) is None:
        pass
    return msg


def fails(data: bytes, code: ErrorCode, offset: int) -> DecodeError:
    for how in (decode, stepped):
        with pytest.raises(DecodeError) as info:
            how(data)
        err = info.value
        assert (err.code, err.offset) == (code, offset), (how, err)
        assert isinstance(err.code, ErrorCode) and err.code.name in str(err)
    return err


def roundtrips(data: bytes) -> Any:
    msg = decode(data)
    assert encode(msg) == data
    assert stepped(data) == msg
    return msg


def test_every_example_decodes_alike_a_tlv_at_a_time() -> None:
    for name, msg in EX.items():
        assert stepped(encode(msg)) == msg, name


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytes_like_input(kind: Any) -> None:
    data = encode(EX["route-reply-with-extension"])
    msg: Any = decode(kind(data))
    assert msg == EX["route-reply-with-extension"] and type(msg.payload) is bytes
    with pytest.raises(DecodeError) as info:
        decode(kind(data[:-1]))
    assert info.value.code is ErrorCode.TRUNCATED


# --- Section 4.1: header and length ---------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 8, 15])
def test_truncated_header(size: int) -> None:
    fails(encode(EX["keepalive"])[:size], ErrorCode.TRUNCATED, size)


def test_truncated_body() -> None:
    data = encode(EX["refresh-ack"])
    fails(data[:-1], ErrorCode.TRUNCATED, len(data) - 1)
    fails(data[:HEADER_SIZE], ErrorCode.TRUNCATED, HEADER_SIZE)


def test_trailing_bytes() -> None:
    data = encode(EX["keepalive"])
    fails(data + b"\x00", ErrorCode.TRAILING_DATA, len(data))
    fails(data + data, ErrorCode.TRAILING_DATA, len(data))


@pytest.mark.parametrize("length", [0, 1, HEADER_SIZE - 1])
def test_header_length_below_header_size(length: int) -> None:
    fails(replace(Raw.of("keepalive"), length=length).build(), ErrorCode.LENGTH_MISMATCH, 4)


def test_tlv_header_runs_past_the_end() -> None:
    # Two octets after the header: the header's length covers them, a TLV header does not fit.
    data = replace(Raw.of("keepalive"), length=HEADER_SIZE + 2).build() + b"\x00\x01"
    fails(data, ErrorCode.LENGTH_MISMATCH, HEADER_SIZE)


def test_tlv_value_runs_past_the_end() -> None:
    raw = Raw.of("refresh-ack")  # LEASE, STATUS
    data = bytearray(raw.build())
    last = raw.tlv_offset(1)
    struct.pack_into(">H", data, last + 2, 3)  # STATUS length 2 -> 3, PDU length unchanged
    fails(bytes(data), ErrorCode.LENGTH_MISMATCH, last + 2)


def test_pdu_length_larger_than_the_tlvs_is_not_trailing_but_framing() -> None:
    raw = Raw.of("refresh-ack")
    data = replace(raw, length=len(raw.build()) + 1).build() + b"\x00"
    fails(data, ErrorCode.LENGTH_MISMATCH, len(data) - 1)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version(version: int) -> None:
    fails(replace(Raw.of("keepalive"), version=version).build(), ErrorCode.UNSUPPORTED_VERSION, 0)


@pytest.mark.parametrize("mtype", [0x00, 0x07, 0x66, 0xFF])
def test_unknown_message_type(mtype: int) -> None:
    assert mtype not in set(MessageType)
    fails(replace(Raw.of("keepalive"), type=mtype).build(), ErrorCode.UNKNOWN_MESSAGE_TYPE, 1)


@pytest.mark.parametrize("length", [MAX_PDU_SIZE + 1, 70000, 0xFFFFFFFF])
def test_oversize_pdu_refused_from_the_header_alone(length: int) -> None:
    header = replace(Raw.of("keepalive"), length=length).build()
    assert len(header) == HEADER_SIZE
    # Only the header is there: reading on would have said TRUNCATED.
    fails(header, ErrorCode.PDU_TOO_LARGE, 4)
    with pytest.raises(DecodeError) as info:
        peek_length(header)
    assert (info.value.code, info.value.offset) == (ErrorCode.PDU_TOO_LARGE, 4)


def test_largest_pdu_is_accepted() -> None:
    # SOURCE_AGENT (16), HOP_LIMIT (1), PATH_VECTOR (1, empty) and the payload.
    room = MAX_PDU_SIZE - HEADER_SIZE - 4 * TLV_HEADER_SIZE - 16 - 1 - 1
    data = encode(RouteRequest(source_agent=bytes(16), hop_limit=8, path=(), payload=bytes(room)))
    assert len(data) == MAX_PDU_SIZE
    roundtrips(data)


# --- Section 4.2: TLVs ------------------------------------------------------------------
def test_unknown_critical_tlv() -> None:
    raw = Raw.of("refresh-ack")
    raw.tlvs.append((0x8042, b"future"))
    fails(raw.build(), ErrorCode.UNKNOWN_CRITICAL_TLV, raw.tlv_offset(2))


def test_registered_critical_tlv_not_defined_for_the_message() -> None:
    raw = Raw(MessageType.KEEPALIVE, [(TlvType.STATUS, b"\x00\x00")])
    fails(raw.build(), ErrorCode.UNKNOWN_CRITICAL_TLV, HEADER_SIZE)


@pytest.mark.parametrize("ext", [0x0042, 0x7FFF, int(TlvType.DIAGNOSTIC)])
def test_unknown_non_critical_tlv_is_skipped_and_kept(ext: int) -> None:
    raw = Raw.of("refresh")  # no DIAGNOSTIC in REFRESH: registered but unknown here
    raw.tlvs.append((ext, b"\x00future\xff"))
    raw.tlvs.sort(key=lambda t: t[0])
    msg = roundtrips(raw.build())
    assert isinstance(msg, Refresh)
    assert msg.unknown_tlvs == (RawTlv(ext, b"\x00future\xff"),)
    assert replace(msg, unknown_tlvs=()) == EX["refresh"]


def test_unknown_tlvs_between_known_ones_keep_their_place() -> None:
    raw = Raw.of("route-reply")  # STATUS 0x8005, TARGET 0x800D, PAYLOAD 0x8010 + TRACE 0x0001
    raw.tlvs += [(0x0003, b""), (0x0003, b"second"), (0x4000, b"z")]
    raw.tlvs.sort(key=lambda t: t[0])
    msg = roundtrips(raw.build())
    assert [t.value for t in msg.unknown_tlvs] == [b"", b"second", b"z"]


def test_tlv_out_of_order() -> None:
    raw = Raw.of("refresh-ack")  # LEASE 0x8004, STATUS 0x8005
    raw.tlvs.reverse()
    fails(raw.build(), ErrorCode.TLV_ORDER, raw.tlv_offset(1))


def test_unknown_tlv_out_of_order() -> None:
    raw = Raw.of("refresh-ack")
    raw.tlvs.append((0x0042, b""))
    fails(raw.build(), ErrorCode.TLV_ORDER, raw.tlv_offset(2))


def test_non_repeatable_tlv_repeated() -> None:
    raw = Raw.of("refresh-ack")
    raw.tlvs.insert(0, raw.tlvs[0])
    fails(raw.build(), ErrorCode.DUPLICATE_TLV, raw.tlv_offset(1))


def test_repeatable_tlv_repeated() -> None:
    msg = roundtrips(encode(EX["discover-reply-translator"]))
    assert isinstance(msg, DiscoverReply) and len(msg.results) == 2


@pytest.mark.parametrize("drop", [TlvType.STATUS, TlvType.LEASE])
def test_missing_required_tlv(drop: TlvType) -> None:
    raw = Raw.of("refresh-ack")
    raw.tlvs = [(t, v) for t, v in raw.tlvs if t != drop]
    data = raw.build()
    if drop is TlvType.LEASE:  # LEASE is optional in REFRESH-ACK
        assert roundtrips(data) == replace(EX["refresh-ack"], lease=None)
    else:
        fails(data, ErrorCode.MISSING_TLV, len(data))


# --- Section 4.2: fixed-layout values ------------------------------------------------------
@pytest.mark.parametrize(("name", "tlv", "value"), [
    ("refresh-ack", TlvType.LEASE, b"\x00\x0e\x10"),
    ("refresh-ack", TlvType.LEASE, b"\x00\x00\x0e\x10\x00"),
    ("refresh-ack", TlvType.STATUS, b""),
    ("refresh", TlvType.AGENT_ID, bytes(15)),
    ("refresh", TlvType.NONCE, bytes(17)),
    ("discover", TlvType.SCOPE, b"\x00\x02"),
    ("digest", TlvType.DIGEST_SUMMARY, bytes(35)),
    ("update", TlvType.WITHDRAW, bytes(23)),
    ("update-purge", TlvType.PURGE, bytes(25)),
    ("digest-request", TlvType.DIGEST_NODE, bytes(2)),
])
def test_fixed_size_tlv_with_wrong_length(name: str, tlv: TlvType, value: bytes) -> None:
    raw = Raw.of(name).with_value(tlv, value)
    fails(raw.build(), ErrorCode.INVALID_TLV_LENGTH, raw.value_offset(tlv))


@pytest.mark.parametrize(("name", "tlv", "value"), [
    ("route-request", TlvType.PATH_VECTOR, b"\x02" + bytes(16)),  # count 2, one ID
    ("route-request", TlvType.PATH_VECTOR, b"\x01" + bytes(17)),  # an octet after the array
    ("route-request", TlvType.PATH_VECTOR, b""),  # not even the count
    ("sync-request", TlvType.AGENT_IDS, b"\x00\x01" + bytes(15)),
    ("digest-entries", TlvType.DIGEST_ENTRIES, b"\x00\x01" + bytes(23)),
    ("digest-children", TlvType.DIGEST_CHILDREN, b"\x01" + bytes(35)),
    ("discover-reply", TlvType.RESULT, b"\x25"),
    ("update", TlvType.ADVERTISE, bytes(8) + b"\x02" + bytes(16)),
    ("update", TlvType.ADVERTISE, bytes(8)),
])
def test_variable_size_tlv_with_inconsistent_length(name: str, tlv: TlvType, value: bytes) -> None:
    raw = Raw.of(name).with_value(tlv, value)
    fails(raw.build(), ErrorCode.INVALID_TLV_LENGTH, raw.value_offset(tlv))


def test_unregistered_enum_value() -> None:
    raw = Raw.of("discover").with_value(TlvType.SCOPE, b"\x03")
    fails(raw.build(), ErrorCode.INVALID_TLV_VALUE, raw.value_offset(TlvType.SCOPE))


@pytest.mark.parametrize(("value", "error_class"), [
    (0xFFFF, None), (0x0100, ErrorClass.DECODING), (0x0480, ErrorClass.ROUTING),
    (0x06FF, ErrorClass.RESOURCES)])
def test_any_status_value_is_accepted_and_keeps_its_class(
        value: int, error_class: ErrorClass | None) -> None:
    """Section 4.3: STATUS takes any 16-bit code; one not in the registry is kept as it
    came (re-encoded unchanged) and handled by its class."""
    data = Raw.of("refresh-ack").with_value(TlvType.STATUS, value.to_bytes(2, "big")).build()
    msg = decode(data)
    assert isinstance(msg, RefreshAck) and encode(msg) == data
    assert msg.status == value and not msg.status.registered
    assert msg.status.error_class is error_class
    assert ErrorCode.NO_ROUTE.registered and ErrorCode.NO_ROUTE.error_class is ErrorClass.ROUTING


@pytest.mark.parametrize(("name", "tlv"), [("notify", TlvType.DIAGNOSTIC),
                                           ("open", TlvType.DOMAIN)])
def test_invalid_utf8_points_at_the_bad_octet(name: str, tlv: TlvType) -> None:
    raw = Raw.of(name)
    text = raw.value(tlv)
    raw = raw.with_value(tlv, text[:3] + b"\xc3\x28" + text[5:])  # 0xC3 without continuation
    fails(raw.build(), ErrorCode.INVALID_TLV_VALUE, raw.value_offset(tlv) + 3)


# --- Section 7.1: CBOR ------------------------------------------------------------------------
def _query(name: str = "route-request-by-query") -> tuple[Raw, bytes]:
    raw = Raw.of(name)
    return raw, raw.value(TlvType.QUERY)


def test_query_example_shape() -> None:
    _, q = _query()
    assert q == cbor2.dumps({1: ["forecast"]})  # a1 01 81 68 'forecast'


@pytest.mark.parametrize("value", [
    bytes.fromhex("a1018268") + b"forecast",  # array of 2 holds one item
    bytes.fromhex("a10181"),                  # array of 1 holds none
    bytes.fromhex("a101816a") + b"forecast",  # text shorter than its head says
    bytes.fromhex("a10181ff"),                # break outside an indefinite item
    bytes.fromhex("a1018162c328"),            # text string that is not UTF-8
    bytes.fromhex("a1011c"),                  # reserved additional information 28
    b"",
])
def test_malformed_cbor(value: bytes) -> None:
    """Offsets of malformed CBOR point at the start of the item (Section 7.1)."""
    raw = Raw.of("route-request-by-query").with_value(TlvType.QUERY, value)
    fails(raw.build(), ErrorCode.MALFORMED_CBOR, raw.value_offset(TlvType.QUERY))


@pytest.mark.parametrize("value", [b"\x81" * 30000 + b"\x00", b"\xa1\x01" * 15000 + b"\x00"])
def test_deeply_nested_cbor(value: bytes) -> None:
    raw = Raw.of("route-request-by-query").with_value(TlvType.QUERY, value)
    fails(raw.build(), ErrorCode.MALFORMED_CBOR, raw.value_offset(TlvType.QUERY))


@pytest.mark.parametrize("non_deterministic", [False, True])
def test_cbor_item_followed_by_more_data(non_deterministic: bool) -> None:
    """One item filling the value is checked before its encoding (Section 7.1): data
    after an item is MALFORMED_CBOR even when the item is not deterministic."""
    raw, q = _query()
    if non_deterministic:
        q = bytes.fromhex("a1180181") + b"\x68forecast"  # key 1 in two octets
    raw = raw.with_value(TlvType.QUERY, q + b"\x00")
    fails(raw.build(), ErrorCode.MALFORMED_CBOR, raw.value_offset(TlvType.QUERY) + len(q))


@pytest.mark.parametrize(("value", "diff"), [
    (bytes.fromhex("a1180181") + b"\x68forecast", 1),           # key 1 in two octets
    (bytes.fromhex("b8010181") + b"\x68forecast", 0),           # map length in two octets
    (bytes.fromhex("a101980168") + b"forecast", 2),             # array length in two octets
    (bytes.fromhex("a101817808") + b"forecast", 3),             # text length in two octets
    (bytes.fromhex("a1019f68") + b"forecast" + b"\xff", 2),     # indefinite-length array
    (bytes.fromhex("bf018168") + b"forecast" + b"\xff", 0),     # indefinite-length map
    (bytes.fromhex("a101817f68") + b"forecast" + b"\xff", 3),   # indefinite-length text
    (bytes.fromhex("a2018168") + b"forecast" + bytes.fromhex("018161") + b"x", 0),  # dup key
])
def test_non_deterministic_cbor(value: bytes, diff: int) -> None:
    raw = Raw.of("route-request-by-query").with_value(TlvType.QUERY, value)
    fails(raw.build(), ErrorCode.NON_DETERMINISTIC_CBOR, raw.value_offset(TlvType.QUERY) + diff)


def test_unsorted_map_keys() -> None:
    raw = Raw.of("open")
    policy = cbor2.loads(raw.value(TlvType.EXPORT_POLICY))
    assert list(policy) == [1, 2]
    raw = raw.with_value(TlvType.EXPORT_POLICY, cbor2.dumps(dict(reversed(policy.items()))))
    fails(raw.build(), ErrorCode.NON_DETERMINISTIC_CBOR, raw.value_offset(TlvType.EXPORT_POLICY))


# --- Section 7.2.1: COSE_Sign1 ----------------------------------------------------------------
def _cose(parts: Any, tag: int = 18) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, parts), canonical=True)


def _register_parts() -> list[Any]:
    signed: SignedRecord = EX["register"].record
    return [signed.protected, signed.unprotected, signed.payload, signed.signature]


def _broken_cose() -> list[tuple[str, bytes]]:
    p = _register_parts()
    return [
        ("tag 17", _cose(p, 17)),
        ("untagged", cbor2.dumps(p, canonical=True)),
        ("3 parts", _cose(p[:3])),
        ("5 parts", _cose([*p, b""])),
        ("protected is a map", _cose([{1: -8}, *p[1:]])),
        ("payload is text", _cose([p[0], p[1], "x", p[3]])),
        ("signature is null", _cose([*p[:3], None])),
        ("unprotected is a bstr", _cose([p[0], b"", *p[2:]])),
        ("unprotected text label", _cose([p[0], {"kid": b"x"}, *p[2:]])),
        ("kid is text", _cose([p[0], {4: "x"}, *p[2:]])),
        ("protected not CBOR", _cose([b"\xa1\x01", *p[1:]])),
        ("protected non-deterministic", _cose([b"\xa1\x01\x38\x07", *p[1:]])),
        ("protected lacks alg", _cose([cbor2.dumps({4: b""}), *p[1:]])),
        ("protected has more", _cose([cbor2.dumps({1: -8, 3: 0}), *p[1:]])),
        ("alg unknown", _cose([cbor2.dumps({1: -35}), *p[1:]])),
        ("alg is text", _cose([cbor2.dumps({1: "EdDSA"}), *p[1:]])),
    ]


@pytest.mark.parametrize("case", [c for c, _ in _broken_cose()])
def test_cose_structure_errors(case: str) -> None:
    value = dict(_broken_cose())[case]
    raw = Raw.of("register").with_value(TlvType.SIGNED_RECORD, value)
    fails(raw.build(), ErrorCode.MALFORMED_COSE, raw.value_offset(TlvType.SIGNED_RECORD))


def test_cose_envelope_must_be_deterministic() -> None:
    good = Raw.of("register").value(TlvType.SIGNED_RECORD)
    assert good[:2] == b"\xd2\x84"
    for bad, diff in [(b"\xd8\x12" + good[1:], 0),        # tag 18 in two octets
                      (b"\xd2\x98\x04" + good[2:], 1)]:   # array head in two octets
        raw = Raw.of("register").with_value(TlvType.SIGNED_RECORD, bad)
        fails(raw.build(), ErrorCode.NON_DETERMINISTIC_CBOR,
              raw.value_offset(TlvType.SIGNED_RECORD) + diff)


@pytest.mark.parametrize("unprotected", [
    {33: b"c", 4: b"kid"},      # labels out of order: the first key differs
    {4: b"kid", 33: 1.5},       # a float wider than needed (cbor2 writes float64 by default)
])
def test_cose_unprotected_header_must_be_deterministic(unprotected: dict[int, Any]) -> None:
    p = _register_parts()
    value = cbor2.dumps(cbor2.CBORTag(18, [p[0], unprotected, *p[2:]]))
    canonical = _cose([p[0], unprotected, *p[2:]])
    assert value != canonical
    diff = next(i for i, (a, b) in enumerate(zip(value, canonical, strict=True)) if a != b)
    assert diff > 2 + 1 + len(p[0])  # inside the unprotected map
    raw = Raw.of("register").with_value(TlvType.SIGNED_RECORD, value)
    fails(raw.build(), ErrorCode.NON_DETERMINISTIC_CBOR,
          raw.value_offset(TlvType.SIGNED_RECORD) + diff)
    roundtrips(raw.with_value(TlvType.SIGNED_RECORD, canonical).build())


def test_cose_extra_unprotected_labels_are_kept() -> None:
    p = _register_parts()
    value = _cose([p[0], {4: p[1][4], 33: b"cert", 99: [1, "x"]}, *p[2:]])
    msg = roundtrips(Raw.of("register").with_value(TlvType.SIGNED_RECORD, value).build())
    assert msg.record.unprotected[99] == [1, "x"]


def _signed_with_payload(payload: bytes) -> tuple[bytes, int]:
    """A COSE_Sign1 of the example record's envelope around ``payload``, and the offset
    of the payload's first octet in it."""
    p = _register_parts()
    cose = _cose([*p[:2], payload, p[3]])
    head = 3 if len(payload) > 0xFF else 2 if len(payload) > 23 else 1
    where = 2 + 1 + len(p[0]) + len(cbor2.dumps(p[1], canonical=True)) + head
    assert cose[where:where + len(payload)] == payload
    return cose, where


def _fails_in_payload(payload: bytes, code: ErrorCode, offset: int) -> None:
    """Errors inside the record payload point into it (Section 7.2.1)."""
    cose, where = _signed_with_payload(payload)
    raw = Raw.of("register").with_value(TlvType.SIGNED_RECORD, cose)
    fails(raw.build(), code, raw.value_offset(TlvType.SIGNED_RECORD) + where + offset)


def test_cose_payload_must_be_deterministic() -> None:
    payload = _register_parts()[2]
    assert payload[:3] == b"\xb0\x01\x78"  # map(16), key 1, text of 1-octet length
    _fails_in_payload(payload[:1] + b"\x18\x01" + payload[2:], ErrorCode.NON_DETERMINISTIC_CBOR, 1)
    _fails_in_payload(payload[:-1], ErrorCode.MALFORMED_CBOR, 0)
    _fails_in_payload(payload + b"\x00", ErrorCode.MALFORMED_CBOR, len(payload))


def test_unsorted_text_keys_in_record_attributes() -> None:
    # "region" (6 octets) must come before "latency_ms" (10): length first, then bytes.
    payload = cbor2.loads(_register_parts()[2])
    assert list(payload[16]) == ["region", "latency_ms"]
    payload[16] = dict(reversed(payload[16].items()))
    _fails_in_payload(cbor2.dumps(payload), ErrorCode.NON_DETERMINISTIC_CBOR, 0)


# --- Section 7.2-7.6: record and value schemas --------------------------------------------------
def _change(key: Any, value: Any = None, *, drop: bool = False) -> Any:
    def change(record: dict[Any, Any]) -> Any:
        record = dict(record)
        if drop:
            del record[key]
        else:
            record[key] = value
        return record
    return change


RECORD_VIOLATIONS: dict[str, Any] = {
    "payload not a map": lambda d: list(d.items()),
    "payload is text": lambda d: "record",
    "missing name": _change(3, drop=True),
    "undefined key": _change(99, "x"),
    "text key": _change("name", "x"),
    "agent id 15 octets": _change(2, bytes(15)),
    "agent id text": _change(2, "x" * 16),
    "name is bytes": _change(3, b"Weather"),
    "uri other domain": _change(1, "dmsc://b.example/weather"),
    "uri no agent name": _change(1, "dmsc://a.example/"),
    "uri nested": _change(1, "dmsc://a.example/x/y"),
    "uri other scheme": _change(1, "dmsx://a.example/weather"),
    "uri longer domain": _change(1, "dmsc://xa.example/weather"),
    "negative issued-at": _change(12, -1),
    "lease is text": _change(13, "3600"),
    "version is bool": _change(14, True),
    "skills not an array": _change(7, {}),
    "skill not a map": _change(7, ["forecast"]),
    "skill lacks tags": _change(7, [{1: "a", 2: "b"}]),
    "skill tag not text": _change(7, [{1: "a", 2: "b", 4: [1]}]),
    "empty optional skill modes": _change(7, [{1: "a", 2: "b", 4: [], 5: []}]),
    "endpoint extra key": _change(10, [{1: "quic", 2: "dmsc://x", 3: 0}]),
    "provider lacks organization": _change(6, {2: "https://x"}),
    "attributes not a map": _change(16, ["region"]),
    "attribute name not text": _change(16, {1: "eu"}),
    "attribute value float": _change(16, {"region": 1.5}),
    "attribute value null": _change(16, {"region": None}),
    "empty attributes": _change(16, {}),
    "null attributes": _change(16, None),
    "null description": _change(4, None),
    "null provider": _change(6, None),
    "null provider url": _change(6, {1: "Example", 2: None}),
    "null skill description": _change(7, [{1: "a", 2: "b", 3: None, 4: []}]),
    "null skill modes": _change(7, [{1: "a", 2: "b", 4: [], 6: None}]),
}


@pytest.mark.parametrize("case", sorted(RECORD_VIOLATIONS))
def test_record_schema_violations(case: str) -> None:
    record = RECORD_VIOLATIONS[case](cbor2.loads(_register_parts()[2]))
    _fails_in_payload(cbor2.dumps(record, canonical=True), ErrorCode.INVALID_TLV_VALUE, 0)


@pytest.mark.parametrize(("name", "tlv", "value"), [
    ("discover", TlvType.QUERY, [1]),
    ("discover", TlvType.QUERY, {8: "x"}),
    ("discover", TlvType.QUERY, {1: []}),                      # ? 1 => [+ tstr]
    ("discover", TlvType.QUERY, {4: [["a", 99, 1]]}),          # unknown operator
    ("discover", TlvType.QUERY, {4: [["a", 6, "eu"]]}),        # IN needs an array
    ("discover", TlvType.QUERY, {4: [["a", 0, [1]]]}),         # only IN takes an array
    ("discover", TlvType.QUERY, {4: [["a", 0]]}),              # 3 elements
    ("discover", TlvType.QUERY, {3: None}),                    # null is not absent
    ("discover", TlvType.QUERY, {4: None}),
    ("discover", TlvType.TRACE_CONTEXT, {2: "x"}),
    ("discover", TlvType.TRACE_CONTEXT, {1: "x", 2: None}),
    ("trace-request", TlvType.HOP, {1: bytes(16), 2: "a", 3: 5, 4: None}),
    ("open", TlvType.EXPORT_POLICY, {1: ["b.example"], 3: None}),
    ("open", TlvType.EXPORT_POLICY, {1: ["b.example"], 2: []}),
    ("trace-request", TlvType.HOP, {1: bytes(16), 2: "a", 3: -5}),
    ("trace-request", TlvType.HOP, {1: bytes(8), 2: "a", 3: 5}),
])
def test_value_schema_violations(name: str, tlv: TlvType, value: Any) -> None:
    raw = Raw.of(name).with_value(tlv, cbor2.dumps(value, canonical=True))
    fails(raw.build(), ErrorCode.INVALID_TLV_VALUE, raw.value_offset(tlv))


def test_nested_record_offsets_are_shifted() -> None:
    # RESULT = score (2 octets) + COSE_Sign1; ADVERTISE = version, path, COSE_Sign1.
    raw = Raw.of("discover-reply")
    res = raw.value(TlvType.RESULT)
    raw = raw.with_value(TlvType.RESULT, res[:2] + b"\xd1" + res[3:])
    fails(raw.build(), ErrorCode.MALFORMED_COSE, raw.value_offset(TlvType.RESULT) + 2)
    raw = Raw.of("update")
    adv = raw.value(TlvType.ADVERTISE)
    start = 8 + 1 + 16 * adv[8]
    raw = raw.with_value(TlvType.ADVERTISE, adv[:start] + b"\xd1" + adv[start + 1:])
    fails(raw.build(), ErrorCode.MALFORMED_COSE, raw.value_offset(TlvType.ADVERTISE) + start)


# --- encoding refuses what cannot be sent ---------------------------------------------------
@pytest.mark.parametrize("msg", [
    replace(EX["refresh-ack"], lease=2**32),
    replace(EX["refresh-ack"], lease=-1),
    replace(EX["keepalive"], transaction_id=2**64),
    replace(EX["keepalive"], flags=0x10000),
    replace(EX["route-request"], hop_limit=256),
    replace(EX["route-request"], source_agent=bytes(15)),
    replace(EX["route-request"], path=(bytes(16),) * 256),
    replace(EX["route-request"], payload=bytes(MAX_PDU_SIZE)),  # one TLV over 65535
    replace(EX["route-request"], payload=bytes(MAX_PDU_SIZE - 100)),  # the PDU over
    RefreshAck(status=None),  # type: ignore[arg-type]
    Keepalive(unknown_tlvs=(RawTlv(0x0042, bytes(0x10000)),)),
])
def test_encode_refuses(msg: Any) -> None:
    with pytest.raises(EncodeError):
        encode(msg)


# --- stream framing ---------------------------------------------------------------------------
def test_peek_length() -> None:
    data = encode(EX["register"])
    for n in range(8):
        assert peek_length(data[:n]) is None
    assert peek_length(data[:8]) == len(data)
    assert peek_length(data) == len(data)
    for raw, code, offset in [
        (replace(Raw.of("keepalive"), version=2), ErrorCode.UNSUPPORTED_VERSION, 0),
        (replace(Raw.of("keepalive"), length=15), ErrorCode.LENGTH_MISMATCH, 4),
        (replace(Raw.of("keepalive"), length=MAX_PDU_SIZE + 1), ErrorCode.PDU_TOO_LARGE, 4),
    ]:
        with pytest.raises(DecodeError) as info:
            peek_length(raw.build()[:8])
        assert (info.value.code, info.value.offset) == (code, offset)
