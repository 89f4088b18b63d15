"""PDU encoding and decoding (draft-dmsc-protocol-00, Section 4).

Decoding checks, in this order: header size, version, message type, PDU size limit
(before the body is read), length agreement, then each TLV in order (framing, ascending
type order, known or skippable, repetition, value), then required TLVs.  Every failure
is a :class:`DecodeError` carrying the registered error code and the offset.

The relay fast path (Section 5.3): a message class marked ``RELAYED`` (ROUTE_REQUEST,
ROUTE_REPLY) is decoded with a :class:`Wire` image of its octets.  A gateway relaying it
makes what it sends on with :func:`rewrite` (the new transaction id and TRACE_CONTEXT
and, towards a peer, HOP_LIMIT, PATH_VECTOR, TIMEOUT, a resolved TARGET_AGENT), which
keeps the image and notes the fields changed; :func:`encode` then builds those TLVs and
copies the others (the payload, the token, the agent ids...) as received, in runs of
octets.  Decoding is canonical (what decodes re-encodes to the same octets), so the copy
is what building would give: the fast path changes the cost, never the octets.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn, TypeVar

from .errors import DecodeError, EncodeError
from .messages import MESSAGE_CLASSES, REPEATED, REQUIRED, FieldSpec, Message, RawTlv
from .registry import CRITICAL_BIT, HEADER_SIZE, MAX_PDU_SIZE, VERSION, ErrorCode, TlvType
from .wire import HEADER_STRUCT, MAX_TLV_VALUE, TLV_HEADER_STRUCT, VALUE_CODECS

_unpack_header = HEADER_STRUCT.unpack_from
_unpack_tlv = TLV_HEADER_STRUCT.unpack_from
_pack_header = HEADER_STRUCT.pack
_pack_tlv = TLV_HEADER_STRUCT.pack
#: Where a decoded RELAYED message keeps its :class:`Wire` (an instance attribute that is
#: no dataclass field: equality, ``repr`` and ``dataclasses.replace`` ignore it).
_WIRE = "_wire"

M = TypeVar("M", bound=Message)


class Wire(NamedTuple):
    """The octets a RELAYED message was decoded from, and the fields :func:`rewrite`
    changed since (by name)."""

    data: bytes
    changed: frozenset[str] = frozenset()

    def splice(self, msg: Message) -> bytes | None:
        """The TLVs of ``msg`` (the header is the caller's): the octets decoded, with the
        TLVs of the changed fields built anew in their place; None if the unknown TLVs
        changed (:func:`encode` then builds every TLV)."""
        if "unknown_tlvs" in self.changed:
            return None
        key = (type(msg), self.changed)
        plans = _SPLICES.get(key)
        if plans is None:  # an empty plan (only the transaction id changed) is kept too
            plans = _splice_plans(*key)
        data, offset, size = self.data, HEADER_SIZE, len(self.data)
        parts: list[bytes] = []
        copied = offset  # octets before ``copied`` are in ``parts``
        for plan in plans:
            ttype = plan[0]
            while offset < size:  # to the first TLV of this type or a higher one
                tlv_type, tlen = _unpack_tlv(data, offset)
                if tlv_type >= ttype:
                    break
                offset += 4 + tlen
            parts.append(data[copied:offset])
            while offset < size:  # past this type's TLVs (a repeated type's are adjacent)
                tlv_type, tlen = _unpack_tlv(data, offset)
                if tlv_type != ttype:
                    break
                offset += 4 + tlen
            copied = offset
            _build_fields(parts, msg.__dict__, msg, (plan,))
        parts.append(data[copied:])
        return b"".join(parts)


#: A :class:`Wire` is made as ``_new_tuple(Wire, (data, changed))``: tuple's own
#: ``__new__``, a C call, where ``Wire(...)`` runs the named tuple's Python-level one
#: (at each decode of a relayed message and each rewrite, 4 a routed call at a gateway).
_new_tuple = tuple.__new__
_UNCHANGED: frozenset[str] = frozenset()


def rewrite(msg: M, **changes: Any) -> M:
    """``dataclasses.replace`` for a message a relay sends on (module doc): the copy keeps
    the :class:`Wire` image, if ``msg`` has one, with ``changes`` noted, so that
    :func:`encode` copies the other TLVs.  Only field names are accepted (TypeError
    otherwise)."""
    cls = type(msg)
    if not cls.FIELD_NAMES.issuperset(changes):
        unknown = changes.keys() - cls.FIELD_NAMES
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    new = object.__new__(cls)
    attrs = new.__dict__
    attrs.update(msg.__dict__)
    attrs.update(changes)
    wire: Wire | None = attrs.get(_WIRE)
    if wire is not None:
        attrs[_WIRE] = _new_tuple(Wire, (wire.data, wire.changed.union(changes)))
    return new


def peek_length(data: bytes) -> int | None:
    """Total PDU length announced by a header at the start of ``data``, for stream
    framing; None until the 8 octets that hold it have arrived.  Raises
    :class:`DecodeError` for a header a receiver must refuse without reading on."""
    if len(data) < 8:
        return None
    version, _type, _flags, length = struct.unpack_from(">BBHI", data)
    if version != VERSION:
        raise DecodeError(ErrorCode.UNSUPPORTED_VERSION, 0, f"version {version}")
    if length > MAX_PDU_SIZE:
        raise DecodeError(ErrorCode.PDU_TOO_LARGE, 4, f"PDU length {length} > {MAX_PDU_SIZE}")
    if length < HEADER_SIZE:
        raise DecodeError(ErrorCode.LENGTH_MISMATCH, 4, f"PDU length {length} < header size")
    return int(length)


class _Plan:
    """How to decode the TLVs of one message class, precomputed from its ``SPEC``."""

    __slots__ = ("cls", "defaults", "fields", "read_usual", "relayed", "repeated",
                 "required", "required_names")

    def __init__(self, cls: type[Message]) -> None:
        self.cls = cls
        #: The value of every field that has a default, which a decoded message starts
        #: from (the values read replace them), as the dataclass's ``__init__`` would.
        self.defaults = {f.name: f.default for f in dataclasses.fields(cls)
                         if f.default is not dataclasses.MISSING}
        #: TLV type -> (field name, value parser, may repeat, the length of a value that
        #: is the TLV's octets as they are: -1 any, -2 none, :attr:`ValueCodec.raw`)
        self.fields: dict[int, tuple[str, Callable[[bytes], Any], bool, int]] = {
            s.tlv.value: (s.name, VALUE_CODECS[s.tlv].parse, s.occurs is REPEATED,
                          _raw(s.tlv)) for s in cls.SPEC}
        self.required = tuple((s.name, s.tlv.name) for s in cls.SPEC if s.occurs is REQUIRED)
        self.required_names = frozenset(name for name, _ in self.required)
        self.repeated = tuple(s.name for s in cls.SPEC if s.occurs is REPEATED)
        self.relayed = cls.RELAYED
        #: The reader of the usual TLVs (:func:`_usual_reader`).
        self.read_usual = _usual_reader(cls, self.defaults)


def _usual_reader(cls: type[Message], defaults: dict[str, Any]
                  ) -> Callable[[bytes, int, int, int], Message | None]:
    """A reader of a ``cls`` PDU whose TLVs are in their usual shape: known types in
    ascending order, only a repeated field's repeated, every required one there, every
    value parsed without error.  Given the PDU, its length, flags and transaction id
    (checked by :func:`_header`), it returns the message :func:`_read_tlvs` and
    :func:`_message` would make of such a PDU, or None for any other (an unknown,
    repeated, misplaced or missing TLV, a framing or value error, which they then read
    or refuse, naming the error).

    Its source is made from the class's ``SPEC``: for each field in TLV order, a test
    of the next TLV's type (all an absent optional field costs) and the reading of its
    value into the message's attributes, without the general loop's look-ups and
    checks per TLV; :func:`decode` tries it first.  ``defaults`` are the values of the
    fields that have one, which the message starts from."""
    next_tlv = "t, n = unpack(data, o) if size - o >= 4 else (-1, 0)"
    lines = ["def read(data, size, flags, txid):",
             "    msg = new(cls)",
             "    values = msg.__dict__",
             "    values.update(DEFAULTS)",
             "    o = HEADER_SIZE",
             "    try:",
             f"        {next_tlv}"]
    namespace: dict[str, Any] = {"HEADER_SIZE": HEADER_SIZE, "unpack": _unpack_tlv,
                                 "DecodeError": DecodeError, "Wire": Wire, "new": object.__new__,
                                 "new_tuple": _new_tuple, "UNCHANGED": _UNCHANGED,
                                 "cls": cls, "DEFAULTS": defaults}
    runs = _fixed_runs(cls)
    skip = 0
    for i, spec in enumerate(cls.SPEC):
        if i < skip:  # read with the run before it
            continue
        run = runs.get(i)
        if run is not None:
            lines += _run_reader(i, run, namespace)
            skip = i + len(run)
            continue
        codec = VALUE_CODECS[spec.tlv]
        raw, size = _raw(spec.tlv), -1
        if codec.integer is not None:  # a registered member, else the general path
            namespace[f"unpack{i}"] = codec.integer[0].unpack_from
            namespace[f"members{i}"] = codec.integer[1]
            value = (f"unpack{i}(data, s)[0]" if codec.integer[1] is None
                     else f"members{i}[unpack{i}(data, s)[0]]")
            assert codec.fixed is not None
            size = codec.fixed
        elif raw == -2:
            namespace[f"parse{i}"] = codec.parse
            value = f"parse{i}(data[s:o])"
        else:
            value = "data[s:o]"
            size = raw
        repeated = spec.occurs is REPEATED
        one = ["s = o + 4",
               "o = s + n",
               "if o > size" + (f" or n != {size}:" if size >= 0 else ":"),
               "    return None",
               f"items.append({value})" if repeated else f"values[{spec.name!r}] = {value}",
               next_tlv]
        lines.append(f"        if t == {spec.tlv.value}:")
        if repeated:
            lines += ["            items = []",
                      f"            while t == {spec.tlv.value}:",
                      *("                " + line for line in one),
                      f"            values[{spec.name!r}] = tuple(items)"]
        else:
            lines += ["            " + line for line in one]
        if spec.occurs is REQUIRED:
            lines += ["        else:", "            return None"]
    lines += ["    except (DecodeError, KeyError):",
              "        return None",
              "    if o != size:",
              "        return None",
              "    values['transaction_id'], values['flags'] = txid, flags",
              *([f"    values[{_WIRE!r}] = new_tuple(Wire, (data, UNCHANGED))"]
                if cls.RELAYED else []),
              "    return msg"]
    exec("\n".join(lines), namespace)  # the source is made of the SPEC's names and types
    read: Callable[[bytes, int, int, int], Message | None] = namespace["read"]
    return read


def _fixed_runs(cls: type[Message]) -> dict[int, list[FieldSpec]]:
    """The runs of two or more adjacent required fields of ``cls`` whose values are of
    a fixed size (an integer or a byte string), by the index of their first in SPEC."""
    runs: dict[int, list[FieldSpec]] = {}
    run: list[FieldSpec] = []
    for i, spec in enumerate([*cls.SPEC, None]):
        codec = None if spec is None else VALUE_CODECS[spec.tlv]
        if (spec is not None and codec is not None and spec.occurs is REQUIRED
                and (codec.integer is not None or _raw(spec.tlv) >= 0)):
            run.append(spec)
            continue
        if len(run) >= 2:
            runs[i - len(run)] = run
        run = []
    return runs


def _run_reader(first: int, run: list[FieldSpec], namespace: dict[str, Any]) -> list[str]:
    """The reader's lines for a run of :func:`_fixed_runs` (SPEC indexes from
    ``first``): its TLVs, types, lengths and values, read by one ``struct`` unpack
    and checked at once, where reading them one by one takes a call, a tuple and the
    checks each (REGISTER's lease, nonce and timestamp: decode 165.5k -> 162.7k
    instructions, callgrind).  The run, like each of its TLVs, is there whole or the
    reader gives None."""
    fmt, names, checks, stores, total = ">", [], [], [], 0
    for k, spec in enumerate(run, first):
        codec = VALUE_CODECS[spec.tlv]
        if codec.integer is not None:
            assert codec.fixed is not None
            piece, size = codec.integer[0].format.lstrip("<>!="), codec.fixed
            namespace[f"members{k}"] = codec.integer[1]
            value = f"v{k}" if codec.integer[1] is None else f"members{k}[v{k}]"
        else:
            size = _raw(spec.tlv)
            piece, value = f"{size}s", f"v{k}"
        fmt += f"HH{piece}"
        names += [f"h{k}", f"m{k}", f"v{k}"]
        if k > first:  # the first's type is known: the next TLV's
            checks.append(f"h{k} != {spec.tlv.value}")
        checks.append(f"m{k} != {size}")
        stores.append(f"            values[{spec.name!r}] = {value}")
        total += 4 + size
    namespace[f"run{first}"] = struct.Struct(fmt).unpack_from
    return [f"        if t == {run[0].tlv.value} and size - o >= {total}:",
            f"            {', '.join(names)} = run{first}(data, o)",
            # each compared by itself, no tuple built and compared: REGISTER decode
            # 146.9k -> 146.5k instructions (callgrind)
            f"            if {' or '.join(checks)}:",
            "                return None",
            *stores,
            f"            o += {total}",
            "            t, n = unpack(data, o) if size - o >= 4 else (-1, 0)",
            "        else:",
            "            return None"]


#: Decoding plans by message type code.
_PLANS: dict[int, _Plan] = {}


def _plan(mtype: int) -> _Plan | None:
    """The plan for message type ``mtype`` (made on first use), None if unregistered."""
    cls = MESSAGE_CLASSES.get(mtype)
    if cls is None:
        return None
    plan = _PLANS[mtype] = _Plan(cls)
    return plan


def decode(data: bytes) -> Message:
    """Decode exactly one PDU from ``data`` (any bytes-like object) into its message
    dataclass, whose byte fields are then ``bytes``."""
    data, plan, flags, length, txid = _header(data)
    msg = plan.read_usual(data, length, flags, txid)
    if msg is not None:
        return msg
    values: dict[str, Any] = {}
    unknown: list[RawTlv] = []
    _read_tlvs(data, plan, HEADER_SIZE, length, -1, values, unknown)
    return _message(data, plan, flags, length, txid, values, unknown)


class PduDecoder:
    """Decodes one PDU a part at a time, as :func:`decode` does at once (same checks,
    errors and message): the TLVs of a large PDU cost milliseconds (a bulk transfer's
    UPDATE of 64 KiB of records), and a caller that must not be kept busy that long
    (an event loop) takes them a few at a time.  The header is checked at once."""

    __slots__ = ("_data", "_flags", "_last", "_length", "_offset", "_plan", "_txid",
                 "_unknown", "_values")

    def __init__(self, data: bytes) -> None:
        self._data, self._plan, self._flags, self._length, self._txid = _header(data)
        self._values: dict[str, Any] = {}
        self._unknown: list[RawTlv] = []
        self._offset = HEADER_SIZE
        self._last = -1

    def step(self, octets: int) -> Message | None:
        """Decode the next TLVs, about ``octets`` of them (whole TLVs, at least one if
        any is left); the message once the last is decoded, else None."""
        length = self._length
        self._offset, self._last = _read_tlvs(self._data, self._plan, self._offset,
                                              min(length, self._offset + octets),
                                              self._last, self._values, self._unknown)
        if self._offset < length:
            return None
        return _message(self._data, self._plan, self._flags, length, self._txid,
                        self._values, self._unknown)


def _header(data: bytes) -> tuple[bytes, _Plan, int, int, int]:
    """``data`` as bytes, the plan of its message type, flags, length and transaction
    id, once its header is checked against it (module doc)."""
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < HEADER_SIZE:
        raise DecodeError(ErrorCode.TRUNCATED, size, f"{size} octets, header needs {HEADER_SIZE}")
    version, mtype, flags, length, txid = _unpack_header(data)
    plan = _PLANS.get(mtype) or _plan(mtype)
    if version != VERSION or plan is None or length != size or size > MAX_PDU_SIZE:
        _header_error(version, mtype, length, size)
    return data, plan, flags, length, txid


def _read_tlvs(data: bytes, plan: _Plan, offset: int, stop: int, last_type: int,
               values: dict[str, Any], unknown: list[RawTlv]) -> tuple[int, int]:
    """Decode the TLVs from ``offset`` into ``values`` and ``unknown``, whole TLVs until
    ``stop`` is reached; where the next TLV starts, and the last one's type."""
    fields = plan.fields
    length = len(data)  # the PDU's (checked by _header)
    while offset < stop:
        try:
            ttype, tlen = _unpack_tlv(data, offset)
        except struct.error:  # fewer than 4 octets left
            raise DecodeError(ErrorCode.LENGTH_MISMATCH, offset,
                              "TLV header runs past the end of the PDU") from None
        start = offset + 4
        end = start + tlen
        if end > length:
            raise DecodeError(ErrorCode.LENGTH_MISMATCH, offset + 2,
                              f"TLV length {tlen} runs past the end of the PDU")
        if ttype <= last_type:
            _check_repeat(plan, ttype, last_type, offset)
        field = fields.get(ttype)
        if field is None:
            if ttype & CRITICAL_BIT:
                raise DecodeError(ErrorCode.UNKNOWN_CRITICAL_TLV, offset,
                                  f"critical TLV 0x{ttype:04x} not understood in "
                                  f"{plan.cls.TYPE.name}")
            unknown.append(RawTlv(ttype, data[start:end]))
        else:
            name, parse, repeated, raw = field
            if raw == tlen or raw == -1:  # what its parser would return: the octets
                value = data[start:end]
            else:
                try:
                    value = parse(data[start:end])
                except DecodeError as exc:
                    raise exc.at(start) from None
            if repeated:
                values.setdefault(name, []).append(value)
            else:
                values[name] = value
        last_type = ttype
        offset = end
    return offset, last_type


def _message(data: bytes, plan: _Plan, flags: int, length: int, txid: int,
             values: dict[str, Any], unknown: Sequence[RawTlv]) -> Message:
    """The message of the TLVs read, once the required ones are there."""
    if not plan.required_names <= values.keys():
        for name, tlv_name in plan.required:
            if name not in values:
                raise DecodeError(ErrorCode.MISSING_TLV, length,
                                  f"{plan.cls.TYPE.name} lacks {tlv_name}")
    for name in plan.repeated:
        if name in values:
            values[name] = tuple(values[name])
    # what the frozen dataclass's __init__ does (it has no __post_init__), without its
    # object.__setattr__ per field
    msg: Message = object.__new__(plan.cls)
    attrs = msg.__dict__
    attrs.update(plan.defaults)
    attrs.update(values)
    attrs["transaction_id"], attrs["flags"] = txid, flags
    if unknown:
        attrs["unknown_tlvs"] = tuple(unknown)
    if plan.relayed:
        attrs[_WIRE] = _new_tuple(Wire, (data, _UNCHANGED))
    return msg


def _header_error(version: int, mtype: int, length: int, size: int) -> NoReturn:
    """The first of the header's errors, in the order of the module doc (``size``, at
    least HEADER_SIZE, checked by the caller): one of them is there."""
    if version != VERSION:
        raise DecodeError(ErrorCode.UNSUPPORTED_VERSION, 0, f"version {version}")
    if mtype not in MESSAGE_CLASSES:
        raise DecodeError(ErrorCode.UNKNOWN_MESSAGE_TYPE, 1, f"message type 0x{mtype:02x}")
    if length > MAX_PDU_SIZE:
        raise DecodeError(ErrorCode.PDU_TOO_LARGE, 4, f"PDU length {length} > {MAX_PDU_SIZE}")
    if length < HEADER_SIZE:
        raise DecodeError(ErrorCode.LENGTH_MISMATCH, 4, f"PDU length {length} < header size")
    if size < length:
        raise DecodeError(ErrorCode.TRUNCATED, size, f"{size} octets, header says {length}")
    raise DecodeError(ErrorCode.TRAILING_DATA, length, f"{size - length} octets after the PDU")


def _check_repeat(plan: _Plan, ttype: int, last_type: int, offset: int) -> None:
    """A TLV whose type is not above the previous one's: out of order, or a repetition
    that only REPEATED fields and unknown non-critical TLVs may make (Section 4.2)."""
    if ttype < last_type:
        raise DecodeError(ErrorCode.TLV_ORDER, offset,
                          f"TLV 0x{ttype:04x} after 0x{last_type:04x}")
    field = plan.fields.get(ttype)
    if field is not None and not field[2]:
        raise DecodeError(ErrorCode.DUPLICATE_TLV, offset,
                          f"{TlvType(ttype).name} repeated in {plan.cls.TYPE.name}")


#: How to encode one TLV of a message class: TLV type, field name, value builder, may
#: repeat, required, the TLV header of a fixed-size value (else None), and the length
#: of a value that is its octets as they are (:attr:`ValueCodec.raw`: -1 any, -2 none).
_Build = tuple[int, str, Callable[[Any], bytes], bool, bool, bytes | None, int]
#: The encoding plan of each message class, from its ``SPEC`` on first use, in TLV type
#: order.
_BUILDS: dict[type[Message], tuple[_Build, ...]] = {}
#: The plans :meth:`Wire.splice` builds, by class and changed fields (:func:`_splice_plans`).
_SPLICES: dict[tuple[type[Message], frozenset[str]], tuple[_Build, ...]] = {}
#: The builder of each message class's usual TLVs (:func:`_usual_builder`).
_USUAL: dict[type[Message], Callable[[dict[str, Any]], bytes | None]] = {}
#: The splicer of the usual values of each class's changed fields (:func:`_usual_splicer`).
_SPLICERS: dict[tuple[type[Message], frozenset[str]],
                Callable[[bytes, dict[str, Any]], bytes | None]] = {}


def _builds(cls: type[Message]) -> tuple[_Build, ...]:
    plan = _BUILDS[cls] = tuple(
        (s.tlv.value, s.name, VALUE_CODECS[s.tlv].build, s.occurs is REPEATED,
         s.occurs is REQUIRED, _fixed_header(s.tlv), _raw(s.tlv)) for s in cls.SPEC)
    return plan


def _raw(tlv: TlvType) -> int:
    """:attr:`ValueCodec.raw` of ``tlv``'s codec, -2 for None (no length is -2)."""
    raw = VALUE_CODECS[tlv].raw
    return -2 if raw is None else raw


def _fixed_header(tlv: TlvType) -> bytes | None:
    """The TLV header of every value of ``tlv``, if its values are of a fixed size."""
    size = VALUE_CODECS[tlv].fixed
    return None if size is None else _pack_tlv(tlv.value, size)


def _usual_builder(cls: type[Message]) -> Callable[[dict[str, Any]], bytes | None]:
    """A builder of the TLVs of a ``cls`` message from its attributes, for the usual
    values: a raw field's a byte string of its length, every value built without
    error and within a TLV.  It returns what :func:`_build_fields`
    would build from them, or None for any other (which :func:`_build_fields` then
    builds or refuses, naming the error).

    Its source is made from the class's ``SPEC``: for each field in TLV order, the
    reading of its value and its TLV (the header of a fixed-size value a constant),
    without the general loop's unpacking and tests per field; :func:`encode` tries it
    first."""
    lines = ["def build(attrs):",
             "    try:",
             "        parts = []"]
    namespace: dict[str, Any] = {"pack": _pack_tlv, "MAX": MAX_TLV_VALUE,
                                 "ERRORS": _BUILD_ERRORS}
    for i, plan in enumerate(_BUILDS.get(cls) or _builds(cls)):
        lines += ("        " + line for line in _usual_tlv(i, plan, namespace))
    lines += ["    except ERRORS:",
              "        return None",
              "    return b''.join(parts)"]
    exec("\n".join(lines), namespace)  # the source is made of the SPEC's names and types
    usual: Callable[[dict[str, Any]], bytes | None] = namespace["build"]
    _USUAL[cls] = usual
    return usual


def _usual_tlv(i: int, plan: _Build, namespace: dict[str, Any]) -> list[str]:
    """The source that appends to ``parts`` the TLVs of the field ``plan`` builds, read
    from ``attrs``, its usual values only (``return None`` for any other), and puts
    what it calls in ``namespace`` (as its ``i``-th field's)."""
    ttype, name, build, repeated, required, header, raw = plan
    namespace[f"build{i}"], namespace[f"header{i}"] = build, header
    lines = [f"value = attrs[{name!r}]"]
    if repeated:  # each value built as the general loop does
        return [*lines, "if value is not None:",
                "    for one in value:",
                f"        one = build{i}(one)",
                "        if len(one) > MAX:",
                "            return None",
                f"        parts += (pack({ttype}, len(one)), one)"]
    if raw == -1:
        tlv = ["if type(value) is not bytes or len(value) > MAX:",
               "    return None",
               f"parts += (pack({ttype}, len(value)), value)"]
    elif raw >= 0:
        tlv = [f"if type(value) is not bytes or len(value) != {raw}:",
               "    return None",
               f"parts += (header{i}, value)"]
    elif header is not None:
        integer = VALUE_CODECS[TlvType(ttype)].integer
        if integer is not None:  # what its builder does, without the call
            namespace[f"build{i}"] = integer[0].pack
        tlv = [f"parts += (header{i}, build{i}(value))"]
    else:
        tlv = [f"value = build{i}(value)",
               "if len(value) > MAX:",
               "    return None",
               f"parts += (pack({ttype}, len(value)), value)"]
    if required:
        return [*lines, "if value is None:", "    return None", *tlv]
    return [*lines, "if value is not None:", *("    " + line for line in tlv)]


def _usual_splicer(cls: type[Message], changed: frozenset[str]
                   ) -> Callable[[bytes, dict[str, Any]], bytes | None]:
    """What :meth:`Wire.splice` makes of a ``cls`` message's octets and attributes when
    ``changed`` are the fields rewritten and their values the usual ones
    (:func:`_usual_tlv`), or None for any other (the general splice then builds or
    refuses them, naming the error).  Its source walks the octets to each changed
    field's TLVs once, in TLV order, copying those before them and building the field's
    anew in their place, without the general splice's loop over plans and call per
    field (a relayed ROUTE_REQUEST or ROUTE_REPLY, its TRACE_CONTEXT changed, encoded
    in 17.3k instructions against 20.6k: callgrind)."""
    if "unknown_tlvs" in changed:  # the general splice's case (it builds every TLV)
        _SPLICERS[cls, changed] = _no_splice
        return _no_splice
    lines = ["def splice(data, attrs):",
             "    try:",
             "        size, o, parts = len(data), HEADER_SIZE, []",
             "        copied = o"]
    namespace: dict[str, Any] = {"pack": _pack_tlv, "MAX": MAX_TLV_VALUE,
                                 "ERRORS": _BUILD_ERRORS, "unpack": _unpack_tlv,
                                 "HEADER_SIZE": HEADER_SIZE}
    for i, plan in enumerate(_SPLICES.get((cls, changed)) or _splice_plans(cls, changed)):
        ttype = plan[0]
        lines += ["        while o < size:  # to the first TLV of this type or a higher one",
                  "            t, n = unpack(data, o)",
                  f"            if t >= {ttype}:",
                  "                break",
                  "            o += 4 + n",
                  "        parts.append(data[copied:o])",
                  "        while o < size:  # past this type's TLVs",
                  "            t, n = unpack(data, o)",
                  f"            if t != {ttype}:",
                  "                break",
                  "            o += 4 + n",
                  "        copied = o",
                  *("        " + line for line in _usual_tlv(i, plan, namespace))]
    lines += ["        parts.append(data[copied:])",
              "    except ERRORS:",
              "        return None",
              "    return b''.join(parts)"]
    exec("\n".join(lines), namespace)  # the source is made of the SPEC's names and types
    splicer: Callable[[bytes, dict[str, Any]], bytes | None] = namespace["splice"]
    _SPLICERS[cls, changed] = splicer
    return splicer


def _no_splice(data: bytes, attrs: dict[str, Any]) -> None:
    """The splicer of a message whose unknown TLVs changed: none."""


def _splice_plans(cls: type[Message], changed: frozenset[str]) -> tuple[_Build, ...]:
    """The encoding plans of the TLVs :meth:`Wire.splice` builds anew for the fields
    ``changed`` (the transaction id is in the header), in TLV type order; kept by
    class and fields, a handful of sets (a relay changes the same ones each time)."""
    plans = {plan[1]: plan for plan in _BUILDS.get(cls) or _builds(cls)}
    splice = _SPLICES[cls, changed] = tuple(
        sorted(plans[name] for name in changed if name in plans))
    return splice


def encode(msg: Message) -> bytes:
    """Encode ``msg`` as one PDU, TLVs in ascending type order (Section 4.2); a relayed
    message's unchanged TLVs are copied from its :class:`Wire` image (module doc)."""
    attrs = msg.__dict__
    wire: Wire | None = attrs.get(_WIRE)
    body = None
    if wire is not None:  # the changed fields' usual values spliced in, else the general
        key = (type(msg), wire[1])
        body = (_SPLICERS.get(key) or _usual_splicer(*key))(wire[0], attrs)
        if body is None:
            body = wire.splice(msg)
    if body is None:
        body = _build(msg)
    length = HEADER_SIZE + len(body)
    if length > MAX_PDU_SIZE:
        raise EncodeError(f"PDU of {length} octets exceeds {MAX_PDU_SIZE}")
    try:
        header = _pack_header(VERSION, msg.TYPE, msg.flags, length, msg.transaction_id)
    except struct.error as exc:
        raise EncodeError(f"header field out of range: {exc}") from exc
    return header + body


def _build(msg: Message) -> bytes:
    """Every TLV of ``msg``; unknown TLVs go before known ones of the same or a higher
    type (a stable sort by type)."""
    cls = type(msg)
    if not msg.unknown_tlvs:
        body = (_USUAL.get(cls) or _usual_builder(cls))(msg.__dict__)
        if body is not None:
            return body
    plans = _BUILDS.get(cls) or _builds(cls)
    parts: list[bytes] = []
    if not msg.unknown_tlvs:
        _build_fields(parts, msg.__dict__, msg, plans)
        return b"".join(parts)
    unknown = sorted(msg.unknown_tlvs, key=lambda t: t.type)
    next_unknown = 0
    for plan in plans:
        while next_unknown < len(unknown) and unknown[next_unknown].type <= plan[0]:
            raw = unknown[next_unknown]
            _append(parts, raw.type, raw.value)
            next_unknown += 1
        _build_fields(parts, msg.__dict__, msg, (plan,))
    for raw in unknown[next_unknown:]:
        _append(parts, raw.type, raw.value)
    return b"".join(parts)


def _build_fields(parts: list[bytes], attrs: dict[str, Any], msg: Message,
                  plans: tuple[_Build, ...]) -> None:
    """The TLVs of the fields ``plans`` name, in that order, from ``msg``'s attributes
    ``attrs`` (a field that is None has none)."""
    for ttype, name, build, repeated, required, header, raw in plans:
        value = attrs[name]
        if value is None:
            if required:
                raise EncodeError(f"{msg.TYPE.name}.{name} is required")
            continue
        if repeated:
            _build_repeated(parts, msg, ttype, name, build, value)
            continue
        if type(value) is bytes and (raw == -1 or raw == len(value)):
            one = value  # what its builder would return: the octets
        else:
            try:
                one = build(value)
            except _BUILD_ERRORS as exc:
                raise EncodeError(f"{msg.TYPE.name}.{name}: {exc}") from exc
        if header is None:
            _append(parts, ttype, one)
        else:  # a fixed-size value
            parts += (header, one)


#: What a value builder raises for a value it cannot encode.
_BUILD_ERRORS = (struct.error, OverflowError, ValueError, TypeError, AttributeError)


def _build_repeated(parts: list[bytes], msg: Message, ttype: int, name: str,
                    build: Callable[[Any], bytes], values: Any) -> None:
    """The TLVs of a repeated field, one per value of ``values``."""
    try:
        built = [build(v) for v in values]
    except _BUILD_ERRORS as exc:
        raise EncodeError(f"{msg.TYPE.name}.{name}: {exc}") from exc
    for one in built:
        _append(parts, ttype, one)


def _append(parts: list[bytes], ttype: int, value: bytes) -> None:
    """One TLV: its header and value."""
    size = len(value)
    if size > MAX_TLV_VALUE:
        raise EncodeError(f"TLV 0x{ttype:04x} value of {size} octets is too long")
    parts += (_pack_tlv(ttype, size), value)
