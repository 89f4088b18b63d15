"""Fixtures shared by the test files."""

from __future__ import annotations

import os
import shutil

import pytest
from transport_support import Pki


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
