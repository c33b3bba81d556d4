"""s3 plan / copy / verify against a real S3 API over HTTP (moto server), two credential sets."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from migrate.config import S3CopyConfig, S3Side
from migrate.errors import Interrupted
from migrate.model import Outcome, Status
from migrate.progress import RecordingReporter
from migrate.s3 import clients
from migrate.s3.copier import copy_bucket
from migrate.s3.manifest import Manifest, manifest_path
from migrate.s3.planner import plan_copy
from migrate.s3.verify import verify_buckets
from tests.conftest import BucketPair
from tests.support.cli import interrupt, run_cli, start_cli
from tests.support.s3faults import CorruptingClient, KmsTargetClient

pytestmark = pytest.mark.s3

MiB = 1024 * 1024

AWKWARD_KEYS = [
    "plain.txt",
    "with space/and more spaces.csv",
    "unicode/café/日本語/ファイル.txt",
    "symbols/a+b%20c?d#e&f=g.bin",
    "double//slash///key",
    "folder/",
    "empty-file",
    "deep/" + "k" * 900,
]


def _cfg(b: BucketPair, tmp: Path, **kw: Any) -> S3CopyConfig:
    kw.setdefault("workers", 8)
    return b.config(tmp / "state", **kw)


def _cli_args(b: BucketPair, tmp: Path, *extra: str) -> list[str]:
    return b.cli_args(tmp / "state", *extra)


def _put_awkward(b: BucketPair) -> dict[str, bytes]:
    bodies = {}
    for i, key in enumerate(AWKWARD_KEYS):
        body = b"" if key.endswith("/") or key == "empty-file" else f"{key}:{i}".encode() * (i + 1)
        b.source.put_object(Bucket=b.source_bucket, Key=key, Body=body)
        bodies[key] = body
    return bodies



def _no_checksum_client(b: BucketPair) -> Any:
    """A source client that sends no additional checksum (like older SDKs): only the ETag is evidence."""
    import boto3
    from botocore.config import Config

    from migrate.local.s3server import REGION, SOURCE_KEYS

    return boto3.client("s3", endpoint_url=b.endpoint_url, region_name=REGION,
                        aws_access_key_id=SOURCE_KEYS["access_key_id"],
                        aws_secret_access_key=SOURCE_KEYS["secret_access_key"],
                        config=Config(request_checksum_calculation="when_required"))


def _target_keys(b: BucketPair) -> set[str]:
    """The target's objects, without the journal a copy keeps there (test_s3_journal.py)."""
    pages = b.target.get_paginator("list_objects_v2").paginate(Bucket=b.target_bucket)
    return {o["Key"] for p in pages for o in p.get("Contents", []) if not o["Key"].startswith("_paas-migrate/")}


def _body(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_stream_copy_of_awkward_keys_via_cli_then_rerun_copies_nothing(buckets: BucketPair, tmp_path: Path) -> None:
    bodies = _put_awkward(buckets)
    buckets.source.put_object(
        Bucket=buckets.source_bucket, Key="meta.html", Body=b"<p>hi</p>", ContentType="text/html",
        CacheControl="max-age=60", ContentDisposition="attachment; filename=x.html", ContentEncoding="identity",
        ContentLanguage="en-GB", Expires="Thu, 01 Dec 2033 16:00:00 GMT", Metadata={"owner": "team-a"},
        Tagging="class=public&year=2024", ChecksumAlgorithm="SHA256",
    )
    report_path = tmp_path / "keys.jsonl"
    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--mode", "stream", "--report", str(report_path),
                                            "--workers", "4"), env=buckets.env())
    assert res.code == 0, res.output
    assert _target_keys(buckets) == set(AWKWARD_KEYS) | {"meta.html"}
    for key, body in bodies.items():
        assert _body(buckets.target, buckets.target_bucket, key) == body, key
    head = buckets.target.head_object(Bucket=buckets.target_bucket, Key="meta.html")
    assert head["ContentType"] == "text/html"
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == "attachment; filename=x.html"
    assert head["ContentEncoding"] == "identity"
    assert head["ContentLanguage"] == "en-GB"
    assert head["Expires"].year == 2033
    assert head["Metadata"] == {"owner": "team-a"}
    tags = buckets.target.get_object_tagging(Bucket=buckets.target_bucket, Key="meta.html")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"class": "public", "year": "2024"}

    lines = [json.loads(line) for line in report_path.read_text().splitlines()]
    per_key = {d["key"]: d for d in lines if "key" in d}
    assert set(per_key) == set(bodies) | {"meta.html"}
    assert per_key["meta.html"]["evidence"] == "sha256"
    # the test's boto3 adds a CRC32 to every PutObject by default: that is the best evidence then
    assert per_key["plain.txt"]["evidence"] == "crc32"
    assert all(d["status"] == "verified" for d in per_key.values())
    totals = lines[-1]["report"]["totals"]
    assert totals["copied"] == len(per_key) and totals["failed"] == 0 and totals["verified"] == len(per_key)

    again = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--json"), env=buckets.env())
    assert again.code == 0, again.output
    totals = json.loads(again.out)["totals"]
    assert totals["copied"] == 0 and totals["skipped"] == len(per_key)
    assert totals["metadata_compared"] == 0  # objects this manifest copied: no metadata requests

    check = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert check.code == 0, check.output
    assert json.loads(check.out)["totals"]["match"] == len(per_key)


def test_multipart_source_is_verified_and_keeps_its_etag(buckets: BucketPair, tmp_path: Path) -> None:
    whole = buckets.put_multipart("big/multi.bin", [5 * MiB, 5 * MiB, 123])
    single = os.urandom(9 * MiB + 7)  # single-part source above the single-PUT size: uploaded in parts
    _no_checksum_client(buckets).put_object(Bucket=buckets.source_bucket, Key="big/single.bin", Body=single)
    _no_checksum_client(buckets).put_object(Bucket=buckets.source_bucket, Key="small.txt", Body=b"tiny")
    rec = RecordingReporter()
    report = copy_bucket(_cfg(buckets, tmp_path, mode="stream"), rec)
    assert report.status is Status.SUCCESS, report.to_dict()
    assert report.totals["verified"] == 3 and report.totals["size_only"] == 0
    assert _body(buckets.target, buckets.target_bucket, "big/multi.bin") == whole
    assert _body(buckets.target, buckets.target_bucket, "big/single.bin") == single
    src_etag = buckets.source.head_object(Bucket=buckets.source_bucket, Key="big/multi.bin")["ETag"]
    assert src_etag.endswith('-3"')
    assert buckets.target.head_object(Bucket=buckets.target_bucket, Key="big/multi.bin")["ETag"] == src_etag
    m = Manifest(manifest_path(_cfg(buckets, tmp_path)))
    evidence = dict(m.db.execute("SELECT key, evidence FROM objects"))
    m.close()
    assert evidence == {"big/multi.bin": "md5-of-parts", "big/single.bin": "md5", "small.txt": "md5"}
    # progress: bytes add up to what was copied
    done = sum(v for k, t, v in rec.events if k == "progress" and t == "copy bytes")
    assert done == len(whole) + len(single) + 4
    # the source listing is its own task, and the copy's totals are what the listing found to copy
    listing, objects = rec.tasks["list source"], rec.tasks["copy objects"]
    assert listing.finished and listing.ok and listing.done == 3
    assert objects.total == 3 and objects.done == 3 and rec.tasks["copy bytes"].total == done


def test_stream_mix_of_multipart_and_large_single_part_sources_does_not_hang(
        buckets: BucketPair, tmp_path: Path) -> None:
    """Large single-part sources reserve memory for parts queued for upload while multipart sources read
    their parts on worker threads, waiting for memory: with one pool for both, every thread could be a
    reader waiting for memory that only the uploads queued behind it would free (a hang, for ever).
    Run as the user does, in a process that is killed if it hangs."""
    import subprocess

    for i in range(3):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"k{i}-a-single", Body=os.urandom(40 * MiB))
        buckets.put_multipart(f"k{i}-b-multi", [5 * MiB] * 6)
    try:
        res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--mode", "stream", "--workers", "2", "--json"),
                      env=buckets.env(), timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("s3 copy did not finish in 120 s (it hung) on a mix of multipart and large single-part sources")
    assert res.code == 0, res.output
    totals = json.loads(res.out)["totals"]
    assert totals["copied"] == 6 and totals["verified"] == 6, totals


def test_server_side_and_auto_modes(buckets: BucketPair, tmp_path: Path) -> None:
    _put_awkward(buckets)
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="typed.json", Body=b"{}",
                              ContentType="application/json", Metadata={"a": "1"})
    whole = buckets.put_multipart("multi.bin", [5 * MiB, 777],
                           ContentType="application/pdf", Metadata={"m": "2"})
    n = len(AWKWARD_KEYS) + 2
    report = copy_bucket(_cfg(buckets, tmp_path, mode="auto"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    assert report.totals["mode"] == "server-side"
    assert report.totals["copied"] == n
    assert report.totals["verified"] == n and report.totals["size_only"] == 0
    head = buckets.target.head_object(Bucket=buckets.target_bucket, Key="typed.json")
    assert head["ContentType"] == "application/json" and head["Metadata"] == {"a": "1"}
    # a multipart source keeps its part boundaries (UploadPartCopy), so its ETag is reproduced exactly
    head = buckets.target.head_object(Bucket=buckets.target_bucket, Key="multi.bin")
    assert head["ETag"] == buckets.source.head_object(Bucket=buckets.source_bucket, Key="multi.bin")["ETag"]
    assert head["ContentType"] == "application/pdf" and head["Metadata"] == {"m": "2"}
    assert _body(buckets.target, buckets.target_bucket, "multi.bin") == whole
    assert [p.name for p in report.phases] == ["list", "plan", "copy", "verify"]
    v = verify_buckets(_cfg(buckets, tmp_path), RecordingReporter())
    assert v.status is Status.SUCCESS and v.totals["match"] == n


def test_server_side_above_the_copy_object_limit_uses_upload_part_copy(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A single-part source above CopyObject's 5 GiB limit is copied with UploadPartCopy in even parts.
    The limit is lowered here (moto would need 5 GiB of memory); nothing on either side can prove such
    a copy without reading it, so it is size-only, never called verified."""
    from migrate.s3 import copier

    monkeypatch.setattr(copier, "COPY_OBJECT_MAX", 10 * MiB)
    monkeypatch.setattr(copier, "COPY_PART_SIZE", 8 * MiB)
    body = os.urandom(11 * MiB + 5)
    _no_checksum_client(buckets).put_object(Bucket=buckets.source_bucket, Key="huge.bin", Body=body,
                                            ContentType="text/csv", Metadata={"origin": "paas"})
    _no_checksum_client(buckets).put_object(Bucket=buckets.source_bucket, Key="small.bin", Body=b"s")
    report = copy_bucket(_cfg(buckets, tmp_path, mode="server-side"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    assert report.totals["verified"] == 1 and report.totals["size_only"] == 1
    head = buckets.target.head_object(Bucket=buckets.target_bucket, Key="huge.bin")
    assert head["ETag"].endswith('-2"')  # two parts of 5.5 MiB: UploadPartCopy, not CopyObject
    assert head["ContentType"] == "text/csv" and head["Metadata"] == {"origin": "paas"}
    assert _body(buckets.target, buckets.target_bucket, "huge.bin") == body
    m = Manifest(manifest_path(_cfg(buckets, tmp_path)))
    status = dict(m.db.execute("SELECT key, status FROM objects"))
    m.close()
    assert status == {"huge.bin": "size-only", "small.bin": "verified"}


def test_dry_run_and_plan_write_nothing(buckets: BucketPair, tmp_path: Path) -> None:
    _put_awkward(buckets)
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="plain.txt", Body=b"other")
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="only-on-target", Body=b"x")
    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--dry-run", "--json"), env=buckets.env())
    assert res.code == 0, res.output
    facts = json.loads(res.out)["facts"]
    assert facts["missing on target"] == len(AWKWARD_KEYS) - 1
    assert facts["differ"] == 1 and facts["match"] == 0 and facts["extra on target"] == 1
    assert _target_keys(buckets) == {"plain.txt", "only-on-target"}
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())
    plan = plan_copy(_cfg(buckets, tmp_path))
    assert plan.kind == "s3" and plan.facts["differ"] == 1


def test_corrupted_byte_in_stream_is_caught_and_not_verified(
    buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="ok.txt", Body=b"fine")
    _no_checksum_client(buckets).put_object(Bucket=buckets.source_bucket, Key="bad-small.txt",
                                            Body=b"0123456789" * 100)
    buckets.put_multipart("bad-multi.bin", [5 * MiB, 1000])
    real = clients.make_client
    wrappers: list[CorruptingClient] = []

    def faulty(side: Any, **kw: Any) -> Any:
        client = real(side, **kw)
        if side.location.bucket == buckets.source_bucket and not kw.get("probe"):
            wrappers.append(CorruptingClient(client, marker="bad-", at=77))
            return wrappers[-1]
        return client

    monkeypatch.setattr(clients, "make_client", faulty)
    cfg = _cfg(buckets, tmp_path, mode="stream")
    report = copy_bucket(cfg, RecordingReporter())
    assert wrappers and wrappers[0].corrupted >= 2
    assert report.status.exit_code() == 1
    assert report.totals["failed"] == 2 and report.totals["verified"] == 1
    failed = {d.name: d.detail for d in report.diffs if d.outcome is Outcome.ERROR}
    assert set(failed) == {"bad-small.txt", "bad-multi.bin"}
    assert all("checksum mismatch" in v for v in failed.values())
    # nothing corrupted landed on the target, and nothing corrupted is marked verified
    assert _target_keys(buckets) == {"ok.txt"}
    m = Manifest(manifest_path(cfg))
    statuses = dict(m.db.execute("SELECT key, status FROM objects"))
    m.close()
    assert statuses == {"ok.txt": "verified", "bad-small.txt": "failed", "bad-multi.bin": "failed"}
    # without the fault, a rerun copies exactly the two failed objects
    monkeypatch.setattr(clients, "make_client", real)
    again = copy_bucket(cfg, RecordingReporter())
    assert again.status is Status.SUCCESS and again.totals["copied"] == 2 and again.totals["skipped"] == 1


def test_stream_into_a_bucket_with_default_sse_kms_without_sse_option(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On real S3 an object stored with SSE-KMS, also by the bucket's default encryption, has an ETag that
    is not the MD5 of its bytes. Whether the target's ETag can be compared with the MD5 of what was sent
    is decided from S3's answer (its ServerSideEncryption), not from --sse: every object used to fail
    unless --sse aws:kms was given. Where it cannot, S3 itself checked the upload's Content-MD5 and
    SHA-256 headers; the manifest and the report say which check each object had."""
    from migrate.local.s3server import REGION

    buckets.target.put_bucket_encryption(Bucket=buckets.target_bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    plain_bucket = buckets.target_bucket + "-plain"  # no default encryption
    buckets.target.create_bucket(Bucket=plain_bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    for i in range(3):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"k{i}", Body=os.urandom(1000))
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="big", Body=os.urandom(12 * MiB))  # parts
    buckets.put_multipart("multi", [5 * MiB, 1000])  # source parts
    keys = ("k0", "k1", "k2", "big", "multi")
    real = clients.make_client
    say_encrypted = {"value": True}

    def kms_like(side: Any, **kw: Any) -> Any:
        client = real(side, **kw)
        if side.location.bucket == buckets.target_bucket and not kw.get("probe"):
            return KmsTargetClient(client, say_encrypted=say_encrypted["value"])
        return client

    def cfg(target: str) -> S3CopyConfig:
        env = buckets.env()
        src = S3Side.build("source", f"s3://{buckets.source_bucket}", endpoint_url=buckets.endpoint_url, environ=env)
        tgt = S3Side.build("target", f"s3://{target}", endpoint_url=buckets.endpoint_url, environ=env)
        return S3CopyConfig(source=src, target=tgt, state_dir=tmp_path / target, workers=4, mode="stream")

    def target_checks(c: S3CopyConfig) -> dict[str, str]:
        m = Manifest(manifest_path(c))
        try:
            return dict(m.db.execute("SELECT key, target_check FROM objects WHERE status = 'verified'"))
        finally:
            m.close()

    monkeypatch.setattr(clients, "make_client", kms_like)
    kms = cfg(buckets.target_bucket)
    report = copy_bucket(kms, RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    assert report.totals["verified"] == 5 and report.totals["failed"] == 0
    assert report.totals["target_checked_by_upload_checksums"] == 5
    assert target_checks(kms) == dict.fromkeys(keys, "upload checksums")
    verify_phase = next(p for p in report.phases if p.name == "verify")
    assert "5 stored encrypted with a non-MD5 ETag" in verify_phase.note, verify_phase.note

    # an ETag that is not the MD5 of what was sent, and no encryption to explain it: still refused
    say_encrypted["value"] = False
    damaged = copy_bucket(cfg(f"{buckets.target_bucket}/damaged"), RecordingReporter())
    assert damaged.status.exit_code() == 1 and damaged.totals["failed"] == 5, damaged.to_dict()
    assert all("target stored ETag" in d.detail for d in damaged.diffs), damaged.diffs

    # a bucket without encryption (moto's own answers, MD5 ETags): compared with the MD5 of what was sent
    plain = copy_bucket(cfg(plain_bucket), RecordingReporter())
    assert plain.status is Status.SUCCESS and plain.totals["target_checked_by_md5_etag"] == 5, plain.to_dict()
    assert target_checks(cfg(plain_bucket)) == dict.fromkeys(keys, "md5 etag")


def test_listing_failure_mid_copy_is_one_error_and_a_rerun_finishes(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy starts while the source is still being listed: a listing that fails half-way stops the
    run with one error naming the source side, keeps what was copied (verified in the manifest), and a
    rerun copies only the rest."""
    from botocore.exceptions import ClientError

    from migrate.errors import MigrateError
    from migrate.s3 import copier

    for i in range(20):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"k{i:02d}", Body=b"v" * (i + 1))

    class FailingPaginator:
        def __init__(self, real: Any) -> None:
            self._real = real

        def paginate(self, **kw: Any) -> Any:
            for n, page in enumerate(self._real.paginate(**kw, PaginationConfig={"PageSize": 5})):
                if n == 2:
                    raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "ListObjectsV2")
                yield page

    class FailingListClient:
        def __init__(self, client: Any) -> None:
            self._client = client

        def get_paginator(self, name: str) -> Any:
            return FailingPaginator(self._client.get_paginator(name))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    real_make, real_list = clients.make_client, copier.list_in_background

    def faulty(side: Any, **kw: Any) -> Any:
        client = real_make(side, **kw)
        return FailingListClient(client) if side.location.bucket == buckets.source_bucket else client

    monkeypatch.setattr(clients, "make_client", faulty)
    monkeypatch.setattr(copier, "list_in_background", lambda *a, **kw: real_list(*a, **kw, page=5))
    cfg = _cfg(buckets, tmp_path, mode="stream")
    with pytest.raises(MigrateError) as err:
        copy_bucket(cfg, RecordingReporter())
    assert "source" in err.value.message and "InternalError" in err.value.message
    m = Manifest(manifest_path(cfg))
    statuses = dict(m.db.execute("SELECT key, status FROM objects"))
    m.close()
    done = {k for k, st in statuses.items() if st == "verified"}
    assert 0 < len(done) <= 10 and set(statuses) <= {f"k{i:02d}" for i in range(10)}
    assert done <= _target_keys(buckets)
    monkeypatch.setattr(clients, "make_client", real_make)
    again = copy_bucket(cfg, RecordingReporter())
    assert again.status is Status.SUCCESS
    assert again.totals["copied"] + again.totals["skipped"] == 20 and again.totals["skipped"] == len(done)
    assert len(_target_keys(buckets)) == 20


def test_interrupt_during_the_copy_stops_the_listing_too(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while results are recorded (the listing still running ahead): the listing thread ends
    with the copy, not whenever the exception is garbage-collected, and its task is closed."""
    import threading

    from migrate.s3 import copier

    for i in range(60):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"k{i:03d}", Body=b"x")
    real_list, real_record = copier.list_in_background, Manifest.record
    # pages of 5 keys, at most 2 listed ahead: the listing is still running when the copy stops
    monkeypatch.setattr(copier, "list_in_background", lambda *a, **kw: real_list(*a, **kw, page=5, depth=2))
    monkeypatch.setattr(copier, "FLUSH_SECONDS", 0.0)
    calls = {"n": 0}

    def record(self: Manifest, results: Any) -> None:
        if results:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        real_record(self, results)

    monkeypatch.setattr(Manifest, "record", record)
    rec = RecordingReporter()
    try:
        copy_bucket(_cfg(buckets, tmp_path, mode="stream"), rec)
    except Interrupted as exc:
        # The report files of an interrupted copy still list what it copied (its manifest).
        assert Path(exc.report.totals["manifest"]).exists(), exc.report.totals
        assert exc.exit_code == 130 and "run the same s3 copy again" in str(exc)
        # still handling it (as the CLI's error boundary does): its traceback keeps copy_bucket's frames
        # The listing thread notices a stop within 0.5 s; allow far more on a loaded 2-core machine
        # (the assertion is that it ends at all while the exception is being handled, not how fast).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(t.name == "s3-list-source" for t in threading.enumerate()):
            time.sleep(0.1)
        assert not any(t.name == "s3-list-source" for t in threading.enumerate())
        assert rec.tasks["list source"].finished
    else:
        pytest.fail("the copy was not interrupted")


def test_interrupted_copy_resumes_without_double_counting(buckets: BucketPair, tmp_path: Path) -> None:
    n = 600  # big enough that SIGTERM lands mid-copy even on an idle machine
    for i in range(n):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"obj/{i:04d}", Body=os.urandom(2000))
    args = _cli_args(buckets, tmp_path, "--mode", "stream", "--workers", "2")
    report_path = tmp_path / "interrupted.jsonl"
    proc = start_cli("s3", "copy", *args, "--report", str(report_path), env=buckets.env())
    state = tmp_path / "state"
    done = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        dbs = list(state.glob("*.sqlite")) if state.exists() else []
        if dbs:
            try:
                with sqlite3.connect(dbs[0]) as db:
                    done = db.execute("SELECT count(*) FROM objects WHERE status = 'verified'").fetchone()[0]
            except sqlite3.Error:
                done = 0
            if done >= 10:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the copy finished before it could be interrupted (make it bigger)"
    res = interrupt(proc, signal.SIGTERM)
    assert res.code == 130, res.output
    assert "interrupted" in res.err and "Traceback" not in res.err
    with sqlite3.connect(next(state.glob("*.sqlite"))) as db:
        verified_before = db.execute("SELECT count(*) FROM objects WHERE status = 'verified'").fetchone()[0]
    assert 10 <= verified_before < n
    # The per-key report is written for the interrupted run too: what was copied, and its status.
    lines = [json.loads(line) for line in report_path.read_text().splitlines()]
    assert lines[-1]["report"]["status"] == "interrupted" and lines[-1]["report"]["exit_code"] == 130
    assert sum(row.get("status") == "verified" for row in lines[:-1]) == verified_before
    again = run_cli("s3", "copy", *args, "--json", env=buckets.env())
    assert again.code == 0, again.output
    totals = json.loads(again.out)["totals"]
    assert totals["skipped"] >= verified_before
    assert totals["copied"] + totals["skipped"] == n
    assert totals["verified"] == n
    assert len(_target_keys(buckets)) == n


def test_verify_catches_changed_missing_extra_and_metadata(buckets: BucketPair, tmp_path: Path) -> None:
    for key in ("same", "changed", "missing", "meta"):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=f"body of {key}".encode(),
                                  ContentType="text/plain")
    assert copy_bucket(_cfg(buckets, tmp_path, mode="stream"), RecordingReporter()).status is Status.SUCCESS
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="changed", Body=b"body of chang3d",
                              ContentType="text/plain")
    buckets.target.delete_object(Bucket=buckets.target_bucket, Key="missing")
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="extra", Body=b"x")
    buckets.target.copy_object(Bucket=buckets.target_bucket, Key="meta", MetadataDirective="REPLACE",
                               CopySource={"Bucket": buckets.target_bucket, "Key": "meta"},
                               ContentType="application/octet-stream")
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output
    out = json.loads(res.out)
    got = {d["name"]: d["outcome"] for d in out["diffs"]}  # differences only: matches are counted
    assert got == {"changed": "differ", "missing": "missing on target", "extra": "extra on target", "meta": "differ"}
    assert out["outcomes"] == {"match": 1, "differ": 2, "missing on target": 1, "extra on target": 1, "error": 0}
    meta = next(d for d in out["diffs"] if d["name"] == "meta")
    assert "ContentType" in meta["detail"]
    # and a rerun of copy repairs what it owns: the changed and the missing object
    again = copy_bucket(_cfg(buckets, tmp_path, mode="stream"), RecordingReporter())
    assert again.totals["copied"] == 2

    def body(key: str) -> bytes:
        return buckets.target.get_object(Bucket=buckets.target_bucket, Key=key)["Body"].read()

    assert body("changed") == b"body of changed" and body("missing") == b"body of missing"
    assert body("extra") == b"x"  # not the copy's: left alone
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output
    got = {d["name"]: d["outcome"] for d in json.loads(res.out)["diffs"]}
    assert got == {"extra": "extra on target", "meta": "differ"}
    assert json.loads(res.out)["totals"]["match"] == 3


def test_verify_counts_every_difference_beyond_the_listed_ones(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report lists at most MAX_DIFFS objects (10,000; lowered here), and only differences: a
    difference after the first MAX_DIFFS compared objects still makes verify exit 3, and the counts are
    complete. (The list used to hold the first results, matches included, and the status came from it:
    a bucket of more than 10,000 objects differing near its end was 'success'.)"""
    from migrate.s3 import verify

    monkeypatch.setattr(verify, "MAX_DIFFS", 2)
    for i in range(8):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"obj/{i}", Body=f"same {i}".encode())
        body = f"same {i}" if i < 5 else f"DIFF {i}"
        buckets.target.put_object(Bucket=buckets.target_bucket, Key=f"obj/{i}", Body=body.encode())
    report = verify_buckets(_cfg(buckets, tmp_path, workers=1), RecordingReporter())
    assert report.status is Status.DIFFERS and report.process_exit_code() == 3, report.to_dict()
    assert report.totals["match"] == 5 and report.totals["differ"] == 3
    assert report.outcome_totals()["match"] == 5 and report.outcome_totals()["differ"] == 3
    assert len(report.diffs) == 2 and all(d.outcome is Outcome.DIFFER for d in report.diffs)
    assert any("only the first 2 differences are listed (1 more)" in w for w in report.warnings), report.warnings
    # the command's summary counts the matches it no longer lists (MAX_DIFFS is lowered only in this process)
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], env=buckets.env())
    assert res.code == 3, res.output
    assert "verification: 5 match, 3 differ, 0 missing on target" in res.out, res.out
    assert "verified: 5 of 8 compared items match the source; 3 differ" in res.out, res.out
    assert "error: verification found 3 differences" in res.err, res.err


def test_a_prefix_is_a_folder_on_both_sides(buckets: BucketPair, tmp_path: Path) -> None:
    """s3://src/exports/ -> s3://tgt/archive puts exports/a.csv at archive/a.csv (it was glued into
    'archivea.csv'), and s3://src/data is the folder data/, not every key starting with 'data'
    ('database.csv' was copied as '<target prefix>base.csv'): plan, copy and verify alike."""
    for key in ("exports/a.csv", "exports/sub/b.csv", "data/x.csv", "database.csv"):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=key.encode())

    def args(source: str, target: str, *extra: str) -> list[str]:
        return ["--source", f"s3://{buckets.source_bucket}/{source}", "--target", f"s3://{buckets.target_bucket}/{target}",
                "--source-endpoint-url", buckets.endpoint_url, "--target-endpoint-url", buckets.endpoint_url, *extra]

    plan = run_cli("s3", "plan", *args("data", "new", "--json", "--state-dir", str(tmp_path / "s1")),
                   env=buckets.env())
    assert plan.code == 0, plan.output
    assert json.loads(plan.out)["facts"]["source objects"] == 1
    for n, (source, target) in enumerate((("exports/", "archive"), ("data", "new"))):
        res = run_cli("s3", "copy", *args(source, target, "--state-dir", str(tmp_path / f"s{n}")), env=buckets.env())
        assert res.code == 0, res.output
    copied = {"archive/a.csv", "archive/sub/b.csv", "new/x.csv"}
    # each copy's journal is in its own target folder
    assert {k.split("/_paas-migrate/")[0] for k in _target_keys(buckets) - copied} == {"archive", "new"}
    assert _body(buckets.target, buckets.target_bucket, "archive/a.csv") == b"exports/a.csv"
    for source, target in (("exports/", "archive"), ("exports", "archive/"), ("data", "new/")):
        res = run_cli("s3", "verify", *args(source, target, "--json", "--drop-journal"), env=buckets.env())
        assert res.code == 0, res.output
    assert json.loads(res.out)["totals"]["match"] == 1  # data/x.csv only
    assert _target_keys(buckets) == copied  # the journals went with --drop-journal


def test_a_target_inside_the_source_is_refused(buckets: BucketPair, tmp_path: Path) -> None:
    """s3://b -> s3://b/copy/ was accepted, and every rerun copied its own output again (copy/copy/...)."""
    for key in ("a.txt", "b.txt"):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=key.encode())
    bucket = f"s3://{buckets.source_bucket}"
    cases = ((bucket, f"{bucket}/copy/", "the target"), (f"{bucket}/a", bucket, "the source"))
    for command in ("plan", "copy", "verify"):
        for source, target, inside in cases:
            args = _cli_args(buckets, tmp_path)[:8]  # verify has no --state-dir
            args[1], args[3] = source, target
            res = run_cli("s3", command, *args, env=buckets.env())
            assert res.code == 2, res.output
            assert len(res.err.strip().splitlines()) == 1 and res.err.startswith(f"error: {inside} s3://"), res.err
    pages = buckets.source.get_paginator("list_objects_v2").paginate(Bucket=buckets.source_bucket)
    assert {o["Key"] for p in pages for o in p.get("Contents", [])} == {"a.txt", "b.txt"}


def test_one_copy_of_a_job_at_a_time(buckets: BucketPair, tmp_path: Path) -> None:
    """Two runs of one job at once (an ECS task restarted while the old one runs, a second terminal)
    both copied everything and recorded over each other's results: the second now stops at once, with
    one line, while the first holds the lock on its manifest (a lock file next to it)."""
    for i in range(5):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"k{i}", Body=b"v")
    first = Manifest(manifest_path(_cfg(buckets, tmp_path)), lock=True)  # as a running copy holds it
    try:
        res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path), env=buckets.env())
        assert res.code == 1, res.output
        assert res.err.strip().splitlines() == [
            f"error: another s3 copy of this job is running with the state dir {tmp_path / 'state'} "
            "(wait for it to finish, or stop it; nothing was copied)"], res.err
        assert _target_keys(buckets) == set()
        # another job (here: another target prefix) in the same state dir is not held up
        other = run_cli("s3", "copy", *_cli_args(buckets, tmp_path)[:3], f"s3://{buckets.target_bucket}/other",
                        *_cli_args(buckets, tmp_path)[4:], env=buckets.env())
        assert other.code == 0, other.output
    finally:
        first.close()
    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--json"), env=buckets.env())
    assert res.code == 0, res.output
    assert json.loads(res.out)["totals"]["copied"] == 5


def test_an_object_already_on_the_target_with_other_metadata_is_copied(buckets: BucketPair, tmp_path: Path) -> None:
    """A target filled by another tool (or a copy with another --state-dir) can hold the same bytes, so the
    same size and ETag, with other metadata: it was marked verified without a look at its metadata, so
    the copy said nothing to do while verify reported 'metadata differs' for ever. Such objects (only
    they: not a fresh target, not a rerun) have their metadata compared, and are copied if it differs."""
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="prefilled.csv", Body=b"same bytes",
                              ContentType="text/csv", Metadata={"owner": "y"})
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="prefilled.csv", Body=b"same bytes")
    for client, bucket in ((buckets.source, buckets.source_bucket), (buckets.target, buckets.target_bucket)):
        client.put_object(Bucket=bucket, Key="same.csv", Body=b"a,b", ContentType="text/csv", Metadata={"o": "z"})
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="new.csv", Body=b"new")

    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--mode", "stream", "--json"), env=buckets.env())
    assert res.code == 0, res.output
    totals = json.loads(res.out)["totals"]
    assert totals["copied"] == 2 and totals["skipped"] == 1, totals  # new.csv, prefilled.csv
    assert totals["metadata_compared"] == 2 and totals["metadata_differed"] == 1, totals
    head = buckets.target.head_object(Bucket=buckets.target_bucket, Key="prefilled.csv")
    assert head["ContentType"] == "text/csv" and head["Metadata"] == {"owner": "y"}
    check = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], env=buckets.env())
    assert check.code == 0, check.output

    again = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--json"), env=buckets.env())
    assert again.code == 0, again.output
    totals = json.loads(again.out)["totals"]
    assert totals["copied"] == 0 and totals["metadata_compared"] == 0, totals  # a rerun: no HEAD at all

    # the plan does not compare metadata (two requests per object): it says so, and counts them as matching
    for client, bucket in ((buckets.source, buckets.source_bucket), (buckets.target, buckets.target_bucket)):
        client.put_object(Bucket=bucket, Key="later.csv", Body=b"x")
    plan = run_cli("s3", "plan", *_cli_args(buckets, tmp_path, "--json"), env=buckets.env())
    assert plan.code == 0, plan.output
    out = json.loads(plan.out)
    assert out["facts"]["match"] == 4 and out["facts"]["match, metadata not compared"] == 1, out["facts"]
    assert any("the copy compares their metadata first" in w for w in out["warnings"]), out["warnings"]


def test_shards_cover_the_bucket_and_keep_separate_manifests(buckets: BucketPair, tmp_path: Path) -> None:
    for i in range(40):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"s/{i}", Body=str(i).encode())
    copied = 0
    for i in (1, 2, 3):
        res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path, "--json"),
                      env={**buckets.env(), "MIGRATE_S3_SHARD": f"{i}/3"})
        assert res.code == 0, res.output
        copied += json.loads(res.out)["totals"]["copied"]
    assert copied == 40
    assert len(list((tmp_path / "state").glob("*shard*of3.sqlite"))) == 3
    v = verify_buckets(_cfg(buckets, tmp_path), RecordingReporter())
    assert v.status is Status.SUCCESS and v.totals["match"] == 40


def test_configured_only_by_environment(buckets: BucketPair, tmp_path: Path) -> None:
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="k", Body=b"v")
    env = {**buckets.env(), "MIGRATE_SOURCE_S3_URL": f"s3://{buckets.source_bucket}",
           "MIGRATE_TARGET_S3_URL": f"s3://{buckets.target_bucket}",
           "MIGRATE_SOURCE_S3_ENDPOINT_URL": buckets.endpoint_url,
           "MIGRATE_TARGET_S3_ENDPOINT_URL": buckets.endpoint_url,
           "MIGRATE_STATE_DIR": str(tmp_path / "envstate"), "MIGRATE_S3_WORKERS": "3", "MIGRATE_S3_MODE": "stream",
           "MIGRATE_S3_SSE": "AES256", "MIGRATE_REPORT": str(tmp_path / "r.jsonl")}
    res = run_cli("s3", "copy", env=env)
    assert res.code == 0, res.output
    assert buckets.target.head_object(Bucket=buckets.target_bucket, Key="k")["ServerSideEncryption"] == "AES256"
    assert list((tmp_path / "envstate").glob("*.sqlite"))
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 2
    report = json.loads(lines[-1])["report"]
    # MIGRATE_S3_MODE=stream (auto would pick server-side: both buckets are on one endpoint)
    assert report["totals"]["mode"] == "stream", report["totals"]
    # MIGRATE_S3_WORKERS=3 is the copy phase's concurrency
    (copy_phase,) = [p for p in report["phases"] if p["name"] == "copy"]
    assert copy_phase["concurrency"] == 3 and copy_phase["note"].startswith("stream;"), copy_phase


def test_missing_bucket_and_unreachable_endpoint_are_one_clear_line(buckets: BucketPair, tmp_path: Path) -> None:
    args = _cli_args(buckets, tmp_path)
    args[1] = "s3://no-such-bucket-here"
    res = run_cli("s3", "copy", *args, env=buckets.env())
    assert res.code == 1
    assert res.err.strip().splitlines()[-1].startswith("error: source bucket no-such-bucket-here does not exist")
    assert "Traceback" not in res.err

    args = _cli_args(buckets, tmp_path)
    args[7] = "http://127.0.0.1:9"  # --target-endpoint-url: nothing listens on the discard port
    res = run_cli("s3", "plan", *args, env=buckets.env())
    assert res.code == 1
    assert "target S3 endpoint http://127.0.0.1:9 is unreachable" in res.err
    assert len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err
    assert "target-secret-key" not in res.output


def test_rerun_aborts_only_its_own_orphaned_multipart_uploads(buckets: BucketPair, tmp_path: Path) -> None:
    """A kill -9 leaves multipart uploads behind; the next run aborts those for keys it copies and
    leaves anyone else's (an application uploading to the target) alone."""
    for key in ("data/a.csv", "data/b.csv"):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=b"x" * 100)
    orphan = buckets.target.create_multipart_upload(Bucket=buckets.target_bucket, Key="data/a.csv")["UploadId"]
    foreign = buckets.target.create_multipart_upload(Bucket=buckets.target_bucket, Key="app/upload.bin")["UploadId"]
    report = copy_bucket(_cfg(buckets, tmp_path, mode="stream"), RecordingReporter())
    assert report.status is Status.SUCCESS
    assert report.totals["aborted_stale_uploads"] == 1
    left = {u["UploadId"] for u in buckets.target.list_multipart_uploads(Bucket=buckets.target_bucket)
            .get("Uploads", [])}
    assert orphan not in left and foreign in left
