"""Progress is a protocol, not a UI (after s3transfer's subscribers).

Engines call `on_start`, `on_progress` (deltas, possibly negative when a retry rewinds) and
`on_done` for named tasks, and `note` for a one-line phase message. They may do so from many
threads at once. Which reporter is used is the CLI's choice: Rich bars on a terminal, plain
timestamped lines every few seconds otherwise (what CloudWatch shows from an ECS task), a null
reporter, and a recording reporter for tests.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from migrate.config import redact


class Reporter(Protocol):
    def on_start(self, task: str, *, total: float | None = None, unit: str = "") -> None: ...

    def on_progress(self, task: str, advance: float) -> None: ...

    def on_total(self, task: str, total: float) -> None: ...

    def on_done(self, task: str, *, ok: bool = True, message: str = "") -> None: ...

    def note(self, message: str) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    """Discards everything."""

    def on_start(self, task: str, *, total: float | None = None, unit: str = "") -> None:
        pass

    def on_progress(self, task: str, advance: float) -> None:
        pass

    def on_total(self, task: str, total: float) -> None:
        pass

    def on_done(self, task: str, *, ok: bool = True, message: str = "") -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Task:
    total: float | None
    unit: str
    done: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    ok: bool = True
    message: str = ""


class RecordingReporter:
    """Keeps every event, in order, for tests: `events` is a list of (kind, task, value) tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()

    def on_start(self, task: str, *, total: float | None = None, unit: str = "") -> None:
        with self._lock:
            self.events.append(("start", task, total))
            self.tasks[task] = _Task(total, unit)

    def on_progress(self, task: str, advance: float) -> None:
        with self._lock:
            self.events.append(("progress", task, advance))
            if task in self.tasks:
                self.tasks[task].done += advance

    def on_total(self, task: str, total: float) -> None:
        with self._lock:
            self.events.append(("total", task, total))
            if task in self.tasks:
                self.tasks[task].total = total

    def on_done(self, task: str, *, ok: bool = True, message: str = "") -> None:
        with self._lock:
            self.events.append(("done", task, ok))
            if task in self.tasks:
                t = self.tasks[task]
                t.finished, t.ok, t.message = True, ok, message

    def note(self, message: str) -> None:
        with self._lock:
            self.events.append(("note", "", message))

    def close(self) -> None:
        pass

    def notes(self) -> list[str]:
        return [str(v) for k, _, v in self.events if k == "note"]


def plain_text(value: object) -> str:
    """`value` redacted and escaped for Rich: table names, S3 keys and error text may contain "[...]",
    which Rich would otherwise read as markup (and fail on, or hide)."""
    from rich.markup import escape

    return escape(redact(value))


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 table', '2 tables', '1,000 objects': a count with its noun in the right number."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def agree(n: int, one: str, many: str) -> str:
    """The word that agrees with a count: agree(n, "is", "are")."""
    return one if n == 1 else many


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _amount(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0f}%"
    return human_bytes(value) if unit == "bytes" else f"{value:,.0f}{' ' + unit if unit else ''}"


class PlainReporter:
    """Timestamped lines: notes and task completions at once, running tasks every `interval` seconds."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 5.0, max_lines: int = 8) -> None:
        self._stream = stream or sys.stderr
        self._interval = interval
        self._max_lines = max_lines
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="plain-progress", daemon=True)
        self._thread.start()

    def _write(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._stream.write(f"{stamp} {redact(line)}\n")
        self._stream.flush()

    def on_start(self, task: str, *, total: float | None = None, unit: str = "") -> None:
        with self._lock:
            self._tasks[task] = _Task(total, unit)

    def on_progress(self, task: str, advance: float) -> None:
        with self._lock:
            t = self._tasks.get(task)
            if t is not None:
                t.done += advance

    def on_total(self, task: str, total: float) -> None:
        with self._lock:
            t = self._tasks.get(task)
            if t is not None:
                t.total = total

    def on_done(self, task: str, *, ok: bool = True, message: str = "") -> None:
        with self._lock:
            t = self._tasks.pop(task, None)
        if t is None:
            return
        elapsed = time.monotonic() - t.started
        status = "done" if ok else "FAILED"
        extra = f" — {message}" if message else ""
        amount = f" {_amount(t.done, t.unit)}" if t.total or t.done else ""  # a statement has no amount
        self._write(f"{status}: {task}{amount} in {elapsed:.1f}s{extra}")

    def note(self, message: str) -> None:
        self._write(message)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                running = list(self._tasks.items())
            for name, t in running[: self._max_lines]:
                elapsed = max(time.monotonic() - t.started, 1e-6)
                rate = t.done / elapsed
                if t.total:
                    pct = 100.0 * t.done / t.total
                    eta = (t.total - t.done) / rate if rate > 0 else float("inf")
                    eta_s = f", ETA {eta:.0f}s" if eta != float("inf") else ""
                    line = f"progress: {name} {pct:.0f}%{eta_s}" if t.unit == "%" else (
                        f"progress: {name} {_amount(t.done, t.unit)}/{_amount(t.total, t.unit)}"
                        f" ({pct:.0f}%), {_amount(rate, t.unit)}/s{eta_s}"
                    )
                elif not t.done:  # a statement: no amount to show, only that it still runs
                    line = f"progress: {name} running for {elapsed:.0f}s"
                else:
                    line = f"progress: {name} {_amount(t.done, t.unit)}, {_amount(rate, t.unit)}/s"
                self._write(line)
            if len(running) > self._max_lines:
                self._write(f"progress: … and {len(running) - self._max_lines} more running")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def amount_of(done: float, total: float | None, unit: str) -> str:
    """"12.0 MiB/48.0 MiB 25%", "1,200/3,000 objects 40%", or the amount alone without a total."""
    if not total:
        return _amount(done, unit)
    pct = min(100.0 * done / total, 100.0)
    if unit == "%":
        return f"{pct:.0f}%"
    shown = _amount(done, unit) if unit == "bytes" or not unit else f"{done:,.0f}"
    return f"{shown}/{_amount(total, unit)} {pct:.0f}%"


def _amount_column() -> Any:
    """A Rich column (built lazily: Rich is imported only for a terminal) showing `amount_of`."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class AmountColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(amount_of(task.completed, task.total, task.fields.get("unit", "")))

    return AmountColumn()


class RichReporter:
    """Live bars on a terminal (stderr, so stdout stays clean for tables and JSON)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._console = Console(file=stream or sys.stderr, log_path=False)  # no source file:line on log lines
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _amount_column(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        self._ids: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._progress.start()

    def on_start(self, task: str, *, total: float | None = None, unit: str = "") -> None:
        with self._lock:
            self._ids[task] = self._progress.add_task(plain_text(task), total=total, unit=unit)

    def on_progress(self, task: str, advance: float) -> None:
        with self._lock:
            tid = self._ids.get(task)
        if tid is not None:
            self._progress.update(tid, advance=advance)

    def on_total(self, task: str, total: float) -> None:
        with self._lock:
            tid = self._ids.get(task)
        if tid is not None:
            self._progress.update(tid, total=total)

    def on_done(self, task: str, *, ok: bool = True, message: str = "") -> None:
        with self._lock:
            tid = self._ids.pop(task, None)
        if tid is None:
            return
        # Finished tasks leave the live area (it would grow with every table) and become one log line.
        t = next((x for x in self._progress.tasks if x.id == tid), None)
        self._progress.remove_task(tid)
        shown = t is not None and bool(t.total or t.completed)  # a statement has no amount
        amount = f" {_amount(t.completed, t.fields.get('unit', ''))}" if t is not None and shown else ""
        elapsed = f" in {t.elapsed:.1f}s" if t is not None and t.elapsed is not None else ""
        mark = "[green]done[/green]" if ok else "[red]FAILED[/red]"
        extra = f" — {plain_text(message)}" if message else ""
        self._progress.console.log(f"{mark} {plain_text(task)}{amount}{elapsed}{extra}")

    def note(self, message: str) -> None:
        self._progress.console.log(plain_text(message))

    def close(self) -> None:
        self._progress.stop()


def choose_reporter(*, quiet: bool = False, stream: IO[str] | None = None) -> Reporter:
    """Rich on a terminal, plain lines otherwise, nothing when quiet."""
    if quiet:
        return NullReporter()
    out = stream or sys.stderr
    if hasattr(out, "isatty") and out.isatty():
        return RichReporter(out)
    return PlainReporter(out)
