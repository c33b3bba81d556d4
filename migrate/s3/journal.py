"""The copy's journal in the target bucket: what a run verified, kept while the copy is incomplete.

The local manifest (--state-dir) is lost when a rerun is a new ECS task with a fresh disk. A rerun
then matches only objects whose target ETag equals the source's, and copies again every object whose
ETag differs by design (all of them in an SSE-KMS bucket; single-part sources uploaded in parts). So
each run appends what it verified to small gzip'd JSON-lines objects under
`<target prefix>_paas-migrate/<manifest id>/`, flushed in the background (every FLUSH_SECONDS or
FLUSH_ENTRIES objects, and when the run ends), and a run reads them back before planning: an object
still listed with the recorded size and ETag on the source, and the recorded ETag and size on the
target, is done. The folder is deleted when a copy ends with every object done; every listing of
plan, copy and verify leaves it out (inventory.RESERVED).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from migrate.config import S3CopyConfig
from migrate.s3 import clients
from migrate.s3.inventory import RESERVED

log = logging.getLogger(__name__)

FLUSH_SECONDS = 30.0
FLUSH_ENTRIES = 10_000
MAX_BUFFERED = 30_000  # entries waiting for a slow flush before add() waits (bounded memory)
CLOSE_SECONDS = 20.0  # the last flush at the end of a run (an ECS stop leaves 30 s before SIGKILL)


def folder(cfg: S3CopyConfig, manifest_id: str) -> str:
    """The journal's folder (a key prefix in the target bucket) for one job or shard."""
    return f"{cfg.target.location.prefix}{RESERVED}{manifest_id}/"


@dataclass(slots=True)
class Entry:
    """One object a run verified: the source's listed size and ETag, how it was checked, and what the
    target held then (its ETag and size)."""

    key: str
    size: int
    etag: str
    status: str  # verified | size-only
    evidence: str | None
    target_etag: str
    target_size: int
    target_check: str | None = None

    def line(self) -> str:
        return json.dumps({"key": self.key, "size": self.size, "etag": self.etag, "status": self.status,
                           "evidence": self.evidence, "target_etag": self.target_etag,
                           "target_size": self.target_size, "target_check": self.target_check},
                          ensure_ascii=False, separators=(",", ":"))

    def row(self) -> tuple[Any, ...]:
        return (self.key, self.size, self.etag, self.status, self.evidence, self.target_etag, self.target_size,
                self.target_check)


def _entries(data: bytes) -> Iterator[Entry]:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        for raw in f:
            d = json.loads(raw)
            yield Entry(str(d["key"]), int(d["size"]), str(d["etag"]), str(d["status"]), d.get("evidence"),
                        str(d["target_etag"]), int(d["target_size"]), d.get("target_check"))


def journal_keys(client: Any, bucket: str, prefix: str) -> Iterator[str]:
    """The keys under `prefix` in key order (ListObjectsV2 pages). Read-only."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()) or ():
            yield item["Key"]


def any_journal(client: Any, cfg: S3CopyConfig) -> str | None:
    """The first journal folder found under the target prefix (any job or shard), or None. Read-only;
    a refusal to list counts as none."""
    prefix = cfg.target.location.prefix + RESERVED
    try:
        resp = client.list_objects_v2(Bucket=cfg.target.location.bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:
        log.debug("could not look for a copy journal under %s: %s", prefix, clients.error_code(exc))
        return None
    for item in resp.get("Contents", ()) or ():
        rest = item["Key"][len(prefix):]
        return prefix + rest.split("/", 1)[0] + "/"
    return None


def read(client: Any, cfg: S3CopyConfig, manifest_id: str, batch: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
    """The journal's entries as manifest rows (Entry.row), in batches, oldest object first (so a later
    entry for a key replaces an earlier one). Read-only. A journal object that cannot be read or parsed
    is skipped with a warning: its objects are then planned as usual (copied again if their ETags differ)."""
    bucket, prefix = cfg.target.location.bucket, folder(cfg, manifest_id)
    rows: list[tuple[Any, ...]] = []
    try:
        keys = list(journal_keys(client, bucket, prefix))  # a few per 10,000 objects or 30 s of a run
    except Exception as exc:
        log.warning("could not list the copy journal s3://%s/%s (%s): objects an earlier run verified may be "
                    "copied again", bucket, prefix, clients.error_code(exc))
        return
    for key in keys:
        try:
            data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            for entry in _entries(data):
                rows.append(entry.row())
                if len(rows) >= batch:
                    yield rows
                    rows = []
        except Exception as exc:
            log.warning("skipped the copy journal object s3://%s/%s (%s)", bucket, key,
                        clients.error_code(exc) if hasattr(exc, "response") else exc)
    if rows:
        yield rows


def delete(client: Any, cfg: S3CopyConfig, manifest_id: str) -> tuple[int, str | None]:
    """Delete the journal's objects; (deleted, problem). A refusal (no s3:DeleteObject) is returned
    as the problem, never raised."""
    bucket, prefix = cfg.target.location.bucket, folder(cfg, manifest_id)
    deleted = 0
    try:
        keys = list(journal_keys(client, bucket, prefix))
        for i in range(0, len(keys), 1000):
            resp = client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            errors = resp.get("Errors") or []
            deleted += len(keys[i:i + 1000]) - len(errors)
            if errors:
                return deleted, str(errors[0].get("Code") or "refused")
    except Exception as exc:
        return deleted, clients.error_code(exc)
    return deleted, None


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
        self.seq = 0
        self.written = 0  # entries
        self.objects = 0  # journal objects
        self.failed = False
        self._buffer: list[str] = []
        self._cv = threading.Condition()
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
                lines, self._buffer = self._buffer, []
                self._flushing = True
                self._cv.notify_all()
            try:
                self._put(lines)
            finally:
                with self._cv:
                    self._flushing = False
                    self._cv.notify_all()
            last = time.monotonic()

    def _put(self, lines: list[str]) -> None:
        if not lines or self.failed:
            return
        self.seq += 1
        # In key order = run start time, then this run's sequence: read() applies later entries over
        # earlier ones. The run id keeps two runs started in the same millisecond apart.
        key = f"{self.prefix}{self.started_ms:013d}-{self.seq:06d}-{self.run_id}.jsonl.gz"
        body = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/gzip", **self.sse)
        except Exception as exc:
            self.failed = True
            log.warning("could not write the copy journal to s3://%s/%s (%s): a rerun in a fresh task may copy "
                        "objects again; give the target credential s3:PutObject there, or --no-target-journal",
                        self.bucket, self.prefix, clients.error_code(exc))
            return
        self.written += len(lines)
        self.objects += 1

    def close(self, *, flush: bool = True) -> None:
        """Stop the background thread; with `flush`, write what is buffered (one last object)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        deadline = time.monotonic() + CLOSE_SECONDS
        self._thread.join(timeout=CLOSE_SECONDS)
        with self._cv:
            while self._flushing and time.monotonic() < deadline:  # a flush in progress ends first
                self._cv.wait(0.2)
            lines, self._buffer = self._buffer, []
        if flush:
            self._put(lines)
