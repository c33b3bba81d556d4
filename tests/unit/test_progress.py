"""Reporters: the protocol's events, negative deltas on retries, redaction, and each UI's lifecycle."""

from __future__ import annotations

import io
import re
import time

from migrate.config import register_secret
from migrate.progress import NullReporter, PlainReporter, RecordingReporter, RichReporter, human_bytes


def _wait_for_line(out: io.StringIO, pattern: str, deadline: float = 10.0) -> None:
    """Poll until the reporter's thread has written a line matching pattern (it writes every interval;
    a loaded machine may delay it well past one interval, so wait up to several seconds)."""
    end = time.monotonic() + deadline
    while not any(re.search(pattern, ln) for ln in out.getvalue().splitlines()):
        assert time.monotonic() < end, f"no line matching {pattern!r} within {deadline}s: {out.getvalue()[-600:]!r}"
        time.sleep(0.02)


def test_recording_reporter_accepts_negative_progress() -> None:
    rec = RecordingReporter()
    rec.on_start("copy t", total=100, unit="bytes")
    rec.on_progress("copy t", 60)
    rec.on_progress("copy t", -60)  # a retry rewinds
    rec.on_progress("copy t", 100)
    rec.on_done("copy t")
    assert rec.tasks["copy t"].done == 100 and rec.tasks["copy t"].finished
    assert [k for k, _, _ in rec.events] == ["start", "progress", "progress", "progress", "done"]


def test_plain_reporter_prints_timestamped_redacted_lines() -> None:
    register_secret("plain-reporter-secret")
    out = io.StringIO()
    rep = PlainReporter(out, interval=0.05)
    rep.on_start("copy public.t", total=2048, unit="bytes")
    rep.on_progress("copy public.t", 1024)
    _wait_for_line(out, r"progress: copy public\.t 1\.0 KiB/2\.0 KiB \(50%\)")  # at least one periodic line
    rep.note("connecting to postgresql://u:plain-reporter-secret@h/db")
    rep.on_done("copy public.t")
    rep.close()
    text = out.getvalue()
    assert "plain-reporter-secret" not in text
    lines = text.strip().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", ln) for ln in lines), lines
    assert any("progress: copy public.t 1.0 KiB/2.0 KiB (50%)" in ln for ln in lines), lines
    assert any(ln.endswith("done: copy public.t 1.0 KiB in " + ln.split(" in ")[-1]) for ln in lines)


def test_rich_reporter_lifecycle_including_negative_and_failed() -> None:
    out = io.StringIO()
    rep = RichReporter(out)
    rep.on_start("copy a", total=10, unit="objects")
    rep.on_progress("copy a", 5)
    rep.on_progress("copy a", -2)
    rep.on_done("copy a", ok=False, message="boom")
    rep.on_start("copy b")
    rep.on_progress("copy b", 3)
    rep.on_done("copy b")
    rep.on_progress("unknown", 1)  # never started: ignored, not an error
    rep.note("phase two")
    rep.close()
    text = out.getvalue()
    assert "FAILED" in text and "boom" in text and "copy b" in text and "phase two" in text


def test_null_reporter_and_bytes() -> None:
    rep = NullReporter()
    rep.on_start("x")
    rep.on_progress("x", -1)
    rep.on_done("x")
    rep.close()
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(3 * 1024**3) == "3.0 GiB"


def test_names_that_look_like_rich_markup_are_printed_as_they_are() -> None:
    """Table names, S3 keys and error text may contain "[...]": shown literally, never parsed as markup."""
    import io

    from rich.console import Console
    from rich.table import Table

    from migrate.cli.common import _fact_table, _render_report_rich
    from migrate.model import Diff, Outcome, Report

    con = Console(file=io.StringIO(), width=200)
    _fact_table(con, "table list", [{"table": "public.weird[/x]", "bytes": 10}, {"table": "s.[bold]shown"}])
    report = Report(kind="s3", source="s3://a", target="s3://b")
    report.diffs.append(Diff("object", "drafts/[/final].csv", Outcome.ERROR, "failed: [red]x"))
    report.errors.append("1 objects failed: drafts/[/final].csv")
    _render_report_rich(con, report, max_diffs=10, table_cls=Table)
    text = con.file.getvalue()
    assert "public.weird[/x]" in text and "s.[bold]shown" in text
    assert "drafts/[/final].csv" in text and "failed: [red]x" in text

    out = io.StringIO()
    rep = RichReporter(out)
    rep.on_start("copy public.t[/x]", total=1)
    rep.on_done("copy public.t[/x]", message="[/oops]")
    rep.note("key [/k] done")
    rep.close()
    assert "copy public.t[/x]" in out.getvalue() and "[/oops]" in out.getvalue() and "key [/k]" in out.getvalue()


def test_amounts_show_units_and_percentages_on_a_terminal() -> None:
    from migrate.progress import amount_of

    assert amount_of(12 * 1024**2, 48 * 1024**2, "bytes") == "12.0 MiB/48.0 MiB 25%"
    assert amount_of(1200, 3000, "objects") == "1,200/3,000 objects 40%"
    assert amount_of(7, None, "copies") == "7 copies"
    assert amount_of(30, 20, "bytes").endswith(" 100%")  # an estimate overrun never shows above 100%
    out = io.StringIO()
    rep = RichReporter(out)
    rep.on_start("data", total=8 * 1024**2, unit="bytes")
    rep.on_progress("data", 2 * 1024**2)
    rep.close()  # the final refresh shows the running bar
    assert "2.0 MiB/8.0 MiB 25%" in out.getvalue(), out.getvalue()


def test_percent_tasks_show_a_percentage_not_an_amount() -> None:
    from migrate.progress import amount_of

    assert amount_of(37.4, 100, "%") == "37%" and amount_of(120, 100, "%") == "100%"
    out = io.StringIO()
    rep = PlainReporter(out, interval=0.05)
    rep.on_start("index public.t_pkey", total=100, unit="%")
    rep.on_progress("index public.t_pkey", 25)
    _wait_for_line(out, r"progress: index public\.t_pkey 25%")
    rep.on_progress("index public.t_pkey", 75)
    rep.on_done("index public.t_pkey")
    rep.close()
    lines = out.getvalue().splitlines()
    assert any(re.search(r"progress: index public\.t_pkey 25%(, ETA \d+s)?$", ln) for ln in lines), lines
    assert any(re.search(r"done: index public\.t_pkey 100% in ", ln) for ln in lines), lines


def test_server_percent_rises_through_the_phases_and_stays_within_0_and_100() -> None:
    from migrate.db.copier import server_percent

    btree = [("initializing", 0, 0, 0, 0)]
    btree += [("building index: scanning table", 1000, d, 0, 0) for d in (0, 500, 1000)]
    btree += [("building index: sorting live tuples", 0, 0, 0, 0)]
    btree += [("building index: loading tuples in tree", 0, 0, 5000, d) for d in (0, 2500, 5000)]
    gin = [("building index", 800, d, 0, 0) for d in (0, 200, 800)]
    analyze = [("initializing", 0, 0, 0, 0), ("acquiring sample rows", 300, 0, 0, 0),
               ("acquiring sample rows", 300, 300, 0, 0), ("computing statistics", 300, 300, 0, 0),
               ("computing extended statistics", 0, 0, 0, 0), ("finalizing analyze", 0, 0, 0, 0)]
    for kind, rows in (("index", btree), ("index", gin), ("analyze", analyze)):
        seen = [server_percent(kind, *r) for r in rows]
        assert seen == sorted(seen) and seen[0] >= 0 and seen[-1] <= 100, (kind, seen)
        assert len(set(seen)) >= len(seen) - 2, (kind, seen)  # it moves (a sort has no counter)
    assert server_percent("index", "building index: scanning table", 1000, 500, 0, 0) == 20
    assert server_percent("index", "building index", 0, 0, 0, 0) == 0  # no total yet: no division by zero
