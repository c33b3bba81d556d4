"""The copy's journal in the target bucket: what each run verified, kept until the copy is verified.

The local manifest (--state-dir) is lost when a rerun is a new ECS task with a fresh disk. A rerun
then matches only objects whose target ETag equals the source's, and copies again every object whose
ETag differs by design (all of them in an SSE-KMS bucket; single-part sources uploaded in parts). So
each run appends what it verified to small gzip'd JSON-lines objects under
`<target prefix>_paas-migrate/<manifest id>/`, flushed in the background (every FLUSH_SECONDS or
FLUSH_ENTRIES objects, and when the run ends), and a run reads back the folders of its job (the
unsharded one and every shard's) before planning: an object still listed with the recorded size and
ETag on the source, and the recorded ETag and size on the target, is done. A run appends only what it
copied and verified itself, so the journal grows with the copies, not with the reruns.

An entry also records the source's LastModified as listed: metadata changed in place on the source
(CopyObject onto itself) keeps the size and ETag, not that, and such an object is then planned as usual
(copied again). Entries written without it (older versions) never match.

A completed copy keeps its journal (the final top-up of a cutover, in a new task, needs it); `s3 verify
--drop-journal` and a successful `run --drop-journal` delete it (drop()) once the copy is verified. Every listing of
plan, copy and verify leaves the journal folders out, on both sides (inventory.journal_folder_of); any
other key under `_paas-migrate/` is an ordinary object.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from migrate.config import S3CopyConfig
from migrate.s3 import clients
from migrate.s3.inventory import RESERVED, journal_folder_of
from migrate.s3.manifest import job_name
from migrate.s3.shard import shard_of

log = logging.getLogger(__name__)

FLUSH_SECONDS = 30.0
FLUSH_ENTRIES = 10_000
MAX_BUFFERED = 30_000  # entries waiting for a slow flush before add() waits (bounded memory)
CLOSE_SECONDS = 20.0  # the last flush at the end of a run (an ECS stop leaves 30 s before SIGKILL)


_SHARD_SUFFIX = re.compile(r"(-shard[0-9]+of[0-9]+)?/")


def folder(cfg: S3CopyConfig, manifest_id: str) -> str:
    """The journal's folder (a key prefix in the target bucket) for one job or shard."""
    return f"{cfg.target.location.prefix}{RESERVED}{manifest_id}/"


def url(cfg: S3CopyConfig, key_prefix: str) -> str:
    return f"s3://{cfg.target.location.bucket}/{key_prefix}"


def _job_keys(client: Any, cfg: S3CopyConfig, job: str | None = None,
              only_shard: bool = False) -> dict[str, list[str]]:
    """The journal objects of one source → target job, by folder: the folders named after the job
    (manifest.job_name) alone or with a shard suffix, as `s3 copy` and `ecs run --shards` name them.
    With `only_shard` and a sharded cfg, only that shard's folder. Read-only; raises what S3 raises."""
    job = job or job_name(cfg)
    base = cfg.target.location.prefix + RESERVED + job
    wanted = f"-shard{cfg.shard[0]}of{cfg.shard[1]}/" if only_shard and cfg.shard else None
    out: dict[str, list[str]] = {}
    for key in journal_keys(client, cfg.target.location.bucket, base):
        rest = key[len(base):]
        m = _SHARD_SUFFIX.match(rest)
        if not m or (wanted is not None and m.group(0) != wanted):
            continue  # another job whose name starts with this one's, or another shard
        out.setdefault(base + m.group(0), []).append(key)
    return out


def job_folders(client: Any, cfg: S3CopyConfig) -> list[str]:
    """The folders (key prefixes) of this job's journal in the target; a refusal to list counts as none."""
    try:
        return sorted(_job_keys(client, cfg))
    except Exception as exc:
        log.debug("could not list the copy journal of %s: %s", cfg.target.location, clients.error_code(exc))
        return []


@dataclass(slots=True)
class Entry:
    """One object a run verified: the source's listed size, ETag and LastModified, how it was checked,
    and what the target held then (its ETag and size)."""

    key: str
    size: int
    etag: str
    status: str  # verified | size-only
    evidence: str | None
    target_etag: str
    target_size: int
    target_check: str | None = None
    # The source's LastModified as listed (inventory.ObjectInfo.last_modified): metadata changed in place
    # keeps the ETag but not this. Entries written by older versions have none, and never match
    # (manifest._reconcile): those objects are copied again.
    last_modified: str | None = None

    def line(self) -> str:
        return json.dumps({"key": self.key, "size": self.size, "etag": self.etag, "status": self.status,
                           "evidence": self.evidence, "target_etag": self.target_etag,
                           "target_size": self.target_size, "target_check": self.target_check,
                           "last_modified": self.last_modified},
                          ensure_ascii=False, separators=(",", ":"))

    def row(self) -> tuple[Any, ...]:
        return (self.key, self.size, self.etag, self.status, self.evidence, self.target_etag, self.target_size,
                self.target_check, self.last_modified)


def _entries(data: bytes) -> Iterator[Entry]:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        for raw in f:
            d = json.loads(raw)
            yield Entry(str(d["key"]), int(d["size"]), str(d["etag"]), str(d["status"]), d.get("evidence"),
                        str(d["target_etag"]), int(d["target_size"]), d.get("target_check"),
                        d.get("last_modified"))


def journal_keys(client: Any, bucket: str, prefix: str) -> Iterator[str]:
    """The keys under `prefix` in key order (ListObjectsV2 pages). Read-only."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()) or ():
            yield item["Key"]


def any_journal(client: Any, cfg: S3CopyConfig) -> str | None:
    """The first journal folder found under the target prefix (any job or shard), or None: the folders
    under `_paas-migrate/` named as journals are (inventory.journal_folder_of), not any other object
    there. Read-only; a refusal to list counts as none."""
    base = cfg.target.location.prefix
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=cfg.target.location.bucket, Prefix=base + RESERVED, Delimiter="/")
        for page in pages:
            for item in page.get("CommonPrefixes", ()) or ():
                if journal_folder_of(item["Prefix"][len(base):]) is not None:
                    return str(item["Prefix"])
    except Exception as exc:
        log.debug("could not look for a copy journal under %s: %s", base + RESERVED, clients.error_code(exc))
    return None


def read(client: Any, cfg: S3CopyConfig, job: str | None = None,
         batch: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
    """The entries of this job's journal (every folder of it: unsharded and each shard's, so a run
    sharded otherwise than an earlier one still finds its objects; a sharded run keeps only the keys
    of its shard) as manifest rows (Entry.row), in batches, oldest object first (by the run's start
    time and its sequence, across folders: a later entry for a key replaces an earlier one).
    Read-only. A journal object that cannot be read or parsed is skipped with a warning: its objects
    are then planned as usual (copied again if their ETags differ)."""
    bucket = cfg.target.location.bucket
    rows: list[tuple[Any, ...]] = []
    try:
        by_folder = _job_keys(client, cfg, job)  # a few objects per 10,000 copied or 30 s of a run
    except Exception as exc:
        log.warning("could not list the copy journal under s3://%s/%s (%s): objects an earlier run verified may "
                    "be copied again", bucket, cfg.target.location.prefix + RESERVED, clients.error_code(exc))
        return
    keys = sorted((k for ks in by_folder.values() for k in ks), key=lambda k: (k.rsplit("/", 1)[-1], k))
    for key in keys:
        try:
            data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            for entry in _entries(data):
                if cfg.shard and shard_of(entry.key, cfg.shard[1]) != cfg.shard[0]:
                    continue
                rows.append(entry.row())
                if len(rows) >= batch:
                    yield rows
                    rows = []
        except Exception as exc:
            log.warning("skipped the copy journal object s3://%s/%s (%s)", bucket, key,
                        clients.error_code(exc) if hasattr(exc, "response") else exc)
    if rows:
        yield rows


@dataclass(slots=True)
class Dropped:
    """What drop() did: the folders it found, how many objects it deleted, and why it stopped (None: all)."""

    folders: list[str]
    deleted: int = 0
    problem: str | None = None


def drop(client: Any, cfg: S3CopyConfig, job: str | None = None) -> Dropped:
    """Delete this job's journal: every folder of the source → target job, or with a sharded cfg only
    that shard's folder (a shard's verification proves only its keys). Other jobs' journals under the
    same target prefix are left alone. A refusal (no s3:DeleteObject) is returned as the problem,
    never raised."""
    bucket = cfg.target.location.bucket
    result = Dropped([])
    try:
        by_folder = _job_keys(client, cfg, job, only_shard=True)
        result.folders = sorted(by_folder)
        keys = [k for f in result.folders for k in by_folder[f]]
        for i in range(0, len(keys), 1000):
            resp = client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            errors = resp.get("Errors") or []
            result.deleted += len(keys[i:i + 1000]) - len(errors)
            if errors:
                result.problem = str(errors[0].get("Code") or "refused")
                return result
    except Exception as exc:
        result.problem = clients.error_code(exc)
    return result


class Writer:
    """Appends entries to the journal as new objects, from a background thread: add() only buffers
    (it waits only if MAX_BUFFERED entries are waiting for a flush that is slower than the copy). A
    refused or failed write is a warning; the copy goes on (a rerun then copies those objects again)."""

    def __init__(self, client: Any, cfg: S3CopyConfig, manifest_id: str) -> None:
        self.client = client
        self.bucket = cfg.target.location.bucket
        self.prefix = folder(cfg, manifest_id)
        # encrypted as the copy's objects are (a bucket policy may refuse uploads without the header)
        self.sse: dict[str, str] = {}
        if cfg.sse:
            self.sse["ServerSideEncryption"] = cfg.sse
        if cfg.sse_kms_key_id:
            self.sse["SSEKMSKeyId"] = cfg.sse_kms_key_id
        self.run_id = uuid.uuid4().hex[:8]
        self.started_ms = time.time_ns() // 1_000_000
        self.seq = 0  # the last sequence number given to a batch (taken with the buffer, under _cv)
        self.written = 0  # entries
        self.objects = 0  # journal objects
        self.failed = False
        self._buffer: list[str] = []
        self._cv = threading.Condition()  # guards the buffer, the sequence, the counters and the flags
        self._closing = False
        self._flushing = False
        self._thread = threading.Thread(target=self._loop, name="s3-journal", daemon=True)
        self._thread.start()

    def add(self, entry: Entry) -> None:
        with self._cv:
            while len(self._buffer) >= MAX_BUFFERED and not self._closing and not self.failed:
                self._cv.wait(0.5)
            if self.failed:
                return
            self._buffer.append(entry.line())
            if len(self._buffer) >= FLUSH_ENTRIES:
                self._cv.notify_all()

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            with self._cv:
                while not self._closing and len(self._buffer) < FLUSH_ENTRIES and \
                        time.monotonic() - last < FLUSH_SECONDS:
                    self._cv.wait(min(1.0, max(0.01, FLUSH_SECONDS - (time.monotonic() - last))))
                if self._closing:
                    return
                lines, seq = self._take()
                self._flushing = True
                self._cv.notify_all()
            try:
                self._put(lines, seq)
            finally:
                with self._cv:
                    self._flushing = False
                    self._cv.notify_all()
            last = time.monotonic()

    def _take(self) -> tuple[list[str], int]:
        """(with _cv held) The buffered lines and their batch's sequence number. Taken together, so the
        numbers follow the order the entries were added in, also when close() writes its last batch
        while a slow background flush is still writing the one before (each has its own key)."""
        lines, self._buffer = self._buffer, []
        if not lines:
            return lines, 0
        self.seq += 1
        return lines, self.seq

    def _put(self, lines: list[str], seq: int) -> None:
        if not lines or self.failed:
            return
        # In key order = run start time, then this run's sequence: read() applies later entries over
        # earlier ones. The run id keeps two runs started in the same millisecond apart.
        key = f"{self.prefix}{self.started_ms:013d}-{seq:06d}-{self.run_id}.jsonl.gz"
        body = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/gzip", **self.sse)
        except Exception as exc:
            with self._cv:
                self.failed = True
            log.warning("could not write the copy journal to s3://%s/%s (%s): a rerun in a fresh task may copy "
                        "objects again; give the target credential s3:PutObject there, or --no-target-journal",
                        self.bucket, self.prefix, clients.error_code(exc))
            return
        with self._cv:
            self.written += len(lines)
            self.objects += 1

    def close(self, *, flush: bool = True) -> None:
        """Stop the background thread; with `flush`, write what is buffered (one last object). A
        background flush still writing after CLOSE_SECONDS goes on meanwhile: the last object has the
        next sequence number (its own key, read after that flush's)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        deadline = time.monotonic() + CLOSE_SECONDS
        self._thread.join(timeout=CLOSE_SECONDS)
        with self._cv:
            while self._flushing and time.monotonic() < deadline:  # a flush in progress ends first
                self._cv.wait(0.2)
            lines, seq = self._take()
        if flush:
            self._put(lines, seq)
