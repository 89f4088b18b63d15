"""Find an agent by capability and call it through the gateways.

    python examples/call_agent.py CERT KEY CA_CERT GATEWAY_HOST:PORT [SKILL] [TEXT]
"""
import asyncio
import sys

from dmscproto.agent import Agent


async def main(cert: str, key: str, ca: str, gateway: str, skill: str = "greet",
               text: str = "world") -> None:
    async with Agent.from_files(cert, key, [ca], gateway=gateway) as agent:
        await agent.register(skills=["chat"])
        found = await agent.discover(skills=[skill])
        for f in found:
            print(f"{f.score:6d}  {f.agent_uri}  {f.agent_id.hex()}")
        if found:
            answer = await agent.call(found[0], text.encode())
            print(answer.decode())

asyncio.run(main(*sys.argv[1:]))
