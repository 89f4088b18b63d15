"""Structured logs for long-running DMSC processes (operations and management).

A log call carries its facts as ``extra={"dmsc": {...}}``; :func:`setup` formats them as
``key=value`` pairs after the message (``text``) or as one JSON object per line
(``json``: ``ts``, ``level``, ``logger``, ``msg`` and the facts), the form log
collectors ingest.  Bytes are shown as hex, message types and error codes (any enum)
by name: ``status=POLICY_DENIED``, not ``status=1293``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from enum import Enum
from typing import Any, TextIO

#: The attribute of a LogRecord that holds the structured facts.
FIELDS = "dmsc"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):  # before int: ErrorCode and MessageType are IntEnums
        return value.name
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return getattr(value, "name", None) or str(value)


def facts(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: ``log.info("registered", extra=facts(agent=aid))``."""
    return {FIELDS: fields}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (JSON Lines)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_plain(getattr(record, FIELDS, {})))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _plain(getattr(record, FIELDS, {}))
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def setup(fmt: str = "text", level: str | int = "info", stream: TextIO | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr) in ``fmt`` at ``level``,
    replacing any handler installed before (e.g. by the CLI's default setup)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
