"""``dmsc decode`` (draft-dmsc-protocol-00, Sections 4-7, 9.4) and the CLI framework.

A few cases run the installed ``dmsc`` console script in a subprocess; the rest call
``dmscproto.cli.main`` in-process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shlex
import subprocess
import sys
import sysconfig
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmscproto.analysis.pcap import PcapWriter
from dmscproto.cli import build_parser, main, subcommands
from dmscproto.cli.decode import split_pdus
from dmscproto.codec import DecodeError, Message, SignedRecord, decode, encode
from dmscproto.codec.registry import (
    CRITICAL_BIT,
    HEADER_SIZE,
    MAX_PDU_SIZE,
    UDP_PORT,
    VERSION,
    ErrorCode,
    GatewayCaps,
    MessageType,
    TlvType,
)
from dmscproto.codec.render import message_text, message_to_dict, summary
from dmscproto.codec.wire import HEADER_STRUCT, TLV_HEADER_STRUCT
from dmscproto.testing.examples import examples

EXAMPLES = examples()
PDUS = {name: encode(msg) for name, msg in EXAMPLES.items()}
DMSC = Path(sysconfig.get_path("scripts")) / "dmsc"


# --- helpers ------------------------------------------------------------------------------
def run_main(argv: list[str], capsys: pytest.CaptureFixture[str],
             stdin: str | bytes | None = None,
             monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        assert monkeypatch is not None
        raw = stdin if isinstance(stdin, bytes) else stdin.encode()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def pdu(mtype: int, tlvs: list[tuple[int, bytes]], *, version: int = VERSION,
        length: int | None = None, txid: int = 42) -> bytes:
    """A PDU built octet by octet, bypassing the encoder's checks."""
    body = b"".join(TLV_HEADER_STRUCT.pack(t, len(v)) + v for t, v in tlvs)
    size = HEADER_SIZE + len(body) if length is None else length
    return HEADER_STRUCT.pack(version, mtype, 0, size, txid) + body


STATUS_OK = (TlvType.STATUS, int(ErrorCode.SUCCESS).to_bytes(2, "big"))
TRACE_CBOR = bytes.fromhex("a1016178")  # {1: "x"}

#: One malformed PDU per decoding error code (Section 4.4).
MALFORMED: dict[ErrorCode, bytes] = {
    ErrorCode.TRUNCATED: PDUS["route-request"][:-1],
    ErrorCode.TRAILING_DATA: PDUS["keepalive"] + b"\0",
    ErrorCode.LENGTH_MISMATCH: pdu(MessageType.KEEPALIVE, [], length=HEADER_SIZE - 1),
    ErrorCode.UNSUPPORTED_VERSION: pdu(MessageType.KEEPALIVE, [], version=VERSION + 1),
    ErrorCode.UNKNOWN_MESSAGE_TYPE: pdu(0x66, []),
    ErrorCode.UNKNOWN_CRITICAL_TLV: pdu(MessageType.KEEPALIVE, [(CRITICAL_BIT | 0x7FFF, b"")]),
    ErrorCode.DUPLICATE_TLV: pdu(MessageType.DEREGISTER_ACK, [STATUS_OK, STATUS_OK]),
    ErrorCode.PDU_TOO_LARGE: pdu(MessageType.KEEPALIVE, [], length=MAX_PDU_SIZE + 1),
    ErrorCode.MALFORMED_CBOR: pdu(MessageType.DEREGISTER_ACK,
                                  [(TlvType.TRACE_CONTEXT, b"\xff"), STATUS_OK]),
    ErrorCode.NON_DETERMINISTIC_CBOR: pdu(MessageType.DEREGISTER_ACK,
                                          [(TlvType.TRACE_CONTEXT, bytes.fromhex("a118016178")),
                                           STATUS_OK]),
    ErrorCode.MALFORMED_COSE: pdu(MessageType.REGISTER, [(TlvType.SIGNED_RECORD, b"\x80")]),
    ErrorCode.MISSING_TLV: pdu(MessageType.DEREGISTER_ACK, [(TlvType.TRACE_CONTEXT, TRACE_CBOR)]),
    ErrorCode.INVALID_TLV_LENGTH: pdu(MessageType.DEREGISTER_ACK, [(TlvType.STATUS, b"\0")]),
    ErrorCode.INVALID_TLV_VALUE: pdu(MessageType.DISCOVER, [(TlvType.SCOPE, b"\x03")]),
    ErrorCode.TLV_ORDER: pdu(MessageType.DEREGISTER_ACK,
                             [STATUS_OK, (TlvType.TRACE_CONTEXT, TRACE_CBOR)]),
}


def codec_error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data)
    return info.value


def assert_rendered(value: Any, shown: Any, where: str) -> None:
    """``shown`` (from --json) is ``value`` (from the codec) under the documented mapping."""
    if value is None:
        assert shown is None, where
    elif isinstance(value, Enum):
        assert shown == value.name, where
    elif isinstance(value, bool | int | str):
        assert shown == value and type(shown) is type(value), where
    elif isinstance(value, bytes):
        assert bytes.fromhex(shown) == value, where
    elif isinstance(value, SignedRecord):
        assert shown["alg"] == value.algorithm.name, where
        assert shown["kid"] == (value.kid.hex() if value.kid else None), where
        assert bytes.fromhex(shown["signature"]) == value.signature, where
        assert bytes.fromhex(shown["protected"]) == value.protected, where
        assert_rendered(value.record, shown["record"], f"{where}.record")
    elif isinstance(value, tuple):
        assert isinstance(shown, list) and len(shown) == len(value), where
        for i, (v, s) in enumerate(zip(value, shown, strict=True)):
            assert_rendered(v, s, f"{where}[{i}]")
    elif isinstance(value, dict):
        assert list(shown) == [str(k) for k in value], where
        for k, v in value.items():
            assert_rendered(v, shown[str(k)], f"{where}.{k}")
    else:
        assert dataclasses.is_dataclass(value), where
        names = [f.name for f in dataclasses.fields(value)]
        assert list(shown) == names, where
        for name in names:
            assert_rendered(getattr(value, name), shown[name], f"{where}.{name}")


def assert_json_matches(obj: dict[str, Any], msg: Message, data: bytes) -> None:
    head = obj["header"]
    assert head["type"] == msg.TYPE.name and head["type_code"] == msg.TYPE.value
    assert head["version"] == data[0] == VERSION
    assert head["length"] == len(data)
    assert head["transaction_id"] == msg.transaction_id
    assert head["flags"]["value"] == msg.flags
    assert set(obj["fields"]) == {spec.name for spec in msg.SPEC}
    for spec in msg.SPEC:
        value, shown = getattr(msg, spec.name), obj["fields"][spec.name]
        if spec.tlv is TlvType.GATEWAY_CAPS:
            assert shown["value"] == value
            assert shown["names"] == [f.name for f in GatewayCaps if value & f]
        elif spec.tlv is TlvType.OFFENDING_TYPE and value is not None:
            assert shown["value"] == value
            known = MessageType._value2member_map_.get(value)
            assert shown["name"] == (known.name if known else None)
        else:
            assert_rendered(value, shown, spec.name)
    assert [(t["type"], bytes.fromhex(t["value"]), t["critical"]) for t in obj["unknown_tlvs"]] \
        == [(t.type, t.value, bool(t.type & CRITICAL_BIT)) for t in msg.unknown_tlvs]


# --- the CLI framework --------------------------------------------------------------------
def test_every_subcommand_module_builds_and_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    build_parser()
    names = [m.__name__.rsplit(".", 1)[1] for m in subcommands()]  # type: ignore[attr-defined]
    assert "decode" in names
    for name in names:
        assert main([name, "--help"]) == 0
        assert f"usage: dmsc {name}" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["decode", "--keylog", "x"]) == 2
    assert main(["decode", "--port", "1", "01"]) == 2
    assert "needs --pcap" in capsys.readouterr().err


# --- decoding every example -----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_decodes_from_hex_argument_stdin_and_file(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    msg, data = EXAMPLES[name], PDUS[name]
    status, text, err = run_main(["decode", data.hex()], capsys)
    assert (status, err) == (0, "")
    lines = text.splitlines()
    assert lines[0] == f"{msg.TYPE.name} (0x{msg.TYPE.value:02x}), {len(data)} octets"
    assert f"transaction_id: {msg.transaction_id} " in lines[1]
    for spec in msg.SPEC:
        if getattr(msg, spec.name) is not None:
            assert any(line.startswith(f"  {spec.name} [{spec.tlv.name}]") for line in lines)

    # Hex with noise, on stdin.
    noisy = "# " + name + "\n0x" + ":".join(f"{b:02X}" for b in data[:8]) + "\n" + data[8:].hex()
    assert run_main(["decode", "--json"], capsys, noisy, monkeypatch)[:2] \
        == run_main(["decode", "--json", "-"], capsys, data.hex(), monkeypatch)[:2]
    status, out, _ = run_main(["decode", "--json"], capsys, noisy, monkeypatch)
    [obj] = json_lines(out)
    assert status == 0 and obj["pdu_offset"] == 0
    assert_json_matches(obj, msg, data)

    # A binary file.
    path = tmp_path / "pdu.bin"
    path.write_bytes(data)
    status, out, _ = run_main(["decode", "--json", "--file", str(path)], capsys)
    assert status == 0
    assert json_lines(out) == [obj]


def test_binary_stream_is_split_by_header_length(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    names = sorted(EXAMPLES)
    stream = b"".join(PDUS[n] for n in names)
    path = tmp_path / "stream.bin"
    path.write_bytes(stream)
    status, out, _ = run_main(["decode", "--json", "--file", str(path)], capsys)
    objs = json_lines(out)
    assert status == 0 and len(objs) == len(names)
    offset = 0
    for name, obj in zip(names, objs, strict=True):
        assert obj["pdu_offset"] == offset
        assert_json_matches(obj, EXAMPLES[name], PDUS[name])
        offset += len(PDUS[name])

    # The same stream as hex needs --stream; binary stdin via --file -.
    status, out2, _ = run_main(["decode", "--json", "--stream", stream.hex()], capsys)
    assert (status, out2) == (0, out)
    status, out3, _ = run_main(["decode", "--json", "--file", "-"], capsys, stream, monkeypatch)
    assert (status, out3) == (0, out)

    # A malformed PDU in the middle is reported and decoding goes on; a cut-off tail ends it.
    bad = MALFORMED[ErrorCode.INVALID_TLV_VALUE]
    path.write_bytes(PDUS["keepalive"] + bad + PDUS["echo-request"] + PDUS["register"][:30])
    status, out, _ = run_main(["decode", "--json", "--file", str(path)], capsys)
    objs = json_lines(out)
    assert status == 1
    assert [o.get("error") or o["header"]["type"] for o in objs] \
        == ["KEEPALIVE", "INVALID_TLV_VALUE", "ECHO_REQUEST", "TRUNCATED"]
    assert objs[1]["pdu_offset"] == len(PDUS["keepalive"])
    assert objs[3]["pdu_offset"] == len(PDUS["keepalive"]) + len(bad) + len(PDUS["echo-request"])
    status, text, err = run_main(["decode", "--file", str(path)], capsys)
    assert status == 1
    assert text.count("# PDU at input offset") == 2
    assert f"PDU at input offset {len(PDUS['keepalive'])}: INVALID_TLV_VALUE" in err


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(PDUS)), data=st.data())
def test_mutated_streams_split_and_render_without_crashing(name: str, data: st.DataObject) -> None:
    stream = bytearray(PDUS[name] + PDUS["keepalive"])
    for _ in range(data.draw(st.integers(1, 4))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    stream = stream[: data.draw(st.integers(0, len(stream)))]
    items = list(split_pdus(bytes(stream)))
    assert sum(item.length for item in items) == len(stream)
    for item in items:
        if isinstance(item.result, Message):
            json.dumps(message_to_dict(item.result, item.length))
            assert message_text(item.result).startswith(item.result.TYPE.name)
            summary(item.result)


# --- malformed input ----------------------------------------------------------------------
def test_every_decoding_error_code_has_a_case() -> None:
    decoding = {c for c in ErrorCode if 0x0100 <= c.value < 0x0200}
    assert set(MALFORMED) == decoding


@pytest.mark.parametrize("code", sorted(MALFORMED), ids=lambda c: c.name)
def test_malformed_pdu_reports_code_offset_reason(
        code: ErrorCode, capsys: pytest.CaptureFixture[str]) -> None:
    data = MALFORMED[code]
    exc = codec_error(data)
    assert exc.code is code
    status, out, err = run_main(["decode", data.hex()], capsys)
    assert (status, out) == (1, "")
    assert err == (f"dmsc decode: {code.name} (0x{code.value:04x}) at offset {exc.offset}: "
                   f"{exc.reason}\n")
    status, out, err = run_main(["decode", "--json", data.hex()], capsys)
    assert (status, err) == (1, "")
    assert json_lines(out) == [{"pdu_offset": 0, "error": code.name, "code": code.value,
                                "offset": exc.offset, "reason": exc.reason}]


@pytest.mark.parametrize("text", ["zz", "012", "01 0g", ""])
def test_bad_hex_exits_2(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main(["decode", text], capsys)
    assert (status, out) == (2, "")
    assert err.startswith("dmsc decode: error: ")


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["decode", "--file", str(tmp_path / "missing")], capsys)[0] == 2
    assert run_main(["decode", "--pcap", str(tmp_path / "missing")], capsys)[0] == 2


# --- captures -----------------------------------------------------------------------------
CLIENT = ("192.0.2.1", 40001)
GATEWAY = ("192.0.2.2", UDP_PORT)
T0 = 1790000000.0


def write_capture(path: Path, extra: list[tuple[tuple[str, int], tuple[str, int], bytes]]) -> None:
    with PcapWriter(path) as writer:
        for i, name in enumerate(sorted(EXAMPLES)):
            src, dst = (CLIENT, GATEWAY) if i % 2 == 0 else (GATEWAY, CLIENT)
            writer.write_udp(src, dst, PDUS[name], T0 + i * 0.25)
        for j, (src, dst, payload) in enumerate(extra):
            writer.write_udp(src, dst, payload, T0 + 100 + j)


def test_pcap_lists_every_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = tmp_path / "lab.pcap"
    other = ("192.0.2.3", 9999)
    write_capture(cap, [(CLIENT, other, PDUS["keepalive"])])  # not on the DMSC port
    names = sorted(EXAMPLES)

    status, out, err = run_main(["decode", "--pcap", str(cap), "--json"], capsys)
    objs = json_lines(out)
    assert (status, err) == (0, "")
    assert [o["frame"] for o in objs] == list(range(1, len(names) + 1))
    for i, (name, obj) in enumerate(zip(names, objs, strict=True)):
        src, dst = (CLIENT, GATEWAY) if i % 2 == 0 else (GATEWAY, CLIENT)
        assert (obj["src"], obj["dst"]) == (f"{src[0]}:{src[1]}", f"{dst[0]}:{dst[1]}")
        assert obj["time"] == pytest.approx(T0 + i * 0.25)
        assert_json_matches(obj["message"], EXAMPLES[name], PDUS[name])

    status, text, _ = run_main(["decode", "--pcap", str(cap)], capsys)
    lines = text.splitlines()
    assert status == 0 and len(lines) == len(names) + 1
    for i, (name, line) in enumerate(zip(names, lines[:-1], strict=True)):
        msg = EXAMPLES[name]
        cols = line.split()
        assert cols[0] == str(i + 1) and float(cols[1]) == pytest.approx(i * 0.25)
        assert cols[3] == "->"
        assert cols[5:7] == [msg.TYPE.name, f"txid={msg.transaction_id}"]
    assert lines[-1] == f"# {len(names) + 1} UDP datagrams, {len(names)} DMSC messages, " \
                        "0 malformed, 0 encrypted"

    status, out, _ = run_main(["decode", "--pcap", str(cap), "--json", "--any-port"], capsys)
    assert status == 0
    assert json_lines(out)[-1]["dst"] == f"{other[0]}:{other[1]}"


def test_pcap_malformed_and_encrypted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = tmp_path / "mixed.pcap"
    dtls = bytes([22, 0xFE, 0xFD]) + bytes(40)
    quic = bytes([0xC3, 0, 0, 0, 1]) + bytes(40)
    bad = MALFORMED[ErrorCode.MISSING_TLV]
    write_capture(cap, [(CLIENT, GATEWAY, bad), (CLIENT, GATEWAY, dtls),
                        (CLIENT, ("192.0.2.2", 4433), quic)])
    n = len(EXAMPLES)

    status, out, err = run_main(["decode", "--pcap", str(cap), "--json"], capsys)
    objs = json_lines(out)
    assert status == 1  # a malformed PDU
    assert objs[n]["error"]["error"] == "MISSING_TLV"
    assert objs[n + 1]["encrypted"] == "DTLS"
    assert len(objs) == n + 2  # QUIC on another port is not looked at
    assert "does not decrypt" in err

    keylog = tmp_path / "keys.log"
    keylog.write_text("CLIENT_RANDOM 00 00\n")
    cap2 = tmp_path / "encrypted.pcap"
    with PcapWriter(cap2) as writer:
        writer.write_udp(CLIENT, ("192.0.2.2", 4433), quic, T0)
    status, out, err = run_main(["decode", "--pcap", str(cap2), "--any-port",
                                 "--keylog", str(keylog)], capsys)
    assert status == 1  # decryption was asked for and is not done
    assert "QUIC (encrypted" in out
    assert f"the key log {keylog} was not used" in err
    assert f"-o tls.keylog_file:{keylog}" in err and "udp.port==4433,quic" in err


def test_pcapng_is_refused_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = tmp_path / "x.pcapng"
    cap.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(28))
    status, _, err = run_main(["decode", "--pcap", str(cap)], capsys)
    assert status == 2 and "editcap -F pcap" in err


# --- the installed console script ---------------------------------------------------------
def dmsc(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(DMSC), *args], input=stdin, capture_output=True, timeout=60,
                          check=False)


def test_console_script_hex_stdin_and_file(tmp_path: Path) -> None:
    data = PDUS["register"]
    path = tmp_path / "two.bin"
    path.write_bytes(data + PDUS["register-ack"])
    by_arg = dmsc("decode", "--json", data.hex())
    by_stdin = dmsc("decode", "--json", stdin=data.hex().encode())
    by_file = dmsc("decode", "--json", "--file", str(path))
    assert by_arg.returncode == by_stdin.returncode == by_file.returncode == 0
    assert by_arg.stdout == by_stdin.stdout
    assert by_file.stdout.startswith(by_arg.stdout)
    assert_json_matches(json.loads(by_arg.stdout), EXAMPLES["register"], data)
    assert len(by_file.stdout.splitlines()) == 2


def test_console_script_errors(tmp_path: Path) -> None:
    bad = dmsc("decode", MALFORMED[ErrorCode.UNKNOWN_CRITICAL_TLV].hex())
    assert bad.returncode == 1
    assert bad.stderr.decode().startswith("dmsc decode: UNKNOWN_CRITICAL_TLV (0x0106) at offset 16")
    assert dmsc("decode", "xyz").returncode == 2
    cap = tmp_path / "lab.pcap"
    write_capture(cap, [])
    listed = dmsc("decode", "--pcap", str(cap))
    assert listed.returncode == 0
    assert listed.stdout.decode().count(f":{UDP_PORT}") == len(EXAMPLES)


# --- the README -----------------------------------------------------------------------------
def test_readme_examples_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Decoding a PDU", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert blocks
    for block in blocks:
        command, *expected = block.splitlines()
        assert command.startswith("$ dmsc ")
        main(shlex.split(command)[2:])
        out, err = capsys.readouterr()
        assert (out + err).splitlines() == expected


def test_binary_on_stdin_without_file_is_a_usage_error(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for data in (PDUS["register"], b"\xff\xfe"):
        status, out, err = run_main(["decode"], capsys, data, monkeypatch)
        assert (status, out) == (2, "") and "--file" in err


def test_text_output_escapes_wire_strings(capsys: pytest.CaptureFixture[str]) -> None:
    evil: dict[str, Any] = {"diagnostic": "bad\x1b[31m\nline"}
    msg = dataclasses.replace(EXAMPLES["route-reply-no-route"], **evil)
    status, out, _ = run_main(["decode", encode(msg).hex()], capsys)
    assert status == 0 and "\x1b" not in out
    assert "  diagnostic [DIAGNOSTIC]: 'bad\\x1b[31m\\nline'" in out.splitlines()
