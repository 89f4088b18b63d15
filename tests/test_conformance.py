"""The conformance checklist (draft-dmsc-protocol-00, Appendix B): every MUST sentence
of the protocol draft has a covering test named in drafts/conformance.toml, and the
appendix lists them (tools/gen_checklist.py).  Also the few requirements no other test
module checks: header flags, transaction ids, DIAGNOSTIC, what a signer puts in a
record."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import cbor2
import pytest

from dmscproto.codec import decode, encode
from dmscproto.codec.messages import Discover, DiscoverReply, Keepalive, Register, RegisterAck
from dmscproto.codec.registry import ErrorClass, ErrorCode, Flags
from dmscproto.codec.values import Skill
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.index import CapabilityIndex
from dmscproto.gateway.node import GatewayNode
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.agent_registration import AgentRegistration, AgentState
from dmscproto.protocol.machine import Outbox, TransactionIds
from dmscproto.testing.examples import AGENT_ID, examples
from dmscproto.testing.harness import T0, make_record

ROOT = Path(__file__).resolve().parent.parent


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_checklist",
                                                  ROOT / "tools" / "gen_checklist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GEN = _tool()


def test_checklist_is_current_and_covers_every_must(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    code = GEN.main(["--check"])
    assert code == 0, capsys.readouterr().err


def test_checklist_check_says_what_to_add(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    text = GEN.DRAFT.read_text(encoding="utf-8")
    new = "A gateway MUST answer a KEEPALIVE with nothing at all."
    draft = tmp_path / "draft.md"
    draft.write_text(text.replace("## Entities\n", f"## Entities\n\n{new}\n", 1),
                     encoding="utf-8")
    assert GEN.main(["--check", "--draft", str(draft)]) == 1
    err = capsys.readouterr().err
    (added,) = [r for r in GEN.requirements(draft.read_text(encoding="utf-8"))
                if r.text == new]
    assert f"Section {added.section} (draft line {added.line})" in err
    assert "drafts/conformance.toml" in err
    assert f'[[requirement]]\ntext = "{new}"\ntests = ["tests/..."]' in err
    assert "out of date" in err
    # with an entry naming a test that does not exist, that is what it says
    mapping = tmp_path / "conformance.toml"
    mapping.write_text(GEN.MAPPING.read_text(encoding="utf-8") + f'\n[[requirement]]\n'
                       f'text = "{new}"\ntests = ["tests/test_nothing.py::test_no"]\n',
                       encoding="utf-8")
    assert GEN.main(["--check", "--draft", str(draft), "--mapping", str(mapping)]) == 1
    assert "names tests that do not exist: tests/test_nothing.py::test_no" in \
        capsys.readouterr().err
    # rewritten, the checklist numbers the new sentence and its test
    assert GEN.main(["--draft", str(draft), "--mapping", str(mapping)]) == 1  # still bad
    assert f"| {added.section} | {new} | `tests/test_nothing.py::test_no` |" in \
        draft.read_text(encoding="utf-8")


def test_sentences_are_split_and_numbered_like_xml2rfc() -> None:
    reqs = GEN.requirements(GEN.DRAFT.read_text(encoding="utf-8"))
    by_section = {r.section for r in reqs}
    assert {"4.2", "7.1", "9.4", "A.1"} <= by_section
    assert all(r.text.count("MUST") >= 1 and "\n" not in r.text for r in reqs)


# --- requirements checked here ----------------------------------------------------------
def test_unassigned_flags_are_ignored_and_preserved() -> None:
    """Section 4.1: senders send unassigned flag bits as zero; receivers ignore them and
    a re-encoder keeps them."""
    assert all(msg.flags & ~int(Flags.RETRANSMISSION) == 0 for msg in examples().values())
    data = bytearray(encode(Keepalive(transaction_id=9)))
    data[2:4] = (0x8000 | int(Flags.RETRANSMISSION)).to_bytes(2, "big")
    msg = decode(bytes(data))
    assert isinstance(msg, Keepalive) and encode(msg) == bytes(data)


def test_transaction_ids_are_not_reused() -> None:
    """Section 3.3: a sender's transaction ids do not repeat while outstanding."""
    ids = TransactionIds()
    assert len({ids() for _ in range(10_000)}) == 10_000


def test_diagnostic_does_not_change_the_outcome() -> None:
    """Section 4.3: the agent acts on STATUS, never on DIAGNOSTIC."""
    for status, text, registered in ((ErrorCode.SUCCESS, "REFUSED: NAME_CONFLICT", True),
                                     (ErrorCode.NAME_CONFLICT, "SUCCESS", False)):
        out = Outbox()
        m = AgentRegistration(out, "gw", TransactionIds())
        m.register(make_record(30, "alice", "a.example"), 100, T0)
        [(_, reg)] = out.messages_to_send()
        assert isinstance(reg, Register)
        m.receive(RegisterAck(transaction_id=reg.transaction_id, status=status,
                              agent_id=reg.record.record.agent_id if registered else None,
                              lease=100 if registered else None, diagnostic=text), T0)
        assert (m.state is AgentState.REGISTERED) is registered


def test_signer_writes_no_null_no_empty_optional_and_only_kid() -> None:
    """Sections 7.1 and 7.2.1: optional members that are absent are left out (never
    null, never an empty array) and the signer's unprotected header holds kid only."""
    signed = make_record(30, "alice", "a.example", skills=(Skill("echo", "Echo"),))
    record = cbor2.loads(signed.payload)
    assert 4 not in record and 16 not in record  # no description, no empty attributes
    assert record[7] == [{1: "echo", 2: "Echo", 4: []}]  # no null, no empty modes
    assert set(signed.unprotected) == {4} and signed.unprotected[4] == record[2]


def test_discover_reply_vector_scores_follow_the_default_ranking() -> None:
    """Appendix A.1: the score in discover-reply is the default ranking's (Section
    5.2.1) for the discover vector's query; worked out in the draft as 7200."""
    ex = examples()
    index = CapabilityIndex()
    reply, query = ex["discover-reply"], ex["discover"]
    assert isinstance(reply, DiscoverReply) and isinstance(query, Discover)
    for result in reply.results:
        index.add(result.record.record)
    assert [(m.agent_id, m.score) for m in index.match(query.query, query.max_results)] \
        == [(r.record.record.agent_id, r.score) for r in reply.results] \
        == [(AGENT_ID, 7200)]


def test_unknown_status_is_a_failure_of_its_class() -> None:
    """Section 4.3: a code the agent does not know is never taken for success."""
    out = Outbox()
    m = AgentRegistration(out, "gw", TransactionIds())
    m.register(make_record(30, "alice", "a.example"), 100, T0)
    [(_, reg)] = out.messages_to_send()
    assert isinstance(reg, Register)
    unknown = ErrorCode(0x03F0)
    m.receive(RegisterAck(transaction_id=reg.transaction_id, status=unknown), T0)
    assert m.state is not AgentState.REGISTERED
    assert unknown.error_class is ErrorClass.REGISTRATION and not unknown.registered


def test_kid_other_than_the_agent_id_decodes_and_is_bad_signature(
        tmp_path: Path) -> None:
    """Section 7.2.1: the register vector with a zero kid decodes; the gateway answers
    REGISTER_ACK BAD_SIGNATURE."""
    data = encode(examples()["register"])
    kid = AGENT_ID
    assert data.count(kid) >= 2  # kid, agent-id member (and the key's derivation)
    i = data.index(b"\x04\x50" + kid) + 2  # unprotected {4: bstr(16)}
    bad = data[:i] + bytes(16) + data[i + 16:]
    msg = decode(bad)
    assert isinstance(msg, Register) and msg.record.kid == bytes(16)
    core = GatewayCore(bytes([0xEE]) * 16, "a.example", RegistryStore(tmp_path / "gw.db"))
    try:
        node = GatewayNode(core)
        node.receive("agent", msg, T0)
        [(_, ack)] = node.messages_to_send()
        assert isinstance(ack, RegisterAck) and ack.status is ErrorCode.BAD_SIGNATURE
        assert AGENT_ID not in core
    finally:
        core.store.close()
