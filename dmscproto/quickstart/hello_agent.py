"""A hello-world DMSC agent: registers the skill "greet" and answers routed requests.

    python hello_agent.py hello.toml      (the agent's file, as dmsc init writes it)
"""
import asyncio
import contextlib
import sys

from dmscproto.agent import Agent, Request


async def main(config: str) -> None:
    agent = Agent.from_config(config)

    @agent.handler
    async def hello(payload: bytes, request: Request) -> bytes:
        return b"hello, " + payload

    async with agent:  # connects; on exit, deregisters and closes
        await agent.register(skills=["greet"], description="says hello")
        print("registered", agent.uri, flush=True)
        await agent.wait_closed()  # serve until interrupted

if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: deregister and exit quietly
        asyncio.run(main(sys.argv[1]))
