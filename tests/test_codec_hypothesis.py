"""Property tests of the codec (draft-dmsc-protocol-00, Sections 4 and 7).

* Random valid messages of every type, built from each class's TLV metadata (records,
  queries, policies, hop records, unknown non-critical TLVs included), survive
  ``decode(encode(m)) == m`` and ``encode(decode(b)) == b``.
* Mutated PDUs (byte flips, insertions, deletions, truncations, edited length fields)
  either decode, and then re-encode to exactly the mutated octets, or raise
  :class:`DecodeError` with a registered code and an offset inside the input.
* A relayed message (ROUTE_REQUEST, ROUTE_REPLY) rewritten with any changes encodes,
  copying what did not change from the octets received, exactly as the same message
  built TLV by TLV (the relay fast path, :func:`~dmscproto.codec.pdu.rewrite`).
* The fast paths of the CBOR and COSE decoders decide every mutated input exactly as
  their reference paths do.
* The message codec's shortcuts (a raw byte string copied without its value codec, the
  constant TLV header of a fixed-size value, the reader and the builder of a message's
  usual TLVs) change nothing: every message encodes, and every PDU, valid or mutated, decodes (or
  fails at the same offset) as without them.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import (
    MISSING,
    FrozenInstanceError,
    dataclass,
    field,
    fields,
    make_dataclass,
    replace,
)
from typing import Any, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmscproto.codec import (
    MESSAGE_CLASSES,
    Advertisement,
    CapabilityRecord,
    CapabilitySummary,
    Constraint,
    ConstraintOp,
    CoseAlgorithm,
    DecodeError,
    DigestNode,
    DigestSummary,
    DiscoveryQuery,
    Endpoint,
    ErrorCode,
    ExportPolicy,
    HopRecord,
    Message,
    Provider,
    RawTlv,
    Result,
    Scope,
    SignedRecord,
    Skill,
    TlvType,
    TraceContext,
    VersionedId,
    cbor,
    decode,
    encode,
    pdu,
)
from dmscproto.codec.errors import EncodeError
from dmscproto.codec.messages import OPTIONAL, REPEATED, _dict_init
from dmscproto.codec.pdu import rewrite
from dmscproto.codec.registry import CRITICAL_BIT, HEADER_SIZE, ID_SIZE
from dmscproto.codec.scan import scan_record
from dmscproto.codec.wire import VALUE_CODECS, CborCodec
from dmscproto.testing.examples import examples

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- value strategies -----------------------------------------------------------------
ids = st.binary(min_size=ID_SIZE, max_size=ID_SIZE)
short_text = st.text(max_size=12)
texts = st.lists(short_text, max_size=3).map(tuple)
uint8 = st.integers(0, 0xFF)
uint16 = st.integers(0, 0xFFFF)
uint32 = st.integers(0, 0xFFFFFFFF)
uint64 = st.integers(0, 2**64 - 1)
big_uint = st.one_of(uint64, st.integers(2**64, 2**72))  # CBOR bignums (tag 2) too
attr_value = st.one_of(short_text, st.integers(-(2**70), 2**70), st.booleans())

providers = st.builds(Provider, short_text, st.none() | short_text)
skills = st.builds(Skill, short_text, short_text, texts, st.none() | short_text, texts, texts)
endpoints = st.builds(Endpoint, short_text, short_text)


@st.composite
def records(draw: st.DrawFn) -> CapabilityRecord:
    domain = draw(short_text)
    name = draw(st.text(min_size=1, max_size=12).filter(lambda n: "/" not in n))
    return CapabilityRecord(
        agent_uri=f"dmsc://{domain}/{name}", agent_id=draw(ids), name=draw(short_text),
        version=draw(short_text), skills=tuple(draw(st.lists(skills, max_size=2))),
        default_input_modes=draw(texts), default_output_modes=draw(texts),
        endpoints=tuple(draw(st.lists(endpoints, max_size=2))), domain=domain,
        issued_at=draw(big_uint), lease=draw(uint32), record_version=draw(big_uint),
        public_key=draw(st.binary(max_size=48)), description=draw(st.none() | short_text),
        provider=draw(st.none() | providers),
        attributes=draw(st.dictionaries(short_text, attr_value, max_size=3)))


unprotected_extra = st.dictionaries(
    st.sampled_from([33, 5, 99, 1000]),
    st.one_of(st.binary(max_size=8), st.integers(-5, 2**40), short_text,
              st.lists(st.binary(max_size=4), max_size=2)), max_size=2)


@st.composite
def signed_records(draw: st.DrawFn) -> SignedRecord:
    record = draw(records())
    unprotected = {4: record.agent_id, **draw(unprotected_extra)}
    env = SignedRecord.unsigned(record, draw(st.sampled_from(CoseAlgorithm)), unprotected)
    return replace(env, signature=draw(st.binary(min_size=0, max_size=64)))


constraints = st.sampled_from(ConstraintOp).flatmap(lambda op: st.builds(
    Constraint, short_text, st.just(op),
    st.lists(attr_value, max_size=3).map(tuple) if op is ConstraintOp.IN else attr_value))
queries = st.builds(DiscoveryQuery, texts, texts, st.none() | short_text,
                    st.lists(constraints, max_size=2).map(tuple), texts, texts,
                    st.none() | short_text)
traces = st.builds(TraceContext, short_text, st.none() | short_text)
versioned = st.builds(VersionedId, ids, uint64)

VALUES: dict[TlvType, st.SearchStrategy[Any]] = {
    TlvType.TRACE_CONTEXT: traces,
    TlvType.DIAGNOSTIC: st.text(max_size=40),
    TlvType.AGENT_ID: ids,
    TlvType.GATEWAY_ID: ids,
    TlvType.SIGNED_RECORD: signed_records(),
    TlvType.LEASE: uint32,
    TlvType.STATUS: st.sampled_from(ErrorCode),
    TlvType.NONCE: st.binary(min_size=16, max_size=16),
    TlvType.TIMESTAMP: uint64,
    TlvType.QUERY: queries,
    TlvType.SCOPE: st.sampled_from(Scope),
    TlvType.MAX_RESULTS: uint16,
    TlvType.RESULT: st.builds(Result, uint16, signed_records()),
    TlvType.SOURCE_AGENT: ids,
    TlvType.TARGET_AGENT: ids,
    TlvType.HOP_LIMIT: uint8,
    TlvType.PATH_VECTOR: st.lists(ids, max_size=3).map(tuple),
    TlvType.PAYLOAD: st.binary(max_size=64),
    TlvType.DOMAIN: short_text,
    TlvType.HOLD_TIME: uint16,
    TlvType.GATEWAY_CAPS: uint32,
    TlvType.ADVERTISE: st.builds(Advertisement, uint64, st.lists(ids, max_size=3).map(tuple),
                                 signed_records()),
    TlvType.WITHDRAW: versioned,
    TlvType.DIGEST_SUMMARY: st.builds(DigestSummary, uint32,
                                      st.binary(min_size=32, max_size=32)),
    TlvType.DIGEST_ENTRIES: st.lists(versioned, max_size=3).map(tuple),
    TlvType.AGENT_IDS: st.lists(ids, max_size=3).map(tuple),
    TlvType.ACCESS_TOKEN: st.binary(max_size=32),
    TlvType.OFFENDING_TYPE: uint8,
    TlvType.TIMEOUT: uint32,
    TlvType.EXPORT_POLICY: st.builds(ExportPolicy, texts, texts, texts, texts),
    TlvType.SEQUENCE: uint32,
    TlvType.HOP: st.builds(HopRecord, ids, short_text, uint64, st.none() | short_text),
    TlvType.SUMMARY_FILTER: st.builds(
        CapabilitySummary, st.integers(1, 16), uint32,
        st.integers(1, 8).flatmap(lambda words: st.binary(min_size=8 * words,
                                                          max_size=8 * words))),
    TlvType.RETRY_AFTER: uint32,
    TlvType.PURGE: versioned,
    TlvType.DIGEST_NODE: st.builds(DigestNode, uint8, uint16),
    TlvType.DIGEST_CHILDREN: st.lists(st.builds(DigestSummary, uint32,
                                                st.binary(min_size=32, max_size=32)),
                                      max_size=3).map(tuple),
    TlvType.CERTIFICATE_DER: st.binary(max_size=64),
    TlvType.THUMBPRINT: st.binary(min_size=32, max_size=32),
}


def test_every_tlv_type_has_a_strategy() -> None:
    assert set(VALUES) == set(TlvType)


@st.composite
def messages(draw: st.DrawFn, cls: type[Message]) -> Message:
    """A random valid message of class ``cls``, built from its TLV metadata."""
    kwargs: dict[str, Any] = {}
    for spec in cls.SPEC:
        value = VALUES[spec.tlv]
        if spec.occurs is REPEATED:
            kwargs[spec.name] = tuple(draw(st.lists(value, max_size=2)))
        elif spec.occurs is OPTIONAL:
            kwargs[spec.name] = draw(st.none() | value)
        else:
            kwargs[spec.name] = draw(value)
    # Unknown TLVs: non-critical types this message does not define, in wire order.
    free = st.integers(0, CRITICAL_BIT - 1).filter(lambda t: t not in cls.BY_TLV)
    unknown = draw(st.lists(st.builds(RawTlv, free, st.binary(max_size=12)), max_size=3))
    unknown.sort(key=lambda t: t.type)
    return cls(transaction_id=draw(uint64), flags=draw(uint16), unknown_tlvs=tuple(unknown),
               **kwargs)


CLASSES = [MESSAGE_CLASSES[t] for t in sorted(MESSAGE_CLASSES)]
any_message = st.sampled_from(CLASSES).flatmap(messages)


@pytest.mark.parametrize("cls", CLASSES, ids=[c.TYPE.name for c in CLASSES])
def test_round_trip_every_message_type(cls: type[Message]) -> None:
    @SETTINGS
    @given(messages(cls))
    def check(msg: Message) -> None:
        data = encode(msg)
        again = decode(data)
        assert again == msg
        assert type(again) is cls
        assert encode(again) == data == built(again)

    check()


def built(msg: Message) -> bytes:
    """``msg`` encoded TLV by TLV: a copy made by ``replace`` has no wire image (a decoded
    relayed message's ``encode`` copies its octets, which proves nothing about them)."""
    return encode(replace(msg))


RELAYED = [cls for cls in CLASSES if cls.RELAYED]


@pytest.mark.parametrize("cls", RELAYED, ids=[c.TYPE.name for c in RELAYED])
def test_rewritten_relayed_messages_encode_as_built(cls: type[Message]) -> None:
    """Any fields changed by one or two rewrites (a relay rewrites once or twice)."""
    names = sorted(cls.FIELD_NAMES)

    @SETTINGS
    @given(messages(cls), messages(cls), st.lists(st.sets(st.sampled_from(names)),
                                                  min_size=1, max_size=2))
    def check(msg: Message, other: Message, steps: list[set[str]]) -> None:
        relayed, changes = decode(encode(msg)), dict[str, Any]()
        for step in steps:
            change = {name: getattr(other, name) for name in step}
            relayed = rewrite(relayed, **change)
            changes |= change
        assert relayed == replace(msg, **changes)
        assert encode(relayed) == built(relayed)

    check()
    with pytest.raises(TypeError, match="no field"):
        rewrite(decode(encode(examples()["route-request"])), hop_limt=3)


def test_message_fields_are_all_generated() -> None:
    """Every dataclass field of every message is a header field or a TLV field."""
    for cls in MESSAGE_CLASSES.values():
        names = {f.name for f in fields(cls)}
        assert names == {s.name for s in cls.SPEC} | {"transaction_id", "flags", "unknown_tlvs"}


def dataclass_twin(cls: type[Message]) -> Any:
    """``cls`` as a plain frozen keyword-only dataclass, with the ``__init__`` that
    :mod:`dataclasses` makes (the message classes' own stores into ``__dict__``)."""
    return make_dataclass(cls.__name__, [(f.name, f.type, field(default=f.default))
                                         if f.default is not MISSING else (f.name, f.type)
                                         for f in fields(cls)], frozen=True, kw_only=True)


def test_message_init_refuses_what_it_cannot_stand_for() -> None:
    """The made ``__init__`` sets plain fields only: a class with a default factory or a
    ``__post_init__`` is refused when defined, not given an ``__init__`` that skips them."""
    @dataclass(frozen=True, kw_only=True)
    class WithFactory(Message):
        items: list[int] = field(default_factory=list)

    @dataclass(frozen=True, kw_only=True)
    class WithPostInit(Message):
        def __post_init__(self) -> None:
            pass

    for cls in (WithFactory, WithPostInit):
        with pytest.raises(TypeError, match="would not honour"):
            _dict_init(cls)


@pytest.mark.parametrize("cls", CLASSES, ids=[c.TYPE.name for c in CLASSES])
def test_message_init_is_the_dataclass_init(cls: type[Message]) -> None:
    """The same parameters and defaults; the same fields set from the same arguments;
    the same TypeError for a missing or unknown argument; still frozen."""
    twin = dataclass_twin(cls)
    assert str(inspect.signature(cls)) == str(inspect.signature(twin))
    assert cls.__init__.__qualname__ == f"{cls.__name__}.__init__"
    hints = get_type_hints(cls.__init__)  # its annotations name what they name
    assert hints == {f.name: get_type_hints(cls)[f.name] for f in fields(cls)} | {
        "return": type(None)}

    @SETTINGS
    @given(messages(cls))
    def check(msg: Message) -> None:
        given_ = {f.name: getattr(msg, f.name) for f in fields(cls)
                  if f.default is MISSING or getattr(msg, f.name) != f.default}
        assert vars(cls(**given_)) == vars(twin(**given_)) == vars(msg)
        required = [f.name for f in fields(cls) if f.default is MISSING]
        wrong = [given_ | {"bogus": 1}, *({k: v for k, v in given_.items() if k != name}
                                          for name in required[:1])]
        for args in wrong:
            with pytest.raises(TypeError) as ours:
                cls(**args)
            with pytest.raises(TypeError) as theirs:
                twin(**args)
            assert str(ours.value) == str(theirs.value)
        with pytest.raises(FrozenInstanceError):
            msg.flags = 1  # type: ignore[misc]

    check()


# --- mutations --------------------------------------------------------------------------
EXAMPLE_PDUS = [encode(m) for m in examples().values()]


def tlv_length_fields(data: bytes) -> list[int]:
    """Offsets of the TLV length fields of a well-framed PDU."""
    out, off = [], HEADER_SIZE
    while off + 4 <= len(data):
        out.append(off + 2)
        off += 4 + struct.unpack_from(">H", data, off + 2)[0]
    return out


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes], *, pdu: bool = False) -> bytes:
    """``base`` with one to four random edits; for a ``pdu``, the header's length is then
    often set to the new size so that decoding reaches the TLVs."""
    data = bytearray(draw(base))
    lengths = tlv_length_fields(bytes(data))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(
            ["flip", "insert", "delete", "truncate", "pdu-length", "tlv-length", "set"]))
        n = len(data)
        if kind == "flip" and n:
            i = draw(st.integers(0, n - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "set" and n:
            i = draw(st.integers(0, n - 1))
            data[i] = draw(st.sampled_from([0x00, 0x17, 0x18, 0x1F, 0x40, 0x5F, 0x60, 0x7F,
                                            0x80, 0x9F, 0xA0, 0xBF, 0xC2, 0xD8, 0xF4, 0xF6,
                                            0xF9, 0xFB, 0xFF]))
        elif kind == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and n:
            i = draw(st.integers(0, n - 1))
            del data[i:i + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[draw(st.integers(0, n)):]
        elif kind == "pdu-length" and n >= 8:
            struct.pack_into(">I", data, 4, draw(st.one_of(
                st.integers(0, 0xFFFFFFFF), st.integers(max(0, n - 3), n + 3))))
        elif kind == "tlv-length" and lengths and lengths[-1] + 2 <= n:
            at = draw(st.sampled_from([o for o in lengths if o + 2 <= n]))
            old = struct.unpack_from(">H", data, at)[0]
            struct.pack_into(">H", data, at, draw(st.one_of(
                st.integers(0, 0xFFFF), st.integers(max(0, old - 2), min(0xFFFF, old + 2)))))
    if pdu and len(data) >= 8 and draw(st.booleans()):
        data[:2] = draw(base)[:2]  # version and type as they were
        struct.pack_into(">I", data, 4, len(data))
    return bytes(data)


def decodes_or_fails_cleanly(data: bytes) -> None:
    try:
        msg = decode(data)
    except DecodeError as exc:
        assert isinstance(exc.code, ErrorCode) and ErrorCode(exc.code.value) is exc.code
        assert 0 <= exc.offset <= len(data), exc
    else:
        assert encode(msg) == data == built(msg)


@settings(SETTINGS, max_examples=400)
@given(mutated(st.sampled_from(EXAMPLE_PDUS), pdu=True))
def test_mutated_examples(data: bytes) -> None:
    decodes_or_fails_cleanly(data)


@settings(SETTINGS, max_examples=200)
@given(mutated(any_message.map(encode), pdu=True))
def test_mutated_random_messages(data: bytes) -> None:
    decodes_or_fails_cleanly(data)


@settings(SETTINGS, max_examples=150)
@given(st.binary(max_size=64).map(lambda b: bytes.fromhex("0101000000000000") + b))
def test_arbitrary_bodies(tail: bytes) -> None:
    data = tail[:4] + struct.pack(">I", len(tail)) + tail[8:]
    decodes_or_fails_cleanly(data)


# --- fast paths agree with their reference paths -----------------------------------------
def outcome(fn: Any, data: bytes) -> Any:
    try:
        return ("ok", fn(data))
    except DecodeError as exc:
        return ("error", exc.code, exc.offset)


RECORD_ITEMS = [m.record.encode() for m in examples().values() if hasattr(m, "record")]
RECORD_PAYLOADS = [SignedRecord.decode(r).payload for r in RECORD_ITEMS]
CBOR_ITEMS = [cbor.dumps(v) for v in (
    examples()["discover"].query.to_cbor(),  # type: ignore[attr-defined]
    {1: [1, -1, 2**64, 1.5, None, True, "x", b"y"], 2: {"a": 1}}, [[], {}, ""],
)] + RECORD_PAYLOADS


@settings(SETTINGS, max_examples=300)
@given(mutated(st.sampled_from(CBOR_ITEMS)))
def test_fast_cbor_loads_agrees_with_reference(data: bytes) -> None:
    assert outcome(cbor.loads, data) == outcome(cbor._loads_checked, data)


@settings(SETTINGS, max_examples=300)
@given(mutated(st.sampled_from(RECORD_ITEMS)) | signed_records().map(SignedRecord.encode))
def test_fast_cose_decode_agrees_with_reference(data: bytes) -> None:
    fast = outcome(SignedRecord.decode, data)
    assert fast == outcome(SignedRecord._decode_general, data)
    if fast[0] == "ok":
        assert fast[1].encode() == data


def _bstr_heads(n: int) -> list[bytes]:
    """Every head of a byte string of ``n`` octets with an argument of at most 4 octets,
    the shortest first."""
    heads = [bytes((0x40 + n,))] if n < 24 else []
    heads += [b"\x58" + n.to_bytes(1, "big")] if n <= 0xFF else []
    heads += [b"\x59" + n.to_bytes(2, "big")] if n <= 0xFFFF else []
    return [*heads, b"\x5a" + n.to_bytes(4, "big")]


@pytest.mark.parametrize("item", RECORD_ITEMS)
def test_cose_payload_and_signature_heads_agree_with_reference(item: bytes) -> None:
    """The envelope's payload and signature, read where they stand in their usual heads
    (a payload of 256 octets or more, a signature of 24 to 255), in every head and of
    sizes about those bounds, decode as the general path decodes them, and only the
    shortest heads of a record's payload and signature decode."""
    signed = SignedRecord.decode(item)
    prefix = item[:item.index(signed.payload) - 3]
    assert item[len(prefix)] == 0x59  # the example's payload: a 2-octet length
    cases = 0
    for payload in (signed.payload, signed.payload[:255], signed.payload[:24]):
        for signature in (signed.signature, signed.signature[:23], signed.signature[:24],
                          signed.signature * 4):
            for i, p_head in enumerate(_bstr_heads(len(payload))):
                for j, s_head in enumerate(_bstr_heads(len(signature))):
                    data = prefix + p_head + payload + s_head + signature
                    for cut in (data, data[:-1], data + b"\x00"):
                        fast = outcome(SignedRecord.decode, cut)
                        assert fast == outcome(SignedRecord._decode_general, cut), (i, j)
                        ok = cut is data and i == j == 0 and payload is signed.payload
                        assert (fast[0] == "ok") == ok, (i, j, fast)
                        cases += 1
    assert cases > 100


def reference_record(data: bytes) -> Any:
    return outcome(lambda d: CapabilityRecord.from_cbor(cbor.loads(d)), data)


@settings(SETTINGS, max_examples=400)
@given(mutated(st.sampled_from(RECORD_PAYLOADS))
       | records().map(lambda r: cbor.dumps(r.to_cbor())))
def test_fast_record_scan_agrees_with_reference(data: bytes) -> None:
    """scan_record accepts only what the reference accepts, as the same record."""
    scanned = scan_record(data)
    if scanned is not None:
        assert reference_record(data) == ("ok", scanned)


def test_fast_record_scan_takes_every_example() -> None:
    for payload in RECORD_PAYLOADS:
        assert ("ok", scan_record(payload)) == reference_record(payload)


def test_fast_record_scan_takes_the_length_and_integer_edges() -> None:
    """Text of 23, 24, 255 and 256 octets (the head grows by one octet at each), and
    integers at every head size's edges, everywhere a record holds them: the scan reads
    them as the reference does (their heads are read by separate paths)."""
    base = examples()["register"].record.record  # type: ignore[attr-defined]
    texts = ["", "x" * 23, "é" * 12, "x" * 255, "x" * 256]
    ints = [0, 23, 24, 255, 256, 2**16 - 1, 2**16, 2**32 - 1, 2**32, 2**64 - 1]
    skill, provider = base.skills[0], base.provider
    variants = [replace(base, issued_at=i, lease=i % 2**32, record_version=i,
                        attributes={"k": i, "n": -1 - i}) for i in ints]
    for t in texts:
        variants += [replace(base, name=t, version=t, description=t, domain="d" + t,
                             agent_uri=f"dmsc://d{t}/a", public_key=t.encode(),
                             attributes={t or "k": t}, default_input_modes=(t, t),
                             provider=replace(provider, organization=t, url=t),
                             skills=(replace(skill, id=t, name=t, description=t,
                                             tags=(t,), input_modes=(t, t)),),
                             endpoints=(Endpoint(t, t),))]
    for record in variants:
        payload = cbor.dumps(record.to_cbor())
        assert ("ok", scan_record(payload)) == reference_record(payload) == ("ok", record)
    for value in ints + texts:  # the last attribute's value with a longer head: refused
        payload = cbor.dumps(replace(base, attributes={"k": value}).to_cbor())
        item = cbor.dumps(value)
        n, major, body = ((value, 0, b"") if isinstance(value, int)
                          else (len(value.encode()), 0x60, value.encode()))
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if size > len(item) - len(body) - 1 and n < 2**(8 * size):
                longer = (payload[:-len(item)] + bytes((major + info,))
                          + n.to_bytes(size, "big") + body)
                assert scan_record(longer) is None
                assert reference_record(longer)[:2] == ("error",
                                                        ErrorCode.NON_DETERMINISTIC_CBOR)


def test_fast_record_scan_refuses_longer_heads_of_its_integers() -> None:
    """Issued-at, lease and record version (read in one unpack when their heads are the
    usual ones) and the public key's length: each with every head longer than its
    shortest is refused by the scan and non-deterministic for the reference, and each
    at its shortest is read as the reference reads it."""
    base = examples()["register"].record.record  # type: ignore[attr-defined]
    ints = [0, 23, 24, 255, 256, 2**16 - 1, 2**16, 2**32 - 1]
    for key, field_name in ((12, "issued_at"), (13, "lease"), (14, "record_version")):
        for value in ints:
            record = replace(base, **{field_name: value})
            members = record.to_cbor()
            assert ("ok", scan_record(cbor.dumps(members))) == reference_record(
                cbor.dumps(members)) == ("ok", record)
            for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
                if size > cbor.head_size(value) - 1 and value < 2**(8 * size):
                    longer = bytes((0xA0 + len(members),)) + b"".join(
                        cbor.dumps(k) + (bytes((info,)) + value.to_bytes(size, "big")
                                         if k == key else cbor.dumps(v))
                        for k, v in sorted(members.items()))
                    assert scan_record(longer) is None, (field_name, value, size)
                    assert reference_record(longer)[:2] == (
                        "error", ErrorCode.NON_DETERMINISTIC_CBOR)


def test_fast_record_scan_refuses_a_longer_head_of_its_uri() -> None:
    """The agent URI (its 1-octet length read first) of 18 to 23 octets with the head of
    a 1-octet length: refused by the scan, non-deterministic for the reference."""
    base = examples()["register"].record.record  # type: ignore[attr-defined]
    for size in range(1, 7):
        uri = f"dmsc://{base.domain}/{'a' * size}"
        payload = cbor.dumps(replace(base, agent_uri=uri).to_cbor())
        assert len(uri) < 24 and payload[2] == 0x60 + len(uri)
        longer = payload[:2] + bytes((0x78, len(uri))) + payload[3:]
        assert scan_record(longer) is None, uri
        assert reference_record(longer)[:2] == ("error", ErrorCode.NON_DETERMINISTIC_CBOR)


def test_fast_record_scan_refuses_longer_heads_of_its_long_texts() -> None:
    """The description, the provider's URL and an endpoint's URI (each read where it
    stands when its head has a 1-octet length) of 0 to 23 octets with that head:
    refused by the scan, non-deterministic for the reference; at their shortest, read
    as the reference reads them."""
    base = examples()["register"].record.record  # type: ignore[attr-defined]
    for size in range(24):
        texts = ["!" * size, "#" * size, "%" * size]
        record = replace(base, description=texts[0], endpoints=(Endpoint("quic", texts[2]),),
                         provider=replace(base.provider, url=texts[1]))
        payload = cbor.dumps(record.to_cbor())
        assert ("ok", scan_record(payload)) == reference_record(payload) == ("ok", record)
        before = [cbor.dumps(base.name) + b"\x04",  # the key before each, and what precedes it
                  cbor.dumps(base.provider.organization) + b"\x02", b"\x64quic\x02"]
        for text, prefix in zip(texts, before, strict=True):
            item = prefix + bytes((0x60 + size,)) + text.encode()
            assert payload.count(item) == 1
            where = payload.index(item) + len(prefix)
            longer = payload[:where] + bytes((0x78, size)) + payload[where + 1:]
            assert scan_record(longer) is None, (size, text)
            assert reference_record(longer)[:2] == ("error", ErrorCode.NON_DETERMINISTIC_CBOR)


def test_reused_cbor_workers_do_not_leak_state() -> None:
    """A shared-value or string-reference from an earlier item is not visible later."""
    for first in (b"\xd8\x1c\x63abc", b"\xd9\x01\x00\x82\x63abc\xd8\x19\x00"):
        with pytest.raises(DecodeError):
            cbor.loads(first)  # tags are never deterministic DMSC values
        for later in (b"\xd8\x1d\x00", b"\xd8\x19\x00"):
            with pytest.raises(DecodeError) as info:
                cbor.loads(later)
            assert info.value.code is ErrorCode.MALFORMED_CBOR


TEXT_MAPS = [cbor.dumps(t.to_cbor()) for t in (
    TraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v"),
    TraceContext("x" * 300), TraceContext(""))]


@settings(SETTINGS, max_examples=300)
@given(mutated(st.sampled_from(TEXT_MAPS)) | traces.map(lambda t: cbor.dumps(t.to_cbor())))
def test_text_map_scan_agrees_with_loads(data: bytes) -> None:
    fast = cbor.scan_text_map(data)
    if fast is not None:  # otherwise loads decides alone
        assert list(fast.items()) == list(cbor.loads(data).items())


W3C_TRACES = st.builds(TraceContext, st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]",
                                                    fullmatch=True))
LONG_TRACES = st.builds(TraceContext, st.text(min_size=20, max_size=260),
                        st.none() | short_text)


#: Edges of the direct path: a non-shortest length head, 24 and 255 octets, a 2-octet
#: length head, invalid UTF-8.
TRACE_EDGES = [b"\xa1\x01\x78\x17" + b"x" * 23, b"\xa1\x01\x78\x18" + b"x" * 24,
               b"\xa1\x01\x78\xff" + b"x" * 255, b"\xa1\x01\x79\x01\x00" + b"x" * 256,
               b"\xa1\x01\x78\x18" + b"\xff" * 24]


@settings(SETTINGS, max_examples=300)
@given(mutated(st.sampled_from(TEXT_MAPS + TRACE_EDGES) | (W3C_TRACES | LONG_TRACES).map(
    lambda t: cbor.dumps(t.to_cbor()))) | st.sampled_from(TRACE_EDGES)
    | (W3C_TRACES | LONG_TRACES).map(lambda t: cbor.dumps(t.to_cbor())))
def test_trace_context_codec_agrees_with_cbor(data: bytes) -> None:
    """TRACE_CONTEXT's direct path reads and writes what the CBOR codec does."""
    codec = VALUE_CODECS[TlvType.TRACE_CONTEXT]
    general = CborCodec[TraceContext](TraceContext, cbor.scan_text_map)
    read = outcome(codec.parse, data)
    assert read == outcome(general.parse, data)
    if read[0] == "ok":
        assert codec.build(read[1]) == general.build(read[1]) == data


def test_text_map_scan_takes_the_usual_shapes() -> None:
    for data in TEXT_MAPS:
        assert cbor.scan_text_map(data) == cbor.loads(data)


# --- the message codec's shortcuts: what the value codecs would give -----------------------
@contextmanager
def general_codec() -> Iterator[None]:
    """The message codec without its shortcuts (a raw value copied without its parser or
    builder, the constant TLV header of a fixed-size value, the reader and the builder
    of the usual TLVs, the splicer of the usual changed ones): its plans made anew with
    none, then the usual ones back."""
    caches = (pdu._PLANS, pdu._BUILDS, pdu._SPLICES, pdu._USUAL, pdu._SPLICERS)
    saved = [cache.copy() for cache in caches]
    raw, header = pdu._raw, pdu._fixed_header
    reader, builder, splicer = pdu._usual_reader, pdu._usual_builder, pdu._usual_splicer
    for cache in caches:
        cache.clear()
    pdu._raw, pdu._fixed_header = (lambda tlv: -2), (lambda tlv: None)  # type: ignore[assignment]
    pdu._usual_reader = lambda cls, defaults: (lambda data, size, flags, txid: None)  # type: ignore[assignment]
    pdu._usual_builder = lambda cls: (lambda attrs: None)  # type: ignore[assignment]
    pdu._usual_splicer = lambda cls, changed: pdu._no_splice  # type: ignore[assignment]
    try:
        yield
    finally:
        pdu._raw, pdu._fixed_header = raw, header  # type: ignore[assignment]
        pdu._usual_reader, pdu._usual_builder = reader, builder  # type: ignore[assignment]
        pdu._usual_splicer = splicer  # type: ignore[assignment]
        for cache, old in zip(caches, saved, strict=True):
            cache.clear()
            cache.update(old)  # type: ignore[attr-defined]


def both_ways(fn: Any, arg: Any) -> tuple[Any, Any]:
    """What ``fn(arg)`` gives (or the error it raises), with and without the shortcuts."""
    def run() -> Any:
        try:
            out = fn(arg)
        except DecodeError as exc:
            return ("error", exc.code, exc.offset, exc.reason)
        except EncodeError as exc:
            return ("error", str(exc))
        if not isinstance(out, Message):
            return (type(out), out, None)
        # the type of every field too: a registered code decodes to its enum member,
        # which compares equal to the plain integer
        return (type(out), out, encode(out), {k: type(v) for k, v in vars(out).items()})
    fast = run()
    with general_codec():
        general = run()
    return fast, general


def test_raw_values_are_what_their_codecs_give() -> None:
    """A raw value is its octets both ways, and only at its length."""
    raw = {tlv: codec for tlv, codec in VALUE_CODECS.items() if codec.raw is not None}
    assert {TlvType.AGENT_ID, TlvType.PAYLOAD, TlvType.ACCESS_TOKEN} <= raw.keys()
    for tlv, codec in raw.items():
        for size in {0, 1, ID_SIZE - 1, ID_SIZE, ID_SIZE + 1, 300, codec.raw} - {-1}:
            value = bytes(range(size % 251)) + bytes(size - size % 251)
            if codec.raw in (-1, size):
                assert codec.parse(value) == value == codec.build(value), tlv
            else:
                with pytest.raises(DecodeError):
                    codec.parse(value)


FIXED = [tlv for tlv, codec in VALUE_CODECS.items() if codec.fixed is not None]


@pytest.mark.parametrize("tlv", FIXED, ids=[t.name for t in FIXED])
def test_fixed_size_values_build_to_their_size(tlv: TlvType) -> None:
    codec = VALUE_CODECS[tlv]

    @SETTINGS
    @given(VALUES[tlv])
    def check(value: Any) -> None:
        assert len(codec.build(value)) == codec.fixed

    check()


@settings(SETTINGS, max_examples=300)
@given(any_message)
def test_encode_with_shortcuts_is_encode_without(msg: Message) -> None:
    fast, general = both_ways(encode, msg)
    assert fast == general


@settings(SETTINGS, max_examples=200)
@given(st.sampled_from(CLASSES).flatmap(messages), st.data())
def test_encode_of_odd_byte_values_with_shortcuts_is_encode_without(
        msg: Message, data: st.DataObject) -> None:
    """Byte strings of any length and bytes-like values in the fields of raw values."""
    raw = [s.name for s in msg.SPEC if VALUE_CODECS[s.tlv].raw is not None]
    if not raw:
        return
    name = data.draw(st.sampled_from(raw))
    value = data.draw(st.binary(max_size=40).flatmap(
        lambda b: st.sampled_from([b, bytearray(b), memoryview(b)])))
    fast, general = both_ways(encode, replace(msg, **{name: value}))
    assert fast == general


@settings(SETTINGS, max_examples=300)
@given(st.sampled_from(RELAYED).flatmap(lambda cls: st.tuples(messages(cls), messages(cls))),
       st.data())
def test_rewritten_relayed_encode_with_shortcuts_is_encode_without(
        pair: tuple[Message, Message], data: st.DataObject) -> None:
    """A relayed message rewritten (fields of another message, at times a raw field a
    byte string of any length), its changed TLVs spliced in by the usual splicer or by
    the general splice: the same octets, or the same error."""
    msg, other = pair
    names = sorted(type(msg).FIELD_NAMES)
    change = {name: getattr(other, name)
              for name in data.draw(st.sets(st.sampled_from(names), min_size=1))}
    if data.draw(st.booleans()):
        raw = [s.name for s in msg.SPEC if VALUE_CODECS[s.tlv].raw is not None]
        change[data.draw(st.sampled_from(raw))] = data.draw(st.binary(max_size=40))
    fast, general = both_ways(encode, rewrite(decode(encode(msg)), **change))
    assert fast == general


@st.composite
def resized(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A PDU of ``base`` with the value of one TLV a few octets shorter or longer, its
    TLV length and the PDU length set to match (the framing stays right)."""
    data = bytearray(draw(base))
    at = draw(st.sampled_from(tlv_length_fields(bytes(data)) or [0]))
    if not at:
        return bytes(data)
    size = struct.unpack_from(">H", data, at)[0]
    new = draw(st.integers(max(0, size - 3), size + 3))
    end = at + 2 + size
    data[end:end] = bytes(max(0, new - size))
    del data[at + 2 + new:end]
    struct.pack_into(">H", data, at, new)
    struct.pack_into(">I", data, 4, len(data))
    return bytes(data)


def test_decode_with_shortcuts_is_decode_without_for_each_tlv_header_off_by_one() -> None:
    """Every TLV header of every example PDU with its type or its length one more or
    one less, the octets around it unmoved (a run of fixed-size TLVs is read by one
    unpack, which must check each header as a TLV-by-TLV reader does)."""
    for example in EXAMPLE_PDUS:
        for at in tlv_length_fields(example):
            for where in (at - 2, at):  # type, length
                value = struct.unpack_from(">H", example, where)[0]
                for new in {max(0, value - 1), min(0xFFFF, value + 1)} - {value}:
                    data = bytearray(example)
                    struct.pack_into(">H", data, where, new)
                    fast, general = both_ways(decode, bytes(data))
                    assert fast == general, (example.hex(), where, new)


@settings(SETTINGS, max_examples=500)
@given(mutated(st.sampled_from(EXAMPLE_PDUS) | any_message.map(encode), pdu=True)
       | resized(st.sampled_from(EXAMPLE_PDUS) | any_message.map(encode)))
def test_decode_with_shortcuts_is_decode_without(data: bytes) -> None:
    """Valid, mutated and resized PDUs: the same message, or the same error at the same
    offset."""
    fast, general = both_ways(decode, data)
    assert fast == general
