"""Listing one side of a copy: ListObjectsV2 pages streamed as ObjectInfo, never held in memory whole."""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from migrate.config import S3Location
from migrate.s3 import clients
from migrate.s3.checksums import strip_etag
from migrate.s3.shard import shard_of

log = logging.getLogger(__name__)

# The folder (under a side's prefix) holding the copy journals in the target (migrate.s3.journal).
RESERVED = "_paas-migrate/"
# A journal's own folder in it, named as journal.folder() names it: manifest.job_name()
# (`s3-<source bucket>-<16 hex digits>`), with `-shardIofN` for a shard. The keys in such a folder are the
# tool's own, never a source object to copy, a target object to compare, nor one extra on the target: every
# listing of plan, copy and verify leaves them out, on both sides (list_objects), and only them. Any other
# key under RESERVED is an ordinary object: copied, compared and verified as any other (a source object
# `_paas-migrate/notes.txt` was never copied, when the whole folder was left out).
JOURNAL_FOLDER = re.compile(r"_paas-migrate/s3-[^/]+-[0-9a-f]{16}(?:-shard[0-9]+of[0-9]+)?/")


def journal_folder_of(rel: str) -> str | None:
    """The copy journal folder (`_paas-migrate/<job>[-shardIofN]/`) holding `rel` (a key relative to a
    side's prefix), or None for any other key."""
    if not rel.startswith(RESERVED):
        return None
    m = JOURNAL_FOLDER.match(rel)
    return m.group(0) if m else None


@dataclass(slots=True)
class LeftOut:
    """The keys a listing left out as copy journals (journal_folder_of), with their journal folders."""

    objects: int = 0
    bytes: int = 0
    folders: set[str] = field(default_factory=set)

    def source_note(self, location: S3Location, done: str = "copied") -> str | None:
        """What plan, copy (and verify: `done` "compared") say of the source keys left out (None if
        there were none)."""
        if not self.objects:
            return None
        where = ", ".join(f"s3://{location.bucket}/{location.prefix}{f}" for f in sorted(self.folders))
        are = "is" if self.objects == 1 else "are"
        return (f"{self.objects:,} source object{'' if self.objects == 1 else 's'} under {where} {are} another"
                f" copy's journal and {are} not {done}")


def _timestamp(value: Any) -> str | None:
    """A listed LastModified as a stable string (UTC, ISO 8601), or None if the listing had none."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat()
    return str(value) if value else None


@dataclass(slots=True)
class ObjectInfo:
    """One listed object; `key` is relative to the side's prefix (the same on both sides)."""

    key: str
    size: int
    etag: str
    checksum_algorithm: str | None = None
    storage_class: str | None = None
    last_modified: str | None = None  # as listed (_timestamp)


def list_objects(
    client: Any, location: S3Location, *, shard: tuple[int, int] | None = None, left_out: LeftOut | None = None
) -> Iterator[ObjectInfo]:
    """Every object under the location, page by page (1000 keys at a time), but those in a copy journal's
    folder (journal_folder_of), counted in `left_out` if given. Read-only.

    With `shard=(I, N)` only the keys whose shard_of(relative key, N) == I are yielded (and counted).
    """
    paginator = client.get_paginator("list_objects_v2")
    kwargs: dict[str, Any] = {"Bucket": location.bucket}
    if location.prefix:
        kwargs["Prefix"] = location.prefix
    cut = len(location.prefix)
    for page in paginator.paginate(**kwargs):
        for item in page.get("Contents", ()) or ():
            rel = item["Key"][cut:]
            if shard is not None and shard_of(rel, shard[1]) != shard[0]:
                continue
            journal = journal_folder_of(rel)
            if journal is not None:
                if left_out is not None:
                    left_out.objects += 1
                    left_out.bytes += int(item.get("Size", 0))
                    left_out.folders.add(journal)
                continue
            algos = item.get("ChecksumAlgorithm") or []
            yield ObjectInfo(
                key=rel,
                size=int(item.get("Size", 0)),
                etag=strip_etag(item.get("ETag")),
                checksum_algorithm=algos[0] if algos else None,
                storage_class=item.get("StorageClass"),
                last_modified=_timestamp(item.get("LastModified")),
            )


def batched(items: Iterator[ObjectInfo], size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
    """Rows for executemany, `size` at a time (keeps memory flat for millions of keys)."""
    batch: list[tuple[Any, ...]] = []
    for o in items:
        batch.append((o.key, o.size, o.etag, o.checksum_algorithm, o.storage_class, o.last_modified))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def list_both_sides(manifest: Any, src: Any, dst: Any, cfg: Any,
                    left_out: LeftOut | None = None) -> tuple[int, int, int, int]:
    """Stream both sides' listings into `manifest` (a migrate.s3.manifest.Manifest); returns
    (source objects, source bytes, target objects, target bytes); the source keys left out as another
    copy's journal are counted in `left_out`. A listing failure becomes one MigrateError naming the side
    and its credentials. Read-only on both buckets."""
    n_src, b_src = list_side(manifest, "src", src, cfg.source, "source", cfg.shard, left_out)
    n_dst, b_dst = list_side(manifest, "dst", dst, cfg.target, "target", cfg.shard)
    return n_src, b_src, n_dst, b_dst


def list_side(manifest: Any, table: str, client: Any, side: Any, role: str,
              shard: tuple[int, int] | None, left_out: LeftOut | None = None) -> tuple[int, int]:
    """Stream one side's listing into the manifest's `table` ("src" or "dst"); (objects, bytes). A
    listing failure becomes one MigrateError naming the side. Read-only on the bucket."""
    try:
        return manifest.load_listing(table, batched(list_objects(client, side.location, shard=shard,
                                                                 left_out=left_out)))
    except Exception as exc:
        raise clients.translate(exc, role, side) from None


_END = object()


def list_in_background(client: Any, side: Any, role: str, shard: tuple[int, int] | None,
                       *, page: int = 1000, depth: int = 32,
                       on_page: Callable[[list[tuple[Any, ...]]], None] | None = None,
                       on_listed: Callable[[float], None] | None = None,
                       left_out: LeftOut | None = None) -> Iterator[list[tuple[Any, ...]]]:
    """The side's listing in batches of `page` rows, fetched by a thread up to `depth` batches ahead (about
    10 MB for the default 32), so the caller can work on one page while the next ones are on their way.
    From that thread, `on_page(batch)` is called as each batch is listed and `on_listed(seconds)` when the
    last one has been; `left_out` counts the keys left out (list_objects) as they are listed. A listing
    failure is raised here as one MigrateError
    naming the side; closing the iterator stops the thread. Read-only."""
    started = time.monotonic()
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batched(list_objects(client, side.location, shard=shard, left_out=left_out), page):
                if on_page is not None:
                    on_page(batch)
                if not put(batch):
                    return
            if on_listed is not None:
                on_listed(time.monotonic() - started)
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it on its own thread
            put(exc)

    thread = threading.Thread(target=produce, name=f"s3-list-{role}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise clients.translate(item, role, side) from None
            yield item
    finally:
        stop.set()
