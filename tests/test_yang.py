"""The ietf-dmsc YANG module (draft-dmsc-yang-00, issue 11 item 1): it agrees with the
registries and the peering machine it mirrors, the draft carries it and its tree verbatim
(tools/gen_yang.py), and ``pyang --ietf`` and yanglint pass it without an error or a
warning; yanglint validates an RFC 7951 document against it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import load_tool, require_tool
from pyang import context, repository
from pyang.statements import Statement

from dmscproto import yang
from dmscproto.codec.registry import TIMERS, ErrorCode, MessageType
from dmscproto.host.transports import TRANSPORTS
from dmscproto.protocol.peering import PeerState

GEN = load_tool("gen_yang")


@pytest.fixture(scope="module")
def module() -> Statement:
    """The module as pyang parses and validates it (imports from pyang's own copies)."""
    ctx = context.Context(repository.FileRepository(str(yang.MODULE_PATH.parent)))
    parsed = ctx.add_module(yang.MODULE_FILE, yang.module_text())
    ctx.validate()
    assert parsed is not None and ctx.errors == []
    return parsed


def _enums(module: Statement, typedef: str) -> dict[str, str | None]:
    found = module.search_one("typedef", typedef)
    assert found is not None, typedef
    return {e.arg: (v.arg if (v := e.search_one("value")) else None)
            for e in found.search_one("type").search("enum")}


def test_module_agrees_with_the_registries(module: Statement) -> None:
    assert (module.arg, module.search_one("revision").arg) == (yang.MODULE, yang.REVISION)
    assert _enums(module, "message-type") == {
        m.name.lower().replace("_", "-"): str(m.value) for m in MessageType}
    assert _enums(module, "registered-error-code") == {
        e.name.lower().replace("_", "-"): str(e.value) for e in ErrorCode}
    assert _enums(module, "session-state") == {
        s.name.lower().replace("_", "-"): None for s in PeerState}
    assert _enums(module, "transport") == dict.fromkeys(TRANSPORTS)
    timers = module.search_one("container", "dmsc").search_one("container", "timers")
    assert {leaf.arg: float(leaf.search_one("default").arg)
            for leaf in timers.search("leaf")} == pytest.approx(
        {t.name.lower().replace("_", "-"): t.default_s for t in TIMERS}, abs=5e-4)


def test_module_and_draft_are_current() -> None:
    assert GEN.main(["--check"]) == 0, "run python tools/gen_yang.py"
    draft = GEN.DRAFT.read_text(encoding="utf-8")
    assert yang.module_text().rstrip() in draft  # verbatim
    assert "<CODE BEGINS>" in draft and "<CODE ENDS>" in draft


def test_a_registry_change_makes_the_module_stale() -> None:
    text = yang.module_text()
    changed = text.replace("enum policy-denied {\n        value 1293;",
                           "enum policy-denied {\n        value 1294;")
    assert changed != text
    new, _, stale = GEN.regenerate(changed, GEN.DRAFT.read_text(encoding="utf-8"))
    assert stale == ["registered-error-code"] and new == text


def test_pyang_ietf_reports_nothing() -> None:
    done = GEN.pyang("--ietf", "--max-line-length", str(GEN.LINE), str(yang.MODULE_PATH))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def _yanglint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("yanglint"), *args], capture_output=True,
                          text=True, timeout=60)


def test_yanglint_reports_nothing() -> None:
    done = _yanglint(str(yang.MODULE_PATH))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


_ID = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"
#: Configuration and state of one gateway with one peer, as RFC 7951 JSON.
DOCUMENT: dict[str, Any] = {"ietf-dmsc:dmsc": {
    "gateway": {"domain": "a.example", "gateway-id": _ID, "listener": [
        {"transport": "quic", "address": "127.0.0.1", "port": 4433, "bound-port": 4433}]},
    "timers": {"hold-time": "30"},
    "policies": {"export-policy": [{"name": "public", "include-tag": ["public"]}]},
    "peers": {"peer": [{
        "name": "b", "domain": "b.example", "address": "127.0.0.1", "port": 4434,
        "export-policy": "public", "session-state": "established",
        "negotiated-hold-time": 30, "uptime": "12",
        "last-error": {"code": "hold-timer-expired", "direction": "sent"},
        "statistics": {"message": [{"type": "update", "in": "3", "out": "4"}],
                       "records-received": "3", "records-accepted": "2",
                       "records-refused": "1"}}]},
    "records": {"record": [{
        "agent-id": _ID, "uri": "dmsc://b.example/weather", "origin": "learned",
        "version": "7", "route": [{"peer-gateway-id": _ID, "path": [_ID], "best": True}]}]},
    "statistics": {"refusal": [{"code": "policy-denied", "sent": "2"},
                               {"code": 4660, "received": "1"}]},
}}


@pytest.mark.parametrize(("change", "error"), [
    ({}, None),
    ({"session-state": "up"}, 'Invalid enumeration value "up"'),
    ({"export-policy": "secret"}, "Invalid leafref value"),
])
def test_yanglint_validates_a_document(tmp_path: Path, change: dict[str, str],
                                       error: str | None) -> None:
    document = json.loads(json.dumps(DOCUMENT))
    document["ietf-dmsc:dmsc"]["peers"]["peer"][0].update(change)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    done = _yanglint("-t", "data", str(yang.MODULE_PATH), str(path))
    if error is None:
        assert (done.returncode, done.stdout + done.stderr) == (0, "")
    else:
        assert done.returncode != 0 and error in done.stderr
