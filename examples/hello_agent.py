"""A hello-world DMSC agent: registers the skill "greet", answers routed requests.

    python examples/hello_agent.py CERT KEY CA_CERT GATEWAY_HOST:PORT
"""
import asyncio
import sys

from dmscproto.agent import Agent, Request


async def main(cert: str, key: str, ca: str, gateway: str) -> None:
    agent = Agent.from_files(cert, key, [ca], gateway=gateway)

    @agent.handler
    async def hello(payload: bytes, request: Request) -> bytes:
        return b"hello, " + payload

    async with agent:  # connects; on exit, deregisters and closes
        await agent.register(skills=["greet"], description="says hello")
        print("registered", agent.uri, flush=True)
        await agent.wait_closed()  # serve until interrupted

asyncio.run(main(*sys.argv[1:5]))
