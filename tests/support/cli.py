"""Run `paas-migrate` as the user does: a separate process, real exit code, real stdout/stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_") or k == "MIGRATE_PG_BINDIR"}
    base["MIGRATE_NO_PROGRESS"] = "1"
    base["PYTHONPATH"] = str(ROOT)
    base.update(env or {})
    return base


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, input: str | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "migrate", *args],
        env=cli_env(env), capture_output=True, text=True, timeout=timeout, input=input, cwd=str(ROOT),
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start in the background (for interrupt tests); the caller signals and waits."""
    return subprocess.Popen(
        [sys.executable, "-m", "migrate", *args],
        env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
        start_new_session=True,
    )


def interrupt(proc: subprocess.Popen[str], sig: int = signal.SIGINT, timeout: float = 60) -> Result:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return Result(proc.returncode, out, err)
