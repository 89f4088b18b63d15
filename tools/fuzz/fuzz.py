"""Run one fuzz target (:mod:`targets`) under atheris, seeded from :mod:`corpus`.

    python tools/fuzz/fuzz.py decode|values|node [CORPUS_DIR] [libFuzzer options]

e.g. ``-runs=100000`` or ``-max_total_time=60``; ``-atheris_runs`` is not needed.  With
no corpus directory, a scratch one is seeded from the draft vectors, the pcap fixtures
and the codec examples (``python tools/fuzz/corpus.py DIR`` writes them to keep).  A
crash leaves ``crash-<sha1>`` in the working directory: its input, which the same
command with that file as argument replays.
"""

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
with atheris.instrument_imports(include=["dmscproto"]):  # our code only: fast to start
    import targets
import corpus

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("decode", "values", "node"):
        sys.exit(__doc__)
    name, options = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        if not any(not o.startswith("-") for o in options):
            corpus.write(Path(tmp))
            options.append(str(Path(tmp) / name))
        sys.argv = [sys.argv[0], *options]
        targets.main(name)
