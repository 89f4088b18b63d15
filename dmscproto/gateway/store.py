"""The gateway's registry store: one SQLite file (draft-dmsc-protocol-00, 5.1, 6.5).

Durability rule (Section 5.1): a gateway acknowledges a REGISTER only after the record
is committed.  Every mutating method of :class:`RegistryStore` runs one transaction and
returns only after its ``COMMIT``.  The database runs in WAL mode with
``synchronous=FULL``: in WAL mode ``NORMAL`` fsyncs the log only at checkpoints, so
the last commits before a power loss or kernel crash can vanish although they were
acknowledged; ``FULL`` fsyncs the WAL at every commit, which is what "acknowledged =>
durable" needs.  Throughput comes from batching (:meth:`RegistryStore.put_many`: one
fsync for many records, all acknowledged after it), never from a weaker sync mode.

The one exception is what a gateway learned from its peers (``durable=False``): those
transactions are committed without an fsync (``synchronous=NORMAL``: after a crash of
the process they are there, after a power loss the last ones may not be).  Nothing
acknowledges them to an agent, and a peer sends its whole table again on every new
session, which also sweeps what it no longer advertises (Sections 6.5.3, 6.6.3), so a
restarted gateway relearns them; an fsync per slice of a bulk transfer would cost
more than the records' check (and stall the gateway for as long as the disk takes).
The WAL is sequential, so the next durable commit makes every earlier one durable too.

Rows hold the raw COSE_Sign1 octets exactly as received (``SignedRecord.encode()``
reproduces them) and, derived from them at write time, the record's
:class:`IndexTerms` (a small CBOR array), so a restart rebuilds the capability index
without decoding 100,000 envelopes (:meth:`RegistryStore.rows`).  Signatures are
*not* re-verified on load: the security layer verified every record before the
gateway core stored it, and the file is the gateway's own state.  Decoding a row
(:meth:`RegistryStore.get`, :meth:`RegistryStore.all`) re-runs the structural checks of
:meth:`SignedRecord.decode`, so a corrupt row raises instead of yielding a wrong record.
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..codec.cose import SignedRecord
from ..codec.registry import ID_SIZE
from ..errors import DmscError
from .index import IndexTerms

#: Schema version stored in ``PRAGMA user_version``.
SCHEMA_VERSION = 1

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS entries (
    agent_id BLOB PRIMARY KEY CHECK (length(agent_id) = {ID_SIZE}),
    agent_uri TEXT NOT NULL UNIQUE,
    owner_key BLOB NOT NULL,
    record BLOB NOT NULL,
    terms BLOB NOT NULL,
    record_version INTEGER NOT NULL CHECK (record_version >= 0),
    expires_at REAL NOT NULL,
    origin BLOB CHECK (origin IS NULL OR length(origin) = {ID_SIZE}),
    path BLOB NOT NULL CHECK (length(path) % {ID_SIZE} = 0),
    next_hop BLOB CHECK (next_hop IS NULL OR length(next_hop) = {ID_SIZE})
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at);
PRAGMA user_version = {SCHEMA_VERSION};
"""

_COLUMNS = "agent_id, agent_uri, owner_key, record, terms, record_version, expires_at, " \
           "origin, path, next_hop"
_UPSERT = (
    f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (agent_id) DO UPDATE SET agent_uri = excluded.agent_uri, "
    "owner_key = excluded.owner_key, record = excluded.record, terms = excluded.terms, "
    "record_version = excluded.record_version, expires_at = excluded.expires_at, "
    "origin = excluded.origin, path = excluded.path, next_hop = excluded.next_hop"
)
_SELECT = "SELECT agent_id, record, expires_at, origin, record_version, path, next_hop " \
          "FROM entries"


def _lock_file(path: Path) -> int:
    """An exclusive advisory lock (flock, which SQLite's own POSIX locks ignore) on
    ``path``, created if need be; StoreError if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{path} is in use by another gateway (one registry file per "
                         "gateway: give this one its own [gateway] store)") from None
    return fd


class StoreError(DmscError, ValueError):
    """An entry was refused before anything was written (the store is unchanged), or the
    registry file cannot be used."""

    named = False


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One registry entry: a signed record and where the gateway learned it.

    ``origin`` is None for an agent registered at this gateway, else the ID of the
    gateway where it is registered; ``path`` lists the gateways the advertisement
    crossed (Section 6.5) and ``next_hop`` the peer it came from (None when local).
    ``expires_at`` is the lease end in seconds on the caller's clock (``math.inf``
    for learned records, which live as long as a peer advertises them).
    """

    agent_id: bytes
    signed: SignedRecord
    expires_at: float
    origin: bytes | None = None
    version: int = 0
    path: tuple[bytes, ...] = ()
    next_hop: bytes | None = None

    @property
    def local(self) -> bool:
        return self.origin is None

    @property
    def agent_uri(self) -> str:
        return self.signed.record.agent_uri


class StoredRow(NamedTuple):
    """One entry as stored, undecoded: what a restart needs to rebuild the index and
    the routing table without decoding the COSE envelope (decode ``record`` with
    :meth:`SignedRecord.decode` when the record itself is needed; ``terms`` is an
    encoded :class:`IndexTerms`)."""

    agent_id: bytes
    agent_uri: str
    record: bytes
    terms: bytes
    expires_at: float
    origin: bytes | None
    version: int
    path: tuple[bytes, ...]
    next_hop: bytes | None


def _check(entry: StoredRecord) -> None:
    """Refuse an entry whose fields disagree, before any write."""
    rec = entry.signed.record
    if len(entry.agent_id) != ID_SIZE or rec.agent_id != entry.agent_id:
        raise StoreError("agent id does not match the signed record")
    if entry.version != rec.record_version:
        raise StoreError("version does not match the record version")
    ids = [*entry.path, *(x for x in (entry.origin, entry.next_hop) if x is not None)]
    if any(len(i) != ID_SIZE for i in ids):
        raise StoreError(f"gateway ids must be {ID_SIZE} octets")
    if (entry.origin is None) != (entry.next_hop is None):
        raise StoreError("a local entry has neither origin nor next hop, a learned one both")
    if math.isnan(entry.expires_at):
        raise StoreError("expiry is NaN")


def _row(entry: StoredRecord, terms: bytes) -> tuple[object, ...]:
    rec = entry.signed.record
    return (entry.agent_id, rec.agent_uri, rec.public_key, entry.signed.encode(),
            terms, entry.version, entry.expires_at, entry.origin,
            b"".join(entry.path), entry.next_hop)


def _split(path: bytes) -> tuple[bytes, ...]:
    if not path:
        return ()
    return tuple(path[i:i + ID_SIZE] for i in range(0, len(path), ID_SIZE))


def _load(row: tuple[bytes, bytes, float, bytes | None, int, bytes, bytes | None]) \
        -> StoredRecord:
    agent_id, raw, expires_at, origin, version, path, next_hop = row
    return StoredRecord(agent_id, SignedRecord.decode(raw), expires_at, origin, version,
                        _split(path), next_hop)


class _Checkpointer(threading.Thread):
    """Copies the WAL into the main file from a connection of its own, every
    ``interval`` seconds (``PRAGMA wal_checkpoint(PASSIVE)``, which never waits for the
    writer).  A checkpoint writes and fsyncs the main file: done by the writer's
    automatic checkpoints it would stall the gateway's event loop inside a commit for
    as long as the disk takes.

    The writer starts the WAL over only when it begins a transaction after a
    checkpoint copied all of it, and a checkpoint copies only what was committed when
    it began: under a bulk sync's commits (one every few milliseconds) a checkpoint of
    0.5 s of them rarely ended between two, and the WAL grew without end (300 to 570
    MB after 30,000 learned records in ``tools/bench/bulk_sync.py``).  So each round
    checkpoints again at once, up to ``ROUNDS`` times, until one finds nothing
    committed since the previous one: those copy only the last few commits, and the
    WAL stays at tens of MB (56 MB there)."""

    ROUNDS = 8

    def __init__(self, path: Path, interval: float) -> None:
        super().__init__(name=f"checkpoint {path.name}", daemon=True)
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            while not self._stopping.wait(self._interval):
                before = -1
                for _ in range(self.ROUNDS):  # until a round finds nothing new to copy
                    _busy, log, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if log == before and copied >= log:
                        break
                    before = log
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join()


class RegistryStore:
    """The SQLite registry file (WAL, ``synchronous=FULL``, one commit per call).

    One table, ``entries``: ``agent_id`` (16-octet primary key), ``agent_uri``,
    ``owner_key`` (the record's public key: who holds the name), ``record`` (the
    COSE_Sign1 octets), ``terms`` (encoded :class:`IndexTerms`), ``record_version``,
    ``expires_at`` (indexed, for expiry), ``origin``, ``path`` (concatenated gateway
    ids) and ``next_hop`` (NULL for local entries).

    Not thread-safe: the connection may be created in one thread and used in another,
    but calls must not overlap (the gateway core is driven from one event loop).

    ``agent_uri`` is UNIQUE: the store itself can never hold one name for two agents.
    Writes use an upsert keyed on ``agent_id`` (not ``INSERT OR REPLACE``, which would
    silently delete another agent's row on a name clash); a clash raises
    :class:`sqlite3.IntegrityError` and the transaction is rolled back.
    """

    def __init__(self, path: str | Path, *, exclusive: bool = False,
                 checkpoint_interval: float | None = None) -> None:
        """Open (or create) the registry file.  ``exclusive`` (a gateway's own store)
        holds an advisory lock on it while open: a second gateway configured with the
        same file gets :class:`StoreError` instead of sharing it; readers such as
        ``dmsc status`` do not lock.  With ``checkpoint_interval`` the WAL is
        checkpointed by a thread of the store's own (:class:`_Checkpointer`) instead
        of inside commits."""
        self.path = Path(path)
        self._lock: int | None = None
        if exclusive:
            self._lock = _lock_file(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            self._db.close()
            self._unlock()
            raise StoreError(f"{self.path}: cannot enable WAL mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._durable = True
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            self._db.close()
            self._unlock()
            raise StoreError(f"{self.path}: unknown schema version {version}")
        self._db.executescript(_SCHEMA)
        self._checkpointer: _Checkpointer | None = None
        if checkpoint_interval is not None:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = _Checkpointer(self.path, checkpoint_interval)
            self._checkpointer.start()
        #: :meth:`next_expiry`'s answer, valid while ``_next_expiry_known``.
        self._next_expiry: float | None = None
        self._next_expiry_known = False

    # --- transactions ------------------------------------------------------------------
    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on success and rolled back on any error;
        it also forgets the cached earliest lease end (:meth:`next_expiry`).  Its
        commit is fsynced unless ``durable`` is False (module doc)."""
        db = self._db
        if durable is not self._durable:
            db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
            self._durable = durable
        db.execute("BEGIN IMMEDIATE")
        self._next_expiry_known = False
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _write(self, sql: str, rows: Iterable[tuple[object, ...]],
               evict: Iterable[bytes] = (), durable: bool = True) -> None:
        with self._transaction(durable) as db:
            db.executemany("DELETE FROM entries WHERE agent_id = ?", ((i,) for i in evict))
            db.executemany(sql, rows)

    def put(self, entry: StoredRecord, evict: Iterable[bytes] = ()) -> bytes:
        """Insert or replace ``entry`` (deleting the ``evict`` ids first), committed.
        Return its encoded :class:`IndexTerms` (as :meth:`put_many`)."""
        return self.put_many((entry,), evict)[0]

    def put_many(self, entries: Iterable[StoredRecord], evict: Iterable[bytes] = (), *,
                 durable: bool = True) -> list[bytes]:
        """Write many entries in one transaction: one commit (one fsync, unless not
        ``durable``: module doc) for all.

        Every entry is checked first; on any error nothing is written.  Return the
        encoded :class:`IndexTerms` written for each entry, in order, so the caller
        can index them without deriving them again.
        """
        batch = list(entries)
        for e in batch:
            _check(e)
        terms = [IndexTerms.of(e.signed.record).encode() for e in batch]
        self._write(_UPSERT, [_row(e, t) for e, t in zip(batch, terms, strict=True)],
                    list(evict), durable)
        return terms

    def set_routes(self, routes: Iterable[tuple[bytes, bytes, tuple[bytes, ...], bytes]],
                   delete: Iterable[bytes] = (), *, durable: bool = True) -> None:
        """For learned entries, set (agent id, origin, path, next hop) without rewriting
        the records, and delete the ``delete`` ids; one transaction, committed."""
        rows = [(origin, b"".join(path), next_hop, aid) for aid, origin, path, next_hop in routes]
        if any(len(x) % ID_SIZE or not x for row in rows for x in row):
            raise StoreError(f"route ids must be {ID_SIZE} octets")
        self._write("UPDATE entries SET origin = ?, path = ?, next_hop = ? "
                    "WHERE agent_id = ? AND origin IS NOT NULL", rows, list(delete), durable)

    def touch(self, agent_id: bytes, expires_at: float) -> bool:
        """Set the lease end of an entry (REFRESH), committed.  False if unknown."""
        with self._transaction() as db:
            n = db.execute("UPDATE entries SET expires_at = ? WHERE agent_id = ?",
                           (expires_at, agent_id)).rowcount
        return n > 0

    def delete(self, agent_id: bytes) -> bool:
        """Delete one entry, committed.  False if it was not there."""
        return bool(self.delete_many((agent_id,)))

    def delete_many(self, agent_ids: Iterable[bytes], *, durable: bool = True) -> list[bytes]:
        """Delete entries in one transaction; return the ids that existed."""
        gone: list[bytes] = []
        with self._transaction(durable) as db:
            for aid in agent_ids:
                if db.execute("DELETE FROM entries WHERE agent_id = ?", (aid,)).rowcount:
                    gone.append(aid)
        return gone

    def expire(self, now: float) -> list[bytes]:
        """Delete every entry whose lease ended at or before ``now``; return their ids
        (sorted), committed."""
        with self._transaction() as db:
            ids = [r[0] for r in db.execute(
                "DELETE FROM entries WHERE expires_at <= ? RETURNING agent_id", (now,))]
        return sorted(ids)

    # --- reads ----------------------------------------------------------------------------
    def get(self, agent_id: bytes) -> StoredRecord | None:
        row = self._db.execute(f"{_SELECT} WHERE agent_id = ?", (agent_id,)).fetchone()
        return None if row is None else _load(row)

    def by_uri(self, uri: str) -> StoredRecord | None:
        row = self._db.execute(f"{_SELECT} WHERE agent_uri = ?", (uri,)).fetchone()
        return None if row is None else _load(row)

    def all(self) -> Iterator[StoredRecord]:
        """Every entry, decoded, in agent id order."""
        for row in self._db.execute(f"{_SELECT} ORDER BY agent_id"):
            yield _load(row)

    def rows(self) -> Iterator[StoredRow]:
        """Every entry, undecoded, in agent id order (the fast restart path)."""
        for aid, uri, raw, terms, exp, origin, version, path, next_hop in self._db.execute(
                "SELECT agent_id, agent_uri, record, terms, expires_at, origin, "
                "record_version, path, next_hop FROM entries ORDER BY agent_id"):
            yield StoredRow(aid, uri, raw, terms, exp, origin, version, _split(path),
                            next_hop)

    def next_expiry(self) -> float | None:
        """The earliest finite lease end, or None.  Asked for at every timer update, so
        it is cached until the next write transaction."""
        if not self._next_expiry_known:
            row = self._db.execute("SELECT min(expires_at) FROM entries "
                                   "WHERE expires_at < 9e999").fetchone()
            self._next_expiry = None if row[0] is None else float(row[0])
            self._next_expiry_known = True
        return self._next_expiry

    def agent_ids_after(self, after: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` agent ids above ``after``, ascending (a walk in steps)."""
        return [r[0] for r in self._db.execute(
            "SELECT agent_id FROM entries WHERE agent_id > ? ORDER BY agent_id LIMIT ?",
            (after, limit))]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def settings(self) -> dict[str, int | str]:
        """The durability settings in force: ``journal_mode`` and ``synchronous``
        (2 = FULL)."""
        db = self._db
        return {"journal_mode": str(db.execute("PRAGMA journal_mode").fetchone()[0]),
                "synchronous": int(db.execute("PRAGMA synchronous").fetchone()[0])}

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close (then release the lock)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        self._unlock()

    def _unlock(self) -> None:
        # after SQLite has closed: closing a descriptor of the file drops the process's
        # POSIX locks on it, SQLite's included
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
