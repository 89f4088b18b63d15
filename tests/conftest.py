"""Fixtures shared by the test files."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from transport_support import Pki

from dmscproto.fsm import StepInput, TableMachine


def load_tool(name: str) -> ModuleType:
    """The script ``tools/NAME.py`` imported as a module (tools/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def require_tool(name: str) -> str:
    """The path of an external tool a test needs: skipped where it is missing on a
    developer's machine, a failure in CI (``CI=true``), where .ci/run installs it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing; .ci/run must install it")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A fresh transport PKI per test module (:class:`transport_support.Pki`)."""
    return Pki.create()


#: ``spy(owner, name)``: see :func:`spy`.
Spy = Callable[[type, str], list[tuple[Any, ...]]]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """``spy(owner, name)`` wraps the method ``owner.name`` for the test: it still runs,
    and the list returned gets the arguments (after ``self``) of each call."""
    def install(owner: type, name: str) -> list[tuple[Any, ...]]:
        calls: list[tuple[Any, ...]] = []
        real = getattr(owner, name)

        def spied(self: Any, *args: Any) -> Any:
            calls.append(args)
            return real(self, *args)

        monkeypatch.setattr(owner, name, spied)
        return calls
    return install


#: Rows run: (machine class, state, input kind).
Rows = set[tuple[type[TableMachine], Enum, Enum]]


@pytest.fixture
def table_rows(monkeypatch: pytest.MonkeyPatch) -> Rows:
    """The table rows every machine runs during the test (draft-dmsc-state-machines-00),
    for tests that step machines through all of theirs."""
    ran: Rows = set()
    step = TableMachine.run

    def recorded(m: TableMachine, inp: StepInput, now: float) -> None:
        ran.add((type(m), m.state, inp.KIND))
        step(m, inp, now)

    monkeypatch.setattr(TableMachine, "run", recorded)
    return ran


def every_row(*machines: type[TableMachine]) -> Rows:
    """Every row of the tables of ``machines``."""
    return {(m, s, i) for m in machines for s, i in m.TABLE}
