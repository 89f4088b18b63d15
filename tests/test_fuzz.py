"""The fuzz targets of ``tools/fuzz`` (issue 13 item 6), each run briefly under atheris
from its seed corpus (the draft vectors, the pcap fixtures, the codec examples): a
crash, a round-trip mismatch or a node that raises fails the test.  The long campaign
is run by hand (``python tools/fuzz/fuzz.py TARGET -runs=N``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "fuzz"))

import corpus  # noqa: E402
import targets  # noqa: E402


@pytest.mark.parametrize(("target", "runs"), [("decode", 20000), ("values", 10000),
                                               ("node", 300)])
def test_fuzz_target_runs_clean(target: str, runs: int, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz" / "fuzz.py"), target,
                           f"-runs={runs}", "-seed=1"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", proc.stderr)  # the seeds count too
    assert done is not None and int(done.group(1)) >= runs
    assert not list(tmp_path.glob("crash-*"))


def test_seed_corpora_cover_every_target_and_pass_it(tmp_path: Path) -> None:
    counts = corpus.write(tmp_path)
    assert counts["decode"] > 100 and counts["values"] > 100 and counts["node"] >= 9
    node = targets.NodeTarget()
    try:
        for name, run in (("decode", targets.decode_target), ("values", targets.values_target),
                          ("node", node)):
            for seed in (tmp_path / name).iterdir():
                run(seed.read_bytes())
    finally:
        node.close()
