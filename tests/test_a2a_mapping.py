"""The A2A mapping (draft-dmsc-a2a-00, Sections 3-5) over real-world-shaped Agent Cards,
and the draft's error tables against the code."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from a2a.types import AgentCard, Part
from google.protobuf import json_format

from dmscproto.a2a import mapping as m
from dmscproto.codec import cbor
from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.values import CapabilityRecord, Endpoint

pytestmark = pytest.mark.a2a

ROOT = Path(__file__).resolve().parent.parent
CARDS: list[dict[str, Any]] = json.loads((ROOT / "tests" / "a2a_cards.json").read_text())
#: What a card loses on import and what the served card sets (Sections 3.3, 3.4).
REPLACED = ("capabilities", "securitySchemes", "securityRequirements", "signatures",
            "supportedInterfaces")


def _record(fields: m.RecordFields, name: str = "proxy") -> CapabilityRecord:
    rec = CapabilityRecord(
        agent_uri=f"dmsc://a.example/{name}", agent_id=bytes(16), name=fields.name,
        version=fields.version, skills=fields.skills,
        default_input_modes=fields.input_modes, default_output_modes=fields.output_modes,
        endpoints=(Endpoint("quic", "quic://127.0.0.1:4433"),), domain="a.example",
        issued_at=1, lease=60, record_version=1, public_key=b"k",
        description=fields.description, provider=fields.provider,
        attributes=fields.attributes)
    # a valid record: its CBOR decodes to the same record
    assert CapabilityRecord.from_cbor(cbor.loads(cbor.dumps(rec.to_cbor()))) == rec
    return rec


def _mapped(card: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in card.items() if k not in REPLACED}
    out["skills"] = [{k: v for k, v in s.items() if k != "securityRequirements"}
                     for s in out.get("skills", [])]
    return out


@pytest.mark.parametrize("obj", CARDS, ids=[c["name"] for c in CARDS])
def test_card_record_card_round_trip(obj: dict[str, Any]) -> None:
    card = m.parse_card(obj)
    body = json.dumps(obj).encode()
    fields = m.card_to_record(card, card_url="https://x.example/.well-known/agent-card.json",
                              body=body)
    assert fields.attributes[m.ATTR_BRIDGED] is True
    assert fields.attributes[m.ATTR_CARD_HASH] == m.card_hash(body)
    served = m.record_to_card(_record(fields), "https://bridge.example/agents/a.example/p")
    again = m.card_json(served)
    assert _mapped(again) == _mapped(m.card_json(card))
    assert again["supportedInterfaces"] == [{"url": "https://bridge.example/agents/a.example/p",
                                             "protocolBinding": "JSONRPC",
                                             "protocolVersion": "1.0"}]
    assert "securitySchemes" not in again  # no access control configured


@pytest.mark.parametrize("obj", CARDS, ids=[c["name"] for c in CARDS])
def test_record_card_record_round_trip(obj: dict[str, Any]) -> None:
    fields = m.card_to_record(m.parse_card(obj))
    assert m.ATTR_BRIDGED not in fields.attributes
    rec = _record(fields)
    back = m.card_to_record(m.parse_card(m.card_json(m.record_to_card(rec, "https://b/"))))
    assert back == fields


def test_examples_documentation_and_provider_are_carried() -> None:
    fields = m.card_to_record(m.parse_card(CARDS[2]))
    assert fields.provider is not None and fields.provider.organization == "Acme Corp"
    assert fields.attributes[m.ATTR_DOCUMENTATION_URL] == "https://invoices.example.com/docs"
    assert json.loads(str(fields.attributes[m.examples_attribute("extract-line-items")]))[0] \
        == "Extract all line items from this invoice PDF"
    assert m.examples_attribute("totals") not in fields.attributes  # no examples
    assert fields.skills[1].input_modes == ("application/pdf",)


def test_served_card_names_the_authority_token_endpoint() -> None:
    rec = _record(m.card_to_record(m.parse_card(CARDS[1])))
    card = m.card_json(m.record_to_card(rec, "https://b/", m.Access("https://ca/token")))
    flow = card["securitySchemes"]["dmsc-authority"]["oauth2SecurityScheme"]["flows"]
    assert flow["clientCredentials"]["tokenUrl"] == "https://ca/token"
    assert set(flow["clientCredentials"]["scopes"]) == {
        "route", "route:hello_world", "route:super_hello_world"}
    assert card["securityRequirements"] == [{"schemes": {"dmsc-authority": {"list": ["route"]}}}]


# --- parts <-> payload (Section 4) --------------------------------------------------------
def _target(inputs: tuple[str, ...], outputs: tuple[str, ...] = ("text/plain",),
            bridged: bool = False) -> CapabilityRecord:
    fields = m.card_to_record(m.parse_card(CARDS[0]), card_url="u" if bridged else None)
    return replace(_record(fields), default_input_modes=inputs, default_output_modes=outputs,
                   skills=())


def _data(obj: Any) -> Part:
    part = Part()
    json_format.ParseDict(obj, part.data)
    return part


def test_single_parts_by_declared_mode() -> None:
    text, data = Part(text="Paris é"), _data({"city": "Paris", "days": 3})
    pdf = Part(raw=b"%PDF-1.7", media_type="application/pdf")
    assert m.message_to_payload([text], _target(("text",))) == "Paris é".encode()
    assert m.message_to_payload([data], _target(("application/json",))) \
        == b'{"city":"Paris","days":3}'
    assert m.message_to_payload([pdf], _target(("application/pdf",))) == b"%PDF-1.7"
    assert m.message_to_payload([pdf], _target(("application/octet-stream",))) == b"%PDF-1.7"
    for parts, modes in (([pdf], ("text/plain",)), ([data], ("text/plain",)),
                         ([text, text], ("text/plain",)),
                         ([Part(url="https://x/f.pdf")], ("application/pdf",))):
        with pytest.raises(m.ContentError):
            m.message_to_payload(parts, _target(modes))


def test_envelope_round_trips_every_kind_for_bridged_targets() -> None:
    meta = Part(text="hi", media_type="text/markdown", filename="a.md")
    json_format.ParseDict({"lang": "en"}, meta.metadata)
    parts = [meta, Part(raw=b"\xd9\xd9\xf7\x00", media_type="image/png"),
             Part(url="https://x/f.pdf", media_type="application/pdf"),
             _data([1, "two", {"three": None}])]
    payload = m.message_to_payload(parts, _target(("text",), bridged=True))
    assert payload.startswith(b"\xd9\xd9\xf7")
    assert m.decode_envelope(payload) == parts
    assert m.payload_to_parts(payload, ("text/plain",)) == parts
    # a record declaring the envelope's type gets it too
    assert m.message_to_payload(parts[:1], _target((m.ENVELOPE_TYPE,))) \
        == m.encode_envelope(parts[:1])
    for bad in (payload[:-1], b"\xd9\xd9\xf7\x01",
                b"\xd9\xd9\xf7" + cbor.dumps([{1: 0, 2: b"not text"}])):
        with pytest.raises(m.ContentError):
            m.decode_envelope(bad)


def test_payload_to_parts_and_replies() -> None:
    assert m.payload_to_parts("sunny, 21 °C".encode(), ("text/plain",)) \
        == [Part(text="sunny, 21 °C")]
    assert m.payload_to_parts(b'{"t":21}', ("application/json",)) == [_data({"t": 21})]
    assert m.payload_to_parts(b"\x89PNG", ("image/png",)) \
        == [Part(raw=b"\x89PNG", media_type="image/png")]
    for payload, modes in ((b"\xff", ("text/plain",)), (b"{", ("application/json",))):
        with pytest.raises(m.ContentError):
            m.payload_to_parts(payload, modes)
    # a proxy's answer: single part when it fits the first output mode, unless asked
    # with an envelope
    text = [Part(text="ok")]
    assert m.parts_to_reply(text, ("text/plain",), envelope=False) == b"ok"
    assert m.parts_to_reply(text, ("text/plain",), envelope=True) == m.encode_envelope(text)
    assert m.parts_to_reply(text * 2, ("text/plain",), envelope=False) \
        == m.encode_envelope(text * 2)


# --- errors (Section 5) and the draft's tables ---------------------------------------------
def _draft_table(name: str) -> list[list[str]]:
    text = (ROOT / "drafts" / "draft-dmsc-a2a-00.md").read_text()
    block = text.split(f"<!-- a2a-error-table: {name} -->", 1)[1].split("\n{:", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in block.strip().splitlines() if line.startswith("|")]
    return rows[2:]


def test_draft_dmsc_to_a2a_table_is_the_code() -> None:
    rows = _draft_table("dmsc-to-a2a")
    listed = {}
    for code, status, rpc in rows:
        failure = m.A2AFailure(int(status), int(rpc.split()[0]) if rpc[:1] == "-" else None,
                               rpc.strip("()") if rpc.startswith("(") else None)
        if code == "any other":
            assert failure == m.dmsc_to_a2a(ErrorCode.NO_ROUTE)
        else:
            listed[ErrorCode[code]] = failure
    assert listed == m.DMSC_TO_A2A


def test_draft_a2a_to_dmsc_table_is_the_code() -> None:
    http, rpc, task = {}, {}, {}
    for outcome, code in _draft_table("a2a-to-dmsc"):
        if (hit := re.fullmatch(r"HTTP (\d+)", outcome)):
            http[int(hit[1])] = ErrorCode[code]
        elif (hit := re.fullmatch(r"(-\d+) \w+", outcome)):
            rpc[int(hit[1])] = ErrorCode[code]
        elif outcome.startswith("task "):
            task[outcome.split()[1]] = ErrorCode[code]
    assert http == m.HTTP_TO_DMSC and rpc == m.RPC_TO_DMSC and task == m.TASK_STATE_TO_DMSC
    assert m.http_to_dmsc(500) is ErrorCode.INTERNAL_ERROR
    assert m.rpc_to_dmsc(m.INTERNAL) is ErrorCode.INTERNAL_ERROR


def test_cards_parse_as_the_sdk_parses_them() -> None:
    """The fixtures are valid A2A 1.0 cards: the SDK's own parser takes each."""
    from a2a.client.card_resolver import parse_agent_card

    for obj in CARDS:
        assert isinstance(parse_agent_card(dict(obj)), AgentCard)


def test_a_jku_of_another_origin_is_refused_without_fetching() -> None:
    """Section 7.1: a card naming its own key set elsewhere proves nothing: BAD_SIGNATURE
    before any fetch (the client below has no network to offer)."""
    import asyncio
    import base64

    import httpx

    from dmscproto.a2a.proxy import verify_card
    from dmscproto.security.errors import SecurityError

    card = m.parse_card(CARDS[0])
    header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "ES256", "kid": "k1", "jku": "https://attacker.example/jwks.json"}).encode())
    card.signatures.add(protected=header.decode().rstrip("="), signature="c2ln")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"fetched {request.url}")

    async def check() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
            with pytest.raises(SecurityError) as err:
                await verify_card(http, card, "https://agent.example/.well-known/agent-card.json",
                                  jwks=None, require=False)
            assert err.value.code is ErrorCode.BAD_SIGNATURE and "origin" in str(err.value)
    asyncio.run(check())
