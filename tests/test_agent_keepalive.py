"""The agent keepalive (draft-dmsc-protocol-00, Section 6.8.3): ECHO_REQUEST after a
keepalive interval of silence from the gateway, the gateway lost after three."""

from __future__ import annotations

from dmscproto.codec.messages import EchoReply, EchoRequest
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.events import GatewayLost
from dmscproto.protocol.liveness import LivenessState
from dmscproto.testing.harness import T0, make_record


def client(keepalive: float | None = 1.0) -> AgentClient:
    return AgentClient(make_record(30, "alice", "a.example"), "gw", keepalive=keepalive)


def echoes(c: AgentClient) -> list[EchoRequest]:
    return [m for _, m in c.messages_to_send() if isinstance(m, EchoRequest)]


def test_silence_is_probed_each_interval_and_declared_lost_after_three() -> None:
    c = client()
    c.watch_gateway(T0)
    assert c.get_timer() == T0 + 1
    for t in (1, 2):
        c.handle_timer(T0 + t)
        assert len(echoes(c)) == 1 and c.next_event() is None
    c.handle_timer(T0 + 3)
    assert echoes(c) == []
    lost = c.next_event()
    assert isinstance(lost, GatewayLost) and lost.silent_s == 3
    assert c.liveness is not None and c.liveness.state is LivenessState.LOST
    assert c.liveness.get_timer() is None


def test_anything_from_the_gateway_ends_the_silence() -> None:
    c = client()
    c.watch_gateway(T0)
    c.handle_timer(T0 + 1)
    [probe] = echoes(c)
    c.receive(EchoReply(transaction_id=probe.transaction_id, sequence=probe.sequence,
                        timestamp=probe.timestamp, gateway_id=bytes(16)), T0 + 1.2)
    assert c.liveness is not None and c.liveness.state is LivenessState.WATCHING
    assert c.get_timer() == T0 + 2.2
    c.handle_timer(T0 + 3.5)  # one more probe, not lost: 2.3 s of silence
    assert len(echoes(c)) == 1
    assert not any(isinstance(e, GatewayLost) for e in iter(c.next_event, None))


def test_no_keepalive_no_timer() -> None:
    c = client(None)
    c.watch_gateway(T0)
    assert c.liveness is None and c.get_timer() is None
