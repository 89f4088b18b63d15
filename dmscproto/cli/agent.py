"""``dmsc agent``: run a DMSC agent from the command line (Section 5).

With ``--skill`` (or a ``--config`` file listing skills, and neither ``--discover`` nor
``--call``) it registers and serves routed requests until SIGINT/SIGTERM, answering with
``--reply`` TEXT followed by the request payload; with ``--discover`` or ``--call`` it
does that one thing and exits.  ``dmsc ping`` and ``dmsc trace`` share its identity
options (:func:`add_identity`) and its way of running and reporting (:func:`run_agent`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import EXIT_FAILURE, EXIT_OK, Subparsers, UsageError

if TYPE_CHECKING:
    from ..agent import Agent
    from ..host.config import AgentConfig

T = TypeVar("T")

#: Seconds a user waits before a progress line says what for.
PROGRESS_AFTER = 1.0
#: Seconds between two attempts to reach the gateway when serving: the first, the cap.
RETRY_FIRST, RETRY_MAX = 0.5, 10.0


def add_identity(p: argparse.ArgumentParser) -> None:
    """The options naming an agent's certificate, key, trust anchor and home gateway:
    ``--config FILE`` (:class:`~dmscproto.host.config.AgentConfig`) or each one;
    and ``--timeout``."""
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="the agent's TOML configuration (instead of the four below)")
    p.add_argument("--cert", type=Path, help="the agent's certificate (PEM)")
    p.add_argument("--key", type=Path, help="its private key (PEM)")
    p.add_argument("--ca", type=Path, action="append",
                   help="trust anchor: the domain authority's certificate (repeatable)")
    p.add_argument("--gateway", metavar="HOST:PORT", help="the home gateway's address")
    p.add_argument("--server-name",
                   help="name the gateway certificate must carry (default: the gateway's "
                        "host name; none for an IP address)")
    p.add_argument("--transport", choices=["quic", "dtls"],
                   help="how to reach the gateway (default quic, or the file's); lab-mode "
                        "cleartext UDP only through a --config file with agent.lab = true")
    p.add_argument("--token", metavar="JWT|@FILE",
                   help="access token sent with every request (see dmsc authority token)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up after SECONDS, connecting included (exit status 1); "
                        "not for an agent that serves")


def agent_of(args: argparse.Namespace) -> tuple[Agent, AgentConfig | None]:
    """The :class:`~dmscproto.agent.Agent` the identity options describe, and its
    configuration file's contents if ``--config`` was given."""
    from ..agent import Agent
    from ..codec.registry import timer
    from ..host.config import AgentConfig, ConfigError
    config = None
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    try:
        if args.config is not None:
            config = AgentConfig.load(args.config)
            token = args.token or (f"@{config.token}" if config.token else None)
            gateway = "{}:{}".format(*config.gateway)
            cert, key, anchors = config.certificate, config.key, list(config.trust_anchors)
            server_name = args.server_name or config.server_name
            transport = args.transport or config.transport
            lab, keepalive = config.lab, config.keepalive
        else:
            if not (args.cert and args.key and args.ca and args.gateway):
                raise UsageError("give --config, or --cert, --key, --ca and --gateway")
            host, sep, port = args.gateway.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise UsageError(f"--gateway must be HOST:PORT, not {args.gateway!r}")
            cert, key, anchors, gateway = args.cert, args.key, args.ca, args.gateway
            server_name, token = args.server_name, args.token
            transport, lab = args.transport or "quic", False
            keepalive = timer("AGENT_KEEPALIVE")
        if token is not None and token.startswith("@"):
            token = Path(token[1:]).read_text(encoding="ascii").strip()
        return Agent.from_files(cert, key, anchors, gateway=gateway, server_name=server_name,
                                token=token, transport=transport, lab=lab,
                                keepalive=keepalive), config
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _hex_id(text: str) -> bytes | None:
    if len(text) != 32:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def is_target(text: str) -> bool:
    """Whether ``text`` names one agent: 32 hex digits or a ``dmsc://`` URI."""
    return _hex_id(text) is not None or text.startswith("dmsc://")


async def resolve(agent: Agent, text: str) -> bytes:
    """The Agent ID ``text`` names: 32 hex digits, or a ``dmsc://domain/name`` URI (as
    ``dmsc status`` and ``dmsc demo`` print), looked up by a DISCOVER in its domain."""
    from ..codec.values import DiscoveryQuery
    from ..security.ca import parse_identity_uri

    agent_id = _hex_id(text)
    if agent_id is not None:
        return agent_id
    try:
        domain, _name = parse_identity_uri(text)
    except ValueError:
        raise UsageError(f"an agent is 32 hex digits (its Agent ID) or a dmsc:// URI, "
                         f"not {text!r}") from None
    for found in await agent.discover(DiscoveryQuery(domain=domain), max_results=1000):
        if found.agent_uri == text:
            return found.agent_id
    raise LookupError(f"no agent {text} is registered or known to the gateway")


@asynccontextmanager
async def progress(what: str) -> AsyncIterator[None]:
    """Print ``what...`` on stderr if the block takes longer than :data:`PROGRESS_AFTER`
    seconds, so that a user who waits knows for what."""
    import asyncio

    def show() -> None:
        print(f"{what}...", file=sys.stderr, flush=True)
    handle = asyncio.get_running_loop().call_later(PROGRESS_AFTER, show)
    try:
        yield
    finally:
        handle.cancel()


async def connect(agent: Agent, *, retry: bool) -> None:
    """Connect ``agent`` to its gateway; with ``retry``, try again (saying so) until it
    answers, else fail with the reason."""
    import asyncio

    from ..errors import DmscError

    delay = RETRY_FIRST
    while True:
        try:
            async with progress(f"connecting to the gateway at {agent.address}"):
                await agent.connect()
            return
        except (DmscError, OSError) as exc:
            if not retry:
                raise
            print(f"the gateway is not reachable: {exc}; retrying in {delay:g} s",
                  file=sys.stderr, flush=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


def run_agent(command: str, timeout: float | None,
              main: Callable[[], Awaitable[T]]) -> T | int:
    """Run ``main()`` on an event loop, within ``timeout`` seconds (``--timeout``); a
    failure is one line ``dmsc COMMAND: reason`` on stderr and exit status 1."""
    import asyncio

    from ..errors import DmscError
    from ..runtime import loop

    async def bounded() -> T:
        try:
            async with asyncio.timeout(timeout):
                return await main()
        except TimeoutError as exc:
            if str(exc):
                raise
            raise TimeoutError(f"no result within --timeout {timeout:g} s") from None

    try:
        return loop.run(bounded())
    except (DmscError, OSError, LookupError) as exc:
        reason = str(exc) or type(exc).__name__
        print(f"dmsc {command}: {reason}", file=sys.stderr)
        return EXIT_FAILURE


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "agent", help="register and serve, discover, or call, as an agent",
        description="Act as a DMSC agent of the certificate's domain over QUIC: with "
                    "--skill (or a --config file's skills), register and answer routed "
                    "requests until interrupted; with --discover or --call, do that and "
                    "exit.")
    add_identity(p)
    p.add_argument("--skill", action="append", default=[],
                   help="a skill to register and serve (repeatable)")
    p.add_argument("--lease", type=int, help="lease to ask for, seconds (default 300)")
    p.add_argument("--reply", default="", help="answer: this text, then the payload")
    p.add_argument("--discover", action="append", metavar="SKILL",
                   help="print the agents having SKILL (repeatable) and exit; exit status "
                        "1 if there is none")
    p.add_argument("--call", metavar="AGENT",
                   help="send --payload to an agent (its Agent ID in hex or its dmsc:// "
                        "URI) or to the best agent with this skill, print the answer, exit")
    p.add_argument("--payload", default="", help="payload of --call (text)")
    return p


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..agent import DiscoveryQuery, Request

    agent, config = agent_of(args)
    once = bool(args.discover or args.call)
    skills = args.skill or (list(config.skills) if config and not once else [])
    lease = args.lease or (config.lease if config else 300)
    if not (skills or once):
        raise UsageError("give --skill (serve), --discover or --call")

    async def main() -> int:
        import signal
        await connect(agent, retry=bool(skills) and not once)
        status = EXIT_OK
        async with agent:
            if args.discover:
                async with progress(f"discovering {', '.join(args.discover)}"):
                    found = await agent.discover(skills=args.discover)
                for f in found:
                    print(f"{f.score:6d}  {f.agent_uri}  {f.agent_id.hex()}  "
                          f"{','.join(s.id for s in f.record.skills)}")
                if not found:
                    print(f"no agent has the skill(s) {', '.join(args.discover)}",
                          file=sys.stderr)
                    status = EXIT_FAILURE
            if args.call:
                async with progress(f"waiting for the answer to --call {args.call}"):
                    to: bytes | DiscoveryQuery = (
                        await resolve(agent, args.call) if is_target(args.call)
                        else DiscoveryQuery(skills=(args.call,)))
                    answer = await agent.call(to, args.payload.encode(), timeout=args.timeout)
                print(answer.decode(errors="replace"))
            if skills:
                prefix: bytes = args.reply.encode()

                def answer_with(payload: bytes, request: Request) -> bytes:
                    return prefix + payload
                agent.serve(answer_with)
                granted = await agent.register(skills=skills, lease=lease)
                print(f"registered {agent.uri} ({agent.agent_id.hex()}), lease {granted} s",
                      flush=True)
                stop = asyncio.Event()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    asyncio.get_running_loop().add_signal_handler(sig, stop.set)
                waits = [asyncio.ensure_future(agent.wait_closed()),
                         asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                if agent.close_reason is not None:  # the SDK has logged why
                    return EXIT_FAILURE
        return status

    return run_agent("agent", None if skills else args.timeout, main)
