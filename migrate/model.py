"""What every job plans, reports and compares: Plan, Step, Diff, PhaseResult, Report, Status.

One vocabulary for differences (rclone check's words), used by the CLI table, JSON and logs alike.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any

from migrate.config import redact
from migrate.errors import ExitCode, Interrupted, MigrateError


class Status(StrEnum):
    SUCCESS = "success"
    PARTIAL = "partial"  # some items failed, the rest completed
    FAILED = "failed"
    DIFFERS = "differs"  # the work ran, verification found differences
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: stopped part-way

    def exit_code(self) -> ExitCode:
        """The single place where a result's status becomes the process exit code."""
        return {
            Status.SUCCESS: ExitCode.SUCCESS,
            Status.PARTIAL: ExitCode.FAILURE,
            Status.FAILED: ExitCode.FAILURE,
            Status.DIFFERS: ExitCode.DIFFERENCES,
            Status.INTERRUPTED: ExitCode.INTERRUPTED,
        }[self]


class Outcome(StrEnum):
    """Result of comparing one object on both sides."""

    MATCH = "match"
    DIFFER = "differ"
    MISSING_ON_TARGET = "missing on target"
    EXTRA_ON_TARGET = "extra on target"
    ERROR = "error"


@dataclass
class Step:
    """One phase of a plan: what it does, with which concurrency, over what."""

    name: str
    description: str
    concurrency: int = 1
    items: int | None = None
    bytes: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """Read-only inventory and intended work. `--dry-run` prints this and nothing else."""

    kind: str  # "db", "s3", "run"
    source: str  # already redacted for display
    target: str
    steps: list[Step] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    blockers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blockers

    def to_dict(self) -> dict[str, Any]:
        return scrub(asdict(self))


@dataclass
class Diff:
    """One compared object. `kind` is e.g. table, index, sequence, object; `name` identifies it."""

    kind: str
    name: str
    outcome: Outcome
    detail: str = ""
    info_only: bool = False  # e.g. owner/ACL differences: shown, never a failure
    # What `detail` says, for scripts (JSON reports only): e.g. a table's row counts, differing keys
    # and key ranges, so that nothing has to be parsed out of the sentence.
    data: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        if self.data is None:
            del d["data"]
        return d


@dataclass
class PhaseResult:
    """One row of the end-of-run summary table."""

    name: str
    seconds: float
    concurrency: int = 1
    items: int | None = None
    rows: int | None = None
    bytes: int | None = None
    note: str = ""


@dataclass
class Report:
    """What a job did. Its status decides the exit code (Status.exit_code)."""

    kind: str
    status: Status = Status.SUCCESS
    source: str = ""
    target: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    phases: list[PhaseResult] = field(default_factory=list)
    diffs: list[Diff] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    children: list[Report] = field(default_factory=list)
    # What the operator should know but is not a problem (where a copy's journal stays, what was cleaned up)
    notes: list[str] = field(default_factory=list)
    exit_code: int | None = None  # set when the job raised: the code the process exits with
    # Every compared item's outcome, counted, when `diffs` lists only some of them (s3 verify lists only
    # differences, and at most so many): then the counts, not the list, are the result.
    outcome_tally: dict[str, int] | None = None

    def finish(self) -> Report:
        self.finished_at = time.time()
        return self

    @property
    def seconds(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.time()
        return end - self.started_at

    def outcome_counts(self) -> dict[str, int]:
        if self.outcome_tally is not None:
            return {o.value: self.outcome_tally.get(o.value, 0) for o in Outcome}
        counts = Counter(d.outcome.value for d in self.diffs if not d.info_only)
        return {o.value: counts.get(o.value, 0) for o in Outcome}

    @classmethod
    def stopped_by(cls, exc: BaseException, *, kind: str, source: str = "", target: str = "") -> Report:
        """The report of a job that raised: the engine's partial report (what it completed) if it
        attached one to the exception, else an empty one; with the error, the status (interrupted or
        failed) and the exit code the process has for it."""
        partial = getattr(exc, "report", None)
        report = partial if isinstance(partial, Report) else cls(kind=kind, source=source, target=target)
        interrupted = isinstance(exc, KeyboardInterrupt | Interrupted)
        report.status = Status.INTERRUPTED if interrupted else Status.FAILED
        if isinstance(exc, MigrateError):
            message, report.exit_code = redact(exc), int(exc.exit_code)
        elif interrupted:
            message, report.exit_code = "interrupted", int(ExitCode.INTERRUPTED)
        else:
            message, report.exit_code = f"unexpected {type(exc).__name__}: {redact(exc)}", int(ExitCode.FAILURE)
        if message not in report.errors:
            report.errors.append(message)
        if report.finished_at is None:
            report.finish()
        return report

    def process_exit_code(self) -> int:
        """The code the process exits with for this report: the error's when the job raised, else the status's."""
        return self.exit_code if self.exit_code is not None else int(self.status.exit_code())

    def outcome_totals(self) -> dict[str, int]:
        """Verification outcomes of this report and all its children, summed."""
        counts = self.outcome_counts()
        for c in self.children:
            for k, v in c.outcome_totals().items():
                counts[k] = counts.get(k, 0) + v
        return counts

    def error_lines(self) -> list[str]:
        """Why this report failed, one line each: its own errors, else its parts' errors, else each
        object its verification could not compare ("verify: public.t: permission denied for table t").
        Not redacted: the caller redacts what it prints."""
        if self.errors:
            return list(self.errors)
        from_parts = [e for c in self.children for e in c.errors]
        if from_parts:
            return from_parts
        lines = []
        for report in self._walk():
            for d in report.diffs:
                if d.outcome is Outcome.ERROR and not d.info_only:
                    why = " ".join((d.detail or "could not be compared").split())  # one line
                    lines.append(f"verify: {d.name}: {why}")
        return lines

    def _walk(self) -> list[Report]:
        return [self, *(r for c in self.children for r in c._walk())]

    def differences(self) -> list[Diff]:
        return [d for d in self.diffs if d.outcome is not Outcome.MATCH and not d.info_only]

    def settle(self) -> Report:
        """Derive the status from errors and differences (worst wins), including children's. The
        outcome counts decide as well as the listed differences: a list may be cut short."""
        worst = self.status
        order = [Status.SUCCESS, Status.DIFFERS, Status.PARTIAL, Status.FAILED, Status.INTERRUPTED]
        candidates = [worst] + [c.status for c in self.children]
        counts = self.outcome_counts()
        if counts[Outcome.ERROR.value] or any(d.outcome is Outcome.ERROR for d in self.differences()):
            candidates.append(Status.FAILED)
        elif self.differences() or any(v for k, v in counts.items() if k != Outcome.MATCH.value):
            candidates.append(Status.DIFFERS)
        if self.errors:
            candidates.append(Status.FAILED)
        self.status = max(candidates, key=order.index)
        return self

    def to_dict(self) -> dict[str, Any]:
        return scrub(
            {
                "kind": self.kind,
                "status": self.status.value,
                "exit_code": self.process_exit_code(),
                "source": self.source,
                "target": self.target,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "seconds": round(self.seconds, 3),
                "phases": [asdict(p) for p in self.phases],
                "outcomes": self.outcome_totals(),  # this report's and its parts' verification
                "diffs": [d.to_dict() for d in self.diffs],
                "notes": self.notes,
                "warnings": self.warnings,
                "errors": self.errors,
                "totals": self.totals,
                "children": [c.to_dict() for c in self.children],
            }
        )


def scrub(value: Any) -> Any:
    """Redact every string inside a JSON-able structure (reports never carry secrets)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Enum):
        return scrub(value.value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
