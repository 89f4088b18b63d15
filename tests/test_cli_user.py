"""What a new user runs, as separate processes against a real ``dmsc gateway`` process
over QUIC (issue 14): clear failures when nothing listens, commands that exit when
they say they do, agents that say when another process took their registration, and
the checks a gateway makes before it starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.security.ca import Kind

CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"
HELLO = Path(__file__).resolve().parents[1] / "dmscproto" / "quickstart" / "hello_agent.py"
#: An agent whose handler takes the payload's number of seconds to answer.
SLOW_AGENT = """
import asyncio, sys
from dmscproto.agent import Agent
async def main() -> None:
    async with Agent.from_config(sys.argv[1]) as agent:
        async def slow(payload, request):
            await asyncio.sleep(float(payload))
            return b"slept " + payload
        agent.serve(slow)
        await agent.register(skills=["slow"])
        print("registered", flush=True)
        await agent.wait_closed()
asyncio.run(main())
"""


def dmsc(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          timeout=timeout)


@contextmanager
def process(*argv: str, stdin: int | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def agent_file(domain: Domain, name: str, address: str, skills: str = "[]") -> Path:
    cert, key = domain.issue(name, Kind.AGENT)
    path = domain.directory / f"{name}.toml"
    path.write_text(f'[agent]\ncertificate = "{cert.name}"\nkey = "{key.name}"\n'
                    f'trust_anchors = ["ca.pem"]\ngateway = "{address}"\nskills = {skills}\n')
    return path


def test_a_session_against_a_gateway_process(tmp_path: Path) -> None:
    domain = Domain.create(tmp_path, "a.example")
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = write_gateway_config(domain, "gw", listen=("127.0.0.1", port))
    client = ["--config", str(agent_file(domain, "client", address))]

    # nothing listens: a reason with the address, from every tool; "refused" comes at
    # once from the ICMP error, not after the handshake timeout ("no QUIC handshake")
    for result, tool in ((dmsc("agent", *client, "--discover", "x"), "agent"),
                         (dmsc("ping", *client), "ping")):
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"dmsc {tool}: ") and address in result.stderr
        assert "refused" in result.stderr

    echo = agent_file(domain, "echo", address, '["echo"]')
    with process(sys.executable, "-c", CLI, "agent", "--config", str(echo),
                 "--reply", "echo: ") as server:
        assert server.stderr is not None and server.stdout is not None
        # a serving agent waits for its gateway, saying so
        assert "retrying in" in server.stderr.readline()
        with process(sys.executable, "-c", CLI, "gateway", "--config", str(config)) as gw:
            assert server.stdout.readline().startswith("registered dmsc://a.example/echo (")

            # -v after the subcommand, --timeout, the answer printed
            call = dmsc("agent", "-v", *client, "--call", "echo", "--payload", "hi",
                        "--timeout", "10")
            assert call.returncode == 0 and call.stdout == "echo: hi\n", call.stderr
            assert "INFO" in call.stderr
            nothing = dmsc("agent", *client, "--discover", "nosuch")
            assert nothing.returncode == 1 and nothing.stdout == ""
            assert "no agent has the skill(s) nosuch" in nothing.stderr
            # an identity URI, as status and the demo print it
            trace = dmsc("trace", *client, "dmsc://a.example/echo")
            assert trace.returncode == 0 and trace.stdout.splitlines()[-1] == "SUCCESS"
            ping = dmsc("ping", *client, "-c", "1")
            assert f"ECHO_REPLY from {address}: seq=1" in ping.stdout
            # a file listing skills, with --call: call and exit, not serve
            greeter = agent_file(domain, "greeter", address, '["greet"]')
            once = dmsc("agent", "--config", str(greeter), "--call", "echo", "--payload", "x",
                        timeout=10)
            assert once.returncode == 0 and once.stdout == "echo: x\n"

            # waits of more than a second say what for; --timeout gives up
            slow = agent_file(domain, "slow", address)
            with process(sys.executable, "-c", SLOW_AGENT, str(slow)) as sloth:
                assert sloth.stdout is not None and sloth.stdout.readline() == "registered\n"
                late = dmsc("agent", *client, "--call", "slow", "--payload", "1.2")
                assert late.stdout == "slept 1.2\n"
                assert "waiting for the answer to --call slow..." in late.stderr
                given_up = dmsc("agent", *client, "--call", "slow", "--payload", "5",
                                "--timeout", "0.5")
                assert given_up.returncode == 1 and "within --timeout 0.5 s" in given_up.stderr

            # Ctrl-C on the SDK example: it deregisters and exits, no traceback
            with process(sys.executable, str(HELLO), str(greeter)) as hello:
                assert hello.stdout is not None and hello.stderr is not None
                assert hello.stdout.readline() == "registered dmsc://a.example/greeter\n"
                hello.send_signal(signal.SIGINT)
                assert hello.wait(10) == 0 and "Traceback" not in hello.stderr.read()

            # another process registering the same identity: the first one says so
            with process(sys.executable, "-c", CLI, "agent", "--config", str(echo),
                         "--skill", "echo") as twin:
                assert twin.stdout is not None
                assert twin.stdout.readline().startswith("registered dmsc://a.example/echo")
                assert server.wait(10) == 1
                assert "registered again by another process" in server.stderr.read()

            # a second gateway: the registry file in use, the address in use
            shared = dmsc("gateway", "--config", str(config))
            assert shared.returncode == 1 and "in use by another gateway" in shared.stderr
            other = config.with_name("other.toml")
            other.write_text(config.read_text().replace("gw.sqlite", "other.sqlite"))
            busy = dmsc("gateway", "--config", str(other))
            assert busy.returncode == 1
            assert f"cannot listen on {address} (quic): address already in use" in busy.stderr
            gw.send_signal(signal.SIGTERM)
            assert gw.wait(10) == 0


def test_gateway_check_catches_a_wrong_key_and_warns_of_an_empty_export(
        tmp_path: Path) -> None:
    a, b = Domain.create(tmp_path, "a.example"), Domain.create(tmp_path, "b.example")
    config = write_gateway_config(a, "gw", peers=[PeerSpec(b, ("127.0.0.1", 9))])
    config.write_text(config.read_text().replace("[peers.export]\nexclude_tags = []\n", ""))
    checked = dmsc("gateway", "--config", str(config), "--check")
    assert checked.returncode == 0
    assert "peers[0] (b.example) has no [peers.export] table" in checked.stdout
    _, other_key = a.issue("intruder", Kind.GATEWAY)
    os.replace(other_key, a.directory / "gw.key")
    wrong = dmsc("gateway", "--config", str(config), "--check")
    assert wrong.returncode == 2 and "is not the private key of the certificate" in \
        wrong.stderr
    # dmsc init writes only into a new (or empty) directory
    taken = dmsc("init", str(a.directory))
    assert taken.returncode == 2 and "is not an empty directory" in taken.stderr


REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "pcap-fixtures"


def test_decode_says_what_it_cannot_show() -> None:
    not_pcap = dmsc("decode", "--pcap", str(REPO / "README.md"))
    assert not_pcap.returncode == 2 and "is not a pcap file" in not_pcap.stderr
    # a datagram of another version is listed, with --any-port as without
    errors = dmsc("decode", "--pcap", str(FIXTURES / "lab-errors.pcap"), "--any-port")
    assert "    8 " in errors.stdout and "UNSUPPORTED_VERSION" in errors.stdout
    # a capture with nothing on the port looked at says where to look
    elsewhere = dmsc("decode", "--pcap", str(FIXTURES / "lab-registration.pcap"),
                     "--port", "1")
    assert elsewhere.returncode == 1 and "try --any-port" in elsewhere.stderr
    # encrypted datagrams are not shown: not a success
    quic = dmsc("decode", "--pcap", str(FIXTURES / "quic-session.pcap"), "--any-port")
    assert quic.returncode == 1 and "does not decrypt" in quic.stderr
    # a vector block pasted from the draft, fences and first line included
    draft = (REPO / "drafts" / "draft-dmsc-protocol-00.md").read_text().splitlines()
    at = draft.index("vector echo-request valid")
    block = "\n".join(draft[at - 1:at + 4])
    assert block.startswith("~~~") and block.endswith("~~~")
    pasted = subprocess.run([sys.executable, "-c", CLI, "decode"], input=block,
                            capture_output=True, text=True, timeout=20)
    assert pasted.returncode == 0 and pasted.stdout.startswith("ECHO_REQUEST (0x40)")
