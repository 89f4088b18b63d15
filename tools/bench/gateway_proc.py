"""Start a ``dmsc gateway`` process for a benchmark and learn its address.

The gateway logs JSON lines on stderr; its address is in the "gateway listening" line.
The rest of stderr is drained by a thread, so a gateway that logs every connection never
blocks on a full pipe (issue 18 found ``route.py`` stalling that way).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import IO

CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def start_gateway(*args: str, code: str = CLI) -> tuple[subprocess.Popen[str], str]:
    """``dmsc gateway --log-format json ARGS...`` and the address it listens on; ``code``
    is the ``python -c`` that runs the CLI (``traced.GATEWAY``: with OpenTelemetry).
    ``-P``: the current directory is not put on ``sys.path``, so the gateway runs the
    dmscproto this Python has installed, not a checkout it was started beside (an A/B
    of two checkouts run from one of them measured that one's gateway twice)."""
    gateway = subprocess.Popen([sys.executable, "-P", "-c", code, "gateway", "--log-format",
                                "json", *args], stderr=subprocess.PIPE, text=True)
    stream = gateway.stderr
    assert stream is not None
    for line in stream:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("msg") == "gateway listening":
            threading.Thread(target=_drain, args=(stream,), daemon=True).start()
            return gateway, str(event["address"])
    gateway.wait()
    raise RuntimeError("the gateway did not start")


def spawn(args: list[str], until: str, *,
          quiet: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Start a process and wait for its first stdout line containing ``until``; the
    rest of stdout is drained by a thread (``quiet``: stderr discarded)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL if quiet else None)
    out = proc.stdout
    assert out is not None
    for line in out:
        if until in line:
            threading.Thread(target=_drain, args=(out,), daemon=True).start()
            return proc, line.strip()
    proc.wait()
    raise RuntimeError(f"{args[:4]} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
