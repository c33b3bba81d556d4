"""Listing one side of a copy: ListObjectsV2 pages streamed as ObjectInfo, never held in memory whole."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from migrate.config import S3Location
from migrate.s3 import clients
from migrate.s3.checksums import strip_etag
from migrate.s3.shard import shard_of

log = logging.getLogger(__name__)

# The folder (under a side's prefix) holding a copy's journal in the target (migrate.s3.journal): it is
# the tool's own, never a source object, a target object to compare, nor one extra on the target.
RESERVED = "_paas-migrate/"


@dataclass(slots=True)
class ObjectInfo:
    """One listed object; `key` is relative to the side's prefix (the same on both sides)."""

    key: str
    size: int
    etag: str
    checksum_algorithm: str | None = None
    storage_class: str | None = None


def list_objects(
    client: Any, location: S3Location, *, shard: tuple[int, int] | None = None
) -> Iterator[ObjectInfo]:
    """Every object under the location, page by page (1000 keys at a time), but those in the RESERVED
    folder. Read-only.

    With `shard=(I, N)` only the keys whose shard_of(relative key, N) == I are yielded.
    """
    paginator = client.get_paginator("list_objects_v2")
    kwargs: dict[str, Any] = {"Bucket": location.bucket}
    if location.prefix:
        kwargs["Prefix"] = location.prefix
    cut = len(location.prefix)
    for page in paginator.paginate(**kwargs):
        for item in page.get("Contents", ()) or ():
            rel = item["Key"][cut:]
            if rel.startswith(RESERVED):
                continue
            if shard is not None and shard_of(rel, shard[1]) != shard[0]:
                continue
            algos = item.get("ChecksumAlgorithm") or []
            yield ObjectInfo(
                key=rel,
                size=int(item.get("Size", 0)),
                etag=strip_etag(item.get("ETag")),
                checksum_algorithm=algos[0] if algos else None,
                storage_class=item.get("StorageClass"),
            )


def batched(items: Iterator[ObjectInfo], size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
    """Rows for executemany, `size` at a time (keeps memory flat for millions of keys)."""
    batch: list[tuple[Any, ...]] = []
    for o in items:
        batch.append((o.key, o.size, o.etag, o.checksum_algorithm, o.storage_class))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def list_both_sides(manifest: Any, src: Any, dst: Any, cfg: Any) -> tuple[int, int, int, int]:
    """Stream both sides' listings into `manifest` (a migrate.s3.manifest.Manifest); returns
    (source objects, source bytes, target objects, target bytes). A listing failure becomes one
    MigrateError naming the side and its credentials. Read-only on both buckets."""
    n_src, b_src = list_side(manifest, "src", src, cfg.source, "source", cfg.shard)
    n_dst, b_dst = list_side(manifest, "dst", dst, cfg.target, "target", cfg.shard)
    return n_src, b_src, n_dst, b_dst


def list_side(manifest: Any, table: str, client: Any, side: Any, role: str,
              shard: tuple[int, int] | None) -> tuple[int, int]:
    """Stream one side's listing into the manifest's `table` ("src" or "dst"); (objects, bytes). A
    listing failure becomes one MigrateError naming the side. Read-only on the bucket."""
    try:
        return manifest.load_listing(table, batched(list_objects(client, side.location, shard=shard)))
    except Exception as exc:
        raise clients.translate(exc, role, side) from None


_END = object()


def list_in_background(client: Any, side: Any, role: str, shard: tuple[int, int] | None,
                       *, page: int = 1000, depth: int = 32,
                       on_page: Callable[[list[tuple[Any, ...]]], None] | None = None,
                       on_listed: Callable[[float], None] | None = None) -> Iterator[list[tuple[Any, ...]]]:
    """The side's listing in batches of `page` rows, fetched by a thread up to `depth` batches ahead (about
    10 MB for the default 32), so the caller can work on one page while the next ones are on their way.
    From that thread, `on_page(batch)` is called as each batch is listed and `on_listed(seconds)` when the
    last one has been. A listing failure is raised here as one MigrateError
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
            for batch in batched(list_objects(client, side.location, shard=shard), page):
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
