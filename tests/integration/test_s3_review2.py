"""s3 copy / verify review (second round): metadata fidelity, tags, odd keys, archived objects.
Against a real S3 API over HTTP (moto server), two credential sets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from migrate.config import S3CopyConfig, S3Side
from migrate.model import Status
from migrate.progress import RecordingReporter
from migrate.s3.copier import copy_bucket
from migrate.s3.verify import verify_buckets
from tests.conftest import BucketPair
from tests.support.cli import run_cli

pytestmark = pytest.mark.s3

MiB = 1024 * 1024


def _cfg(b: BucketPair, tmp: Path, **kw: Any) -> S3CopyConfig:
    env = b.env()
    src = S3Side.build("source", f"s3://{b.source_bucket}", endpoint_url=b.endpoint_url, environ=env)
    tgt = S3Side.build("target", f"s3://{b.target_bucket}", endpoint_url=b.endpoint_url, environ=env)
    kw.setdefault("workers", 4)
    return S3CopyConfig(source=src, target=tgt, state_dir=tmp / "state", **kw)


def _cli_args(b: BucketPair, tmp: Path, *extra: str) -> list[str]:
    return ["--source", f"s3://{b.source_bucket}", "--target", f"s3://{b.target_bucket}",
            "--source-endpoint-url", b.endpoint_url, "--target-endpoint-url", b.endpoint_url,
            "--state-dir", str(tmp / "state"), *extra]


def _tags(client: Any, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def _put_multipart(client: Any, bucket: str, key: str, sizes: list[int], **extra: Any) -> bytes:
    up = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
    parts, whole = [], b""
    for i, size in enumerate(sizes, 1):
        body = hashlib.sha256(f"{key}{i}".encode()).digest() * (size // 32) + b"x" * (size % 32)
        whole += body
        r = client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=i, Body=body)
        parts.append({"PartNumber": i, "ETag": r["ETag"]})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": parts})
    return whole


@pytest.mark.parametrize("mode", ["stream", "server-side"])
def test_website_redirect_location_is_kept_and_verified(buckets: BucketPair, tmp_path: Path, mode: str) -> None:
    """x-amz-website-redirect-location (a static website's redirect objects) is object metadata: stream
    mode (PUT and multipart) and a server-side multipart copy (UploadPartCopy copies no metadata) set it
    from the source's answer, and verify compares it. (It was not among the fields kept: a stream copy
    dropped every redirect, and verify said "match".)"""
    redirect = {"WebsiteRedirectLocation": "/new/page.html", "ContentType": "text/html"}
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="old/page.html", Body=b"", **redirect)
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="big.bin", Body=b"z" * (9 * MiB), **redirect)
    _put_multipart(buckets.source, buckets.source_bucket, "parts.bin", [5 * MiB, 1 * MiB], **redirect)
    report = copy_bucket(_cfg(buckets, tmp_path, mode=mode), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    for key in ("old/page.html", "big.bin", "parts.bin"):
        head = buckets.target.head_object(Bucket=buckets.target_bucket, Key=key)
        assert head.get("WebsiteRedirectLocation") == "/new/page.html", (mode, key)
    assert verify_buckets(_cfg(buckets, tmp_path), RecordingReporter()).status is Status.SUCCESS
    # a redirect that differs on the target is a difference
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="old/page.html", Body=b"", ContentType="text/html",
                              WebsiteRedirectLocation="/elsewhere.html")
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output
    (diff,) = json.loads(res.out)["diffs"]
    assert diff["name"] == "old/page.html" and "WebsiteRedirectLocation" in diff["detail"], diff
