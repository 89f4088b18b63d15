"""The API reference builds with the README's command, without a warning (issue 14)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_api_reference_builds_without_warnings(tmp_path: Path) -> None:
    section = (REPO / "README.md").read_text().split("\n## API reference\n")[1]
    [command] = re.findall(r"```sh\n(pdoc .*)\n```", section)
    argv = shlex.split(command)
    argv[argv.index("-o") + 1] = str(tmp_path / "api")
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0 and not done.stdout + done.stderr, done.stdout + done.stderr
    sdk = (tmp_path / "api" / "dmscproto" / "agent.html").read_text()
    assert 'id="Agent.register"' in sdk and 'id="AgentError"' in sdk
    assert (tmp_path / "api" / "dmscproto" / "errors.html").is_file()
