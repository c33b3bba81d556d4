"""What a database holds beyond an empty one: for tests that a command "writes nothing"."""

from __future__ import annotations

import psycopg

SYSTEM = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"

QUERIES = {
    "extensions": "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
    "schemas": f"SELECT n.nspname FROM pg_namespace n WHERE {SYSTEM} AND n.nspname <> 'public' ORDER BY 1",
    "relations": f"""SELECT n.nspname || '.' || c.relname FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SYSTEM} ORDER BY 1""",
    "types": f"""SELECT n.nspname || '.' || t.typname FROM pg_type t
                 JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {SYSTEM} ORDER BY 1""",
    "functions": f"""SELECT p.oid::regprocedure::text FROM pg_proc p
                     JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {SYSTEM} ORDER BY 1""",
    "large objects": "SELECT oid::text FROM pg_largeobject_metadata ORDER BY 1",
}


def user_objects(url: str) -> dict[str, list[str]]:
    """Every user-created extension, schema (other than public), relation, type, function and large
    object. An empty database has none: each list is empty."""
    with psycopg.connect(url) as conn:
        out = {what: [r[0] for r in conn.execute(q).fetchall()] for what, q in QUERIES.items()}  # type: ignore[arg-type]
        row = conn.execute("SELECT to_regnamespace('_paas_migrate') IS NULL").fetchone()
    out["_paas_migrate schema"] = [] if row == (True,) else ["_paas_migrate"]
    return out


def assert_untouched(url: str) -> None:
    """The database holds nothing a copy would have created (see user_objects)."""
    found = {what: names for what, names in user_objects(url).items() if names}
    assert found == {}, found
