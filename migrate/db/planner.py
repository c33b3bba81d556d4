"""`db plan`: inventory both sides, check every precondition, and describe the copy. Read-only."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg

from migrate.config import DbCopyConfig
from migrate.db import capacity, dbsettings, extensions, resume
from migrate.db import inventory as inv
from migrate.db.connect import connect, database_identity, refuse_same_database
from migrate.db.extensions import SourceExtension
from migrate.db.pgtools import PgTool, check_major, find_tool
from migrate.errors import ToolError
from migrate.model import Plan, Step
from migrate.progress import counted

log = logging.getLogger(__name__)


@dataclass
class DbPlanDetail:
    """What the copier needs from the preflight, beyond the printable Plan."""

    source: inv.Inventory
    target_relations: list[str]
    tools: dict[str, PgTool] = field(default_factory=dict)
    target_encoding: str = "UTF8"  # the target database's encoding: the copy's text travels in it
    resume: resume.ResumeState | None = None  # the target's record of an interrupted copy
    extensions: list[SourceExtension] = field(default_factory=list)
    settings: list[dbsettings.Setting] = field(default_factory=list)  # stored on the source database
    database_comment: str | None = None  # COMMENT ON DATABASE of the source (pg_dump writes it only with --create)
    report_warnings: list[str] = field(default_factory=list)  # plan warnings the copy's report repeats


def plan_database(cfg: DbCopyConfig) -> Plan:
    """Connect to both sides, inventory them and return a Plan; blockers say what stops a copy.

    Read-only: opens read-only transactions, writes nothing anywhere. Connection failures raise
    ConnectionFailed (they are not blockers: nothing else can be checked without a connection).
    """
    plan, _ = plan_with_detail(cfg)
    return plan


def plan_with_detail(cfg: DbCopyConfig) -> tuple[Plan, DbPlanDetail]:
    # The client programs are found (each candidate asked its --version) while both sides are read.
    tools_needed = ["pg_dump", "pg_restore"] + (["psql"] if cfg.mode == "parallel" else [])
    with ThreadPoolExecutor(max_workers=len(tools_needed), thread_name_prefix="find-tool") as pool:
        found = {name: pool.submit(find_tool, name) for name in tools_needed}
        return _plan(cfg, found)


def _plan(cfg: DbCopyConfig, found: dict[str, Future[PgTool]]) -> tuple[Plan, DbPlanDetail]:
    db = cfg.db
    with connect(db.source, "source") as src:
        src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        source = inv.take_inventory(src)
        source_has_state_schema = src.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                              (resume.SCHEMA,)).fetchone() is not None
        source_identity = database_identity(src)
        splits = _splits(src, source, cfg) if cfg.mode == "parallel" else {}
        # Row-level security policies name roles (TO role): pg_restore fails on one the target lacks.
        policy_roles = src.execute(
            "SELECT DISTINCT r.rolname, p.polname, n.nspname || '.' || c.relname FROM pg_catalog.pg_policy p"
            " JOIN pg_catalog.pg_class c ON c.oid = p.polrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " CROSS JOIN LATERAL unnest(p.polroles) AS pr(oid) JOIN pg_catalog.pg_roles r ON r.oid = pr.oid"
            " ORDER BY 1, 2").fetchall()
        # Extensions' configuration tables and sequences: their rows are copied (as pg_dump does).
        unreadable_config = [str(r[0]) for r in src.execute(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_extension e"
            " CROSS JOIN LATERAL unnest(e.extconfig) AS x(rel) JOIN pg_catalog.pg_class c ON c.oid = x.rel"
            " WHERE NOT pg_catalog.has_table_privilege(c.oid, 'SELECT') ORDER BY 1").fetchall()]
        # pg_dump locks every table (LOCK needs SELECT) and the copy reads every table and sequence: one
        # the source user may not read failed the copy in pg_dump, after a plan that had passed.
        unreadable = [str(r[0]) for r in src.execute(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            f" WHERE c.relkind IN ('r', 'p', 'S') AND {inv.USER_SCHEMA} AND {inv.NOT_EXTENSION_MEMBER}"
            "   AND NOT (pg_catalog.has_schema_privilege(n.oid, 'USAGE')"
            "            AND pg_catalog.has_table_privilege(c.oid, 'SELECT'))"
            " ORDER BY 1").fetchall()]
        # Large objects too (read in the copy's last data step, and by verify): the owner's roles, a
        # SELECT grant, or lo_compat_privileges (superusers have every role's privileges).
        unreadable_los = [int(r[0]) for r in src.execute(
            "SELECT m.oid FROM pg_catalog.pg_largeobject_metadata m"
            " WHERE pg_catalog.current_setting('lo_compat_privileges') <> 'on'"
            "   AND NOT pg_catalog.pg_has_role(m.lomowner, 'USAGE')"
            "   AND NOT EXISTS (SELECT 1 FROM pg_catalog.aclexplode(m.lomacl) a WHERE a.privilege_type = 'SELECT'"
            "                   AND (a.grantee = 0 OR pg_catalog.pg_has_role(a.grantee, 'USAGE')))"
            " ORDER BY 1").fetchall()]
        # User mappings name roles too: one for a role the target lacks is skipped by the restore.
        mapping_roles = src.execute(
            "SELECT usename, srvname FROM pg_catalog.pg_user_mappings WHERE umuser <> 0 ORDER BY 1, 2").fetchall()
        # FORCE ROW LEVEL SECURITY binds a table's owner too: on the target, the target user.
        forced = [str(r[0]) for r in src.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relforcerowsecurity AND c.relkind IN ('r', 'p') ORDER BY 1").fetchall()]
        source_extensions = extensions.on_source(src)
        settings = dbsettings.read(src)
        database_comment = dbsettings.read_comment(src)
        source_read_only = dbsettings.stored_read_only(src)
        source_limits = capacity.read_limits(src, resume.LOCK_KEY)
        src.rollback()
    with connect(db.target, "target") as tgt:
        tgt.execute("BEGIN READ ONLY")
        target_identity = database_identity(tgt)
        refuse_same_database(source_identity, target_identity)
        target_version = str(tgt.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        target_version_num = int(tgt.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        target_encoding = str(tgt.execute("SHOW server_encoding").fetchone()[0])  # type: ignore[index]
        state, state_error = None, None
        try:
            with tgt.transaction():  # a savepoint: a record we may not read must not end this transaction
                state = resume.read_state(tgt)
        except psycopg.Error as exc:
            state_error = str(exc).splitlines()[0]
        target_relations = [r for r in inv.user_relations(tgt) if not r.startswith(f"{resume.SCHEMA}.")]
        may_record = bool(tgt.execute(
            "SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0])  # type: ignore[index]
        target_extensions = extensions.on_target(tgt, sorted(source.extensions))
        availability = extensions.availability(tgt, sorted(source.extensions), target_extensions)
        target_schemas = extensions.schemas_on(tgt, sorted({e.schema for e in source_extensions}))
        may_set = dbsettings.may_alter(tgt)
        target_limits = capacity.read_limits(tgt, resume.LOCK_KEY)
        leftovers = resume.leftover_sessions(tgt)
        target_roles = {str(r[0]) for r in tgt.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)",
            ([str(p[0]) for p in [*policy_roles, *mapping_roles]],))}
        target_user, target_su = tgt.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()  # type: ignore[misc]
        tgt.rollback()

    plan = Plan(kind="db", source=db.source.display(), target=db.target.display())
    detail = DbPlanDetail(source=source, target_relations=target_relations, resume=state,
                          target_encoding=target_encoding, extensions=source_extensions, settings=settings,
                          database_comment=database_comment)
    source_major = source.server_version_num // 10000
    for name, future in found.items():
        try:
            detail.tools[name] = tool = future.result()
            if name == "pg_dump":
                check_major(tool, source_major)
        except ToolError as exc:
            plan.blockers.append(str(exc))

    facts: dict[str, Any] = {
        "source server": f"PostgreSQL {source.server_version}",
        "target server": f"PostgreSQL {target_version}",
        "source database size": _mb(source.database_bytes),
        "encoding": (source.encoding if source.encoding == target_encoding
                     else f"{source.encoding} -> {target_encoding}"),
        "tables": len(source.tables),
        "table data": _mb(source.total_table_bytes),
        "rows (estimate)": sum(t.rows_estimate for t in source.tables),
        "sequences": len(source.sequences),
        "large objects": source.large_objects,
        "materialized views": source.matviews,
        "target user": f"{target_user}{' (superuser)' if target_su else ' (not superuser: RDS-style restore)'}",
        "mode": cfg.mode,
        "jobs": db.jobs,
    }
    for name, tool in detail.tools.items():
        facts[name] = f"{tool.version} ({tool.path})"
    facts["extensions"] = {e.name: {"source version": e.version, "schema": e.schema, **availability.get(e.name, {}),
                                    **_on_target(target_extensions.get(e.name))} for e in source_extensions}
    if settings:
        facts["database settings"] = [{"role": s.role or "(every role)", "setting": s.name, "value": s.shown_value}
                                      for s in settings]
    facts["table list"] = [
        {"table": t.qualified, "bytes": t.bytes, "index bytes": t.index_bytes, "rows (estimate)": t.rows_estimate,
         "split": splits.get(t.oid, "")}
        for t in source.tables
    ]
    plan.facts = facts

    if source.encoding != target_encoding:
        plan.warnings.append(
            f"the source database's encoding is {source.encoding}, the target's {target_encoding}: text is"
            f" converted (as pg_restore would); a character {target_encoding} cannot hold stops the copy"
        )
    if target_version_num // 10000 < source_major:
        plan.warnings.append(
            f"the target server ({target_version}) is older than the source ({source.server_version}):"
            " the schema may not restore"
        )
    for name, info in availability.items():
        if not info.get("available"):
            plan.blockers.append(f"extension {name} is not available on the target server")
        elif not info.get("creatable"):
            plan.blockers.append(
                f"extension {name} is available on the target but {target_user} may not create it"
                " (create it first as a privileged user, or grant rds_superuser)"
            )
    ext_blockers, ext_warnings = extensions.plan_checks(
        source_extensions, target_extensions, target_schemas, target_user=target_user, clean=cfg.clean, mode=cfg.mode)
    plan.blockers += ext_blockers
    plan.warnings += ext_warnings
    detail.report_warnings += ext_warnings
    _settings_checks(plan, detail, target_identity[2], may_set, target_user, source_read_only)
    connection_facts, connection_blockers = capacity.check(cfg.mode, db.jobs, cfg.verify, source_limits,
                                                           target_limits)
    facts.update(connection_facts)
    plan.blockers += connection_blockers
    for role, policy, table in policy_roles:
        if role not in target_roles:
            plan.blockers.append(
                f"policy {policy} on {table} applies to role {role}, which the target server does not have:"
                f" create it there first (CREATE ROLE {role}), or the restore of the policy fails")
    for role, server in mapping_roles:
        if role not in target_roles:
            plan.warnings.append(
                f"user mapping for {role} on foreign server {server}: the target server has no role {role}, so it"
                " is not copied (a warning of the copy); create it for the target's role, with its password")
    if unreadable_config:
        plan.blockers.append(
            f"the source user may not read {', '.join(unreadable_config[:5])}"
            f"{' …' if len(unreadable_config) > 5 else ''}: an extension's configuration (its rows are copied,"
            " as pg_dump copies them); grant SELECT on them to the source user")
    if unreadable:
        plan.blockers.append(
            f"the source user may not read {counted(len(unreadable), 'table or sequence', 'tables or sequences')}"
            f" ({', '.join(unreadable[:5])}{' …' if len(unreadable) > 5 else ''}): the copy reads every one; grant"
            " SELECT on them (and USAGE on their schemas) to the source user, or connect as their owner")
    if unreadable_los:
        plan.blockers.append(
            f"the source user may not read {counted(len(unreadable_los), 'large object')}"
            f" (oid {', '.join(map(str, unreadable_los[:5]))}{' …' if len(unreadable_los) > 5 else ''}): the copy"
            " reads every one; GRANT SELECT ON LARGE OBJECT to the source user, or connect as their owner")
    if forced:
        plan.warnings.append(
            f"{len(forced)} tables force row-level security on their owner ({', '.join(forced[:3])}"
            f"{' …' if len(forced) > 3 else ''}): on the target the target user owns them, so its queries"
            " see only the rows the policies allow — db verify cannot compare them (it stops with an error"
            " naming the table) and a materialized view over one cannot be refreshed, unless the target user"
            " has BYPASSRLS")
    if leftovers:
        plan.blockers.append(
            f"{len(leftovers)} sessions of an earlier paas-migrate run are still working on the target"
            f" (pid {'; '.join(leftovers[:3])}); nothing was written — wait for them to end, or end them"
            " with SELECT pg_terminate_backend(pid), then rerun"
        )
    shown = ", ".join(target_relations[:5]) + (" …" if len(target_relations) > 5 else "")
    if state is not None:
        facts["interrupted copy on the target"] = state.summary()
    if state_error and not cfg.clean:
        plan.blockers.append(f"cannot read the record of an interrupted copy ({resume.SCHEMA}): {state_error}")
    if cfg.mode == "parallel" and not may_record and not (cfg.resume and state is not None):
        plan.warnings.append(
            f"the target user may not create schemas, so no resume record ({resume.SCHEMA}) can be kept:"
            " a copy that fails part-way must start again with --clean --yes")
    if cfg.clean and target_relations:
        plan.warnings.append(f"--clean: {len(target_relations)} existing relations will be dropped ({shown})")
    elif cfg.clean and state is not None:
        plan.warnings.append("--clean: the interrupted copy's record will be dropped")
    elif cfg.resume:
        _resume_checks(plan, state, target_relations, shown)
        if state is not None and not cfg.verify:
            plan.warnings.append("--resume with --no-verify: nothing will check that the source did not change"
                                 " between the runs")
    elif state is not None:
        plan.blockers.append(
            "the target holds an interrupted paas-migrate copy; nothing was written — use --resume to"
            " continue it (the source must not have changed), or --clean --yes to start again"
        )
    elif target_relations:
        plan.blockers.append(
            f"the target database already holds {len(target_relations)} user relations ({shown});"
            " nothing was written — use --clean --yes to replace them"
        )
    if source_has_state_schema and cfg.mode == "parallel":
        plan.blockers.append(f"the source has a schema named {resume.SCHEMA}, which paas-migrate keeps its copy"
                             " record in on the target: rename it, or use --mode stream")
    plan.steps = _steps(cfg, source, sum(s.role is None for s in settings) + (database_comment is not None))
    return plan, detail


def _on_target(t: extensions.TargetExtension | None) -> dict[str, Any]:
    """An extension's plan facts about the target: the version it installs, where it is installed."""
    if t is None:
        return {}
    return {"target default": t.default_version, "target schema": t.schema}


def _settings_checks(plan: Plan, detail: DbPlanDetail, target_db: str, may_set: bool, target_user: str,
                     source_read_only: bool) -> None:
    """Warnings about the source database's stored settings (see migrate.db.dbsettings)."""
    own = [s for s in detail.settings if s.role is None]
    per_role = [s for s in detail.settings if s.role is not None]
    if own and not may_set:  # the copy's report says so itself, when the statements fail
        plan.warnings.append(
            f"{target_user} does not own the target database, so the copy cannot set the source database's"
            f" settings ({', '.join(s.name for s in own)}) on it: run as its owner after the copy: "
            + "; ".join(dbsettings.statement(s, target_db, shown=True) for s in own))
    if detail.database_comment is not None and not may_set:
        plan.warnings.append(
            f"{target_user} does not own the target database, so the copy cannot set the source database's"
            f" comment on it: run as its owner after the copy: "
            + dbsettings.comment_statement(detail.database_comment, target_db))
    repeated: list[str] = []
    if source_read_only:
        repeated.append(
            "the source database is set read-only (default_transaction_read_only = on, as for a cutover):"
            " that setting is not copied to the target, nor compared")
    if per_role:
        repeated.append(
            f"{counted(len(per_role), 'setting')} of roles in the source database are not copied (roles differ on"
            " the target); run those whose roles exist there: "
            + "; ".join(dbsettings.statement(s, target_db, shown=True) for s in per_role))
    plan.warnings += repeated
    detail.report_warnings += repeated


def _resume_checks(plan: Plan, state: resume.ResumeState | None, target_relations: list[str], shown: str) -> None:
    """--resume: what can be continued, and what cannot (a blocker each, nothing written)."""
    if state is None and target_relations:
        plan.blockers.append(
            f"--resume: the target holds {len(target_relations)} user relations ({shown}) but no record of an"
            " interrupted paas-migrate copy; nothing was written — use --clean --yes to replace them"
        )
    elif state is None:
        plan.warnings.append("--resume: nothing to resume (the target is empty): copying from the start")
    elif not state.step("pre-data"):
        plan.blockers.append(
            "--resume: the interrupted copy stopped before its schema was complete, so no data was copied;"
            " nothing was written — start again with --clean --yes"
        )
    else:
        done = state.summary()
        post = (" and the indexes, constraints, triggers and other objects its post-data restored"
                if state.step("post-data started") and not state.step("post-data") else "")
        plan.warnings.append(
            f"--resume: keeping {done['copies']} table copies and {done['index builds']} index builds of the"
            f" interrupted run{post}; they were read from the source then, so it must not have changed since"
            " (the verification at the end checks)"
        )


def _mb(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def _steps(cfg: DbCopyConfig, source: inv.Inventory, settings: int) -> list[Step]:
    jobs = cfg.db.jobs
    tables = len(source.tables)
    data_bytes = source.total_table_bytes
    verify = [Step("verify", "compare schema, per-table counts and hashes, sequences, large objects", jobs, tables)]
    if settings:  # before the verification, after everything else (see copier.apply_database_settings)
        verify.insert(0, Step("database settings", "ALTER DATABASE ... SET the source database's settings,"
                              " COMMENT ON DATABASE its comment", 1, settings))
    pre = [Step("clean", "drop the target's existing user objects", 1)] if cfg.clean else []
    if cfg.mode == "stream":
        steps = pre + [
            Step("dump | restore", "pg_dump -Fc piped into pg_restore (no file), --no-owner --no-acl --no-tablespaces",
                 1, tables, data_bytes),
            Step("analyze", "ANALYZE every copied table", jobs, tables),
        ]
        return steps + (verify if cfg.verify else verify[:-1])
    steps = pre + [
        Step("snapshot", "export one REPEATABLE READ snapshot on the source; every reader adopts it", 1),
        Step("pre-data", "pg_dump --section=pre-data into pg_restore --no-owner --no-acl --no-tablespaces"
             " (types, tables, functions)", 1),
        Step("data", "COPY ... TO STDOUT (binary) into COPY ... FROM STDIN, biggest tables first, large ones in "
             "ranges; each table's indexes and keys built as it lands (copies and builds share the jobs)",
             jobs, tables, data_bytes),
        Step("large objects", "copy large objects, 256 to a round trip and a commit", 1, source.large_objects),
        Step("sequences", "set sequences to their values in the snapshot", 1, len(source.sequences)),
        Step("post-data", "indexes in parallel, then constraints, triggers, materialized view data (pg_restore -j)",
             jobs),
        Step("analyze", "ANALYZE every copied table", jobs, tables),
    ]
    return steps + (verify if cfg.verify else verify[:-1])


def _splits(src: psycopg.Connection, source: inv.Inventory, cfg: DbCopyConfig) -> dict[int, str]:
    """Table oid -> how a parallel copy reads it in ranges ("4 key ranges", "4 page ranges"), for
    the tables it splits: the same decisions as the copy (inv.split_parts, inv.key_ranges)."""
    longest = inv.longest_chain(source.tables)
    pages = source.server_version_num >= 140000
    out: dict[int, str] = {}
    for t in source.tables:
        parts = inv.split_parts(t, longest, cfg.split_threshold_bytes, cfg.db.jobs, source.server_version_num)
        if parts <= 1:
            continue
        how = inv.key_ranges(src, t, parts, ctid_ranges=pages)[0] if t.pk_int_column else "pages"
        if how != "whole":
            out[t.oid] = f"{parts} {'key' if how == 'key' else 'page'} ranges"
    return out
