"""Wrappers around a boto3 S3 client, used in-process by monkeypatching migrate.s3.clients.make_client.

CorruptingClient flips one byte in what GetObject returns: the copy must catch it (the bytes no longer
match the source's checksum evidence) and must not mark the object verified. KmsTargetClient answers
uploads as real S3 does for a bucket with default SSE-KMS encryption (moto does not).
"""

from __future__ import annotations

import hashlib
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


class KmsTargetClient:
    """What real S3 answers for uploads into a bucket whose default encryption is SSE-KMS (moto keeps MD5
    ETags and leaves the encryption out of some answers): every PutObject, CreateMultipartUpload and
    UploadPart answer says ServerSideEncryption aws:kms, and the ETags of PutObject and UploadPart are
    not the MD5 of the bytes. With `say_encrypted=False` the ETags are still not the MD5 but nothing says
    why (a target that stored other bytes than it was sent): the copy must refuse those. The same
    non-MD5 ETag is what listings, HeadObject and CompleteMultipartUpload report for each object (a
    multipart one keeps its -N), so a rerun's listing sees what the copy saw: never the source's ETag."""

    def __init__(self, client: Any, say_encrypted: bool = True) -> None:
        self._client = client
        self._say = say_encrypted
        self._moto_etag: dict[str, str] = {}  # the part ETags we gave out -> moto's, for CompleteMultipartUpload

    @staticmethod
    def kms_etag(moto_etag: str) -> str:
        """The ETag this 'KMS' bucket reports for an object moto stored with `moto_etag` (quoted)."""
        parts = moto_etag.strip('"').rsplit("-", 1)
        suffix = f"-{parts[1]}" if len(parts) == 2 else ""
        return '"' + hashlib.md5(b"kms" + moto_etag.encode()).hexdigest() + suffix + '"'

    def get_paginator(self, name: str) -> Any:
        real = self._client.get_paginator(name)
        if name != "list_objects_v2":
            return real

        class Pages:
            def paginate(_self, **kw: Any) -> Any:
                for page in real.paginate(**kw):
                    for item in page.get("Contents", []) or []:
                        item["ETag"] = KmsTargetClient.kms_etag(item["ETag"])
                    yield page

        return Pages()

    def head_object(self, **kwargs: Any) -> Any:
        resp = self._client.head_object(**kwargs)
        if "PartNumber" not in kwargs:
            resp["ETag"] = self.kms_etag(resp["ETag"])
        return resp

    def _answer(self, resp: Any, etag: bool = True) -> Any:
        if self._say:
            resp["ServerSideEncryption"] = "aws:kms"
        else:
            resp.pop("ServerSideEncryption", None)
        if etag and "ETag" in resp:
            ours = self.kms_etag(resp["ETag"])
            self._moto_etag[ours] = resp["ETag"]
            resp["ETag"] = ours
        return resp

    def complete_multipart_upload(self, **kwargs: Any) -> Any:
        parts = kwargs["MultipartUpload"]["Parts"]
        kwargs["MultipartUpload"] = {"Parts": [{**p, "ETag": self._moto_etag.get(p["ETag"], p["ETag"])} for p in parts]}
        resp = self._client.complete_multipart_upload(**kwargs)
        resp["ETag"] = self.kms_etag(resp["ETag"])
        return resp

    def put_object(self, **kwargs: Any) -> Any:
        return self._answer(self._client.put_object(**kwargs))

    def upload_part(self, **kwargs: Any) -> Any:
        return self._answer(self._client.upload_part(**kwargs))

    def create_multipart_upload(self, **kwargs: Any) -> Any:
        return self._answer(self._client.create_multipart_upload(**kwargs), etag=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class RecordingClient:
    """Delegates everything to `client`; remembers the target keys written by each upload request
    (PutObject, CreateMultipartUpload, CopyObject), to show what a run copied."""

    def __init__(self, client: Any, written: list[str]) -> None:
        self._client = client
        self.written = written

    def put_object(self, **kwargs: Any) -> Any:
        self.written.append(kwargs["Key"])
        return self._client.put_object(**kwargs)

    def create_multipart_upload(self, **kwargs: Any) -> Any:
        self.written.append(kwargs["Key"])
        return self._client.create_multipart_upload(**kwargs)

    def copy_object(self, **kwargs: Any) -> Any:
        self.written.append(kwargs["Key"])
        return self._client.copy_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
