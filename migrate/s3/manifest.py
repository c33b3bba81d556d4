"""The on-disk manifest of a bucket copy (SQLite in --state-dir): one row per source object with its
listed size and ETag, its status (pending, verified, size-only, failed), the evidence used, the
target ETag it was verified against and (stream mode) how the target's copy of the bytes was
checked. A rerun reconciles it with fresh listings and resumes from it.

Only the thread that owns a Manifest touches its connection (workers hand results back to it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.config import S3CopyConfig
from migrate.errors import ConfigError, PreflightError

log = logging.getLogger(__name__)

PENDING, VERIFIED, SIZE_ONLY, FAILED = "pending", "verified", "size-only", "failed"
DONE = (VERIFIED, SIZE_ONLY)
METADATA_NOT_COMPARED = "metadata not compared"  # detail of an etag-match reconciled without a metadata check
FROM_JOURNAL = "verified by an earlier run (journal in the target)"  # detail of an object done by the journal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY, size INTEGER NOT NULL, etag TEXT NOT NULL, algo TEXT, storage_class TEXT,
    status TEXT NOT NULL DEFAULT 'pending', evidence TEXT, target_etag TEXT, detail TEXT, updated REAL,
    target_check TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS src (key TEXT PRIMARY KEY, size INTEGER, etag TEXT, algo TEXT, storage_class TEXT,
    last_modified TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dst (key TEXT PRIMARY KEY, size INTEGER, etag TEXT, algo TEXT, storage_class TEXT,
    last_modified TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    key TEXT PRIMARY KEY, size INTEGER, etag TEXT, status TEXT, evidence TEXT, target_etag TEXT,
    target_size INTEGER, target_check TEXT, last_modified TEXT
) WITHOUT ROWID;
"""
# The columns added since the first version, by table: upgrade() adds those a manifest lacks.
_ADDED = {"objects": ("target_check TEXT",), "src": ("last_modified TEXT",), "dst": ("last_modified TEXT",),
          "journal": ("last_modified TEXT",)}
_LISTING = "(key, size, etag, algo, storage_class, last_modified) VALUES (?, ?, ?, ?, ?, ?)"
_JOURNAL = ("(key, size, etag, status, evidence, target_etag, target_size, target_check, last_modified) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


@dataclass(slots=True)
class Row:
    key: str
    size: int
    etag: str
    algo: str | None
    storage_class: str | None
    status: str


# Given the objects whose target has their size and ETag but that this manifest did not copy, returns
# those whose metadata differs there (or could not be compared): key -> why they are copied again.
MetadataCheck = Callable[[list[Row]], dict[str, str]]


def job_name(cfg: S3CopyConfig) -> str:
    """The name of one source → target job, shards aside: `s3-<source bucket>-<16 hex digits>`."""
    ident = f"{cfg.source.location}|{cfg.target.location}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return f"s3-{cfg.source.location.bucket}-{digest}"


def manifest_path(cfg: S3CopyConfig) -> Path:
    """One file per (source, target, shard): shards of one copy never share a manifest."""
    name = job_name(cfg)
    if cfg.shard:
        name += f"-shard{cfg.shard[0]}of{cfg.shard[1]}"
    return Path(cfg.state_dir) / f"{name}.sqlite"


class Manifest:
    def __init__(self, path: Path | str, *, create: bool = True, lock: bool = False) -> None:
        """Open (or create) the manifest at `path`. With `lock`, first take an exclusive lock on a lock
        file next to it, held until close(): one copy of a job at a time (PreflightError if another
        process holds it; the kernel releases it when that process ends, also on kill -9)."""
        self.path = Path(path)
        self._lock_fd: int | None = None
        self.journal_matched = 0  # objects reconciled as done from the target's journal (load_journal)
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the state directory {self.path.parent}: {exc.strerror}") from None
        if lock:
            self._lock()
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a committed batch survives kill -9 of this process (only power loss could cost the last ones).
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            self.upgrade()
        except sqlite3.Error as exc:
            self._unlock()
            raise ConfigError(f"cannot open the manifest {self.path}: {exc}", hint="check --state-dir") from None

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _lock(self) -> None:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot create the lock file {self.lock_path}: {exc.strerror}",
                              hint="check --state-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            # Two runs of one job would both copy everything, and record over each other's results.
            raise PreflightError(f"another s3 copy of this job is running with the state dir {self.path.parent}",
                                 hint="wait for it to finish, or stop it; nothing was copied") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the file releases the lock
            self._lock_fd = None

    def close(self) -> None:
        self.db.close()
        self._unlock()

    def upgrade(self) -> None:
        """Add the tables and columns a manifest written by an earlier version lacks."""
        self.db.executescript(_SCHEMA)
        for table, added in _ADDED.items():
            columns = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            for column in added:
                if column.split()[0] not in columns:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def bind(self, cfg: S3CopyConfig) -> None:
        ident = json.dumps({"source": str(cfg.source.location), "target": str(cfg.target.location),
                            "shard": list(cfg.shard) if cfg.shard else None})
        row = self.db.execute("SELECT value FROM meta WHERE name='job'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('job', ?)", (ident,))
        elif row[0] != ident:
            raise ConfigError(f"the manifest {self.path} belongs to another copy ({row[0]})")

    # ---- listings -------------------------------------------------------------------------------------
    def load_listing(self, table: str, batches: Iterable[list[tuple[Any, ...]]]) -> tuple[int, int]:
        assert table in ("src", "dst")
        count = total = 0
        with self._transaction():
            self.db.execute(f"DELETE FROM {table}")
            for batch in batches:
                self.db.executemany(f"INSERT OR REPLACE INTO {table} {_LISTING}", batch)
                count += len(batch)
                total += sum(r[1] for r in batch)
        return count, total

    def load_journal(self, batches: Iterable[list[tuple[Any, ...]]]) -> int:
        """Replace the journal table with the entries of the target's journal (journal.read(): later
        entries for a key replace earlier ones); returns how many keys it holds."""
        with self._transaction():
            self.db.execute("DELETE FROM journal")
            for batch in batches:
                self.db.executemany(f"INSERT OR REPLACE INTO journal {_JOURNAL}", batch)
        return int(self.db.execute("SELECT count(*) FROM journal").fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction: committed at the end of the block, rolled back if it raises (a signal
        included). Never nested: a transaction a signal left open is rolled back first."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def reconcile(self) -> None:
        """Bring `objects` in line with fresh listings: new or changed source objects become pending, done
        objects whose target copy changed or vanished become pending, and pending ones whose target
        already has the same size and ETag are done ("etag-match": equal ETags mean equal content;
        their metadata is not compared here: detail METADATA_NOT_COMPARED)."""
        with self._transaction():
            self.db.execute("DELETE FROM objects WHERE key NOT IN (SELECT key FROM src)")
            self._reconcile("")

    def _reconcile(self, scope: str, check: MetadataCheck | None = None) -> None:
        """The reconcile statements for the keys of `scope` (SQL on `key`; "" for every listed key).

        An object this manifest has not copied (pending, failed) whose target has the same size and
        ETag has the same content, but maybe not the same metadata (a target filled by another tool, a
        new --state-dir): with `check`, those candidates are given to it (only they: a fresh target has
        none, a rerun of this manifest neither) and the ones it returns stay pending, to be copied."""
        now = time.time()
        db = self.db
        db.execute(
            f"""INSERT INTO objects (key, size, etag, algo, storage_class, status, updated)
               SELECT key, size, etag, algo, storage_class, 'pending', ? FROM src WHERE true {scope}
               ON CONFLICT(key) DO UPDATE SET
                 status = CASE WHEN objects.size = excluded.size AND objects.etag = excluded.etag
                               THEN objects.status ELSE 'pending' END,
                 size = excluded.size, etag = excluded.etag, algo = excluded.algo,
                 storage_class = excluded.storage_class""",
            (now,),
        )
        db.execute(
            f"""UPDATE objects SET status = 'pending', detail = 'target changed or missing since it was verified'
               WHERE status IN ('verified', 'size-only') {scope} AND NOT EXISTS (
                 SELECT 1 FROM dst WHERE dst.key = objects.key AND dst.etag = objects.target_etag
                   AND dst.size = objects.size)"""
        )
        # Pending objects (not known to this manifest as done or failed) that the target's journal records
        # as verified, with the source's size, ETag and LastModified unchanged since and the target still
        # holding what was verified then: done, as an earlier run (in another task, with another disk) left
        # them. LastModified tells metadata changed in place (CopyObject onto itself: same bytes, same ETag)
        # from an unchanged source. An entry without it (a journal written by an older version) never
        # matches (NULL = x is not true): those objects are planned as usual, i.e. copied again unless
        # the target has the source's ETag and metadata.
        cur = db.execute(
            f"""UPDATE objects SET (status, evidence, target_etag, target_check) = (
                   SELECT j.status, j.evidence, j.target_etag, j.target_check FROM journal j WHERE j.key = objects.key),
                 detail = ?, updated = ?
               WHERE status = 'pending' {scope} AND EXISTS (
                 SELECT 1 FROM journal j JOIN dst d ON d.key = j.key JOIN src s ON s.key = j.key
                 WHERE j.key = objects.key AND j.size = objects.size AND j.etag = objects.etag
                   AND j.last_modified = s.last_modified
                   AND d.etag = j.target_etag AND d.size = j.target_size)""",
            (FROM_JOURNAL, now),
        )
        self.journal_matched += max(cur.rowcount, 0)
        same = f"""status IN ('pending', 'failed') {scope} AND EXISTS (
                 SELECT 1 FROM dst
                 WHERE dst.key = objects.key AND dst.etag = objects.etag AND dst.size = objects.size)"""
        differ: dict[str, str] = {}
        if check is not None:
            candidates = [Row(*r) for r in db.execute(
                f"SELECT key, size, etag, algo, storage_class, status FROM objects WHERE {same} ORDER BY key")]
            differ = check(candidates) if candidates else {}
        db.execute(
            f"""UPDATE objects SET status = 'verified', evidence = 'etag-match', target_etag = etag, detail = ?,
                 target_check = NULL, updated = ?
               WHERE {same}""",
            (None if check is not None else METADATA_NOT_COMPARED, now),
        )
        db.executemany("UPDATE objects SET status = 'pending', evidence = NULL, target_etag = NULL, detail = ? "
                       "WHERE key = ?", [(why, key) for key, why in differ.items()])

    def categories(self, *, page_only: bool = False) -> dict[str, tuple[int, int]]:
        """(count, bytes) per plan category after reconcile(): match, missing on target, differ (of the
        last page given to add_source() with page_only)."""
        scope = "AND o.key IN (SELECT key FROM page)" if page_only else ""
        out = {"match": (0, 0), "missing on target": (0, 0), "differ": (0, 0)}
        for cat, n, b in self.db.execute(
            f"""SELECT CASE WHEN o.status IN ('verified', 'size-only') THEN 'match'
                           WHEN d.key IS NULL THEN 'missing on target' ELSE 'differ' END AS cat,
                      count(*), coalesce(sum(o.size), 0)
               FROM objects o LEFT JOIN dst d ON d.key = o.key WHERE true {scope}
               GROUP BY cat"""
        ):
            out[cat] = (n, b)
        return out

    # ---- a source listing streamed page by page (copy starts before the listing ends) ----------------
    def start_source(self) -> None:
        """Forget the previous source listing; the target's (load_listing("dst", ...)) must be loaded."""
        with self._transaction():
            self.db.execute("DELETE FROM src")
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS page (key TEXT PRIMARY KEY) WITHOUT ROWID")

    def add_source(self, batch: list[tuple[Any, ...]], check: MetadataCheck | None = None
                   ) -> tuple[dict[str, tuple[int, int]], list[Row]]:
        """Load one page of the source listing and reconcile its keys (as reconcile() does, with the
        metadata `check` of _reconcile); returns the page's plan categories and its rows still to copy,
        in key order. One transaction."""
        with self._transaction():
            self.db.execute("DELETE FROM page")
            self.db.executemany(f"INSERT OR REPLACE INTO src {_LISTING}", batch)
            self.db.executemany("INSERT OR IGNORE INTO page VALUES (?)", [(r[0],) for r in batch])
            scope = "AND key IN (SELECT key FROM page)"
            self._reconcile(scope, check)
            cats = self.categories(page_only=True)
            rows = [Row(*r) for r in self.db.execute(
                "SELECT key, size, etag, algo, storage_class, status FROM objects "
                f"WHERE status IN ('pending', 'failed') {scope} ORDER BY key")]
        return cats, rows

    def finish_source(self) -> None:
        """The source listing is complete: forget objects that are no longer on the source."""
        with self._transaction():
            self.db.execute("DELETE FROM objects WHERE key NOT IN (SELECT key FROM src)")

    def listed_on_source(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM src WHERE key = ?", (key,)).fetchone() is not None

    def source_modified(self, key: str) -> str | None:
        """The source's LastModified as listed (None if not listed, or listed without it)."""
        row = self.db.execute("SELECT last_modified FROM src WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def extra_on_target(self) -> tuple[int, int]:
        n, b = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM dst WHERE key NOT IN (SELECT key FROM src)"
        ).fetchone()
        return int(n), int(b)

    # ---- work -----------------------------------------------------------------------------------------
    def todo(self, page: int = 1000) -> Iterator[Row]:
        """Pending and failed objects in key order, fetched a page at a time (keyset pagination, so
        writes between pages are safe and memory stays flat)."""
        last = None
        while True:
            if last is None:
                cur = self.db.execute(
                    "SELECT key, size, etag, algo, storage_class, status FROM objects "
                    "WHERE status IN ('pending', 'failed') ORDER BY key LIMIT ?", (page,))
            else:
                cur = self.db.execute(
                    "SELECT key, size, etag, algo, storage_class, status FROM objects "
                    "WHERE status IN ('pending', 'failed') AND key > ? ORDER BY key LIMIT ?", (last, page))
            rows = [Row(*r) for r in cur.fetchall()]
            if not rows:
                return
            yield from rows
            last = rows[-1].key

    def record(self, results: list[tuple[str, str, str | None, str | None, str | None, str | None]]) -> None:
        """Write (key, status, evidence, target_etag, detail, target_check) results in one transaction."""
        if not results:
            return
        now = time.time()
        with self._transaction():
            self.db.executemany(
                "UPDATE objects SET status = ?, evidence = ?, target_etag = ?, detail = ?, target_check = ?, "
                "updated = ? WHERE key = ?",
                [(s, e, t, d, c, now, k) for k, s, e, t, d, c in results],
            )

    def status_counts(self) -> dict[str, tuple[int, int]]:
        out = {s: (0, 0) for s in (PENDING, VERIFIED, SIZE_ONLY, FAILED)}
        for s, n, b in self.db.execute("SELECT status, count(*), coalesce(sum(size), 0) FROM objects GROUP BY status"):
            out[s] = (int(n), int(b))
        return out

    def metadata_not_compared(self) -> int:
        """Objects matched by size and ETag with their metadata not compared (reconcile() without a check)."""
        return int(self.db.execute("SELECT count(*) FROM objects WHERE status = 'verified' AND "
                                   "evidence = 'etag-match' AND detail = ?", (METADATA_NOT_COMPARED,)).fetchone()[0])

    def target_check_counts(self) -> dict[str, int]:
        """Objects done (verified or size-only) per way their target copy was checked (stream mode)."""
        return {c: int(n) for c, n in self.db.execute(
            "SELECT target_check, count(*) FROM objects WHERE status IN ('verified', 'size-only') "
            "AND target_check IS NOT NULL GROUP BY target_check")}

    def to_copy_in(self, storage_classes: Iterable[str]) -> dict[str, tuple[int, int]]:
        """(count, bytes) of the objects still to copy (pending, failed) per storage class, of those given."""
        classes = sorted(storage_classes)
        marks = ", ".join("?" * len(classes))
        return {c: (int(n), int(b)) for c, n, b in self.db.execute(
            "SELECT storage_class, count(*), coalesce(sum(size), 0) FROM objects WHERE status IN ('pending', 'failed')"
            f" AND storage_class IN ({marks}) GROUP BY storage_class ORDER BY storage_class", classes)}

    def failures(self, limit: int = 1000) -> list[tuple[str, str]]:
        return [(k, d or "") for k, d in self.db.execute(
            "SELECT key, detail FROM objects WHERE status = 'failed' ORDER BY key LIMIT ?", (limit,))]

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every object's final state, for the per-key report."""
        cur = self.db.execute("SELECT key, size, etag, status, evidence, target_etag, target_check, detail "
                              "FROM objects ORDER BY key")
        for key, size, etag, status, evidence, target_etag, target_check, detail in cur:
            yield {"key": key, "size": size, "etag": etag, "status": status, "evidence": evidence,
                   "target_etag": target_etag, "target_check": target_check, "detail": detail}


def snapshot(src: Path, dst: Path) -> Manifest:
    """A private copy of a manifest (SQLite backup API: consistent even while WAL is in use)."""
    out = Manifest(dst)
    if src.exists():
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            source.backup(out.db)
        finally:
            source.close()
        out.upgrade()
    return out
