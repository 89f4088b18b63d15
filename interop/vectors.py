"""The draft's test vectors (Appendix A), extracted by ``tools/draft_vectors.py``: what
the codec case feeds the decoder role, and the malformed PDUs this project's agent sends
in the malformed case."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
DRAFT = ROOT / "drafts" / "draft-dmsc-protocol-00.md"


@functools.cache
def draft_vectors() -> list[tuple[str, str, bytes]]:
    """``(name, expect, pdu)`` of every vector: ``expect`` is ``valid`` or the name of the
    error code a decoder must report."""
    spec = importlib.util.spec_from_file_location("draft_vectors",
                                                  ROOT / "tools" / "draft_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(list[tuple[str, str, bytes]],
                module.vectors(DRAFT.read_text(encoding="utf-8")))
