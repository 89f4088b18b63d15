"""What the transport tests share (draft-dmsc-protocol-00, Sections 9 and 10): the PKI,
echo messages, fast retransmission for lossy paths, an event loop runner and a count of
its turns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dmscproto.codec.messages import EchoReply, EchoRequest, Message
from dmscproto.protocol.machine import Handle
from dmscproto.security.ca import DomainAuthority, Kind
from dmscproto.transport.reliability import Reliability
from dmscproto.transport.tls import TlsIdentity


@dataclass(frozen=True)
class Pki:
    """Domain a.example's authority, gateway and agent, and a foreign domain's authority
    and agent (who trusts a.example, but whom a.example does not trust)."""

    ca: DomainAuthority
    gateway: TlsIdentity
    agent: TlsIdentity
    other_ca: DomainAuthority
    other_agent: TlsIdentity

    @classmethod
    def create(cls) -> Pki:
        ca = DomainAuthority.create("a.example")
        other = DomainAuthority.create("b.example")
        return cls(ca, TlsIdentity.issue(ca, "gw1", Kind.GATEWAY),
                   TlsIdentity.issue(ca, "agent1", Kind.AGENT), other,
                   TlsIdentity(other.issue("mallory", Kind.AGENT), ca.trust_store))


def echo(seq: int, txid: int = 0, payload: bytes = b"") -> EchoRequest:
    return EchoRequest(transaction_id=txid, sequence=seq, timestamp=0, payload=payload)


def reply_to(req: EchoRequest) -> EchoReply:
    return EchoReply(sequence=req.sequence, timestamp=req.timestamp, gateway_id=bytes(16),
                     payload=req.payload)


def fast_retransmission() -> Reliability:
    """Retransmission timers shortened (and the limit raised) so that a test through a
    lossy relay is fast and a run of unlucky losses cannot fail it."""
    return Reliability(retransmit_initial=0.1, retransmit_max=0.8, retransmit_limit=12,
                       request_timeout=30)


def loop_turns(loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    """The event-loop turns run from now on, counted by a callback that schedules itself
    again each turn: it runs first in every turn, so whatever else runs in a turn reads
    that turn's number."""
    turns = [0]

    def tick() -> None:
        turns[0] += 1
        loop.call_soon(tick)
    loop.call_soon(tick)
    return lambda: turns[0]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


class StubMachine:
    """A machine for a pump, with no events and no timer of its own: what a subclass's
    ``receive`` puts in ``out`` is what it sends."""

    def __init__(self) -> None:
        self.out: list[tuple[Handle, Message]] = []

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        pass

    def messages_to_send(self) -> list[tuple[Handle, Message]]:
        out, self.out = self.out, []
        return out

    def next_event(self) -> object | None:
        return None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass
