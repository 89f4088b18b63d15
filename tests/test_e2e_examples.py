"""The README's "Running a gateway" and "Writing an agent" sections, followed literally
from an empty directory outside the repository: every shell line of their ``sh``
blocks run in order as a process (``cd`` and ``kill %N`` as a shell does them, a line
ending in ``&`` in the background, waited for until its first line of output), with a
real gateway over QUIC; and the example files that are only shown still load."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dmscproto.host.config import AgentConfig, GatewayConfig
from dmscproto.security.authority_store import AuthorityStore
from dmscproto.security.ca import Kind

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("Running a gateway", "Writing an agent")


def section(readme: str, title: str) -> str:
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start:end]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


class Job:
    """A background command and the lines it printed so far (stdout and stderr)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def first_line(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while not self.lines:
            assert self.proc.poll() is None, f"{self.argv} exited: {self.proc.returncode}"
            assert time.monotonic() < deadline, f"{self.argv} printed nothing"
            time.sleep(0.02)
        return self.lines[0]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


def test_readme_sections_work_from_an_empty_directory(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    parts = [section(readme, title) for title in SECTIONS]
    # the code shown is the code run
    [shown] = blocks(parts[1], "python")
    assert shown in (REPO / "dmscproto/quickstart/hello_agent.py").read_text()

    cwd = tmp_path / "empty"
    cwd.mkdir()
    assert REPO not in cwd.parents
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    jobs: list[Job] = []
    out: dict[str, str] = {}
    try:
        for block in (b for part in parts for b in blocks(part, "sh")):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                if not words:
                    continue
                if words[0] == "cd":
                    cwd = cwd / words[1]
                elif words[0] == "kill":
                    for job in words[1:]:
                        assert jobs[int(job.removeprefix("%")) - 1].stop() in (0, -15)
                elif words[-1] == "&":
                    jobs.append(Job(words[:-1], cwd, env))
                    jobs[-1].first_line()
                else:
                    done = subprocess.run(words, cwd=cwd, env=env, capture_output=True,
                                          text=True, timeout=30)
                    assert done.returncode == 0, (line, done.stdout, done.stderr)
                    out[line] = done.stdout
    finally:
        for job in jobs:
            job.stop()
    said = "\n".join(out.values())
    assert "dmsc://a.example/hello" in said and "\nhello, bob\n" in f"\n{said}"
    assert "\nhello, ann\n" in f"\n{said}" and "\nhello, world\n" in f"\n{said}"
    assert jobs[0].first_line().split()[3:5] == ["dmsc.gateway:", "gateway"]
    assert jobs[1].first_line().startswith("registered dmsc://a.example/hello (")
    assert jobs[2].first_line() == "registered dmsc://a.example/hello\n"


def test_example_files_load(tmp_path: Path) -> None:
    store = AuthorityStore.init(tmp_path / "ca-a", "a.example")
    store.issue("gw-a", Kind.GATEWAY)
    store.issue("hello", Kind.AGENT)
    for name in ("agent.toml", "gateway-a.toml"):
        shutil.copy(REPO / "examples" / name, tmp_path / name)
    agent = AgentConfig.load(tmp_path / "agent.toml")
    assert agent.skills == ("greet",) and agent.gateway == ("127.0.0.1", 4433)
    gateway = GatewayConfig.load(tmp_path / "gateway-a.toml")
    assert gateway.domain == "a.example" and gateway.listen == ("127.0.0.1", 4433)
