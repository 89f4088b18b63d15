"""Extract the test vectors of draft-dmsc-protocol-00, Appendix A.

The rule is the draft's own: a vector is a fenced code block (``` or ~~~) whose first
line is ``vector <name> <expect>``, ``<expect>`` being ``valid`` or an error code name;
the remaining lines are the PDU in hex, whitespace not significant.  Nothing else in
the markdown is looked at, so any implementation can reuse the vectors.

    python tools/draft_vectors.py [DRAFT.md]        # one JSON object per line

Importable: :func:`vectors` returns ``(name, expect, pdu)`` tuples.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DRAFT = Path(__file__).resolve().parent.parent / "drafts" / "draft-dmsc-protocol-00.md"
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*(.*)$")


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Every fenced code block of ``text`` as (info string, content lines)."""
    blocks: list[tuple[str, list[str]]] = []
    fence: str | None = None
    info, lines = "", list[str]()
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence, info, lines = m.group(1), m.group(2).strip(), []
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not m.group(2):
            blocks.append((info, lines))
            fence = None
        else:
            lines.append(line)
    if fence is not None:
        raise ValueError("unterminated fenced block")
    return blocks


def vectors(text: str) -> list[tuple[str, str, bytes]]:
    """(name, expect, pdu) of every test vector in ``text``, in document order."""
    out = []
    for _info, lines in fenced_blocks(text):
        if lines and lines[0].startswith("vector "):
            _, name, expect = lines[0].split()
            out.append((name, expect, bytes.fromhex("".join("".join(lines[1:]).split()))))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DRAFT
    for name, expect, pdu in vectors(path.read_text(encoding="utf-8")):
        print(json.dumps({"name": name, "expect": expect, "hex": pdu.hex()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
