"""`db verify`: prove the target database equals the source — schema, rows, sequences, large objects.

Phases (connections, concurrency):
  schema          one connection per side: catalog inventories compared (migrate.db.catalog)
  data            `jobs` workers, each with its own source and target connection: per table (or
                  primary-key range of a large table, cut at the planner's histogram bounds when it
                  has them, else by a pass over the key) a server-side count + order-independent hash
                  on both sides at once (migrate.db.rowhash); a mismatch is narrowed to a range and,
                  for ranges of at most KEY_LIST_MAX rows, to the differing keys. A large table
                  without a key, or whose rows are not stored in key order (key ranges would each
                  read most pages: migrate.db.layout), is hashed in page (ctid) ranges, each side on
                  its own, and the sides' sums compared (PostgreSQL 14+; else one scan per side). A
                  table without a key that differs has both sides' rows sorted by fingerprint and
                  merged (streamed), naming how many rows are only on each side and their lowest ctids.
                  A materialized view that differs is compared with its query's rows on the source
                  (hashed there, in the snapshot): a match when the target holds those (refreshed on
                  the target, stale on the source: information)
  sequences       one connection per side: last_value/is_called, and sequences owned by an integer column
                  behind its max() (a warning, not a difference, when the source's is behind its rows too)
  large objects   one connection per side: count, md5 and comment per object, merged in oid order

The source is read on one snapshot (exported by the coordinating connection and adopted by every
worker); the target likewise, so a verify sees each side at one instant. Read-only on both sides.
Memory is bounded: aggregates come back as three numbers, key lists only for small ranges, large
object lists are streamed.
"""

from __future__ import annotations

import heapq
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg

from migrate.config import DatabaseURL, DbJobConfig
from migrate.db import catalog, resume
from migrate.db.connect import (
    begin_snapshot_reader,
    connect,
    database_identity,
    first_line,
    quote_ident,
    refuse_same_database,
)
from migrate.db.inventory import COPIED
from migrate.db.layout import ranges_pay
from migrate.db.rowhash import (
    HASH_BUILTIN,
    HASH_MD5,
    Bound,
    Fingerprint,
    Hasher,
    KeyRange,
    TableInfo,
    builtin_hash_usable,
    list_tables,
)
from migrate.errors import PreflightError
from migrate.model import Diff, Outcome, PhaseResult, Report
from migrate.progress import Reporter, counted

log = logging.getLogger(__name__)

SPLIT_ROWS = 1_000_000  # tables estimated above this are hashed in primary-key ranges...
CHUNK_ROWS = 250_000  # ...of about this many rows
KEY_LIST_MAX = 1000  # a mismatched range this small is listed key by key
KEYLESS_LIST_MAX = 5_000_000  # a differing table without a key this small has its rows merged side by side
KEYS_REPORTED = 20  # differing keys named per table
RANGES_REPORTED = 10  # mismatched ranges named per table
FANOUT = 16  # a mismatched large range is re-split into this many parts
MAX_DEPTH = 8
LARGE_OBJECTS_REPORTED = 100
# A large object is hashed whole (md5 of lo_get) up to this size; a longer one in LO_HASH_CHUNK parts
# (md5 of their md5s, the same on both sides): lo_get cannot return 1 GB or more ("large object read
# request is too large"), which made verify, and so every copy of such a database, fail.
LO_WHOLE_MAX = 256 * 1024 * 1024
LO_HASH_CHUNK = 64 * 1024 * 1024


@dataclass
class _Side:
    url: DatabaseURL
    role: str
    snapshot: str | None = None


def _prepare(conn: psycopg.Connection) -> None:
    """Session settings beyond connect's pinned ones, the same on both sides.

    search_path = pg_catalog makes every catalog rendering (view bodies, regclass text) schema-
    qualified identically; no timeout of the target's role may cut a long hash or the idle
    snapshot-holding transaction. row_security = off (as pg_dump does): a table whose row-level
    security would hide rows from this user raises an error instead of hashing a filtered subset.
    """
    for name, value in (("search_path", "pg_catalog"), ("row_security", "off")):  # timeouts: connect() clears them
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


class _Sessions:
    """The coordinating connections (holding each side's exported snapshot) and one connection pair
    per worker thread, adopting those snapshots."""

    def __init__(self, cfg: DbJobConfig) -> None:
        self.source = _Side(cfg.source, "source")
        self.target = _Side(cfg.target, "target")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[psycopg.Connection] = []
        try:
            self.src = self._open(self.source)
            self.tgt = self._open(self.target)
            refuse_same_database(database_identity(self.src), database_identity(self.tgt))
            for side, conn in ((self.source, self.src), (self.target, self.tgt)):
                begin_snapshot_reader(conn, None)
                row = conn.execute("SELECT pg_export_snapshot()").fetchone()
                side.snapshot = row[0] if row else None
        except BaseException:
            self.close()  # the source stays open when only the target refuses us
            raise

    def _open(self, side: _Side) -> psycopg.Connection:
        conn = connect(side.url, side.role, autocommit=True, pin=True)
        with self._lock:
            self._opened.append(conn)
        _prepare(conn)
        return conn

    def worker(self) -> tuple[psycopg.Connection, psycopg.Connection]:
        """This thread's (source, target) pair, opened on first use or after a broken connection."""
        pair = getattr(self._local, "pair", None)
        if pair is None or pair[0].broken or pair[1].broken:
            pair = (self._open(self.source), self._open(self.target))
            begin_snapshot_reader(pair[0], self.source.snapshot)
            begin_snapshot_reader(pair[1], self.target.snapshot)
            self._local.pair = pair
        return pair

    def close(self) -> None:
        with self._lock:
            conns, self._opened = self._opened, []
        for conn in conns:
            # A query still running in a worker (after Ctrl-C) is cancelled, not waited for.
            with suppress(Exception):
                conn.cancel_safe(timeout=5)
            with suppress(Exception):
                conn.close()


def _key_data(names: list[str], key: Bound, what: str) -> dict[str, object]:
    """A reported key for scripts: {"key": {column: text}, "outcome": ..., "columns": [differing]}."""
    outcome, _, columns = what.partition(": ")
    out: dict[str, object] = {"key": dict(zip(names, key, strict=True)), "outcome": outcome}
    if columns:
        out["columns"] = columns.split(", ")
    return out


def _one_line(exc: BaseException) -> str:
    return first_line(str(exc)) if str(exc) else type(exc).__name__


@dataclass
class _RangeResult:
    source_rows: int = 0
    target_rows: int = 0
    match: bool = True
    ranges: list[KeyRange] = field(default_factory=list)  # narrowed differing ranges (up to RANGES_REPORTED)
    keys: list[tuple[Bound, str]] = field(default_factory=list)  # (key, outcome): the lowest KEYS_REPORTED
    key_count: int = 0
    counted_all: bool = True  # False when narrowing stopped early: key_count is then a lower bound
    error: str = ""
    # A table without a key: its rows only on one side (a changed row is one of each), counted, and
    # the first few rows' ctids on that side (None: not listed, the table is too big to sort).
    only_source: int = 0
    only_target: int = 0
    source_ctids: list[str] | None = None
    target_ctids: list[str] | None = None
    keyless_note: str = ""  # why a keyless table's rows are not listed
    # A materialized view whose target rows are what its query gives on the source now: the rows
    # the source stored (source_rows) were stale. None: not so (or not a materialized view).
    refreshed_rows: int | None = None
    view_note: str = ""  # a differing materialized view: how the target compares with its query


@dataclass
class _TableJob:
    info: TableInfo
    hasher: Hasher
    note: str = ""
    no_key: str = "no primary key to narrow by"  # why hasher.key is empty, when it is
    pending: int = 0
    result: _RangeResult = field(default_factory=_RangeResult)
    shown: bool = False  # its progress task started (when a worker first takes one of its ranges)
    sums: dict[str, Fingerprint] = field(default_factory=dict)  # hashed in page ranges: each side's total


@dataclass
class _Pages:
    """A table hashed in page (ctid) ranges, each side on its own (pages hold other rows on each
    side): each side's parts summed, then the sums compared. For tables without a key, or whose rows
    are not stored in key order, where key ranges would each read most pages."""

    source: list[str]
    target: list[str]


class _Verifier:
    def __init__(
        self,
        cfg: DbJobConfig,
        reporter: Reporter,
        sessions: _Sessions,
        *,
        split_rows: int,
        chunk_rows: int,
        key_list_max: int,
    ) -> None:
        self.cfg = cfg
        self.reporter = reporter
        self.s = sessions
        self._shown_lock = threading.Lock()
        self.split_rows = split_rows
        self.chunk_rows = max(1, chunk_rows)
        self.key_list_max = key_list_max
        # Page (ctid) ranges read alone only on PostgreSQL 14+ (TID range scans); else a whole scan each.
        self.page_ranges = min(sessions.src.info.server_version, sessions.tgt.info.server_version) >= 140000
        self.keyless_list_max = KEYLESS_LIST_MAX
        self.jobs = max(1, cfg.jobs)
        self.algorithm = HASH_MD5
        # Runs each range's target-side query while the worker runs the source side: the two are
        # different servers, so a range costs the slower of the two, not their sum.
        self._side_pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="verify-target")

    def close(self) -> None:
        self._side_pool.shutdown(wait=True, cancel_futures=True)

    # ---- data -------------------------------------------------------------------------------

    def _both(self, hasher: Hasher, rng: KeyRange) -> tuple[Fingerprint, Fingerprint]:
        src, tgt = self.s.worker()
        fut = self._side_pool.submit(_guarded_fingerprint, hasher, tgt, rng)
        try:
            fs = _guarded_fingerprint(hasher, src, rng)
        finally:
            ft = fut.result()
        return fs, ft

    def check_range(self, hasher: Hasher, rng: KeyRange) -> _RangeResult:
        """Hash one range on both sides; on a mismatch, narrow it down. Errors become a result."""
        try:
            fs, ft = self._both(hasher, rng)
            res = _RangeResult(fs.count, ft.count)
            if not fs.same(ft) and not self._refreshed(hasher, ft, res):
                res.match = False
                self._narrow(hasher, rng, fs, ft, res, depth=0)
            return res
        except Exception as exc:  # one table's failure must not stop the others
            log.debug("hashing %s failed", hasher.table.display, exc_info=True)
            return _RangeResult(match=False, error=_one_line(exc))

    def _refreshed(self, hasher: Hasher, ft: Fingerprint, res: _RangeResult) -> bool:
        """Whether a materialized view whose rows differ holds on the target what its query gives on the
        source now (its fingerprint, server-side, in the source's snapshot: read-only). A copy refreshes
        materialized views on the target, as pg_restore does, so one stale on the source (refreshed
        nightly, say) differs from its stored rows without the copy being wrong. Sets res.refreshed_rows
        when it does, else res.view_note (how the target compares with the query)."""
        if hasher.table.relkind != "m":
            return False
        src, _tgt = self.s.worker()
        try:
            with src.transaction():  # a savepoint: a failing query must not abort the snapshot's transaction
                fq = hasher.defining_query(src).fingerprint(src, KeyRange())
        except psycopg.Error as exc:
            log.debug("the query of %s failed on the source", hasher.table.display, exc_info=True)
            res.view_note = f"its query could not be run on the source to compare: {_one_line(exc)}"
            return False
        if fq.same(ft):
            res.refreshed_rows = ft.count
            return True
        res.view_note = (f"the target's rows are neither the source's stored ones nor what its query gives on"
                         f" the source now ({counted(fq.count, 'row')})")
        return False

    def _narrow(
        self, hasher: Hasher, rng: KeyRange, fs: Fingerprint, ft: Fingerprint, res: _RangeResult, depth: int
    ) -> None:
        if not hasher.key:
            if max(fs.count, ft.count) > self.keyless_list_max:
                res.keyless_note = f"rows not listed: more than {self.keyless_list_max:,} to sort"
                return
            try:
                self._rows_without_key(hasher, res)
            except psycopg.Error as exc:  # naming the rows is extra: the table still differs
                log.debug("listing the rows of %s failed", hasher.table.display, exc_info=True)
                res.source_ctids = res.target_ctids = None
                res.keyless_note = f"rows not listed: {_one_line(exc)}"
            return
        if max(fs.count, ft.count) <= self.key_list_max:
            src, tgt = self.s.worker()
            with src.transaction():
                a = hasher.row_hashes(src, rng)
            with tgt.transaction():
                b = hasher.row_hashes(tgt, rng)
            for key in sorted(set(a) | set(b), key=hasher.key_order):
                if a.get(key) == b.get(key):
                    continue
                if key not in b:
                    what = Outcome.MISSING_ON_TARGET.value
                elif key not in a:
                    what = Outcome.EXTRA_ON_TARGET.value
                else:
                    what = Outcome.DIFFER.value
                res.key_count += 1
                if len(res.keys) < KEYS_REPORTED:
                    res.keys.append((key, what))
            self._name_columns(hasher, res)
            if len(res.ranges) < RANGES_REPORTED and rng.bounded:
                res.ranges.append(rng)
            return
        subs: list[KeyRange] = []
        rows = max(fs.count, ft.count)
        if depth < MAX_DEPTH and rows > 0:
            # Cut at the keys of the side with more rows: rows the other side lacks (extra on the
            # target, missing on it) are then spread over the parts too, down to nameable keys.
            src, tgt = self.s.worker()
            side = src if fs.count >= ft.count else tgt
            with side.transaction():
                subs = hasher.split(side, rng, math.ceil(rows / FANOUT), rows)
        if len(subs) <= 1:
            if rng.bounded:
                res.ranges.append(rng)
            return
        # All the parts' fingerprints in one read of the range per side (not one per part: where the
        # rows are not stored in key order, each part's read would cover most of the table's pages).
        src, tgt = self.s.worker()
        fut = self._side_pool.submit(_guarded_parts, hasher, tgt, rng, subs)
        try:
            ours = _guarded_parts(hasher, src, rng, subs)
        finally:
            theirs = fut.result()
        for sub, s2, t2 in zip(subs, ours, theirs, strict=True):
            if len(res.ranges) >= RANGES_REPORTED and res.key_count >= KEYS_REPORTED:
                res.counted_all = False
                break
            if not s2.same(t2):
                self._narrow(hasher, sub, s2, t2, res, depth + 1)

    def _rows_without_key(self, hasher: Hasher, res: _RangeResult) -> None:
        """A table without a key that differs: merge both sides' rows, sorted by fingerprint on each
        server and streamed, as multisets. Counts the rows only on each side and keeps the lowest
        KEYS_REPORTED ctids of each, where a user can look at them (SELECT ... WHERE ctid = '(0,5)'). Never a row's
        values: they may be personal data, and reports end up in logs."""
        src, tgt = self.s.worker()
        sql = hasher.ordered_row_hashes_sql()
        lowest: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])  # max-heaps (negated) of ctids
        with src.transaction(), tgt.transaction(), \
                src.cursor(name="keyless_rows") as a, tgt.cursor(name="keyless_rows") as b:
            a.itersize = b.itersize = 10_000
            a.execute(sql)
            b.execute(sql)
            ra, rb = next(a, None), next(b, None)
            while ra is not None or rb is not None:
                if rb is None or (ra is not None and ra[0] < rb[0]):
                    res.only_source += 1
                    _keep_lowest(lowest[0], ra[1])  # type: ignore[index]
                    ra = next(a, None)
                elif ra is None or rb[0] < ra[0]:
                    res.only_target += 1
                    _keep_lowest(lowest[1], rb[1])
                    rb = next(b, None)
                else:
                    ra, rb = next(a, None), next(b, None)
        res.source_ctids, res.target_ctids = (
            [f"({-blk},{-off})" for blk, off in sorted(heap, reverse=True)] for heap in lowest)

    def _name_columns(self, hasher: Hasher, res: _RangeResult) -> None:
        """For the reported keys whose row differs (on both sides), which columns differ: "differ: a, b"."""
        differ = Outcome.DIFFER.value
        keys = [k for k, what in res.keys if what == differ]
        if not keys:
            return
        src, tgt = self.s.worker()
        with src.transaction():
            a = hasher.column_hashes(src, keys)
        with tgt.transaction():
            b = hasher.column_hashes(tgt, keys)
        names = [c.name for c in hasher.columns]
        for i, (key, what) in enumerate(res.keys):
            if what == differ and key in a and key in b:
                cols = [n for n, x, y in zip(names, a[key], b[key], strict=True) if x != y]
                if cols:
                    res.keys[i] = (key, f"{differ}: {', '.join(cols)}")

    def initial_ranges(self, job: _TableJob) -> list[KeyRange] | _Pages:
        info = job.info
        if info.estimated_rows <= self.split_rows:
            return [KeyRange()]
        src, tgt = self.s.worker()
        if job.hasher.key:
            with src.transaction():
                ranges = job.hasher.initial_split(src, self.chunk_rows)
            if len(ranges) <= 1:
                return ranges
            # Key ranges read through the key's index: where either side's rows are not stored in
            # key order, each range would read most of the table's pages.
            reads: list[float] = []
            for conn in (src, tgt):
                try:
                    with conn.transaction():
                        r = job.hasher.range_reads(conn, ranges)
                except psycopg.Error as exc:  # only an estimate: keep the ranges
                    log.info("%s: could not estimate how its rows lie (%s)", job.info.display, _one_line(exc))
                    r = None
                if r is not None:
                    reads.append(r)
            if not reads or ranges_pay(max(reads)):
                return ranges
            log.info("%s: rows not stored in key order (key ranges would read its pages %.1f times)",
                     job.info.display, max(reads))
        # No key, or keys not in storage order: page ranges on each side (PostgreSQL 14+), else one scan.
        if self.jobs < 2 or not self.page_ranges:
            return [KeyRange()]
        with src.transaction():
            source = job.hasher.page_parts(src, self.jobs)
        with tgt.transaction():
            target = job.hasher.page_parts(tgt, self.jobs)
        return _Pages(source, target)

    def _page_part(self, job: _TableJob, side: str, pages: str) -> Fingerprint | None:
        """One side's fingerprint of one page range of the table (None: another part failed)."""
        if job.result.error:
            return None
        self._show(job)
        src, tgt = self.s.worker()
        return _guarded_fingerprint(job.hasher, src if side == "source" else tgt, KeyRange(), pages)

    def _narrow_whole(self, job: _TableJob, fs: Fingerprint, ft: Fingerprint) -> _RangeResult:
        """A table hashed in page ranges that differs: narrowed by key (or listed row by row, keyless)."""
        res = _RangeResult(fs.count, ft.count, match=False)
        try:
            if self._refreshed(job.hasher, ft, res):
                res.match = True
                return res
            self._narrow(job.hasher, KeyRange(), fs, ft, res, depth=0)
        except Exception as exc:
            log.debug("narrowing %s failed", job.info.display, exc_info=True)
            res.error = _one_line(exc)
        return res

    def run_data(self, report: Report) -> None:
        t0 = time.monotonic()
        first = len(report.diffs)
        with self.s.src.transaction():
            src_tables = list_tables(self.s.src)
        with self.s.tgt.transaction():
            tgt_tables = list_tables(self.s.tgt)
        # Databases in different encodings hold the same text as different bytes: hashed as UTF-8.
        utf8 = len({str(c.execute("SHOW server_encoding").fetchone()[0])  # type: ignore[index]
                    for c in (self.s.src, self.s.tgt)}) > 1
        self.algorithm = HASH_BUILTIN if not utf8 and builtin_hash_usable(self.s.src, self.s.tgt) else HASH_MD5
        jobs: list[_TableJob] = []
        for key, info in src_tables.items():
            if info.relkind == "m" and not info.populated:
                continue  # nothing to compare: REFRESH on the target would produce its contents
            other = tgt_tables.get(key)
            if other is None:
                report.diffs.append(Diff(info.kind, info.display, Outcome.MISSING_ON_TARGET,
                                         f"no such relation (about {info.estimated_rows:,} rows on the source)"))
                continue
            if other.relkind == "m" and not other.populated:
                report.diffs.append(Diff(info.kind, info.display, Outcome.DIFFER, "not populated on target"))
                continue
            target_cols = {c.name: c for c in other.columns}
            columns = tuple(c for c in info.columns if c.name in target_cols)
            same_type = frozenset(c.name for c in columns if (c.type_oid, c.type_sql) == (
                target_cols[c.name].type_oid, target_cols[c.name].type_sql))
            note = ""
            if len(columns) != len(info.columns) or len(target_cols) != len(columns):
                note = f"compared the {len(columns)} columns both sides have"
            same_key = [c.name for c in info.key] == [c.name for c in other.key]
            pk = info.key if same_key and all(c in columns for c in info.key) else ()
            # Text keys of two encodings may sort apart byte-wise: a range would hold other rows on each side.
            text_key = utf8 and any(c.collatable for c in pk)
            job = _TableJob(info, Hasher(info, columns, () if text_key else pk, self.algorithm, same_type, utf8), note)
            if text_key:
                job.no_key = ("its key is text and the two databases' encodings differ, so differences are"
                              " not narrowed to keys")
            elif info.key and not pk:
                job.no_key = "the primary key differs on the target (missing?), so differences are not narrowed to keys"
            jobs.append(job)
        self.reporter.note(f"data: hashing {counted(len(jobs), 'table')} on both sides with {self.jobs} workers")
        source_rows = 0
        pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="verify")
        # Each future: what it is ("plan" a table, hash a key "range", hash a "source"/"target" page
        # range) and its table. Work is added as other work finishes; finished futures queue
        # themselves (waiting on all pending futures at each turn would cost O(tables) per turn).
        work: dict[Future[object], tuple[str, _TableJob]] = {}
        finished: queue.SimpleQueue[Future[object]] = queue.SimpleQueue()

        def submit(kind: str, job: _TableJob, fn: Callable[..., Any], *args: object) -> None:
            fut = pool.submit(fn, *args)
            work[fut] = (kind, job)
            fut.add_done_callback(finished.put)

        try:
            for job in sorted(jobs, key=lambda j: -j.info.estimated_rows):  # biggest first: shortest wall time
                submit("plan", job, self.initial_ranges, job)
            while work:
                try:
                    fut = finished.get(timeout=1.0)  # (with a timeout: an interrupt is seen within a second)
                except queue.Empty:
                    continue
                kind, job = work.pop(fut)
                try:
                    value = fut.result()
                except Exception as exc:  # planning a table, or hashing one of its ranges
                    job.result.match = False
                    job.result.error = job.result.error or _one_line(exc)
                    value = None
                if kind == "plan":
                    if value is None:
                        self._show(job)
                        self._finish(report, job)
                    elif isinstance(value, _Pages):
                        job.pending = len(value.source) + len(value.target)
                        for side, parts in (("source", value.source), ("target", value.target)):
                            for pages in parts:
                                submit(side, job, self._page_part, job, side, pages)
                    else:
                        job.pending = len(value)  # type: ignore[arg-type]
                        for rng in value:  # type: ignore[attr-defined]
                            submit("range", job, self._check_range_of, job, rng)
                    continue
                if kind in ("source", "target"):
                    if isinstance(value, Fingerprint):
                        job.sums[kind] = job.sums[kind] + value if kind in job.sums else value
                        if kind == "source":
                            self.reporter.on_progress(job.info.display, value.count)
                    job.pending -= 1
                    if job.pending:
                        continue
                    fs, ft = job.sums.get("source"), job.sums.get("target")
                    if job.result.error or fs is None or ft is None:
                        job.result.match = False
                    elif fs.same(ft):
                        job.result = _RangeResult(fs.count, ft.count)
                    else:
                        job.pending = 1  # narrowed by key like a differing range (the whole table)
                        submit("range", job, self._narrow_whole, job, fs, ft)
                        continue
                    source_rows += job.result.source_rows
                    self._finish(report, job)
                    continue
                part = value if isinstance(value, _RangeResult) else _RangeResult(match=False, error="no result")
                r = job.result
                r.source_rows += part.source_rows
                r.target_rows += part.target_rows
                r.match = r.match and part.match
                r.ranges.extend(part.ranges)  # each part keeps at most RANGES_REPORTED and KEYS_REPORTED:
                r.keys.extend(part.keys)  # sorted by key and cut when the table is finished
                r.key_count += part.key_count
                r.counted_all = r.counted_all and part.counted_all
                r.error = r.error or part.error
                r.only_source, r.only_target = part.only_source, part.only_target  # keyless: one range
                r.source_ctids, r.target_ctids = part.source_ctids, part.target_ctids
                r.keyless_note = part.keyless_note
                r.refreshed_rows, r.view_note = part.refreshed_rows, part.view_note  # a materialized view: one range
                if not job.sums:  # (hashed in page ranges: its progress was shown as they finished)
                    self.reporter.on_progress(job.info.display, part.source_rows)
                job.pending -= 1
                if job.pending == 0:
                    source_rows += r.source_rows
                    self._finish(report, job)
        except BaseException:
            # Ctrl-C/SIGTERM: drop queued work; the caller cancels running queries by closing the sessions.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        report.phases.append(
            PhaseResult(
                "data",
                time.monotonic() - t0,
                self.jobs,
                items=len(jobs),
                rows=source_rows,
                note=f"count + {self.algorithm} sums per table/range, server-side",
            )
        )
        # Tables finish in any order; a report lists them by name (two runs on one state read alike).
        report.diffs[first:] = sorted(report.diffs[first:], key=lambda d: (d.kind, d.name))
        report.totals["tables"] = len(jobs)
        report.totals["rows"] = source_rows

    def _show(self, job: _TableJob) -> None:
        """Start the table's progress task once: when its work starts, not when it is queued."""
        with self._shown_lock:
            if job.shown:
                return
            job.shown = True
        self.reporter.on_start(job.info.display, total=job.info.estimated_rows or None, unit="rows")

    def _check_range_of(self, job: _TableJob, rng: KeyRange) -> _RangeResult:
        self._show(job)
        return self.check_range(job.hasher, rng)

    def _finish(self, report: Report, job: _TableJob) -> None:
        r, info = job.result, job.info
        stale: Diff | None = None
        parts: list[str] = []
        data: dict[str, object] = {}
        if r.error:
            outcome = Outcome.ERROR
            parts.append(r.error)
        elif r.match and r.refreshed_rows is not None:
            outcome = Outcome.MATCH
            parts.append(f"{r.refreshed_rows} rows, as its query gives on the source now (refreshed on the target)")
            # Information, never a failure: the target holds what the view would show after a refresh.
            stale = Diff(info.kind, info.display, Outcome.DIFFER,
                         f"refreshed on the target; the source's stored contents were stale:"
                         f" {counted(r.source_rows, 'row')} stored on the source, {counted(r.refreshed_rows, 'row')}"
                         " on the target, as its query gives on the source now", info_only=True)
        elif r.match:
            outcome = Outcome.MATCH
            parts.append(f"{r.source_rows} rows")
        else:
            outcome = Outcome.DIFFER
            parts.append(f"rows {r.source_rows} on source, {r.target_rows} on target")
            data = {"source_rows": r.source_rows, "target_rows": r.target_rows}
            if r.target_rows == 0 and r.source_rows:
                parts.append("the target table is empty")
            hasher = job.hasher
            names = [c.name for c in hasher.key]
            if r.keys:
                r.keys.sort(key=lambda k: hasher.key_order(k[0]))
                first = r.keys[:KEYS_REPORTED]
                shown = [f"{hasher.describe_key(k)} ({what})" for k, what in first]
                # Narrowing that stopped early counted only some keys; every missing or extra row is one.
                total = r.key_count if r.counted_all else max(r.key_count, abs(r.source_rows - r.target_rows))
                at_least = "" if r.counted_all else "at least "
                more = f" and {at_least}{total - len(shown)} more" if total > len(shown) else ""
                parts.append("differing keys: " + "; ".join(shown) + more)
                data["keys"] = [_key_data(names, k, what) for k, what in first]
                data["keys_total"] = total
                data["keys_total_is_exact"] = r.counted_all
            if r.ranges:
                merged = hasher.merge_ranges(r.ranges)
                described = "; ".join(rng.describe(hasher.key) for rng in merged[:RANGES_REPORTED])
                left = f" and {len(merged) - RANGES_REPORTED} more ranges" if len(merged) > RANGES_REPORTED else ""
                parts.append(f"differing ranges: {described}{left}")
                data["ranges"] = [
                    {"from": None if g.lo is None else dict(zip(names, g.lo, strict=True)),
                     "to": None if g.hi is None else dict(zip(names, g.hi, strict=True))}  # to: exclusive
                    for g in merged[:RANGES_REPORTED]]
            if not job.hasher.key:
                parts.append(f"contents differ ({job.no_key})")
                if r.keyless_note:
                    parts.append(r.keyless_note)
                elif r.source_ctids is not None and r.target_ctids is not None:
                    parts.append(_keyless_rows(r))
                    data.update(only_on_source=r.only_source, only_on_target=r.only_target,
                                source_ctids=r.source_ctids, target_ctids=r.target_ctids)
        if r.view_note and not r.match:
            parts.append(r.view_note)
        if job.note:
            parts.append(job.note)
        detail = "; ".join(parts)
        report.diffs.append(Diff(info.kind, info.display, outcome, detail,
                                 data=data if outcome is Outcome.DIFFER else None))
        if stale is not None:
            report.diffs.append(stale)
        self.reporter.on_done(info.display, ok=outcome is Outcome.MATCH, message="" if r.match else detail)
        log.info("%s %s: %s — %s", info.kind, info.display, outcome.value, detail)

    # ---- sequences --------------------------------------------------------------------------

    def run_sequences(self, report: Report) -> None:
        t0 = time.monotonic()
        with self.s.src.transaction():
            src = dict(_sequences(self.s.src))
        with self.s.tgt.transaction():
            tgt = dict(_sequences(self.s.tgt))
        self.reporter.note(f"sequences: comparing {len(src)} sequence values")
        for name, meta in sorted(src.items()):
            if name not in tgt:
                report.diffs.append(Diff("sequence value", name, Outcome.MISSING_ON_TARGET))
                continue
            try:
                report.diffs.append(self._compare_sequence(name, meta, tgt[name], report.warnings))
            except Exception as exc:
                report.diffs.append(Diff("sequence value", name, Outcome.ERROR, _one_line(exc)))
        for name in sorted(set(tgt) - set(src)):
            report.diffs.append(Diff("sequence value", name, Outcome.EXTRA_ON_TARGET))
        report.phases.append(PhaseResult("sequences", time.monotonic() - t0, 1, items=len(src)))
        report.totals["sequences"] = len(src)

    def _compare_sequence(self, name: str, smeta: _SeqMeta, tmeta: _SeqMeta, warnings: list[str]) -> Diff:
        """The sequence's state on both sides; a target sequence behind its integer column's max()
        differs, unless the source's is behind its own rows too (then a warning: the copy is exact)."""
        with self.s.src.transaction():
            s_last, s_called = _seq_state(self.s.src, smeta.relation)
        with self.s.tgt.transaction():
            t_last, t_called = _seq_state(self.s.tgt, tmeta.relation)
        if (s_last, s_called) != (t_last, t_called):
            detail = (f"last_value {s_last} (is_called {str(s_called).lower()}) on source,"
                      f" {t_last} (is_called {str(t_called).lower()}) on target")
            # The value each side would hand out next: a target behind the source repeats values the
            # source's rows already hold (duplicate keys at the first insert after cutover).
            s_next = s_last + smeta.increment if s_called else s_last
            t_next = t_last + tmeta.increment if t_called else t_last
            if (t_next < s_next) if smeta.increment > 0 else (t_next > s_next):
                detail += (f": the target is behind (inserts may collide with copied rows);"
                           f" to fix: SELECT setval({psycopg.sql.Literal(name).as_string(None)}, {s_last},"
                           f" {str(s_called).lower()})")
            return Diff("sequence value", name, Outcome.DIFFER, detail)
        # Owned by an integer column (a serial or identity): a sequence behind its column's max()
        # hands out values its rows already hold. Not for other columns: a text column fed by
        # 'T-' || nextval(...) has no max() to compare a number with.
        if tmeta.owner_table and tmeta.owner_column and tmeta.owner_integer:
            current = t_last if t_called else t_last - tmeta.increment
            extreme = _behind(self.s.tgt, tmeta, current)
            if extreme is not None:
                agg = "max" if tmeta.increment > 0 else "min"
                # The target's state is the source's (compared above): if the source's sequence is
                # behind its own rows too (rows inserted with explicit ids), the copy is exact. Not a
                # difference, but the first insert after cutover may collide: a warning.
                s_extreme = (_behind(self.s.src, smeta, current)
                             if smeta.owner_table and smeta.owner_column and smeta.owner_integer else None)
                if s_extreme is None:
                    return Diff("sequence value", name, Outcome.DIFFER,
                                f"at {current} on target, behind {agg}({tmeta.owner_column}) = {extreme}")
                fix = f"SELECT setval({psycopg.sql.Literal(name).as_string(None)}, {extreme})"
                behind = f"behind {agg}({smeta.owner_column}) = {s_extreme} on the source already"
                warnings.append(
                    f"sequence {name} is {behind} (its next value is {current + tmeta.increment}: rows were inserted"
                    " with explicit values), and so on the target: the copy is exact, but inserts there may collide"
                    f" with existing rows; to fix: {fix}")
                return Diff("sequence value", name, Outcome.MATCH, f"last_value {s_last}; {behind} (see the warnings)")
        return Diff("sequence value", name, Outcome.MATCH, f"last_value {s_last}")

    # ---- large objects ----------------------------------------------------------------------

    def run_large_objects(self, report: Report) -> None:
        t0 = time.monotonic()
        self.reporter.note("large objects: comparing count, md5 and comment per object")
        count = 0
        bad: list[Diff] = []
        total_bad = 0
        try:
            with self.s.src.transaction(), self.s.tgt.transaction():
                for oid, s_hash, t_hash in _merge(_lo_hashes(self.s.src, "src"), _lo_hashes(self.s.tgt, "tgt")):
                    count += s_hash is not None
                    if s_hash == t_hash:
                        continue
                    total_bad += 1
                    if len(bad) >= LARGE_OBJECTS_REPORTED:
                        continue
                    if t_hash is None:
                        bad.append(Diff("large object", str(oid), Outcome.MISSING_ON_TARGET))
                    elif s_hash is None:
                        bad.append(Diff("large object", str(oid), Outcome.EXTRA_ON_TARGET))
                    else:
                        what = "md5 differs" if s_hash[0] != t_hash[0] else "comment differs"
                        bad.append(Diff("large object", str(oid), Outcome.DIFFER, what))
        except Exception as exc:
            report.diffs.append(Diff("large objects", "all", Outcome.ERROR, _one_line(exc)))
        else:
            report.diffs.extend(bad)
            if total_bad > len(bad):
                report.diffs.append(
                    Diff("large objects", "more", Outcome.DIFFER, f"{total_bad - len(bad)} more large objects differ")
                )
            if count or total_bad:
                outcome = Outcome.MATCH if not total_bad else Outcome.DIFFER
                report.diffs.append(
                    Diff("large objects", "all", outcome, f"{count} on source, {total_bad} not identical on target")
                )
        report.phases.append(PhaseResult("large objects", time.monotonic() - t0, 1, items=count))
        report.totals["large_objects"] = count


@dataclass(frozen=True)
class _SeqMeta:
    relation: str
    increment: int
    owner_table: str | None
    owner_column: str | None
    owner_integer: bool = False  # the owning column is int2/int4/int8 (or a domain over one)


_SEQUENCES_SQL = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), s.seqincrement, o.refobjid::regclass::text, o.attname,
       coalesce(nullif(ot.typbasetype, 0), ot.oid) IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
LEFT JOIN LATERAL (  -- the owning column (OWNED BY, serial, identity), with its type (or a domain's base type)
    SELECT d.refobjid, a.attname, a.atttypid FROM pg_depend d
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
      AND d.deptype IN ('a', 'i') LIMIT 1) o ON true
LEFT JOIN pg_type ot ON ot.oid = o.atttypid
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND {copied}
""".replace("{copied}", COPIED)  # not extension members, but for extensions' configuration sequences


def _sequences(conn: psycopg.Connection) -> Iterator[tuple[str, _SeqMeta]]:
    for name, inc, table, column, integer in conn.execute(_SEQUENCES_SQL).fetchall():
        yield name, _SeqMeta(name, int(inc), table, column, bool(integer))


def _behind(conn: psycopg.Connection, meta: _SeqMeta, current: int) -> int | None:
    """The max() (min() for a descending sequence) of the sequence's integer owning column when the
    sequence's current value is behind it, else None. Read-only."""
    assert meta.owner_table and meta.owner_column
    agg = "max" if meta.increment > 0 else "min"
    with conn.transaction():
        row = conn.execute(f"SELECT {agg}({quote_ident(meta.owner_column)}) FROM {meta.owner_table}").fetchone()
    if row is None or row[0] is None:
        return None
    extreme = int(row[0])
    return extreme if (current < extreme if meta.increment > 0 else current > extreme) else None


def _seq_state(conn: psycopg.Connection, relation: str) -> tuple[int, bool]:
    row = conn.execute(f"SELECT last_value, is_called FROM {relation}").fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


_LO = tuple[str, str | None]  # a large object's digest, and its comment's md5 (None: no comment)


def _lo_hashes(conn: psycopg.Connection, name: str) -> Iterator[tuple[int, _LO]]:
    """(oid, (digest, comment md5)) of every large object in oid order, streamed through a server-side
    cursor: the md5 of one up to LO_WHOLE_MAX bytes, else of its parts' md5s (_long_lo_digest)."""
    with conn.cursor(name=f"verify_lo_{name}") as cur:
        cur.itersize = 2000
        # One read of each object's head (a byte more than LO_WHOLE_MAX tells a longer one), computed
        # per row as the index scan returns them: never sorted together.
        cur.execute("SELECT oid::bigint, (SELECT md5(h) || CASE WHEN length(h) > %s THEN ' long' ELSE '' END"
                    " FROM (SELECT lo_get(oid, 0, %s) AS h) x), md5(obj_description(oid, 'pg_largeobject'))"
                    " FROM pg_largeobject_metadata ORDER BY oid",
                    (LO_WHOLE_MAX, LO_WHOLE_MAX + 1))
        for oid, digest, comment in cur:
            data = _long_lo_digest(conn, int(oid)) if digest.endswith(" long") else str(digest)
            yield int(oid), (data, comment)


def _long_lo_digest(conn: psycopg.Connection, oid: int) -> str:
    """The md5 of the md5s of a large object's LO_HASH_CHUNK parts, each hashed by the server (a
    statement per part, between the cursor's fetches)."""
    row = conn.execute(
        "SELECT md5(string_agg(d, '' ORDER BY k)) FROM (SELECT k, md5(lo_get(%s, k * %s, %s)) AS d"
        " FROM generate_series(0::bigint, %s) AS k OFFSET 0) p",
        (oid, LO_HASH_CHUNK, LO_HASH_CHUNK, _lo_size(conn, oid) // LO_HASH_CHUNK)).fetchone()
    assert row is not None
    return f"parts {row[0]}"


def _lo_size(conn: psycopg.Connection, oid: int) -> int:
    """A large object's length (its descriptor opened for reading, then closed: fine read-only)."""
    fd = conn.execute("SELECT lo_open(%s, 262144)", (oid,)).fetchone()[0]  # type: ignore[index]  # INV_READ
    size = conn.execute("SELECT lo_lseek64(%s, 0, 2)", (fd,)).fetchone()[0]  # type: ignore[index]  # SEEK_END
    conn.execute("SELECT lo_close(%s)", (fd,))
    return int(size)


def _merge(a: Iterator[tuple[int, _LO]], b: Iterator[tuple[int, _LO]]) -> Iterator[tuple[int, _LO | None, _LO | None]]:
    """Full outer join of two oid-ordered streams."""
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            assert x is not None
            yield x[0], x[1], None
            x = next(a, None)
        elif x is None or y[0] < x[0]:
            yield y[0], None, y[1]
            y = next(b, None)
        else:
            yield x[0], x[1], y[1]
            x, y = next(a, None), next(b, None)


def _guarded_parts(hasher: Hasher, conn: psycopg.Connection, rng: KeyRange, subs: list[KeyRange]
                   ) -> list[Fingerprint]:
    with conn.transaction():  # a savepoint, as below
        return hasher.fingerprints_by_range(conn, rng, subs)


def _guarded_fingerprint(hasher: Hasher, conn: psycopg.Connection, rng: KeyRange, pages: str | None = None
                         ) -> Fingerprint:
    # A savepoint: a failed query must not abort the snapshot-holding transaction.
    with conn.transaction():
        return hasher.fingerprint(conn, rng, pages)


def verify_databases(
    cfg: DbJobConfig,
    reporter: Reporter,
    *,
    split_rows: int = SPLIT_ROWS,
    chunk_rows: int = CHUNK_ROWS,
    key_list_max: int = KEY_LIST_MAX,
    inside_copy: bool = False,
) -> Report:
    """Compare schema, table contents, sequences and large objects of cfg.source and cfg.target.

    Read-only on both sides. Raises ConnectionFailed when either side cannot be reached, and
    PreflightError while a db copy other than the caller (`inside_copy`) holds the target's copy
    lock; any other failure on one object becomes an Outcome.ERROR diff and the rest is compared.
    """
    report = Report(kind="db-verify", source=cfg.source.display(), target=cfg.target.display())
    sessions = _Sessions(cfg)
    if not inside_copy:
        try:
            holder = resume.lock_holder(sessions.tgt)
        except BaseException:
            sessions.close()
            raise
        if holder is not None:
            sessions.close()
            raise PreflightError(f"a db copy is writing into the target (session {holder}): nothing was compared",
                                 hint="verify when it has finished (db copy verifies at its end unless --no-verify)")
    verifier = _Verifier(
        cfg, reporter, sessions, split_rows=split_rows, chunk_rows=chunk_rows, key_list_max=key_list_max
    )
    try:
        t0 = time.monotonic()
        reporter.note("schema: comparing catalog inventories")
        try:
            with sessions.src.transaction():
                src_items = catalog.inventory(sessions.src)
            with sessions.tgt.transaction():
                tgt_items = catalog.inventory(sessions.tgt)
            schema_diffs = catalog.compare(src_items, tgt_items)
        except psycopg.Error as exc:
            schema_diffs = [Diff("schema", "inventory", Outcome.ERROR, _one_line(exc))]
            src_items = {}
        report.diffs.extend(schema_diffs)
        report.phases.append(PhaseResult("schema", time.monotonic() - t0, 1, items=len(src_items)))
        report.totals["schema_objects"] = len(src_items)
        verifier.run_data(report)
        verifier.run_sequences(report)
        verifier.run_large_objects(report)
    finally:
        verifier.close()
        sessions.close()
    report.totals["differences"] = len(report.differences())
    report.finish()
    report.settle()
    log.info("db verify: %s (%s)", report.status.value,
             ", ".join(f"{n} {outcome}" for outcome, n in report.outcome_counts().items()))
    return report


def _keep_lowest(heap: list[tuple[int, int]], ctid: str) -> None:
    """Keep the KEYS_REPORTED lowest ctids seen, in `heap` (a max-heap: negated (block, offset))."""
    block, offset = ctid.strip("()").split(",")
    item = (-int(block), -int(offset))
    if len(heap) < KEYS_REPORTED:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def _keyless_rows(r: _RangeResult) -> str:
    """'1 row only on the source (ctid (0,5)); 2 rows only on the target (ctid (3,1), (3,2))'."""
    parts = []
    for n, ctids, side in ((r.only_source, r.source_ctids or [], "source"),
                           (r.only_target, r.target_ctids or [], "target")):
        if n:
            more = f" and {n - len(ctids)} more" if n > len(ctids) else ""
            parts.append(f"{counted(n, 'row')} only on the {side} (ctid {', '.join(ctids)}{more})")
    if not parts:  # equal multisets of rows, yet the fingerprints differ: cannot happen short of a hash collision
        return "no row found only on one side"
    changed = "; a changed row counts once on each side" if r.only_source and r.only_target else ""
    return "; ".join(parts) + changed
