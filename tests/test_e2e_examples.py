"""The README's walk-through: ``dmsc authority`` files, ``examples/gateway-a.toml``, the
hello-world agent and the caller, as separate processes over QUIC."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from dmscproto.cli import main
from dmscproto.runtime.config import AgentConfig, GatewayConfig
from dmscproto.runtime.gateway import GatewayRuntime

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_hello_agent_is_discovered_and_called(tmp_path: Path) -> None:
    ca = tmp_path / "ca-a"
    assert main(["authority", "init", str(ca), "--domain", "a.example"]) == 0
    for name, kind in (("gw-a", "gateway"), ("hello", "agent"), ("client", "agent")):
        assert main(["authority", "issue", str(ca), name, "--kind", kind]) == 0
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text((EXAMPLES / "agent.toml").read_text())
    agent_config = AgentConfig.load(agent_toml)
    assert agent_config.skills == ("greet",) and agent_config.gateway == ("127.0.0.1", 4433)
    config = tmp_path / "gateway-a.toml"
    config.write_text((EXAMPLES / "gateway-a.toml").read_text()
                      .replace('listen = "127.0.0.1:4433"', 'listen = "127.0.0.1:0"'))

    def args(name: str) -> list[str]:
        return [str(ca / "issued" / f"{name}.pem"), str(ca / "issued" / f"{name}.key"),
                str(ca / "ca.pem")]

    async def scenario() -> None:
        gateway = GatewayRuntime(GatewayConfig.load(config))
        await gateway.start()
        address = "{}:{}".format(*gateway.address)
        hello = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "hello_agent.py"), *args("hello"), address,
            stdout=asyncio.subprocess.PIPE)
        try:
            assert hello.stdout is not None
            line = await asyncio.wait_for(hello.stdout.readline(), 15)
            assert line.decode().strip() == "registered dmsc://a.example/hello"
            call = await asyncio.create_subprocess_exec(
                sys.executable, str(EXAMPLES / "call_agent.py"), *args("client"), address,
                "greet", "world", stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(call.communicate(), 15)
            assert call.returncode == 0
            lines = out.decode().splitlines()
            assert "dmsc://a.example/hello" in lines[0] and lines[-1] == "hello, world"
        finally:
            hello.terminate()
            await hello.wait()
            await gateway.stop()

    asyncio.run(scenario())
