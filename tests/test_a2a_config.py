"""The bridge's TOML file (draft-dmsc-a2a-00; dmscproto/a2a/config.py) and
``dmsc a2a serve`` refusing what it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmscproto.a2a.config import BridgeConfig
from dmscproto.cli import main
from dmscproto.host.config import ConfigError

pytestmark = pytest.mark.a2a


def _write(tmp: Path, text: str) -> Path:
    for name in ("bridge.toml", "proxy.toml", "ca.pem", "https.pem", "https.key"):
        (tmp / name).write_text("")
    path = tmp / "a2a.toml"
    path.write_text(text)
    return path


def test_a_full_file_loads(tmp_path: Path) -> None:
    cfg = BridgeConfig.load(_write(tmp_path, """
[a2a]
agent = "bridge.toml"
listen = "https://127.0.0.1:0"
certificate = "https.pem"
key = "https.key"
token_authority = "ca.pem"
token_url = "https://127.0.0.1:8443/token"
timeout = 5
[[a2a.import]]
card = "http://127.0.0.1:9/.well-known/agent-card.json"
agent = "proxy.toml"
jwks = "keys.json"
require_signature = true
token = "proxy.toml"
"""))
    assert cfg.listen is not None and cfg.listen.scheme == "https"
    assert cfg.listen.client_ca == tmp_path / "ca.pem" and cfg.timeout == 5.0
    assert cfg.imports[0].require_signature and cfg.imports[0].jwks == str(tmp_path / "keys.json")
    assert cfg.imports[0].token == tmp_path / "proxy.toml"


@pytest.mark.parametrize(("body", "key"), [
    ('agent = "bridge.toml"\nlisten = "http://127.0.0.1:0"\ntoken_authority = "ca.pem"\n'
     'token_url = "https://x/token"', "a2a.listen"),                  # tokens need https
    ('listen = "http://127.0.0.1:0"', "a2a.agent"),                     # no identity
    ('agent = "bridge.toml"\nlisten = "ftp://127.0.0.1:0"', "a2a.listen"),
    ('agent = "bridge.toml"\nlisten = "https://127.0.0.1:0"', "a2a.certificate"),
    ('agent = "bridge.toml"\nlisten = "http://127.0.0.1:0"\ntoken_url = "https://x"',
     "a2a.token_url"),
    ('agent = "nowhere.toml"\nlisten = "http://127.0.0.1:0"', "a2a.agent"),
    ('agent = "bridge.toml"\nlisten = "http://127.0.0.1:0"\nspeed = 3', "a2a.speed"),
    ('agent = "bridge.toml"', "a2a"),                                   # nothing to do
    ('[[a2a.import]]\ncard = "http://x/"', "a2a.import[0]"),            # no identity
])
def test_unusable_files_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        BridgeConfig.load(_write(tmp_path, "[a2a]\n" + body + "\n"))
    assert err.value.key == key


def test_serve_reports_the_key_at_fault(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, '[a2a]\nlisten = "http://127.0.0.1:0"\n')
    assert main(["a2a", "serve", "--config", str(path)]) == 2
    assert "a2a.agent" in capsys.readouterr().err
