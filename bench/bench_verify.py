"""db verify benchmark: time `paas-migrate db verify` on the db-copy benchmark database.

    .venv/bin/python bench/bench_verify.py [--scale 20] [--rounds 3] [--jobs 2]

Seeds the source like bench/bench_db.py (pgbench tables + orders + events), clones it once with
`pg_dump --no-owner --no-acl | psql` as a non-superuser (independently of our copier, timed as the
reference copy), then runs verify `--rounds` times and prints median wall, peak RSS and the ratio
to the reference copy. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_db import seed  # noqa: E402
from migrate.local.postgres import LocalPostgres  # noqa: E402
from tests.support.dbclone import clone_database  # noqa: E402

RDS_USER, RDS_PW = "rds_master", "rds-master-password"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    src = LocalPostgres("bench-verify-src").start()
    tgt = LocalPostgres("bench-verify-tgt").start()
    try:
        src.create_database("bench")
        seed(src, args.scale)
        tgt.create_role(RDS_USER, RDS_PW)
        tgt.create_database("bench", owner=RDS_USER)
        target_url = tgt.url("bench", RDS_USER, RDS_PW)
        t0 = time.monotonic()
        clone_database(src.url("bench"), target_url, timeout=3600)
        copy_wall = time.monotonic() - t0
        tgt.execute("VACUUM ANALYZE", "bench")
        print(f"reference copy (pg_dump | psql): {copy_wall:.2f}s")
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            MIGRATE_NO_PROGRESS="1",
            MIGRATE_SOURCE_DATABASE_URL=src.url("bench"),
            MIGRATE_TARGET_DATABASE_URL=target_url,
        )
        walls, rss = [], []
        for r in range(args.rounds):
            start = time.monotonic()
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "migrate", "db", "verify", "--json", "--jobs", str(args.jobs)],
                    env=env,
                    stdout=out,
                    stderr=err,
                )
                _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS, not the largest so far
                wall = time.monotonic() - start
                out.seek(0)
                err.seek(0)
                text, errors = out.read().decode(), err.read().decode()
            rc = os.waitstatus_to_exitcode(status)
            report = json.loads(text) if text.strip() else {}
            peak = usage.ru_maxrss / 1024
            walls.append(wall)
            rss.append(peak)
            phases = ", ".join(f"{p['name']} {p['seconds']:.2f}s" for p in report.get("phases", []))
            print(
                f"round {r + 1}: verify {wall:.2f}s rc={rc} rows={report.get('totals', {}).get('rows')}"
                f" ({phases}) peak RSS {peak:.0f} MiB {errors[-300:].strip()}"
            )
        med = statistics.median(walls)
        print(f"verify median {med:.2f}s, peak RSS {max(rss):.0f} MiB; verify / reference copy {med / copy_wall:.2f}x")
    finally:
        src.stop()
        tgt.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
