"""``dmsc gateway``: configuration errors name their key, and a real gateway process
stops cleanly on SIGTERM with its registrations committed."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dmscproto.cli import EXIT_USAGE, main
from dmscproto.gateway.store import RegistryStore
from dmscproto.host.config import ConfigError, GatewayConfig
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config

CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    a, b = Domain.create(tmp_path, "a.example"), Domain.create(tmp_path, "b.example")
    return write_gateway_config(a, "gw", peers=[PeerSpec(b, ("127.0.0.1", 9))])


def edit(config: Path, old: str, new: str) -> Path:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))
    return config


@pytest.mark.parametrize(("old", "new", "key", "reason"), [
    ('listen = "127.0.0.1:0"', 'listen = "127.0.0.1"', "gateway.listen", "host:port"),
    ('listen = "127.0.0.1:0"', "listen = 4433", "gateway.listen", "must be a string"),
    ('certificate = "gw.pem"', 'certificate = "nope.pem"', "gateway.certificate",
     "no such file"),
    ('trust_anchors = ["ca.pem"]', "trust_anchors = []", "gateway.trust_anchors", "empty"),
    ('domain = "a.example"', 'domain = "A_bad"', "gateway.domain", "not a valid"),
    ("min_lease = 30", "min_lease = 0", "limits.min_lease", "positive"),
    ("max_lease = 86400", "max_lease = 10", "limits.max_lease", "at least min_lease"),
    ("[limits]", "[limits]\nlease = 3", "limits.lease", "unknown key"),
    ("hold_time = 90", "hold_time = true", "limits.hold_time", "must be an integer"),
    ("hold_time = 90", "hold_time = 2", "limits.hold_time", "0 or at least 3 seconds"),
    ("hold_time = 90", "hold_time = 90\nrestart_grace = 0", "limits.restart_grace",
     "positive number of seconds"),
    ('address = "127.0.0.1:9"', 'address = "127.0.0.1:9"\nhold_time = 9\nkeepalive = 4',
     "peers[0].keepalive", "at most a third of hold_time"),
    ('anchor = "', 'ankor = "', "peers[0].ankor", "unknown key"),
    ('address = "127.0.0.1:9"', 'address = "127.0.0.1:99999"', "peers[0].address",
     "host:port"),
    ("[gateway]", "[gatewey]", "gatewey", "unknown key"),
    ('store = "gw.sqlite"', "", "gateway.store", "missing"),
    ('transport = "quic"', 'transport = "tcp"', "gateway.transport", '"quic" or "dtls"'),
    ("require_tokens = false", 'require_tokens = "yes"', "gateway.require_tokens",
     "true or false"),
    ('listen = "127.0.0.1:0"', 'listen = { quic = "127.0.0.1:0" }', "gateway.transport",
     "not allowed with a listen table"),
    ('address = "127.0.0.1:9"', 'address = "127.0.0.1:9"\ntransport = "udp"',
     "peers[0].transport", '"quic" or "dtls"'),
])
def test_bad_configuration_names_the_key(good: Path, old: str, new: str, key: str,
                                         reason: str, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    edit(good, old, new)
    with pytest.raises(ConfigError) as err:
        GatewayConfig.load(good)
    assert err.value.key == key and reason in err.value.reason
    assert main(["gateway", "--config", str(good)]) == EXIT_USAGE
    stderr = capsys.readouterr().err
    assert stderr.startswith("dmsc gateway: error: ") and f"{key}: " in stderr


def test_session_timers_per_peer_and_their_defaults(good: Path) -> None:
    edit(good, "hold_time = 90", "hold_time = 30\nkeepalive = 5\nrestart_grace = 20")
    edit(good, 'address = "127.0.0.1:9"', 'address = "127.0.0.1:9"\nhold_time = 3\n'
         "keepalive = 1")
    config = GatewayConfig.load(good)
    assert (config.hold_time, config.keepalive, config.restart_grace) == (30, 5.0, 20.0)
    assert (config.peers[0].hold_time, config.peers[0].keepalive) == (3, 1.0)
    edit(good, "hold_time = 3\nkeepalive = 1", "")
    assert (GatewayConfig.load(good).peers[0].hold_time,
            GatewayConfig.load(good).peers[0].keepalive) == (30, 5.0)


def test_missing_anchor_for_a_foreign_peer(good: Path) -> None:
    text = good.read_text()
    good.write_text("\n".join(line for line in text.splitlines()
                              if not line.startswith("anchor")))
    with pytest.raises(ConfigError) as err:
        GatewayConfig.load(good)
    assert err.value.key == "peers[0].anchor" and "b.example" in err.value.reason


def test_listeners_on_several_transports(good: Path) -> None:
    """listen as a table: a listener per transport, the first one primary (peers are
    dialled over it unless their entry names another)."""
    edit(good, 'transport = "quic"\n', "")
    edit(good, 'listen = "127.0.0.1:0"',
         'listen = { dtls = "127.0.0.1:0", quic = "127.0.0.1:4433" }')
    edit(good, 'address = "127.0.0.1:9"', 'address = "127.0.0.1:9"\ntransport = "quic"')
    config = GatewayConfig.load(good)
    assert config.transport == "dtls" and config.listen == ("127.0.0.1", 0)
    assert config.listeners == (("dtls", ("127.0.0.1", 0)), ("quic", ("127.0.0.1", 4433)))
    assert config.peers[0].transport == "quic"
    edit(good, "dtls = ", "tcp = ")
    with pytest.raises(ConfigError) as err:
        GatewayConfig.load(good)
    assert err.value.key == "gateway.listen.tcp" and "not a transport" in err.value.reason


def test_unreadable_and_malformed_files(tmp_path: Path, good: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        GatewayConfig.load(tmp_path / "absent.toml")
    good.write_text("[gateway\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        GatewayConfig.load(good)


def test_check_accepts_a_good_configuration(good: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", "--config", str(good), "--check"]) == 0
    assert "dmsc://a.example/gw, 1 peer(s)" in capsys.readouterr().out
    config = GatewayConfig.load(good)
    assert config.peers[0].domain == "b.example" and config.peers[0].address == ("127.0.0.1", 9)
    assert config.store == good.parent / "gw.sqlite"


def test_gateway_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    a = Domain.create(tmp_path, "a.example")
    config = write_gateway_config(a, "gw")
    proc = subprocess.Popen([sys.executable, "-c", CLI, "gateway", "--config", str(config),
                             "--log-format", "json", "--loop", "asyncio"],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        started = json.loads(proc.stderr.readline())
        assert started["msg"] == "gateway listening" and started["level"] == "info"
        host, port = started["address"].rsplit(":", 1)
        agent = a.agent("durable", (host, int(port)))

        async def register() -> None:
            await agent.register(skills=["persist"], lease=600)
            await agent.close(deregister=False)
        asyncio.run(register())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.strip()]
    messages = [entry["msg"] for entry in logs]
    assert "agent registered" in messages and messages[-1] == "gateway stopped"
    registered = next(e for e in logs if e["msg"] == "agent registered")
    assert registered["agent_id"] == agent.agent_id.hex()
    with RegistryStore(tmp_path / "a.example" / "gw.sqlite") as store:
        stored = store.get(agent.agent_id)
    assert stored is not None and stored.signed.record.agent_uri == agent.uri


def test_security_table(good: Path) -> None:
    text = good.read_text()
    good.write_text(text + '\n[security]\ncrl = ["https://ca.a.example/crl", "ca.pem"]\n'
                    "require_origin = false\n")
    config = GatewayConfig.load(good)
    assert config.crl == ("https://ca.a.example/crl", str(good.parent / "ca.pem"))
    assert not config.require_origin
    for crl, key, reason in (('"missing.pem"', "security.crl", "no such file"),
                             ('["ftp://x/crl"]', "security.crl[0]", "https:// URL")):
        good.write_text(text + f"\n[security]\ncrl = {crl}\n")
        with pytest.raises(ConfigError) as err:
            GatewayConfig.load(good)
        assert err.value.key == key and reason in err.value.reason
