"""``dmsc demo`` as a user runs it: a subprocess, its output and exit status."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
from pathlib import Path

from dmscproto.analysis.pcap import read_udp
from dmscproto.host.config import GatewayConfig
from dmscproto.sandbox.demo import run_demo


def test_demo_runs_every_step_and_leaves_nothing_behind(tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from dmscproto.cli import main; sys.exit(main())",
         "demo", "--capture", str(capture), "--keep", str(tmp_path / "kept")],
        capture_output=True, text=True, timeout=60)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    steps = [int(n) for n in re.findall(r"^(\d+)\. ", out, re.M)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 10
    assert re.search(rf"All {len(steps)} steps succeeded", out)
    # the messages of the cross-domain call, in order, hop by hop
    call = out[out.index("Routed call across domains"):out.index("Call by capability")]
    hops = re.findall(r"(\S+) -> (\S+)\s+(ROUTE_REQUEST|ROUTE_REPLY)", call)
    assert hops == [("client", "gw-a", "ROUTE_REQUEST"), ("gw-a", "gw-b", "ROUTE_REQUEST"),
                    ("gw-b", "weather", "ROUTE_REQUEST"), ("weather", "gw-b", "ROUTE_REPLY"),
                    ("gw-b", "gw-a", "ROUTE_REPLY"), ("gw-a", "client", "ROUTE_REPLY")]
    assert "answer 'sunny, 21 C'" in call
    for kind in ("OPEN", "KEEPALIVE", "UPDATE", "DIGEST", "REGISTER_ACK", "DISCOVER_REPLY",
                 "DEREGISTER_ACK"):
        assert f" {kind} " in out, kind
    # the temporary directory is gone
    (tmp,) = re.findall(r"files in (\S+)", out)
    assert not Path(tmp).exists()
    # capture: one record per datagram, a key log, the command that shows them
    datagrams = list(read_udp(capture / "dmsc-demo.pcap"))
    assert len(datagrams) > 50
    assert len({(d.payload, d.src, d.dst) for d in datagrams}) == len(datagrams)
    keys = (capture / "keys.log").read_text()
    assert keys.count("CLIENT_TRAFFIC_SECRET_0") >= 5  # 4 agents + 1 peering connection
    assert f"tshark -r {capture / 'dmsc-demo.pcap'} -o tls.keylog_file:" in out
    assert "-X lua_script:" in out
    # --keep: the configurations as they ran, ports included, so they start again
    gw_a = GatewayConfig.load(tmp_path / "kept" / "a.example" / "gw-a.toml")
    gw_b = GatewayConfig.load(tmp_path / "kept" / "b.example" / "gw-b.toml")
    assert all(port != 0 for cfg in (gw_a, gw_b) for _, (_, port) in cfg.listeners)
    assert gw_a.peers[0].address in [address for _, address in gw_b.listeners]


def test_demo_over_dtls() -> None:
    out = io.StringIO()
    assert asyncio.run(run_demo(out, quiet=True, transport="dtls")) == 0, out.getvalue()
    assert "DTLS 1.2" in out.getvalue() and "steps succeeded" in out.getvalue()
