"""The codec's fast paths agree with the construct definitions they are derived from
(draft-dmsc-protocol-00, Sections 4.1, 4.2 and 5).

``construct`` is the definition of every fixed layout; :mod:`dmscproto.codec.wire` turns
those definitions into ``struct.Struct`` objects (:func:`wire.fixed_struct`) and parses
with them.  Here every example PDU is parsed and built both ways, header, TLV framing
and each TLV value, and must agree byte for byte; random octets must be accepted by the
fast path exactly when the interpreted definition parses them and consumes them all.

construct's compiler is not used: its known pitfalls are pinned below.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import construct as c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmscproto.codec import DecodeError, TlvType, decode, encode, wire
from dmscproto.codec.registry import HEADER_SIZE
from dmscproto.codec.wire import (
    VALUE_CODECS,
    AdvertiseCodec,
    ArrayCodec,
    BytesCodec,
    CapabilitySummaryCodec,
    FixedCodec,
    ResultCodec,
    StructCodec,
    TextCodec,
)
from dmscproto.testing.examples import examples

EXAMPLES: dict[str, Any] = examples()
#: The examples, and one that carries an ACCESS_TOKEN (no example does).
PDUS = {name: encode(msg) for name, msg in EXAMPLES.items()} | {
    "refresh-with-token": encode(replace(EXAMPLES["refresh"], token=b"\x01token"))}
TLVS = sorted({(t.type, t.value) for data in PDUS.values()
               for t in wire.Pdu.parse(data).tlvs if t.type in set(TlvType)})


def plain(x: Any) -> Any:
    """construct's Containers and ListContainers as plain dicts and lists."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, list):
        return [plain(v) for v in x]
    return x


def fields_of(value: Any) -> Any:
    """A codec's parsed value in construct's shape (for comparison)."""
    if hasattr(value, "__slots__"):
        return {f: fields_of(getattr(value, f)) for f in value.__slots__}
    if isinstance(value, tuple):
        return [fields_of(v) for v in value]
    return int(value) if isinstance(value, int) else value


# --- Sections 4.1 and 4.2: header and TLV framing -------------------------------------------
@pytest.mark.parametrize("name", sorted(PDUS))
def test_header_and_framing_agree(name: str) -> None:
    data = PDUS[name]
    ref = wire.Pdu.parse(data)
    assert tuple(ref.header.values())[1:] == wire.HEADER_STRUCT.unpack_from(data)
    assert wire.Pdu.build(ref) == data
    off = HEADER_SIZE
    for tlv in ref.tlvs:
        assert wire.TLV_HEADER_STRUCT.unpack_from(data, off) == (tlv.type, tlv.length)
        assert wire.Tlv.build(tlv) == data[off:off + 4 + tlv.length]
        off += 4 + tlv.length
    assert off == len(data) == ref.header.length
    msg = decode(data)
    assert (msg.transaction_id, msg.flags) == (ref.header.transaction_id, ref.header.flags)


def test_derived_structs_match_construct_sizes() -> None:
    assert wire.HEADER_STRUCT.size == wire.Header.sizeof() == HEADER_SIZE
    assert wire.TLV_HEADER_STRUCT.size == wire.TlvHeader.sizeof()
    for tlv, codec in VALUE_CODECS.items():
        if isinstance(codec, FixedCodec | StructCodec):
            assert codec._struct.size == codec.fmt.sizeof(), tlv.name


# --- Section 5: every TLV value, both directions ------------------------------------------------
@pytest.mark.parametrize(("tlv", "value"), TLVS, ids=[f"{TlvType(t).name}-{i}"
                                                     for i, (t, _) in enumerate(TLVS)])
def test_value_codec_agrees_with_its_construct(tlv: int, value: bytes) -> None:
    codec = VALUE_CODECS[TlvType(tlv)]
    fast = codec.parse(value)
    assert codec.build(fast) == value
    ref = codec.fmt.parse(value)
    assert codec.fmt.build(ref) == value
    if isinstance(codec, FixedCodec | StructCodec | ArrayCodec):
        assert plain(ref) == fields_of(fast)
        assert codec.fmt.build(fields_of(fast)) == codec.build(fast)
    elif isinstance(codec, ResultCodec):
        assert (ref.score, ref.record) == (fast.score, fast.record.encode())
    elif isinstance(codec, AdvertiseCodec):
        assert (ref.version, list(ref.path), ref.record) == (
            fast.version, list(fast.path), fast.record.encode())
    elif isinstance(codec, CapabilitySummaryCodec):
        assert (ref.hashes, ref.count, ref.bits) == (fast.hashes, fast.count, fast.bits)
    elif isinstance(codec, TextCodec):
        assert ref == fast
    else:  # octets, CBOR and COSE values: GreedyBytes in the definition
        assert ref == value
        assert isinstance(codec, BytesCodec) or codec.fmt is c.GreedyBytes


def test_every_tlv_type_is_exercised() -> None:
    assert {TlvType(t) for t, _ in TLVS} == set(TlvType)


LAYOUT_CODECS = sorted((t for t, v in VALUE_CODECS.items()
                        if isinstance(v, FixedCodec | StructCodec | ArrayCodec)),
                       key=int)


@pytest.mark.parametrize("tlv", LAYOUT_CODECS, ids=[t.name for t in LAYOUT_CODECS])
def test_fast_path_accepts_exactly_what_the_definition_parses(tlv: TlvType) -> None:
    codec = VALUE_CODECS[tlv]

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(st.binary(max_size=40) | st.integers(0, 3).flatmap(
        lambda n: st.binary(min_size=n * 16 + 1, max_size=n * 24 + 2)))
    def check(data: bytes) -> None:
        try:
            ref = codec.fmt.parse(data)
            ref_ok = codec.fmt.build(ref) == data  # and nothing left over
        except c.ConstructError:
            ref_ok = False
        try:
            fast = codec.parse(data)
        except DecodeError:
            fast_ok = False
        else:
            fast_ok = True
            assert plain(ref) == fields_of(fast)
        if fast_ok != ref_ok and codec._convert is not None:  # type: ignore[attr-defined]
            assert ref_ok and not fast_ok  # an integer the enum does not register
        else:
            assert fast_ok == ref_ok

    check()


# --- construct's compiler: the pitfalls that keep it out ---------------------------------------
def walk(con: c.Construct) -> list[c.Construct]:
    out = [con]
    for attr in ("subcon", "subcons", "cases", "default", "keyfunc"):
        sub = getattr(con, attr, None)
        if isinstance(sub, c.Construct):
            out += walk(sub)
        elif isinstance(sub, list):
            for s in sub:
                out += walk(s)
        elif isinstance(sub, dict):
            for s in sub.values():
                out += walk(s)
    return out


def test_no_compiled_construct_and_no_switch_on_enum() -> None:
    roots = [wire.Pdu, wire.Header, wire.TlvHeader, wire.Tlv] + [
        v.fmt for v in VALUE_CODECS.values()]
    nodes = [n for r in roots for n in walk(r)]
    assert not [n for n in nodes if isinstance(n, c.Compiled)]
    assert not [n for n in nodes if isinstance(n, c.Switch | c.Enum)]
    assert not any(isinstance(getattr(v, attr, None), c.Compiled)
                   for v in VALUE_CODECS.values() for attr in vars(v))


def test_compiled_switch_on_enum_drops_bytes() -> None:
    """The pitfall the issue names: compiled ``Switch`` keyed by an ``Enum`` builds
    without the switched value."""
    fmt = c.Struct("t" / c.Enum(c.Int8ub, A=1), "v" / c.Switch(c.this.t, {"A": c.Int16ub}))
    assert fmt.build({"t": "A", "v": 5}) == b"\x01\x00\x05"
    assert fmt.compile().build({"t": "A", "v": 5}) == b"\x01"


def test_compiled_prefixed_array_accepts_short_arrays() -> None:
    """Why :class:`wire.ArrayCodec` parses with ``struct``: a compiled
    ``PrefixedArray`` of ``Bytes`` returns short items instead of failing."""
    data = b"\x02" + bytes(16)  # count 2, one ID
    assert list(wire.IdList8.compile().parse(data)) == [bytes(16), b""]
    with pytest.raises(c.StreamError):
        wire.IdList8.parse(data)
    with pytest.raises(DecodeError):
        VALUE_CODECS[TlvType.PATH_VECTOR].parse(data)
