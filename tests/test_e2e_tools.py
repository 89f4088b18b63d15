"""``dmsc agent``, ``dmsc ping``, ``dmsc trace`` and ``dmsc status`` against a real
``dmsc gateway`` process over QUIC."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmscproto.cli import EXIT_OK, EXIT_USAGE, main
from dmscproto.sandbox.domains import Domain, write_gateway_config
from dmscproto.security.ca import Kind

CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"


def identity(domain: Domain, name: str, gateway: str) -> list[str]:
    cert, key = domain.issue(name, Kind.AGENT)
    return ["--cert", str(cert), "--key", str(key), "--ca", str(domain.anchor),
            "--gateway", gateway]


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[tuple[Domain, Path, str]]:
    domain = Domain.create(tmp_path, "a.example")
    config = write_gateway_config(domain, "gw")
    gateway = subprocess.Popen([sys.executable, "-c", CLI, "gateway", "--config", str(config),
                                "--log-format", "json"], stderr=subprocess.PIPE, text=True)
    assert gateway.stderr is not None
    try:
        address = json.loads(gateway.stderr.readline())["address"]
        yield domain, config, address
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(10) == 0


def test_agent_ping_trace_status(running: tuple[Domain, Path, str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    domain, config, address = running
    cert, key = domain.issue("greeter", Kind.AGENT)
    agent_toml = domain.directory / "greeter.toml"
    agent_toml.write_text(f"""[agent]
certificate = "{cert.name}"
key = "{key.name}"
trust_anchors = ["ca.pem"]
gateway = "{address}"
skills = ["greet"]
lease = 120
""")
    server = subprocess.Popen(
        [sys.executable, "-c", CLI, "agent", "--config", str(agent_toml), "--reply", "hi "],
        stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    try:
        line = server.stdout.readline()
        assert line.startswith("registered dmsc://a.example/greeter (")
        greeter_id = line.split("(")[1].split(")")[0]
        me = identity(domain, "tool", address)

        assert main(["agent", *me, "--discover", "greet"]) == EXIT_OK
        assert f"dmsc://a.example/greeter  {greeter_id}  greet" in capsys.readouterr().out
        assert main(["agent", *me, "--call", "greet", "--payload", "bob"]) == EXIT_OK
        assert capsys.readouterr().out == "hi bob\n"
        assert main(["agent", *me, "--call", greeter_id, "--payload", "ann"]) == EXIT_OK
        assert capsys.readouterr().out == "hi ann\n"

        assert main(["ping", *me, "-c", "2", "-i", "0"]) == EXIT_OK
        out = capsys.readouterr().out
        assert out.count("ECHO_REPLY from") == 2 and "2 replies, rtt" in out

        assert main(["trace", *me, greeter_id]) == EXIT_OK
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split()[:3] == ["1", "gw", "a.example"] and lines[-1] == "SUCCESS"

        assert main(["status", "--config", str(config)]) == EXIT_OK
        out = capsys.readouterr().out
        assert "local    dmsc://a.example/greeter" in out and greeter_id in out
        assert "a.example: 1 registered here, 0 learned" in out
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0
    # it deregistered on the way out
    assert main(["status", "--config", str(config), "--json"]) == EXIT_OK
    assert capsys.readouterr().out == ""


def test_agent_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    domain = Domain.create(tmp_path, "a.example")
    me = identity(domain, "tool", "127.0.0.1:9")
    assert main(["agent", *me]) == EXIT_USAGE
    assert main(["ping", "--cert", me[1]]) == EXIT_USAGE
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\ngateway = "nowhere"\n')
    assert main(["agent", "--config", str(bad), "--discover", "x"]) == EXIT_USAGE
    assert main(["trace", *me, "abcd"]) == EXIT_USAGE
    assert main(["ping", *me[:-1], "nowhere"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "give --skill" in err and "32 hex digits" in err and "HOST:PORT" in err
    assert "give --config, or --cert" in err and "agent.trust_anchors: missing" in err
