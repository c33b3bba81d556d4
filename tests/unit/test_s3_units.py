"""Pure logic of the S3 engine: shards, checksum evidence, part splitting, error translation, config."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.config import S3CopyConfig, S3Location, S3Side
from migrate.errors import ConfigError, ConnectionFailed, PreflightError
from migrate.s3.checksums import Evidence, b64, md5_of_parts, multipart_count
from migrate.s3.clients import translate
from migrate.s3.copier import _even_split
from migrate.s3.shard import parse_shard, shard_of

KEYS = st.text(min_size=0, max_size=300)


@settings(max_examples=300, deadline=None)
@given(key=KEYS, n=st.integers(min_value=1, max_value=64))
def test_every_key_lands_in_exactly_one_shard_and_stays_there(key: str, n: int) -> None:
    owners = [i for i in range(1, n + 1) if shard_of(key, n) == i]
    assert len(owners) == 1
    assert shard_of(key, n) == shard_of(key, n) == owners[0]
    assert shard_of(key, 1) == 1


def test_shard_is_stable_across_processes() -> None:
    keys = ["a", "café/日本.txt", "x" * 900, "folder/", ""]
    here = [shard_of(k, 7) for k in keys]
    code = "from migrate.s3.shard import shard_of; import sys, json; print(json.dumps([shard_of(k, 7) for k in %r]))"
    out = subprocess.run([sys.executable, "-c", code % keys], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[2]), env={"PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == str(here).replace(" ", "").replace(",", ", ")
    # pinned values: a change in the hash would silently reshuffle running shards
    assert shard_of("a", 7) == int.from_bytes(hashlib.sha256(b"a").digest()[:8], "big") % 7 + 1


def test_parse_shard() -> None:
    assert parse_shard("2/8") == (2, 8)
    assert parse_shard(None) is None and parse_shard("") is None
    for bad in ("0/4", "5/4", "a/b", "3", "1/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_md5_of_parts_matches_s3_multipart_etag() -> None:
    parts = [b"a" * 10, b"b" * 3]
    expected = hashlib.md5(hashlib.md5(parts[0]).digest() + hashlib.md5(parts[1]).digest()).hexdigest() + "-2"
    assert md5_of_parts([hashlib.md5(p).digest() for p in parts]) == expected
    assert multipart_count(expected) == 2 and multipart_count("0" * 32) is None


def test_evidence_prefers_additional_checksum_then_md5_else_size_only() -> None:
    data = b"hello"
    md5 = hashlib.md5(data).hexdigest()
    ev = Evidence.for_object(md5, {"ChecksumSHA256": b64(hashlib.sha256(data).digest())})
    assert ev.kind == "sha256"
    ev.update(data)
    assert ev.check() is None
    bad = Evidence.for_object(md5, {"ChecksumSHA256": b64(hashlib.sha256(b"other").digest())})
    bad.update(data)
    assert "checksum mismatch" in (bad.check() or "")
    assert Evidence.for_object(md5, {}).check(md5_hex=md5) is None
    assert Evidence.for_object(md5, {}).check(md5_hex="0" * 32) is not None
    kms = Evidence.for_object(md5, {"ServerSideEncryption": "aws:kms"})
    assert kms.kind == "size-only" and not kms.usable
    composite = Evidence.for_object(md5, {"ChecksumSHA256": "abc=-3", "ChecksumType": "COMPOSITE"})
    assert composite.kind == "md5"


@pytest.mark.parametrize("total,chunk", [(100, 200), (17 * 2**20, 8 * 2**20), (100 * 2**20, 16 * 2**20)])
def test_even_split_covers_total_with_valid_part_sizes(total: int, chunk: int) -> None:
    sizes = _even_split(total, chunk)
    assert sum(sizes) == total and max(sizes) <= chunk
    if len(sizes) > 1:
        assert min(sizes[:-1]) >= 5 * 2**20


def _side(role: str) -> S3Side:
    return S3Side.build(role, f"s3://{role}-bucket", endpoint_url="http://127.0.0.1:1",
                        environ={f"MIGRATE_{role.upper()}_AWS_ACCESS_KEY_ID": "AKID",
                                 f"MIGRATE_{role.upper()}_AWS_SECRET_ACCESS_KEY": "very-secret-value"})


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "ListObjectsV2")


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"])
def test_credential_errors_name_the_side_to_fix(code: str) -> None:
    err = translate(_client_error(code), "target", _side("target"))
    assert isinstance(err, ConnectionFailed)
    assert "target credentials were refused" in str(err) and "MIGRATE_TARGET_AWS_ACCESS_KEY_ID" in str(err)
    assert "very-secret-value" not in str(err)


def test_missing_bucket_and_unreachable_endpoint_messages() -> None:
    err = translate(_client_error("NoSuchBucket"), "source", _side("source"))
    assert isinstance(err, PreflightError) and str(err).startswith("source bucket source-bucket does not exist")
    err = translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "target", _side("target"))
    assert "target S3 endpoint http://127.0.0.1:1 is unreachable" in str(err)


def test_s3_copy_config_validation(tmp_path: Path) -> None:
    src, tgt = _side("source"), _side("target")
    cfg = S3CopyConfig(source=src, target=tgt, state_dir=tmp_path)
    assert cfg.workers == 32 and cfg.mode == "auto" and cfg.shard is None
    with pytest.raises(ConfigError):
        S3CopyConfig(source=src, target=tgt, mode="fast")
    with pytest.raises(ConfigError):
        S3CopyConfig(source=src, target=tgt, sse_kms_key_id="k")
    with pytest.raises(ConfigError):
        S3CopyConfig(source=src, target=tgt, shard=(3, 2))
    assert "very-secret-value" not in repr(cfg)


@pytest.mark.parametrize("url,prefix,shown", [
    ("s3://bkt", "", "s3://bkt"), ("s3://bkt/", "", "s3://bkt"), ("s3://bkt/data", "data/", "s3://bkt/data/"),
    ("s3://bkt/exports/", "exports/", "s3://bkt/exports/"), ("s3://bkt/a/b", "a/b/", "s3://bkt/a/b/"),
])
def test_a_prefix_is_a_folder(url: str, prefix: str, shown: str) -> None:
    """As in aws s3 sync: s3://bkt/data is the folder data/ (not every key starting with 'data')."""
    loc = S3Location.parse(url)
    assert loc.prefix == prefix and str(loc) == shown
    assert S3Location("bkt", "data") == S3Location("bkt", "data/")


def test_a_manifest_of_an_earlier_version_gets_the_new_column(tmp_path: Path) -> None:
    import sqlite3

    from migrate.s3.manifest import Manifest, snapshot

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE objects (key TEXT PRIMARY KEY, size INTEGER NOT NULL, etag TEXT NOT NULL, algo TEXT,"
                   " storage_class TEXT, status TEXT NOT NULL DEFAULT 'pending', evidence TEXT, target_etag TEXT,"
                   " detail TEXT, updated REAL) WITHOUT ROWID")
        db.execute("INSERT INTO objects VALUES ('k', 1, 'e', NULL, NULL, 'verified', 'md5', 'e', NULL, 0)")
    for m in (snapshot(old, tmp_path / "copy.sqlite"), Manifest(old)):
        try:
            assert [r["target_check"] for r in m.rows()] == [None]
            m.record([("k", "verified", "md5", "e", None, "md5 etag")])
            assert m.target_check_counts() == {"md5 etag": 1}
        finally:
            m.close()


@pytest.mark.parametrize("source,target,refused", [
    ("s3://bkt", "s3://bkt", "the source and the target are the same place"),
    ("s3://bkt/data", "s3://bkt/data/", "the source and the target are the same place"),
    ("s3://bkt", "s3://bkt/copy/", "the target s3://bkt/copy/ is inside the source s3://bkt"),
    ("s3://bkt/a", "s3://bkt/a/b", "the target s3://bkt/a/b/ is inside the source s3://bkt/a/"),
    ("s3://bkt/a/b", "s3://bkt", "the source s3://bkt/a/b/ is inside the target s3://bkt"),
    ("s3://bkt/a", "s3://bkt/ab", None),  # folders side by side
    ("s3://bkt/a", "s3://other/a", None),
])
def test_a_target_inside_the_source_or_around_it_is_refused(source: str, target: str, refused: str | None) -> None:
    def cfg(target_endpoint: str = "http://127.0.0.1:1") -> S3CopyConfig:
        return S3CopyConfig(source=S3Side.build("source", source, endpoint_url="http://127.0.0.1:1", environ={}),
                            target=S3Side.build("target", target, endpoint_url=target_endpoint, environ={}))

    if refused is None:
        cfg()
        return
    with pytest.raises(ConfigError) as err:
        cfg()
    assert str(err.value).startswith(refused) and err.value.exit_code == 2
    cfg(target_endpoint="http://127.0.0.1:2")  # another endpoint: another bucket of that name


def test_env_flag_and_the_journal_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate.config import env_flag

    for value, want in (("0", False), ("off", False), ("FALSE", False), ("1", True), ("yes", True), ("", True)):
        assert env_flag("X", True, {"X": value}) is want
    assert env_flag("X", False, {}) is False
    with pytest.raises(ConfigError):
        env_flag("X", True, {"X": "maybe"})
    env = {"MIGRATE_TARGET_AWS_ACCESS_KEY_ID": "a", "MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": "b"}
    side = S3Side.build("target", "s3://target-b/p", environ=env)
    src = S3Side.build("source", "s3://source-b", environ={})
    monkeypatch.delenv("MIGRATE_S3_TARGET_JOURNAL", raising=False)
    assert S3CopyConfig(source=src, target=side).target_journal is True
    monkeypatch.setenv("MIGRATE_S3_TARGET_JOURNAL", "0")  # as `run` and the ECS image see it
    assert S3CopyConfig(source=src, target=side).target_journal is False


def test_journal_writer_flushes_in_the_background_and_once_more_at_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """add() never uploads on the caller's thread; a batch goes at FLUSH_ENTRIES, the rest at close();
    read() gives back what was written, later entries last; a refused write is a warning, not an error."""
    import gzip
    import io
    import threading
    import time

    from migrate.s3 import journal

    monkeypatch.setattr(journal, "FLUSH_ENTRIES", 3)
    cfg = S3CopyConfig(source=S3Side.build("source", "s3://source-b", environ={}),
                       target=S3Side.build("target", "s3://target-b/data", environ={}))

    class Fake:
        def __init__(self) -> None:
            self.objects: dict[str, bytes] = {}
            self.threads: set[str] = set()
            self.refuse = False

        def put_object(self, Bucket: str, Key: str, Body: bytes, **kw: object) -> dict[str, str]:
            self.threads.add(threading.current_thread().name)
            if self.refuse:
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
            self.objects[Key] = Body
            return {}

        def get_paginator(self, name: str) -> object:
            fake = self

            class P:
                def paginate(self, Bucket: str, Prefix: str) -> object:
                    yield {"Contents": [{"Key": k} for k in sorted(fake.objects) if k.startswith(Prefix)]}

            return P()

        def get_object(self, Bucket: str, Key: str) -> dict[str, object]:
            return {"Body": io.BytesIO(self.objects[Key])}

    fake = Fake()
    w = journal.Writer(fake, cfg, "job1")
    for i in range(3):
        w.add(journal.Entry(f"k{i}", i, f"e{i}", "verified", "md5", f"t{i}", i, "md5 etag"))
    deadline = time.monotonic() + 10
    while not fake.objects and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fake.objects) == 1 and fake.threads == {"s3-journal"}
    w.add(journal.Entry("k3", 3, "e3", "verified", "md5", "t3", 3, "md5 etag"))
    w.close()
    assert len(fake.objects) == 2 and w.written == 4
    assert all(k.startswith("data/_paas-migrate/job1/") and k.endswith(".jsonl.gz") for k in fake.objects)
    assert gzip.decompress(next(iter(fake.objects.values()))).decode().count("\n") == 3
    w2 = journal.Writer(fake, cfg, "job1")
    time.sleep(0.01)  # a later run starts in a later millisecond
    w2.add(journal.Entry("k0", 0, "e0-new", "verified", "md5", "t0-new", 0))
    w2.close()
    rows = {r[0]: r for batch in journal.read(fake, cfg, "job1") for r in batch}
    assert set(rows) == {"k0", "k1", "k2", "k3"} and rows["k0"][2] == "e0-new"
    fake.refuse = True
    w3 = journal.Writer(fake, cfg, "job1")
    w3.add(journal.Entry("k9", 9, "e9", "verified", "md5", "t9", 9))
    w3.close()
    assert w3.failed and w3.written == 0


def test_journal_writer_close_during_a_slow_flush_loses_no_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A background flush slower than CLOSE_SECONDS is still writing when close() writes the last
    batch: both took the next sequence number without a lock and could name the same object, one
    overwriting the other's entries. Each batch now has its number, taken with its lines, in order."""
    import contextlib
    import gzip
    import threading
    import time

    from migrate.s3 import journal

    monkeypatch.setattr(journal, "FLUSH_ENTRIES", 2)
    monkeypatch.setattr(journal, "CLOSE_SECONDS", 0.2)
    cfg = S3CopyConfig(source=S3Side.build("source", "s3://source-b", environ={}),
                       target=S3Side.build("target", "s3://target-b", environ={}))

    class SlowFake:
        """S3 as a dict; the background flush's PutObject takes a second."""

        def __init__(self) -> None:
            self.objects: dict[str, bytes] = {}
            self.puts = 0
            self.lock = threading.Lock()

        def put_object(self, Bucket: str, Key: str, Body: bytes, **kw: object) -> dict[str, str]:
            if threading.current_thread().name == "s3-journal":
                time.sleep(1.0)
            with self.lock:
                self.objects[Key] = Body
                self.puts += 1
            return {}

    # Both writes build their object's key at the same moment (the window in which each had bumped the
    # shared sequence number before the other read it): the run's start time, the key's first field,
    # waits for the other writer to reach the same point (or 3 s).
    meet = threading.Barrier(2, timeout=3)

    class Stamp(int):
        def __format__(self, spec: str) -> str:
            with contextlib.suppress(threading.BrokenBarrierError):
                meet.wait()
            return int(self).__format__(spec)

    fake = SlowFake()
    w = journal.Writer(fake, cfg, "job1")
    w.started_ms = Stamp(w.started_ms)
    for i in range(2):  # FLUSH_ENTRIES: the background flush starts
        w.add(journal.Entry(f"k{i}", i, f"e{i}", "verified", "md5", f"t{i}", i, "md5 etag", "2024"))
    deadline = time.monotonic() + 5
    while not w._flushing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w._flushing
    w.add(journal.Entry("k2", 2, "e2", "verified", "md5", "t2", 2, "md5 etag", "2024"))
    w.close()  # gives up waiting after CLOSE_SECONDS and writes k2 while the flush of k0, k1 goes on
    w._thread.join(timeout=10)
    assert not w._thread.is_alive() and fake.puts == 2
    assert len(fake.objects) == 2, sorted(fake.objects)
    batches = [[line.split('"')[3] for line in gzip.decompress(fake.objects[k]).decode().splitlines()]
               for k in sorted(fake.objects)]
    assert batches == [["k0", "k1"], ["k2"]]  # in key order = the order they were added (read() relies on it)
    assert w.written == 3 and w.objects == 2 and not w.failed


def test_a_manifest_from_an_older_version_opens_and_old_journal_entries_do_not_match(tmp_path: Path) -> None:
    """Manifests written before the listings kept LastModified open (the columns are added); journal
    entries without it (older versions wrote none) never count an object as done."""
    import sqlite3

    from migrate.s3 import journal
    from migrate.s3.manifest import Manifest

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE objects (
            key TEXT PRIMARY KEY, size INTEGER NOT NULL, etag TEXT NOT NULL, algo TEXT, storage_class TEXT,
            status TEXT NOT NULL DEFAULT 'pending', evidence TEXT, target_etag TEXT, detail TEXT, updated REAL
        ) WITHOUT ROWID;
        CREATE TABLE src (key TEXT PRIMARY KEY, size INTEGER, etag TEXT, algo TEXT, storage_class TEXT) WITHOUT ROWID;
        CREATE TABLE dst (key TEXT PRIMARY KEY, size INTEGER, etag TEXT, algo TEXT, storage_class TEXT) WITHOUT ROWID;
        CREATE TABLE journal (key TEXT PRIMARY KEY, size INTEGER, etag TEXT, status TEXT, evidence TEXT,
            target_etag TEXT, target_size INTEGER, target_check TEXT) WITHOUT ROWID;
        INSERT INTO src VALUES ('old', 1, 'e', NULL, NULL);
    """)
    db.close()
    m = Manifest(path)
    try:
        for table in ("src", "dst", "journal"):
            assert "last_modified" in {r[1] for r in m.db.execute(f"PRAGMA table_info({table})")}, table
        assert m.source_modified("old") is None
        m.load_listing("dst", [[(k, 3, "t" + k, None, None, "2024-01-02T00:00:00+00:00") for k in ("a", "b", "c")]])
        jan, mar = "2024-01-01T00:00:00+00:00", "2024-03-03T00:00:00+00:00"
        m.load_journal([[journal.Entry("a", 3, "ea", "verified", "md5", "ta", 3, None, jan).row(),
                         journal.Entry("b", 3, "eb", "verified", "md5", "tb", 3, None, None).row(),  # older versions
                         journal.Entry("c", 3, "ec", "verified", "md5", "tc", 3, None, jan).row()]])
        m.start_source()
        _, todo = m.add_source([("a", 3, "ea", None, None, jan), ("b", 3, "eb", None, None, jan),
                                ("c", 3, "ec", None, None, mar)])  # c: metadata changed in place
        assert [r.key for r in todo] == ["b", "c"] and m.journal_matched == 1
        assert m.source_modified("c") == mar
    finally:
        m.close()


def test_only_journal_folders_are_left_out_of_listings() -> None:
    from migrate.s3.inventory import LeftOut, list_objects

    keys = ["p/a", "p/_paas-migrate/notes.txt", "p/_paas-migrate/s3-b-0123456789abcdef/1.jsonl.gz",
            "p/_paas-migrate/s3-my.bucket-0123456789abcdef-shard1of4/x", "p/_paas-migrate/s3-b-0123456789ABCDEF/x",
            "p/_paas-migrate/s3-b-0123456789abcde/x", "p/_paas-migrate/s3--0123456789abcdef/x",
            "p/x/_paas-migrate/s3-b-0123456789abcdef/y", "p/_paas-migrate/s3-b-0123456789abcdef-shard1of/x"]

    class Fake:
        def get_paginator(self, name: str) -> object:
            class P:
                def paginate(self, **kw: object) -> object:
                    yield {"Contents": [{"Key": k, "Size": 1, "ETag": '"e"'} for k in keys]}

            return P()

    left = LeftOut()
    listed = [o.key for o in list_objects(Fake(), S3Location("b", "p/"), left_out=left)]
    assert listed == ["a", "_paas-migrate/notes.txt", "_paas-migrate/s3-b-0123456789ABCDEF/x",
                      "_paas-migrate/s3-b-0123456789abcde/x", "_paas-migrate/s3--0123456789abcdef/x",
                      "x/_paas-migrate/s3-b-0123456789abcdef/y", "_paas-migrate/s3-b-0123456789abcdef-shard1of/x"]
    assert left.objects == 2 and left.folders == {"_paas-migrate/s3-b-0123456789abcdef/",
                                                  "_paas-migrate/s3-my.bucket-0123456789abcdef-shard1of4/"}
    assert left.source_note(S3Location("b", "p/")) == (
        "2 source objects under s3://b/p/_paas-migrate/s3-b-0123456789abcdef/, "
        "s3://b/p/_paas-migrate/s3-my.bucket-0123456789abcdef-shard1of4/ are another copy's journal and are not copied")
