"""drafts/draft-dmsc-protocol-00.md and the code cannot drift apart.

The test vectors are extracted from the markdown by ``tools/draft_vectors.py`` with the
rule Appendix A gives (a fenced block whose first line is ``vector <name> <expect>``,
then hex), and checked against the codec.  The registry, timer and per-message TLV
tables are parsed back from the markdown and compared with :mod:`dmscproto.codec.registry` and
``Message.SPEC``; the CDDL blocks are compiled and every example's CBOR values are
validated against them.  Finally ``tools/gen_draft.py --check`` must pass.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pycddl
import pytest

from dmscproto.codec import DecodeError, MessageType, cbor, decode, encode, values
from dmscproto.codec import registry as reg
from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.messages import MESSAGE_CLASSES, Message
from dmscproto.codec.registry import (
    ANSWER_TO,
    ONE_WAY,
    ConstraintOp,
    CoseAlgorithm,
    ErrorCode,
    Flags,
    GatewayCaps,
    Scope,
    TlvType,
)
from dmscproto.codec.values import (
    CapabilityRecord,
    DiscoveryQuery,
    Endpoint,
    ExportPolicy,
    HopRecord,
    Provider,
    Skill,
    TraceContext,
)
from dmscproto.codec.wire import MAX_TLV_VALUE, VALUE_CODECS, FixedCodec
from dmscproto.testing.examples import examples, weather_query, weather_record

ROOT = Path(__file__).resolve().parent.parent
DRAFT = ROOT / "drafts" / "draft-dmsc-protocol-00.md"
TEXT = DRAFT.read_text(encoding="utf-8")
EXAMPLES = examples()


# --- tools/ modules (tools/ is not a package) ---------------------------------------------
@functools.cache
def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- the extraction rule of Appendix A ------------------------------------------------------
fenced_blocks = load_tool("draft_vectors").fenced_blocks
vectors = load_tool("draft_vectors").vectors
VECTORS = vectors(TEXT)
VALID = {n: d for n, e, d in VECTORS if e == "valid"}
INVALID = [(n, e, d) for n, e, d in VECTORS if e != "valid"]


def test_extractor_prints_every_vector(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_tool("draft_vectors").main([str(DRAFT)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [(d["name"], d["expect"], bytes.fromhex(d["hex"])) for d in map(json.loads, lines)] \
        == VECTORS


def test_vector_names_are_unique() -> None:
    names = [n for n, _, _ in VECTORS]
    assert len(names) == len(set(names))


def test_valid_vectors_are_exactly_the_examples() -> None:
    assert set(VALID) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_vector(name: str) -> None:
    data = VALID[name]
    msg = decode(data)
    assert msg == EXAMPLES[name]
    assert encode(msg) == data


@pytest.mark.parametrize(("name", "expect", "data"), INVALID, ids=[v[0] for v in INVALID])
def test_invalid_vector(name: str, expect: str, data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.code.name == expect


def test_every_message_type_has_a_valid_vector() -> None:
    assert {decode(d).TYPE for d in VALID.values()} == set(MessageType)


def decode_raisable() -> set[ErrorCode]:
    """Error codes the codec can raise: the decoding range (0x01xx) and every code that
    appears in a ``DecodeError(ErrorCode.X`` expression of the codec's source."""
    codes = {e for e in ErrorCode if e >> 8 == 0x01}
    for path in (ROOT / "dmscproto" / "codec").glob("*.py"):
        for name in re.findall(r"DecodeError\(\s*ErrorCode\.(\w+)", path.read_text()):
            codes.add(ErrorCode[name])
    return codes


def test_every_decoding_error_has_a_negative_vector() -> None:
    assert len(decode_raisable()) >= 15
    assert {e.name for e in decode_raisable()} <= {e for _, e, _ in INVALID}


def test_every_negative_vector_names_a_decoding_error() -> None:
    assert {e for _, e, _ in INVALID} <= {e.name for e in decode_raisable()}


def test_vector_hex_lines_are_at_most_64_digits() -> None:
    for _info, lines in fenced_blocks(TEXT):
        if lines and lines[0].startswith("vector "):
            assert all(len(x) <= 64 for x in lines[1:])


# --- tables -----------------------------------------------------------------------------
def region(name: str) -> str:
    m = re.search(rf"<!-- BEGIN GENERATED: {name} -->\n(.*?)<!-- END GENERATED: {name} -->",
                  TEXT, re.S)
    assert m is not None, f"region {name} missing from the draft"
    return m.group(1)


def rows(name: str) -> list[list[str]]:
    """The body rows of the one pipe table in region ``name``, cells stripped."""
    lines = [x for x in region(name).splitlines() if x.startswith("|")]
    assert len(lines) >= 2 and re.fullmatch(r"\|[-|: ]+\|", lines[1]), f"no table in {name}"
    return [[c.strip() for c in x.strip("|").split("|")] for x in lines[2:]]


def integer(cell: str) -> int:
    return int(cell, 0)


def test_message_type_table() -> None:
    got = [(integer(r[0]), r[1]) for r in rows("message-types")]
    assert got == [(m.value, m.name) for m in sorted(MessageType)]  # in numeric order


def test_message_pair_table() -> None:
    got = [(r[0], r[1]) for r in rows("message-pairs")]
    assert got == [(q.name, a.name) for q, a in ANSWER_TO.items()]
    one_way = re.search(r"One-way messages: ([A-Z_, ]+)\.", region("message-pairs"))
    assert one_way is not None
    assert set(one_way.group(1).split(", ")) == {m.name for m in ONE_WAY}


def test_flag_table() -> None:
    assert [(integer(r[0]), r[1]) for r in rows("flags")] == [(f.value, f.name) for f in Flags]


def test_tlv_type_table() -> None:
    got = [(integer(r[0]), r[1], r[2]) for r in rows("tlv-types")]
    assert got == [(t.value, t.name, "yes" if t.value & reg.CRITICAL_BIT else "no")
                   for t in sorted(TlvType)]


def test_error_code_table() -> None:
    got = [(integer(r[0]), r[1]) for r in rows("error-codes")]
    assert got == [(e.value, e.name) for e in sorted(ErrorCode)]


@pytest.mark.parametrize(("name", "enum"), [
    ("scopes", Scope), ("constraint-ops", ConstraintOp), ("gateway-caps", GatewayCaps),
    ("cose-algorithms", CoseAlgorithm)])
def test_small_registry_tables(name: str, enum: type[Scope]) -> None:
    assert [(integer(r[0]), r[1]) for r in rows(name)] == [(int(m), m.name) for m in enum]


def test_tlv_format_table() -> None:
    table = rows("tlv-formats")
    assert [(r[0], integer(r[1])) for r in table] == [(t.name, t.value) for t in TlvType]
    carried = {s.tlv: s.name for cls in MESSAGE_CLASSES.values() for s in cls.SPEC}
    for name, _code, field, fmt, _meaning in table:
        assert f"`{carried.get(TlvType[name], name.lower())}`" == field  # decoded name
        codec = VALUE_CODECS[TlvType[name]]
        if isinstance(codec, FixedCodec):
            m = re.fullmatch(r"uint(\d+)(?: [\w-]+)?|(\d+) octets", fmt)
            assert m is not None, fmt
            size = int(m.group(1)) // 8 if m.group(1) else int(m.group(2))
            assert size == codec.size, name


def test_constants_table() -> None:
    values = {r[0]: r[1] for r in rows("constants")}
    expected = {
        "VERSION": reg.VERSION, "HEADER_SIZE": reg.HEADER_SIZE,
        "TLV_HEADER_SIZE": reg.TLV_HEADER_SIZE, "MAX_PDU_SIZE": reg.MAX_PDU_SIZE,
        "MAX_TLV_VALUE": MAX_TLV_VALUE, "CRITICAL_BIT": reg.CRITICAL_BIT,
        "ID_SIZE": reg.ID_SIZE, "NONCE_SIZE": reg.NONCE_SIZE,
        "DEFAULT_HOP_LIMIT": reg.DEFAULT_HOP_LIMIT, "RELAY_HOP_SLACK": reg.RELAY_HOP_SLACK,
        "ALPN": reg.ALPN, "UDP_PORT": reg.UDP_PORT,
        "DEFAULT_MAX_DATAGRAM": reg.DEFAULT_MAX_DATAGRAM, "SYNC_WINDOW": reg.SYNC_WINDOW,
        "DIGEST_FANOUT": reg.DIGEST_FANOUT, "DIGEST_LEAF_LEVEL": reg.DIGEST_LEAF_LEVEL,
        "SUMMARY_MAX_HASHES": reg.SUMMARY_MAX_HASHES, "SUMMARY_MIN_BITS": reg.SUMMARY_MIN_BITS,
        "SUMMARY_MAX_BITS": reg.SUMMARY_MAX_BITS,
        "SUMMARY_BITS_PER_ELEMENT": reg.SUMMARY_BITS_PER_ELEMENT,
    }
    assert set(values) == set(expected)
    for name, value in expected.items():
        cell = values[name]
        assert (cell.strip('"') if isinstance(value, str) else integer(cell)) == value, name


def test_timer_table() -> None:
    got = [(r[0], float(Fraction(r[1])), r[3]) for r in rows("timers")]
    assert got == [(t.name, float(t.default_s), t.description) for t in reg.TIMERS]


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda m: m.name)
def test_message_tlv_table(mtype: MessageType) -> None:
    cls = MESSAGE_CLASSES[mtype.value]
    name = f"msg-{mtype.name.lower().replace('_', '-')}"
    if not cls.SPEC:
        assert f"{mtype.name} carries no TLVs." in region(name)
        return
    got = [(r[0], integer(r[1]), r[2]) for r in rows(name)]
    assert got == [(s.tlv.name, s.tlv.value, s.occurs.value) for s in cls.SPEC]


def test_message_tables_sit_under_their_message_heading() -> None:
    """Each message's generated table follows the heading that names the message."""
    for m in MessageType:
        begin = TEXT.index(f"<!-- BEGIN GENERATED: msg-{m.name.lower().replace('_', '-')} -->")
        heading = TEXT.rfind("\n#", 0, begin)
        assert m.name in TEXT[heading:TEXT.index("\n", heading + 1)], m.name


# --- names and numbers in the prose ----------------------------------------------------------
#: Names the draft borrows from other documents (IAIP's messages).
FOREIGN_NAMES = {"CAP_ADV", "INTENT_REQ"}


def registry_names() -> dict[str, int | str | float]:
    """Every name the draft may use in capitals, with its value."""
    names: dict[str, int | str | float] = {}
    for enum in (MessageType, TlvType, ErrorCode, Flags, Scope, ConstraintOp, GatewayCaps,
                 CoseAlgorithm):
        names.update({m.name: int(m) for m in enum if m.name is not None})
    names.update({t.name: t.default_s for t in reg.TIMERS})
    names.update({lim.name: lim.default for lim in reg.LIMITS})
    names.update({n: getattr(reg, n) for n in dir(reg)
                  if n.isupper() and isinstance(getattr(reg, n), int | str)})
    names["MAX_TLV_VALUE"] = MAX_TLV_VALUE
    return names


def test_every_capitalized_name_in_the_draft_is_registered() -> None:
    """A renamed code or timer cannot leave a stale name behind in hand-written prose."""
    used = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", TEXT))
    assert used - FOREIGN_NAMES <= set(registry_names())


def test_numbers_given_with_names_match_the_code() -> None:
    """Every "NAME (number)" in the draft, e.g. "MAX_PDU_SIZE (65535)", is right."""
    names = registry_names()
    found = re.findall(r"\b([A-Z][A-Z0-9_]*[A-Z0-9]) \((0x[0-9A-Fa-f]+|-?\d+)\)", TEXT)
    assert len(found) > 20
    for name, number in found:
        if name in names:
            assert names[name] == int(number, 0), name


# --- CDDL -------------------------------------------------------------------------------
CDDL = "\n".join("\n".join(lines) for info, lines in fenced_blocks(TEXT) if info == "cddl")


def validate(rule: str, data: bytes) -> None:
    pycddl.Schema(f"root = {rule}\n{CDDL}").validate_cbor(data)


def cbor_values(msg: Message) -> list[tuple[str, bytes]]:
    """(CDDL rule, encoded value) of every CBOR value in ``msg``, records included."""
    out: list[tuple[str, bytes]] = []

    def visit(value: object) -> None:
        if isinstance(value, tuple):
            for v in value:
                visit(v)
        elif isinstance(value, SignedRecord):
            out.extend([("signed-record", value.encode()), ("protected-header", value.protected),
                         ("capability-record", value.payload)])
        elif isinstance(value, TraceContext | DiscoveryQuery | ExportPolicy | HopRecord):
            rule = re.sub(r"(?<!^)(?=[A-Z])", "-", type(value).__name__).lower()
            out.append((rule, cbor.dumps(value.to_cbor())))
        elif hasattr(value, "record"):
            visit(value.record)

    for spec in msg.SPEC:
        visit(getattr(msg, spec.name))
    return out


def test_cddl_covers_every_value_kind() -> None:
    rules = {rule for msg in EXAMPLES.values() for rule, _ in cbor_values(msg)}
    assert rules == {"signed-record", "protected-header", "capability-record", "trace-context",
                     "discovery-query", "export-policy", "hop-record"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_values_match_the_cddl(name: str) -> None:
    for rule, data in cbor_values(EXAMPLES[name]):
        validate(rule, data)


def test_cddl_rejects_what_the_codec_rejects() -> None:
    record = EXAMPLES["register"].record  # type: ignore[attr-defined]
    payload = cbor.loads(record.payload)
    del payload[3]  # name is required
    with pytest.raises(pycddl.ValidationError):
        validate("capability-record", cbor.dumps(payload))
    with pytest.raises(pycddl.ValidationError):
        validate("protected-header", cbor.dumps({1: -35}))


def cddl_map_keys(rule: str) -> tuple[set[int], set[int]]:
    """(required, optional) integer keys of the CDDL map ``rule = { ... }``."""
    m = re.search(rf"^{re.escape(rule)} = \{{\n(.*?)^\}}", CDDL, re.S | re.M)
    assert m is not None, rule
    required: set[int] = set()
    optional: set[int] = set()
    for opt, key in re.findall(r"^\s*(\? )?(\d+) =>", m.group(1), re.M):
        (optional if opt else required).add(int(key))
    return required, optional


def samples() -> dict[str, tuple[type[Any], dict[int, Any]]]:
    """A populated instance of every CDDL map rule, as the CBOR data model."""
    rec = weather_record()
    return {
        "capability-record": (CapabilityRecord, rec.to_cbor()),
        "skill": (Skill, rec.skills[0].to_cbor()),
        "provider": (Provider, rec.provider.to_cbor() if rec.provider else {}),
        "endpoint": (Endpoint, rec.endpoints[0].to_cbor()),
        "discovery-query": (DiscoveryQuery, weather_query().to_cbor()),
        "export-policy": (ExportPolicy, EXAMPLES["open"].export_policy.to_cbor()),  # type: ignore[attr-defined]
        "trace-context": (TraceContext, TraceContext("00-1-2-01", "k=v").to_cbor()),
        "hop-record": (HopRecord, EXAMPLES["trace-reply"].hops[0].to_cbor()),  # type: ignore[attr-defined]
    }


def test_record_keys_equal_the_codec_schema() -> None:
    required, optional = cddl_map_keys("capability-record")
    assert required == set(values._RECORD_REQUIRED)
    assert required | optional == set(values._RECORD_ALLOWED)


@pytest.mark.parametrize("rule", sorted(samples()))
def test_cddl_keys_behave_like_the_codec(rule: str) -> None:
    """Removing a key the CDDL requires, or adding one it lacks, is refused by the codec;
    removing an optional key is not."""
    cls, sample = samples()[rule]
    sample = cbor.loads(cbor.dumps(sample))  # keys in deterministic order
    required, optional = cddl_map_keys(rule)
    assert set(sample) <= required | optional
    cls.from_cbor(sample)
    for key in sample:
        reduced = {k: v for k, v in sample.items() if k != key}
        if key in required:
            with pytest.raises(DecodeError):
                cls.from_cbor(reduced)
        else:
            cls.from_cbor(reduced)
    with pytest.raises(DecodeError):
        cls.from_cbor({**sample, max(required | optional) + 1: "x"})


# --- the generator --------------------------------------------------------------------
def test_generated_regions_are_up_to_date() -> None:
    assert load_tool("gen_draft").main(["--check"]) == 0


def test_check_detects_a_stale_table(tmp_path: Path) -> None:
    stale = tmp_path / "draft.md"
    stale.write_text(TEXT.replace("| 0x7F | ERROR ", "| 0x7E | ERROR "), encoding="utf-8")
    gen = load_tool("gen_draft")
    assert gen.main(["--check", "--draft", str(stale)]) == 1
    assert gen.main(["--draft", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == TEXT
