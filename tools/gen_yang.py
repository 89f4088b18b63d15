"""Regenerate the parts of the ietf-dmsc YANG module, and of drafts/draft-dmsc-yang-00.md,
that mirror the code.

In ``dmscproto/yang/ietf-dmsc@REVISION.yang``, the typedefs of message types, error
codes, peer session states and transports and the ``timers`` container lie between
``// BEGIN GENERATED: name`` and ``// END GENERATED: name`` and are generated from
:mod:`dmscproto.codec.registry`, the peering machine's :class:`PeerState` and the
runtime's transports.  In the draft, the tree diagram (``pyang -f tree``, RFC 8340) and
the module itself (verbatim) lie between the draft's usual markers.

    python tools/gen_yang.py            # rewrite the module and the draft
    python tools/gen_yang.py --check    # exit 1 naming the stale regions instead

Needs pyang (the test extra).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path

from dmscproto import yang
from dmscproto.codec.registry import TIMERS, ErrorCode, MessageType
from dmscproto.host.transports import TRANSPORTS
from dmscproto.protocol.peering import PeerState

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is not a package
import draft_regions

ROOT = Path(__file__).resolve().parent.parent
DRAFT = ROOT / "drafts" / "draft-dmsc-yang-00.md"
#: A generated region of the module: YANG line comments, the end marker indented.
YANG_REGION = re.compile(
    r"(?P<begin>// BEGIN GENERATED: (?P<name>[a-z0-9-]+)\n)(?P<body>.*?)"
    r"(?P<end>[ ]*// END GENERATED: (?P=name))", re.S)
#: The longest line of the module and the tree: 72 columns of text less the 3 of the
#: draft's indentation of figures.
LINE = 69
_INDENT = "  "


def yang_name(name: str) -> str:
    """A registry name as a YANG identifier: ``REGISTER_ACK`` -> ``register-ack``."""
    return name.lower().replace("_", "-")


def _quoted(text: str, indent: int) -> list[str]:
    """A YANG double-quoted string, wrapped to :data:`LINE` columns at ``indent``."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    lines = textwrap.wrap(f'"{text}"', LINE - indent - 1)
    return [" " * indent + lines[0]] + [" " * (indent + 1) + line for line in lines[1:]]


def _statement(keyword: str, text: str, indent: int) -> list[str]:
    """A ``keyword "text";`` statement at ``indent``, the string on its own lines."""
    lines = _quoted(text, indent + 2)
    lines[-1] += ";"
    return [" " * indent + keyword, *lines]


def enumeration(name: str, description: str, reference: str,
                members: Iterable[tuple[str, int | None, str]]) -> str:
    """A typedef of an enumeration: each member is (name, value or None, description)."""
    out = [f"{_INDENT}typedef {name} {{", f"{_INDENT * 2}type enumeration {{"]
    for enum, value, text in members:
        body = ([f"{_INDENT * 4}value {value};"] if value is not None else [])
        body += _statement("description", text, 8)
        out += [f"{_INDENT * 3}enum {enum} {{", *body, f"{_INDENT * 3}}}"]
    out += [f"{_INDENT * 2}}}", *_statement("description", description, 4),
            *_statement("reference", reference, 4), f"{_INDENT}}}"]
    return "\n".join(out)


def _registered(enum: type[Enum], octets: int) -> list[tuple[str, int | None, str]]:
    """The members of a registry enum, each described by its name and its code written
    as ``octets`` octets of hexadecimal."""
    return [(yang_name(m.name), int(m.value), f"{m.name} ({int(m.value):#0{2 + 2 * octets}x}).")
            for m in enum]


def message_type() -> str:
    return enumeration(
        "message-type", "A DMSC message type, named as in the registry.",
        "draft-dmsc-protocol-00, Section 11.2", _registered(MessageType, 1))


def registered_error_code() -> str:
    return enumeration(
        "registered-error-code", "A registered DMSC error code.",
        "draft-dmsc-protocol-00, Section 11.5", _registered(ErrorCode, 2))


def session_state() -> str:
    return enumeration(
        "session-state", "The state of a peering session: the states of the peering "
        "machine, named as there.", "draft-dmsc-state-machines-00, the peering machine",
        [(yang_name(s.name), None, f"The peering machine's state {s.value}.")
         for s in PeerState])


def transport() -> str:
    return enumeration(
        "transport", "A transport of DMSC.", "draft-dmsc-protocol-00, Section 9",
        [(name, None, f"DMSC over {name.upper()}"
          f"{' (cleartext, lab mode only)' if t.lab else ''}.")
         for name, t in TRANSPORTS.items()])


def _decimal(value: float) -> str:
    return f"{round(value, 3):.3f}".rstrip("0").rstrip(".")


def timers() -> str:
    """The ``timers`` container: one leaf per protocol timer with its default."""
    out = [f"{_INDENT * 2}container timers {{",
           *_statement("description",
                       "The protocol timers in force.  Values are in seconds, "
                       "except those named '...-fraction' and 'redial-jitter' "
                       "(fractions) and 'retransmit-limit' (a count); fractions "
                       "are rounded to three digits.  An implementation that fixes "
                       "a timer declares a deviation (RFC 7950, Section 7.20.3).", 6),
           *_statement("reference", "draft-dmsc-protocol-00, Section 8", 6)]
    for t in TIMERS:
        out += [f"{_INDENT * 3}leaf {yang_name(t.name)} {{",
                f"{_INDENT * 4}type decimal64 {{", f"{_INDENT * 5}fraction-digits 3;",
                f"{_INDENT * 4}}}", f'{_INDENT * 4}default "{_decimal(t.default_s)}";',
                *_statement("description", f"{t.name}: {t.description}.", 8),
                f"{_INDENT * 3}}}"]
    out.append(f"{_INDENT * 2}}}")
    return "\n".join(out)


MODULE_GENERATORS: dict[str, Callable[[], str]] = {
    "message-type": message_type,
    "registered-error-code": registered_error_code,
    "session-state": session_state,
    "transport": transport,
    "timers": timers,
}


def pyang(*args: str) -> subprocess.CompletedProcess[str]:
    """Run pyang (from this Python's environment) with ``args``."""
    return subprocess.run(
        [sys.executable, "-c", "from pyang.scripts.pyang_tool import run; run()", *args],
        capture_output=True, text=True, timeout=60)


def tree(module: str) -> str:
    """The RFC 8340 tree diagram of the module text ``module``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / yang.MODULE_FILE
        path.write_text(module, encoding="utf-8")
        done = pyang("-f", "tree", "--tree-line-length", str(LINE), str(path))
    if done.returncode != 0 or done.stderr:
        raise RuntimeError(f"pyang -f tree: {done.stderr}")
    return done.stdout.rstrip("\n")


def draft_generators(module: str) -> dict[str, Callable[[], str]]:
    """The draft's regions: the tree diagram and the module, from ``module``."""
    return {
        "yang-tree": lambda: f"~~~~\n{tree(module)}\n~~~~",
        "yang-module": lambda: (f'~~~~ yang\n<CODE BEGINS> file "{yang.MODULE_FILE}"\n\n'
                                f"{module.rstrip()}\n\n<CODE ENDS>\n~~~~"),
    }


def regenerate(module: str, draft: str) -> tuple[str, str, list[str]]:
    """The module and draft texts with every generated region rewritten, and the stale
    regions' names."""
    new_module, stale = draft_regions.regenerate(module, MODULE_GENERATORS,
                                                 region=YANG_REGION)
    new_draft, stale_draft = draft_regions.regenerate(draft, draft_generators(new_module))
    return new_module, new_draft, stale + stale_draft


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the module or the draft is out of date")
    args = ap.parse_args(argv)
    module_path = yang.MODULE_PATH
    module, draft = module_path.read_text(encoding="utf-8"), DRAFT.read_text(encoding="utf-8")
    try:
        new_module, new_draft, stale = regenerate(module, draft)
    except ValueError as exc:
        print(f"gen_yang: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run python tools/gen_yang.py",
                  file=sys.stderr)
            return 1
        return 0
    for path, old, new in ((module_path, module, new_module), (DRAFT, draft, new_draft)):
        if new != old:
            path.write_text(new, encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
