"""Fixtures shared by the test files."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from transport_support import Pki


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
