"""The ietf-dmsc YANG module (draft-dmsc-yang-00), shipped with the package.

The module's typedefs of message types, error codes, session states and transports and
its ``timers`` container are generated from the code by ``tools/gen_yang.py``.
"""

from __future__ import annotations

from pathlib import Path

#: The module's name and revision.
MODULE = "ietf-dmsc"
REVISION = "2026-12-01"
#: The file name of the module (RFC 7950, Section 5.2).
MODULE_FILE = f"{MODULE}@{REVISION}.yang"
#: Where the module file is; its directory is a YANG search path.
MODULE_PATH = Path(__file__).resolve().parent / MODULE_FILE


def module_text() -> str:
    """The text of the module."""
    return MODULE_PATH.read_text(encoding="utf-8")
