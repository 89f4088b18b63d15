"""The configuration keys are declared once (dmscproto.host.schema): the reader accepts
exactly the declared keys, the documented key list shows them, the sandbox's writer can
only write them."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from dmscproto.host import config, schema
from dmscproto.host.config import ConfigError, GatewayConfig
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("cfg")
    a, b = Domain.create(root, "a.example"), Domain.create(root, "b.example")
    path = write_gateway_config(a, "gw", peers=[PeerSpec(b, imports=["c.example"])])
    return path, tomllib.loads(path.read_text())


def _example(field: schema.Field) -> object:
    return tomllib.loads(f"v = {field.example}")["v"]


def _place(data: dict[str, Any], table: schema.Table, key: str, value: object) -> None:
    """Set ``key`` in ``table`` of a parsed gateway file (the first [[peers]] entry)."""
    node: dict[str, Any] = data
    for part in table.name.split("."):
        child = node.setdefault(part, {})
        node = child[0] if isinstance(child, list) else child
    node[key] = value


def _load(path: Path, data: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig.from_dict(data, base=path.parent, source=path)


def test_the_reader_accepts_every_declared_key(base: tuple[Path, dict[str, Any]]) -> None:
    path, data = base
    for table in schema.GATEWAY_FILE:
        for field in table.fields:
            if not field.example:  # a subtable, checked as its own table
                continue
            trial = tomllib.loads(path.read_text())
            _place(trial, table, field.key, _example(field))
            try:
                _load(path, trial)
            except ConfigError as exc:  # a value the example file cannot satisfy
                assert "unknown key" not in str(exc), (table.name, field.key, exc)
    assert _load(path, data).peers[0].import_domains == ("b.example", "c.example")


def test_the_reader_refuses_an_undeclared_key_in_every_table(
        base: tuple[Path, dict[str, Any]]) -> None:
    path, _ = base
    for table in schema.GATEWAY_FILE:
        trial = tomllib.loads(path.read_text())
        _place(trial, table, "bogus", 1)
        with pytest.raises(ConfigError, match="unknown key"):
            _load(path, trial)


def test_documented_and_written_keys_are_the_declared_ones() -> None:
    doc = config.__doc__ or ""
    for table in (*schema.GATEWAY_FILE, schema.AGENT):
        assert table.header in doc
        for field in table.fields:
            assert (f"{field.key} = {field.example}" in doc) is bool(field.example)
    with pytest.raises(ValueError, match="no key bogus"):
        schema.to_toml([(schema.LIMITS_TABLE, {"bogus": 1})])
    assert schema.to_toml([(schema.GATEWAY, {"lab": True, "domain": "a.example"})]) == \
        '[gateway]\ndomain = "a.example"\nlab = true\n'
