"""What ``dmsc demo`` prints: numbered steps and the messages the gateways exchange
during each, with names for ids."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO

from ..agent import DiscoveryQuery
from ..codec import render
from ..codec.messages import (
    Deregister,
    Digest,
    Discover,
    DiscoverReply,
    Message,
    Open,
    Refresh,
    Register,
    RegisterAck,
    RouteReply,
    RouteRequest,
    Update,
)
from ..codec.registry import ErrorCode
from ..host.pump import Association
from ..protocol.machine import Handle
from ..runtime.gateway import GatewayRuntime, Observer
from ..security.ca import Kind


@dataclass
class Display:
    """Prints numbered steps and the messages the gateways exchange during each."""

    out: TextIO
    names: dict[bytes, str] = field(default_factory=dict)
    step_no: int = 0
    started: float = 0.0
    show_messages: bool = True

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, title: str) -> None:
        self.step_no += 1
        self.started = time.perf_counter()
        self.line(f"\n{self.step_no}. {title}")

    def ms(self) -> str:
        return f"{(time.perf_counter() - self.started) * 1e3:7.1f} ms"

    def note(self, text: str) -> None:
        self.line(f"   {text}")

    def name(self, entity_id: bytes | None) -> str:
        if entity_id is None:
            return "-"
        return self.names.get(entity_id, entity_id.hex()[:8])

    def who(self, handle: Handle, msg: Message | None = None) -> str:
        """The name of the peer behind ``handle``; in lab mode, before it is bound, the
        agent its REGISTER names."""
        if isinstance(handle, Association) and handle.identity is not None:
            return self.name(handle.identity.entity_id)
        if isinstance(msg, Register):
            return self.name(msg.record.record.agent_id)
        return repr(handle)

    def message(self, src: str, dst: str, msg: Message) -> None:
        if self.show_messages:
            self.line(f"   {self.ms()}  {src:>10} -> {dst:<10} {msg.TYPE.name:<15}"
                      f" {self.describe(msg)}")

    def describe(self, msg: Message) -> str:
        """The facts of ``msg`` worth a line, with names for ids."""
        token = getattr(msg, "token", None)
        text = self._describe(msg)
        return text + (f" +ACCESS_TOKEN ({len(token)} octets)" if token else "")

    def _describe(self, msg: Message) -> str:
        if isinstance(msg, Register):
            rec = msg.record.record
            return (f"record v{rec.record_version} skills {[s.id for s in rec.skills]} "
                    f"lease {msg.lease} s (COSE_Sign1, {msg.record.algorithm.name})")
        if isinstance(msg, RegisterAck):
            return f"{msg.status.name} agent {self.name(msg.agent_id)} lease {msg.lease} s"
        if isinstance(msg, Refresh | Deregister):
            return f"agent {self.name(msg.agent_id)}"
        if isinstance(msg, Open):
            return (f"gateway {self.name(msg.gateway_id)} domain {msg.domain} "
                    f"hold {msg.hold_time} s")
        if isinstance(msg, Update):
            adv = [f"{self.name(a.record.record.agent_id)} v{a.version} path "
                   f"[{', '.join(self.name(g) for g in a.path)}]" for a in msg.advertise]
            wd = [self.name(w.agent_id) for w in msg.withdraw]
            return (f"advertise {adv}" if adv else "") + (f" withdraw {wd}" if wd else "")
        if isinstance(msg, Digest):
            return f"{msg.summary.count} records, hash {msg.summary.hash.hex()[:12]}"
        if isinstance(msg, Discover):
            return f"query {_query(msg.query)} scope {msg.scope.name} max {msg.max_results}"
        if isinstance(msg, DiscoverReply):
            found = [f"{self.name(r.record.record.agent_id)} ({r.score})" for r in msg.results]
            return f"{msg.status.name} {len(found)} result(s) {found}"
        if isinstance(msg, RouteRequest):
            target = (self.name(msg.target_agent) if msg.target_agent
                      else f"best match of {_query(msg.query)}")
            return (f"from {self.name(msg.source_agent)} to {target} hop_limit "
                    f"{msg.hop_limit} path [{', '.join(self.name(g) for g in msg.path)}] "
                    f"payload {msg.payload!r}")
        if isinstance(msg, RouteReply):
            if msg.status is not ErrorCode.SUCCESS:
                return f"{msg.status.name} {msg.diagnostic or ''}"
            return f"SUCCESS from {self.name(msg.target_agent)} payload {msg.payload!r}"
        return render.summary(msg, 80)


def _query(q: DiscoveryQuery | None) -> str:
    if q is None:
        return "{}"
    parts = [f"skills={list(q.skills)}" if q.skills else "",
             f"tags={list(q.tags)}" if q.tags else "",
             f"intent={q.intent!r}" if q.intent else ""]
    return "{" + " ".join(p for p in parts if p) + "}"


def observer(display: Display, gateway: GatewayRuntime) -> Observer:
    """Show what a gateway sends, and what agents send it (a message between two
    gateways is shown once, by its sender)."""
    def sent(dest: Handle, msg: Message) -> None:
        display.message(display.name(gateway.gateway_id), display.who(dest), msg)

    def received(src: Handle, msg: Message) -> None:
        if not isinstance(src, Association):
            return
        if src.identity.kind is Kind.AGENT if src.identity is not None else \
                isinstance(msg, Register):  # lab mode: not bound before its REGISTER
            display.message(display.who(src, msg), display.name(gateway.gateway_id), msg)

    return Observer(sent=sent, received=received)
