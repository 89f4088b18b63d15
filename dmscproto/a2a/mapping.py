"""A2A <-> DMSC mapping (draft-dmsc-a2a-00): Agent Card <-> capability record (Section 3),
A2A ``Message`` parts <-> ROUTE_REQUEST / ROUTE_REPLY payload (Section 4), A2A errors
<-> DMSC error codes (Section 5).

Pure functions over the a2a-sdk's protocol buffer types and :mod:`dmscproto.codec`
values; no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    ClientCredentialsOAuthFlow,
    Message,
    OAuth2SecurityScheme,
    OAuthFlows,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from google.protobuf import json_format, struct_pb2

from ..codec import cbor
from ..codec.errors import DecodeError
from ..codec.registry import ErrorCode
from ..codec.values import AttrValue, CapabilityRecord, Provider, Skill

#: A2A protocol version the bridge speaks (a2a-sdk 1.3).
PROTOCOL_VERSION = "1.0"
#: The A2A protocol binding of the served interfaces.
JSONRPC_BINDING = "JSONRPC"

# --- attributes (Section 3.2) ------------------------------------------------------------
#: Attribute names the mapping uses; all start with ``a2a.``.
ATTR_BRIDGED = "a2a.bridged"
ATTR_CARD_URL = "a2a.card-url"
ATTR_CARD_HASH = "a2a.card-sha256"
ATTR_DOCUMENTATION_URL = "a2a.documentation-url"
ATTR_ICON_URL = "a2a.icon-url"
_EXAMPLES_PREFIX, _EXAMPLES_SUFFIX = "a2a.skill.", ".examples"

#: The media type of the parts envelope (Section 4.2).
ENVELOPE_TYPE = "application/dmsc-a2a+cbor"
#: The CBOR self-described tag 55799 that starts every envelope (RFC 8949, Section 3.4.6).
_MAGIC = b"\xd9\xd9\xf7"
_TEXT, _RAW, _URL, _DATA = 0, 1, 2, 3
_ANY = "application/octet-stream"
_JSON = "application/json"


def examples_attribute(skill_id: str) -> str:
    """The attribute carrying the A2A examples of skill ``skill_id`` (a JSON array)."""
    return f"{_EXAMPLES_PREFIX}{skill_id}{_EXAMPLES_SUFFIX}"


def card_hash(body: bytes) -> str:
    """``a2a.card-sha256``: SHA-256 of the card document's octets as served, hex."""
    return hashlib.sha256(body).hexdigest()


# --- Agent Card -> record (Section 3.1) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecordFields:
    """The members of a capability record an Agent Card determines: the keyword
    arguments of :meth:`dmscproto.agent.Agent.register` for a bridged agent."""

    name: str
    description: str | None
    version: str
    provider: Provider | None
    skills: tuple[Skill, ...]
    input_modes: tuple[str, ...]
    output_modes: tuple[str, ...]
    attributes: dict[str, AttrValue]


def card_to_record(card: AgentCard, *, card_url: str | None = None,
                   body: bytes | None = None) -> RecordFields:
    """Section 3.1: the record members of ``card``.  With ``card_url`` (an imported
    card) the record is marked bridged and carries the URL and the hash of ``body``,
    the card's octets as fetched."""
    attrs: dict[str, AttrValue] = {}
    if card_url is not None:
        attrs[ATTR_BRIDGED] = True
        attrs[ATTR_CARD_URL] = card_url
        attrs[ATTR_CARD_HASH] = card_hash(body or b"")
    if card.HasField("documentation_url"):
        attrs[ATTR_DOCUMENTATION_URL] = card.documentation_url
    if card.HasField("icon_url"):
        attrs[ATTR_ICON_URL] = card.icon_url
    for s in card.skills:
        if s.examples:
            attrs[examples_attribute(s.id)] = json.dumps(list(s.examples),
                                                         ensure_ascii=False)
    provider = Provider(card.provider.organization, card.provider.url or None) \
        if card.HasField("provider") else None
    return RecordFields(
        name=card.name, description=card.description or None, version=card.version,
        provider=provider,
        skills=tuple(Skill(s.id, s.name, tuple(s.tags), s.description or None,
                           tuple(s.input_modes), tuple(s.output_modes))
                     for s in card.skills),
        input_modes=tuple(card.default_input_modes),
        output_modes=tuple(card.default_output_modes),
        attributes=attrs)


# --- record -> Agent Card (Section 3.3) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Access:
    """How the served cards say to authenticate (Section 6.3): the domain authority's
    OAuth 2.0 token endpoint (client credentials), or None for no access control."""

    token_url: str | None = None

    SCHEME = "dmsc-authority"


def _examples(record: CapabilityRecord, skill_id: str) -> list[str]:
    raw = record.attributes.get(examples_attribute(skill_id))
    if not isinstance(raw, str):
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def record_to_card(record: CapabilityRecord, url: str, access: Access = Access()) -> AgentCard:
    """Section 3.3: the Agent Card a bridge serves for ``record``, reached at the
    JSON-RPC endpoint ``url``."""
    card = AgentCard(
        name=record.name, description=record.description or "", version=record.version,
        supported_interfaces=[AgentInterface(url=url, protocol_binding=JSONRPC_BINDING,
                                             protocol_version=PROTOCOL_VERSION)],
        capabilities=AgentCapabilities(streaming=False, push_notifications=False),
        default_input_modes=list(record.default_input_modes),
        default_output_modes=list(record.default_output_modes),
        skills=[AgentSkill(id=s.id, name=s.name, description=s.description or "",
                           tags=list(s.tags), examples=_examples(record, s.id),
                           input_modes=list(s.input_modes),
                           output_modes=list(s.output_modes))
                for s in record.skills])
    if record.provider is not None:
        card.provider.CopyFrom(AgentProvider(organization=record.provider.organization,
                                             url=record.provider.url or ""))
    doc, icon = (record.attributes.get(a) for a in (ATTR_DOCUMENTATION_URL, ATTR_ICON_URL))
    if isinstance(doc, str):
        card.documentation_url = doc
    if isinstance(icon, str):
        card.icon_url = icon
    if access.token_url is not None:
        scopes = {"route": "call the agent through the bridge",
                  **{f"route:{s.id}": f"call the skill {s.id}" for s in record.skills}}
        card.security_schemes[Access.SCHEME].CopyFrom(SecurityScheme(
            oauth2_security_scheme=OAuth2SecurityScheme(
                description=f"access tokens of the {record.domain} domain authority",
                flows=OAuthFlows(client_credentials=ClientCredentialsOAuthFlow(
                    token_url=access.token_url, scopes=scopes)))))
        card.security_requirements.append(SecurityRequirement(
            schemes={Access.SCHEME: StringList(list=["route"])}))
    return card


def card_json(card: AgentCard) -> dict[str, Any]:
    """The card as A2A JSON (camelCase, default values omitted)."""
    out: dict[str, Any] = json_format.MessageToDict(card)
    return out


def parse_card(obj: dict[str, Any]) -> AgentCard:
    """An Agent Card from its JSON form (unknown members ignored, as A2A requires)."""
    card = AgentCard()
    json_format.ParseDict(obj, card, ignore_unknown_fields=True)
    return card


# --- message parts <-> payload (Section 4) ------------------------------------------------
class ContentError(ValueError):
    """A message or payload that the other side's declared modes cannot carry
    (Section 4.3): A2A ContentTypeNotSupported / DMSC INVALID_TLV_VALUE."""


def accepts_envelope(record: CapabilityRecord) -> bool:
    """Whether the envelope may be sent to ``record`` (Section 4.2): a bridged record,
    or one declaring the envelope's media type."""
    return record.attributes.get(ATTR_BRIDGED) is True or ENVELOPE_TYPE in input_modes(record)


def input_modes(record: CapabilityRecord) -> tuple[str, ...]:
    """Every media type ``record`` accepts: its defaults, then its skills'."""
    seen = dict.fromkeys(record.default_input_modes)
    for s in record.skills:
        seen.update(dict.fromkeys(s.input_modes))
    return tuple(seen)


def _is_text(mode: str) -> bool:
    return mode == "text" or mode.startswith("text/")


def _accepts(modes: Iterable[str], media_type: str) -> bool:
    modes = tuple(modes)
    if _ANY in modes or "*/*" in modes or media_type in modes:
        return True
    if _is_text(media_type):
        return any(_is_text(m) for m in modes)
    return False


def _plain(v: Any) -> Any:
    """A protobuf ``Value`` as JSON would have it: integral numbers without fraction."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _json_text(value: struct_pb2.Struct | struct_pb2.Value) -> str:
    """Section 4.1: compact JSON text, members sorted, integral numbers as integers."""
    return json.dumps(_plain(json_format.MessageToDict(value)), separators=(",", ":"),
                      ensure_ascii=False, sort_keys=True)


def _part_to_cbor(part: Part) -> dict[int, Any]:
    kind = part.WhichOneof("content")
    d: dict[int, Any]
    if kind == "text":
        d = {1: _TEXT, 2: part.text}
    elif kind == "raw":
        d = {1: _RAW, 2: part.raw}
    elif kind == "url":
        d = {1: _URL, 2: part.url}
    elif kind == "data":
        d = {1: _DATA, 2: _json_text(part.data)}
    else:
        raise ContentError("a part without content")
    if part.media_type:
        d[3] = part.media_type
    if part.filename:
        d[4] = part.filename
    if part.HasField("metadata"):
        d[5] = _json_text(part.metadata)
    return d


def _part_from_cbor(obj: Any) -> Part:
    if not isinstance(obj, dict) or not {1, 2} <= obj.keys() <= {1, 2, 3, 4, 5}:
        raise ContentError("an envelope part is not a map of keys 1-5")
    kind, value = obj[1], obj[2]
    part = Part()
    if kind == _TEXT and isinstance(value, str):
        part.text = value
    elif kind == _RAW and isinstance(value, bytes):
        part.raw = value
    elif kind == _URL and isinstance(value, str):
        part.url = value
    elif kind == _DATA and isinstance(value, str):
        try:
            json_format.Parse(value, part.data)
        except json_format.ParseError as exc:
            raise ContentError(f"an envelope data part is not JSON: {exc}") from None
    else:
        raise ContentError(f"envelope part kind {kind!r} with a {type(value).__name__}")
    for key, attr in ((3, "media_type"), (4, "filename")):
        if key in obj:
            if not isinstance(obj[key], str):
                raise ContentError(f"envelope part member {key} is not text")
            setattr(part, attr, obj[key])
    if 5 in obj:
        try:
            json_format.Parse(obj[5] if isinstance(obj[5], str) else "", part.metadata)
        except json_format.ParseError as exc:
            raise ContentError(f"envelope part metadata: {exc}") from None
    return part


def encode_envelope(parts: Sequence[Part]) -> bytes:
    """Section 4.2: every part, losslessly, as deterministic CBOR."""
    return _MAGIC + cbor.dumps([_part_to_cbor(p) for p in parts])


def decode_envelope(payload: bytes) -> list[Part] | None:
    """The parts of an envelope; None when ``payload`` does not start with the
    self-described CBOR tag (it is then a single-part payload)."""
    if not payload.startswith(_MAGIC):
        return None
    try:
        value = cbor.loads(payload[len(_MAGIC):])
    except DecodeError as exc:
        raise ContentError(f"malformed envelope: {exc}") from None
    if not isinstance(value, list):
        raise ContentError("an envelope is a tagged array of parts")
    return [_part_from_cbor(p) for p in value]


def _single(part: Part, modes: Sequence[str]) -> bytes:
    kind = part.WhichOneof("content")
    if kind == "text" and _accepts(modes, part.media_type or "text/plain"):
        return part.text.encode()
    if kind == "data" and _accepts(modes, part.media_type or _JSON):
        return _json_text(part.data).encode()
    if kind == "raw" and _accepts(modes, part.media_type or _ANY):
        return part.raw
    raise ContentError(f"a {kind} part of type {part.media_type or 'unspecified'} is not "
                       f"among the modes the agent accepts ({', '.join(modes) or 'none'})")


def message_to_payload(parts: Sequence[Part], target: CapabilityRecord) -> bytes:
    """Section 4.1: the ROUTE_REQUEST payload for a message to ``target``."""
    if accepts_envelope(target):
        return encode_envelope(parts)
    if len(parts) != 1:
        raise ContentError(f"{len(parts)} parts: {target.agent_uri} takes one "
                           "(it does not accept the parts envelope)")
    return _single(parts[0], input_modes(target))


def payload_to_parts(payload: bytes, modes: Sequence[str]) -> list[Part]:
    """Sections 4.1 and 4.4: the parts of a payload; a payload that is not an envelope
    is one part of the first of ``modes`` (the declared content type)."""
    parts = decode_envelope(payload)
    if parts is not None:
        return parts
    mode = modes[0] if modes else _ANY
    if _is_text(mode):
        try:
            return [Part(text=payload.decode())]
        except UnicodeDecodeError:
            raise ContentError(f"payload declared {mode} is not UTF-8") from None
    if mode == _JSON:
        part = Part()
        try:
            json_format.Parse(payload or b"null", part.data)
        except json_format.ParseError as exc:
            raise ContentError(f"payload declared {_JSON} is not JSON: {exc}") from None
        return [part]
    return [Part(raw=payload, media_type=mode)]


def parts_to_reply(parts: Sequence[Part], modes: Sequence[str], envelope: bool) -> bytes:
    """Section 4.4: the ROUTE_REPLY payload of a bridged agent's answer: the envelope
    when asked with one (``envelope``) or when the parts do not fit one declared mode."""
    if not envelope and len(parts) == 1:
        try:
            return _single(parts[0], modes[:1] or (_ANY,))
        except ContentError:
            pass
    return encode_envelope(parts)


def reply_message(parts: Sequence[Part], message_id: str, context_id: str = "",
                  task_id: str = "") -> Message:
    """The A2A response ``Message`` (role agent) carrying ``parts``."""
    return Message(message_id=message_id, context_id=context_id, task_id=task_id,
                   role=Role.ROLE_AGENT, parts=list(parts))


# --- errors (Section 5) -------------------------------------------------------------------
#: JSON-RPC error codes of A2A (protocol 1.0, the a2a-sdk's JSON_RPC_ERROR_CODE_MAP).
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND = -32700, -32600, -32601
INVALID_PARAMS, INTERNAL = -32602, -32603
TASK_NOT_FOUND, UNSUPPORTED_OPERATION = -32001, -32004
CONTENT_TYPE_NOT_SUPPORTED, INVALID_AGENT_RESPONSE = -32005, -32006
VERSION_NOT_SUPPORTED = -32009


@dataclass(frozen=True, slots=True)
class A2AFailure:
    """How a DMSC error reaches an A2A client (Section 5.1): an HTTP status (401, 403,
    429: refused before JSON-RPC) or HTTP 200 with a JSON-RPC error ``rpc_code``."""

    http_status: int
    rpc_code: int | None
    bearer_error: str | None = None  # RFC 6750 error of WWW-Authenticate


_UNAUTHENTICATED = A2AFailure(401, None, "invalid_token")
_FORBIDDEN_SCOPE = A2AFailure(403, None, "insufficient_scope")
_FORBIDDEN = A2AFailure(403, None)
_INTERNAL = A2AFailure(200, INTERNAL)

#: Section 5.1, DMSC -> A2A; any code not listed maps to JSON-RPC InternalError.
DMSC_TO_A2A: dict[ErrorCode, A2AFailure] = {
    ErrorCode.INVALID_TOKEN: _UNAUTHENTICATED,
    ErrorCode.TOKEN_EXPIRED: _UNAUTHENTICATED,
    ErrorCode.WRONG_AUDIENCE: _UNAUTHENTICATED,
    ErrorCode.TOKEN_KEY_MISMATCH: _UNAUTHENTICATED,
    ErrorCode.INSUFFICIENT_SCOPE: _FORBIDDEN_SCOPE,
    ErrorCode.POLICY_DENIED: _FORBIDDEN,
    ErrorCode.RATE_LIMITED: A2AFailure(429, None),
    ErrorCode.INVALID_TLV_VALUE: A2AFailure(200, CONTENT_TYPE_NOT_SUPPORTED),
}


def dmsc_to_a2a(code: ErrorCode) -> A2AFailure:
    """Section 5.1: the A2A form of DMSC error ``code``."""
    return DMSC_TO_A2A.get(code, _INTERNAL)


#: Section 5.2, A2A JSON-RPC error code -> DMSC; not listed: INTERNAL_ERROR.
RPC_TO_DMSC: dict[int, ErrorCode] = {
    CONTENT_TYPE_NOT_SUPPORTED: ErrorCode.INVALID_TLV_VALUE,
    INVALID_PARAMS: ErrorCode.INVALID_TLV_VALUE,
}
#: Section 5.2, HTTP status of an A2A server's refusal -> DMSC; not listed: INTERNAL_ERROR.
HTTP_TO_DMSC: dict[int, ErrorCode] = {
    401: ErrorCode.INVALID_TOKEN,
    403: ErrorCode.POLICY_DENIED,
    404: ErrorCode.TARGET_UNREACHABLE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.TARGET_UNREACHABLE,
}
#: Section 5.2, A2A task states that end a bridged call without an answer -> DMSC.
TASK_STATE_TO_DMSC: dict[str, ErrorCode] = {
    "TASK_STATE_FAILED": ErrorCode.INTERNAL_ERROR,
    "TASK_STATE_REJECTED": ErrorCode.POLICY_DENIED,
    "TASK_STATE_CANCELED": ErrorCode.TARGET_UNREACHABLE,
    "TASK_STATE_AUTH_REQUIRED": ErrorCode.INVALID_TOKEN,
    "TASK_STATE_INPUT_REQUIRED": ErrorCode.INTERNAL_ERROR,
}


def rpc_to_dmsc(rpc_code: int) -> ErrorCode:
    return RPC_TO_DMSC.get(rpc_code, ErrorCode.INTERNAL_ERROR)


def http_to_dmsc(status: int) -> ErrorCode:
    return HTTP_TO_DMSC.get(status, ErrorCode.INTERNAL_ERROR)
