"""Registry store on a real SQLite file: durability, WAL, leases, atomicity."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.signing import entity_id, sign_record, spki
from dmscproto.gateway.index import IndexTerms
from dmscproto.gateway.store import RegistryStore, StoredRecord, StoreError
from dmscproto.testing.examples import example_key, weather_record

GW1, GW2 = b"\x01" * 16, b"\x02" * 16


def signed(n: int, name: str | None = None, version: int = 1) -> SignedRecord:
    key = example_key(n)
    pub = key.public_key()
    rec = replace(weather_record(), agent_id=entity_id(pub), public_key=spki(pub),
                  agent_uri=f"dmsc://a.example/{name or f'agent{n}'}", record_version=version)
    return sign_record(rec, key)


def local(n: int, expires_at: float = 1000.0, **kw: object) -> StoredRecord:
    s = signed(n, **kw)  # type: ignore[arg-type]
    return StoredRecord(s.record.agent_id, s, expires_at, None, s.record.record_version)


def same(a: StoredRecord | None, b: StoredRecord) -> bool:
    assert a is not None
    return (a.agent_id, a.signed.encode(), a.expires_at, a.origin, a.version, a.path,
            a.next_hop) == (b.agent_id, b.signed.encode(), b.expires_at, b.origin, b.version,
                            b.path, b.next_hop)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


def test_wal_and_full_sync(db: Path) -> None:
    with RegistryStore(db) as st:
        assert st.settings() == {"journal_mode": "wal", "synchronous": 2}
    with sqlite3.connect(db) as raw:  # WAL mode is persistent in the file
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_learned_writes_skip_the_fsync_and_registrations_do_not(db: Path) -> None:
    """What a peer may send again is committed with synchronous=NORMAL; the next
    registration's commit is FULL again (module doc)."""
    with RegistryStore(db) as st:
        st.put_many([local(1)], durable=False)
        assert st.settings()["synchronous"] == 1
        st.put(local(2))
        assert st.settings()["synchronous"] == 2 and len(list(st.all())) == 2


def test_background_checkpoints(db: Path) -> None:
    """With a checkpoint interval, commits never checkpoint; the store's thread copies
    the WAL into the main file."""
    st = RegistryStore(db, checkpoint_interval=0.01)
    assert st._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    empty = db.stat().st_size
    st.put_many([local(n) for n in range(1, 20)])
    for _ in range(500):
        if db.stat().st_size > empty + 16384:
            break
        time.sleep(0.01)
    assert db.stat().st_size > empty + 16384
    st.close()
    assert not any(t.name == f"checkpoint {db.name}" for t in threading.enumerate())


def test_put_close_reopen_get(db: Path) -> None:
    a, b = local(1), local(2, expires_at=2000.0)
    s3 = signed(3)
    learned = StoredRecord(s3.record.agent_id, s3, math.inf, GW1, 1, (GW1, GW2), GW2)
    st = RegistryStore(db)
    st.put(a)
    st.put_many([b, learned])
    st.close()
    st = RegistryStore(db)
    assert len(st) == 3
    assert same(st.get(a.agent_id), a)
    assert same(st.get(b.agent_id), b)
    got = st.get(learned.agent_id)
    assert same(got, learned) and got is not None and got.expires_at == math.inf
    assert same(st.by_uri("dmsc://a.example/agent2"), b)
    assert [e.agent_id for e in st.all()] == sorted([a.agent_id, b.agent_id, learned.agent_id])
    rows = {r.agent_id: r for r in st.rows()}
    assert IndexTerms.decode(rows[a.agent_id].terms) == IndexTerms.of(a.signed.record)
    assert rows[learned.agent_id].path == (GW1, GW2)
    st.close()


def test_acknowledged_put_survives_a_killed_process(db: Path) -> None:
    """put() returned => the row is in the file even if the process dies unclosed."""
    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_gateway_store import local\n"
        "from dmscproto.gateway.store import RegistryStore\n"
        f"st = RegistryStore({str(db)!r})\n"
        "st.put(local(7))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with RegistryStore(db) as st:
        assert same(st.get(local(7).agent_id), local(7))


def test_name_clash_is_refused_and_rolled_back(db: Path) -> None:
    with RegistryStore(db) as st:
        a = local(1, name="shared")
        st.put(a)
        b = local(2, name="shared")
        with pytest.raises(sqlite3.IntegrityError):
            st.put_many([local(3), b])
        assert st.get(b.agent_id) is None
        assert st.get(local(3).agent_id) is None  # the whole transaction rolled back
        assert same(st.by_uri("dmsc://a.example/shared"), a)


def test_invalid_entry_writes_nothing(db: Path) -> None:
    with RegistryStore(db) as st:
        good = local(1)
        bad = replace(local(2), version=9)  # disagrees with the record's version
        with pytest.raises(StoreError):
            st.put_many([good, bad])
        assert len(st) == 0
        with pytest.raises(StoreError):
            st.put(replace(good, agent_id=b"\x00" * 16))
        with pytest.raises(StoreError):
            st.put(replace(good, origin=GW1))  # learned entries need a next hop too
        assert len(st) == 0


def test_upsert_replaces_same_agent(db: Path) -> None:
    with RegistryStore(db) as st:
        st.put(local(1))
        v2 = local(1, version=2, name="renamed", expires_at=5000.0)
        st.put(v2)
        assert len(st) == 1
        assert same(st.get(v2.agent_id), v2)
        assert st.by_uri("dmsc://a.example/agent1") is None


def test_expire_touch_delete(db: Path) -> None:
    with RegistryStore(db) as st:
        a, b, c = local(1, expires_at=100.0), local(2, expires_at=200.0), local(3)
        st.put_many([a, b, c])
        assert st.next_expiry() == 100.0
        assert st.touch(a.agent_id, 300.0)
        assert st.next_expiry() == 200.0  # the cached answer follows every write
        assert not st.touch(b"\x09" * 16, 1.0)
        assert st.expire(199.0) == []
        assert st.expire(200.0) == [b.agent_id]
        assert st.get(b.agent_id) is None
        st.put(replace(local(4), expires_at=math.inf, origin=GW1, next_hop=GW1, path=(GW1,)))
        assert st.next_expiry() == 300.0
        assert sorted(st.expire(10_000.0)) == sorted([a.agent_id, c.agent_id])
        assert len(st) == 1  # the learned entry has no lease
        assert st.delete(local(4).agent_id)
        assert not st.delete(local(4).agent_id)
        assert st.next_expiry() is None


def test_set_routes_changes_learned_entries_only(db: Path) -> None:
    with RegistryStore(db) as st:
        s2, s3 = signed(2), signed(3)
        a = StoredRecord(s2.record.agent_id, s2, math.inf, GW1, 1, (GW1,), GW1)
        b = StoredRecord(s3.record.agent_id, s3, math.inf, GW1, 1, (GW1,), GW1)
        st.put_many([a, b, local(1)])
        st.set_routes([(a.agent_id, GW2, (GW1, GW2), GW2),
                       (local(1).agent_id, GW2, (GW2,), GW2)], delete=[b.agent_id])
        assert same(st.get(a.agent_id), replace(a, origin=GW2, path=(GW1, GW2), next_hop=GW2))
        assert st.get(b.agent_id) is None
        assert same(st.get(local(1).agent_id), local(1))  # a local entry keeps no route
        with pytest.raises(StoreError):
            st.set_routes([(a.agent_id, GW2, (b"short",), GW2)])
