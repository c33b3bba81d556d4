"""`s3 verify`: re-list both sides and compare every object — keys, sizes, metadata, tags and content.

Content is compared by ETag when equal (an MD5 or MD5-of-MD5s that S3 computed on each side), else by a
full-object additional checksum both sides carry (HeadObject with ChecksumMode), else by streaming both
objects through SHA-256 (bounded memory). Read-only on both sides, but for `--drop-journal`: once
everything matches, the copy's journal (migrate.s3.journal) is deleted from the target.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from migrate.config import S3CopyConfig, redact
from migrate.memory import bound_heap
from migrate.model import Diff, Outcome, PhaseResult, Report, Status
from migrate.progress import Reporter, counted
from migrate.s3 import clients, journal, metadata
from migrate.s3.checksums import MD5_ETAG, MULTIPART_ETAG, full_object_checksum, strip_etag
from migrate.s3.inventory import RESERVED, LeftOut, list_both_sides
from migrate.s3.manifest import Manifest

log = logging.getLogger(__name__)

MAX_DIFFS = 10_000  # differences listed in the report (matches never are); the counts are always complete
CHUNK = 1024 * 1024


def _stream_sha256(client: Any, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for chunk in iter(lambda: body.read(CHUNK), b""):
            h.update(chunk)
    finally:
        body.close()
    return h.hexdigest()


class _Checker:
    def __init__(self, cfg: S3CopyConfig, src: Any, dst: Any) -> None:
        self.cfg, self.src, self.dst = cfg, src, dst

    def compare(self, key: str) -> tuple[Outcome, str]:
        """Compare one key present on both sides; never raises (an error is an Outcome)."""
        sb, sk = self.cfg.source.location.bucket, self.cfg.source.location.prefix + key
        tb, tk = self.cfg.target.location.bucket, self.cfg.target.location.prefix + key
        try:
            s = self.src.head_object(Bucket=sb, Key=sk, ChecksumMode="ENABLED")
            t = self.dst.head_object(Bucket=tb, Key=tk, ChecksumMode="ENABLED")
            if s.get("ContentLength") != t.get("ContentLength"):
                return Outcome.DIFFER, f"size {s.get('ContentLength')} vs {t.get('ContentLength')}"
            changed = metadata.differences_with_tags(s, t, self.src, (sb, sk), self.dst, (tb, tk))
            if changed:
                return Outcome.DIFFER, "metadata differs: " + ", ".join(changed)
            se, te = strip_etag(s.get("ETag")), strip_etag(t.get("ETag"))
            if se == te and (MD5_ETAG.match(se) or MULTIPART_ETAG.match(se)):
                return Outcome.MATCH, "etag"
            sc, tc = full_object_checksum(s), full_object_checksum(t)
            if sc and tc and sc[0] == tc[0]:
                if sc[1] == tc[1]:
                    return Outcome.MATCH, sc[0].lower()
                return Outcome.DIFFER, f"content differs ({sc[0]} {sc[1]} vs {tc[1]})"
            # No digest in common (different part sizes, SSE-KMS...): read both.
            if _stream_sha256(self.src, sb, sk) == _stream_sha256(self.dst, tb, tk):
                return Outcome.MATCH, "sha256 of content"
            return Outcome.DIFFER, "content differs (sha256 of content)"
        except Exception as exc:
            return Outcome.ERROR, f"{clients.error_code(exc)}: {redact(exc)}"


def verify_buckets(cfg: S3CopyConfig, reporter: Reporter, *, drop_journal: bool = False) -> Report:
    """Compare source and target object by object: match / differ / missing on target / extra on target.

    Read-only on both sides; does not consult or change the copy's manifest. With `drop_journal`, and
    only when everything matches (status success), the copy's journal of this job (or shard) is then
    deleted from the target (drop_copy_journal).
    """
    bound_heap()
    report = Report(kind="s3", source=str(cfg.source.location), target=str(cfg.target.location))
    clients.preflight("source", cfg.source)
    clients.preflight("target", cfg.target)
    src = clients.make_client(cfg.source, workers=cfg.workers)
    dst = clients.make_client(cfg.target, workers=cfg.workers)
    counts = {o.value: 0 for o in Outcome}
    kept = 0

    def add(key: str, outcome: Outcome, detail: str) -> None:
        nonlocal kept
        counts[outcome.value] += 1
        # Only differences are listed (a bucket of millions of matches would not fit in a report); the
        # status comes from the counts (report.outcome_tally), so a cut list never hides one.
        if outcome is not Outcome.MATCH and kept < MAX_DIFFS:
            report.diffs.append(Diff("object", key, outcome, detail))
            kept += 1

    left_out = LeftOut()  # source keys in another copy's journal folder: not copied, so not compared
    with tempfile.TemporaryDirectory(prefix="paas-migrate-verify-") as tmp:
        inv = Manifest(Path(tmp) / "verify.sqlite")
        try:
            t0 = time.monotonic()
            n_src, b_src, n_dst, b_dst = list_both_sides(inv, src, dst, cfg, left_out)
            report.phases.append(PhaseResult("list", time.monotonic() - t0, 2, items=n_src + n_dst,
                                             bytes=b_src + b_dst))
            t1 = time.monotonic()
            for (key,) in inv.db.execute("SELECT key FROM src WHERE key NOT IN (SELECT key FROM dst) ORDER BY key"):
                add(key, Outcome.MISSING_ON_TARGET, "")
            for (key,) in inv.db.execute("SELECT key FROM dst WHERE key NOT IN (SELECT key FROM src) ORDER BY key"):
                add(key, Outcome.EXTRA_ON_TARGET, "")
            common = inv.db.execute("SELECT count(*) FROM src JOIN dst USING (key)").fetchone()[0]
            reporter.on_start("verify objects", total=common, unit="objects")
            checker = _Checker(cfg, src, dst)
            inflight: dict[Future[tuple[Outcome, str]], str] = {}

            def collect(done: set[Future[tuple[Outcome, str]]]) -> None:
                for f in done:
                    outcome, detail = f.result()
                    add(inflight.pop(f), outcome, detail)
                    reporter.on_progress("verify objects", 1)

            ok = False
            with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="s3-verify") as pool:
                try:
                    cur = inv.db.execute("SELECT key FROM src JOIN dst USING (key) ORDER BY key")
                    for (key,) in cur:
                        while len(inflight) >= cfg.workers * 2:
                            done, _ = wait(set(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
                            collect(done)
                        inflight[pool.submit(checker.compare, key)] = key
                    while inflight:
                        done, _ = wait(set(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
                        collect(done)
                    ok = True
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
                finally:
                    reporter.on_done("verify objects", ok=ok)
            report.phases.append(PhaseResult("verify", time.monotonic() - t1, cfg.workers, items=common,
                                             note=", ".join(f"{v:,} {k}" for k, v in counts.items())))
        finally:
            inv.close()
    report.totals = {"objects": n_src, "bytes": b_src, "target_objects": n_dst, **counts}
    report.outcome_tally = dict(counts)
    unlisted = sum(v for k, v in counts.items() if k != Outcome.MATCH.value) - kept
    if unlisted:
        report.warnings.append(f"only the first {kept:,} differences are listed ({unlisted:,} more); "
                               "the totals count all of them")
    note = left_out.source_note(cfg.source.location, "compared (a copy does not copy them)")
    if note:
        report.notes.append(note)
    report.finish().settle()
    if cfg.target_journal:
        said: list[str] = []  # journal folders already named in the report
        if drop_journal and report.status is Status.SUCCESS:
            said = drop_copy_journal(report, dst, cfg)
        elif drop_journal:
            said = journal.job_folders(dst, cfg)
            if said:
                report.notes.append(f"kept the copy journal {_urls(cfg, said)}: --drop-journal deletes it only after"
                                    " a verification that matches (a rerun of the copy in a new task needs it)")
        leftover = journal.any_journal(dst, cfg)
        if leftover and leftover not in said:
            report.notes.append(f"a copy journal is in the target ({journal.url(cfg, leftover)}): not compared (the"
                                " copy's own record); `s3 verify --drop-journal` (or the final `run --drop-journal`)"
                                " removes it once the final copy is verified")
    return report


def drop_copy_journal(report: Report, client: Any, cfg: S3CopyConfig) -> list[str]:
    """Delete the copy journal of this source → target job (of its shard, with --shard) once it is
    verified, saying so in `report`: a note, or a warning naming what is left if the target credential
    may not delete there (s3:DeleteObject). Never raises: the verification's result stands. Returns
    the folders the warning names (none if all went)."""
    done = journal.drop(client, cfg)
    if done.problem:
        left = _urls(cfg, done.folders) if done.folders else journal.url(cfg, cfg.target.location.prefix + RESERVED)
        report.warnings.append(f"the copy journal {left} could not be deleted ({done.problem}): remove it, or give"
                               " the target credential s3:DeleteObject there")
        return done.folders
    if done.folders:
        report.notes.append(f"deleted the copy journal {_urls(cfg, done.folders)} ({counted(done.deleted, 'object')}):"
                            " the copy is verified")
        log.info("deleted the copy journal %s (%d objects)", _urls(cfg, done.folders), done.deleted)
    return []


def _urls(cfg: S3CopyConfig, folders: list[str]) -> str:
    return ", ".join(journal.url(cfg, f) for f in folders)
