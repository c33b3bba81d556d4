"""Reporters: the protocol's events, negative deltas on retries, redaction, and each UI's lifecycle."""

from __future__ import annotations

import io
import re
import time

from migrate.config import register_secret
from migrate.progress import NullReporter, PlainReporter, RecordingReporter, RichReporter, human_bytes


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
    time.sleep(0.2)  # at least one periodic line
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
