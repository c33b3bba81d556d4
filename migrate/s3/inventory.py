"""Listing one side of a copy: ListObjectsV2 pages streamed as ObjectInfo, never held in memory whole."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from migrate.config import S3Location
from migrate.s3 import clients
from migrate.s3.checksums import strip_etag
from migrate.s3.shard import shard_of

log = logging.getLogger(__name__)


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
    """Every object under the location, page by page (1000 keys at a time). Read-only.

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
    counts: list[int] = []
    for table, client, side, role in (("src", src, cfg.source, "source"), ("dst", dst, cfg.target, "target")):
        try:
            n, size = manifest.load_listing(table, batched(list_objects(client, side.location, shard=cfg.shard)))
        except Exception as exc:
            raise clients.translate(exc, role, side) from None
        counts += [n, size]
    return counts[0], counts[1], counts[2], counts[3]
