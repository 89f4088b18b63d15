"""A running gateway under the limits of draft Section 10.7 and the PDU limits of Sections
4.1 and 9.2 (issue 13): real DTLS and lab UDP associations, real SQLite stores."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from transport_support import StubMachine

from dmscproto.agent import Agent
from dmscproto.codec.messages import DiscoverReply, Message, Notify
from dmscproto.codec.pdu import encode
from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.wire import Result
from dmscproto.host.config import GatewayConfig
from dmscproto.host.pump import Association, Pump
from dmscproto.runtime.gateway import GatewayRuntime
from dmscproto.sandbox.domains import Domain, write_gateway_config
from dmscproto.transport import udp

#: The largest PDU over DTLS (1200-octet datagrams less the record overhead) and lab UDP.
DATAGRAM_PDU = {"dtls": 1163, "udp": 1200}


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("transport", ["dtls", "udp"])
def test_discover_answer_is_truncated_to_the_datagram(tmp_path: Path, transport: str) -> None:
    """Ten records match, the SDK asks for ten: over a datagram transport the answer is
    SUCCESS with as many of the best as fit into one PDU (Section 5.2), not
    PDU_TOO_LARGE."""
    lab = transport == "udp"

    async def scenario() -> None:
        dom = Domain.create(tmp_path, "a.example")
        gw = GatewayRuntime(GatewayConfig.load(write_gateway_config(
            dom, "gw", transport=transport, lab=lab)))
        await gw.start()
        agents: list[Agent] = []
        try:
            for i in range(10):
                ag = dom.agent(f"big{i}", gw.address, transport=transport, lab=lab,
                               reconnect=False)
                agents.append(ag)
                await ag.register(["bulk"], description=f"{i} " + "x" * 300)
            found = await agents[0].discover(skills=["bulk"], max_results=10)
            assert 1 <= len(found) < 10
            assert [f.score for f in found] == sorted((f.score for f in found), reverse=True)
            results = [Result(f.score, f.signed) for f in found]
            reply = DiscoverReply(transaction_id=2**64 - 1, status=ErrorCode.SUCCESS,
                                  results=tuple(results))
            assert len(encode(reply)) <= DATAGRAM_PDU[transport]
            rest = [a for a in agents if a.agent_id not in {f.agent_id for f in found}]
            assert rest[0].signed is not None
            one_more = DiscoverReply(transaction_id=1, status=ErrorCode.SUCCESS, results=(
                *results, Result(0, rest[0].signed)))
            assert len(encode(one_more)) > DATAGRAM_PDU[transport]
        finally:
            await asyncio.gather(*(a.close() for a in agents))
            await gw.stop()

    run(scenario())


class _Sender(StubMachine):
    """A machine whose timer sends one message to ``dest``, then one more."""

    def __init__(self, dest: Association, *messages: Message) -> None:
        super().__init__()
        self.dest = dest
        self.pending = list(messages)

    def get_timer(self) -> float | None:
        return 0.0 if self.pending else None

    def handle_timer(self, now: float) -> None:
        self.out.append((self.dest, self.pending.pop(0)))


def test_a_one_way_message_over_the_datagram_limit_never_escapes_into_a_timer(
        caplog: pytest.LogCaptureFixture) -> None:
    """A one-way PDU the transport cannot carry is logged and dropped by the pump; the
    timer callback does not raise and what is queued after it is still sent."""
    async def scenario() -> None:
        got: list[Message] = []

        async def handler(msg: Message, peer: object) -> Message | None:
            got.append(msg)
            return None

        server = await udp.serve("127.0.0.1", 0, handler, lab=True)
        conn = await udp.connect(*server.address, lab=True)
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        try:
            big = Notify(transaction_id=1, status=ErrorCode.CEASE, diagnostic="x" * 2000)
            small = Notify(transaction_id=2, status=ErrorCode.CEASE)
            pump = Pump(_Sender(Association(conn, None), big, small))
            pump.flush()
            for _ in range(50):
                await asyncio.sleep(0.01)
                if got:
                    break
            assert [m.transaction_id for m in got] == [2] and errors == []
            assert "exceeds the datagram limit" in caplog.text
            await pump.close()
        finally:
            conn.close()
            server.close()

    run(scenario())
