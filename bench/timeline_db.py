"""Per-task timeline of one `db copy` (in-process): when each copy, index build and ANALYZE started
and ended, to see the critical path and idle jobs. Not part of the test suite.

    MIGRATE_SOURCE_DATABASE_URL=... MIGRATE_TARGET_DATABASE_URL=... .venv/bin/python bench/timeline_db.py [--jobs 2]

The target database must be empty (create a fresh one per run). Prints "start end seconds task",
sorted by start, then the total.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from migrate.config import DbCopyConfig, DbJobConfig  # noqa: E402
from migrate.db import copier  # noqa: E402


class Timeline:
    """A Reporter that keeps (start, end, task) for every task."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.started: dict[str, float] = {}
        self.rows: list[tuple[float, float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def on_start(self, task: str, *, total: float | None = None, unit: str = "") -> None:
        self.started[task] = self.now()

    def on_progress(self, task: str, advance: float) -> None:
        pass

    def on_total(self, task: str, total: float) -> None:
        pass

    def on_done(self, task: str, *, ok: bool = True, message: str = "") -> None:
        self.rows.append((self.started.get(task, 0.0), self.now(), task + ("" if ok else " (failed)")))

    def note(self, message: str) -> None:
        self.rows.append((self.now(), self.now(), f"note: {message[:80]}"))

    def close(self) -> None:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    cfg = DbCopyConfig(
        db=DbJobConfig.build(os.environ["MIGRATE_SOURCE_DATABASE_URL"], os.environ["MIGRATE_TARGET_DATABASE_URL"],
                             jobs=args.jobs),
        verify=False, split_threshold_bytes=int(os.environ.get("SPLIT", 256 * 1024 * 1024)),
    )
    timeline = Timeline()
    report = copier.copy_database(cfg, timeline)
    for start, end, task in sorted(timeline.rows):
        print(f"{start:7.2f} {end:7.2f} {end - start:6.2f}  {task}")
    print(f"total {timeline.now():.2f} s: {report.status.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
