"""The object metadata a copy keeps and verify compares: system headers and user metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# WebsiteRedirectLocation (a static website's redirect objects) is per-object metadata too: a PUT or a
# multipart upload sets it only when asked to (S3's own CopyObject does not copy it either).
FIELDS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "Expires",
          "WebsiteRedirectLocation")


def differences(source: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """What differs between two HeadObject (or GetObject) answers' metadata; [] when it is the same."""
    changed = [f for f in FIELDS if source.get(f) != target.get(f)]
    if (source.get("Metadata") or {}) != (target.get("Metadata") or {}):
        changed.append("user metadata")
    return changed
