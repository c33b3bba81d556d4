"""Bucket-copy benchmark (not a test): our `s3 copy` against aws s3 sync, rclone and the server's ceiling.

Starts its own local S3 API server (moto), fills a source bucket with ~3000 small objects and 4×40 MiB
multipart ones, then runs every contender in alternating order, each into a fresh target bucket, and
prints medians and ratios (lower = faster for us). Also times listing + planning of a synthetic
1,000,000-key inventory in a child process and reports its peak RSS.

    .venv/bin/python bench/bench_s3.py [--rounds 2] [--small 3000] [--big 4] [--skip-plan]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from migrate.local.s3server import REGION, SOURCE_KEYS, TARGET_KEYS, LocalS3Server  # noqa: E402

MiB = 1024 * 1024


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """(seconds, exit code, peak RSS in MB) of one child process.

    The RSS comes from /usr/bin/time: a child forked straight from this (large) process would report
    this process's RSS at fork time as its own maximum.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        timer = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name] if os.path.exists("/usr/bin/time") else []
        t0 = time.monotonic()
        proc = subprocess.run([*timer, *cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              cwd=str(ROOT))
        seconds = time.monotonic() - t0
        text = rss_file.read().strip().splitlines()
    if proc.returncode != 0:
        sys.stderr.write(f"  ! {' '.join(cmd[:4])} exited {proc.returncode}: {proc.stderr.decode()[-500:]}\n")
    peak = int(text[-1]) // 1024 if text and text[-1].isdigit() else 0
    return seconds, proc.returncode, peak


def fill(server: LocalS3Server, bucket: str, small: int, big: int) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    c = boto3.client("s3", endpoint_url=server.endpoint_url, region_name=REGION,
                     aws_access_key_id=SOURCE_KEYS["access_key_id"],
                     aws_secret_access_key=SOURCE_KEYS["secret_access_key"],
                     config=Config(max_pool_connections=64))
    c.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    with cf.ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: c.put_object(Bucket=bucket, Key=f"small/{i % 50:02d}/obj-{i:05d}.csv",
                                             Body=os.urandom(1000 + (i * 37) % 7000)), range(small)))
    tc = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    for i in range(big):
        import io

        c.upload_fileobj(io.BytesIO(os.urandom(40 * MiB)), bucket, f"big/export-{i}.bin", Config=tc)


def bare_loop(server: LocalS3Server, src: str, dst: str, kind: str) -> float:
    """The server's ceiling: 64 threads doing nothing but copy_object (or get + put) over the keys."""
    import boto3
    from botocore.config import Config

    cfg = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 5})
    s = boto3.client("s3", endpoint_url=server.endpoint_url, region_name=REGION, config=cfg,
                     aws_access_key_id=SOURCE_KEYS["access_key_id"],
                     aws_secret_access_key=SOURCE_KEYS["secret_access_key"])
    t = boto3.client("s3", endpoint_url=server.endpoint_url, region_name=REGION, config=cfg,
                     aws_access_key_id=TARGET_KEYS["access_key_id"],
                     aws_secret_access_key=TARGET_KEYS["secret_access_key"])
    t0 = time.monotonic()
    keys = [o["Key"] for p in s.get_paginator("list_objects_v2").paginate(Bucket=src) for o in p.get("Contents", [])]

    def one(key: str) -> None:
        if kind == "copy":
            t.copy_object(Bucket=dst, Key=key, CopySource={"Bucket": src, "Key": key})
        else:
            body = s.get_object(Bucket=src, Key=key)["Body"].read()
            t.put_object(Bucket=dst, Key=key, Body=body)

    with cf.ThreadPoolExecutor(64) as pool:
        list(pool.map(one, keys))
    return time.monotonic() - t0


def bench_plan(n: int) -> None:
    """Child mode: list + plan a synthetic n-key inventory (half already on the target)."""
    from migrate.config import S3CopyConfig, S3Side
    from migrate.s3.inventory import ObjectInfo, batched
    from migrate.s3.manifest import Manifest
    from migrate.s3.planner import plan_from_manifest

    def side(key: str, offset: int) -> Any:
        for i in range(offset, n):
            yield ObjectInfo(f"data/{i % 997:03d}/{i:09d}-{key}.csv", 1000 + i % 5000, f"{i:032x}", None, "STANDARD")

    env = {"MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": "A", "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": "Bxxxx",
           "MIGRATE_TARGET_AWS_ACCESS_KEY_ID": "A", "MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": "Bxxxx"}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = S3CopyConfig(source=S3Side.build("source", "s3://bench-a", environ=env),
                           target=S3Side.build("target", "s3://bench-b", environ=env), state_dir=Path(tmp))
        t0 = time.monotonic()
        m = Manifest(Path(tmp) / "m.sqlite")
        n_src, b_src = m.load_listing("src", batched(side("x", 0)))
        n_dst, _ = m.load_listing("dst", batched(side("x", n // 2)))
        plan = plan_from_manifest(cfg, m, n_src, b_src, n_dst)
        m.close()
        print(f"plan of {n:,} keys: {time.monotonic() - t0:.1f}s; missing {plan.facts['missing on target']:,}, "
              f"match {plan.facts['match']:,}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--small", type=int, default=3000)
    ap.add_argument("--big", type=int, default=4)
    ap.add_argument("--skip-plan", action="store_true")
    ap.add_argument("--plan-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plan_child:
        bench_plan(args.plan_child)
        return 0

    aws = shutil.which("aws") or "/root/.pyenv/shims/aws"
    results: dict[str, list[float]] = {}
    rss: dict[str, list[int]] = {}
    with LocalS3Server() as server, tempfile.TemporaryDirectory() as tmp:
        src = "bench-src"
        print(f"filling s3://{src}: {args.small} small + {args.big}×40 MiB …", flush=True)
        fill(server, src, args.small, args.big)
        import boto3

        admin = boto3.client("s3", endpoint_url=server.endpoint_url, region_name=REGION,
                             aws_access_key_id=TARGET_KEYS["access_key_id"],
                             aws_secret_access_key=TARGET_KEYS["secret_access_key"])
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MIGRATE_", "AWS_", "RCLONE_"))}
        ours_env = {**base, "PYTHONPATH": str(ROOT), "MIGRATE_NO_PROGRESS": "1",
                    "MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": SOURCE_KEYS["access_key_id"],
                    "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": SOURCE_KEYS["secret_access_key"],
                    "MIGRATE_TARGET_AWS_ACCESS_KEY_ID": TARGET_KEYS["access_key_id"],
                    "MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": TARGET_KEYS["secret_access_key"],
                    "MIGRATE_SOURCE_AWS_REGION": REGION, "MIGRATE_TARGET_AWS_REGION": REGION}
        aws_env = {**base, "AWS_ACCESS_KEY_ID": TARGET_KEYS["access_key_id"],
                   "AWS_SECRET_ACCESS_KEY": TARGET_KEYS["secret_access_key"], "AWS_DEFAULT_REGION": REGION}
        rclone_env = dict(base)
        for name, keys in (("SRC", SOURCE_KEYS), ("DST", TARGET_KEYS)):
            rclone_env.update({f"RCLONE_CONFIG_{name}_TYPE": "s3", f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                               f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": keys["access_key_id"],
                               f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": keys["secret_access_key"],
                               f"RCLONE_CONFIG_{name}_ENDPOINT": server.endpoint_url,
                               f"RCLONE_CONFIG_{name}_REGION": REGION})

        def ours(mode: str):
            def run(dst: str) -> tuple[float, int, int]:
                state = Path(tmp) / uuid.uuid4().hex
                return run_child([sys.executable, "-m", "migrate", "s3", "copy", "--source", f"s3://{src}",
                                  "--target", f"s3://{dst}", "--source-endpoint-url", server.endpoint_url,
                                  "--target-endpoint-url", server.endpoint_url, "--mode", mode,
                                  "--state-dir", str(state)], ours_env)
            return run

        contenders: dict[str, Any] = {
            "aws s3 sync": lambda dst: run_child([aws, "s3", "sync", f"s3://{src}", f"s3://{dst}", "--only-show-errors",
                                                  "--endpoint-url", server.endpoint_url], aws_env),
            "rclone 2 remotes": lambda dst: run_child(["rclone", "copy", f"SRC:{src}", f"DST:{dst}", "--transfers",
                                                       "32", "--checkers", "32"], rclone_env),
            "ours stream": ours("stream"),
            "ours server-side": ours("server-side"),
            "bare copy_object×64": lambda dst: (bare_loop(server, src, dst, "copy"), 0, 0),
            "bare get+put×64": lambda dst: (bare_loop(server, src, dst, "getput"), 0, 0),
        }
        names = list(contenders)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                dst = f"bench-dst-{uuid.uuid4().hex[:10]}"
                admin.create_bucket(Bucket=dst, CreateBucketConfiguration={"LocationConstraint": REGION})
                seconds, code, peak = contenders[name](dst)
                # Not our copy journal (kept in the target until `s3 verify --drop-journal`).
                n = sum(1 for p in admin.get_paginator("list_objects_v2").paginate(Bucket=dst)
                        for o in p.get("Contents", []) if not o["Key"].startswith("_paas-migrate/"))
                flag = "" if code == 0 and n == args.small + args.big else f"  (exit {code}, {n} objects!)"
                print(f"round {r + 1}: {name:22s} {seconds:7.2f}s  rss {peak:4d} MB{flag}", flush=True)
                results.setdefault(name, []).append(seconds)
                rss.setdefault(name, []).append(peak)
    med = {k: statistics.median(v) for k, v in results.items()}
    print("\nmedians (s) and peak RSS (MB):")
    for k, v in med.items():
        print(f"  {k:22s} {v:7.2f}   {max(rss[k]) or '-'}")
    print("\nratios (lower = faster for us):")
    for ours_name, peer, target in (("ours stream", "rclone 2 remotes", 0.9), ("ours stream", "bare get+put×64", 1.15),
                                    ("ours server-side", "aws s3 sync", 0.9),
                                    ("ours server-side", "bare copy_object×64", 1.1)):
        ratio = med[ours_name] / med[peer]
        print(f"  {ours_name} / {peer}: {ratio:.2f}× (target ≤ {target}×) {'ok' if ratio <= target else 'MISSED'}")
    if not args.skip_plan:
        seconds, code, peak = run_child([sys.executable, __file__, "--plan-child", "1000000"],
                                        {**os.environ, "PYTHONPATH": str(ROOT)})
        print(f"\nsynthetic 1,000,000-key list+plan: {seconds:.1f}s, peak RSS {peak} MB (targets ≤ 60 s, ≤ 300 MB)"
              f"{'' if code == 0 else f' (exit {code})'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
