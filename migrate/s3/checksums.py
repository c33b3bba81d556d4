"""Checksums and checksum evidence: what proves that the bytes we read are the source's bytes.

Evidence, best first: the source's own additional checksum (SHA-256, SHA-1, CRC32 — the ones the
standard library computes), else its ETag when that is an MD5 (single-part, not SSE-KMS/SSE-C), or the
MD5 of the part MD5s for a multipart `-N` ETag. Without any of these an object is "size-only".
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any

MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")

VERIFIED = "verified"
SIZE_ONLY = "size-only"


def strip_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"').lower()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def multipart_count(etag: str) -> int | None:
    m = MULTIPART_ETAG.match(etag)
    return int(m.group(1)) if m else None


def md5_of_parts(part_md5s: list[bytes]) -> str:
    """The S3 multipart ETag: MD5 over the concatenated binary part MD5s, then '-N'."""
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def etag_is_md5(etag: str, sse: str | None) -> bool:
    """True when a single-part ETag is the MD5 of the content (not for SSE-KMS / SSE-C objects)."""
    return bool(MD5_ETAG.match(etag)) and sse not in ("aws:kms", "aws:kms:dsse") and not _is_ssec(sse)


def _is_ssec(sse: str | None) -> bool:
    return sse == "SSE-C"


class Crc32:
    """zlib.crc32 behind the hashlib interface."""

    def __init__(self) -> None:
        self._v = 0

    def update(self, data: bytes) -> None:
        self._v = zlib.crc32(data, self._v)

    def digest(self) -> bytes:
        return self._v.to_bytes(4, "big")


_ALGORITHMS: dict[str, Callable[[], Any]] = {"SHA256": hashlib.sha256, "SHA1": hashlib.sha1, "CRC32": Crc32}


def full_object_checksum(headers: Mapping[str, Any]) -> tuple[str, str] | None:
    """(algorithm, base64 value) of a full-object additional checksum we can compute, else None.

    Composite checksums ('...-N', multipart) are not full-object and are skipped. So is any checksum of a
    multipart object (a `-N` ETag) that S3 does not call FULL_OBJECT: a composite one (a checksum of the
    parts' checksums) does not always carry the `-N` (moto's does not), and compared with a single-part
    copy's full-object checksum it would report equal bytes as different.
    """
    if headers.get("ChecksumType") == "COMPOSITE":
        return None
    if MULTIPART_ETAG.match(strip_etag(headers.get("ETag"))) and headers.get("ChecksumType") != "FULL_OBJECT":
        return None
    for algo in _ALGORITHMS:
        value = headers.get(f"Checksum{algo}")
        if value and "-" not in str(value):
            return algo, str(value)
    return None


class Evidence:
    """What a stream of bytes must hash to. Feed every byte through update(); then check()."""

    def __init__(self, kind: str, expected: str, algo: str | None = None) -> None:
        self.kind = kind  # "sha256" / "sha1" / "crc32" / "md5" / "md5-of-parts" / "size-only"
        self.expected = expected
        self._hasher: Any = _ALGORITHMS[algo]() if algo else None

    @classmethod
    def for_object(cls, etag: str, headers: Mapping[str, Any]) -> Evidence:
        """The best evidence a single-part read can be checked against, from a GET/HEAD answer."""
        found = full_object_checksum(headers)
        if found:
            algo, value = found
            return cls(algo.lower(), value, algo)
        sse = headers.get("ServerSideEncryption") or ("SSE-C" if headers.get("SSECustomerAlgorithm") else None)
        if etag_is_md5(etag, sse):
            return cls("md5", etag)
        return cls(SIZE_ONLY, "")

    @property
    def usable(self) -> bool:
        return self.kind != SIZE_ONLY

    def update(self, data: bytes) -> None:
        if self._hasher is not None:
            self._hasher.update(data)

    def check(self, *, md5_hex: str | None = None, part_md5s: list[bytes] | None = None) -> str | None:
        """None when the bytes match the evidence; otherwise what differs (no secrets, no data)."""
        if self.kind == SIZE_ONLY:
            return None
        if self.kind == "md5":
            actual = md5_hex or ""
        elif self.kind == "md5-of-parts":
            actual = md5_of_parts(part_md5s or [])
        else:
            actual = b64(self._hasher.digest())
        if actual != self.expected:
            return f"checksum mismatch: read {self.kind} {actual}, source says {self.expected}"
        return None
