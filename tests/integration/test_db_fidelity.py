"""db copy + db verify on data whose bytes alone do not carry it across servers: text in another
encoding, oids of named objects (regclass...), rows of extensions' configuration tables."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cli import run_cli
from tests.support.services import RDS_PASSWORD, RDS_USER, DbPair, unavailable

NAMES = ["Zoë Müller", "Ã©tÃ©", "naïve café ½ £ ÿ", "", None]


def env_for(dbs: DbPair) -> dict[str, str]:
    return {"MIGRATE_SOURCE_DATABASE_URL": dbs.source_url, "MIGRATE_TARGET_DATABASE_URL": dbs.target_url}


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        conn.execute("SET client_encoding = 'UTF8'")
        return conn.execute(query).fetchall()


@pytest.fixture
def latin1_dbs(dbs: DbPair) -> DbPair:
    """The pair, with the source database re-created in LATIN1 (the target stays UTF8)."""
    with psycopg.connect(dbs.source_cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{dbs.source_db}"')
        conn.execute(f"""CREATE DATABASE "{dbs.source_db}" TEMPLATE template0 ENCODING 'LATIN1'
                         LC_COLLATE 'C' LC_CTYPE 'C'""")
    return dbs


@pytest.mark.parametrize("path", ["session", "psql"])
def test_a_latin1_source_arrives_as_the_same_text_and_verifies(latin1_dbs: DbPair, path: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from migrate.config import DbCopyConfig, DbJobConfig
    from migrate.db import copier
    from migrate.progress import RecordingReporter

    dbs = latin1_dbs
    with psycopg.connect(dbs.source_url) as conn:
        conn.execute("SET client_encoding = 'UTF8'")
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, name text, initials char(3));"
                     'CREATE TABLE "café" (nom text PRIMARY KEY, n int)')
        for i, name in enumerate(NAMES):
            conn.execute("INSERT INTO people VALUES (%s, %s, %s)", (i, name, (name or "x")[:3]))
            if name:
                conn.execute('INSERT INTO "café" VALUES (%s, %s)', (name, i))
    # Every table small (read over a session) or none (read through psql).
    monkeypatch.setattr(copier, "SMALL_COPY_BYTES", 4 * 1024 * 1024 if path == "session" else -1)
    cfg = DbCopyConfig(db=DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2))
    report = copier.copy_database(cfg, RecordingReporter())
    assert report.status.value == "success", report.errors + [str(d) for d in report.diffs]
    for query in ("SELECT id, name, initials, length(name) FROM people ORDER BY id",
                  'SELECT nom, n FROM "café" ORDER BY n'):
        assert rows(dbs.target_admin_url, query) == rows(dbs.source_url, query)
    assert rows(dbs.target_admin_url, "SELECT name FROM people WHERE id = 1") == [("Ã©tÃ©",)]  # 5 characters


def test_a_latin1_source_copied_by_pg_restore_verifies_and_plan_names_both_encodings(latin1_dbs: DbPair) -> None:
    dbs = latin1_dbs
    with psycopg.connect(dbs.source_url) as conn:
        conn.execute("SET client_encoding = 'UTF8'")
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, name text); CREATE TABLE tags (tag text PRIMARY KEY)")
        for i, name in enumerate(NAMES[:3]):
            conn.execute("INSERT INTO people VALUES (%s, %s)", (i, name))
            conn.execute("INSERT INTO tags VALUES (%s)", (name,))
    plan = run_cli("db", "plan", "--json", env=env_for(dbs))
    assert plan.code == 0, plan.err
    assert "encoding is LATIN1, the target's UTF8" in plan.out
    res = run_cli("db", "copy", "--mode", "stream", env=env_for(dbs))
    assert res.code == 0, res.err  # verify compared the text as UTF-8 on both sides
    # A changed character is still a difference (and the text key is not narrowed byte-wise).
    with psycopg.connect(dbs.target_admin_url) as conn:
        conn.execute("UPDATE people SET name = 'Zoe Müller' WHERE id = 0")
    res = run_cli("db", "verify", env=env_for(dbs))
    assert res.code == 3, res.output
    assert "public.people" in res.out


def test_oids_of_named_objects_are_copied_as_their_names(dbs: DbPair) -> None:
    dbs.source_sql("""
        CREATE SCHEMA app;
        CREATE TYPE app.mood AS ENUM ('ok');
        CREATE FUNCTION app.touch() RETURNS int LANGUAGE sql AS 'SELECT 1';
        CREATE TEXT SEARCH CONFIGURATION app.search (COPY = pg_catalog.english);
        CREATE DOMAIN app.rel AS regclass;
        CREATE TABLE app.articles (id int PRIMARY KEY);
        -- Objects created in another order on the target get other oids than on the source.
        CREATE TABLE app.filler (id int);
        CREATE TABLE refs (id int PRIMARY KEY, rel regclass, fn regproc, cfg regconfig, typ regtype,
                           rels regclass[], d app.rel, r regrole, plain int);
        INSERT INTO refs VALUES
            (1, 'app.articles', 'app.touch', 'app.search', 'app.mood', ARRAY['app.articles', 'refs']::regclass[],
             'app.filler', 'postgres', 7),
            (2, 'pg_class', 'now', 'english', 'int4', NULL, NULL, NULL, NULL);
    """)
    dbs.target_sql("CREATE TABLE scratch (id int); DROP TABLE scratch")  # shift the target's oids
    res = run_cli("db", "copy", env=env_for(dbs))
    assert res.code == 0, res.output  # includes the verification
    query = ("SELECT id, rel::text, fn::text, cfg::text, typ::text, rels::text, d::text, r::text, plain"
             " FROM public.refs ORDER BY id")
    with psycopg.connect(dbs.target_admin_url) as conn:
        conn.execute("SET search_path = ''")
        got = conn.execute(query).fetchall()
    assert got[0][1:7] == ("app.articles", "app.touch", "app.search", "app.mood", "{app.articles,public.refs}",
                           "app.filler")
    assert got[1][1:5] == ("pg_class", "now", "english", "integer")
    # A regclass naming another table is a difference verify sees (its text, not its oid).
    dbs.target_sql("UPDATE refs SET rel = 'app.filler' WHERE id = 1")
    res = run_cli("db", "verify", env=env_for(dbs))
    assert res.code == 3, res.output


# ---- extensions' configuration tables ------------------------------------------------------------

EXTENSION_SQL = """
CREATE TABLE @extschema@.part_config (parent_table text PRIMARY KEY, retention text, builtin bool DEFAULT false);
INSERT INTO @extschema@.part_config VALUES ('(defaults)', '1 day', true);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.part_config', 'WHERE NOT builtin');
CREATE SEQUENCE @extschema@.job_id_seq;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.job_id_seq', '');
CREATE TABLE @extschema@.cache (k text);  -- a member that is not configuration: never copied
-- A trusted extension's objects belong to the bootstrap superuser: its users are granted their use.
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.part_config, @extschema@.cache TO PUBLIC;
GRANT ALL ON SEQUENCE @extschema@.job_id_seq TO PUBLIC;
"""


def _relocated_postgres(dest: Path) -> Path | None:
    """A copy of the local PostgreSQL installation (hard links where possible) with a test extension
    that has configuration tables; its bindir. None where the layout is not Debian's."""
    from migrate.local.postgres import find_bindir

    bindir = find_bindir()
    if bindir is None or bindir.parent.parent.name != "postgresql" or bindir.name != "bin":
        return None
    major, prefix = bindir.parent.name, bindir.parents[3]
    share = prefix / "share" / "postgresql" / major
    if not (share / "extension").is_dir():
        return None

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    # The server finds its share directory relative to its own binary: both trees move together.
    shutil.copytree(bindir.parent, dest / bindir.parent.relative_to(prefix), copy_function=link, symlinks=True)
    shutil.copytree(share, dest / share.relative_to(prefix), copy_function=link, symlinks=True)
    ext = dest / share.relative_to(prefix) / "extension"
    (ext / "pmtest_cfg.control").write_text(
        "default_version = '1.0'\nrelocatable = false\nschema = pmcfg\ntrusted = true\n")
    (ext / "pmtest_cfg--1.0.sql").write_text(EXTENSION_SQL)
    os.chmod(dest, 0o755)
    for root, dirs, _files in os.walk(dest):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    return dest / bindir.relative_to(prefix)


@pytest.fixture(scope="module")
def ext_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from migrate.local.postgres import LocalPostgres

    base = Path("/tmp") / f"paas-migrate-extpg-{uuid.uuid4().hex[:8]}"  # readable by the postgres OS user
    try:
        bindir = _relocated_postgres(base)
        if bindir is None:
            unavailable("no Debian-layout PostgreSQL installation to copy with a test extension")
        src = LocalPostgres("ext-source", bindir=bindir).start()
        tgt = LocalPostgres("ext-target", bindir=bindir).start()
        tgt.create_role(RDS_USER, RDS_PASSWORD)
        yield src, tgt
        src.stop()
        tgt.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("mode", ["parallel", "stream"])
def test_rows_of_an_extensions_configuration_tables_are_copied_and_verified(ext_pair, mode: str) -> None:  # type: ignore[no-untyped-def]
    src, tgt = ext_pair
    suffix = uuid.uuid4().hex[:8]
    dbs = DbPair(src, tgt, src.create_database(f"src_{suffix}"), tgt.create_database(f"tgt_{suffix}", owner=RDS_USER))
    dbs.source_sql("""
        CREATE EXTENSION pmtest_cfg;
        INSERT INTO pmcfg.part_config (parent_table, retention)
            VALUES ('public.events', '30 days'), ('public.logs', '7 days');
        INSERT INTO pmcfg.cache VALUES ('derived');
        SELECT setval('pmcfg.job_id_seq', 42);
        CREATE TABLE events (id int PRIMARY KEY);
    """)
    res = run_cli("db", "copy", "--mode", mode, env=env_for(dbs))
    assert res.code == 0, res.output  # includes the verification
    config = "SELECT * FROM pmcfg.part_config ORDER BY 1"
    assert rows(dbs.target_admin_url, config) == rows(dbs.source_url, config)
    assert len(rows(dbs.target_admin_url, config)) == 3  # the extension's own row once, the user's two
    assert rows(dbs.target_admin_url, "SELECT last_value FROM pmcfg.job_id_seq") == [(42,)]
    assert rows(dbs.target_admin_url, "SELECT * FROM pmcfg.cache") == []  # not configuration: as pg_dump
    # A configuration row missing on the target is a difference verify reports.
    dbs.target_sql("DELETE FROM pmcfg.part_config WHERE parent_table = 'public.logs'")
    res = run_cli("db", "verify", env=env_for(dbs))
    assert res.code == 3, res.output
    assert "part_config" in res.out
    if mode == "parallel":
        # A source user who may not read the configuration is stopped by the plan, not mid-copy.
        role = f"reader_{suffix}"
        src.create_role(role, "reader-pw")
        dbs.source_sql(f"REVOKE SELECT ON pmcfg.part_config FROM PUBLIC; GRANT USAGE ON SCHEMA pmcfg TO {role}")
        env = dict(env_for(dbs), MIGRATE_SOURCE_DATABASE_URL=src.url(dbs.source_db, role, "reader-pw"))
        res = run_cli("db", "plan", env=env)
        assert res.code == 1 and "may not read pmcfg.part_config" in res.output, res.output
    src.drop_database(dbs.source_db)
    tgt.drop_database(dbs.target_db)


def test_a_table_forcing_row_level_security_is_named_by_the_plan_and_by_verify(dbs: DbPair) -> None:
    dbs.source_sql("""
        CREATE TABLE tenant_rows (tenant text NOT NULL, v int);
        INSERT INTO tenant_rows VALUES ('a', 1), ('b', 2);
        ALTER TABLE tenant_rows ENABLE ROW LEVEL SECURITY; ALTER TABLE tenant_rows FORCE ROW LEVEL SECURITY;
        CREATE POLICY only_a ON tenant_rows USING (tenant = 'a');
        CREATE TABLE plain (id int PRIMARY KEY);
    """)
    plan = run_cli("db", "plan", "--json", env=env_for(dbs))
    assert plan.code == 0, plan.output
    assert "public.tenant_rows): on the target the target user owns them" in plan.out
    # The copy is whole (the source is read as a superuser); the target user's verify cannot read
    # every row, and says which table and why on its one error line instead of calling it equal.
    res = run_cli("db", "copy", env=env_for(dbs))
    assert res.code == 1, res.output
    assert "tenant_rows" in res.err and "row-level security" in res.err
    assert rows(dbs.target_admin_url, "SELECT * FROM tenant_rows ORDER BY 1") == [("a", 1), ("b", 2)]


@pytest.mark.parametrize("database_path", [None, "app, public"])
def test_a_key_of_an_extension_type_is_split_and_narrowed(dbs: DbPair, database_path: str | None) -> None:
    """Ranges of an ltree or citext key compare with the extension's operators: verify's pinned
    search_path must reach them (a database search_path of its own must not change any text form)."""
    from migrate.config import DbJobConfig
    from migrate.db.verify import verify_databases
    from migrate.progress import RecordingReporter

    dbs.source_sql("""
        CREATE SCHEMA "Ext"; CREATE EXTENSION ltree SCHEMA "Ext"; CREATE EXTENSION citext;
        CREATE DOMAIN label AS "Ext".ltree;  -- a domain over it, in a schema that needs quoting
        CREATE TABLE paths (p label PRIMARY KEY, v int);
        INSERT INTO paths SELECT ('top.' || g % 10 || '.n' || g)::"Ext".ltree, g FROM generate_series(1, 3000) g;
        CREATE TABLE tags (t citext PRIMARY KEY, rel regclass);
        INSERT INTO tags SELECT 'Tag' || g, 'paths' FROM generate_series(1, 3000) g;
        ANALYZE;
    """)
    if database_path:
        dbs.source_cluster.execute(f"ALTER DATABASE {dbs.source_db} SET search_path = {database_path}")
    res = run_cli("db", "copy", "--no-verify", env=env_for(dbs))
    assert res.code == 0, res.output
    dbs.target_sql("""SET search_path = public, "Ext"; UPDATE paths SET v = -1 WHERE p = 'top.7.n1777';"""
                   " UPDATE tags SET rel = 'tags' WHERE t = 'tag2999'")
    cfg = DbJobConfig.build(dbs.source_url, dbs.target_url, jobs=2)
    report = verify_databases(cfg, RecordingReporter(), split_rows=100, chunk_rows=500, key_list_max=20)
    bad = {d.name: d.detail for d in report.diffs if d.outcome.value != "match" and not d.info_only}
    assert set(bad) == {"public.paths", "public.tags"}, bad
    assert "top.7.n1777" in bad["public.paths"] and "Tag2999" in bad["public.tags"], bad
