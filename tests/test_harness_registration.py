"""Registration end to end through the in-memory harness: every PDU encoded and decoded,
registries in real SQLite files, a fake clock (draft-dmsc-protocol-00, Section 5.1)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dmscproto.codec.messages import Deregister, Refresh, Register, RegisterAck
from dmscproto.codec.registry import ErrorCode, MessageType, Scope
from dmscproto.codec.values import DiscoveryQuery
from dmscproto.protocol.agent_registration import AgentState
from dmscproto.protocol.events import (
    AgentRegistered,
    AgentRemoved,
    Deregistered,
    LeaseRefreshed,
    Registered,
    RegistrationFailed,
    RegistrationLost,
    RequestCompleted,
)
from dmscproto.testing.harness import T0, Network, make_record


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    n = Network(tmp_path)
    n.gateway("gw")
    yield n
    n.close()


def registered_at(net: Network, agent_id: bytes) -> float | None:
    with sqlite3.connect(net.directory / "gw.db") as db:
        row = db.execute("SELECT expires_at FROM entries WHERE agent_id = ?",
                         (agent_id,)).fetchone()
    return None if row is None else float(row[0])


def test_register_ack_only_after_commit(net: Network) -> None:
    alice = net.agent("alice", "gw")
    alice.register(net.now, lease=600)
    [(dest, reg)] = alice.messages_to_send()
    assert dest == "gw" and isinstance(reg, Register)
    net.deliver("alice", dest, reg)
    # the answer is queued, and by then another connection sees the committed row
    [(to, ack)] = net.gateways["gw"].messages_to_send()
    assert to == "alice" and isinstance(ack, RegisterAck)
    assert (ack.status, ack.lease, ack.transaction_id) == \
        (ErrorCode.SUCCESS, 600, reg.transaction_id)
    assert registered_at(net, alice.agent_id) == T0 + 600
    net.deliver("gw", "alice", ack)
    net.pump()
    assert net.take("alice", Registered) == [Registered(alice.agent_id, 600, T0 + 600)]
    assert net.take("gw", AgentRegistered) == [AgentRegistered(alice.agent_id, 600, "alice")]


def test_lease_is_clamped_and_used(net: Network) -> None:
    alice = net.agent("alice", "gw")
    alice.register(net.now, lease=1)
    net.pump()
    assert alice.registration.lease == 30  # MIN_LEASE
    assert alice.registration.lease_end == T0 + 30


def test_refresh_before_expiry_keeps_the_registration(net: Network) -> None:
    alice = net.agent("alice", "gw")
    alice.register(net.now, lease=600)
    net.advance(3 * 600)
    refreshes = [s for s in net.sent("alice", "gw") if isinstance(s.msg, Refresh)]
    # one REFRESH every REFRESH_FRACTION (0.5) of the lease
    assert [s.time - T0 for s in refreshes] == [300, 600, 900, 1200, 1500, 1800]
    assert len(net.take("alice", LeaseRefreshed)) == 6
    assert net.take("gw", AgentRemoved) == []
    assert registered_at(net, alice.agent_id) == net.now + 600
    assert alice.registration.state is AgentState.REGISTERED


def test_expiry_when_the_agent_goes_silent(net: Network) -> None:
    alice = net.agent("alice", "gw")
    alice.register(net.now, lease=600)
    net.pump()
    net.cut.add(frozenset({"alice", "gw"}))
    net.advance(601)
    [removed] = net.take("gw", AgentRemoved)
    assert removed.status is ErrorCode.LEASE_EXPIRED
    assert removed.withdrawn.agent_id == alice.agent_id
    assert registered_at(net, alice.agent_id) is None
    # the agent retried REFRESH every REQUEST_TIMEOUT, then re-registered at lease end
    assert net.take("alice", RegistrationLost) == [RegistrationLost(ErrorCode.LEASE_EXPIRED)]
    net.advance(10)
    assert net.take("alice", RegistrationFailed) == \
        [RegistrationFailed(ErrorCode.TRANSACTION_TIMEOUT)]
    assert alice.registration.state is AgentState.IDLE
    # back online: it can register again
    net.cut.clear()
    alice.register(net.now, lease=600)
    net.pump()
    assert net.take("alice", Registered)[-1].expires_at == net.now + 600


def test_reregister_when_the_gateway_lost_the_registration(net: Network) -> None:
    alice = net.agent("alice", "gw")
    alice.register(net.now, lease=600)
    net.pump()
    net.gateways["gw"].core.deregister(alice.agent_id, net.now)  # e.g. an operator
    net.advance(300)
    assert net.take("alice", RegistrationLost) == [RegistrationLost(ErrorCode.UNKNOWN_AGENT)]
    assert len(net.take("alice", Registered)) == 2
    assert registered_at(net, alice.agent_id) == net.now + 600


def test_deregister(net: Network) -> None:
    alice = net.agent("alice", "gw")
    alice.register(net.now)
    net.pump()
    alice.deregister(net.now)
    net.pump()
    assert net.take("alice", Deregistered) == [Deregistered(ErrorCode.SUCCESS)]
    assert registered_at(net, alice.agent_id) is None
    [removed] = net.take("gw", AgentRemoved)
    assert removed.status is ErrorCode.SUCCESS
    assert alice.registration.state is AgentState.IDLE and alice.get_timer() is None
    # a second DEREGISTER for the same id is UNKNOWN_AGENT
    net.deliver("alice", "gw", Deregister(transaction_id=5, agent_id=alice.agent_id,
                                          nonce=bytes(16), timestamp=0))
    [(_, ack)] = net.gateways["gw"].messages_to_send()
    assert getattr(ack, "status") is ErrorCode.UNKNOWN_AGENT  # noqa: B009


def test_bad_signature_is_refused(net: Network) -> None:
    alice = net.agent("alice", "gw")
    signed = alice.signed
    alice.signed = replace(signed, signature=bytes(len(signed.signature)))
    alice.register(net.now)
    net.pump()
    assert net.take("alice", RegistrationFailed) == \
        [RegistrationFailed(ErrorCode.BAD_SIGNATURE, "signature does not verify")]
    assert registered_at(net, alice.agent_id) is None


def test_name_conflict_is_refused(net: Network) -> None:
    net.agent("alice", "gw").register(net.now)
    impostor = net.agent("mallory", "gw", signed=make_record(99, "alice", "a.example"))
    impostor.register(net.now)  # the same agent URI, another key
    net.pump()
    [failed] = net.take("mallory", RegistrationFailed)
    assert failed.status is ErrorCode.NAME_CONFLICT


def test_registrations_survive_a_gateway_restart(net: Network) -> None:
    alice = net.agent("alice", "gw")
    alice.register(net.now, lease=600)
    net.pump()
    net.restart("gw")
    bob = net.agent("bob", "gw")
    bob.discover(DiscoveryQuery(skills=("forecast",)), net.now, scope=Scope.LOCAL)
    net.pump()
    [done] = net.take("bob", RequestCompleted)
    assert [r.record.record.agent_id for r in getattr(done.answer, "results")] == \
        [alice.agent_id]  # noqa: B009
    net.advance(300)  # the REFRESH is answered by the restarted gateway
    assert len(net.take("alice", LeaseRefreshed)) == 1


def test_unexpected_answer_at_the_gateway_is_dropped(net: Network) -> None:
    net.deliver("alice", "gw", RegisterAck(transaction_id=3, status=ErrorCode.SUCCESS))
    assert net.gateways["gw"].messages_to_send() == []
    [ev] = [e for e in (net.gateways["gw"].next_event(),) if e is not None]
    assert getattr(ev, "message_type") is MessageType.REGISTER_ACK  # noqa: B009
    assert getattr(ev, "status") is ErrorCode.UNEXPECTED_MESSAGE  # noqa: B009
