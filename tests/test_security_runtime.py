"""The gateway runtime's security configuration (dmscproto.runtime.security): the
[security] table, the guard it builds, CRL refresh from files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from security_support import Domain, core_for

from dmscproto.runtime.config import ConfigError
from dmscproto.runtime.security import CrlRefresher, SecurityConfig, build_guard
from dmscproto.security.ca import Kind
from dmscproto.security.federation import Federation
from dmscproto.security.revocation import Revocation, issue_crl, pem

pytestmark = pytest.mark.security


def test_security_table_defaults_and_paths(tmp_path: Path) -> None:
    assert SecurityConfig.from_table({}) == SecurityConfig(True, ())
    conf = SecurityConfig.from_table(
        {"require_origin": False,
         "crl": ["crl.pem", "/etc/b.pem", "https://auth.b.example/crl"]}, base=tmp_path)
    assert conf == SecurityConfig(False, (str(tmp_path / "crl.pem"), "/etc/b.pem",
                                          "https://auth.b.example/crl"))
    assert SecurityConfig.from_table({"crl": "x.pem"}, base=tmp_path).crl == \
        (str(tmp_path / "x.pem"),)


@pytest.mark.parametrize(("table", "key"), [
    ({"tokens": True}, "security.tokens"),
    ({"require_origin": 1}, "security.require_origin"),
    ({"crl": 3}, "security.crl"),
    ({"crl": ["http://auth/crl"]}, "security.crl[0]"),
    ({"crl": ["ok.pem", ""]}, "security.crl[1]"),
])
def test_security_table_errors_name_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        SecurityConfig.from_table(table, source=Path("gw.toml"))
    assert err.value.key == key


def test_guard_from_the_security_table(tmp_path: Path) -> None:
    a = Domain.create("a.example")
    gw = a.issue("gw", Kind.GATEWAY)
    fed = Federation("a.example", a.authority.certificate, ())
    core = core_for(tmp_path, "a.example", gw)
    guard = build_guard(core, fed, gw, SecurityConfig(), lambda _h: None,
                        require_tokens=True)
    assert guard.verifier.tokens is not None and guard.require_origin
    assert guard.verifier.trust is fed.trust_store()
    plain = build_guard(core, fed, gw, SecurityConfig(require_origin=False), lambda _h: None)
    assert plain.verifier.tokens is None and not plain.require_origin


def test_crl_refresher_installs_file_crls_and_reports_failures(tmp_path: Path) -> None:
    a = Domain.create("a.example")
    fired = a.issue("fired")
    fed = Federation("a.example", a.authority.certificate, ())
    path = tmp_path / "crl.pem"
    path.write_bytes(pem(issue_crl(a.authority, [Revocation(
        fired.certificate.serial_number, fired.certificate.not_valid_before_utc)], number=4)))
    refresher = CrlRefresher(fed, (str(path), str(tmp_path / "missing.pem")))

    async def scenario() -> None:
        errors = await refresher.refresh()
        assert list(errors) == [str(tmp_path / "missing.pem")]
        refresher.start()
        await refresher.stop()

    asyncio.run(scenario())
    assert fed.revocation.number(a.authority.certificate.subject) == 4
    assert fed.revocation.generation == 1
