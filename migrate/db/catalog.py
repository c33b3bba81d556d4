"""Schema inventory of one database, as comparable text, and the comparison of two inventories.

Every user object becomes an `Item` keyed by (kind, name) whose `definition` is the server's own
rendering of it (pg_get_indexdef, pg_get_constraintdef, pg_get_viewdef, ...). Two databases have
the same schema when both sides yield the same items with the same definitions. Owners and ACLs
are carried separately: the target (RDS) has other roles, so they differ by design and are only
ever reported as information.

Read-only: nothing here writes, and nothing here reads table contents. The caller pins
`search_path = pg_catalog` first, so every rendered name is schema-qualified the same way on
both sides.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from migrate.db import dbsettings
from migrate.model import Diff, Outcome

log = logging.getLogger(__name__)
# Salts the digests by which secret-looking settings are compared (the same for both sides of one
# run, never shown): a printed digest cannot be tried against guesses of the value offline.
_NONCE = secrets.token_hex(16)

# Schemas that never hold user objects.
_USER_NS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    " AND n.nspname NOT LIKE 'pg_temp\\_%' AND n.nspname NOT LIKE 'pg_toast_temp\\_%'"
)


def _not_ext_member(catalog: str, oid_expr: str) -> str:
    """SQL condition: the object is not part of an extension (those come with CREATE EXTENSION)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = '{catalog}'::regclass"
        f" AND e.objid = {oid_expr} AND e.deptype = 'e')"
    )


_REL_KIND = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "f": "foreign table",
}

# Each query returns (kind, name, definition, owner, acl, comment, note). Kind may come from SQL; note is
# compared as information only (a column's position: pg_dump may reorder inherited columns; an
# extension's version: the target server may not offer the source's, see migrate.db.extensions).
_QUERIES: list[tuple[str, str]] = [
    (
        "schema",
        f"""
        SELECT 'schema', n.nspname, '', pg_get_userbyid(n.nspowner), n.nspacl::text,
               obj_description(n.oid, 'pg_namespace'), NULL
        FROM pg_namespace n
        WHERE {_USER_NS} AND {_not_ext_member("pg_namespace", "n.oid")}
        """,
    ),
    (
        "relation",
        f"""
        SELECT c.relkind::text, quote_ident(n.nspname) || '.' || quote_ident(c.relname),
               concat_ws(E'\\n',
                 'persistence ' || c.relpersistence::text,
                 CASE WHEN c.relkind = 'p' THEN 'partition by ' || pg_get_partkeydef(c.oid) END,
                 CASE WHEN c.relispartition THEN 'partition of ' || (
                   SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid)
                   || ' ' || pg_get_expr(c.relpartbound, c.oid) END,
                 CASE WHEN NOT c.relispartition THEN (
                   SELECT 'inherits ' || string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno)
                   FROM pg_inherits i WHERE i.inhrelid = c.oid) END,
                 CASE WHEN c.reloptions IS NOT NULL THEN 'with ' || array_to_string(c.reloptions, ', ') END,
                 CASE WHEN c.relrowsecurity THEN 'row level security' END,
                 CASE WHEN c.relkind = 'f' THEN (
                   SELECT 'server ' || quote_ident(s.srvname)
                          || coalesce(' options ' || (SELECT string_agg(o, ', ' ORDER BY o)
                                                      FROM unnest(ft.ftoptions) o), '')
                   FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver
                   WHERE ft.ftrelid = c.oid) END,
                 CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
                 CASE WHEN c.relkind = 'S' THEN (
                   SELECT format('type %s start %s increment %s min %s max %s cache %s cycle %s',
                                 format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
                                 s.seqmax, s.seqcache, s.seqcycle)
                   FROM pg_sequence s WHERE s.seqrelid = c.oid) END,
                 CASE WHEN c.relkind = 'S' THEN (
                   SELECT 'owned by ' || d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                   FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) END
               ),
               pg_get_userbyid(c.relowner), c.relacl::text, obj_description(c.oid, 'pg_class'), NULL
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_NS}
          AND {_not_ext_member("pg_class", "c.oid")}
        """,
    ),
    (
        "column",
        f"""
        SELECT 'column', quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(a.attname),
               concat_ws(' ',
                 format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attcollation <> t.typcollation THEN 'collate ' || (
                   SELECT quote_ident(co.collname) FROM pg_collation co WHERE co.oid = a.attcollation) END,
                 CASE WHEN a.attnotnull THEN 'not null' END,
                 CASE WHEN a.attidentity <> '' THEN 'identity ' || a.attidentity::text END,
                 CASE WHEN a.attgenerated <> '' THEN 'generated ' || a.attgenerated::text END,
                 'default ' || pg_get_expr(ad.adbin, ad.adrelid),
                 'options ' || (SELECT string_agg(o, ', ' ORDER BY o) FROM unnest(a.attfdwoptions) o)
               ),
               NULL, a.attacl::text, col_description(c.oid, a.attnum),
               'position ' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f', 'v', 'm')
          AND {_USER_NS} AND {_not_ext_member("pg_class", "c.oid")}
        """,
    ),
    (
        "constraint",
        f"""
        SELECT 'constraint',
               quote_ident(n.nspname) || '.'
                 || quote_ident(coalesce(c.relname, ty.typname)) || '.' || quote_ident(con.conname),
               pg_get_constraintdef(con.oid) || CASE WHEN con.convalidated THEN '' ELSE ' (not validated)' END,
               NULL, NULL, obj_description(con.oid, 'pg_constraint'), NULL
        FROM pg_constraint con
        JOIN pg_namespace n ON n.oid = con.connamespace
        LEFT JOIN pg_class c ON c.oid = con.conrelid
        LEFT JOIN pg_type ty ON ty.oid = con.contypid
        WHERE {_USER_NS} AND con.contype <> 'n'
          AND (c.oid IS NULL OR {_not_ext_member("pg_class", "c.oid")})
          AND (ty.oid IS NULL OR {_not_ext_member("pg_type", "ty.oid")})
        """,
    ),
    (
        "index",
        f"""
        SELECT 'index', quote_ident(n.nspname) || '.' || quote_ident(ic.relname),
               pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' (invalid)' END,
               NULL, NULL, obj_description(ic.oid, 'pg_class'), NULL
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE {_USER_NS} AND {_not_ext_member("pg_class", "c.oid")}
        """,
    ),
    (
        "trigger",
        f"""
        SELECT 'trigger',
               quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(tg.tgname),
               pg_get_triggerdef(tg.oid) || ' enabled ' || tg.tgenabled::text,
               NULL, NULL, obj_description(tg.oid, 'pg_trigger'), NULL
        FROM pg_trigger tg
        JOIN pg_class c ON c.oid = tg.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT tg.tgisinternal AND {_USER_NS} AND {_not_ext_member("pg_class", "c.oid")}
        """,
    ),
    (
        "function",
        f"""
        SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
               p.oid::regprocedure::text,
               CASE WHEN p.prokind = 'a' THEN (
                   SELECT format('aggregate returns %s sfunc %s stype %s finalfunc %s initcond %s',
                                 pg_get_function_result(p.oid), a.aggtransfn, format_type(a.aggtranstype, NULL),
                                 a.aggfinalfn, a.agginitval)
                   FROM pg_aggregate a WHERE a.aggfnoid = p.oid)
                 ELSE pg_get_functiondef(p.oid) END,
               pg_get_userbyid(p.proowner), p.proacl::text, obj_description(p.oid, 'pg_proc'), NULL
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_NS} AND {_not_ext_member("pg_proc", "p.oid")}
        """,
    ),
    (
        "type",
        f"""
        SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'c' THEN 'composite type'
                              WHEN 'r' THEN 'range type' ELSE 'type' END,
               quote_ident(n.nspname) || '.' || quote_ident(t.typname),
               CASE t.typtype
                 WHEN 'e' THEN (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                FROM pg_enum e WHERE e.enumtypid = t.oid)
                 WHEN 'd' THEN concat_ws(' ', format_type(t.typbasetype, t.typtypmod),
                                         CASE WHEN t.typnotnull THEN 'not null' END, 'default ' || t.typdefault)
                 WHEN 'c' THEN (SELECT string_agg(quote_ident(a.attname) || ' '
                                                  || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                                FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0
                                  AND NOT a.attisdropped)
                 WHEN 'r' THEN (SELECT 'subtype ' || format_type(r.rngsubtype, NULL) FROM pg_range r
                                WHERE r.rngtypid = t.oid)
                 ELSE t.typtype::text END,
               pg_get_userbyid(t.typowner), t.typacl::text, obj_description(t.oid, 'pg_type'), NULL
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_class c ON c.oid = t.typrelid
        WHERE {_USER_NS} AND t.typtype IN ('e', 'd', 'c', 'r', 'b')
          AND (t.typtype <> 'c' OR c.relkind = 'c')
          AND NOT (t.typtype = 'b' AND t.typelem <> 0 AND t.typlen = -1)
          AND {_not_ext_member("pg_type", "t.oid")}
        """,
    ),
    (
        "extension",
        """
        SELECT 'extension', x.extname, 'schema ' || n.nspname,
               NULL, NULL, obj_description(x.oid, 'pg_extension'), 'version ' || x.extversion
        FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
        """,
    ),
    (
        # Settings stored on the database itself (ALTER DATABASE ... SET): pg_dump's restore loses them.
        "database setting",
        """
        SELECT 'database setting', split_part(u.cfg, '=', 1),
               -- a secret's value (see migrate.db.dbsettings.SECRET_NAME) compared by digest, never shown
               CASE WHEN split_part(u.cfg, '=', 1) ~* '{secret}'
                    THEN 'hidden value, digest ' || left(md5('{nonce}' || substr(u.cfg, strpos(u.cfg, '=') + 1)), 12)
                    ELSE substr(u.cfg, strpos(u.cfg, '=') + 1) END,
               NULL, NULL, NULL, NULL
        FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) AS u(cfg)
        WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND lower(split_part(u.cfg, '=', 1)) NOT IN ({not_copied})
        """.replace("{secret}", dbsettings.SECRET_NAME.pattern).replace("{nonce}", _NONCE).replace(
            "{not_copied}", ", ".join(f"'{n}'" for n in sorted(dbsettings.NOT_COPIED))),
    ),
    (
        # COMMENT ON DATABASE, which pg_dump's restore loses too (the copy sets it: migrate.db.dbsettings).
        # The databases' names differ: one item per side, "current database", the comment its definition.
        "database comment",
        """
        SELECT 'database comment', 'current database', shobj_description(d.oid, 'pg_database'), NULL, NULL, NULL, NULL
        FROM pg_database d
        WHERE d.datname = current_database() AND shobj_description(d.oid, 'pg_database') IS NOT NULL
        """,
    ),
    (
        # Options sorted (here, a foreign table's and its columns'): pg_dump may write them in another order.
        "foreign server",
        f"""
        SELECT 'foreign server', quote_ident(s.srvname),
               concat_ws(' ', 'wrapper ' || quote_ident(w.fdwname), 'type ' || quote_literal(s.srvtype),
                         'version ' || quote_literal(s.srvversion),
                         'options ' || (SELECT string_agg(o, ', ' ORDER BY o) FROM unnest(s.srvoptions) o)),
               pg_get_userbyid(s.srvowner), s.srvacl::text, obj_description(s.oid, 'pg_foreign_server'), NULL
        FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
        WHERE {_not_ext_member("pg_foreign_server", "s.oid")}
        """,
    ),
    (
        # Which roles have a mapping, not its options: they hold remote passwords, and pg_user_mappings
        # shows them only to the mapped role, the server's owner (for PUBLIC) or a superuser.
        "user mapping",
        """
        SELECT 'user mapping', 'for ' || CASE WHEN m.umuser = 0 THEN 'PUBLIC' ELSE quote_ident(m.usename) END
                               || ' server ' || quote_ident(m.srvname),
               '', NULL, NULL, NULL, NULL
        FROM pg_user_mappings m
        """,
    ),
    (
        "policy",
        f"""
        SELECT 'policy', quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(p.polname),
               concat_ws(' ', 'cmd ' || p.polcmd::text, 'permissive ' || p.polpermissive,
                         'using ' || pg_get_expr(p.polqual, p.polrelid),
                         'check ' || pg_get_expr(p.polwithcheck, p.polrelid)),
               NULL, NULL, NULL, NULL
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NS}
        """,
    ),
]


@dataclass(frozen=True)
class Item:
    """One schema object: what it is, and what must be equal (definition) or may differ (owner, acl)."""

    kind: str
    name: str
    definition: str
    owner: str | None = None
    acl: str | None = None
    note: str | None = None  # may differ without failing (shown as information)


def inventory(conn: psycopg.Connection) -> dict[tuple[str, str], Item]:
    """Every user object of the connected database, keyed by (kind, name). Read-only."""
    items: dict[tuple[str, str], Item] = {}
    old_server = conn.info.server_version < 120000  # no generated columns before PostgreSQL 12
    for label, query in _QUERIES:
        if old_server:
            query = query.replace("a.attgenerated", "''::\"char\"")
        rows = conn.execute(query).fetchall()  # catalog rows: small, bounded by the schema size
        for raw_kind, name, definition, owner, acl, comment, note in rows:
            kind = str(_REL_KIND.get(raw_kind, raw_kind) if label == "relation" else raw_kind)
            items[(kind, name)] = Item(kind, name, definition or "", owner, acl, note)
            if comment is not None:
                items[("comment", f"{kind} {name}")] = Item("comment", f"{kind} {name}", comment)
    log.debug("schema inventory: %d items", len(items))
    return items


def _short(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _first_difference(a: str, b: str) -> str:
    """Both definitions, cut around where they start to differ (view bodies can be long)."""
    fa, fb = " ".join(a.split()), " ".join(b.split())
    i = 0
    while i < min(len(fa), len(fb)) and fa[i] == fb[i]:
        i += 1
    start = max(0, i - 60)
    prefix = "…" if start else ""
    return f"source: {prefix}{_short(fa[start:], 160)!s} | target: {prefix}{_short(fb[start:], 160)!s}"


def compare(source: dict[tuple[str, str], Item], target: dict[tuple[str, str], Item]) -> list[Diff]:
    """One Diff per object on either side; owner/ACL differences as separate info-only Diffs."""
    diffs: list[Diff] = []
    for key in sorted(set(source) | set(target)):
        kind, name = key
        s, t = source.get(key), target.get(key)
        if t is None:
            # A user mapping is for a role, and the target has other roles (the copy skips the mappings of
            # roles it lacks, saying so): information, as owners and privileges are.
            diffs.append(Diff(kind, name, Outcome.MISSING_ON_TARGET, _short(s.definition) if s else "",
                              info_only=kind == "user mapping"))
            continue
        if s is None:
            # A setting only the target's database has was set there by its DBA (the copy sets the
            # source's, and removes none): information, not a difference of the copy.
            diffs.append(Diff(kind, name, Outcome.EXTRA_ON_TARGET, _short(t.definition),
                              info_only=kind in ("database setting", "database comment", "user mapping")))
            continue
        if s.definition == t.definition:
            diffs.append(Diff(kind, name, Outcome.MATCH))
        else:
            diffs.append(Diff(kind, name, Outcome.DIFFER, _first_difference(s.definition, t.definition)))
        notes = list(_privilege_notes(s, t))
        if notes:
            diffs.append(Diff(kind, name, Outcome.DIFFER, "; ".join(notes), info_only=True))
    return diffs


def _privilege_notes(s: Item, t: Item) -> Iterable[str]:
    if s.owner != t.owner:
        yield f"owner {s.owner} on source, {t.owner} on target"
    if s.acl != t.acl:
        yield f"privileges {s.acl or 'default'} on source, {t.acl or 'default'} on target"
    if s.note != t.note:
        yield f"{s.note} on source, {t.note} on target"
