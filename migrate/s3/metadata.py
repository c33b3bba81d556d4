"""The object metadata a copy keeps and verify compares: system headers, user metadata and tags."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# WebsiteRedirectLocation (a static website's redirect objects) is per-object metadata too: a PUT or a
# multipart upload sets it only when asked to (S3's own CopyObject does not copy it either).
FIELDS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "Expires",
          "WebsiteRedirectLocation")


def differences(source: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """What differs between two HeadObject (or GetObject) answers' metadata; [] when it is the same.
    Of the tags, these answers carry only their number (TagCount): see tags_differ() for the rest."""
    changed = [f for f in FIELDS if source.get(f) != target.get(f)]
    # An Expires that is not a date ("never") parses to None: only the raw ExpiresString tells
    # two such headers apart (and "0" from a date of the same instant is no difference).
    if "Expires" not in changed and source.get("Expires") is None and source.get("ExpiresString") != target.get(
            "ExpiresString"):
        changed.append("Expires")
    if (source.get("Metadata") or {}) != (target.get("Metadata") or {}):
        changed.append("user metadata")
    if (source.get("TagCount") or 0) != (target.get("TagCount") or 0):
        changed.append("tags")
    return changed


def tags_differ(src: Any, source: tuple[str, str], dst: Any, target: tuple[str, str],
                source_head: Mapping[str, Any]) -> bool:
    """Whether the tags of two objects ((bucket, key) on each side) differ, once differences() found the
    same number on both: a GetObjectTagging on each side, asked only when the source's answer says that
    it has tags (no request at all for untagged objects, almost always all of them)."""
    if not source_head.get("TagCount"):
        return False
    return _tag_set(src, *source) != _tag_set(dst, *target)


def _tag_set(client: Any, bucket: str, key: str) -> set[tuple[str, str]]:
    return {(t["Key"], t["Value"]) for t in client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])}
