"""`s3 plan` / `s3 copy --dry-run`: what a copy would do, from fresh listings. Read-only.

The listings go into a private snapshot of the manifest (a temporary file), reconciled with the same
code the copy uses, so the plan counts exactly what `s3 copy` would copy. Nothing is written to the
target, and the manifest in --state-dir is only read.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from migrate.config import S3CopyConfig
from migrate.model import Plan, Step
from migrate.progress import agree, counted, human_bytes
from migrate.s3 import clients, journal
from migrate.s3.copier import ARCHIVED_STORAGE_CLASSES, resolve_mode
from migrate.s3.inventory import LeftOut, list_both_sides
from migrate.s3.manifest import manifest_path, snapshot


def plan_copy(cfg: S3CopyConfig) -> Plan:
    """Inventory both sides and classify every source object: missing on target, differ, match. Read-only."""
    clients.preflight("source", cfg.source)
    clients.preflight("target", cfg.target)
    src = clients.make_client(cfg.source, workers=cfg.workers)
    dst = clients.make_client(cfg.target, workers=cfg.workers)
    with tempfile.TemporaryDirectory(prefix="paas-migrate-plan-") as tmp:
        manifest = snapshot(manifest_path(cfg), Path(tmp) / "plan.sqlite")
        try:
            t0 = time.monotonic()
            left_out = LeftOut()
            n_src, b_src, n_dst, _ = list_both_sides(manifest, src, dst, cfg, left_out)
            # The journal of earlier runs of this job in the target (read-only): what they verified counts as done.
            manifest.load_journal(journal.read(dst, cfg) if cfg.target_journal else [])
            list_seconds = time.monotonic() - t0
            plan = plan_from_manifest(cfg, manifest, n_src, b_src, n_dst)
            first = next(iter(manifest.todo(page=1)), None)
        finally:
            manifest.close()
    mode, why = resolve_mode(cfg, src, clients.make_client(cfg.target, workers=1, probe=True),
                             first.key if first else None)
    plan.facts["source objects left out (another copy's journal)"] = left_out.objects
    note = left_out.source_note(cfg.source.location)
    if note:
        plan.warnings.append(note)
    plan.facts["mode"] = f"{mode} ({why})"
    plan.facts["listing seconds"] = round(list_seconds, 2)
    return plan


def plan_from_manifest(cfg: S3CopyConfig, manifest, n_src: int, b_src: int, n_dst: int) -> Plan:
    """Reconcile loaded listings and turn the categories into a Plan (used by plan_copy and the bench)."""
    manifest.reconcile()
    cats = manifest.categories()
    extra_n, extra_b = manifest.extra_on_target()
    unchecked = manifest.metadata_not_compared()
    todo_n = cats["missing on target"][0] + cats["differ"][0]
    todo_b = cats["missing on target"][1] + cats["differ"][1]
    plan = Plan(kind="s3", source=str(cfg.source.location), target=str(cfg.target.location))
    plan.facts.update({
        "source objects": n_src, "source bytes": b_src, "target objects": n_dst,
        "missing on target": cats["missing on target"][0], "missing on target bytes": cats["missing on target"][1],
        "differ": cats["differ"][0], "differ bytes": cats["differ"][1],
        "match": cats["match"][0], "match bytes": cats["match"][1],
        "extra on target": extra_n, "extra on target bytes": extra_b,
        "match, metadata not compared": unchecked,
        "verified by an earlier run (journal in the target)": manifest.journal_matched,
        "workers": cfg.workers, "manifest": str(manifest_path(cfg)),
    })
    if cfg.shard:
        plan.facts["shard"] = f"{cfg.shard[0]}/{cfg.shard[1]}"
    plan.steps = [
        Step("list", "list both buckets into the manifest", 2, items=n_src + n_dst),
        Step("plan", "reconcile listings with the manifest: missing on target, differ, match"
             + (f"; {counted(manifest.journal_matched, 'object')} verified by an earlier run (journal in the target)"
                if manifest.journal_matched else ""), 1, items=n_src),
        Step("copy", f"copy {counted(todo_n, 'object')} ({human_bytes(todo_b)}); skip {cats['match'][0]:,} that match",
             cfg.workers, items=todo_n, bytes=todo_b),
        Step("verify", "check each copied object against the source's checksum evidence", cfg.workers,
             items=todo_n),
    ]
    if unchecked:
        # Comparing metadata costs two HEAD requests per object: the copy does it, the plan does not.
        plan.warnings.append(f"{counted(unchecked, 'object')} on the target already"
                             f" {agree(unchecked, 'has', 'have')} the source's size and ETag, but not from a copy"
                             " with this --state-dir: the copy compares their metadata first and copies those where"
                             " it differs (counted here as matching)")
    archived = manifest.to_copy_in(ARCHIVED_STORAGE_CLASSES)
    if archived:
        n = sum(c for c, _ in archived.values())
        classes = ", ".join(f"{c:,} {cls}" for cls, (c, _) in archived.items())
        them = "it" if n == 1 else "them"
        plan.warnings.append(f"{counted(n, 'object')} to copy {agree(n, 'is', 'are')} archived ({classes}): S3"
                             f" reads {them} only once restored, the copy fails each one that is not; restore"
                             f" {them} on the source (S3 RestoreObject) first")
    if extra_n:
        exist = "exists" if extra_n == 1 else "exist"
        plan.warnings.append(f"{counted(extra_n, 'object')} {exist} only on the target: the copy leaves them alone, and"
                             " verification reports them as extra on target (exit 3); remove them first if"
                             " the target should equal the source")
    return plan
