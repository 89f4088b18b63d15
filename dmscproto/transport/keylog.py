"""The TLS key log that QUIC and DTLS write on request (draft-dmsc-protocol-00, Section 9),
in SSLKEYLOGFILE format, so that Wireshark can decrypt captures."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO


class KeyLog:
    """An SSLKEYLOGFILE-format key log: a file path opened (append) once, or a caller's
    open text file (left open), or none."""

    def __init__(self, keylog: str | Path | TextIO | None) -> None:
        self._owned = isinstance(keylog, str | Path)
        self.file: TextIO | None = (
            open(keylog, "a", encoding="ascii")  # noqa: SIM115 - closed by close()
            if isinstance(keylog, str | Path) else keylog)

    def close(self) -> None:
        """Close the file if this object opened it."""
        if self._owned and self.file is not None:
            self.file.close()
