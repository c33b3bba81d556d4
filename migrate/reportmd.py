"""A Report as Markdown, for a change ticket: phases, per-job status, totals, verification outcome
counts and differences. Every line passes through migrate.config.redact: no secret reaches it."""

from __future__ import annotations

import time
from typing import Any

from migrate.config import redact
from migrate.model import Outcome, Report
from migrate.progress import human_bytes

MAX_DIFFS = 100


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A pipe or newline would break the table.
    return redact(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = [_row(list(headers)), "| " + " | ".join("---" for _ in headers) + " |"]
    out += [_row(r) for r in rows]
    return out


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""


def _num(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


def _bytes(v: int | None) -> str:
    return "" if v is None else human_bytes(v)


def _total(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return str(value)
    return human_bytes(value) if "bytes" in key else f"{value:,}"


def _counts(report: Report) -> dict[str, int]:
    counts = report.outcome_counts()
    for c in report.children:
        for k, v in _counts(c).items():
            counts[k] = counts.get(k, 0) + v
    return counts


def _all_differences(report: Report, label: str = "") -> list[tuple[str, Any]]:
    here = label or report.kind
    out = [(here, d) for d in report.differences()]
    for c in report.children:
        out += _all_differences(c, c.kind)
    return out


def render_markdown(report: Report, *, title: str | None = None, max_diffs: int = MAX_DIFFS) -> str:
    """The whole report as a Markdown document (redacted)."""
    outcomes = [o.value for o in Outcome]
    lines: list[str] = []
    heading = title or f"paas-migrate {report.kind}"
    lines.append(f"# {redact(heading)}: {report.status.value.upper()}")
    lines.append("")
    lines += _table(
        ["item", "value"],
        [
            ["status", f"{report.status.value} (exit code {report.process_exit_code()})"],
            ["started", _when(report.started_at)],
            ["finished", _when(report.finished_at)],
            ["duration", f"{report.seconds:.1f} s"],
            ["source", report.source],
            ["target", report.target],
        ],
    )
    if report.phases:
        lines += ["", "## Phases", ""]
        lines += _table(
            ["phase", "seconds", "concurrency", "items", "rows", "bytes", "note"],
            [[p.name, f"{p.seconds:.2f}", p.concurrency, _num(p.items), _num(p.rows), _bytes(p.bytes), p.note]
             for p in report.phases],
        )
    jobs = report.children or [report]
    lines += ["", "## Jobs", ""]
    rows = []
    for c in jobs:
        counts = _counts(c)
        rows.append([c.kind, c.status.value, f"{c.seconds:.1f}", *[counts.get(o, 0) for o in outcomes]])
    lines += _table(["job", "status", "seconds", *outcomes], rows)

    totals = {k: v for k, v in report.totals.items() if not isinstance(v, dict | list)}
    if totals:
        lines += ["", "## Totals", ""]
        lines += _table(["total", "value"], [[k, _total(k, v)] for k, v in totals.items()])
    counts = _counts(report)
    lines += ["", "## Verification", ""]
    compared = sum(counts.values())
    if compared:
        lines += _table(["outcome", "count"], [[o, counts.get(o, 0)] for o in outcomes])
        lines.append("")
        lines.append(f"{compared:,} objects compared; {counts.get(Outcome.MATCH.value, 0):,} match.")
    else:
        lines.append("Nothing was compared.")

    diffs = _all_differences(report)
    lines += ["", "## Differences", ""]
    if diffs:
        lines += _table(["job", "kind", "name", "outcome", "detail"],
                        [[job, d.kind, d.name, d.outcome.value, d.detail] for job, d in diffs[:max_diffs]])
        if len(diffs) > max_diffs:
            lines += ["", f"… and {len(diffs) - max_diffs:,} more (see the JSON report)."]
    else:
        lines.append("None.")

    notes = [n for c in [report, *report.children] for n in c.notes]
    warnings = [w for c in [report, *report.children] for w in c.warnings]
    errors = [(c.kind, e) for c in [report, *report.children] for e in c.errors]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {_cell(n)}" for n in notes]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {_cell(w)}" for w in warnings]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {_cell(k)}: {_cell(e)}" for k, e in errors]
    return redact("\n".join(lines)) + "\n"
