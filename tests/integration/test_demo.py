"""`paas-migrate demo` end to end, as a user runs it: real clusters, a real S3 API server, the `run`
code path, a report with no secret in it, --keep / --stop, and clean-up after Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrate.errors import ExitCode
from tests.support.cli import ROOT, cli_env, interrupt, run_cli, start_cli
from tests.support.services import unavailable

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]


@pytest.fixture(autouse=True)
def _needs_postgres_binaries() -> None:
    from migrate.local.postgres import find_bindir

    if find_bindir() is None:
        unavailable("the demo needs PostgreSQL server binaries (initdb, pg_ctl, postgres)")


def _refuses(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _secrets_in(workdir: Path) -> list[str]:
    found = [line.rsplit(":", 1)[1] for line in (workdir / "pgpass").read_text().splitlines() if line]
    found += re.findall(r"aws_secret_access_key = (\S+)", (workdir / "aws-credentials").read_text())
    vcap = json.loads((workdir / "vcap-services.json").read_text())
    found.append(vcap["postgres"][0]["credentials"]["password"])
    found += [s["credentials"]["aws_secret_access_key"] for s in vcap["aws-s3-bucket"]]
    return sorted(set(found))


def test_demo_keep_report_and_stop(tmp_path: Path) -> None:
    report, md = tmp_path / "demo.json", tmp_path / "demo.md"
    res = run_cli("demo", "--scale", "0.2", "--keep", "--report", str(report), "--markdown", str(md), timeout=400)
    m = re.search(r"paas-migrate demo --stop (\S+)", res.err)
    assert m, res.err[-3000:]
    workdir = Path(m.group(1))
    try:
        assert res.code == ExitCode.SUCCESS, res.out[-4000:] + res.err[-2000:]
        # Credentials of --keep live in 0600 files, and none of them was printed or reported.
        for name in ("pgpass", "aws-credentials", "vcap-services.json", "run.env"):
            assert (workdir / name).stat().st_mode & 0o777 == 0o600
        secrets = _secrets_in(workdir)
        assert len(secrets) == 6  # two app roles, two superusers, two S3 key pairs
        texts = [res.out, res.err, report.read_text(), md.read_text(), (workdir / "plan.toml").read_text()]
        for text in texts:
            for secret in secrets:
                assert secret not in text
        # The plan exercised vcap:, secretsmanager: and env: references.
        plan = (workdir / "plan.toml").read_text()
        assert 'source = "vcap:core-production-postgres"' in plan and "secretsmanager:" in plan and "env:" in plan
        data = json.loads(report.read_text())
        assert data["status"] == "success"
        assert [c["kind"] for c in data["children"]] == [
            "database: copy", "bucket csv: copy", "bucket export: copy", "bucket csv: verify",
            "bucket export: verify"]
        totals = data["totals"]
        assert totals["rows"] > 8000 and totals["objects"] > 80
        assert totals["outcomes"]["match"] > 100 and totals["outcomes"]["differ"] == 0
        assert md.read_text().startswith("# paas-migrate demo: SUCCESS")
        # The kept services answer, with the credentials from the 0600 files.
        import psycopg

        m_db = re.search(r"AWS-side database: +PGPASSFILE=(\S+) psql '(\S+)'", res.err)
        assert m_db, res.err[-2000:]
        with psycopg.connect(m_db.group(2), passfile=m_db.group(1)) as conn:
            n = conn.execute("SELECT count(*) FROM lettings_logs").fetchone()
        assert n is not None and n[0] == 6000
        # The printed "plan it again" command works as printed: the kept target is no longer empty.
        m_again = re.search(r"plan it again: +\((.*)\)", res.err)
        assert m_again, res.err[-2000:]
        again = subprocess.run(m_again.group(1).replace(" paas-migrate ", f" {sys.executable} -m migrate "),
                               shell=True, capture_output=True, text=True, timeout=120,
                               env=cli_env(), cwd=str(ROOT))
        assert again.returncode == ExitCode.FAILURE, again.stderr[-2000:]
        assert "blocker: database:" in again.stdout and "already" in again.stdout
        for secret in secrets:
            assert secret not in again.stdout + again.stderr
    finally:
        stop = run_cli("demo", "--stop", str(workdir))
    assert stop.code == 0, stop.err
    assert not workdir.exists()
    ports = sorted({int(p) for p in re.findall(r"(?:@|//)127\.0\.0\.1:(\d+)", res.err)})
    assert len(ports) == 3  # two clusters and the S3 API server
    # Checked at once, no grace period: `demo --stop` must return only after its servers have exited.
    assert [p for p in ports if not _refuses(p)] == []


def test_demo_cleans_up_after_ctrl_c() -> None:
    proc = start_cli("demo", "--scale", "0.2", env={"MIGRATE_NO_PROGRESS": "0"})
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "demo: seeding" in line:
            break
    text = "".join(lines)
    m_dir = re.search(r"work directory (\S+)\)", text)
    m_ports = re.search(r"on port (\d+), AWS-side on (\d+), S3 API at http://127.0.0.1:(\d+)", text)
    assert m_dir and m_ports, text
    res = interrupt(proc, signal.SIGINT, timeout=120)
    assert res.code == ExitCode.INTERRUPTED, res.err
    assert "Traceback" not in res.err
    assert not Path(m_dir.group(1)).exists()
    # Checked at once, no grace period: the interrupted demo must exit only after its servers have.
    assert [p for p in m_ports.groups() if not _refuses(int(p))] == []


def test_stop_refuses_a_directory_that_is_not_a_demo(tmp_path: Path) -> None:
    (tmp_path / "keep-me.txt").write_text("x")
    res = run_cli("demo", "--stop", str(tmp_path))
    assert res.code == ExitCode.USAGE and "is not a demo directory" in res.err
    assert (tmp_path / "keep-me.txt").exists()
