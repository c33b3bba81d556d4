"""`s3 copy`: list, reconcile with the manifest, copy what is not yet verified, check every object.
The copy starts with the first page of the source listing; the listing runs ahead in a thread.

Modes: server-side (CopyObject / UploadPartCopy with the target credential), stream (GET with the
source credential, PUT / multipart upload with the target credential, bounded memory, no temp files),
auto (server-side when both sides share an endpoint and the target credential can read the source).
Every upload carries Content-MD5 and an S3 additional checksum (SHA-256) computed from the bytes we
read, so S3 rejects bytes damaged on the way; what we read is checked against the source's own
evidence (checksums.Evidence) before an object can be marked verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from migrate.config import S3CopyConfig, redact
from migrate.errors import CopyFailed, Interrupted
from migrate.memory import bound_heap
from migrate.model import Diff, Outcome, PhaseResult, Plan, Report, Status
from migrate.progress import Reporter, agree, counted, human_bytes
from migrate.s3 import clients, journal, metadata
from migrate.s3.checksums import (
    MD5_ETAG,
    MULTIPART_ETAG,
    SIZE_ONLY,
    VERIFIED,
    Evidence,
    b64,
    full_object_checksum,
    multipart_count,
)
from migrate.s3.inventory import RESERVED, LeftOut, list_in_background, list_side
from migrate.s3.manifest import FAILED, Manifest, Row, manifest_path
from migrate.s3.shard import shard_of

log = logging.getLogger(__name__)

MiB = 1024 * 1024
SINGLE_PUT_MAX = 8 * MiB  # single-part sources up to this size are one GET + one PUT
PART_SIZE = 8 * MiB  # target part size when we choose the boundaries
KEEP_PART_MAX = 16 * MiB  # source parts up to this size keep their boundaries (so the target ETag equals the source's)
MAX_PARTS = 10_000
COPY_OBJECT_MAX = 5 * 1024 * MiB  # CopyObject limit; above it UploadPartCopy
COPY_PART_SIZE = 512 * MiB
MEMORY_BUDGET = 32 * MiB  # bytes of object data held in memory at once, across all workers
STALL_SECONDS = 60.0
FLUSH_SECONDS = 1.0

# Storage classes whose objects S3 reads (GetObject, CopyObject) only once restored (RestoreObject): the
# listing cannot tell a restored object from one that is not, so they are tried, and a refusal says what to do.
ARCHIVED_STORAGE_CLASSES = ("DEEP_ARCHIVE", "GLACIER")
_NOT_RESTORED_CODES = ("InvalidObjectState", "ObjectNotInActiveTierError")
NOT_RESTORED = "archived, not restored"  # how the detail of such a failure begins
KEEP_STORAGE_CLASSES = {"STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "REDUCED_REDUNDANCY", "GLACIER_IR"}
COPY_ALGORITHMS = {"SHA256", "SHA1", "CRC32", "CRC32C"}
# How the target's copy of streamed bytes was checked (the manifest's target_check):
TARGET_MD5_ETAG = "md5 etag"  # the target's ETag (each part's) is the MD5 of the bytes sent: compared
TARGET_UPLOAD_CHECKSUMS = "upload checksums"  # ETag not an MD5 (SSE-KMS, DSSE-KMS, SSE-C): S3 checked the
# request's Content-MD5 and SHA-256 headers against the bytes it received (it rejects them otherwise)
_ETAG_NOT_MD5_SSE = ("aws:kms", "aws:kms:dsse")


class _Stopped(Exception):
    """The run is being interrupted: leave this object pending."""


class _Mismatch(Exception):
    """Bytes do not match their evidence: the object must not be marked verified."""


@dataclass(slots=True)
class Result:
    key: str
    status: str  # verified | size-only | failed
    evidence: str | None = None
    target_etag: str | None = None
    detail: str | None = None
    size: int = 0
    target_check: str | None = None  # stream mode: TARGET_MD5_ETAG or TARGET_UPLOAD_CHECKSUMS
    etag: str = ""  # the source's listed ETag (set by copy_one)

    def row(self) -> tuple[str, str, str | None, str | None, str | None, str | None]:
        return (self.key, self.status, self.evidence, self.target_etag, self.detail, self.target_check)


class ByteBudget:
    """At most `limit` bytes of object data in memory; a single request larger than the limit waits
    until it is alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cv = threading.Condition()

    def acquire(self, n: int, stop: threading.Event) -> int:
        n = min(n, self.limit)
        with self._cv:
            while self.used and self.used + n > self.limit:
                if stop.is_set():
                    raise _Stopped
                self._cv.wait(0.5)
            self.used += n
        return n

    def release(self, n: int) -> None:
        with self._cv:
            self.used -= n
            self._cv.notify_all()


def _read_exact(body: Any, n: int) -> bytes:
    data = body.read(n) if n else b""
    if len(data) != n:
        raise _Mismatch(f"short read: got {len(data)} of {n} bytes")
    return data


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def _even_split(total: int, max_chunk: int) -> list[int]:
    """Split `total` into near-equal chunks of at most max_chunk; when total > max_chunk every chunk but
    the last is larger than max_chunk / 2 (so >= 5 MiB, S3's minimum part, for max_chunk >= 10 MiB)."""
    if total <= max_chunk:
        return [total]
    k = -(-total // max_chunk)
    base = -(-total // k)
    sizes = [base] * (k - 1)
    sizes.append(total - base * (k - 1))
    return sizes


class BucketCopier:
    """Copies one bucket (prefix) to another. Owns the worker pools; the manifest stays on the caller's
    thread (workers return Results)."""

    def __init__(self, cfg: S3CopyConfig, reporter: Reporter, src: Any, dst: Any, mode: str) -> None:
        self.cfg = cfg
        self.reporter = reporter
        self.src = src
        self.dst = dst
        self.mode = mode
        self.stop = threading.Event()
        self.budget = ByteBudget(MEMORY_BUDGET)
        # Two pools, so that no pool thread ever waits for memory that only its own pool can free. Upload
        # and part-copy tasks never wait for memory (they only release what their submitter reserved);
        # source-part tasks wait for it, and the memory they wait for is freed by the upload pool or by
        # a thread that is not waiting. (One shared pool hung: every thread in a source-part task waiting
        # for memory held by upload tasks queued behind them.)
        self.part_pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="s3-part")
        self.read_pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="s3-read")
        self.kms = cfg.sse == "aws:kms"
        self.last_progress = time.monotonic()
        self._lock = threading.Lock()
        self.bytes_done = 0
        self.tags_not_copied = 0  # objects copied without their tags (unreadable with the source credential)

    # ---- helpers ----------------------------------------------------------------------------------------
    def skey(self, key: str) -> str:
        return self.cfg.source.location.prefix + key

    def tkey(self, key: str) -> str:
        return self.cfg.target.location.prefix + key

    def _sse(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.cfg.sse:
            out["ServerSideEncryption"] = self.cfg.sse
        if self.cfg.sse_kms_key_id:
            out["SSEKMSKeyId"] = self.cfg.sse_kms_key_id
        return out

    def _advance(self, n: int) -> None:
        if n:
            self.reporter.on_progress("copy bytes", n)
        with self._lock:
            self.bytes_done += n
            self.last_progress = time.monotonic()

    def _object_args(self, row: Row, headers: dict[str, Any]) -> dict[str, Any]:
        """Metadata, tags, storage class and encryption for the target object, from the source's answer."""
        args: dict[str, Any] = {f: headers[f] for f in metadata.FIELDS if headers.get(f)}
        args["Metadata"] = metadata.for_upload(headers)
        if headers.get("ExpiresString") and not headers.get("Expires"):
            # not a date: the API (PutObject, CreateMultipartUpload) takes only dates; verify reports it
            log.warning("%s: its Expires header %r is not a date and is not copied", row.key, headers["ExpiresString"])
        if headers.get("TagCount"):
            try:
                tags = self.src.get_object_tagging(Bucket=self.cfg.source.location.bucket, Key=self.skey(row.key))
                args["Tagging"] = urlencode([(t["Key"], t["Value"]) for t in tags.get("TagSet", [])])
            except Exception as exc:  # tags are kept "when readable"
                log.warning("tags of %s not readable (%s); copied without them", row.key, clients.error_code(exc))
                with self._lock:  # counted for the report: a log line alone is lost in a long run's output
                    self.tags_not_copied += 1
        if row.storage_class in KEEP_STORAGE_CLASSES:
            args["StorageClass"] = row.storage_class
        args.update(self._sse())
        return args

    def _etag_not_md5(self, *answers: dict[str, Any]) -> bool:
        """Whether S3's answers to an upload (PutObject, UploadPart, CreateMultipartUpload) say that the
        object is stored with an encryption that makes its ETag something other than the MD5 of its
        bytes: SSE-KMS (also when it is the bucket's default, without --sse), DSSE-KMS or SSE-C. Only
        when no answer says how the object is encrypted: what we asked for (--sse aws:kms)."""
        if any(a.get("SSECustomerAlgorithm") or a.get("ServerSideEncryption") in _ETAG_NOT_MD5_SSE for a in answers):
            return True
        if any(a.get("ServerSideEncryption") for a in answers):
            return False
        return self.kms

    def _check_target(self, etag: str, md5_hex: str, *answers: dict[str, Any]) -> str:
        """Check what the target stored against the bytes we sent; returns how (TARGET_*). Where the
        ETag is not an MD5, S3 has already checked the request's Content-MD5 and SHA-256 headers (and
        would have refused damaged bytes): there is nothing more to compare."""
        if self._etag_not_md5(*answers):
            return TARGET_UPLOAD_CHECKSUMS
        if etag != md5_hex:
            raise _Mismatch(f"target stored ETag {etag}, expected MD5 {md5_hex}")
        return TARGET_MD5_ETAG

    # ---- one object -------------------------------------------------------------------------------------
    def copy_one(self, row: Row) -> Result | None:
        """Copy one object; never raises (a failure is a Result), None when interrupted."""
        if self.stop.is_set():
            return None
        try:
            if self.mode == "server-side":
                res = self._server_side(row)
            elif row.size <= SINGLE_PUT_MAX and not multipart_count(row.etag):
                res = self._stream_small(row)
            else:
                res = self._stream_large(row)
        except _Stopped:
            return None
        except _Mismatch as exc:
            res = Result(row.key, FAILED, detail=str(exc), size=row.size)
        except Exception as exc:
            code = clients.error_code(exc)
            if code in ("PreconditionFailed", "412"):
                detail = "the source object changed since it was listed; rerun to copy the new version"
            elif code in ("NoSuchKey", "404", "NotFound"):
                # every request for this object names the source key (the target's errors have other
                # codes: NoSuchBucket, NoSuchUpload)
                detail = "deleted from the source since it was listed; a rerun leaves it out"
            elif code in _NOT_RESTORED_CODES:
                # S3's own message ("not valid for the object's storage class") does not say what to do,
                # and a plain rerun fails the same way.
                detail = (f"{NOT_RESTORED} (storage class {row.storage_class or 'archive tier'}): S3 reads it only"
                          " once it is restored; restore it on the source (S3 RestoreObject, e.g. `aws s3api"
                          " restore-object`), wait for the restore to complete, then rerun the copy")
            else:
                detail = f"{code}: {redact(exc)}"
            res = Result(row.key, FAILED, detail=detail, size=row.size)
        res.etag = row.etag
        if res.status == FAILED:
            log.warning("failed: %s: %s", row.key, res.detail)
        self.reporter.on_progress("copy objects", 1)
        with self._lock:
            self.last_progress = time.monotonic()
        return res

    def _server_side(self, row: Row) -> Result:
        # An empty object uploaded as one empty part (ETag "...-1") is copied whole too: a part copy of it
        # would ask for the range "bytes=0--1", which S3 rejects.
        if row.size > COPY_OBJECT_MAX or (multipart_count(row.etag) and row.size):
            return self._server_side_multipart(row)
        # S3 computes the target's ETag from the bytes it wrote; for a plain (non-KMS) target that MD5 is
        # the verification. An additional checksum is asked for only where it adds evidence: the source
        # carries one to compare with, or the target's ETag will not be an MD5 (SSE-KMS).
        algo = row.algo if row.algo in COPY_ALGORITHMS else ("SHA256" if self.kms else None)
        sb, tb = self.cfg.source.location.bucket, self.cfg.target.location.bucket
        kwargs: dict[str, Any] = {
            "Bucket": tb, "Key": self.tkey(row.key), "CopySource": {"Bucket": sb, "Key": self.skey(row.key)},
            # Metadata and tags are copied with the object: MetadataDirective/TaggingDirective default to COPY.
            "CopySourceIfMatch": _quoted(row.etag), **self._sse(),
        }
        if algo:
            kwargs["ChecksumAlgorithm"] = algo
        if row.storage_class in KEEP_STORAGE_CLASSES:
            kwargs["StorageClass"] = row.storage_class
        resp = self.dst.copy_object(**kwargs)
        result = resp.get("CopyObjectResult", {})
        tetag = result.get("ETag", "").strip('"').lower()
        self._advance(row.size)
        # S3 computed the target's ETag from the bytes it wrote: equal to the listed source ETag (an MD5 or
        # a multipart MD5-of-MD5s) means equal content, with no extra request.
        if tetag == row.etag and (MD5_ETAG.match(tetag) or MULTIPART_ETAG.match(tetag)):
            return Result(row.key, VERIFIED, "etag", tetag, size=row.size)
        if row.size == 0 and MD5_ETAG.match(tetag):  # no bytes to differ (its ETag: one empty part's)
            return Result(row.key, VERIFIED, "empty", tetag, size=0)
        copied = result.get(f"Checksum{algo}") if algo else None
        if algo and row.algo == algo and copied and "-" not in copied and not multipart_count(row.etag):
            head = self.src.head_object(Bucket=sb, Key=self.skey(row.key), IfMatch=_quoted(row.etag),
                                        ChecksumMode="ENABLED")
            found = full_object_checksum(head)
            if found and found[0] == algo:
                if found[1] != copied:
                    raise _Mismatch(f"target {algo} {copied} differs from the source's {found[1]}")
                return Result(row.key, VERIFIED, algo.lower(), tetag, size=row.size)
        return Result(row.key, SIZE_ONLY, SIZE_ONLY, tetag, "no comparable checksum on both sides", size=row.size)

    def _source_part_sizes(self, row: Row, n: int) -> tuple[dict[str, Any], list[int]]:
        """The source object's HEAD (metadata) and its part boundaries from HeadObject PartNumber=1..n."""
        args: dict[str, Any] = {"Bucket": self.cfg.source.location.bucket, "Key": self.skey(row.key),
                                "ChecksumMode": "ENABLED"}
        # No IfMatch on part HEADs (some S3 implementations compare it with the part's ETag); the reads or
        # copies that follow carry it, so a source that changes mid-copy still fails the object.
        # The object's own HEAD for its metadata: not every implementation returns it with PartNumber.
        head = self.src.head_object(**args, IfMatch=_quoted(row.etag))
        sizes = []
        for i in range(1, n + 1):
            sizes.append(int(self.src.head_object(**args, PartNumber=i)["ContentLength"]))
        if sum(sizes) != row.size:
            raise _Mismatch(f"source parts add up to {sum(sizes)} bytes, listed size is {row.size}")
        return head, sizes

    def _server_side_multipart(self, row: Row) -> Result:
        """UploadPartCopy. A multipart source keeps its part boundaries, so S3 computes the same
        MD5-of-MD5s ETag on the target when the bytes are the same: verified without reading them."""
        sb, tb = self.cfg.source.location.bucket, self.cfg.target.location.bucket
        n = multipart_count(row.etag)
        if n:
            head, sizes = self._source_part_sizes(row, n)
        else:
            head = self.src.head_object(Bucket=sb, Key=self.skey(row.key), IfMatch=_quoted(row.etag))
            sizes = _even_split(row.size, COPY_PART_SIZE)
        args = self._object_args(row, head)
        up = self.dst.create_multipart_upload(Bucket=tb, Key=self.tkey(row.key), ChecksumAlgorithm="SHA256", **args)
        upload_id = up["UploadId"]
        try:
            futures = []
            offset = 0
            for number, size in enumerate(sizes, 1):
                rng = f"bytes={offset}-{offset + size - 1}"
                futures.append(self.part_pool.submit(self._copy_part, row, upload_id, number, rng, size))
                offset += size
            parts = [f.result() for f in futures]
            done = self.dst.complete_multipart_upload(Bucket=tb, Key=self.tkey(row.key), UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort(upload_id, row)
            raise
        tetag = done["ETag"].strip('"').lower()
        if n and tetag == row.etag and not self.kms and not (
                head.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse") or head.get("SSECustomerAlgorithm")):
            return Result(row.key, VERIFIED, "md5-of-parts", tetag, size=row.size)
        return Result(row.key, SIZE_ONLY, SIZE_ONLY, tetag, "server-side multipart copy: no comparable checksum",
                      size=row.size)

    def _copy_part(self, row: Row, upload_id: str, number: int, rng: str, size: int) -> dict[str, Any]:
        if self.stop.is_set():
            raise _Stopped
        r = self.dst.upload_part_copy(
            Bucket=self.cfg.target.location.bucket, Key=self.tkey(row.key), UploadId=upload_id, PartNumber=number,
            CopySource={"Bucket": self.cfg.source.location.bucket, "Key": self.skey(row.key)},
            CopySourceRange=rng, CopySourceIfMatch=_quoted(row.etag),
        )
        self._advance(size)
        part = r.get("CopyPartResult", {})
        out = {"PartNumber": number, "ETag": part["ETag"]}
        if part.get("ChecksumSHA256"):
            out["ChecksumSHA256"] = part["ChecksumSHA256"]
        return out

    def _abort(self, upload_id: str, row: Row) -> None:
        try:
            self.dst.abort_multipart_upload(Bucket=self.cfg.target.location.bucket, Key=self.tkey(row.key),
                                            UploadId=upload_id)
        except Exception as exc:  # the upload expires with the bucket's lifecycle rule; never mask the cause
            log.warning("could not abort the multipart upload of %s: %s", row.key, clients.error_code(exc))

    def _stream_small(self, row: Row) -> Result:
        sb, tb = self.cfg.source.location.bucket, self.cfg.target.location.bucket
        held = self.budget.acquire(max(row.size, 1), self.stop)
        try:
            resp = self.src.get_object(Bucket=sb, Key=self.skey(row.key), IfMatch=_quoted(row.etag),
                                       ChecksumMode="ENABLED")
            data = _read_exact(resp["Body"], row.size)
            md5 = hashlib.md5(data)
            evidence = Evidence.for_object(row.etag, resp)
            evidence.update(data)
            problem = evidence.check(md5_hex=md5.hexdigest())
            if problem:
                raise _Mismatch(problem)  # nothing was written to the target
            args = self._object_args(row, resp)
            put = self.dst.put_object(
                Bucket=tb, Key=self.tkey(row.key), Body=data, ContentMD5=b64(md5.digest()),
                ChecksumSHA256=b64(hashlib.sha256(data).digest()), **args,
            )
        finally:
            self.budget.release(held)
        tetag = put["ETag"].strip('"').lower()
        check = self._check_target(tetag, md5.hexdigest(), put)
        self._advance(row.size)
        if evidence.usable:
            return Result(row.key, VERIFIED, evidence.kind, tetag, size=row.size, target_check=check)
        return Result(row.key, SIZE_ONLY, SIZE_ONLY, tetag, "the source offers no usable checksum", size=row.size,
                      target_check=check)

    def _upload_part(self, row: Row, up: dict[str, Any], number: int, data: bytes,
                     held: int) -> tuple[dict[str, Any], str]:
        """Upload one part of the multipart upload `up` (CreateMultipartUpload's answer); returns the
        part for CompleteMultipartUpload and how the target's copy was checked (TARGET_*)."""
        try:
            if self.stop.is_set():
                raise _Stopped
            md5 = hashlib.md5(data)
            sha = b64(hashlib.sha256(data).digest())
            r = self.dst.upload_part(
                Bucket=self.cfg.target.location.bucket, Key=self.tkey(row.key), UploadId=up["UploadId"],
                PartNumber=number, Body=data, ContentMD5=b64(md5.digest()), ChecksumSHA256=sha,
            )
            check = self._check_target(r["ETag"].strip('"').lower(), md5.hexdigest(), r, up)
        finally:
            self.budget.release(held)
        self._advance(len(data))
        return {"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": sha}, check

    def _read_budgeted(self, body: Any, size: int) -> tuple[bytes, int]:
        """Reserve memory, then read exactly `size` bytes; returns the data and the reservation, which
        the caller releases once the bytes are uploaded (released here if the read fails)."""
        held = self.budget.acquire(size, self.stop)
        try:
            return _read_exact(body, size), held
        except BaseException:
            self.budget.release(held)
            raise

    def _source_part(self, row: Row, up: dict[str, Any], offset: int, length: int,
                     first: int) -> tuple[bytes, list[tuple[dict[str, Any], str]]]:
        """GET one source part by range, upload it as one or more target parts; returns its MD5. Runs on
        the read pool and uploads on its own thread: it holds memory only while it is not waiting for any."""
        if self.stop.is_set():
            raise _Stopped
        resp = self.src.get_object(Bucket=self.cfg.source.location.bucket, Key=self.skey(row.key),
                                   Range=f"bytes={offset}-{offset + length - 1}", IfMatch=_quoted(row.etag))
        body = resp["Body"]
        part_md5 = hashlib.md5()
        parts = []
        try:
            for j, size in enumerate(_even_split(length, KEEP_PART_MAX if length > KEEP_PART_MAX else length)):
                data, held = self._read_budgeted(body, size)
                part_md5.update(data)
                parts.append(self._upload_part(row, up, first + j, data, held))
        finally:
            body.close()
        return part_md5.digest(), parts

    def _stream_large(self, row: Row) -> Result:
        sb, tb = self.cfg.source.location.bucket, self.cfg.target.location.bucket
        n = multipart_count(row.etag)
        if n:
            # The source's part boundaries (HeadObject PartNumber) let us recompute its MD5-of-MD5s ETag.
            head, sizes = self._source_part_sizes(row, n)
            sse = head.get("ServerSideEncryption")
            kms = sse in ("aws:kms", "aws:kms:dsse") or bool(head.get("SSECustomerAlgorithm"))
            evidence = Evidence(SIZE_ONLY, "") if kms else Evidence("md5-of-parts", row.etag)
            resp = None
        else:
            # The GET's answer carries the metadata and the checksum a HEAD would: one request, not two.
            resp = self.src.get_object(Bucket=sb, Key=self.skey(row.key), IfMatch=_quoted(row.etag),
                                       ChecksumMode="ENABLED")
            head = resp
            part = max(PART_SIZE, -(-row.size // MAX_PARTS))
            sizes = [min(part, row.size - off) for off in range(0, row.size, part)]
            evidence = Evidence.for_object(row.etag, head)
        try:
            args = self._object_args(row, head)
            for drop in ("ContentLength",):
                args.pop(drop, None)
            up = self.dst.create_multipart_upload(Bucket=tb, Key=self.tkey(row.key), ChecksumAlgorithm="SHA256",
                                                  **args)
        except BaseException:
            if resp is not None:
                resp["Body"].close()
            raise
        upload_id = up["UploadId"]
        try:
            if n:
                futures: list[Future[tuple[bytes, list[tuple[dict[str, Any], str]]]]] = []
                offset, number = 0, 1
                for size in sizes:
                    futures.append(self.read_pool.submit(self._source_part, row, up, offset, size, number))
                    offset += size
                    number += len(_even_split(size, KEEP_PART_MAX if size > KEEP_PART_MAX else size))
                if number - 1 > MAX_PARTS:
                    raise _Mismatch(f"would need {number - 1} target parts (S3 allows {MAX_PARTS})")
                outs = [f.result() for f in futures]
                problem = evidence.check(part_md5s=[md5 for md5, _ in outs])
                checked = [p for _, ps in outs for p in ps]
            else:
                assert resp is not None
                whole = hashlib.md5()
                body = resp["Body"]
                pfutures: list[Future[tuple[dict[str, Any], str]]] = []
                try:
                    for number, size in enumerate(sizes, 1):
                        if self.stop.is_set():
                            raise _Stopped
                        data, held = self._read_budgeted(body, size)
                        whole.update(data)
                        evidence.update(data)
                        pfutures.append(self.part_pool.submit(self._upload_part, row, up, number, data, held))
                finally:
                    body.close()
                checked = [f.result() for f in pfutures]
                problem = evidence.check(md5_hex=whole.hexdigest())
            if problem:
                # Never complete an upload whose bytes disagree with the source: nothing lands on the target.
                self._advance(-sum(sizes))
                raise _Mismatch(problem)
            done = self.dst.complete_multipart_upload(Bucket=tb, Key=self.tkey(row.key), UploadId=upload_id,
                                                      MultipartUpload={"Parts": [p for p, _ in checked]})
        except BaseException:
            self._abort(upload_id, row)
            raise
        tetag = done["ETag"].strip('"').lower()
        # every part's ETag compared with its MD5, or S3 checked the parts' checksum headers
        check = TARGET_MD5_ETAG if all(c == TARGET_MD5_ETAG for _, c in checked) else TARGET_UPLOAD_CHECKSUMS
        if evidence.usable:
            return Result(row.key, VERIFIED, evidence.kind, tetag, size=row.size, target_check=check)
        return Result(row.key, SIZE_ONLY, SIZE_ONLY, tetag, "the source offers no usable checksum", size=row.size,
                      target_check=check)

    # ---- the run ----------------------------------------------------------------------------------------
    def run(self, rows: Iterable[Row | None], manifest: Manifest, record: Callable[[Result], None]) -> None:
        """Copy every row with a bounded queue of 2×workers; results go to the manifest in batches.
        `rows` is consumed on this thread (it may use the manifest too); a None in it is a moment to
        record what has finished, without waiting (so results never wait long behind a slow listing)."""
        pool = ThreadPoolExecutor(max_workers=self.cfg.workers, thread_name_prefix="s3-copy")
        finished: queue.SimpleQueue[Future[Result | None]] = queue.SimpleQueue()
        inflight = 0
        buffer: list[Result] = []
        last_flush = time.monotonic()
        stall = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(stall,), name="s3-stall", daemon=True)
        watcher.start()

        def collect(block: bool) -> None:
            """Take the finished copies (waiting for one when `block`) and record their results."""
            nonlocal inflight, last_flush
            while inflight:
                try:
                    f = finished.get(timeout=0.5) if block else finished.get_nowait()
                except queue.Empty:
                    if block:
                        continue  # wake up now and then so that a signal is handled promptly
                    break
                block = False
                inflight -= 1
                res = None if f.cancelled() else f.result()
                if res is not None:
                    buffer.append(res)
                    record(res)
            if buffer and (len(buffer) >= 1000 or time.monotonic() - last_flush >= FLUSH_SECONDS):
                manifest.record([r.row() for r in buffer])
                buffer.clear()
                last_flush = time.monotonic()

        try:
            for row in rows:
                if row is None:
                    collect(block=False)
                    continue
                if inflight >= self.cfg.workers * 2:
                    collect(block=True)
                future = pool.submit(self.copy_one, row)
                inflight += 1
                future.add_done_callback(finished.put)
            while inflight:
                collect(block=True)
        except BaseException:
            # Ctrl-C / SIGTERM: stop at the next part boundary, keep every result that did complete.
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            collect(block=False)
            raise
        finally:
            stall.set()
            manifest.record([r.row() for r in buffer])
            buffer.clear()
            pool.shutdown(wait=True)
            self.read_pool.shutdown(wait=True, cancel_futures=True)
            self.part_pool.shutdown(wait=True, cancel_futures=True)

    def _watch(self, stop: threading.Event) -> None:
        warned = False
        while not stop.wait(5.0):
            idle = time.monotonic() - self.last_progress
            if idle >= STALL_SECONDS and not warned:
                self.reporter.note(f"warning: nothing completed in the last {idle:.0f}s (slow server or throttling?)")
                warned = True
            elif idle < STALL_SECONDS:
                warned = False


MAX_STALE_CANDIDATES = 100_000


def stale_uploads(dst: Any, cfg: S3CopyConfig) -> list[tuple[str, str]]:
    """(key, upload id) of the multipart uploads in progress on the target under its prefix, of this
    shard, listed before this run creates any of its own (so none of them is ours). A refusal to list
    them is logged, never fatal."""
    prefix = cfg.target.location.prefix
    kwargs: dict[str, Any] = {"Bucket": cfg.target.location.bucket}
    if prefix:
        kwargs["Prefix"] = prefix
    found: list[tuple[str, str]] = []
    try:
        for page in dst.get_paginator("list_multipart_uploads").paginate(**kwargs):
            for up in page.get("Uploads", []) or []:
                rel = up["Key"][len(prefix):]
                if cfg.shard is not None and shard_of(rel, cfg.shard[1]) != cfg.shard[0]:
                    continue
                if len(found) >= MAX_STALE_CANDIDATES:
                    log.warning("more than %d unfinished multipart uploads on the target: the rest are left to a "
                                "lifecycle rule (AbortIncompleteMultipartUpload)", MAX_STALE_CANDIDATES)
                    return found
                found.append((up["Key"], up["UploadId"]))
    except Exception as exc:
        log.warning("could not list unfinished multipart uploads on the target (%s); "
                    "a lifecycle rule (AbortIncompleteMultipartUpload) will clean them up", clients.error_code(exc))
    return found


def abort_stale_uploads(dst: Any, cfg: S3CopyConfig, manifest: Manifest, candidates: list[tuple[str, str]]) -> int:
    """Abort the multipart uploads that an earlier, interrupted run left on the target (a kill -9 cannot
    clean up after itself, and S3 keeps and bills the parts). `candidates` come from stale_uploads(),
    listed before this run started uploading; only those for keys on the (completely listed) source are
    aborted: an application's own uploads are left alone. Returns how many were aborted."""
    prefix = cfg.target.location.prefix
    aborted = 0
    try:
        for key, upload_id in candidates:
            if manifest.listed_on_source(key[len(prefix):]):
                dst.abort_multipart_upload(Bucket=cfg.target.location.bucket, Key=key, UploadId=upload_id)
                aborted += 1
    except Exception as exc:
        log.warning("could not clean up unfinished multipart uploads on the target (%s); "
                    "a lifecycle rule (AbortIncompleteMultipartUpload) will", clients.error_code(exc))
    if aborted:
        log.info("aborted %d unfinished multipart uploads left by an interrupted run", aborted)
    return aborted


def resolve_mode(cfg: S3CopyConfig, src: Any, dst_probe: Any, first_key: str | None) -> tuple[str, str]:
    """(mode, why). auto picks server-side only when one endpoint serves both buckets and the target
    credential can read a source object. Read-only."""
    if cfg.mode != "auto":
        return cfg.mode, "chosen explicitly"
    if (cfg.source.endpoint_url or "") != (cfg.target.endpoint_url or ""):
        return "stream", "the buckets are on different endpoints"
    if first_key is None:
        return "server-side", "nothing to copy"
    try:
        dst_probe.head_object(Bucket=cfg.source.location.bucket, Key=cfg.source.location.prefix + first_key)
    except Exception as exc:
        return "stream", f"the target credential cannot read the source ({clients.error_code(exc)})"
    return "server-side", "the target credential can read the source"


class _SourceFeed:
    """The rows to copy, produced on the copying thread from the source listing as it arrives: each
    page is loaded into the manifest and reconciled, its categories counted, and its pending rows
    handed to the copier. Objects whose target already has their size and ETag, but that this manifest
    did not copy, have their metadata compared first (and are copied if it differs). In auto mode the
    mode is chosen with the first row to copy. Once the listing is complete: objects gone from the
    source leave the manifest, and multipart uploads an interrupted run left behind are aborted."""

    def __init__(self, cfg: S3CopyConfig, reporter: Reporter, manifest: Manifest, copier: BucketCopier,
                 src: Any, stale: list[tuple[str, str]]) -> None:
        self.cfg, self.reporter, self.manifest, self.copier, self.src = cfg, reporter, manifest, copier, src
        self.stale_candidates = stale
        self.cats = {"match": (0, 0), "missing on target": (0, 0), "differ": (0, 0)}
        self.n_src = self.b_src = self.todo_n = self.todo_b = self.stale = 0
        self.listed_n = self.listed_b = 0  # counted by the listing thread
        self.list_seconds = self.plan_seconds = 0.0
        self.listed = False
        self.why = "chosen explicitly" if cfg.mode != "auto" else "nothing to copy"
        self.meta_pool: ThreadPoolExecutor | None = None
        self.meta_compared = self.meta_differ = 0
        self.left_out = LeftOut()  # source keys in another copy's journal folder (counted by the listing)

    def _check_metadata(self, rows: list[Row]) -> dict[str, str]:
        """(a MetadataCheck) HEAD both sides of each object, in parallel: those whose metadata differs
        on the target, or could not be compared, with why. Two requests per object, and only for
        objects found on the target with equal ETags that this manifest did not copy."""
        if self.meta_pool is None:
            self.meta_pool = ThreadPoolExecutor(max_workers=self.cfg.workers, thread_name_prefix="s3-meta")
        found = dict(zip((r.key for r in rows), self.meta_pool.map(self._compare_metadata, rows), strict=True))
        differ = {key: why for key, why in found.items() if why}
        self.meta_compared += len(rows)
        self.meta_differ += len(differ)
        return differ

    def _compare_metadata(self, row: Row) -> str | None:
        try:
            s = self.src.head_object(Bucket=self.cfg.source.location.bucket, Key=self.copier.skey(row.key))
            t = self.copier.dst.head_object(Bucket=self.cfg.target.location.bucket, Key=self.copier.tkey(row.key))
        except Exception as exc:
            return f"same ETag on the target, metadata not comparable ({clients.error_code(exc)}): copied again"
        try:  # only the tags' requests can fail here (the answers are in)
            source = (self.cfg.source.location.bucket, self.copier.skey(row.key))
            target = (self.cfg.target.location.bucket, self.copier.tkey(row.key))
            changed = metadata.differences_with_tags(s, t, self.src, source, self.copier.dst, target)
        except Exception as exc:
            return f"same ETag on the target, tags not comparable ({clients.error_code(exc)}): copied again"
        return f"same ETag on the target, metadata differs ({', '.join(changed)}): copied again" if changed else None

    def _page_listed(self, batch: list[tuple[Any, ...]]) -> None:
        """(listing thread) Until a listed page is reconciled, count all of it as still to copy: the
        totals are exact on a first copy and fall to the truth as pages are reconciled on a rerun."""
        self.listed_n += len(batch)
        self.listed_b += sum(r[1] for r in batch)
        self.reporter.on_progress("list source", len(batch))
        self._totals()

    def _totals(self) -> None:
        self.reporter.on_total("copy objects", self.todo_n + max(self.listed_n - self.n_src, 0))
        self.reporter.on_total("copy bytes", self.todo_b + max(self.listed_b - self.b_src, 0))

    def _listed(self, seconds: float) -> None:
        self.list_seconds = seconds
        self.listed = True
        self.reporter.on_done("list source")

    def rows(self) -> Generator[Row | None, None, None]:
        # "list source" runs ahead of "copy objects"; see _page_listed for the totals meanwhile.
        self.reporter.on_start("list source", total=None, unit="objects")
        try:
            yield from self._rows()
        except BaseException:
            if not self.listed:
                self.reporter.on_done("list source", ok=False)
            raise
        finally:
            if self.meta_pool is not None:
                self.meta_pool.shutdown(wait=False, cancel_futures=True)

    def _rows(self) -> Generator[Row | None, None, None]:
        cfg = self.cfg
        pages = list_in_background(self.src, cfg.source, "source", cfg.shard, on_page=self._page_listed,
                                   on_listed=self._listed, left_out=self.left_out)
        for batch in pages:
            t = time.monotonic()
            cats, rows = self.manifest.add_source(batch, self._check_metadata)
            # to-copy counts before listed counts: the listing thread's _totals() may read in between,
            # and then overestimates for a moment instead of underestimating
            self.todo_n += len(rows)
            self.todo_b += sum(r.size for r in rows)
            self.n_src += len(batch)
            self.b_src += sum(r[1] for r in batch)
            for name, (n, b) in cats.items():
                self.cats[name] = (self.cats[name][0] + n, self.cats[name][1] + b)
            self._totals()
            self.copier.last_progress = time.monotonic()  # a listed page is progress (no stall warning)
            if rows and not self.copier.mode:
                probe = clients.make_client(cfg.target, workers=1, probe=True)
                self.copier.mode, self.why = resolve_mode(cfg, self.src, probe, rows[0].key)
            self.plan_seconds += time.monotonic() - t
            if rows and self.todo_n == len(rows):
                self.reporter.note(f"copying in {self.copier.mode} mode while the listing continues")
            yield None  # record finished copies now, even if this page had nothing to copy
            yield from rows
        if not self.copier.mode:  # auto, and nothing to copy: say which mode it would have been
            probe = clients.make_client(cfg.target, workers=1, probe=True)
            self.copier.mode, self.why = resolve_mode(cfg, self.src, probe, None)
        self.manifest.finish_source()
        self.reporter.note(f"listed {self.n_src:,} source objects ({human_bytes(self.b_src)}): "
                           f"{self.todo_n:,} to copy ({human_bytes(self.todo_b)}), "
                           f"{self.cats['match'][0]:,} already done"
                           + (f", of which {counted(self.manifest.journal_matched, 'object')} verified by an earlier"
                              " run (journal in the target)" if self.manifest.journal_matched else ""))
        self.stale = abort_stale_uploads(self.copier.dst, cfg, self.manifest, self.stale_candidates)


def copy_bucket(cfg: S3CopyConfig, reporter: Reporter, plan: Plan | None = None) -> Report:
    """List both sides, reconcile with the manifest, copy what is not yet verified, check each object.

    The target is listed first; the source listing is then streamed page by page and each page's
    objects are copied while the next pages are listed (a copy of millions of keys starts at once).
    Writes only missing/different objects to the target and never deletes anything there. `plan` is
    accepted for the command contract; the listing is always taken fresh (a plan may be stale).
    """
    bound_heap()
    report = Report(kind="s3", source=str(cfg.source.location), target=str(cfg.target.location))
    clients.preflight("source", cfg.source)
    clients.preflight("target", cfg.target)
    src = clients.make_client(cfg.source, workers=cfg.workers)
    dst = clients.make_client(cfg.target, workers=cfg.workers)
    manifest = Manifest(manifest_path(cfg), lock=True)
    writer: journal.Writer | None = None
    try:
        manifest.bind(cfg)
        t0 = time.monotonic()
        reporter.note(f"listing {cfg.target.location}, then copying from {cfg.source.location} as it is listed")
        n_dst, b_dst = list_side(manifest, "dst", dst, cfg.target, "target", cfg.shard)
        journal_id = manifest.path.stem
        journal_folder = journal.url(cfg, journal.folder(cfg, journal_id))
        recorded = manifest.load_journal(journal.read(dst, cfg) if cfg.target_journal else [])
        if recorded:
            reporter.note(f"read the journal of earlier runs in s3://{cfg.target.location.bucket}/"
                          f"{cfg.target.location.prefix}{RESERVED} ({counted(recorded, 'object')} recorded)")
        writer = journal.Writer(dst, cfg, journal_id) if cfg.target_journal else None
        dst_seconds = time.monotonic() - t0
        manifest.start_source()
        copier = BucketCopier(cfg, reporter, src, dst, cfg.mode if cfg.mode != "auto" else "")
        feed = _SourceFeed(cfg, reporter, manifest, copier, src, stale_uploads(dst, cfg))
        counts = {"copied": 0, "copied_bytes": 0, "failed": 0, "not_restored": 0}

        def record(res: Result) -> None:
            if res.status == FAILED:
                counts["failed"] += 1
                if (res.detail or "").startswith(NOT_RESTORED):
                    counts["not_restored"] += 1
            else:
                counts["copied"] += 1
                counts["copied_bytes"] += res.size
                if writer is not None and res.target_etag:
                    writer.add(journal.Entry(res.key, res.size, res.etag, res.status, res.evidence, res.target_etag,
                                             res.size, res.target_check, manifest.source_modified(res.key)))

        reporter.on_start("copy objects", total=None, unit="objects")
        reporter.on_start("copy bytes", total=None, unit="bytes")
        ok = False
        try:
            # closing() ends the listing thread now, also when the copy stops on an error or interrupt
            with contextlib.closing(feed.rows()) as rows:
                copier.run(rows, manifest, record)
            ok = True
        finally:
            reporter.on_done("copy objects", ok=ok and not counts["failed"])
            reporter.on_done("copy bytes", ok=ok and not counts["failed"])
        copy_seconds = time.monotonic() - t0
        mode = copier.mode or "server-side"
        cats = feed.cats
        report.phases.append(PhaseResult(
            "list", dst_seconds + feed.list_seconds, 2, items=feed.n_src + n_dst, bytes=feed.b_src + b_dst,
            note=f"source {feed.n_src:,} objects, target {n_dst:,} (the copy starts with the first page)"))
        report.phases.append(PhaseResult(
            "plan", feed.plan_seconds, 1, items=feed.todo_n, bytes=feed.todo_b,
            note=f"{cats['missing on target'][0]:,} missing, {cats['differ'][0]:,} differ, "
                 f"{cats['match'][0]:,} match; mode {mode} ({feed.why})"
                 + (f"; metadata compared for {feed.meta_compared:,} with equal ETags not copied by this manifest"
                    f" ({feed.meta_differ:,} differ: copied)" if feed.meta_compared else "")
                 + (f"; {counted(manifest.journal_matched, 'object')} verified by an earlier run (journal in the"
                    " target)" if manifest.journal_matched else "")))
        report.phases.append(PhaseResult("copy", copy_seconds, cfg.workers, items=counts["copied"],
                                         bytes=counts["copied_bytes"], note=f"{mode}; {counts['failed']} failed"))

        t3 = time.monotonic()
        status = manifest.status_counts()
        checks = manifest.target_check_counts()
        by_headers = checks.get(TARGET_UPLOAD_CHECKSUMS, 0)
        report.phases.append(PhaseResult(
            "verify", time.monotonic() - t3, 1, items=status["verified"][0] + status["size-only"][0],
            note=f"{status['verified'][0]:,} verified by checksum, {status['size-only'][0]:,} size-only "
                 "(each object checked as it was copied)"
                 + (f"; {by_headers:,} stored encrypted with a non-MD5 ETag (SSE-KMS): their upload checked by S3"
                    " against its Content-MD5 and SHA-256" if by_headers else "")))
        extra_n, _ = manifest.extra_on_target()
        n_src = feed.n_src
        report.totals = {
            "objects": n_src, "bytes": feed.b_src, "copied": counts["copied"], "copied_bytes": counts["copied_bytes"],
            "skipped": n_src - feed.todo_n, "failed": status["failed"][0], "verified": status["verified"][0],
            "size_only": status["size-only"][0], "pending": status["pending"][0], "extra_on_target": extra_n,
            "metadata_compared": feed.meta_compared, "metadata_differed": feed.meta_differ,
            "target_checked_by_md5_etag": checks.get(TARGET_MD5_ETAG, 0),
            "target_checked_by_upload_checksums": by_headers,
            "mode": mode, "manifest": str(manifest.path), "aborted_stale_uploads": feed.stale,
            "journal_verified": manifest.journal_matched,
            "source_journal_objects_left_out": feed.left_out.objects,
            "tags_not_copied": copier.tags_not_copied,
        }
        if copier.tags_not_copied:
            n = copier.tags_not_copied
            report.warnings.append(f"{counted(n, 'object')} copied without {'its' if n == 1 else 'their'} tags: the"
                                   " source credential may not read them (s3:GetObjectTagging); allow it, then"
                                   " delete those objects on the target (the log names them, and `s3 verify` lists"
                                   " them as differing) and rerun the copy")
        left_out = feed.left_out.source_note(cfg.source.location)
        if left_out:
            report.warnings.append(left_out)
        if writer is not None:
            # The journal is kept, also when every object is done: the final top-up of a cutover runs in a
            # new task (no manifest) and matches SSE-KMS objects only through it. `s3 verify --drop-journal`
            # or a successful `run` deletes it once the copy is verified.
            _close_journal(writer)
            if writer.objects or recorded:
                # this run's folder, or where the earlier runs' folders are (other shards) if it wrote none
                where = journal_folder if writer.objects else journal.url(cfg, cfg.target.location.prefix + RESERVED)
                report.totals["journal"] = where
                report.notes.append(f"the copy journal stays in {where} so that a later run in a new task"
                                    " skips verified objects; `s3 verify --drop-journal` (or the final `run"
                                    " --drop-journal`) removes it once the final copy is verified")
            writer = None
        size_only, pending = status["size-only"][0], status["pending"][0]
        if size_only:
            report.warnings.append(f"{counted(size_only, 'object')} {agree(size_only, 'is', 'are')} size-only: the"
                                   " source offers no checksum to compare with (e.g. SSE-KMS single-part objects)")
        if extra_n:
            report.warnings.append(f"{counted(extra_n, 'object')} {agree(extra_n, 'exists', 'exist')} only on the"
                                   " target (left alone): verification will report them as extra on target")
        failures = manifest.failures()
        for key, detail in failures:
            report.diffs.append(Diff("object", key, Outcome.ERROR, detail))
        if status["failed"][0]:
            more = status["failed"][0] - len(failures)
            cold = counts["not_restored"]
            report.errors.append(f"{counted(status['failed'][0], 'object')} failed"
                                 + (f" ({more:,} not listed)" if more else "") + "; rerun to retry only those"
                                 + (f" ({cold:,} of them archived: restore {'it' if cold == 1 else 'them'} on the"
                                    " source first)" if cold else ""))
            report.status = Status.PARTIAL if counts["copied"] or n_src > status["failed"][0] else Status.FAILED
        if pending:
            raise CopyFailed(f"{counted(pending, 'object')} {agree(pending, 'is', 'are')} still pending after the copy")
    except (KeyboardInterrupt, CopyFailed) as exc:
        # The report files still get what was copied and checked so far (the manifest's rows).
        report.totals.setdefault("manifest", str(manifest.path))
        _close_journal(writer)
        writer = None
        report.finish()
        stopped = exc if isinstance(exc, CopyFailed) else Interrupted(
            f"interrupted while copying {cfg.source.location} to {cfg.target.location}",
            hint="run the same s3 copy again to continue: objects already verified are skipped")
        stopped.report = report
        if stopped is exc:
            raise
        raise stopped from None
    finally:
        _close_journal(writer)
        manifest.close()
    report.finish()
    return report.settle()


def _close_journal(writer: journal.Writer | None) -> None:
    """The last flush of a run, complete or not (failed objects, an error, Ctrl-C, SIGTERM)."""
    if writer is not None:
        writer.close(flush=True)
        if writer.written:
            log.info("journal: %d verified objects recorded in s3://%s/%s", writer.written, writer.bucket,
                     writer.prefix)
