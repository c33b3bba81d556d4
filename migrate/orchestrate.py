"""One environment's whole migration: preflight everything, copy the database and the buckets,
verify all of it, and return one Report.

The phases, and what each one uses:

1. preflight (read-only) — `db.planner.plan_database` (connectivity, credentials, versions,
   extensions, target emptiness) and `s3.planner.plan_copy` for each bucket pair (bucket access
   with each side's credentials, inventory). Any blocker, or any exception while planning, stops
   the run here: nothing has been written on either side.
2. database copy — `db.copier.copy_database`, `jobs` connections; it verifies itself at the end.
3. bucket copies — `s3.copier.copy_bucket` for each pair in turn, `workers` transfers each.
4. bucket verification — `s3.verify.verify_buckets` for each pair, after all copies.
5. clean-up — with --drop-journal (the cutover's final run), when the whole run succeeded (everything
   verified), each bucket copy's journal in its target (`s3.journal`) is deleted; a run that failed
   or differs keeps them for its rerun.

Jobs run one after another on purpose: each engine owns its own concurrency and its Ctrl-C
handling, which only works on the main thread. A failed job does not stop the others (the copies
are resumable and the report says exactly what failed); Ctrl-C stops everything.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from migrate.config import DbCopyConfig, redact
from migrate.errors import ConfigError, Interrupted, MigrateError, PreflightError
from migrate.model import Outcome, PhaseResult, Plan, Report, Status, Step
from migrate.progress import Reporter

log = logging.getLogger(__name__)

DB_LABEL = "database"


@dataclass(frozen=True)
class BucketJob:
    """One named bucket pair; `config` is a migrate.config.S3CopyConfig."""

    name: str
    config: Any

    @property
    def label(self) -> str:
        return f"bucket {self.name}"


@dataclass(frozen=True)
class EnvConfig:
    """One environment with every reference resolved (it holds secrets: never serialise it).

    `sources` says where each value came from (reference names only) for plans and reports.
    """

    name: str
    db: DbCopyConfig | None = None
    buckets: tuple[BucketJob, ...] = ()
    sources: dict[str, Any] = field(default_factory=dict)

    def select(self, only: str | None) -> EnvConfig:
        """Only the database ("db") or only the buckets ("s3"); None keeps everything."""
        if only is None:
            return self
        if only == "db":
            if self.db is None:
                raise ConfigError(f"environment {self.name!r} has no database to migrate")
            return replace(self, buckets=())
        if only == "s3":
            if not self.buckets:
                raise ConfigError(f"environment {self.name!r} has no buckets to migrate")
            return replace(self, db=None)
        raise ConfigError(f"--only {only!r} is not one of db, s3")

    def describe_source(self) -> str:
        parts = []
        if self.db is not None:
            parts.append(f"{DB_LABEL}: {self.db.db.source.display()}")
        parts += [f"{b.name}: {b.config.source.location}" for b in self.buckets]
        return redact("; ".join(parts))

    def describe_target(self) -> str:
        parts = []
        if self.db is not None:
            parts.append(f"{DB_LABEL}: {self.db.db.target.display()}")
        parts += [f"{b.name}: {b.config.target.location}" for b in self.buckets]
        return redact("; ".join(parts))


@dataclass
class Preflight:
    """The combined plan and each job's own plan (None where planning itself failed)."""

    plan: Plan
    db_plan: Plan | None = None
    bucket_plans: dict[str, Plan | None] = field(default_factory=dict)

    def children(self) -> list[tuple[str, Plan]]:
        out: list[tuple[str, Plan]] = []
        if self.db_plan is not None:
            out.append((DB_LABEL, self.db_plan))
        out += [(f"bucket {name}", p) for name, p in self.bucket_plans.items() if p is not None]
        return out


def _guarded_plan(label: str, fn: Callable[[], Plan]) -> tuple[Plan | None, list[str]]:
    """Run one planner; its blockers, or the exception it raised, become blocker lines."""
    try:
        plan = fn()
    except (KeyboardInterrupt, Interrupted):
        raise
    except MigrateError as exc:
        return None, [f"{label}: {redact(exc)}"]
    except Exception as exc:  # a planner bug must still stop the run, not half-run it
        log.debug("preflight of %s failed", label, exc_info=True)
        return None, [f"{label}: preflight failed: {type(exc).__name__}: {redact(exc)}"]
    return plan, [f"{label}: {redact(b)}" for b in plan.blockers]


def preflight(env: EnvConfig) -> Preflight:
    """Plan every job of the environment. Read-only on both sides: nothing is created or written."""
    plan = Plan(kind="run", source=env.describe_source(), target=env.describe_target())
    plan.facts["environment"] = env.name
    result = Preflight(plan=plan)
    children: dict[str, Any] = {}
    if env.db is not None:
        from migrate.db.planner import plan_database

        db_cfg = env.db
        db_plan, blockers = _guarded_plan(DB_LABEL, lambda: plan_database(db_cfg))
        result.db_plan = db_plan
        plan.blockers += blockers
        _absorb(plan, DB_LABEL, db_plan, concurrency=env.db.db.jobs)
        if db_plan is not None:
            children[DB_LABEL] = db_plan.to_dict()
        plan.steps.append(Step(name=f"{DB_LABEL}: verify", description="done by the copy itself, at its end",
                               concurrency=env.db.db.jobs))
    for job in env.buckets:
        from migrate.s3.planner import plan_copy

        b_plan, blockers = _guarded_plan(job.label, functools.partial(plan_copy, job.config))
        result.bucket_plans[job.name] = b_plan
        plan.blockers += blockers
        _absorb(plan, job.label, b_plan, concurrency=job.config.workers)
        if b_plan is not None:
            children[job.label] = b_plan.to_dict()
    for job in env.buckets:
        plan.steps.append(Step(name=f"{job.label}: verify", description="re-list both sides, compare every object",
                               concurrency=job.config.workers))
    plan.facts["database"] = "yes" if env.db is not None else "no"
    plan.facts["buckets"] = ", ".join(b.name for b in env.buckets) or "none"
    plan.facts["references"] = env.sources
    plan.facts["plans"] = children
    return result


def _absorb(plan: Plan, label: str, child: Plan | None, *, concurrency: int) -> None:
    if child is None:
        plan.steps.append(Step(name=f"{label}: plan", description="planning failed (see blockers)",
                               concurrency=concurrency))
        return
    for s in child.steps:
        plan.steps.append(replace(s, name=f"{label}: {s.name}"))
    plan.warnings += [f"{label}: {w}" for w in child.warnings]


def plan_run(env: EnvConfig) -> Plan:
    """The combined plan of every job (what `run --dry-run` prints). Read-only."""
    return preflight(env).plan


def run_migration(
    env: EnvConfig,
    reporter: Reporter,
    *,
    only: str | None = None,
    checked: Preflight | None = None,
    drop_journals: bool = False,
) -> Report:
    """Preflight, copy, verify; one Report with a child per job.

    Raises PreflightError (nothing written) if any preflight blocker exists, and Interrupted on
    Ctrl-C naming what had finished. Does not print; progress goes to `reporter`.
    """
    env = env.select(only)
    reporter.note(f"preflight: checking {env.describe_source()} → {env.describe_target()}")
    pre = checked or preflight(env)
    if pre.plan.blockers:
        n = len(pre.plan.blockers)
        raise PreflightError(
            f"preflight found {n} blocker{'s' if n != 1 else ''}, nothing was written: "
            + "; ".join(pre.plan.blockers),
            hint="fix them and run again; --dry-run prints the full plan",
        )
    report = Report(kind="run", source=env.describe_source(), target=env.describe_target())
    runner = _Runner(report, reporter)

    if env.db is not None:
        from migrate.db.copier import copy_database

        db_cfg = env.db
        db_report = runner.job(DB_LABEL, "copy", db_cfg.db.jobs,
                               lambda: copy_database(db_cfg, reporter, plan=pre.db_plan))
        if db_report is not None and not db_cfg.verify:
            from migrate.db.verify import verify_databases

            runner.job(DB_LABEL, "verify", db_cfg.db.jobs, lambda: verify_databases(db_cfg.db, reporter))

    copied: list[BucketJob] = []
    journals: list[BucketJob] = []  # the copies that keep a journal in their target
    for job in env.buckets:
        from migrate.s3.copier import copy_bucket

        cfg = job.config
        result = runner.job(job.label, "copy", cfg.workers,
                            functools.partial(copy_bucket, cfg, reporter, plan=pre.bucket_plans.get(job.name)))
        if result is not None:
            copied.append(job)
            if result.totals.get("journal"):
                journals.append(job)
    for job in env.buckets:
        from migrate.s3.verify import verify_buckets

        if job not in copied:
            report.warnings.append(f"{job.label}: not verified because its copy failed")
            continue
        runner.job(job.label, "verify", job.config.workers, functools.partial(verify_buckets, job.config, reporter))

    failed_buckets = [j.name for j in env.buckets if j not in copied]
    if failed_buckets and env.db is not None:
        # The database target is no longer empty, so a plain rerun would stop at preflight.
        report.warnings.append(
            f"bucket copies failed ({', '.join(failed_buckets)}): fix the cause, then rerun with --only s3; "
            "they resume from their manifests"
        )
    report.totals = _totals(env, report)
    for child in report.children:  # the run's own errors: which job failed, and why (its first error)
        if child.status in (Status.FAILED, Status.PARTIAL):
            why = child.error_lines()
            report.errors.append(f"{child.kind}: {why[0] if why else child.status.value}")
    report.settle()
    _drop_journals(report, journals, drop=drop_journals)
    report.finish()
    reporter.note(f"run {env.name}: {report.status.value} in {report.seconds:.1f}s")
    return report


def _drop_journals(report: Report, jobs: list[BucketJob], *, drop: bool) -> None:
    """With `drop` (run --drop-journal, the cutover's final run), after a run that succeeded
    (everything copied and verified), delete the bucket copies' journals from their targets, as
    `s3 verify --drop-journal` does; a refused delete is a warning (the run's result stands). A run
    that did not succeed keeps them: its rerun in a new task needs them. Without `drop` they stay:
    a day-before run's are what lets the final run in a new task skip what it copied."""
    if not jobs or not drop:
        return
    if report.status is not Status.SUCCESS:
        names = ", ".join(j.name for j in jobs)
        report.notes.append(f"kept the copy journals of the buckets ({names}) in their targets: the run did not"
                            " succeed; a rerun in a new task skips the objects they record")
        return
    from migrate.s3 import clients
    from migrate.s3.verify import drop_copy_journal

    for job in jobs:
        child = Report(kind=job.label)
        try:
            drop_copy_journal(child, clients.make_client(job.config.target, workers=1), job.config)
        except Exception as exc:  # a client that cannot even be made: still only a warning
            child.warnings.append(f"the copy journal could not be deleted ({type(exc).__name__}: {redact(exc)})")
        report.notes += [f"{job.label}: {n}" for n in child.notes]
        report.warnings += [f"{job.label}: {w}" for w in child.warnings]


class _Runner:
    """Runs one job at a time, turning its result or failure into a child report and a phase row."""

    def __init__(self, report: Report, reporter: Reporter) -> None:
        self.report = report
        self.reporter = reporter

    def _stopped(self, name: str, exc: BaseException, t0: float, concurrency: int) -> None:
        """A job that raised, as a child report (what it completed, if the engine said) and a phase row."""
        child = Report.stopped_by(exc, kind=name)
        child.kind = name
        self.report.children.append(child)
        self.report.phases.append(PhaseResult(name=name, seconds=time.monotonic() - t0, concurrency=concurrency,
                                              note=child.status.value))

    def job(self, label: str, phase: str, concurrency: int, fn: Callable[[], Report]) -> Report | None:
        """The job's report, or None if it raised (recorded as a failed child)."""
        name = f"{label}: {phase}"
        self.reporter.note(f"{name}: starting")
        t0 = time.monotonic()
        child: Report | None
        try:
            child = fn()
            child.settle()
        except (KeyboardInterrupt, Interrupted) as exc:
            done = ", ".join(f"{c.kind} {c.status.value}" for c in self.report.children) or "nothing"
            detail = f" ({exc.message})" if isinstance(exc, Interrupted) else ""
            # The job's own hint names its own command (`s3 copy`, `db copy`): a run is rerun as a run.
            hint = ("bucket copies resume where they stopped (run again, e.g. with --only s3); "
                    "a partly copied database continues with --resume (or starts again with --clean --yes)")
            self._stopped(name, exc, t0, concurrency)
            stopped = Interrupted(f"interrupted during {name}{detail}; finished before that: {done}", hint=hint)
            stopped.report = self.report.finish()  # the report files say what finished and where it stopped
            raise stopped from None
        except MigrateError as exc:
            log.debug("%s failed", name, exc_info=True)
            self._stopped(name, exc, t0, concurrency)
            return None
        except Exception as exc:
            log.debug("%s failed", name, exc_info=True)
            self._stopped(name, exc, t0, concurrency)
            return None
        # "bucket csv: copy" rather than the engine's "s3": a run has several reports of each kind.
        child.kind = name
        seconds = child.seconds if child.finished_at is not None else time.monotonic() - t0
        counts = child.outcome_totals()
        verified = sum(counts.values())
        note = child.status.value
        if verified:
            note += f", {counts[Outcome.MATCH.value]}/{verified} match"
        self.report.children.append(child)
        self.report.phases.append(
            PhaseResult(
                name=name, seconds=seconds, concurrency=concurrency,
                # what this run copied (a rerun of a bucket copy copies only what changed)
                items=_count(child, "copied", "objects", "items", "tables"),
                rows=_count(child, "rows"),
                bytes=_count(child, "copied_bytes", "bytes_copied", "bytes"),
                note=note,
            )
        )
        self.reporter.note(f"{name}: {child.status.value}")
        return child


def _count(report: Report, *keys: str) -> int | None:
    """A count from the engine's totals, else summed over its phases (engines name totals freely)."""
    for k in keys:
        v = report.totals.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return int(v)
    attr = {"rows": "rows", "bytes": "bytes"}.get(keys[0], "items")
    values = [getattr(p, attr) for p in report.phases if getattr(p, attr) is not None]
    return max(values) if values else None


def _totals(env: EnvConfig, report: Report) -> dict[str, Any]:
    copies = [p for p in report.phases if p.name.endswith(": copy")]
    return {
        "environment": env.name,
        "databases": 1 if env.db is not None else 0,
        "buckets": len(env.buckets),
        "jobs_failed": sum(1 for c in report.children if c.status is Status.FAILED),
        "rows": sum(p.rows or 0 for p in copies),
        "objects": sum(p.items or 0 for p in copies if p.name.startswith("bucket ")),
        "bytes": sum(p.bytes or 0 for p in copies),
        "outcomes": report.outcome_totals(),
        "references": env.sources,
    }
