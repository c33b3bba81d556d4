"""`paas-migrate run`: a plan file with vcap:/env: references, preflight before any write, the database
and a bucket copied and verified on real services, one report (terminal, JSON, Markdown), no secret
anywhere; a job that fails mid-run while the others go on. Plus the orchestration rules that are
impractical on real services, with fake engines (planner exceptions, Ctrl-C, --only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from migrate import orchestrate
from migrate.config import DbCopyConfig, DbJobConfig, S3CopyConfig, S3Side
from migrate.errors import ConfigError, CopyFailed, ExitCode, PreflightError
from migrate.local.s3server import REGION, SOURCE_KEYS, TARGET_KEYS
from migrate.model import Diff, Outcome, Plan, Report, Status, Step
from migrate.progress import RecordingReporter
from tests.support.cli import run_cli
from tests.support.dbfaults import fail_copy_of
from tests.support.dbstate import assert_untouched
from tests.support.services import RDS_PASSWORD

SEED_SQL = """
CREATE TYPE log_status AS ENUM ('in_progress', 'completed');
CREATE TABLE organisations (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE lettings_logs (
    id bigserial PRIMARY KEY,
    organisation_id bigint REFERENCES organisations (id),
    status log_status NOT NULL,
    answers jsonb NOT NULL
);
INSERT INTO organisations (name) SELECT 'Org ' || g FROM generate_series(1, 20) g;
INSERT INTO lettings_logs (organisation_id, status, answers)
SELECT 1 + g % 20, (enum_range(NULL::log_status))[1 + g % 2], jsonb_build_object('n', g, 'ok', g % 3 = 0)
FROM generate_series(1, 2000) g;
"""

KEYS = [f"lettings/2024/{i:03d}.csv" for i in range(25)] + ["exports/core_2024_f0001.zip", "weird key + ü.csv"]


@pytest.fixture
def scenario(dbs: Any, buckets: Any, tmp_path: Path) -> dict[str, Any]:
    dbs.source_sql(SEED_SQL)
    for i, key in enumerate(KEYS):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=key, Body=f"row,{i}\n".encode() * (i + 1))
    # one multipart object (ETag ends in -2)
    mpu = buckets.source.create_multipart_upload(Bucket=buckets.source_bucket, Key="big/export.zip")
    parts = []
    for n, body in enumerate((b"a" * (5 * 1024 * 1024), b"b" * 1024), 1):
        r = buckets.source.upload_part(Bucket=buckets.source_bucket, Key="big/export.zip",
                                       UploadId=mpu["UploadId"], PartNumber=n, Body=body)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    buckets.source.complete_multipart_upload(Bucket=buckets.source_bucket, Key="big/export.zip",
                                             UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts})
    vcap = tmp_path / "vcap.json"
    vcap.write_text(json.dumps({"aws-s3-bucket": [{"name": "paas-csv-bucket", "label": "aws-s3-bucket",
        "credentials": {"bucket_name": buckets.source_bucket, "aws_region": REGION,
                        "aws_access_key_id": SOURCE_KEYS["access_key_id"],
                        "aws_secret_access_key": SOURCE_KEYS["secret_access_key"]}}]}))
    plan = tmp_path / "plan.toml"
    plan.write_text(f"""
[defaults]
jobs = 2
workers = 8

[environments.test.database]
source = "env:TEST_SOURCE_DATABASE_URL"
target = "env:TEST_TARGET_DATABASE_URL"

[environments.test.buckets.csv]
source = "vcap:paas-csv-bucket"
source_endpoint_url = "{buckets.endpoint_url}"
target = "s3://{buckets.target_bucket}"
target_endpoint_url = "{buckets.endpoint_url}"
target_region = "{REGION}"
target_credentials = {{ access_key_id = "env:TGT_KEY", secret_access_key = "env:TGT_SECRET" }}
""")
    env = {
        "TEST_SOURCE_DATABASE_URL": dbs.source_url,
        "TEST_TARGET_DATABASE_URL": dbs.target_url,
        "MIGRATE_VCAP_SERVICES_FILE": str(vcap),
        "TGT_KEY": TARGET_KEYS["access_key_id"],
        "TGT_SECRET": TARGET_KEYS["secret_access_key"],
        "MIGRATE_STATE_DIR": str(tmp_path / "state"),
    }
    secrets = [dbs.source_cluster.password, RDS_PASSWORD, SOURCE_KEYS["secret_access_key"],
               TARGET_KEYS["secret_access_key"]]
    return {"plan": plan, "env": env, "secrets": secrets, "dbs": dbs, "buckets": buckets, "tmp": tmp_path}


def _target_tables(dbs: Any) -> list[str]:
    import psycopg

    with psycopg.connect(dbs.target_admin_url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def _bucket_toml(name: str, source: str, target: str, endpoint_url: str) -> str:
    """A plan file's bucket job, credentials from SRC_KEY/SRC_SECRET and TGT_KEY/TGT_SECRET."""
    return f"""
[environments.test.buckets.{name}]
source = "s3://{source}"
source_endpoint_url = "{endpoint_url}"
source_credentials = {{ access_key_id = "env:SRC_KEY", secret_access_key = "env:SRC_SECRET" }}
target = "s3://{target}"
target_endpoint_url = "{endpoint_url}"
target_region = "{REGION}"
target_credentials = {{ access_key_id = "env:TGT_KEY", secret_access_key = "env:TGT_SECRET" }}
"""


def _target_keys(buckets: Any, *, journal: bool = False) -> list[str]:
    """The target bucket's keys; without `journal`, not the copy journal a run keeps there unless
    given --drop-journal (see test_a_final_run_deletes_the_copy_journals_other_runs_keep_them)."""
    resp = buckets.target.list_objects_v2(Bucket=buckets.target_bucket)
    return sorted(o["Key"] for o in resp.get("Contents", [])
                  if journal or not o["Key"].startswith("_paas-migrate/"))


def _assert_no_secrets(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


@pytest.mark.postgres
@pytest.mark.s3
def test_dry_run_writes_nothing_on_either_side(scenario: dict[str, Any]) -> None:
    s = scenario
    res = run_cli("run", "--plan", str(s["plan"]), "--env", "test", "--dry-run", env=s["env"])
    assert res.code == ExitCode.SUCCESS, res.err
    assert "2 job(s) planned, 0 blockers; dry run, nothing was written" in res.out
    assert s["buckets"].source_bucket in res.out
    assert _target_tables(s["dbs"]) == []
    assert _target_keys(s["buckets"]) == []
    res_json = run_cli("run", "--plan", str(s["plan"]), "--env", "test", "--dry-run", "--json", env=s["env"])
    assert res_json.code == ExitCode.SUCCESS, res_json.err
    plan = json.loads(res_json.out)
    assert plan["kind"] == "run" and plan["blockers"] == []
    assert set(plan["facts"]["plans"]) == {"database", "bucket csv"}
    assert plan["facts"]["references"]["database"]["source"] == "env:TEST_SOURCE_DATABASE_URL"
    assert any(step["name"].startswith("bucket csv: ") for step in plan["steps"])
    assert _target_tables(s["dbs"]) == [] and _target_keys(s["buckets"]) == []
    # Nothing else either: no extension, type, function or schema (not even the copy's own
    # _paas_migrate) on the target database, no state file (manifest) for the bucket.
    assert_untouched(s["dbs"].target_admin_url)
    state = Path(s["env"]["MIGRATE_STATE_DIR"])
    assert not state.exists() or list(state.iterdir()) == []
    _assert_no_secrets([res.out, res.err, res_json.out, res_json.err], s["secrets"])


@pytest.mark.postgres
@pytest.mark.s3
def test_run_end_to_end_with_reports_and_no_secrets(scenario: dict[str, Any]) -> None:
    s = scenario
    report_path, md_path = s["tmp"] / "out" / "run.json", s["tmp"] / "out" / "run.md"
    res = run_cli("run", "--plan", str(s["plan"]), "--env", "test", "--report", str(report_path),
                  "--markdown", str(md_path), env=s["env"])
    assert res.code == ExitCode.SUCCESS, res.err[-3000:]
    # The data really arrived.
    assert _target_tables(s["dbs"]) == ["lettings_logs", "organisations"]
    import psycopg

    with psycopg.connect(s["dbs"].target_url) as conn:
        assert conn.execute("SELECT count(*), sum((answers->>'n')::int) FROM lettings_logs").fetchone() == (
            2000, sum(range(1, 2001)))
    assert _target_keys(s["buckets"]) == sorted([*KEYS, "big/export.zip"])
    # One report: a child per job, phases, verification counts.
    report = json.loads(report_path.read_text())
    assert report["kind"] == "run" and report["status"] == "success" and report["exit_code"] == 0
    assert [c["kind"] for c in report["children"]] == ["database: copy", "bucket csv: copy", "bucket csv: verify"]
    assert report["children"][0]["children"][0]["kind"] == "db-verify"  # the copy verified itself
    assert [p["name"] for p in report["phases"]] == ["database: copy", "bucket csv: copy", "bucket csv: verify"]
    totals = report["totals"]
    assert totals["rows"] >= 2020 and totals["objects"] == len(KEYS) + 1 and totals["bytes"] > 5 * 1024 * 1024
    assert totals["outcomes"]["match"] >= len(KEYS) + 1 + 2
    assert report["outcomes"] == totals["outcomes"]  # the top level counts its parts' verification too
    assert sum(v for k, v in totals["outcomes"].items() if k != "match") == 0
    md = md_path.read_text()
    assert md.startswith("# paas-migrate run: test: SUCCESS")
    assert "| bucket csv: copy |" in md and "| database: copy |" in md and "## Verification" in md
    assert "run: success" in res.out
    _assert_no_secrets([res.out, res.err, report_path.read_text(), md], s["secrets"])
    # A second run finds a non-empty target database: a blocker, nothing written, exit 1.
    again = run_cli("run", "--plan", str(s["plan"]), "--env", "test", env=s["env"])
    assert again.code == ExitCode.FAILURE
    assert "blocker" in again.err and "nothing was written" in again.err and "database: " in again.err
    _assert_no_secrets([again.out, again.err], s["secrets"])


@pytest.mark.postgres
@pytest.mark.s3
def test_run_resume_continues_an_interrupted_database_copy(scenario: dict[str, Any], monkeypatch: Any) -> None:
    """The database copy of a run fails after one table landed; `run` again is refused (naming --resume),
    `run --resume` keeps that table, copies the rest, and the whole run verifies."""
    from migrate.db import copier

    s = scenario
    fail_copy_of(monkeypatch, "organisations")
    cfg = DbCopyConfig(db=DbJobConfig.build(s["dbs"].source_url, s["dbs"].target_url, jobs=1), verify=False)
    with pytest.raises(CopyFailed, match="organisations"):
        copier.copy_database(cfg, RecordingReporter())
    again = run_cli("run", "--plan", str(s["plan"]), "--env", "test", env=s["env"])
    assert again.code == ExitCode.FAILURE and "--resume" in again.err, again.err[-2000:]
    assert _target_keys(s["buckets"]) == []  # a blocker: nothing written, buckets included
    report_path = s["tmp"] / "resume.json"
    res = run_cli("run", "--plan", str(s["plan"]), "--env", "test", "--resume", "--report", str(report_path),
                  env=s["env"])
    assert res.code == ExitCode.SUCCESS, res.err[-3000:]
    db = json.loads(report_path.read_text())["children"][0]
    data = next(p for p in db["phases"] if p["name"] == "data")
    assert "1 copy kept" in data["note"] and data["rows"] == 20, data
    assert db["children"][0]["status"] == "success"  # the copy's own verification


@pytest.mark.postgres
@pytest.mark.s3
def test_a_blocker_stops_before_any_bucket_is_written(scenario: dict[str, Any]) -> None:
    s = scenario
    s["dbs"].target_sql("CREATE TABLE leftover (id int); INSERT INTO leftover VALUES (1);")
    report_path, md_path = s["tmp"] / "blocked.json", s["tmp"] / "blocked.md"
    res = run_cli("run", "--plan", str(s["plan"]), "--env", "test", "--report", str(report_path),
                  "--markdown", str(md_path), env=s["env"])
    assert res.code == ExitCode.FAILURE
    assert "preflight found 1 blocker, nothing was written: database: " in res.err
    assert "use --clean --yes" in res.err
    assert _target_keys(s["buckets"]) == []
    assert "Traceback" not in res.err
    # The reports say so (a change ticket wants the failed run too).
    report = json.loads(report_path.read_text())
    assert report["kind"] == "run" and report["status"] == "failed" and report["exit_code"] == 1, report
    assert any("preflight found 1 blocker" in e for e in report["errors"]), report["errors"]
    assert md_path.read_text().startswith("# paas-migrate run: test: FAILED")
    _assert_no_secrets([report_path.read_text(), md_path.read_text()], s["secrets"])
    # What the blocker says to do works with `run` itself.
    res = run_cli("run", "--plan", str(s["plan"]), "--env", "test", "--clean", "--yes", env=s["env"])
    assert res.code == ExitCode.SUCCESS, res.err[-3000:]
    assert _target_tables(s["dbs"]) == ["lettings_logs", "organisations"]


@pytest.mark.postgres
@pytest.mark.s3
def test_only_s3_leaves_the_database_alone(scenario: dict[str, Any]) -> None:
    s = scenario
    env = dict(s["env"])
    del env["TEST_SOURCE_DATABASE_URL"]  # not resolved at all with --only s3
    res = run_cli("run", "--plan", str(s["plan"]), "--env", "test", "--only", "s3", "--json", env=env)
    assert res.code == ExitCode.SUCCESS, res.err[-3000:]
    report = json.loads(res.out)
    assert all(c["kind"].startswith("bucket csv: ") for c in report["children"])
    assert _target_tables(s["dbs"]) == []
    assert len(_target_keys(s["buckets"])) == len(KEYS) + 1


@pytest.mark.postgres
@pytest.mark.s3
def test_a_failed_job_does_not_stop_the_others(scenario: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """On real services: the csv bucket's copy fails mid-run (its source listing breaks after preflight);
    the database and a second bucket are still copied and verified, the failed copy is not verified as
    if complete, the report says which job failed and why, and the suggested `--only s3` rerun finishes."""
    import uuid

    from botocore.exceptions import ClientError

    from migrate import planfile
    from migrate.s3 import clients

    s = scenario
    buckets = s["buckets"]
    suffix = uuid.uuid4().hex[:8]
    exp_src, exp_dst = f"exp-src-{suffix}", f"exp-dst-{suffix}"
    where = {"CreateBucketConfiguration": {"LocationConstraint": REGION}}
    buckets.source.create_bucket(Bucket=exp_src, **where)
    buckets.target.create_bucket(Bucket=exp_dst, **where)
    exported = {f"exports/{i}.zip": f"export {i}".encode() * (i + 1) for i in range(6)}
    for key, body in exported.items():
        buckets.source.put_object(Bucket=exp_src, Key=key, Body=body)
    plan_path = s["tmp"] / "two-buckets.toml"
    plan_path.write_text(s["plan"].read_text() + _bucket_toml("export", exp_src, exp_dst, buckets.endpoint_url))
    environ = {**s["env"], "SRC_KEY": SOURCE_KEYS["access_key_id"], "SRC_SECRET": SOURCE_KEYS["secret_access_key"]}
    env = planfile.load_environment(plan_path, "test", environ=environ, state_dir=s["tmp"] / "state")
    assert [b.name for b in env.buckets] == ["csv", "export"]
    pre = orchestrate.preflight(env)  # real and fault-free: no blocker
    assert pre.plan.blockers == []

    class BrokenPaginator:
        def paginate(self, **kw: Any) -> Any:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "listing broke"}}, "ListObjectsV2")
            yield  # a generator, as boto3's page iterators are

    class BrokenListing:
        """The csv source bucket's client after preflight: every listing fails (a server-side fault)."""

        def __init__(self, client: Any) -> None:
            self._client = client

        def get_paginator(self, name: str) -> Any:
            return BrokenPaginator() if name == "list_objects_v2" else self._client.get_paginator(name)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    real_make = clients.make_client

    def faulty(side: Any, **kw: Any) -> Any:
        client = real_make(side, **kw)
        return BrokenListing(client) if side.location.bucket == buckets.source_bucket else client

    monkeypatch.setattr(clients, "make_client", faulty)
    rec = RecordingReporter()
    report = orchestrate.run_migration(env, rec, checked=pre)

    assert report.status is Status.FAILED and report.status.exit_code() == ExitCode.FAILURE
    assert [(c.kind, c.status.value) for c in report.children] == [
        ("database: copy", "success"), ("bucket csv: copy", "failed"),
        ("bucket export: copy", "success"), ("bucket export: verify", "success")]
    csv_error = report.children[1].errors
    assert len(csv_error) == 1 and "source" in csv_error[0] and "InternalError" in csv_error[0], csv_error
    assert report.errors == [f"bucket csv: copy: {csv_error[0]}"]
    assert "bucket csv: not verified because its copy failed" in report.warnings
    assert any("bucket copies failed (csv)" in w and "rerun with --only s3" in w for w in report.warnings)
    assert any("bucket csv: copy: starting" in n for n in rec.notes())
    # What the others did is real: the database and the export bucket arrived whole, csv got nothing.
    assert _target_tables(s["dbs"]) == ["lettings_logs", "organisations"]
    assert _target_keys(buckets) == []
    for key, body in exported.items():
        assert buckets.target.get_object(Bucket=exp_dst, Key=key)["Body"].read() == body
    export_verify = report.children[3]
    assert export_verify.outcome_totals()["match"] == len(exported)
    assert report.totals["jobs_failed"] == 1
    assert report.totals["rows"] == 20 + 2000  # the database copy's rows; the failed copy added none
    assert report.totals["outcomes"] == report.outcome_totals()
    db_matches = report.children[0].outcome_totals()["match"]  # the database copy's own verification
    assert db_matches >= 2  # at least its two tables
    assert report.totals["outcomes"]["match"] == db_matches + len(exported)
    assert sum(v for k, v in report.totals["outcomes"].items() if k != "match") == 0
    assert [p.name for p in report.phases] == ["database: copy", "bucket csv: copy", "bucket export: copy",
                                               "bucket export: verify"]
    # The fault gone, the rerun the warning suggests copies and verifies both buckets (export: nothing new).
    monkeypatch.setattr(clients, "make_client", real_make)
    again = orchestrate.run_migration(env, RecordingReporter(), only="s3")
    assert again.status is Status.SUCCESS, (again.errors, again.warnings)
    assert [c.kind for c in again.children] == ["bucket csv: copy", "bucket export: copy", "bucket csv: verify",
                                                "bucket export: verify"]
    assert _target_keys(buckets) == sorted([*KEYS, "big/export.zip"])
    assert again.children[1].totals["copied"] == 0  # the export bucket resumed from its manifest


@pytest.mark.s3
def test_a_final_run_deletes_the_copy_journals_other_runs_keep_them(buckets: Any, tmp_path: Path) -> None:
    """The copy keeps its journal in the target (a rerun in a new task needs it); `run` deletes it once
    everything is verified, not before."""
    for i in range(5):
        buckets.source.put_object(Bucket=buckets.source_bucket, Key=f"docs/{i}.pdf", Body=b"%PDF" * (i + 1))
    plan = tmp_path / "buckets.toml"
    plan.write_text(_bucket_toml("docs", buckets.source_bucket, buckets.target_bucket, buckets.endpoint_url))
    env = {"SRC_KEY": SOURCE_KEYS["access_key_id"], "SRC_SECRET": SOURCE_KEYS["secret_access_key"],
           "TGT_KEY": TARGET_KEYS["access_key_id"], "TGT_SECRET": TARGET_KEYS["secret_access_key"],
           "MIGRATE_STATE_DIR": str(tmp_path / "state")}

    def journal_keys() -> list[str]:
        return [k for k in _target_keys(buckets, journal=True) if k.startswith("_paas-migrate/")]

    # an object only on the target: the verification differs (exit 3) and the journal stays
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="stray.txt", Body=b"x")
    res = run_cli("run", "--plan", str(plan), "--env", "test", "--json", "--drop-journal", env=env)
    assert res.code == ExitCode.DIFFERENCES, res.err[-3000:]
    report = json.loads(res.out)
    assert journal_keys(), "a run that did not succeed keeps the copy journal"
    assert any("kept the copy journals of the buckets (docs)" in n for n in report["notes"]), report["notes"]

    buckets.target.delete_object(Bucket=buckets.target_bucket, Key="stray.txt")
    # A successful run without --drop-journal (a day-before run) keeps it for the final one.
    res = run_cli("run", "--plan", str(plan), "--env", "test", env={**env, "MIGRATE_STATE_DIR": str(tmp_path / "new")})
    assert res.code == ExitCode.SUCCESS, res.err[-3000:]
    assert journal_keys(), "a run without --drop-journal keeps the copy journal"
    res = run_cli("run", "--plan", str(plan), "--env", "test", "--drop-journal",
                  env={**env, "MIGRATE_STATE_DIR": str(tmp_path / "newer")})
    assert res.code == ExitCode.SUCCESS, res.err[-3000:]
    assert journal_keys() == []
    assert "note: bucket docs: deleted the copy journal s3://" in res.out, res.out
    assert _target_keys(buckets) == [f"docs/{i}.pdf" for i in range(5)]


# ---- the orchestration rules, with fake engines ----


def _env_config(tmp_path: Path) -> orchestrate.EnvConfig:
    db = DbCopyConfig(db=DbJobConfig.build("postgresql://a@src/db", "postgresql://b@tgt/db", jobs=2))
    jobs = tuple(
        orchestrate.BucketJob(name, S3CopyConfig(source=S3Side.build("source", f"s3://src-{name}", environ={}),
                                                 target=S3Side.build("target", f"s3://tgt-{name}", environ={}),
                                                 workers=4, state_dir=tmp_path / name))
        for name in ("csv", "export")
    )
    return orchestrate.EnvConfig(name="unit", db=db, buckets=jobs)


def _fake_plan(kind: str, blockers: list[str] | None = None) -> Plan:
    return Plan(kind=kind, source="s", target="t", steps=[Step("copy", "copy it", 2, items=3, bytes=30)],
                blockers=blockers or [])


def _ok_report(kind: str, n: int) -> Report:
    r = Report(kind=kind, diffs=[Diff("object", f"k{i}", Outcome.MATCH) for i in range(n)])
    r.totals = {"objects": n, "bytes": 10 * n}
    return r.finish()


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import migrate.db.copier
    import migrate.db.planner
    import migrate.s3.copier
    import migrate.s3.planner
    import migrate.s3.verify

    calls: dict[str, Any] = {"copied": [], "verified": [], "db_plan": None, "s3_plan": {}}

    def plan_copy(cfg: Any) -> Plan:
        name = cfg.source.location.bucket
        behaviour = calls["s3_plan"].get(name)
        if isinstance(behaviour, Exception):
            raise behaviour
        return _fake_plan("s3", behaviour)

    def copy_bucket(cfg: Any, reporter: Any, plan: Any = None) -> Report:
        name = cfg.source.location.bucket
        assert plan is not None  # the preflight plan is handed over, not redone
        calls["copied"].append(name)
        return _ok_report("s3", 0)

    def verify_buckets(cfg: Any, reporter: Any) -> Report:
        calls["verified"].append(cfg.source.location.bucket)
        return _ok_report("s3", 3)

    def copy_database(cfg: Any, reporter: Any, plan: Any = None) -> Report:
        calls["copied"].append("db")
        r = _ok_report("db-copy", 0)
        r.children.append(_ok_report("db-verify", 5))
        r.totals = {"rows": 100, "bytes": 1000}
        return r

    monkeypatch.setattr(migrate.db.planner, "plan_database",
                        lambda cfg: calls["db_plan"] if calls["db_plan"] is not None else _fake_plan("db"))
    monkeypatch.setattr(migrate.s3.planner, "plan_copy", plan_copy)
    monkeypatch.setattr(migrate.s3.copier, "copy_bucket", copy_bucket)
    monkeypatch.setattr(migrate.s3.verify, "verify_buckets", verify_buckets)
    monkeypatch.setattr(migrate.db.copier, "copy_database", copy_database)
    return calls


def test_every_preflight_problem_is_a_blocker_and_nothing_runs(fakes: dict[str, Any], tmp_path: Path) -> None:
    fakes["db_plan"] = _fake_plan("db", ["the target database already holds 3 user tables"])
    fakes["s3_plan"]["src-csv"] = RuntimeError("boom with postgresql://u:pw-in-exc-1@h/db")
    fakes["s3_plan"]["src-export"] = ConfigError("source bucket src-export does not exist")
    env = _env_config(tmp_path)
    with pytest.raises(PreflightError) as info:
        orchestrate.run_migration(env, RecordingReporter())
    msg = str(info.value)
    assert msg.startswith("preflight found 3 blockers, nothing was written: ")
    assert "database: the target database already holds 3 user tables" in msg
    assert "bucket csv: preflight failed: RuntimeError: boom with postgresql://u:***@h/db" in msg
    assert "bucket export: source bucket src-export does not exist" in msg
    assert fakes["copied"] == [] and fakes["verified"] == []
    plan = orchestrate.plan_run(env)
    assert len(plan.blockers) == 3 and plan.kind == "run"
    assert [s.name for s in plan.steps] == ["database: copy", "database: verify", "bucket csv: plan",
                                            "bucket export: plan", "bucket csv: verify", "bucket export: verify"]


def test_ctrl_c_names_the_job_and_what_finished(fakes: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import migrate.s3.copier
    from migrate.errors import Interrupted

    def interrupted(cfg: Any, reporter: Any, plan: Any = None) -> Report:
        raise KeyboardInterrupt

    monkeypatch.setattr(migrate.s3.copier, "copy_bucket", interrupted)
    with pytest.raises(Interrupted) as info:
        orchestrate.run_migration(_env_config(tmp_path), RecordingReporter())
    assert info.value.message == "interrupted during bucket csv: copy; finished before that: database: copy success"
    assert info.value.exit_code == ExitCode.INTERRUPTED
    # The run's report (for --report / --markdown) has what finished, and where it stopped.
    report = info.value.report
    assert [(c.kind, c.status.value) for c in report.children] == [
        ("database: copy", "success"), ("bucket csv: copy", "interrupted")]


def test_all_green_run_and_only_selection(fakes: dict[str, Any], tmp_path: Path) -> None:
    report = orchestrate.run_migration(_env_config(tmp_path), RecordingReporter(), only="s3")
    assert report.status is Status.SUCCESS and fakes["copied"] == ["src-csv", "src-export"]  # no database
    assert fakes["verified"] == ["src-csv", "src-export"]
    assert [c.kind for c in report.children] == ["bucket csv: copy", "bucket export: copy", "bucket csv: verify",
                                                 "bucket export: verify"]
    assert report.totals["databases"] == 0 and report.totals["buckets"] == 2
    with pytest.raises(ConfigError, match="--only 'web'"):
        _env_config(tmp_path).select("web")
