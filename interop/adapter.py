"""This project's endpoint for the interop runner: ``python -m interop.adapter``, started
with the environment of the endpoint contract (:mod:`interop.contract`, interop/README.md).

Every role is played by the project's own pieces: a gateway is a
:class:`~dmscproto.runtime.gateway.GatewayRuntime` started from a TOML file as ``dmsc
gateway --config`` starts it, an agent the SDK (:mod:`dmscproto.agent`), except where a
test case needs a request the SDK will not send (a forged record, a replayed nonce, a
malformed PDU, a REGISTER never refreshed): those go on a connection of the same
transport as raw messages.  Each endpoint writes ``messages.jsonl`` in its log
directory: every DMSC message it sent or received, as hex (the gateways'; the runner
checks the wire itself, this log is for people debugging).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric import ed25519

from dmscproto.agent import Agent, AgentError, DiscoveryQuery, Found, Request
from dmscproto.codec import DecodeError, decode, encode
from dmscproto.codec.messages import (
    Discover,
    DiscoverReply,
    Message,
    Refresh,
    Register,
    RegisterAck,
)
from dmscproto.codec.registry import ANSWER_TO, NONCE_SIZE, ErrorCode, MessageType, Scope, timer
from dmscproto.codec.signing import entity_id, sign_record, spki
from dmscproto.host import logs
from dmscproto.host.config import GatewayConfig
from dmscproto.host.transports import Connection
from dmscproto.protocol.machine import Handle, timestamp_ms
from dmscproto.runtime.gateway import GatewayRuntime, Observer
from dmscproto.testing.examples import examples

from . import contract as c
from .vectors import draft_vectors

#: Cases the agent client plays (the others only need servers), by scenario name.
CLIENT_CASES: dict[str, Callable[[Agent, Mapping[str, str]], Awaitable[bool]]] = {}
#: Seconds a client waits for a federated record to reach its gateway (a lost UPDATE is
#: repaired by the next DIGEST, DIGEST_INTERVAL = 30 s later).
FEDERATION_WAIT = 50.0
CONNECT_ATTEMPTS = 5
#: What a client registers where it must (lab mode).
CLIENT_SKILL = "interop-client"


class Unsupported(Exception):
    """The endpoint does not support the test case (exit 127)."""


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


class _MessageLog:
    """``messages.jsonl``: one JSON object per message sent or received."""

    def __init__(self, path: Path) -> None:
        self.file: TextIO = path.open("a", encoding="utf-8")

    def write(self, direction: str, peer: Handle, msg: Message) -> None:
        self.file.write(json.dumps({"time": time.time(), "dir": direction, "peer": repr(peer),
                                    "type": msg.TYPE.name, "hex": encode(msg).hex()}) + "\n")
        self.file.flush()

    def observer(self) -> Observer:
        return Observer(sent=lambda h, m: self.write("sent", h, m),
                        received=lambda h, m: self.write("received", h, m))


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _ready(env: Mapping[str, str]) -> None:
    if env.get(c.READY):
        Path(env[c.READY]).touch()


# --- gateway and peer-gateway ----------------------------------------------------------------
def _toml(value: object) -> str:
    return json.dumps(value)  # JSON's strings, numbers, booleans and lists are TOML's


def gateway_toml(env: Mapping[str, str], logdir: Path) -> str:
    """The gateway's configuration file (:mod:`dmscproto.host.config`) for the
    contract's environment."""
    transport = env[c.TRANSPORT]
    lab = transport == "udp"
    lines = ["[gateway]", f"domain = {_toml(env[c.DOMAIN])}", f"name = {_toml(env[c.NAME])}",
             f"transport = {_toml(transport)}", f"listen = {_toml(env[c.LISTEN])}",
             f"lab = {_toml(lab)}", f"certificate = {_toml(env[c.CERT])}",
             f"key = {_toml(env[c.KEY])}", f"trust_anchors = {_toml([env[c.CA]])}",
             f"store = {_toml(str(logdir / 'registry.sqlite'))}", "", "[limits]",
             f"min_lease = {int(env.get(c.MIN_LEASE, c.SHORT_LEASE))}",
             f"hold_time = {int(env.get(c.HOLD_TIME, c.INTEROP_HOLD_TIME))}", ""]
    if env.get(c.KEYLOG) and not lab:
        lines += ["[capture]", f"keylog = {_toml(env[c.KEYLOG])}", ""]
    if env.get(c.PEER_DOMAIN):
        lines += ["[[peers]]", f"domain = {_toml(env[c.PEER_DOMAIN])}",
                  f"anchor = {_toml(env[c.PEER_CA])}"]
        if env.get(c.PEER):
            lines += [f"address = {_toml(env[c.PEER])}", 'server_name = "localhost"']
        lines += ["[peers.export]", "exclude_tags = []", ""]
    return "\n".join(lines)


async def run_gateway(env: Mapping[str, str], logdir: Path) -> int:
    path = logdir / "gateway.toml"
    path.write_text(gateway_toml(env, logdir), encoding="utf-8")
    messages = _MessageLog(logdir / "messages.jsonl")
    gateway = GatewayRuntime(GatewayConfig.load(path), observer=messages.observer())
    try:
        await gateway.start()
        _ready(env)
        await _until_signalled()
    finally:
        await gateway.stop()
    return c.EXIT_PASSED


# --- agents ------------------------------------------------------------------------------------
def make_agent(env: Mapping[str, str]) -> Agent:
    transport = env[c.TRANSPORT]
    keylog = env.get(c.KEYLOG) if transport != "udp" else None
    return Agent.from_files(env[c.CERT], env[c.KEY], [env[c.CA]], gateway=env[c.GATEWAY],
                            transport=transport, lab=transport == "udp", keylog=keylog)


async def run_server(agent: Agent, env: Mapping[str, str]) -> int:
    @agent.handler
    def answer(payload: bytes, request: Request) -> bytes:
        return c.REPLY_PREFIX + payload

    await agent.connect(attempts=CONNECT_ATTEMPTS)
    await agent.register([env[c.SKILL]], lease=60, description="interop server")
    _log(f"registered {agent.uri} id {agent.agent_id.hex()}")
    _ready(env)
    await _until_signalled()
    await agent.close()
    return c.EXIT_PASSED


def client_case(fn: Callable[[Agent, Mapping[str, str]], Awaitable[bool]]
                ) -> Callable[[Agent, Mapping[str, str]], Awaitable[bool]]:
    CLIENT_CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = fn
    return fn


async def _enter(agent: Agent) -> None:
    """In lab mode a gateway knows an agent only from its REGISTER (Section 9.4): the
    client registers before it asks anything."""
    if agent.lab and not agent.registered:
        await agent.register([CLIENT_SKILL], lease=60)


async def _find(agent: Agent, env: Mapping[str, str]) -> Found:
    """The server the client is to reach: local, or of ``DMSC_TARGET_DOMAIN`` once its
    record has reached the client's gateway."""
    await _enter(agent)
    domain = env.get(c.TARGET_DOMAIN) or None
    scope = Scope.FEDERATED if domain and domain != agent.identity.domain else Scope.LOCAL
    deadline = time.monotonic() + FEDERATION_WAIT
    while True:
        found = await agent.discover(skills=[env[c.SKILL]], domain=domain, scope=scope)
        if found or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if not found:
        raise AssertionError(f"no agent with skill {env[c.SKILL]} in {domain or 'my domain'}")
    _log(f"found {found[0].agent_uri} (score {found[0].score})")
    return found[0]


async def _call(agent: Agent, target: bytes | Found | DiscoveryQuery, payload: bytes) -> None:
    answer = await agent.call(target, payload)
    if answer != c.REPLY_PREFIX + payload:
        raise AssertionError(f"call answered {answer!r}")
    _log(f"call {payload!r} answered {answer!r}")


@client_case
async def case_registration(agent: Agent, env: Mapping[str, str]) -> bool:
    lease = await agent.register([env[c.SKILL]], lease=c.SHORT_LEASE)
    _log(f"registered, lease {lease} s; waiting for a REFRESH")
    await asyncio.sleep(lease * timer("REFRESH_FRACTION") + 1.0)
    if not agent.registered:
        return False
    await agent.close()
    return True


@client_case
async def case_discovery(agent: Agent, env: Mapping[str, str]) -> bool:
    await _find(agent, env)
    return True


CLIENT_CASES["discovery-federated"] = case_discovery


@client_case
async def case_routing(agent: Agent, env: Mapping[str, str]) -> bool:
    found = await _find(agent, env)
    await _call(agent, found.agent_id, b"by agent id")
    await _call(agent, DiscoveryQuery(skills=(env[c.SKILL],), domain=found.record.domain),
                b"by query")
    return True


@client_case
async def case_routing_federated(agent: Agent, env: Mapping[str, str]) -> bool:
    """The calls of the routing case, then a TRACE to the remote server."""
    await case_routing(agent, env)
    reply = await agent.trace((await _find(agent, env)).agent_id)
    _log(f"trace: {reply.status.name} hops {[h.name for h in reply.hops]}")
    return reply.status is ErrorCode.SUCCESS and len(reply.hops) >= 2


@client_case
async def case_echo_trace(agent: Agent, env: Mapping[str, str]) -> bool:
    await _enter(agent)
    rtt = await agent.echo(b"interop")
    _log(f"echo: {rtt * 1e3:.1f} ms")
    found = await _find(agent, env)
    reply = await agent.trace(found.agent_id)
    _log(f"trace: {reply.status.name} hops {[h.name for h in reply.hops]}")
    return reply.status is ErrorCode.SUCCESS and bool(reply.hops)


# --- raw requests (what the SDK does not send) ----------------------------------------------
async def _raw(agent: Agent, env: Mapping[str, str]) -> Connection:
    host, port = agent.gateway
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            return await agent.transport.connect(
                host, port, agent.tls, server_name="localhost",
                expect_domain=agent.identity.domain, lab=agent.lab,
                keylog=env.get(c.KEYLOG) if not agent.lab else None)
        except (ConnectionError, OSError, TimeoutError):
            if attempt == CONNECT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def _register(agent: Agent, env: Mapping[str, str], *, lease: int = 60, **fields: Any
              ) -> Register:
    msg = Register(transaction_id=int.from_bytes(os.urandom(8), "big"),
                   record=agent.record([env[c.SKILL]], lease=lease), lease=lease,
                   nonce=os.urandom(NONCE_SIZE), timestamp=timestamp_ms(time.time()))
    return replace(msg, **fields)


async def _expect_ack(conn: Connection, msg: Message, status: ErrorCode) -> bool:
    """Send ``msg``; whether its answer carries ``status``."""
    answer = await conn.request(msg)
    got = getattr(answer, "status", None)
    _log(f"{msg.TYPE.name} answered {answer.TYPE.name} {getattr(got, 'name', got)} "
         f"(expected {status.name})")
    return got is status


@client_case
async def case_lease_expiry(agent: Agent, env: Mapping[str, str]) -> bool:
    conn = await _raw(agent, env)
    answer = await conn.request(_register(agent, env, lease=c.SHORT_LEASE))
    if not isinstance(answer, RegisterAck) or answer.status is not ErrorCode.SUCCESS \
            or answer.lease is None:
        return False
    _log(f"registered, lease {answer.lease} s; not refreshing")
    await asyncio.sleep(answer.lease + 1.5)
    query = DiscoveryQuery(skills=(env[c.SKILL],))
    reply = await conn.request(Discover(transaction_id=int.from_bytes(os.urandom(8), "big"),
                                        query=query, scope=Scope.LOCAL, max_results=10))
    conn.close()
    assert isinstance(reply, DiscoverReply)
    left = [r for r in reply.results if r.record.record.agent_id == agent.agent_id]
    _log(f"after the lease: {len(left)} record(s) of mine")
    return not left


@client_case
async def case_forged_signature(agent: Agent, env: Mapping[str, str]) -> bool:
    msg = _register(agent, env)
    sig = bytearray(msg.record.signature)
    sig[0] ^= 0x01
    forged = replace(msg, record=replace(msg.record, signature=bytes(sig)))
    return await _expect_ack(await _raw(agent, env), forged, ErrorCode.BAD_SIGNATURE)


@client_case
async def case_identity_mismatch(agent: Agent, env: Mapping[str, str]) -> bool:
    msg = _register(agent, env)
    other = ed25519.Ed25519PrivateKey.generate()  # a well-signed record of another key
    record = replace(msg.record.record, public_key=spki(other.public_key()),
                     agent_id=entity_id(other.public_key()))
    mismatch = replace(msg, record=sign_record(record, other))
    return await _expect_ack(await _raw(agent, env), mismatch, ErrorCode.IDENTITY_MISMATCH)


@client_case
async def case_replay(agent: Agent, env: Mapping[str, str]) -> bool:
    """REGISTER, REFRESH, then the same REFRESH (NONCE, TIMESTAMP) again.  (The same
    REGISTER again is not a replay: it is answered SUCCESS, "already registered",
    Section 10.4.)"""
    conn = await _raw(agent, env)
    refresh = Refresh(transaction_id=int.from_bytes(os.urandom(8), "big"),
                      agent_id=agent.agent_id, lease=60, nonce=os.urandom(NONCE_SIZE),
                      timestamp=timestamp_ms(time.time()))
    return (await _expect_ack(conn, _register(agent, env), ErrorCode.SUCCESS)
            and await _expect_ack(conn, refresh, ErrorCode.SUCCESS)
            and await _expect_ack(conn, replace(refresh,
                                                transaction_id=refresh.transaction_id + 1),
                                  ErrorCode.REPLAY))


@client_case
async def case_stale_timestamp(agent: Agent, env: Mapping[str, str]) -> bool:
    stale = timestamp_ms(time.time() - 2 * timer("FRESHNESS_WINDOW"))
    return await _expect_ack(await _raw(agent, env), _register(agent, env, timestamp=stale),
                             ErrorCode.STALE_TIMESTAMP)


def malformed_requests() -> list[tuple[str, bytes]]:
    """Malformed requests (a gateway answers requests, not answers or one-way
    messages): the draft's invalid vectors of request types, and an ECHO_REQUEST
    truncated, with trailing data, of an unknown version and with an unknown critical
    TLV (header, Section 4.1; TLV, Section 4.2)."""
    requests = {int(t) for t in ANSWER_TO} - {MessageType.OPEN}
    out = [(n, pdu) for n, e, pdu in draft_vectors() if e != "valid" and pdu[1] in requests]
    echo = encode(examples()["echo-request"])
    tlv = struct.pack(">HH", 0x8FFF, 0)  # critical (high bit), unknown
    grown = echo[:4] + struct.pack(">I", len(echo) + len(tlv)) + echo[8:] + tlv
    return [*out, ("echo-truncated", echo[:-1]), ("echo-trailing-data", echo + b"\0"),
            ("echo-version-2", b"\x02" + echo[1:]), ("echo-unknown-critical-tlv", grown)]


@client_case
async def case_malformed(agent: Agent, env: Mapping[str, str]) -> bool:
    conn = await _raw(agent, env)
    request_bytes = getattr(conn, "request_bytes")  # noqa: B009 - not in the Protocol
    ok = True
    for n, (name, pdu) in enumerate(malformed_requests()):
        if len(pdu) >= 16:  # a transaction id of its own (a reused one is another error)
            pdu = pdu[:8] + (0x1A7E0000 + n).to_bytes(8, "big") + pdu[16:]
        try:
            decode(pdu)
            raise AssertionError(f"{name} decodes")
        except DecodeError as exc:
            expect = exc.code
        try:
            answer = await request_bytes(pdu, 5.0)
        except Exception as exc:  # no answer: the runner reports it too
            _log(f"{name}: no answer ({exc!r})")
            ok = False
            continue
        got = getattr(answer, "status", None)
        _log(f"{name}: {answer.TYPE.name} {getattr(got, 'name', got)} "
             f"(expected {expect.name})")
        ok = ok and got is expect
    conn.close()
    return ok


async def run_agent(env: Mapping[str, str]) -> int:
    agent = make_agent(env)
    if env.get(c.PARTY) == c.Party.SERVER:
        return await run_server(agent, env)
    case = CLIENT_CASES.get(env[c.TESTCASE])
    if case is None:
        raise Unsupported(env[c.TESTCASE])
    try:
        await agent.connect(attempts=CONNECT_ATTEMPTS)
        if not await asyncio.wait_for(case(agent, env), FEDERATION_WAIT + 30):
            return c.EXIT_FAILED
    except (AgentError, AssertionError, TimeoutError) as exc:
        _log(f"failed: {exc!r}")
        return c.EXIT_FAILED
    finally:
        await agent.close()
    return c.EXIT_PASSED


# --- decoder -----------------------------------------------------------------------------------
def run_decoder(lines: TextIO, out: TextIO) -> int:
    """Each input line ``{"name", "hex"}``: one output line ``{"name", "result": "valid"
    or the error code's name, "hex": the re-encoded PDU (valid ones)}``."""
    for line in lines:
        if not line.strip():
            continue
        item = json.loads(line)
        result: dict[str, str] = {"name": item["name"]}
        try:
            result["hex"] = encode(decode(bytes.fromhex(item["hex"]))).hex()
            result["result"] = "valid"
        except DecodeError as exc:
            result["result"] = exc.code.name
        out.write(json.dumps(result) + "\n")
    return c.EXIT_PASSED


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    role = env.get(c.ROLE, "")
    logdir = Path(env.get(c.LOGDIR) or ".")
    logs.setup("json", "info")
    try:
        if role == c.Role.DECODER:
            return run_decoder(sys.stdin, sys.stdout)
        if role in (c.Role.GATEWAY, c.Role.PEER_GATEWAY):
            return asyncio.run(run_gateway(env, logdir))
        if role == c.Role.AGENT:
            return asyncio.run(run_agent(env))
    except Unsupported as exc:
        _log(f"unsupported: {exc}")
        return c.EXIT_UNSUPPORTED
    _log(f"unknown role {role!r}")
    return c.EXIT_UNSUPPORTED


if __name__ == "__main__":
    raise SystemExit(main())
