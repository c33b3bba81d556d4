"""The object metadata a copy keeps and verify compares: system headers, user metadata and tags."""

from __future__ import annotations

import base64
import email.header
from collections.abc import Mapping
from typing import Any

# WebsiteRedirectLocation (a static website's redirect objects) is per-object metadata too: a PUT or a
# multipart upload sets it only when asked to. AWS documents that CopyObject does not copy it either (moto
# does), so a server-side CopyObject on AWS loses it; verify compares it and reports those.
FIELDS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "Expires",
          "WebsiteRedirectLocation")


def differences(source: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """What differs between two HeadObject (or GetObject) answers' metadata; [] when it is the same.
    Of the tags, these answers carry only their number (TagCount): see differences_with_tags()."""
    changed = [f for f in FIELDS if source.get(f) != target.get(f)]
    # An Expires that is not a date ("never") parses to None: only the raw ExpiresString tells
    # two such headers apart (and "0" from a date of the same instant is no difference).
    if "Expires" not in changed and source.get("Expires") is None and source.get("ExpiresString") != target.get(
            "ExpiresString"):
        changed.append("Expires")
    if user_metadata(source) != user_metadata(target):
        changed.append("user metadata")
    if (source.get("TagCount") or 0) != (target.get("TagCount") or 0):
        changed.append("tags")
    return changed


def differences_with_tags(source_head: Mapping[str, Any], target_head: Mapping[str, Any], src: Any,
                          source: tuple[str, str], dst: Any, target: tuple[str, str]) -> list[str]:
    """differences() of two objects' answers, and ["tags"] when those agree but their tags ((bucket, key)
    on each side) do not: a GetObjectTagging on each side, asked only when the source's answer says
    that it has tags (no request at all for untagged objects, almost always all of them). A tagging
    request that fails raises."""
    changed = differences(source_head, target_head)
    if changed or not source_head.get("TagCount"):
        return changed
    return ["tags"] if _tag_set(src, *source) != _tag_set(dst, *target) else []


def _tag_set(client: Any, bucket: str, key: str) -> set[tuple[str, str]]:
    return {(t["Key"], t["Value"]) for t in client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])}


def user_metadata(headers: Mapping[str, Any]) -> dict[str, str]:
    """An answer's user metadata with each value as text: S3 returns a non-ASCII value RFC 2047-encoded
    (`=?UTF-8?B?...?=`), other implementations as its raw UTF-8 bytes (which botocore gives as latin-1
    text); both forms of one value compare equal."""
    return {k: _text(v) for k, v in (headers.get("Metadata") or {}).items()}


def for_upload(headers: Mapping[str, Any]) -> dict[str, str]:
    """An answer's user metadata as a PUT (or CreateMultipartUpload) can send it: header values are ASCII
    only (botocore refuses any other), so a non-ASCII value is sent RFC 2047-encoded, the form S3 itself
    returns and decodes again when it stores a value."""
    out = {}
    for key, value in (headers.get("Metadata") or {}).items():
        out[key] = value if value.isascii() else "=?UTF-8?B?" + base64.b64encode(_text(value).encode()).decode() + "?="
    return out


def _text(value: str) -> str:
    if value.startswith("=?") and value.endswith("?="):
        try:
            return str(email.header.make_header(email.header.decode_header(value)))
        except (ValueError, LookupError):  # not an RFC 2047 value after all
            return value
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8 bytes: the text as given
        return value
