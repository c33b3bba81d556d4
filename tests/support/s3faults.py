"""A fault-injecting wrapper around a boto3 S3 client: flips one byte in what GetObject returns.

The copy must catch it (the bytes no longer match the source's checksum evidence) and must not mark
the object verified. Used in-process by monkeypatching migrate.s3.clients.make_client.
"""

from __future__ import annotations

from typing import Any


class CorruptingBody:
    """Wraps a StreamingBody; the byte at absolute offset `at` of this response is XOR-ed with 0xFF."""

    def __init__(self, body: Any, at: int) -> None:
        self._body = body
        self._pos = 0
        self._at = at

    def read(self, amt: int | None = None) -> bytes:
        data = self._body.read(amt)
        if data and self._pos <= self._at < self._pos + len(data):
            i = self._at - self._pos
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._body.close()


class CorruptingClient:
    """Delegates everything to `client`; GetObject bodies for keys containing `marker` get one byte flipped."""

    def __init__(self, client: Any, marker: str, at: int = 0) -> None:
        self._client = client
        self._marker = marker
        self._at = at
        self.corrupted = 0

    def get_object(self, **kwargs: Any) -> Any:
        resp = self._client.get_object(**kwargs)
        if self._marker in kwargs.get("Key", "") and resp.get("ContentLength"):
            resp["Body"] = CorruptingBody(resp["Body"], min(self._at, int(resp["ContentLength"]) - 1))
            self.corrupted += 1
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
