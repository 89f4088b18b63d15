"""Regenerate the parts of drafts/draft-dmsc-protocol-00.md that mirror the code.

Every table that repeats a number from :mod:`dmscproto.codec.registry` (constants,
message types, flags, TLV types, error codes, scopes, constraint operators, gateway
capability bits, COSE algorithms, timers, resource limits), each message's TLV table
(from ``Message.SPEC``) and the test vectors of Appendix A live between marker comments
(the conformance checklist's region belongs to ``tools/gen_checklist.py``)::

    <!-- BEGIN GENERATED: name -->
    ...
    <!-- END GENERATED: name -->

``python tools/gen_draft.py`` rewrites those regions in place; ``--check`` exits 1 and
names the stale regions instead.  The prose around them is written by hand.  A region
the generator knows but the draft lacks (a new message type, say) is an error, so the
draft cannot silently fall behind the code.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from enum import IntEnum, IntFlag
from fractions import Fraction
from pathlib import Path
from typing import Any

from dmscproto.codec import registry as reg
from dmscproto.codec.layout import LAYOUTS, Part
from dmscproto.codec.messages import MESSAGE_CLASSES
from dmscproto.codec.registry import (
    ANSWER_TO,
    ONE_WAY,
    ConstraintOp,
    CoseAlgorithm,
    ErrorCode,
    Flags,
    GatewayCaps,
    MessageType,
    Scope,
    TlvType,
)
from dmscproto.codec.wire import MAX_TLV_VALUE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is not a package
import draft_regions
from draft_appendix import (
    gen_digest_example,
    gen_vector_index,
    gen_vectors_invalid,
    gen_vectors_valid,
)
from draft_regions import table

DRAFT = Path(__file__).resolve().parent.parent / "drafts" / "draft-dmsc-protocol-00.md"


# --- names and references -----------------------------------------------------------
def message_section(m: MessageType) -> str:
    """The section of this draft that specifies message type ``m``."""
    sections = {
        MessageType.REGISTER: "5.1.1", MessageType.REGISTER_ACK: "5.1.2",
        MessageType.REFRESH: "5.1.3", MessageType.REFRESH_ACK: "5.1.4",
        MessageType.DEREGISTER: "5.1.5", MessageType.DEREGISTER_ACK: "5.1.6",
        MessageType.DISCOVER: "5.2.1", MessageType.DISCOVER_REPLY: "5.2.2",
        MessageType.ROUTE_REQUEST: "5.3.1", MessageType.ROUTE_REPLY: "5.3.2",
        MessageType.ERROR: "5.4",
        MessageType.OPEN: "6.4.1", MessageType.KEEPALIVE: "6.4.2",
        MessageType.UPDATE: "6.5", MessageType.DIGEST: "6.6.1",
        MessageType.SYNC_REQUEST: "6.6.2", MessageType.NOTIFY: "6.7",
        MessageType.SYNC_ACK: "6.5.2", MessageType.DIGEST_REQUEST: "6.6.3",
        MessageType.ECHO_REQUEST: "6.8.1", MessageType.ECHO_REPLY: "6.8.1",
        MessageType.TRACE_REQUEST: "6.8.2", MessageType.TRACE_REPLY: "6.8.2",
        MessageType.SUMMARY: "6.9",
        MessageType.CERTIFICATE: "6.10.1", MessageType.CERTIFICATE_ACK: "6.10.2",
    }
    return sections[m]


#: Meaning and defining section of every TLV type (Section 4.3).
TLV_DOCS: dict[TlvType, tuple[str, str]] = {
    TlvType.TRACE_CONTEXT: ("W3C trace context of the transaction", "7.5"),
    TlvType.DIAGNOSTIC: ("human-readable diagnostic text", "4.3"),
    TlvType.AGENT_ID: ("an Agent ID", "3.2"),
    TlvType.GATEWAY_ID: ("a Gateway ID", "3.2"),
    TlvType.SIGNED_RECORD: ("signed capability record", "7.2.1"),
    TlvType.LEASE: ("lease in seconds", "5.1"),
    TlvType.STATUS: ("outcome of a request", "11.5"),
    TlvType.NONCE: ("random value, unique per request", "5.1"),
    TlvType.TIMESTAMP: ("milliseconds since 1970-01-01T00:00:00Z", "4.3"),
    TlvType.QUERY: ("what a requester looks for", "7.3"),
    TlvType.SCOPE: ("how far discovery reaches", "5.2"),
    TlvType.MAX_RESULTS: ("most RESULT TLVs wanted", "5.2"),
    TlvType.RESULT: ("score 0..10000 and a signed record", "5.2"),
    TlvType.SOURCE_AGENT: ("Agent ID of the requesting agent", "5.3"),
    TlvType.TARGET_AGENT: ("Agent ID of the destination agent", "5.3"),
    TlvType.HOP_LIMIT: ("gateways the request may still cross", "5.3"),
    TlvType.PATH_VECTOR: ("Gateway IDs crossed, oldest first", "5.3"),
    TlvType.PAYLOAD: ("opaque application data", "5.3"),
    TlvType.DOMAIN: ("domain name of the sender", "6.4"),
    TlvType.HOLD_TIME: ("proposed hold time in seconds", "6.4"),
    TlvType.GATEWAY_CAPS: ("gateway capability bits", "6.4"),
    TlvType.ADVERTISE: ("version, path and signed record", "6.5"),
    TlvType.WITHDRAW: ("Agent ID and version withdrawn", "6.5"),
    TlvType.DIGEST_SUMMARY: ("entry count and XOR of the entries' hashes", "6.6.1"),
    TlvType.DIGEST_ENTRIES: ("(Agent ID, version) pairs", "6.6.1"),
    TlvType.AGENT_IDS: ("Agent IDs requested", "6.6"),
    TlvType.ACCESS_TOKEN: ("OAuth 2.0 access token", "10.3"),
    TlvType.OFFENDING_TYPE: ("message type that caused an ERROR", "5.4"),
    TlvType.TIMEOUT: ("requester's deadline in milliseconds", "5.3"),
    TlvType.EXPORT_POLICY: ("what the sender exports to the peer", "7.4"),
    TlvType.SEQUENCE: ("sequence number of a sync message or an echo", "6.5.1"),
    TlvType.HOP: ("one gateway's hop record", "7.6"),
    TlvType.SUMMARY_FILTER: ("Bloom filter of a domain's capability terms", "6.9"),
    TlvType.RETRY_AFTER: ("milliseconds before the request may succeed again", "10.7"),
    TlvType.PURGE: ("Agent ID and record version purged", "6.5"),
    TlvType.DIGEST_NODE: ("level and index of a digest tree node", "6.6.1"),
    TlvType.DIGEST_CHILDREN: ("count and hash of each child node", "6.6.1"),
    TlvType.CERTIFICATE_DER: ("a gateway's X.509 certificate, DER", "6.10"),
    TlvType.THUMBPRINT: ("SHA-256 of a certificate's DER (x5t#S256)", "6.10"),
}

#: Meaning and defining section of every error code (Section 11.5).
ERROR_DOCS: dict[ErrorCode, tuple[str, str]] = {
    ErrorCode.SUCCESS: ("the request succeeded", "5"),
    ErrorCode.TRUNCATED: ("fewer octets than the header or its length field needs", "4.4"),
    ErrorCode.TRAILING_DATA: ("octets after the PDU's announced length", "4.4"),
    ErrorCode.LENGTH_MISMATCH: ("a length field disagrees with the octets around it", "4.4"),
    ErrorCode.UNSUPPORTED_VERSION: ("header version is not 1", "4.4"),
    ErrorCode.UNKNOWN_MESSAGE_TYPE: ("message type not registered", "4.4"),
    ErrorCode.UNKNOWN_CRITICAL_TLV: ("a critical TLV not defined for the message", "4.4"),
    ErrorCode.DUPLICATE_TLV: ("a TLV repeated where at most one is allowed", "4.4"),
    ErrorCode.PDU_TOO_LARGE: ("PDU length above MAX_PDU_SIZE", "4.4"),
    ErrorCode.MALFORMED_CBOR: ("a CBOR value is not one well-formed data item", "7.1"),
    ErrorCode.NON_DETERMINISTIC_CBOR: ("a CBOR value is not deterministically encoded",
                                       "7.1"),
    ErrorCode.MALFORMED_COSE: ("a signed record violates the COSE_Sign1 profile", "7.2.1"),
    ErrorCode.MISSING_TLV: ("a required TLV is absent", "4.4"),
    ErrorCode.INVALID_TLV_LENGTH: ("a TLV value has the wrong size", "4.3"),
    ErrorCode.INVALID_TLV_VALUE: ("a TLV value is out of range or breaks its schema", "4.3"),
    ErrorCode.TLV_ORDER: ("TLVs not in ascending type order", "4.2"),
    ErrorCode.UNEXPECTED_MESSAGE: ("message not valid in the current state", "6.1"),
    ErrorCode.HOLD_TIMER_EXPIRED: ("nothing received from the peer for the hold time", "6.4"),
    ErrorCode.TRANSACTION_TIMEOUT: ("no answer within the transaction's time", "5.3"),
    ErrorCode.CEASE: ("the peer closes the session administratively", "6.7"),
    ErrorCode.CERTIFICATE_UNKNOWN: ("an origin assertion names a certificate the peer "
                                    "session does not hold", "6.10"),
    ErrorCode.UNKNOWN_AGENT: ("no registration for this Agent ID", "5.1"),
    ErrorCode.NAME_CONFLICT: ("the agent URI is held by another key", "5.1"),
    ErrorCode.LEASE_EXPIRED: ("the lease ended; register again", "5.1"),
    ErrorCode.NO_ROUTE: ("no route to the target or no match for the query", "5.3"),
    ErrorCode.LOOP_DETECTED: ("the request would cross a gateway twice", "5.3"),
    ErrorCode.HOP_LIMIT_EXCEEDED: ("the hop limit or path vector is exhausted", "5.3"),
    ErrorCode.TARGET_UNREACHABLE: ("the target agent did not answer", "5.3"),
    ErrorCode.BAD_SIGNATURE: ("a signed record does not verify", "10.2"),
    ErrorCode.UNTRUSTED_CERTIFICATE: ("no path to an accepted trust anchor", "10.2"),
    ErrorCode.IDENTITY_MISMATCH: ("record, certificate and peer identities differ", "10.2"),
    ErrorCode.REPLAY: ("nonce seen before, or an older record version", "10.4"),
    ErrorCode.STALE_TIMESTAMP: ("TIMESTAMP outside FRESHNESS_WINDOW", "10.4"),
    ErrorCode.INVALID_TOKEN: ("the access token does not verify", "10.3"),
    ErrorCode.TOKEN_EXPIRED: ("the access token has expired", "10.3"),
    ErrorCode.INSUFFICIENT_SCOPE: ("the token lacks the operation's scope", "10.3"),
    ErrorCode.WRONG_AUDIENCE: ("the token is for another audience", "10.3"),
    ErrorCode.TOKEN_KEY_MISMATCH: ("the token is bound to another key", "10.3"),
    ErrorCode.CERTIFICATE_REVOKED: ("the certificate is revoked", "10.2"),
    ErrorCode.CERTIFICATE_EXPIRED: ("the certificate is outside its validity", "10.2"),
    ErrorCode.POLICY_DENIED: ("local or export policy forbids the request", "10.6"),
    ErrorCode.RATE_LIMITED: ("the sender exceeds a rate limit", "10.7"),
    ErrorCode.RESOURCE_EXHAUSTED: ("the receiver lacks resources", "10.7"),
    ErrorCode.INTERNAL_ERROR: ("the receiver failed", "5.4"),
    ErrorCode.MAX_RECORDS_EXCEEDED: ("a peer advertised more records than allowed", "10.7"),
    ErrorCode.PATH_TOO_LONG: ("an advertised path is longer than allowed", "10.7"),
    ErrorCode.QUERY_TOO_LARGE: ("a DISCOVER query exceeds a size or cost limit", "10.7"),
}

#: Units of the timers whose value is not in seconds (Section 8); every *_FRACTION
#: timer is a ratio too (timer_unit).
TIMER_UNITS = {"REDIAL_JITTER": "ratio", "RETRANSMIT_LIMIT": "count"}


def timer_unit(name: str) -> str:
    """The unit of the named timer in the draft's timers table."""
    return "ratio" if name.endswith("_FRACTION") else TIMER_UNITS.get(name, "seconds")

#: The protocol constants shown in Section 4.5, with their meaning.
CONSTANTS: tuple[tuple[str, Any, str], ...] = (
    ("VERSION", reg.VERSION, "protocol version in the header"),
    ("HEADER_SIZE", reg.HEADER_SIZE, "octets in the common header"),
    ("TLV_HEADER_SIZE", reg.TLV_HEADER_SIZE, "octets in a TLV's type and length"),
    ("MAX_PDU_SIZE", reg.MAX_PDU_SIZE, "largest PDU, header included"),
    ("MAX_TLV_VALUE", MAX_TLV_VALUE, "largest TLV value"),
    ("CRITICAL_BIT", reg.CRITICAL_BIT, "must-understand bit of a TLV type"),
    ("ID_SIZE", reg.ID_SIZE, "octets in an Agent ID or Gateway ID"),
    ("NONCE_SIZE", reg.NONCE_SIZE, "octets in a NONCE"),
    ("DEFAULT_HOP_LIMIT", reg.DEFAULT_HOP_LIMIT, "initial HOP_LIMIT"),
    ("RELAY_HOP_SLACK", reg.RELAY_HOP_SLACK, "spare hops of a relayed DISCOVER"),
    ("ALPN", reg.ALPN, "ALPN protocol ID over QUIC"),
    ("UDP_PORT", reg.UDP_PORT, "default UDP port (DTLS, lab UDP)"),
    ("DEFAULT_MAX_DATAGRAM", reg.DEFAULT_MAX_DATAGRAM,
     "default largest UDP payload (DTLS, lab UDP)"),
    ("SUMMARY_MAX_HASHES", reg.SUMMARY_MAX_HASHES, "most hash functions of a summary"),
    ("SUMMARY_MIN_BITS", reg.SUMMARY_MIN_BITS, "fewest bits of a summary's filter"),
    ("SUMMARY_MAX_BITS", reg.SUMMARY_MAX_BITS, "most bits of a summary's filter"),
    ("SUMMARY_BITS_PER_ELEMENT", reg.SUMMARY_BITS_PER_ELEMENT,
     "filter bits a sender aims at per term"),
    ("SYNC_WINDOW", reg.SYNC_WINDOW, "UPDATEs a gateway sends beyond the acknowledged"),
    ("DIGEST_FANOUT", reg.DIGEST_FANOUT, "children of a digest tree node"),
    ("DIGEST_LEAF_LEVEL", reg.DIGEST_LEAF_LEVEL, "level of the digest tree's leaves"),
)


def message_name(m: MessageType) -> str:
    return m.name


def cddl_name(cls: type) -> str:
    """The CDDL rule name of a value class: ``TraceContext`` -> ``trace-context``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()


# --- value formats (from the codec's value layouts, dmscproto.codec.layout) -------------
def _part_format(part: Part) -> str:
    """Describe one field of a TLV value."""
    if part.kind == "uint":
        assert part.size is not None
        base = f"uint{8 * part.size}"
        return base if part.meaning is None else f"{base} {cddl_name(part.meaning)}"
    if part.kind == "bytes":
        return "octets" if part.size is None else f"{part.size} octets"
    if part.kind == "text":
        return "UTF-8 text"
    if part.kind == "cbor":
        if part.is_signed_record:
            return "COSE_Sign1"
        assert part.value_class is not None
        return f"CBOR {cddl_name(part.value_class)}"
    if part.kind == "list":
        item = ", ".join(_part_format(p) for p in part.item)
        return (f"uint{8 * part.count_size} count, count * "
                + (f"({item})" if len(part.item) > 1 else item))
    raise TypeError(f"no format description for a {part.kind} part")


def value_format(tlv: TlvType) -> str:
    """A short description of TLV ``tlv``'s value, from its layout (:data:`LAYOUTS`)."""
    return ", ".join(_part_format(p) for p in LAYOUTS[tlv])


# --- tables -----------------------------------------------------------------------------
def hex16(v: int) -> str:
    return f"0x{v:04X}"


def hex8(v: int) -> str:
    return f"0x{v:02X}"


def number(v: float) -> str:
    """A timer value as the draft writes it: integers plain, 1/3 as a fraction."""
    if float(v).is_integer():
        return str(int(v))
    text = repr(float(v))
    if len(text) <= 6:
        return text
    frac = Fraction(v).limit_denominator(1000)
    if float(frac) != v:
        raise ValueError(f"cannot write {v!r} exactly")
    return f"{frac.numerator}/{frac.denominator}"


def gen_constants() -> str:
    rows = [(n, hex16(v) if n == "CRITICAL_BIT" else f'"{v}"' if isinstance(v, str) else str(v),
             meaning) for n, v, meaning in CONSTANTS]
    return table(("Name", "Value", "Meaning"), rows, "Protocol constants")


def gen_message_types() -> str:
    rows = [(hex8(m), message_name(m), f"Section {message_section(m)}")
            for m in sorted(MessageType)]  # registries in numeric order
    return table(("Code", "Name", "Reference"), rows, "DMSC Message Types, initial contents")


def gen_message_pairs() -> str:
    """Requests and their answers, as the datagram layer matches them (Section 9.3)."""
    rows = [(req.name, ans.name) for req, ans in ANSWER_TO.items()]
    return table(("Request", "Answer"), rows, "Requests and their answers") + (
        f"\nOne-way messages: {', '.join(m.name for m in sorted(ONE_WAY))}.\n")


def gen_flags() -> str:
    rows = [(hex16(f), str(f.name), "Section 9.3") for f in Flags]
    return table(("Bit", "Name", "Reference"), rows, "DMSC Header Flags, initial contents")


def field_names() -> dict[TlvType, str]:
    """The decoded field name of every TLV type (Section 4.3): the same in every message
    that carries it; a type no message carries is named after itself."""
    names: dict[TlvType, set[str]] = {}
    for cls in MESSAGE_CLASSES.values():
        for spec in cls.SPEC:
            names.setdefault(spec.tlv, set()).add(spec.name)
    out = {}
    for t in TlvType:
        found = names.get(t, {t.name.lower()})
        if len(found) != 1:
            raise ValueError(f"{t.name} is decoded under several names: {sorted(found)}")
        out[t] = found.pop()
    return out


def gen_tlv_formats() -> str:
    fields = field_names()
    rows = [(t.name, hex16(t), f"`{fields[t]}`", value_format(t), TLV_DOCS[t][0])
            for t in TlvType]
    return table(("TLV", "Code", "Field", "Value", "Meaning"), rows, "TLV value formats")


def gen_tlv_types() -> str:
    rows = [(hex16(t), t.name, "yes" if t.critical else "no", f"Section {TLV_DOCS[t][1]}")
            for t in sorted(TlvType)]
    return table(("Code", "Name", "Critical", "Reference"), rows,
                 "DMSC TLV Types, initial contents")


def gen_error_codes() -> str:
    rows = [(hex16(e), e.name, ERROR_DOCS[e][0], f"Section {ERROR_DOCS[e][1]}")
            for e in sorted(ErrorCode)]
    return table(("Code", "Name", "Meaning", "Reference"), rows,
                 "DMSC Error Codes, initial contents")


def _enum_table(enum: type[IntEnum] | type[IntFlag], title: str, ref: str,
                fmt: Callable[[int], str] = str) -> str:
    rows = [(fmt(int(m)), str(m.name), ref) for m in enum]
    return table(("Value", "Name", "Reference"), rows, title)


def gen_scopes() -> str:
    return _enum_table(Scope, "DMSC Discovery Scopes, initial contents", "Section 5.2")


def gen_constraint_ops() -> str:
    return _enum_table(ConstraintOp, "DMSC Constraint Operators, initial contents",
                       "Section 7.3")


def gen_gateway_caps() -> str:
    return _enum_table(GatewayCaps, "DMSC Gateway Capability Bits, initial contents",
                       "Section 6.4", lambda v: f"0x{v:08X}")


def gen_cose_algorithms() -> str:
    return _enum_table(CoseAlgorithm, "COSE algorithms for signed records", "[RFC9053]")


def gen_timers() -> str:
    rows = [(t.name, number(t.default_s), timer_unit(t.name), t.description)
            for t in reg.TIMERS]
    return table(("Timer", "Default", "Unit", "Meaning"), rows, "Timers and defaults")


def gen_limits() -> str:
    rows = [(lim.name, number(lim.default), lim.unit, lim.description) for lim in reg.LIMITS]
    return table(("Limit", "Default", "Unit", "Meaning"), rows,
                 "Resource limits of a gateway and defaults")


def gen_message(m: MessageType) -> str:
    cls = MESSAGE_CLASSES[m.value]
    rows = [(s.tlv.name, hex16(s.tlv), s.occurs.value, value_format(s.tlv)) for s in cls.SPEC]
    if not rows:
        return f"{message_name(m)} carries no TLVs.\n"
    return table(("TLV", "Code", "Occurs", "Value"), rows, f"TLVs of {message_name(m)}")


GENERATORS: dict[str, Callable[[], str]] = {
    "constants": gen_constants,
    "message-types": gen_message_types,
    "message-pairs": gen_message_pairs,
    "flags": gen_flags,
    "tlv-formats": gen_tlv_formats,
    "tlv-types": gen_tlv_types,
    "error-codes": gen_error_codes,
    "scopes": gen_scopes,
    "constraint-ops": gen_constraint_ops,
    "gateway-caps": gen_gateway_caps,
    "cose-algorithms": gen_cose_algorithms,
    "timers": gen_timers,
    "limits": gen_limits,
    "vector-index": gen_vector_index,
    "vectors-valid": gen_vectors_valid,
    "vectors-invalid": gen_vectors_invalid,
    "digest-example": gen_digest_example,
    **{f"msg-{m.name.lower().replace('_', '-')}": (lambda m=m: gen_message(m))  # type: ignore[misc]
       for m in MessageType},
}


def regenerate(text: str) -> tuple[str, list[str]]:
    """Return ``text`` with every generated region rewritten, and the stale region names
    (:func:`draft_regions.regenerate`)."""
    return draft_regions.regenerate(text, GENERATORS, foreign=("conformance",))


def main(argv: list[str] | None = None) -> int:
    return draft_regions.main(argv, description=__doc__.split("\n\n")[0], draft=DRAFT,
                              tool="tools/gen_draft.py", regenerate=regenerate)


if __name__ == "__main__":
    sys.exit(main())
