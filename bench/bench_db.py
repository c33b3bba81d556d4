"""db copy benchmark: peers side by side in one run, alternating rounds, fresh targets each time.

    ./dev bench db [--scale 20] [--rounds 3] [--jobs 2] [--no-gin | --pgbench-only | --many-tables N]

Peers: `pg_dump -Fc | pg_restore` (piped: serial), `pgcopydb clone` (Debian package), and our
`db copy --no-verify` in parallel and stream modes; then `db verify` on the copy. Prints medians,
peak RSS and ratios (lower = faster for us). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from migrate.config import DatabaseURL  # noqa: E402
from migrate.db.pgtools import find_tool, libpq_target, tool_env  # noqa: E402
from migrate.local.postgres import LocalPostgres  # noqa: E402

RDS_USER, RDS_PW = "rds_master", "rds-master-password"


def server_cpu(cluster: LocalPostgres) -> float:
    """CPU seconds the cluster has used: its postmaster and every backend it has reaped."""
    pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def run_timed(argv: list[str], env: dict[str, str], shell: bool = False) -> tuple[float, float, int, float]:
    """Wall seconds, peak RSS (MiB) of the process tree's largest member, exit code, and the CPU
    seconds of the client process tree."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, shell=shell)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        print(f"  ! {' '.join(argv)[:80]} exited {rc}: {err.strip()[-400:]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, rc, usage.ru_utime + usage.ru_stime


def seed(src: LocalPostgres, scale: int, gin: bool = True, extras: bool = True) -> None:
    pgbench = find_tool("pgbench")
    url = DatabaseURL(src.url("bench"))
    subprocess.run([pgbench.path, "-i", "-q", "-s", str(scale), libpq_target(url)],
                   env=tool_env(url), check=True, capture_output=True)
    if not extras:
        src.execute("VACUUM ANALYZE", "bench")
        return
    src.execute(
        """
        CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL, placed timestamptz NOT NULL,
                             status text NOT NULL, total numeric(12,2), doc jsonb);
        INSERT INTO orders (customer, placed, status, total, doc)
        SELECT g % 50000, now() - (g || ' minutes')::interval, (ARRAY['new','paid','shipped'])[1 + g % 3],
               (g % 1000) / 7.0, jsonb_build_object('lines', g % 7, 'note', md5(g::text))
        FROM generate_series(1, 1000000) g;
        CREATE INDEX orders_customer ON orders (customer);
        CREATE INDEX orders_placed ON orders (placed);
        {gin}
        CREATE TABLE events (at timestamptz, kind text, payload text);
        INSERT INTO events SELECT now() - (g || ' s')::interval, 'k' || (g % 20), repeat(md5(g::text), 3)
        FROM generate_series(1, 500000) g;
        CREATE INDEX events_at ON events (at);
        """.replace("{gin}", "CREATE INDEX orders_doc ON orders USING gin (doc);" if gin else
                    "CREATE INDEX orders_status ON orders (status, placed);"),
        "bench",
    )
    src.execute("VACUUM ANALYZE", "bench")


def seed_many(src: LocalPostgres, n: int) -> None:
    src.execute(
        "DO $$ BEGIN FOR i IN 1.." + str(n) + " LOOP EXECUTE format("
        "'CREATE TABLE t%s (id serial PRIMARY KEY, ref int, name text, at timestamptz DEFAULT now());"
        " CREATE INDEX ON t%s (ref);"
        " INSERT INTO t%s (ref, name) SELECT g, md5(g::text) FROM generate_series(1, 100) g', i, i, i);"
        " END LOOP; END $$",
        "bench",
    )
    src.execute("VACUUM ANALYZE", "bench")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=int, default=20, help="pgbench scale (20 ≈ 300 MB of accounts)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", nargs="*", default=None, help="subset of peers to run")
    ap.add_argument("--durable", action="store_true",
                    help="clusters with fsync, synchronous_commit and full_page_writes on (the default is off)")
    ap.add_argument("--no-gin", action="store_true",
                    help="b-tree secondary indexes only (no GIN on jsonb, whose single-threaded build bounds "
                         "every tool's wall time)")
    ap.add_argument("--pgbench-only", action="store_true",
                    help="the pgbench tables alone (no orders/events tables with secondary indexes)")
    ap.add_argument("--many-tables", type=int, default=0, metavar="N",
                    help="instead: N small tables (100 rows, a serial key and a secondary index each),"
                         " where per-table overhead decides")
    args = ap.parse_args()

    src = LocalPostgres("bench-src", durable=args.durable).start()
    tgt = LocalPostgres("bench-tgt", durable=args.durable).start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-db-"))
    try:
        tgt.create_role(RDS_USER, RDS_PW, createdb=True)
        src.create_database("bench")
        if args.many_tables:
            print(f"seeding: {args.many_tables} small tables")
        elif args.pgbench_only:
            print(f"seeding: pgbench scale {args.scale} only")
        else:
            print(f"seeding: pgbench scale {args.scale} + orders (1M rows, 3 indexes"
                  f"{', b-tree only' if args.no_gin else ' incl. GIN on jsonb'}) + events (500k rows)")
        t = time.monotonic()
        if args.many_tables:
            seed_many(src, args.many_tables)
        else:
            seed(src, args.scale, gin=not args.no_gin, extras=not args.pgbench_only)
        with __import__("psycopg").connect(src.url("bench")) as c:
            size = c.execute("SELECT pg_size_pretty(pg_database_size('bench'))").fetchone()[0]
        print(f"seeded {size} in {time.monotonic() - t:.0f}s; jobs={args.jobs}; rounds={args.rounds}")

        py = sys.executable
        src_url = src.url("bench")
        pg_dump, pg_restore = find_tool("pg_dump").path, find_tool("pg_restore").path
        pgcopydb = shutil.which("pgcopydb")

        def peers(target_db: str) -> dict[str, tuple[list[str], dict[str, str], bool]]:
            tgt_url = tgt.url(target_db, RDS_USER, RDS_PW)
            base = dict(os.environ, MIGRATE_NO_PROGRESS="1", PYTHONPATH=str(ROOT))
            ours_env = dict(base, MIGRATE_SOURCE_DATABASE_URL=src_url, MIGRATE_TARGET_DATABASE_URL=tgt_url)
            src_u, tgt_u = DatabaseURL(src_url), DatabaseURL(tgt_url)
            pipe = (
                f"PGPASSWORD='{src.password}' {pg_dump} -Fc --no-owner --no-acl '{libpq_target(src_u)}'"
                f" | PGPASSWORD='{RDS_PW}' {pg_restore} --no-owner --no-acl -d '{libpq_target(tgt_u)}'"
            )
            out: dict[str, tuple[list[str], dict[str, str], bool]] = {
                "pg_dump|pg_restore": ([pipe], base, True),
                "ours parallel": ([py, "-m", "migrate", "db", "copy", "--no-verify", "--jobs", str(args.jobs)],
                                  ours_env, False),
                "ours stream": ([py, "-m", "migrate", "db", "copy", "--no-verify", "--mode", "stream"],
                                ours_env, False),
            }
            if pgcopydb:
                d = workdir / f"pgcopydb-{target_db}"
                out["pgcopydb clone"] = (
                    [pgcopydb, "clone", "--source", src_url, "--target", tgt_url, "--dir", str(d),
                     "--table-jobs", str(args.jobs), "--index-jobs", str(args.jobs), "--no-owner", "--no-acl",
                     "--skip-extensions"],
                    base, False,
                )
            return out

        names = list(peers("x"))
        if args.only:
            names = [n for n in names if n in args.only]
        walls: dict[str, list[float]] = {n: [] for n in names}
        rss: dict[str, list[float]] = {n: [] for n in names}
        cpus: dict[str, list[float]] = {n: [] for n in names}  # client tree + both servers
        verify_walls: list[float] = []
        verify_rss: list[float] = []
        counter = 0
        for r in range(args.rounds):
            order = names if r % 2 == 0 else list(reversed(names))
            for name in order:
                counter += 1
                db = f"t{counter}"
                tgt.create_database(db, owner=RDS_USER)
                argv, env, shell = peers(db)[name]
                servers = server_cpu(src) + server_cpu(tgt)
                wall, peak, rc, client = run_timed(argv, env, shell=shell)
                time.sleep(0.3)  # the backends exit (and are reaped) after their clients
                cpu = client + server_cpu(src) + server_cpu(tgt) - servers
                if rc == 0:
                    walls[name].append(wall)
                    rss[name].append(peak)
                    cpus[name].append(cpu)
                print(f"round {r + 1}: {name:20s} {wall:7.2f}s  peak RSS {peak:6.1f} MiB  CPU {cpu:6.1f}s"
                      f" (client {client:.1f}s)  rc={rc}")
                if name == "ours parallel" and rc == 0:
                    venv = dict(env)
                    vw, vp, vrc, _ = run_timed([py, "-m", "migrate", "db", "verify", "--jobs", str(args.jobs)], venv)
                    if vrc == 0:
                        verify_walls.append(vw)
                        verify_rss.append(vp)
                    print(f"round {r + 1}: {'ours verify':20s} {vw:7.2f}s  peak RSS {vp:6.1f} MiB  rc={vrc}")
                tgt.drop_database(db)
                shutil.rmtree(workdir / f"pgcopydb-{db}", ignore_errors=True)

        print("\nmedians (lower is better)")
        med = {n: statistics.median(v) for n, v in walls.items() if v}
        for n, v in med.items():
            cpu = statistics.median(cpus[n])
            print(f"  {n:20s} {v:7.2f}s   peak RSS {max(rss[n]):6.1f} MiB   CPU {cpu:6.1f}s"
                  f" (floor on {os.cpu_count()} cores: {cpu / (os.cpu_count() or 1):.2f}s)")
        if verify_walls:
            vmed = statistics.median(verify_walls)
            print(f"  {'ours verify':20s} {vmed:7.2f}s   peak RSS {max(verify_rss):6.1f} MiB")
        print("\nratios")
        ours = med.get("ours parallel")
        if ours:
            for peer in ("pg_dump|pg_restore", "pgcopydb clone"):
                if peer in med:
                    print(f"  ours parallel / {peer:20s} = {ours / med[peer]:.2f}x")
            if verify_walls:
                print(f"  ours verify / ours parallel copy     = {statistics.median(verify_walls) / ours:.2f}x")
        if "ours stream" in med and "pg_dump|pg_restore" in med:
            print(f"  ours stream / pg_dump|pg_restore     = {med['ours stream'] / med['pg_dump|pg_restore']:.2f}x")
        print(f"\nmachine: {os.cpu_count()} cores; resource limits: {resource.getrlimit(resource.RLIMIT_NOFILE)}")
    finally:
        src.stop()
        tgt.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
