"""The source's extensions on the target: at which version, in which schema.

pg_dump writes `CREATE EXTENSION IF NOT EXISTS name WITH SCHEMA s`, without a version, so a restore
installs the target's default version: a source that was upgraded with pg_upgrade keeps older
versions (pg_trgm 1.4 where a fresh install has 1.6), and its copy would differ. And it does nothing
when the extension is already installed on the target, wherever it is: objects the schema restore
creates then refer to types of a schema that has none ('type "ext.citext" does not exist').

So the plan compares both sides (a schema mismatch blocks the copy), and before the schema restore
the copy creates, at the source's version, each extension whose version the target offers but does
not install by default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migrate.db.connect import first_line, quote_ident

log = logging.getLogger(__name__)

PG_NAMESPACE = 2615  # pg_namespace's oid: the catalog of a SCHEMA entry in pg_restore's table of contents


@dataclass(frozen=True)
class SourceExtension:
    name: str
    version: str
    schema: str
    schema_oid: int
    requires: tuple[str, ...] = ()  # the extensions it depends on (CREATE EXTENSION needs them first)


@dataclass
class TargetExtension:
    name: str
    default_version: str
    versions: set[str] = field(default_factory=set)  # the versions it offers (pg_available_extension_versions)
    installed_version: str | None = None
    schema: str | None = None  # where it is installed
    owner: str | None = None
    relocatable: bool = False
    trusted: bool = False  # a version of it is trusted: a user with CREATE on the database may create it


def on_source(conn: psycopg.Connection) -> list[SourceExtension]:
    """Every extension but plpgsql, oldest first, with its schema and the extensions it requires. Read-only."""
    rows = conn.execute(
        """
        SELECT x.extname, x.extversion, n.nspname, n.oid::bigint,
               ARRAY(SELECT r.extname FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension r ON r.oid = d.refobjid
                     WHERE d.classid = 'pg_catalog.pg_extension'::regclass AND d.objid = x.oid
                       AND d.refclassid = 'pg_catalog.pg_extension'::regclass ORDER BY r.oid)
        FROM pg_catalog.pg_extension x JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace
        WHERE x.extname <> 'plpgsql' ORDER BY x.oid
        """
    ).fetchall()
    return [SourceExtension(str(r[0]), str(r[1]), str(r[2]), int(r[3]), tuple(r[4] or ())) for r in rows]


def on_target(conn: psycopg.Connection, names: list[str]) -> dict[str, TargetExtension]:
    """What the target offers and has of the extensions `names` (those it does not offer are left
    out). Read-only."""
    if not names:
        return {}
    rows = conn.execute(
        """
        SELECT a.name, a.default_version, x.extversion, n.nspname, pg_catalog.pg_get_userbyid(x.extowner),
               coalesce(x.extrelocatable, false),
               ARRAY(SELECT v.version FROM pg_catalog.pg_available_extension_versions v WHERE v.name = a.name),
               coalesce((SELECT bool_or(v.trusted) FROM pg_catalog.pg_available_extension_versions v
                         WHERE v.name = a.name), false)
        FROM pg_catalog.pg_available_extensions a
        LEFT JOIN pg_catalog.pg_extension x ON x.extname = a.name
        LEFT JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace
        WHERE a.name = ANY(%s)
        """,
        (names,),
    ).fetchall()
    return {str(r[0]): TargetExtension(str(r[0]), str(r[1]), set(r[6] or ()), r[2], r[3], r[4], bool(r[5]),
                                       bool(r[7]))
            for r in rows}


def availability(conn: psycopg.Connection, names: list[str], target: dict[str, TargetExtension]
                 ) -> dict[str, dict[str, object]]:
    """For each extension of `names`: available on the target (in `target`, from on_target())?
    installed? may the current user create it (installed, superuser, rds_superuser, or trusted)?"""
    su, rds_su = conn.execute(
        "SELECT r.rolsuper, EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = 'rds_superuser'"
        " AND pg_catalog.pg_has_role(current_user, g.oid, 'member'))"
        " FROM pg_catalog.pg_roles r WHERE r.rolname = current_user").fetchone()  # type: ignore[misc]
    out: dict[str, dict[str, object]] = {}
    for name in names:
        t = target.get(name)
        if t is None:
            out[name] = {"available": False, "installed": None, "creatable": False}
        else:
            out[name] = {"available": True, "installed": t.installed_version,
                         "creatable": bool(t.installed_version) or bool(su) or bool(rds_su) or t.trusted}
    return out


def schemas_on(conn: psycopg.Connection, names: list[str]) -> dict[str, bool]:
    """Which of the schemas `names` exist on the connected database: name -> may the current user
    create objects in it. Read-only."""
    rows = conn.execute(
        "SELECT nspname, has_schema_privilege(oid, 'USAGE') AND has_schema_privilege(oid, 'CREATE')"
        " FROM pg_catalog.pg_namespace WHERE nspname = ANY(%s)", (names,)).fetchall()
    return {str(r[0]): bool(r[1]) for r in rows}


def _kept(t: TargetExtension, *, clean: bool, target_user: str) -> bool:
    """Is the target's installed extension still there when the schema restore runs? --clean drops
    what the target user owns (DROP OWNED), and the copy then creates it again."""
    return t.installed_version is not None and not (clean and t.owner == target_user)


def plan_checks(source: list[SourceExtension], target: dict[str, TargetExtension], target_schemas: dict[str, bool],
                *, target_user: str, clean: bool, mode: str) -> tuple[list[str], list[str]]:
    """(blockers, warnings) about versions and schemas. Extensions the target does not offer at all,
    or that the target user may not create, are the planner's own blockers."""
    blockers: list[str] = []
    warnings: list[str] = []
    for schema in sorted({e.schema for e in source}):
        if schema != "public" and target_schemas.get(schema) is False:
            blockers.append(
                f"schema {schema} (of extension {', '.join(e.name for e in source if e.schema == schema)}) exists on"
                f" the target, but {target_user} may not create objects in it; nothing was written — as its owner:"
                f" GRANT USAGE, CREATE ON SCHEMA {quote_ident(schema)} TO {quote_ident(target_user)}")
    for e in source:
        t = target.get(e.name)
        if t is None:
            continue
        if _kept(t, clean=clean, target_user=target_user):
            if t.schema != e.schema:
                blockers.append(_schema_blocker(e, t, target_user))
            elif t.installed_version != e.version:
                warnings.append(
                    f"extension {e.name} is already installed on the target at version {t.installed_version},"
                    f" {e.version} on the source: the copy keeps the target's (verify shows the difference as"
                    f" information; ALTER EXTENSION {quote_ident(e.name)} UPDATE TO ... changes it)")
        elif e.version not in t.versions:
            warnings.append(
                f"extension {e.name}: the target server does not offer version {e.version} (the source's), so the"
                f" copy installs its default version {t.default_version} (verify shows the difference as information)")
        elif e.version != t.default_version and mode == "stream" and e.schema not in target_schemas:
            warnings.append(
                f"extension {e.name}: --mode stream installs the target's default version {t.default_version}, not"
                f" the source's {e.version} (its schema {e.schema} is created by the restore itself);"
                " --mode parallel installs the source's")
    return blockers, warnings


def _schema_blocker(e: SourceExtension, t: TargetExtension, target_user: str) -> str:
    name, schema = quote_ident(e.name), quote_ident(e.schema)
    move = (f"move it there (CREATE SCHEMA IF NOT EXISTS {schema}; GRANT USAGE, CREATE ON SCHEMA {schema} TO"
            f" {quote_ident(target_user)}; ALTER EXTENSION {name} SET SCHEMA {schema}) or " if t.relocatable else "")
    return (f"extension {e.name} is already installed on the target in schema {t.schema}, but in schema {e.schema}"
            f" on the source: the restored schema would refer to its objects in {e.schema}; nothing was written"
            f" — as its owner ({t.owner}) on the target, {move}drop it (DROP EXTENSION {name}; the copy then creates"
            f" it in {e.schema})")


def _order(wanted: list[SourceExtension], by_name: dict[str, SourceExtension]) -> list[SourceExtension]:
    """`wanted` with the extensions each requires before it."""
    out: list[SourceExtension] = []
    seen: set[str] = set()

    def visit(e: SourceExtension) -> None:
        if e.name in seen:
            return
        seen.add(e.name)
        for r in e.requires:
            if r in by_name:
                visit(by_name[r])
        out.append(e)

    for e in wanted:
        visit(e)
    return out


def create_at_source_versions(conn: psycopg.Connection, source: list[SourceExtension], *,
                              create_schemas: bool) -> tuple[set[int], list[str]]:
    """Before the schema restore, on the target (`conn` in autocommit): create each source extension
    the target does not have, whose source version it offers but would not install by default, at
    that version (and the extensions it requires before it, at their source versions where offered),
    in its schema. The schema is created first when `create_schemas`; else such an extension is left
    to the restore (at the default version).

    Returns the source oids of the schemas of source extensions that exist on the target now (the
    restore must not create them again: CREATE SCHEMA would fail), other than public; and warnings
    for extensions that could not be created (the restore then installs the default version).
    """
    by_name = {e.name: e for e in source}
    target = on_target(conn, list(by_name))
    present = set(schemas_on(conn, sorted({e.schema for e in source})))
    wanted = [e for e in source
              if e.name in target and target[e.name].installed_version is None
              and e.version in target[e.name].versions and e.version != target[e.name].default_version
              and (create_schemas or e.schema in present)]
    warnings: list[str] = []
    for e in _order(wanted, by_name):
        t = target.get(e.name)
        if t is None or t.installed_version is not None:
            continue  # not offered (the planner blocks the copy), or already there
        if not create_schemas and e.schema not in present:
            # A required extension in a schema the stream's restore creates itself (CREATE SCHEMA,
            # which would fail had we made it): left to the restore, at the default version.
            warnings.append(f"extension {e.name} (required by another) is left to the restore in schema"
                            f" {e.schema}: it gets the target's default version, not {e.version}")
            continue
        ext, schema = quote_ident(e.name), quote_ident(e.schema)
        version = sql.Literal(e.version if e.version in t.versions else t.default_version).as_string(None)
        try:
            if e.schema not in present:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}".encode())
                present.add(e.schema)
            conn.execute(f"CREATE EXTENSION IF NOT EXISTS {ext} WITH SCHEMA {schema} VERSION {version}".encode())
            t.installed_version = e.version
            log.info("created extension %s %s in schema %s (the source's version)", e.name, e.version, e.schema)
        except psycopg.Error as exc:
            warnings.append(f"could not create extension {e.name} at version {e.version} (the source's):"
                            f" {first_line(str(exc))}; the schema restore installs the target's default")
    return {e.schema_oid for e in source if e.schema in present and e.schema != "public"}, warnings
