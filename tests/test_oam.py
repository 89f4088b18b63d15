"""Operating a gateway (issue 11 items 2, 3, 5, 7; draft-dmsc-yang-00, Sections 5-6),
against real ``dmsc gateway`` processes: gw-a (a.example, management listener on) peers
with gw-b (b.example) and with a c.example gateway that is not there; an agent of b is
called from a.  The RESTCONF answers are validated against the ietf-dmsc module with
yangson, ``/metrics`` is parsed with prometheus-client's parser, and ``dmsc status
--gateway`` reads the same listener with an operator certificate."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool
from prometheus_client.parser import text_string_to_metric_families
from pyang import repository
from yangson import DataModel
from yangson.enumerations import ContentType, ValidationScope

from dmscproto import yang
from dmscproto.agent import AgentError, Request
from dmscproto.cli import main
from dmscproto.codec.registry import ErrorCode
from dmscproto.management.client import ManagementError, Operator
from dmscproto.management.prometheus import METRICS
from dmscproto.management.topology import dot
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.security.ca import Kind

pytestmark = pytest.mark.oam

CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"
HOST = "127.0.0.1"
DASHBOARD = Path(__file__).resolve().parent.parent / "tools" / "grafana" / "dmsc-gateway.json"


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


def start(config: Path, *wanted: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``dmsc gateway`` on ``config``; the addresses its log gives for the ``wanted``
    messages ("gateway listening", "management listening")."""
    proc = subprocess.Popen([sys.executable, "-c", CLI, "gateway", "--config", str(config),
                             "--log-format", "json"], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    found: dict[str, str] = {}
    for line in proc.stderr:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("msg") in wanted:
            found[event["msg"]] = event["address"]
        if len(found) == len(wanted):
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return proc, found
    proc.wait()
    raise RuntimeError(f"{config.name} did not start")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    a: Domain
    b: Domain
    management: tuple[str, int]
    operator: Operator
    weather: bytes
    root: Path

    def get(self, path: str) -> bytes:
        return self.operator.get(*self.management, path)


async def _traffic(a: Domain, b: Domain, gw_a: tuple[str, int],
                   gw_b: tuple[str, int]) -> bytes:
    """weather (b) registers (and leaves its record when it goes); client (a) discovers
    it once gw-a learned it, calls it, and calls an agent nobody knows (NO_ROUTE)."""
    weather = b.agent("weather", gw_b)

    @weather.handler
    def answer(payload: bytes, _request: Request) -> bytes:
        return b"sunny in " + payload

    client = a.agent("client", gw_a)
    await weather.connect()
    try:
        await weather.register(skills=["forecast"])
        await client.connect()
        for _ in range(100):
            found = await client.discover(skills=["forecast"])
            if found:
                break
            await asyncio.sleep(0.1)
        assert found, "gw-a never learned weather"
        assert await client.call(found[0].agent_id, b"Paris") == b"sunny in Paris"
        with pytest.raises(AgentError) as refused:
            await client.call(bytes(16), b"anyone?")
        assert refused.value.code is ErrorCode.NO_ROUTE
        await client.close()
        return weather.agent_id
    finally:  # the record stays, with its lease
        await weather.close(deregister=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("oam")
    a, b, c = (Domain.create(root, d) for d in ("a.example", "b.example", "c.example"))
    procs: list[subprocess.Popen[str]] = []
    try:
        proc, found = start(write_gateway_config(b, "gw-b", peers=[PeerSpec(a)]),
                            "gateway listening")
        procs.append(proc)
        gw_b = _address(found["gateway listening"])
        config = write_gateway_config(a, "gw-a", peers=[PeerSpec(b, address=gw_b),
                                                        PeerSpec(c, (HOST, free_port()))])
        with config.open("a", encoding="utf-8") as f:
            f.write('\n[management]\nlisten = "127.0.0.1:0"\n')
        proc, found = start(config, "gateway listening", "management listening")
        procs.append(proc)
        cert, key = a.issue("alice", Kind.OPERATOR)
        weather = asyncio.run(_traffic(a, b, _address(found["gateway listening"]), gw_b))
        yield Site(a, b, _address(found["management listening"]),
                   Operator(cert, key, a.anchor), weather, root)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> DataModel:
    """The ietf-dmsc module and its imports (pyang's copies, under the file names
    yangson looks for) as a yangson data model."""
    where = tmp_path_factory.mktemp("yang")
    shutil.copy(yang.MODULE_PATH, where)
    search = repository.FileRepository(str(yang.MODULE_PATH.parent)).dirs
    modules = []
    for name, prefix in (("ietf-inet-types", "inet"), ("ietf-yang-types", "yang")):
        source = next(p for d in search for p in Path(d).rglob(f"{name}.yang"))
        revision = "2013-07-15"
        assert f"revision {revision}" in source.read_text(encoding="utf-8"), prefix
        shutil.copy(source, where / f"{name}@{revision}.yang")
        modules.append({"name": name, "revision": revision, "conformance-type": "import",
                        "namespace": f"urn:ietf:params:xml:ns:yang:{name}"})
    library = {"ietf-yang-library:modules-state": {"module-set-id": "dmsc", "module": [
        {"name": yang.MODULE, "revision": yang.REVISION, "conformance-type": "implement",
         "namespace": f"urn:ietf:params:xml:ns:yang:{yang.MODULE}"}, *modules]}}
    return DataModel(json.dumps(library), [str(where)])


def validate(model: DataModel, document: dict[str, Any]) -> None:
    """yangson's full validation (schema, semantics: keys, leafrefs, mandatory nodes)."""
    model.from_raw(document).validate(ValidationScope.all, ContentType.all)


def test_restconf_document_is_the_live_state_and_valid(site: Site, model: DataModel) -> None:
    document = json.loads(site.get("/restconf/data/ietf-dmsc:dmsc"))
    validate(model, document)
    top = document["ietf-dmsc:dmsc"]
    assert top["gateway"]["domain"] == "a.example" and top["gateway"]["name"] == "gw-a"
    peers = {p["domain"]: p for p in top["peers"]["peer"]}
    b, c = peers["b.example"], peers["c.example"]
    assert b["session-state"] == "established" and c["session-state"] == "idle"
    assert int(b["uptime"]) >= 0 and b["negotiated-hold-time"] == 90
    counts = {m["type"]: (int(m["in"]), int(m["out"])) for m in b["statistics"]["message"]}
    assert counts["open"] >= (1, 1) and counts["route-request"][1] >= 1
    assert counts["update"][0] >= 1 and int(b["statistics"]["records-accepted"]) >= 1
    record = next(r for r in top["records"]["record"]
                  if r["agent-id"].replace(":", "") == site.weather.hex())
    assert record["uri"] == "dmsc://b.example/weather" and record["origin"] == "learned"
    assert [r["best"] for r in record["route"]] == [True]
    assert record["route"][0]["peer-gateway-id"] == b["gateway-id"]
    refusals = {r["code"]: r for r in top["statistics"]["refusal"]}
    assert int(refusals["no-route"]["sent"]) >= 1
    assert top["timers"]["hold-time"] == "90"


def test_restconf_sub_resources(site: Site, model: DataModel) -> None:
    whole = json.loads(site.get("/restconf/data/ietf-dmsc:dmsc"))
    peers = json.loads(site.get("/restconf/data/ietf-dmsc:dmsc/peers"))
    assert list(peers) == ["ietf-dmsc:peers"]
    name = next(p["name"] for p in peers["ietf-dmsc:peers"]["peer"]
                if p["domain"] == "b.example")
    one = json.loads(site.get(f"/restconf/data/ietf-dmsc:dmsc/peers/peer={name}"))
    assert [p["name"] for p in one["ietf-dmsc:peer"]] == [name]
    record = json.loads(site.get("/restconf/data/ietf-dmsc:dmsc/records/record="
                                 + ":".join(f"{x:02x}" for x in site.weather)))
    assert record["ietf-dmsc:record"][0]["uri"] == "dmsc://b.example/weather"
    whole["ietf-dmsc:dmsc"]["peers"] = peers["ietf-dmsc:peers"]
    validate(model, whole)
    for path, status in (("ietf-dmsc:dmsc/nothing", "404"), ("ietf-dmsc:other", "404"),
                         ("ietf-dmsc:dmsc/peers/peer=nobody", "404"),
                         ("ietf-dmsc:dmsc?depth=1", "400")):
        with pytest.raises(ManagementError, match=f": {status} "):
            site.get(f"/restconf/data/{path}")


def _plain_get(site: Site, cert: Path | None, key: Path | None) -> int:
    ctx = ssl.create_default_context(cafile=str(site.a.anchor))
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    import http.client
    conn = http.client.HTTPSConnection(*site.management, context=ctx, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.security
def test_only_operators_of_the_domain_get_in(site: Site) -> None:
    assert _plain_get(site, None, None) == 401
    agent = site.a.issue("snoop", Kind.AGENT)
    assert _plain_get(site, *agent) == 403
    gateway = site.a.issue("gw-x", Kind.GATEWAY)
    assert _plain_get(site, *gateway) == 403
    foreign = site.b.issue("bob", Kind.OPERATOR)  # b's authority is trusted, not for this
    assert _plain_get(site, *foreign) == 403
    stranger = Domain.create(site.root, "z.example").issue("eve", Kind.OPERATOR)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _plain_get(site, *stranger)  # no trusted authority: the handshake fails


@pytest.mark.security
def test_operator_certificate_is_refused_on_dmsc(site: Site) -> None:
    operator = site.operator
    from dmscproto.agent import Agent

    gateway = json.loads(site.get("/restconf/data/ietf-dmsc:dmsc/gateway"))
    listener = gateway["ietf-dmsc:gateway"]["listener"][0]

    async def discover() -> None:
        agent = Agent.from_files(operator.certificate, operator.key, [operator.authority],
                                 gateway=f"{HOST}:{listener['bound-port']}",
                                 reconnect=False)
        async with agent:
            await agent.discover(skills=["forecast"], timeout=10)
    with pytest.raises(AgentError) as refused:
        asyncio.run(discover())
    assert refused.value.code is ErrorCode.POLICY_DENIED


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(family: Any, name: str, **labels: str) -> float:
    return sum(s.value for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_and_count(site: Site) -> None:
    families = _families(site.get("/metrics").decode("utf-8"))
    exposed = {f.name + ("_total" if f.type == "counter" else ""): f.type
               for f in families.values() if f.name.startswith("dmsc_")}
    assert exposed == METRICS
    assert families["process_cpu_seconds"].type == "counter"
    f = families
    assert _value(f["dmsc_routed_calls"], "dmsc_routed_calls_total", status="SUCCESS") >= 1
    assert _value(f["dmsc_routed_calls"], "dmsc_routed_calls_total", status="NO_ROUTE") >= 1
    assert _value(f["dmsc_routed_call_duration_seconds"],
                  "dmsc_routed_call_duration_seconds_count") >= 2
    assert _value(f["dmsc_discovery_duration_seconds"],
                  "dmsc_discovery_duration_seconds_count") >= 1
    assert _value(f["dmsc_pdus_received"], "dmsc_pdus_received_total", type="ROUTE_REQUEST",
                  transport="quic") >= 2
    assert _value(f["dmsc_errors_sent"], "dmsc_errors_sent_total", code="NO_ROUTE") >= 1
    assert _value(f["dmsc_peer_sessions"], "dmsc_peer_sessions", state="ESTABLISHED") == 1
    assert _value(f["dmsc_peer_sessions"], "dmsc_peer_sessions", state="IDLE") == 1
    assert _value(f["dmsc_records"], "dmsc_records", table="learned") >= 1
    assert _value(f["dmsc_peer_pdus_received"], "dmsc_peer_pdus_received_total",
                  domain="b.example", type="UPDATE") >= 1
    assert _value(f["dmsc_connections"], "dmsc_connections", transport="quic") >= 1
    assert _value(f["dmsc_handshakes_pending"], "dmsc_handshakes_pending",
                  transport="quic") >= 0


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_grafana_dashboard_queries_exposed_metrics(site: Site) -> None:
    import re

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = _queries(dashboard)
    assert len(queries) >= 10
    families = _families(site.get("/metrics").decode("utf-8"))
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum",
                "_count"), "summary": ("_sum", "_count")}
    samples = {f.name + suffix for f in families.values() for suffix in suffixes[f.type]}
    for expr in queries:
        names = set(re.findall(r"\b(dmsc_[a-z_]+|process_[a-z_]+)\b", expr))
        assert names, expr
        assert names <= samples, (expr, names - samples)


def test_status_against_the_running_gateway(site: Site, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            model: DataModel) -> None:
    op = site.operator
    args = ["status", "--gateway", f"{site.management[0]}:{site.management[1]}",
            "--cert", str(op.certificate), "--key", str(op.key), "--ca", str(op.authority)]
    assert main(args) == 0
    text = capsys.readouterr().out
    peer_line = next(line for line in text.splitlines() if "b.example" in line
                     and "established" in line)
    assert "/" in peer_line  # PDUs in/out
    assert "dmsc://b.example/weather" in text and "no-route" in text
    assert main([*args, "--json"]) == 0
    validate(model, json.loads(capsys.readouterr().out))
    graph = tmp_path / "federation.dot"
    assert main([*args, "--topology", str(graph)]) == 0
    written = graph.read_text(encoding="utf-8")
    assert written.startswith("digraph federation {") and '"b.example"' in written
    assert "darkgreen" in written and "c.example" in written
    if shutil.which("dot") or __import__("os").environ.get("CI") == "true":
        require_tool("dot")
        assert graph.with_suffix(".svg").read_text(encoding="utf-8").lstrip().startswith("<")
    bad = [*args[:-2], "--ca", str(site.b.anchor)]  # the gateway is not b's
    assert main(bad) == 1


def test_status_offline_still_works(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(site.a.directory / "gw-a.toml")]) == 0
    assert "a.example:" in capsys.readouterr().out


def test_topology_of_a_document() -> None:
    me, peer, origin = "01:" * 15 + "01", "02:" * 15 + "02", "03:" * 15 + "03"
    document = {"ietf-dmsc:dmsc": {
        "gateway": {"name": "gw-a", "domain": "a.example", "gateway-id": me},
        "peers": {"peer": [{"name": "b", "domain": "b.example", "gateway-id": peer,
                            "session-state": "established",
                            "statistics": {"records-accepted": "2"}},
                           {"name": "c", "domain": "c.example", "session-state": "idle"}]},
        "records": {"record": [
            {"agent-id": me, "uri": "dmsc://c.example/x", "origin": "learned",
             "route": [{"peer-gateway-id": peer, "path": [origin, peer], "best": True}]},
            {"agent-id": peer, "uri": "dmsc://a.example/y", "origin": "local"}]}}}
    text = dot(document)
    assert f'"{me}" -> "{peer}" [color=darkgreen, style=solid, label="2 records"]' in text
    assert f'"{peer}" -> "{origin}"' in text
    assert '-> "peer:c" [color=red, style=dashed, label="idle"]' in text
    assert 'label="c.example"' in text and "records: 1" in text


def test_ping_operation(site: Site, model: DataModel) -> None:
    peers = json.loads(site.get("/restconf/data/ietf-dmsc:dmsc/peers"))["ietf-dmsc:peers"]
    b = next(p for p in peers["peer"] if p["domain"] == "b.example")
    c = next(p for p in peers["peer"] if p["domain"] == "c.example")
    output = model.get_schema_node("/ietf-dmsc:ping/output")

    def ping(body: dict[str, Any]) -> dict[str, Any]:
        answer = json.loads(site.operator.request(*site.management, "POST",
                                                  "/restconf/operations/ietf-dmsc:ping",
                                                  body))
        output.from_raw(answer["ietf-dmsc:output"])  # types checked against the module
        return dict(answer["ietf-dmsc:output"])
    replies = ping({"ietf-dmsc:input": {"peer": b["name"], "count": 2}})["reply"]
    assert [r["sequence"] for r in replies] == [1, 2]
    assert {r["status"] for r in replies} == {"success"}
    assert {r["responder"] for r in replies} == {b["gateway-id"]}
    assert all(r["round-trip-time"] > 0 for r in replies)
    idle = ping({"ietf-dmsc:input": {"peer": c["name"]}})["reply"]
    assert idle == [{"sequence": 1, "status": "target-unreachable"}]
    for body in ({"ietf-dmsc:input": {"peer": "nobody"}},
                 {"ietf-dmsc:input": {"peer": b["name"], "count": 0}}, {"input": {}}):
        with pytest.raises(ManagementError, match=": 400 "):
            ping(body)


def test_status_watch_redraws(site: Site) -> None:
    op = site.operator
    proc = subprocess.Popen([sys.executable, "-c", CLI, "status", "--gateway",
                             f"{site.management[0]}:{site.management[1]}", "--cert",
                             str(op.certificate), "--key", str(op.key), "--ca",
                             str(op.authority), "--watch", "0.2"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        frames = 0
        for line in proc.stdout:
            frames += line.startswith("\033[H\033[J")
            if frames == 2:
                break
        assert frames == 2
    finally:
        proc.terminate()
        proc.wait(10)


def test_management_table_is_checked(tmp_path: Path) -> None:
    from dmscproto.host.config import ConfigError, GatewayConfig

    config = write_gateway_config(Domain.create(tmp_path, "a.example"), "gw")
    assert GatewayConfig.load(config).management is None  # off unless configured
    text = config.read_text(encoding="utf-8")
    for table, error in (('listen = "127.0.0.1"', "management.listen: must be"),
                         ('port = 1', "management.port"), ("", "management.listen")):
        config.write_text(f"{text}\n[management]\n{table}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=error):
            GatewayConfig.load(config)
    config.write_text(f'{text}\n[management]\nlisten = "[::1]:8830"\n', encoding="utf-8")
    assert GatewayConfig.load(config).management == ("::1", 8830)
