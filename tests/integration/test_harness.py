"""The harness itself: real, distinct PostgreSQL servers; a real S3 API with two credential sets."""

from __future__ import annotations

import psycopg

from tests.support.services import RDS_USER


def test_clusters_accept_connections_and_are_different_servers(dbs) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(dbs.source_url) as s, psycopg.connect(dbs.target_url) as t:
        s_port = s.execute("SHOW port").fetchone()
        t_port = t.execute("SHOW port").fetchone()
        assert s_port != t_port
        s_id = s.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        t_id = t.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        assert s_id != t_id
        row = t.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row is not None
        user, is_super = row
        assert user == RDS_USER and is_super is False


USER_RELATIONS = """
    SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
    ORDER BY 1
"""


def test_each_test_gets_fresh_databases(dbs) -> None:  # type: ignore[no-untyped-def]
    """Neither side has any user relation (table, view, sequence, index...) when a test starts."""
    for url in (dbs.source_url, dbs.target_url):
        with psycopg.connect(url) as conn:
            assert conn.execute(USER_RELATIONS).fetchall() == [], url


def test_s3_server_answers_with_both_credential_sets(buckets) -> None:  # type: ignore[no-untyped-def]
    buckets.source.put_object(Bucket=buckets.source_bucket, Key="a.csv", Body=b"1,2\n")
    buckets.target.put_object(Bucket=buckets.target_bucket, Key="b.csv", Body=b"3,4\n")
    assert buckets.source.get_object(Bucket=buckets.source_bucket, Key="a.csv")["Body"].read() == b"1,2\n"
    assert [o["Key"] for o in buckets.target.list_objects_v2(Bucket=buckets.target_bucket)["Contents"]] == ["b.csv"]
    assert buckets.endpoint_url.startswith("http://127.0.0.1:")
