"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest
from transport_support import Pki


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A fresh transport PKI per test module (:class:`transport_support.Pki`)."""
    return Pki.create()
