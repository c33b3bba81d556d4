"""The copy's journal in the target bucket: a rerun with a fresh --state-dir (a new ECS task, a new disk)
skips what an earlier run verified (interrupted or completed: a completed copy keeps its journal),
also where the target's ETags cannot match the source's (SSE-KMS; single-part sources uploaded in
parts); `s3 verify --drop-journal` deletes it once everything matches. Real S3 API server over HTTP
(moto)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from migrate.config import S3CopyConfig
from migrate.errors import Interrupted
from migrate.model import Status
from migrate.progress import RecordingReporter
from migrate.s3 import clients
from migrate.s3.copier import copy_bucket
from migrate.s3.manifest import Manifest
from migrate.s3.verify import verify_buckets
from tests.conftest import BucketPair
from tests.support.cli import interrupt, run_cli, start_cli
from tests.support.s3faults import KmsTargetClient, RecordingClient

pytestmark = pytest.mark.s3

FOLDER = "_paas-migrate/"


def _cfg(b: BucketPair, state: Path, **kw: Any) -> S3CopyConfig:
    kw.setdefault("workers", 2)
    kw.setdefault("mode", "stream")
    return b.config(state, **kw)


def _cli_args(b: BucketPair, state: Path, *extra: str) -> list[str]:
    return b.cli_args(state, *extra)


def _listing(b: BucketPair, prefix: str = "") -> dict[str, tuple[str, Any]]:
    pages = b.target.get_paginator("list_objects_v2").paginate(Bucket=b.target_bucket, Prefix=prefix)
    return {o["Key"]: (o["ETag"], o["LastModified"]) for p in pages for o in p.get("Contents", [])}


def _journal(b: BucketPair) -> dict[str, dict[str, Any]]:
    """The journal's entries by key (later ones win), read straight from the target."""
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(_listing(b, FOLDER)):
        data = b.target.get_object(Bucket=b.target_bucket, Key=key)["Body"].read()
        for line in gzip.decompress(data).decode().splitlines():
            entry = json.loads(line)
            out[entry["key"]] = entry
    return out


def _verified(state: Path) -> set[str]:
    (path,) = state.glob("*.sqlite")
    m = Manifest(path, create=False)
    try:
        return {k for (k,) in m.db.execute("SELECT key FROM objects WHERE status IN ('verified', 'size-only')")}
    finally:
        m.close()


def _wrap_target(monkeypatch: pytest.MonkeyPatch, b: BucketPair, written: list[str], *, kms: bool) -> None:
    """The copy's target client records what it uploads (and answers as an SSE-KMS bucket with `kms`)."""
    real = clients.make_client

    def make(side: Any, **kw: Any) -> Any:
        client = real(side, **kw)
        if side.location.bucket == b.target_bucket and not kw.get("probe"):
            return RecordingClient(KmsTargetClient(client) if kms else client, written)
        return client

    monkeypatch.setattr(clients, "make_client", make)


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, results: int) -> None:
    """Ctrl-C once `results` copies have been recorded (as the manifest records them, in batches)."""
    from migrate.s3 import copier

    monkeypatch.setattr(copier, "FLUSH_SECONDS", 0.0)
    real = Manifest.record
    seen = {"n": 0, "fired": False}

    def record(self: Manifest, rows: Any) -> None:
        seen["n"] += len(rows)
        if rows and seen["n"] >= results and not seen["fired"]:
            seen["fired"] = True
            raise KeyboardInterrupt
        real(self, rows)

    monkeypatch.setattr(Manifest, "record", record)


def _interrupted_copy(monkeypatch: pytest.MonkeyPatch, cfg: S3CopyConfig, results: int) -> set[str]:
    """Run a copy interrupted part-way; returns the keys it verified (its local manifest)."""
    with monkeypatch.context() as m:
        _interrupt_after(m, results)
        with pytest.raises(Interrupted):
            copy_bucket(cfg, RecordingReporter())
    return _verified(cfg.state_dir)


def _copied(written: list[str]) -> set[str]:
    return {k for k in written if not k.startswith(FOLDER)}


def _large_single_part_sources(monkeypatch: pytest.MonkeyPatch, b: BucketPair, n: int) -> list[str]:
    """`n` single-part sources that stream mode uploads in parts (the threshold lowered: their target
    ETag is an MD5-of-MD5s '-1', never the source's MD5), and as many small ones (target ETag = source's)."""
    from migrate.s3 import copier

    monkeypatch.setattr(copier, "SINGLE_PUT_MAX", 1000)
    keys = []
    for i in range(n):
        b.source.put_object(Bucket=b.source_bucket, Key=f"big/{i:03d}", Body=os.urandom(3000))
        b.source.put_object(Bucket=b.source_bucket, Key=f"small/{i:03d}", Body=os.urandom(100))
        keys += [f"big/{i:03d}", f"small/{i:03d}"]
    return keys


def test_rerun_with_a_fresh_state_dir_skips_what_an_interrupted_run_verified(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Single-part sources uploaded in parts have another ETag on the target: without the journal, a
    rerun in a new task (no manifest) copied every one of them again."""
    keys = _large_single_part_sources(monkeypatch, buckets, 15)
    written: list[str] = []
    _wrap_target(monkeypatch, buckets, written, kms=False)
    done = _interrupted_copy(monkeypatch, _cfg(buckets, tmp_path / "task1"), results=8)
    assert 8 <= len(done) < len(keys), done
    assert any(k.startswith("big/") for k in done)
    assert set(_journal(buckets)) == done  # the last flush on Ctrl-C recorded every verified object
    written.clear()

    report = copy_bucket(_cfg(buckets, tmp_path / "task2"), RecordingReporter())  # a new task: new disk
    assert report.status is Status.SUCCESS, report.to_dict()
    assert _copied(written) == set(keys) - done, sorted(_copied(written) & done)
    assert report.totals["copied"] == len(keys) - len(done)
    # Every object the first run verified is matched through its journal entry, the small ones too (their
    # ETag would match as well, but the journal is read first: it also vouches for their metadata). Which
    # of them finished before the interrupt varies, so count them all (counting only the big ones failed
    # whenever a small one finished first).
    journaled = done
    assert report.totals["journal_verified"] == len(journaled)
    plan_note = next(p.note for p in report.phases if p.name == "plan")
    assert f"{len(journaled)} objects verified by an earlier run (journal in the target)" in plan_note, plan_note
    assert set(_journal(buckets)) == done | (set(keys) - done)  # complete: the journal stays, with both runs'
    v = verify_buckets(_cfg(buckets, tmp_path / "v"), RecordingReporter())
    assert v.status is Status.SUCCESS and v.totals["match"] == len(keys), v.to_dict()


def _seed_into_kms_target(buckets: BucketPair, monkeypatch: pytest.MonkeyPatch, n: int, size: int
                          ) -> tuple[list[str], list[str]]:
    """n small source objects and a multipart one; the target answers as an SSE-KMS bucket does.
    Returns the keys and the list the wrapper records the target's uploads in."""

    keys = [f"k{i:02d}" for i in range(n)]
    for key in keys:
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=os.urandom(size))
    buckets.put_multipart("a-multi", [5 * 1024 * 1024, 1000])
    keys.append("a-multi")
    written: list[str] = []
    _wrap_target(monkeypatch, buckets, written, kms=True)
    return keys, written


def test_sse_kms_target_rerun_copies_nothing_already_verified(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In an SSE-KMS bucket no target ETag is an MD5: without the journal a fresh-disk rerun copied
    everything again. Objects that completed before the interruption (multipart ones included) are
    skipped; the rest is copied."""
    keys, written = _seed_into_kms_target(buckets, monkeypatch, 16, 500)
    done = _interrupted_copy(monkeypatch, _cfg(buckets, tmp_path / "task1"), results=6)
    assert 6 <= len(done) < len(keys) and "a-multi" in done, done
    entries = _journal(buckets)
    assert set(entries) == done
    e = entries["a-multi"]
    assert e["etag"].endswith("-2") and e["target_etag"].endswith("-2") and e["etag"] != e["target_etag"]
    assert e["status"] == "verified" and e["evidence"] == "md5-of-parts" and e["target_check"] == "upload checksums"
    written.clear()

    report = copy_bucket(_cfg(buckets, tmp_path / "task2"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    assert _copied(written) == set(keys) - done
    assert report.totals["journal_verified"] == len(done) and report.totals["skipped"] == len(done)
    assert report.totals["verified"] == len(keys)


def test_completed_copy_keeps_its_journal_and_verify_notes_it(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(12):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"obj/{i:02d}", Body=f"body {i}".encode())
    done = _interrupted_copy(monkeypatch, _cfg(buckets, tmp_path / "task1"), results=4)
    assert 0 < len(done) < 12
    assert _listing(buckets, FOLDER), "an interrupted copy leaves its journal in the target"
    # verify while the copy is incomplete: the journal is neither compared nor extra, and it is mentioned
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output
    out = json.loads(res.out)
    assert out["outcomes"]["extra on target"] == 0 and out["outcomes"]["missing on target"] == 12 - len(done)
    assert any("a copy journal is in the target" in n and "--drop-journal" in n for n in out["notes"]), out

    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path / "task2"), env=buckets.env())
    assert res.code == 0, res.output
    folder = f"s3://{buckets.target_bucket}/{FOLDER}s3-{buckets.source_bucket}-"
    line = next(ln for ln in res.out.splitlines() if ln.startswith("note: the copy journal stays in "))
    assert folder in line and ("`s3 verify --drop-journal` (or the final `run --drop-journal`) removes it once"
                               " the final copy is verified") in line, line
    assert set(_journal(buckets)) == {f"obj/{i:02d}" for i in range(12)}, "a completed copy keeps its journal"
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 0, res.output
    out = json.loads(res.out)
    assert out["outcomes"]["extra on target"] == 0 and out["outcomes"]["match"] == 12
    assert not any("journal" in w for w in out["warnings"]), out["warnings"]
    assert any(f"a copy journal is in the target ({folder}" in n for n in out["notes"]), out["notes"]
    assert _listing(buckets, FOLDER), "verify without --drop-journal deletes nothing"


def test_completed_copy_then_a_new_task_into_an_sse_kms_target_uploads_nothing(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cutover runbook in ECS: the day before, a copy completes (as two shards); the final run is a
    new task with an empty state dir (unsharded, as `run` copies), into an SSE-KMS bucket where no ETag
    matches the source's. It copies nothing: the completed copy kept its journal."""
    keys, written = _seed_into_kms_target(buckets, monkeypatch, 10, 700)
    for shard in ((1, 2), (2, 2)):
        day_before = copy_bucket(_cfg(buckets, tmp_path / f"day-before-{shard[0]}", shard=shard),
                                 RecordingReporter())
        assert day_before.status is Status.SUCCESS, day_before.to_dict()
        assert any(n.startswith("the copy journal stays in s3://") and "-shard" in n for n in day_before.notes)
    assert _copied(written) == set(keys)
    assert set(_journal(buckets)) == set(keys)
    written.clear()

    report = copy_bucket(_cfg(buckets, tmp_path / "final-task"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    assert written == [], written  # neither an object nor a journal entry
    assert report.totals["copied"] == 0 and report.totals["journal_verified"] == len(keys), report.totals
    assert report.totals["verified"] == len(keys)


def test_verify_drop_journal_deletes_it_after_a_verification_that_matches_only(
        buckets: BucketPair, tmp_path: Path) -> None:
    for i in range(6):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"obj/{i}", Body=f"body {i}".encode())
    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path / "task1"), env=buckets.env())
    assert res.code == 0, res.output
    ours = _listing(buckets, FOLDER)
    assert ours
    (job,) = {k.split("/")[1] for k in ours}
    # a folder of the same job's shards (ecs run --shards) goes too; another job's journal stays
    gz = gzip.compress(b"")
    buckets.target.put_object(Bucket=buckets.target_bucket, Key=f"{FOLDER}{job}-shard1of2/0-1-x.jsonl.gz", Body=gz)
    other = f"{FOLDER}s3-elsewhere-0123456789abcdef/0-1-x.jsonl.gz"
    buckets.target.put_object(Bucket=buckets.target_bucket, Key=other, Body=gz)
    verify_args = _cli_args(buckets, tmp_path)[:8]

    # a difference: nothing is deleted, and the output says so
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="obj/0", Body=b"changed")
    res = run_cli("s3", "verify", *verify_args, "--drop-journal", "--json", env=buckets.env())
    assert res.code == 3, res.output
    notes = json.loads(res.out)["notes"]
    assert any(n.startswith("kept the copy journal ") and f"s3://{buckets.target_bucket}/{FOLDER}{job}/" in n
               and f"{job}-shard1of2/" in n and "only after a verification that matches" in n for n in notes), notes
    assert set(_listing(buckets, FOLDER)) == {*ours, f"{FOLDER}{job}-shard1of2/0-1-x.jsonl.gz", other}
    # turned off, --drop-journal is a usage error
    res = run_cli("s3", "verify", *verify_args, "--drop-journal", "--no-target-journal", env=buckets.env())
    assert res.code == 2 and "--no-target-journal" in res.err, res.output

    buckets.target.put_object(Bucket=buckets.target_bucket, Key="obj/0", Body=b"body 0")
    res = run_cli("s3", "verify", *verify_args, env={**buckets.env(), "MIGRATE_S3_DROP_JOURNAL": "1"})
    assert res.code == 0, res.output
    assert "note: deleted the copy journal" in res.out and f"{job}-shard1of2/" in res.out, res.out
    assert set(_listing(buckets, FOLDER)) == {other}
    assert "note: a copy journal is in the target" in res.out  # the other job's, still noted


def test_an_object_changed_since_the_journal_recorded_it_is_copied_again(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"k{i:02d}" for i in range(14)]
    for key in keys:
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=b"a" * 300)
    written: list[str] = []
    _wrap_target(monkeypatch, buckets, written, kms=True)
    done = _interrupted_copy(monkeypatch, _cfg(buckets, tmp_path / "task1"), results=6)
    assert len(done) >= 6
    changed_source, changed_target = sorted(done)[:2]
    buckets.source.put_object(Bucket=buckets.source_bucket, Key=changed_source, Body=b"b" * 300)  # same size
    buckets.target.put_object(Bucket=buckets.target_bucket, Key=changed_target, Body=b"c" * 300)  # overwritten
    written.clear()

    report = copy_bucket(_cfg(buckets, tmp_path / "task2"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    assert _copied(written) == (set(keys) - done) | {changed_source, changed_target}
    assert report.totals["journal_verified"] == len(done) - 2
    for key, body in ((changed_source, b"b" * 300), (changed_target, b"a" * 300)):
        assert buckets.target.get_object(Bucket=buckets.target_bucket, Key=key)["Body"].read() == body


def test_no_target_journal_writes_and_reads_nothing_there(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _large_single_part_sources(monkeypatch, buckets, 6)
    done = _interrupted_copy(monkeypatch, _cfg(buckets, tmp_path / "off", target_journal=False), results=4)
    assert done
    assert _listing(buckets, FOLDER) == {}
    # with the journal on, an interrupted run leaves one; `plan` then counts it, unless it is turned off
    # (option or environment variable)
    _interrupted_copy(monkeypatch, _cfg(buckets, tmp_path / "on"), results=2)
    assert _listing(buckets, FOLDER)

    def journal_fact(*extra: str, env: dict[str, str] | None = None) -> int:
        res = run_cli("s3", "plan", *_cli_args(buckets, tmp_path / "plan", "--json", *extra),
                      env={**buckets.env(), **(env or {})})
        assert res.code == 0, res.output
        return int(json.loads(res.out)["facts"]["verified by an earlier run (journal in the target)"])

    assert journal_fact() > 0
    assert journal_fact("--no-target-journal") == 0
    assert journal_fact(env={"MIGRATE_S3_TARGET_JOURNAL": "0"}) == 0
    leftover = _listing(buckets, FOLDER)
    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path / "cli-off", "--json"),
                  env={**buckets.env(), "MIGRATE_S3_TARGET_JOURNAL": "0"})
    assert res.code == 0, res.output
    totals = json.loads(res.out)["totals"]
    assert totals["journal_verified"] == 0 and totals["verified"] == len(keys), totals
    assert _listing(buckets, FOLDER) == leftover  # neither read, written nor deleted


def test_plan_and_dry_run_read_the_journal_and_write_nothing(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _large_single_part_sources(monkeypatch, buckets, 8)
    done = _interrupted_copy(monkeypatch, _cfg(buckets, tmp_path / "task1"), results=6)
    journaled = done  # every verified object, small ones included (see the test above)
    assert any(k.startswith("big/") for k in journaled)
    before = _listing(buckets)
    state = tmp_path / "fresh"
    for command in (("plan",), ("copy", "--dry-run")):
        res = run_cli("s3", *command, *_cli_args(buckets, state, "--json"), env=buckets.env())
        assert res.code == 0, res.output
        facts = json.loads(res.out)["facts"]
        assert facts["verified by an earlier run (journal in the target)"] == len(journaled), facts
        assert facts["match"] == len(done) and facts["missing on target"] == len(keys) - len(done), facts
    res = run_cli("s3", "plan", *_cli_args(buckets, state), env=buckets.env())
    assert f"{len(journaled)} objects verified by an earlier run (journal in the target)" in res.out, res.out
    assert _listing(buckets) == before  # nothing written, nothing deleted (journal included)
    assert not state.exists() or not any(state.iterdir())


def test_sigterm_flushes_the_journal(buckets: BucketPair, tmp_path: Path) -> None:
    """An ECS stop is a SIGTERM: the run's last flush records every object it verified."""
    n = 300
    for i in range(n):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"obj/{i:04d}", Body=os.urandom(1000))
    state = tmp_path / "state"
    proc = start_cli("s3", "copy", *_cli_args(buckets, state, "--mode", "stream", "--workers", "2"),
                     env=buckets.env())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        dbs = list(state.glob("*.sqlite")) if state.exists() else []
        try:
            if dbs and sqlite3.connect(dbs[0]).execute(
                    "SELECT count(*) FROM objects WHERE status = 'verified'").fetchone()[0] >= 10:
                break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the copy finished before it could be interrupted (make it bigger)"
    res = interrupt(proc, signal.SIGTERM)
    assert res.code == 130, res.output
    done = _verified(state)
    assert 10 <= len(done) < n
    assert set(_journal(buckets)) == done


def test_a_journal_that_may_not_be_deleted_is_a_warning_naming_it(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No s3:DeleteObject on the folder: S3 answers DeleteObjects with an AccessDenied per key. The
    verification is still a success (exit 0); the report names the folder to remove."""
    for i in range(8):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"k{i}", Body=b"v" * (i + 1))
    report = copy_bucket(_cfg(buckets, tmp_path / "task1", sse="AES256"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    left = _listing(buckets, FOLDER)
    assert left
    head = buckets.target.head_object(Bucket=buckets.target_bucket, Key=next(iter(left)))
    assert head["ServerSideEncryption"] == "AES256"  # written as the copy's objects are (--sse)
    real = clients.make_client

    class NoDelete:
        def __init__(self, client: Any) -> None:
            self._client = client

        def delete_objects(self, Bucket: str, Delete: dict[str, Any], **kw: Any) -> Any:
            return {"Errors": [{"Key": o["Key"], "Code": "AccessDenied", "Message": "Access Denied"}
                               for o in Delete["Objects"]]}

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    def make(side: Any, **kw: Any) -> Any:
        client = real(side, **kw)
        return NoDelete(client) if side.location.bucket == buckets.target_bucket else client

    monkeypatch.setattr(clients, "make_client", make)
    v = verify_buckets(_cfg(buckets, tmp_path / "v"), RecordingReporter(), drop_journal=True)
    assert v.status is Status.SUCCESS and v.status.exit_code() == 0, v.to_dict()
    folder = f"s3://{buckets.target_bucket}/{FOLDER}"
    assert any(w.startswith(f"the copy journal {folder}") and "AccessDenied" in w and "remove it" in w
               for w in v.warnings), v.warnings
    assert not any("deleted" in n for n in v.notes), v.notes
    assert _listing(buckets, FOLDER) == left


def test_metadata_changed_in_place_on_the_source_is_copied_again_by_a_new_task(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CopyObject of a source object onto itself with new metadata keeps its bytes, size and ETag: the
    journal matched it and a rerun in a new task copied nothing (`copied 0, journal_verified 1`), the
    target kept the old Content-Type, and `s3 verify` reported it forever (so --drop-journal never
    deleted). The journal records the source's LastModified too: that object is copied again, only it."""
    keys = [f"doc/{i}" for i in range(5)]
    for key in keys:
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=key.encode() * 10,
                                  ContentType="text/plain")
    first = copy_bucket(_cfg(buckets, tmp_path / "task1"), RecordingReporter())
    assert first.status is Status.SUCCESS and first.totals["copied"] == len(keys), first.to_dict()
    entries = _journal(buckets)
    assert set(entries) == set(keys) and all(e["last_modified"] for e in entries.values()), entries
    changed = "doc/2"
    time.sleep(1.1)  # S3 lists LastModified in whole seconds
    etag = buckets.source.head_object(Bucket=buckets.source_bucket, Key=changed)["ETag"]
    buckets.source.copy_object(Bucket=buckets.source_bucket, Key=changed, MetadataDirective="REPLACE",
                               CopySource={"Bucket": buckets.source_bucket, "Key": changed},
                               ContentType="application/json")
    assert buckets.source.head_object(Bucket=buckets.source_bucket, Key=changed)["ETag"] == etag
    written: list[str] = []
    _wrap_target(monkeypatch, buckets, written, kms=False)

    report = copy_bucket(_cfg(buckets, tmp_path / "task2"), RecordingReporter())  # a new task: new disk
    assert report.status is Status.SUCCESS, report.to_dict()
    assert _copied(written) == {changed}, written
    assert report.totals["copied"] == 1 and report.totals["journal_verified"] == len(keys) - 1, report.totals
    head = buckets.target.head_object(Bucket=buckets.target_bucket, Key=changed)
    assert head["ContentType"] == "application/json"
    assert _journal(buckets)[changed]["last_modified"] != entries[changed]["last_modified"]

    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--drop-journal", "--json",
                  env=buckets.env())
    assert res.code == 0, res.output
    assert json.loads(res.out)["totals"]["match"] == len(keys)
    assert _listing(buckets, FOLDER) == {}, "the journal is deleted once the copy is verified"


def test_a_journal_entry_without_last_modified_does_not_match(
        buckets: BucketPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal written by an older version records no LastModified: it cannot tell metadata changed
    in place, so its objects are copied again (where the target's ETag is not the source's)."""
    keys = [f"k{i}" for i in range(4)]
    for key in keys:
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=os.urandom(200))
    written: list[str] = []
    _wrap_target(monkeypatch, buckets, written, kms=True)
    assert copy_bucket(_cfg(buckets, tmp_path / "task1"), RecordingReporter()).status is Status.SUCCESS
    for key in _listing(buckets, FOLDER):  # as an older version wrote it
        data = buckets.target.get_object(Bucket=buckets.target_bucket, Key=key)["Body"].read()
        lines = [json.loads(ln) for ln in gzip.decompress(data).decode().splitlines()]
        for entry in lines:
            del entry["last_modified"]
        body = gzip.compress("".join(json.dumps(e) + "\n" for e in lines).encode())
        buckets.target.put_object(Bucket=buckets.target_bucket, Key=key, Body=body)
    written.clear()
    report = copy_bucket(_cfg(buckets, tmp_path / "task2"), RecordingReporter())
    assert report.status is Status.SUCCESS, report.to_dict()
    assert report.totals["journal_verified"] == 0 and _copied(written) == set(keys), report.totals


def test_source_objects_under_the_journal_folder_name_are_copied_but_another_copys_journal(
        buckets: BucketPair, tmp_path: Path) -> None:
    """Every listing left the whole `_paas-migrate/` folder out, so a source object there was never
    copied (silently). Only folders named as journals are left out now (on both sides: another copy's
    journal in the source is not copied, and plan and copy say so); any other key there is copied and
    verified as usual."""
    journal_keys = {f"{FOLDER}s3-elsewhere-0123456789abcdef/0000000000001-000001-abcd0123.jsonl.gz",
                    f"{FOLDER}s3-elsewhere-0123456789abcdef-shard2of3/0000000000001-000001-abcd0123.jsonl.gz"}
    ordinary = {"a.txt", f"{FOLDER}notes.txt", f"{FOLDER}s3-not-a-journal/x", f"{FOLDER}s3-x-0123456789abcdef"}
    for key in journal_keys | ordinary:
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=key.encode())
    said = (f"2 source objects under s3://{buckets.source_bucket}/{FOLDER}s3-elsewhere-0123456789abcdef-shard2of3/, "
            f"s3://{buckets.source_bucket}/{FOLDER}s3-elsewhere-0123456789abcdef/ are another copy's"
            " journal and are not copied")

    res = run_cli("s3", "plan", *_cli_args(buckets, tmp_path / "plan", "--json"), env=buckets.env())
    assert res.code == 0, res.output
    plan = json.loads(res.out)
    assert plan["facts"]["source objects"] == len(ordinary), plan["facts"]
    assert plan["facts"]["source objects left out (another copy's journal)"] == 2
    assert said in plan["warnings"], plan["warnings"]

    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path / "task1", "--json"), env=buckets.env())
    assert res.code == 0, res.output
    out = json.loads(res.out)
    assert out["totals"]["copied"] == len(ordinary) and out["totals"]["source_journal_objects_left_out"] == 2
    assert said in out["warnings"], out["warnings"]
    target = set(_listing(buckets))
    assert ordinary <= target and not journal_keys & target, sorted(target)
    ours = {k for k in target - ordinary}
    assert ours and all(k.startswith(f"{FOLDER}s3-{buckets.source_bucket}-") for k in ours), ours

    # a rerun copies nothing: the copied `_paas-migrate/` objects are compared as any other
    res = run_cli("s3", "copy", *_cli_args(buckets, tmp_path / "task1", "--json"), env=buckets.env())
    assert res.code == 0 and json.loads(res.out)["totals"]["copied"] == 0, res.output
    # verify compares them (an ordinary object there that differs is a difference), not the journals
    buckets.target.put_object(Bucket=buckets.target_bucket, Key=f"{FOLDER}notes.txt", Body=b"changed")
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3, res.output
    out = json.loads(res.out)
    assert [d["name"] for d in out["diffs"]] == [f"{FOLDER}notes.txt"], out["diffs"]
    assert out["outcomes"]["extra on target"] == 0 and out["outcomes"]["match"] == len(ordinary) - 1
    assert any(n.startswith("2 source objects under ") and "are not compared" in n for n in out["notes"]), out
    notes = f"{FOLDER}notes.txt"
    buckets.target.put_object(Bucket=buckets.target_bucket, Key=notes, Body=notes.encode())
    buckets.target.put_object(Bucket=buckets.target_bucket, Key=f"{FOLDER}only-here", Body=b"x")
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--json", env=buckets.env())
    assert res.code == 3 and json.loads(res.out)["outcomes"]["extra on target"] == 1, res.output
    buckets.target.delete_object(Bucket=buckets.target_bucket, Key=f"{FOLDER}only-here")
    res = run_cli("s3", "verify", *_cli_args(buckets, tmp_path)[:8], "--drop-journal", "--json", env=buckets.env())
    assert res.code == 0, res.output
    assert set(_listing(buckets)) == ordinary  # our journal went, the copied objects stay
