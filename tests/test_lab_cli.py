"""The one-shot commands against a lab-mode gateway (draft-dmsc-protocol-00, Section 9.4;
issue 15, R1): ``dmsc agent --discover``, ``dmsc agent --call``, ``dmsc ping`` and
``dmsc trace`` never REGISTER, so the gateway serves them as an unregistered lab sender.
Each command is a real process; the gateway and the agent it calls run here."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from dmscproto.host.config import GatewayConfig
from dmscproto.runtime.gateway import GatewayRuntime
from dmscproto.sandbox.domains import Domain, write_gateway_config
from dmscproto.security.ca import Kind

DMSC = [sys.executable, "-c", "import sys; from dmscproto.cli import main; sys.exit(main())"]


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def dmsc(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*DMSC, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_one_shot_commands_work_against_a_lab_gateway(tmp_path: Path) -> None:
    async def scenario() -> None:
        dom = Domain.create(tmp_path, "a.example")
        gw = GatewayRuntime(GatewayConfig.load(write_gateway_config(
            dom, "gw", transport="udp", lab=True)))
        await gw.start()
        host, port = gw.addresses["udp"]
        server = dom.agent("weather", (host, port), transport="udp", lab=True,
                           reconnect=False)
        try:
            server.serve(lambda payload, _request: b"sunny in " + payload)
            await server.register(["forecast"])
            cert, key = dom.issue("client", Kind.AGENT)
            config = tmp_path / "client.toml"
            config.write_text(
                f'[agent]\ncertificate = "{cert}"\nkey = "{key}"\n'
                f'trust_anchors = ["{dom.anchor}"]\ngateway = "{host}:{port}"\n'
                'transport = "udp"\nlab = true\n', encoding="utf-8")
            c = ["--config", str(config)]
            found, called, pinged, traced = await asyncio.gather(
                dmsc("agent", *c, "--discover", "forecast"),
                dmsc("agent", *c, "--call", "forecast", "--payload", "Paris"),
                dmsc("ping", *c, "-c", "2", "-i", "0"),
                dmsc("trace", *c, server.agent_id.hex()))
            assert found[0] == 0, found
            assert f"dmsc://a.example/weather  {server.agent_id.hex()}" in found[1]
            assert called[0] == 0 and called[1].strip() == "sunny in Paris", called
            assert pinged[0] == 0 and pinged[1].count("ECHO_REPLY from") == 2, pinged
            assert f"from {host}:{port}" in pinged[1]
            assert traced[0] == 0, traced
            assert gw.core.gateway_id.hex() in traced[1] and "SUCCESS" in traced[1]
            # none of them registered: the store holds the serving agent only
            assert list(gw.core.agent_ids()) == [server.agent_id]
        finally:
            await server.close()
            await gw.stop()

    run(scenario())
