"""Hypothesis stateful tests (issue 13 item 6): two gateway nodes of two domains, with
their agents and their peer session, driven by interleaved steps (registrations,
deregistrations, discoveries, calls, echoes, sessions closed and reopened, raw PDUs of
any type from an agent or the peer, time passing) through the in-memory harness, which
encodes and decodes every PDU on every hop.

After every step: no node raised; every request an agent made has been answered
(a request completed or failed once its time has passed: none waits forever); each
gateway's local registrations of the agents are exactly those the agents hold
(registered, not deregistered, not lost).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dmscproto.codec.registry import ANSWER_TO, MessageType, timer
from dmscproto.codec.values import DiscoveryQuery, Skill
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.events import (
    Deregistered,
    Registered,
    RegistrationFailed,
    RegistrationLost,
    RequestCompleted,
    RequestFailed,
)
from dmscproto.protocol.machine import earliest
from dmscproto.testing import examples
from dmscproto.testing.harness import Network

AGENTS = ("a1", "a2", "b1", "b2")
SKILLS = ("forecast", "translate")
EXAMPLES = sorted(examples.examples().items())
#: Requests a gateway may forward, whose answer can come later.
RELAYED = frozenset({MessageType.ROUTE_REQUEST, MessageType.TRACE_REQUEST,
                     MessageType.DISCOVER})


def home(agent: str) -> str:
    return "gw-a" if agent.startswith("a") else "gw-b"


class GatewayPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.net = Network(Path(self._dir.name))
        self.net.gateway("gw-a", "a.example")
        self.net.gateway("gw-b", "b.example")
        self.agents: dict[str, AgentClient] = {
            name: self.net.agent(name, home(name),
                                 skills=(Skill(SKILLS[i % 2], SKILLS[i % 2].title()),))
            for i, name in enumerate(AGENTS)}
        #: Requests made and not yet answered, by agent: (txid, deadline).
        self.outstanding: dict[str, dict[int, float]] = {a: {} for a in AGENTS}
        self.registered: set[str] = set()
        self.peered = False

    def teardown(self) -> None:
        self.net.close()
        self._dir.cleanup()

    def _settle(self) -> None:
        self.net.pump()
        for name in AGENTS:
            for ev in self.net.events[name]:
                if isinstance(ev, RequestCompleted | RequestFailed):
                    self.outstanding[name].pop(ev.transaction_id, None)
                if isinstance(ev, Registered):
                    self.registered.add(name)
                elif isinstance(ev, Deregistered | RegistrationLost | RegistrationFailed):
                    self.registered.discard(name)
            self.net.events[name].clear()
        for name in ("gw-a", "gw-b"):
            self.net.events[name].clear()

    def _asked(self, agent: str, txid: int) -> None:
        self.outstanding[agent][txid] = self.net.now + timer("ROUTE_TIMEOUT") + 60

    @rule(agent=st.sampled_from(AGENTS))
    def register(self, agent: str) -> None:
        self.agents[agent].register(self.net.now, 600)
        self._settle()

    @precondition(lambda self: bool(self.registered))
    @rule(data=st.data())
    def deregister(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(sorted(self.registered)))
        self.agents[agent].deregister(self.net.now)
        self._settle()

    @rule(agent=st.sampled_from(AGENTS), skill=st.sampled_from(SKILLS))
    def discover(self, agent: str, skill: str) -> None:
        self._asked(agent, self.agents[agent].discover(
            DiscoveryQuery(skills=(skill,)), self.net.now))
        self._settle()

    @rule(agent=st.sampled_from(AGENTS), callee=st.sampled_from(AGENTS))
    def call(self, agent: str, callee: str) -> None:
        self._asked(agent, self.agents[agent].route(
            b"hi", self.net.now, target=self.agents[callee].signed.record.agent_id))
        self._settle()

    @rule(agent=st.sampled_from(AGENTS))
    def echo(self, agent: str) -> None:
        self._asked(agent, self.agents[agent].echo(self.net.now))
        self._settle()

    @precondition(lambda self: not self.peered)
    @rule()
    def peer(self) -> None:
        self.net.gateways["gw-a"].connect("gw-b", self.net.now)
        self.peered = True
        self._settle()

    @precondition(lambda self: self.peered)
    @rule()
    def unpeer(self) -> None:
        node = self.net.gateways["gw-a"]
        if "gw-b" in node.sessions:
            node.disconnect("gw-b", self.net.now)
        self.peered = False
        self._settle()

    @rule(source=st.sampled_from(("a1", "b1", "gw-b")), example=st.sampled_from(EXAMPLES),
          txid=st.integers(0, 2**64 - 1))
    def raw(self, source: str, example: tuple[str, object], txid: int) -> None:
        """Any message, of any type, from an agent or from the peer gateway: a request
        that is not relayed is answered at once (its answer, ERROR or a NOTIFY)."""
        msg = replace(example[1], transaction_id=txid)  # type: ignore[type-var]
        before = len(self.net.log)
        self.net.deliver(source, "gw-a", msg)
        self._settle()
        if msg.TYPE in ANSWER_TO and msg.TYPE not in RELAYED:
            assert any(sent.source == "gw-a" and sent.dest == source
                       for sent in self.net.log[before:]), msg.TYPE.name

    @rule(seconds=st.sampled_from((1.0, 15.0, 45.0, 120.0)))
    def wait(self, seconds: float) -> None:
        self.net.advance(seconds)
        self._settle()

    def _locals(self, gateway: str) -> set[bytes]:
        """The gateway's local registrations of our agents (a raw REGISTER of an example
        record may have registered another)."""
        ours = {a.signed.record.agent_id for a in self.agents.values()}
        return ours & set(self.net.gateways[gateway].core.agent_ids(local_only=True))

    @invariant()
    def no_request_waits_forever(self) -> None:
        for name in AGENTS:
            for txid, deadline in self.outstanding[name].items():
                assert self.net.now < deadline, (name, txid)

    @invariant()
    def local_registrations_are_the_acknowledged_ones(self) -> None:
        for gateway in ("gw-a", "gw-b"):
            want = {self.agents[n].signed.record.agent_id for n in self.registered
                    if home(n) == gateway}
            assert self._locals(gateway) == want

    @invariant()
    def each_timer_is_its_machines_earliest(self) -> None:
        for node in self.net.gateways.values():
            want = earliest(
                node.registration.get_timer(), node.summaries.get_timer(), node._drop_at,
                None if node.grace is None else node.grace.get_timer(),
                *(s.get_timer() for s in node.sessions.values()),
                *(r.get_timer() for r in node._unanswered),
                *(f.get_timer() for f in node._relaying if not f.done))
            assert node.get_timer() == want


GatewayPair.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_gateway_pair = GatewayPair.TestCase
