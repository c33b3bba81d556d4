"""The change-ticket Markdown: phases, per-job status, totals, verification counts, differences, no secrets."""

from __future__ import annotations

from migrate.config import Secret
from migrate.model import Diff, Outcome, PhaseResult, Report, Status
from migrate.reportmd import render_markdown

SECRET = "md-secret-value-31337"


def _run_report() -> Report:
    Secret(SECRET)
    db = Report(kind="database: db-copy", source="postgresql://app:***@paas/db", target="postgresql://rds@rds/core")
    db.phases.append(PhaseResult("data", 2.5, 2, items=4, rows=1234, bytes=5 * 1024 * 1024))
    verify = Report(kind="db-verify")
    verify.diffs += [Diff("table", "public.users", Outcome.MATCH), Diff("table", "public.logs", Outcome.MATCH),
                     Diff("owner", "public.users", Outcome.DIFFER, "rds_master vs app", info_only=True)]
    db.children.append(verify.finish())
    s3 = Report(kind="bucket csv: s3")
    s3.diffs += [Diff("object", "a.csv", Outcome.MATCH),
                 Diff("object", "b|c.csv", Outcome.DIFFER, f"sha256 differs (token {SECRET})"),
                 Diff("object", "d.csv", Outcome.MISSING_ON_TARGET)]
    s3.errors.append(f"failed with postgresql://u:{SECRET}@h/db")
    s3.warnings.append("2 objects are size-only")
    run = Report(kind="run", source="database: paas; csv: s3://paas-csv", target="database: rds; csv: s3://new-csv",
                 children=[db.finish().settle(), s3.finish().settle()])
    run.phases += [PhaseResult("database: copy", 3.0, 2, rows=1234, bytes=5 * 1024 * 1024, note="success"),
                   PhaseResult("bucket csv: copy", 1.25, 32, items=3, bytes=300, note="differs")]
    run.totals = {"environment": "production", "rows": 1234, "bytes": 5 * 1024 * 1024, "outcomes": {"x": 1}}
    return run.finish().settle()


def test_markdown_has_every_section_and_the_right_counts() -> None:
    md = render_markdown(_run_report(), title="paas-migrate run: production")
    assert md.startswith("# paas-migrate run: production: FAILED\n")
    assert "| status | failed (exit code 1) |" in md
    assert "## Phases" in md and "| database: copy | 3.00 | 2 |  | 1,234 | 5.0 MiB | success |" in md
    assert "| bucket csv: copy | 1.25 | 32 | 3 |  | 300 B | differs |" in md
    # per job: db (2 match from its verify child), bucket (1 match, 1 differ, 1 missing)
    assert "| database: db-copy | success |" in md and "| 2 | 0 | 0 | 0 | 0 |" in md
    assert "| bucket csv: s3 | failed |" in md and "| 1 | 1 | 1 | 0 | 0 |" in md
    assert "| environment | production |" in md and "| bytes | 5.0 MiB |" in md and "| rows | 1,234 |" in md
    assert "| match | 3 |" in md and "| missing on target | 1 |" in md
    assert "5 objects compared; 3 match." in md
    # a pipe in a key must not break the table
    assert "| bucket csv: s3 | object | b\\|c.csv | differ |" in md
    assert "| bucket csv: s3 | object | d.csv | missing on target |" in md
    assert "## Warnings" in md and "- 2 objects are size-only" in md
    assert "## Errors" in md
    # info-only findings (the owner note) are not differences: the table has exactly the two real ones
    assert "rds_master" not in md
    section = md.split("## Differences\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows == [
        "| job | kind | name | outcome | detail |",
        "| --- | --- | --- | --- | --- |",
        "| bucket csv: s3 | object | b\\|c.csv | differ | sha256 differs (token ***) |",
        "| bucket csv: s3 | object | d.csv | missing on target |  |",
    ]


def test_markdown_never_contains_a_secret() -> None:
    md = render_markdown(_run_report())
    assert SECRET not in md
    assert "***" in md


def test_markdown_of_a_clean_single_report() -> None:
    r = Report(kind="s3", status=Status.SUCCESS)
    md = render_markdown(r.finish().settle())
    assert "# paas-migrate s3: SUCCESS" in md
    assert "Nothing was compared." in md and "None." in md
    assert "| s3 | success |" in md


def test_markdown_truncates_long_difference_lists() -> None:
    r = Report(kind="s3", diffs=[Diff("object", f"k{i}", Outcome.MISSING_ON_TARGET) for i in range(7)])
    md = render_markdown(r.finish().settle(), max_diffs=5)
    assert "| s3 | object | k4 | missing on target |" in md and "k5 |" not in md
    assert "… and 2 more" in md


def test_a_refused_run_reports_the_exit_code_it_had() -> None:
    from migrate.errors import ConfigError

    report = Report.stopped_by(ConfigError("the source and the target are the same database"), kind="run",
                               source="s", target="t")
    assert report.to_dict()["exit_code"] == 2
    assert "failed (exit code 2)" in render_markdown(report, title="paas-migrate run: p")
