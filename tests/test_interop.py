"""The interop runner (interop/README.md): this implementation against itself on the
quick cases over QUIC (real processes, judged on the capture tshark decrypts; lab UDP,
decoded directly, by the debug test), the runner's verdicts for an endpoint that
declines a case (127) or passes its side with wrong output, the pass rules on hand-made
traces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require_tool

from dmscproto.codec import DecodeError, encode
from dmscproto.codec.registry import ErrorCode
from dmscproto.testing.examples import examples
from interop.cases import Check, all_cases, rule_registration, wellformed
from interop.contract import Role
from interop.manifest import load
from interop.runner import plan
from interop.wire import Trace, WireMessage

ROOT = Path(__file__).resolve().parent.parent
QUICK = [c.name for c in all_cases() if c.quick]


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "interop", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_quick_matrix_against_itself(tmp_path: Path) -> None:
    require_tool("tshark")  # decrypts the QUIC captures
    result = run("--quick", "--transport", "quic", "--output", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    runs = {(r["case"], r["transport"]) for r in data["results"]}
    assert runs == {("codec", "-")} | {(c, "quic") for c in QUICK if c != "codec"}
    assert data["summary"]["passed"] == len(runs) and data["summary"]["failed"] == 0
    for r in data["results"]:
        case = tmp_path / r["logs"]
        assert (case / "check.txt").read_text().startswith("passed")
        if r["transport"] != "-":
            assert r["messages"] > 0 and (case / "trace.pcap").stat().st_size > 24
    quic = tmp_path / "dmscproto_dmscproto" / "quic" / "routing"
    assert "ROUTE_REPLY SUCCESS" in (quic / "trace.txt").read_text()  # decrypted, decoded
    assert (quic / "keys.log").read_text().count("CLIENT_TRAFFIC_SECRET_0") >= 2
    matrix = (tmp_path / "matrix.md").read_text()
    assert f"{len(QUICK)} cases, 1 pairs, {len(runs)} runs: {len(runs)} passed" in matrix
    assert "[✓](dmscproto_dmscproto/quic/routing/)" in matrix
    assert "href='dmscproto_dmscproto/quic/peering/'" in (tmp_path / "index.html").read_text()


def test_verdicts_come_from_the_output_not_the_exit_status(tmp_path: Path) -> None:
    """A decoder that exits 0 but says every vector is valid fails the codec case; one
    that exits 127 is unsupported; the runner's exit status is 1 for the failure."""
    lenient = tmp_path / "lenient.py"
    lenient.write_text("import json, sys\n"
                       "for line in sys.stdin:\n"
                       "    v = json.loads(line)\n"
                       "    print(json.dumps({'name': v['name'], 'result': 'valid', "
                       "'hex': v['hex']}))\n")
    manifest = tmp_path / "implementations.toml"
    manifest.write_text(f"""
[[implementation]]
name = "dmscproto"
command = ["{{python}}", "-m", "interop.adapter"]
cwd = "{ROOT}"
roles = ["decoder"]

[[implementation]]
name = "lenient"
command = ["{{python}}", "{lenient}"]
roles = ["decoder"]

[[implementation]]
name = "declines"
command = ["sh", "-c", "exit 127"]
roles = ["decoder", "gateway"]
""")
    result = run("--manifest", str(manifest), "--case", "codec", "--output",
                 str(tmp_path / "out"), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    verdicts = {r["pair"][0]: (r["status"], r["reason"]) for r in data["results"]}
    assert verdicts["dmscproto"] == ("passed", "")
    assert verdicts["declines"][0] == "unsupported"
    status, reason = verdicts["lenient"]
    assert status == "failed" and "truncated-header: valid (expected TRUNCATED)" in reason
    assert "1 failed, 1 unsupported" in result.stdout


def test_plan_pairs_every_implementation_in_both_roles() -> None:
    (ours,) = load()
    other = replace(ours, name="other", roles=ours.roles - {Role.DECODER},
                    transports=("quic",))
    planned = list(plan([ours, other], [c for c in all_cases() if c.name in
                                        ("codec", "routing", "peering")], ["quic", "udp"]))
    got = {(p.case.name, p.transport, p.pair) for p in planned}
    pairs = {("dmscproto", "dmscproto"), ("dmscproto", "other"), ("other", "dmscproto"),
             ("other", "other")}
    assert got == ({("codec", "-", ("dmscproto", "dmscproto"))}
                   | {(c, "quic", p) for c in ("routing", "peering") for p in pairs}
                   | {(c, "udp", ("dmscproto", "dmscproto")) for c in ("routing", "peering")})


# --- pass rules on hand-made traces: they fail on what is missing or wrong ---------------------
def wire(trace: Trace, name: str, up: bool, **fields: object) -> None:
    msg = replace(examples()[name], **fields)
    data = encode(msg)
    t = len(trace.messages) * 0.1
    src, dst = (("127.0.0.1", 40000), ("127.0.0.1", 4433))[::1 if up else -1]
    trace.messages.append(WireMessage(t, src, dst, "gateway", up, (("127.0.0.1", 40000),),
                                      data, msg))


def registration_trace(*names: str) -> Trace:
    trace = Trace()
    for name in names:
        wire(trace, name, not name.endswith("-ack"))
    return trace


def test_registration_rule_needs_every_step(tmp_path: Path) -> None:
    full = registration_trace("register", "register-ack", "refresh", "refresh-ack",
                              "deregister", "deregister-ack")
    assert rule_registration(Check(full, tmp_path)) == []
    assert wellformed(full) == []
    no_refresh = registration_trace("register", "register-ack", "deregister", "deregister-ack")
    fails = rule_registration(Check(no_refresh, tmp_path))
    assert [f.split(" (")[0] for f in fails] == [
        "missing: REFRESH of the registered agent answered SUCCESS",
        "missing: DEREGISTER after the REFRESH answered SUCCESS"]
    refused = registration_trace("register")
    wire(refused, "register-ack", False, status=ErrorCode.BAD_SIGNATURE, agent_id=None,
         lease=None)
    assert rule_registration(Check(refused, tmp_path)) == [
        "missing: REGISTER answered SUCCESS (REGISTER answers seen: "
        "['REGISTER_ACK BAD_SIGNATURE'])"]


def test_wellformed_flags_what_does_not_decode_or_round_trip(tmp_path: Path) -> None:
    trace = registration_trace("register", "register-ack")
    bad = trace.messages[1]
    trace.messages[1] = replace(bad, data=bad.data[:-1], msg=None,
                                error=DecodeError(ErrorCode.TRUNCATED, 0, "short"))
    (fail,) = wellformed(trace)
    assert fail.startswith("from gateway: a PDU that does not decode: TRUNCATED")
    assert wellformed(trace, malformed_requests=True) == [fail]  # answers are not excused


def test_debug_waits_for_the_endpoint_started_by_hand(tmp_path: Path) -> None:
    """``python -m interop debug``: the client's environment is written out, the client
    started by hand with it, Ctrl-C ends the case, which is judged on its capture."""
    debug = subprocess.Popen(
        [sys.executable, "-m", "interop", "debug", "--case", "registration", "--transport",
         "udp", "--output", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    env_file = tmp_path / "dmscproto_dmscproto" / "udp" / "registration" / "client@gateway.env"
    try:
        deadline = time.monotonic() + 30
        while not env_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        mine = subprocess.run([sys.executable, "-m", "interop.adapter"], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, timeout=60,
                              check=False)
        assert mine.returncode == 0, mine.stderr
        debug.send_signal(signal.SIGINT)
        out, _ = debug.communicate(timeout=30)
    finally:
        debug.kill()
    assert "export DMSC_GATEWAY=127.0.0.1:" in out
    assert debug.returncode == 0 and "\npassed\n" in out, out
