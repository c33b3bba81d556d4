"""s3 copy / verify review (second round): metadata fidelity (website redirects, tags, Expires, non-ASCII
user metadata), archived objects, a source changing mid-run, checksums of objects streamed in parts,
requests per object. Against a real S3 API over HTTP (moto server), two credential sets."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.config import S3CopyConfig
from migrate.model import Status
from migrate.progress import RecordingReporter
from migrate.s3.copier import copy_bucket
from migrate.s3.verify import verify_buckets
from tests.conftest import BucketPair
from tests.support.cli import run_cli

pytestmark = pytest.mark.s3

MiB = 1024 * 1024


def _cfg(b: BucketPair, tmp: Path, **kw: Any) -> S3CopyConfig:
    kw.setdefault("workers", 4)
    return b.config(tmp / "state", **kw)


def _cli_args(b: BucketPair, tmp: Path, *extra: str) -> list[str]:
    return b.cli_args(tmp / "state", *extra)


def _tags(client: Any, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}



@contextlib.contextmanager
def _logged_server(tmp_path: Path, name: str) -> Iterator[tuple[BucketPair, Callable[[], list[str]]]]:
    """A moto server of this test's own, whose request log it reads (one line per request), with a
    source and target bucket `name`-src and `name`-dst; yields them and a reader of the log so far."""
    import time

    from migrate.local.s3server import REGION, SOURCE_KEYS, TARGET_KEYS, LocalS3Server

    log_path = tmp_path / "moto.log"
    server = LocalS3Server(log_path=log_path).start()
    try:
        src, dst = server.client("s3", SOURCE_KEYS), server.client("s3", TARGET_KEYS)
        for client, bucket in ((src, f"{name}-src"), (dst, f"{name}-dst")):
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

        def requests() -> list[str]:
            time.sleep(0.5)  # the server's log is written by its own process
            return log_path.read_text().splitlines()

        yield BucketPair(server, f"{name}-src", f"{name}-dst", src, dst), requests
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["stream", "server-side"])
def test_website_redirect_location_is_kept_and_verified(buckets: BucketPair, tmp_path: Path, mode: str) -> None:
    """x-amz-website-redirect-location (a static website's redirect objects) is object metadata: stream
    mode (PUT and multipart) and a server-side multipart copy (UploadPartCopy copies no metadata) set it
    from the source's answer, and verify compares it. (It was not among the fields kept: a stream copy
    dropped every redirect, and verify said "match".)"""
    redirect = {"WebsiteRedirectLocation": "/new/page.html", "ContentType": "text/html"}
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="old/page.html", Body=b"", **redirect)
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="big.bin", Body=b"z" * (9 * MiB), **redirect)
    buckets.put_multipart("parts.bin", [5 * MiB, 1 * MiB], **redirect)
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


def test_verify_notices_tags_that_differ(buckets: BucketPair, tmp_path: Path) -> None:
    """Object tags are copied (both modes) and compared by verify: tags changed, added or removed on the
    target are a difference. (verify compared only headers and user metadata: any tag difference was
    "match", exit 0.)"""
    for key, tagging in (("same", "team=a&env=prod"), ("changed", "team=a"), ("removed", "team=a"),
                         ("added", None), ("untagged", None)):
        extra = {"Tagging": tagging} if tagging else {}
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=key.encode(), **extra)
    assert copy_bucket(_cfg(buckets, tmp_path, mode="stream"), RecordingReporter()).status is Status.SUCCESS
    assert _tags(buckets.target, buckets.target_bucket, "same") == {"team": "a", "env": "prod"}
    assert verify_buckets(_cfg(buckets, tmp_path), RecordingReporter()).status is Status.SUCCESS
    tb = buckets.target_bucket
    buckets.target.put_object_tagging(Bucket=tb, Key="changed", Tagging={"TagSet": [{"Key": "team", "Value": "b"}]})
    buckets.target.delete_object_tagging(Bucket=tb, Key="removed")
    buckets.target.put_object_tagging(Bucket=tb, Key="added", Tagging={"TagSet": [{"Key": "x", "Value": "1"}]})
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output
    out = json.loads(res.out)
    got = {d["name"]: d["detail"] for d in out["diffs"]}
    assert set(got) == {"changed", "removed", "added"}, got
    assert all("tags" in detail for detail in got.values()), got
    assert out["outcomes"]["match"] == 2


def test_an_object_already_on_the_target_with_other_tags_is_copied(buckets: BucketPair, tmp_path: Path) -> None:
    """An object on the target with the source's bytes (same ETag) that this manifest did not copy has
    its tags compared as well as its metadata: other tags (or other tag values) are copied again."""
    sb, tb = buckets.source_bucket, buckets.target_bucket
    for key in ("count", "values", "same"):
        buckets.source.put_object(Bucket=sb, Key=key, Body=key.encode(), Tagging="team=a&env=prod")
    buckets.target.put_object(Bucket=tb, Key="count", Body=b"count", Tagging="team=a")
    buckets.target.put_object(Bucket=tb, Key="values", Body=b"values", Tagging="team=b&env=prod")
    buckets.target.put_object(Bucket=tb, Key="same", Body=b"same", Tagging="env=prod&team=a")
    report = copy_bucket(_cfg(buckets, tmp_path, mode="stream"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    assert report.totals["metadata_compared"] == 3 and report.totals["metadata_differed"] == 2, report.totals
    assert report.totals["copied"] == 2, report.totals
    for key in ("count", "values", "same"):
        assert _tags(buckets.target, tb, key) == {"team": "a", "env": "prod"}, key
    assert verify_buckets(_cfg(buckets, tmp_path), RecordingReporter()).status is Status.SUCCESS


@pytest.mark.parametrize("mode", ["stream", "server-side"])
def test_archived_objects_fail_with_what_to_do(buckets: BucketPair, tmp_path: Path, mode: str) -> None:
    """GLACIER / DEEP_ARCHIVE objects cannot be read until restored: each fails with a line that says so
    and what to do (it said only `InvalidObjectState: An error occurred ...` and "rerun to retry", which
    fails the same way), the rest is copied, and the run exits 1. The plan warns about them first."""
    sb = buckets.source_bucket
    buckets.source.put_object(Bucket=sb, Key="hot.txt", Body=b"hot")
    buckets.source.put_object(Bucket=sb, Key="cold/glacier.txt", Body=b"cold", StorageClass="GLACIER")
    buckets.source.put_object(Bucket=sb, Key="cold/deep.txt", Body=b"colder", StorageClass="DEEP_ARCHIVE")
    plan = run_cli("s3", "plan", *_cli_args(buckets, tmp_path), "--json", env=buckets.env())
    assert plan.code == 0, plan.output
    warnings = json.loads(plan.out)["warnings"]
    assert any("2 objects" in w and "GLACIER" in w and "restore" in w for w in warnings), warnings
    report_path = tmp_path / "r.jsonl"
    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--mode", mode, "--report", str(report_path)),
                  env=buckets.env())
    assert res.code == 1, res.output
    assert "Traceback" not in res.output
    final = json.loads(report_path.read_text().splitlines()[-1])["report"]
    details = {d["name"]: d["detail"] for d in final["diffs"]}
    assert set(details) == {"cold/glacier.txt", "cold/deep.txt"}, details
    assert "GLACIER" in details["cold/glacier.txt"] and "DEEP_ARCHIVE" in details["cold/deep.txt"], details
    for detail in details.values():
        assert "restore" in detail and "An error occurred" not in detail, detail
    assert final["totals"]["copied"] == 1 and final["totals"]["failed"] == 2, final["totals"]
    assert any("restore" in e for e in final["errors"]), final["errors"]
    assert buckets.target.get_object(Bucket=buckets.target_bucket, Key="hot.txt")["Body"].read() == b"hot"


@pytest.mark.parametrize("mode", ["stream", "server-side"])
def test_source_objects_deleted_or_overwritten_mid_run(buckets: BucketPair, tmp_path: Path, mode: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects deleted from the source between the listing and their copy (small, large single-part,
    multipart) are not counted copied and fail with a line saying what happened (it was S3's `404: An
    error occurred (404) when calling the HeadObject operation: Not Found` or `NoSuchKey: ...`); an
    overwritten one fails as changed; nothing of either lands on the target; a rerun copies the new
    version and leaves the deleted ones out (exit 0)."""
    from migrate.s3 import copier
    sb = buckets.source_bucket
    for key in ("gone", "gone-big", "changed", "changed-big", "kept"):
        buckets.source.put_object(Bucket=sb, Key=key, Body=key.encode() * (1 if "big" not in key else 2 * MiB))
    buckets.put_multipart("gone-mp", [5 * MiB, 1024])
    original = copier.BucketCopier.copy_one

    def racing(self: Any, row: Any) -> Any:  # the source changes after the listing, before the copy
        if row.key.startswith("gone"):
            buckets.source.delete_object(Bucket=sb, Key=row.key)
        elif row.key.startswith("changed"):
            buckets.source.put_object(Bucket=sb, Key=row.key, Body=b"new")
        return original(self, row)

    monkeypatch.setattr(copier.BucketCopier, "copy_one", racing)
    report = copy_bucket(_cfg(buckets, tmp_path, mode=mode), RecordingReporter())
    assert report.process_exit_code() == 1, report.to_dict()
    assert report.totals["copied"] == 1 and report.totals["failed"] == 5, report.totals
    details = {d.name: d.detail for d in report.diffs}
    for key in ("gone", "gone-big", "gone-mp"):
        assert "deleted from the source since it was listed" in details[key], details
    for key in ("changed", "changed-big"):
        assert "changed since it was listed" in details[key], details
    assert all("An error occurred" not in d for d in details.values()), details
    listed = buckets.target.list_objects_v2(Bucket=buckets.target_bucket).get("Contents", [])
    on_target = {o["Key"] for o in listed if not o["Key"].startswith("_paas-migrate/")}
    # (moto ignores CopyObject's x-amz-copy-source-if-match, which S3 honours: there a server-side copy
    # of the new version lands, and is still failed by the check that follows the copy)
    assert on_target == {"kept"} if mode == "stream" else on_target <= {"kept", "changed", "changed-big"}, on_target
    monkeypatch.setattr(copier.BucketCopier, "copy_one", original)
    again = copy_bucket(_cfg(buckets, tmp_path, mode=mode), RecordingReporter())
    assert again.process_exit_code() == 0 and again.totals["failed"] == 0, again.totals
    assert again.totals["objects"] == 3 and again.totals["verified"] == 3, again.totals
    assert buckets.target.get_object(Bucket=buckets.target_bucket, Key="changed")["Body"].read() == b"new"


def test_a_single_part_sha256_source_streamed_in_parts_verifies(buckets: BucketPair, tmp_path: Path) -> None:
    """A single-part source above 8 MiB with a SHA-256 checksum is streamed as a multipart upload with
    SHA-256 part checksums: the target's object checksum is then a checksum of the parts' checksums (S3
    says COMPOSITE, or `-N`), not the SHA-256 of the object. verify compared the two as if both were
    full-object checksums and reported `content differs` (exit 3) for a correct copy; a multipart
    object's checksum counts as full-object only when S3 says so (ChecksumType FULL_OBJECT)."""
    body = hashlib.sha256(b"seed").digest() * (9 * MiB // 32)
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="big.bin", Body=body, ChecksumAlgorithm="SHA256")
    report = copy_bucket(_cfg(buckets, tmp_path, mode="stream"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 0, res.output
    assert json.loads(res.out)["outcomes"]["match"] == 1
    # a real difference in such an object is still found (by reading both sides)
    other = body[:-1] + b"!"
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="big.bin", Body=other)
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output


def test_verify_notices_an_expires_header_that_is_not_a_date(buckets: BucketPair, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """S3 keeps an Expires header that is not a date (`Expires: never`, a common way to say "already
    expired"); botocore parses it to None and gives the raw value as ExpiresString. Stream mode cannot
    send such a value (the API takes a date): the copy says so, and verify reports the difference (it
    compared only the parsed dates, None on both sides: "match", exit 0). A server-side copy keeps it."""
    _put_raw(buckets.source, buckets.source_bucket, "k", {"Expires": "never"})
    assert buckets.source.head_object(Bucket=buckets.source_bucket, Key="k").get("ExpiresString") == "never"
    report = copy_bucket(_cfg(buckets, tmp_path, mode="stream"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    said = [r.getMessage() for r in caplog.records if r.name.startswith("migrate.")]
    assert any("Expires" in m and "never" in m for m in said), said
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output
    (diff,) = json.loads(res.out)["diffs"]
    assert "Expires" in diff["detail"], diff
    # server-side (CopyObject copies the header as stored): equal, and verify says so
    buckets.target.delete_object(Bucket=buckets.target_bucket, Key="k")
    again = copy_bucket(_cfg(buckets, tmp_path, mode="server-side"), RecordingReporter())
    assert again.status is Status.SUCCESS and again.totals["copied"] == 1, again.totals
    assert verify_buckets(_cfg(buckets, tmp_path), RecordingReporter()).status is Status.SUCCESS


def test_tags_the_source_credential_may_not_read_are_a_warning_in_the_report(tmp_path: Path) -> None:
    """A source credential without s3:GetObjectTagging: the object is copied without its tags (they are
    kept when readable), and the report says so, with a count (it was only a log line per object: the
    report, --json and --report said success with nothing lost)."""
    from migrate.local.s3server import REGION, LocalS3Server

    setup_requests = 8
    try:
        server = LocalS3Server(env={"INITIAL_NO_AUTH_ACTION_COUNT": str(setup_requests)}).start()
    except Exception as exc:
        pytest.skip(f"local S3 API server (moto) could not start: {exc}")
    try:
        iam = server.client("iam")
        allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        no_tags = {"Effect": "Deny", "Action": "s3:GetObjectTagging", "Resource": "*"}
        keys = {}
        for side, statements in (("source", [allow, no_tags]), ("target", [allow])):
            iam.create_user(UserName=f"{side}-user")
            iam.put_user_policy(UserName=f"{side}-user", PolicyName="s3",
                                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
            k = iam.create_access_key(UserName=f"{side}-user")["AccessKey"]
            keys[side] = {"access_key_id": k["AccessKeyId"], "secret_access_key": k["SecretAccessKey"]}
        src = server.client("s3", keys["source"])
        src.create_bucket(Bucket="tags-src", CreateBucketConfiguration={"LocationConstraint": REGION})
        src.create_bucket(Bucket="tags-dst", CreateBucketConfiguration={"LocationConstraint": REGION})
        src.put_object(Bucket="tags-src", Key="tagged", Body=b"x", Tagging="team=a")
        src.put_object(Bucket="tags-src", Key="plain", Body=b"y")
        env = {"MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": keys["source"]["access_key_id"],
               "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": keys["source"]["secret_access_key"],
               "MIGRATE_TARGET_AWS_ACCESS_KEY_ID": keys["target"]["access_key_id"],
               "MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": keys["target"]["secret_access_key"],
               "MIGRATE_SOURCE_AWS_REGION": REGION, "MIGRATE_TARGET_AWS_REGION": REGION}
        res = run_cli("s3", "copy", "--source", "s3://tags-src", "--target", "s3://tags-dst", "--mode", "stream",
                      "--source-endpoint-url", server.endpoint_url, "--target-endpoint-url", server.endpoint_url,
                      "--state-dir", str(tmp_path / "state"), "--json", env=env)
        assert res.code == 0, res.output
        out = json.loads(res.out)
        assert out["totals"]["copied"] == 2 and out["totals"]["tags_not_copied"] == 1, out["totals"]
        assert any("1 object copied without its tags" in w and "s3:GetObjectTagging" in w
                   for w in out["warnings"]), out["warnings"]
    finally:
        server.stop()


def test_stream_mode_reads_a_large_single_part_object_with_one_request(tmp_path: Path) -> None:
    """A single-part source just above the single-PUT limit (8 MiB + 1 byte) is streamed as a multipart
    upload with one GET of the source: its answer carries the metadata and checksum. (A HEAD preceded
    every such GET: one extra request per large object.) At the limit itself: one GET, one PUT; each also
    has its tags read (GetObjectTagging), as the source has tags. Counted
    in the moto server's request log; both objects verified by their SHA-256."""
    import re

    with _logged_server(tmp_path, "count") as (b, log):
        src, dst = b.source, b.target
        for key, size in (("at-limit", 8 * MiB), ("over-limit", 8 * MiB + 1)):
            src.put_object(Bucket="count-src", Key=key, Body=b"a" * size, ChecksumAlgorithm="SHA256",
                           ContentType="text/csv", Metadata={"k": "v"}, Tagging="t=1")
        report = copy_bucket(_cfg(b, tmp_path, mode="stream"), RecordingReporter())
        assert report.status is Status.SUCCESS and report.totals["verified"] == 2, report.to_dict()
        requests: dict[str, list[str]] = {}
        for line in log():
            m = re.search(r'"(\w+) /count-src/([^ ?]+)', line)
            if m:
                requests.setdefault(m.group(2), []).append(m.group(1))
        # each was PUT once by this test first; then the object's GET and its tags' GET (?tagging)
        assert requests["at-limit"] == ["PUT", "GET", "GET"], requests
        assert requests["over-limit"] == ["PUT", "GET", "GET"], requests
        head = dst.head_object(Bucket="count-dst", Key="over-limit")
        assert head["ContentType"] == "text/csv" and head["Metadata"] == {"k": "v"}
        assert _tags(dst, "count-dst", "over-limit") == {"t": "1"}


def _put_raw(client: Any, bucket: str, key: str, headers: dict[str, str]) -> None:
    """PUT through a presigned URL with headers botocore would not send (raw UTF-8 metadata, an Expires
    that is not a date), as other clients do."""
    import urllib.request

    url = client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key})
    # http.client sends header values as latin-1: these are the UTF-8 bytes
    raw = {k: v.encode().decode("latin-1") for k, v in headers.items()}
    urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="PUT", headers=raw))


def test_non_ascii_user_metadata_is_copied_and_verified(buckets: BucketPair, tmp_path: Path) -> None:
    """User metadata with non-ASCII values. S3 returns them RFC 2047-encoded (`=?UTF-8?B?...?=`) and
    decodes such a value when it is stored; other implementations (moto here) return the raw UTF-8
    bytes, which botocore refuses to send: stream mode failed the object (`ParamValidationError: Non
    ascii characters found in S3 metadata`). Now such a value is sent RFC 2047-encoded, and verify
    compares the values as text (either form)."""
    _put_raw(buckets.source, buckets.source_bucket, "k", {"x-amz-meta-name": "café 日本"})
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="encoded", Body=b"x",
                              Metadata={"name": "=?UTF-8?B?Y2Fmw6k=?="})
    report = copy_bucket(_cfg(buckets, tmp_path, mode="stream"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 0, res.output
    # a different non-ASCII value on the target is a difference
    _put_raw(buckets.target, buckets.target_bucket, "k", {"x-amz-meta-name": "cafe 日本"})
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output
    (diff,) = json.loads(res.out)["diffs"]
    assert diff["name"] == "k" and "user metadata" in diff["detail"], diff


def test_an_empty_object_uploaded_in_one_part_is_copied_whole_server_side(tmp_path: Path) -> None:
    """An empty object uploaded as a single empty part (ETag "...-1", size 0) was copied server-side part
    by part: UploadPartCopy with the range "bytes=0--1", which S3 rejects (moto does not). Now one
    CopyObject, verified (no bytes to differ). Counted in the moto server's request log."""
    import re

    with _logged_server(tmp_path, "empty") as (b, log):
        src, dst = b.source, b.target
        b.put_multipart("empty-mp", [0])
        assert src.head_object(Bucket="empty-src", Key="empty-mp")["ETag"].endswith('-1"')
        report = copy_bucket(_cfg(b, tmp_path, mode="server-side"), RecordingReporter())
        assert report.status is Status.SUCCESS and report.totals["verified"] == 1, report.to_dict()
        parts = [ln for ln in log() if re.search(r'"PUT /empty-dst/empty-mp\?.*partNumber', ln)]
        assert parts == [], parts
        assert dst.head_object(Bucket="empty-dst", Key="empty-mp")["ContentLength"] == 0
        assert verify_buckets(_cfg(b, tmp_path), RecordingReporter()).status is Status.SUCCESS
