"""Find an agent by capability and call it through the gateways.

    python call_agent.py client.toml [SKILL] [TEXT]
"""
import asyncio
import sys

from dmscproto.agent import Agent


async def main(config: str, skill: str = "greet", text: str = "world") -> None:
    async with Agent.from_config(config) as agent:  # a caller need not register
        found = await agent.discover(skills=[skill])
        for f in found:
            print(f"{f.score:6d}  {f.agent_uri}  {f.agent_id.hex()}")
        if not found:
            sys.exit(f"no agent has the skill {skill!r}")
        answer = await agent.call(found[0], text.encode(), timeout=10)
        print(answer.decode())

if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
