"""Starting the real services the tests need, or saying precisely why they could not be started.

When MIGRATE_TEST_REQUIRE_SERVICES=1 (set by .ci/run), a service that cannot be started is a test
failure, not a skip: a green CI run has always used real services.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

from migrate.local.postgres import SUPERUSER, LocalPostgres, find_bindir

REQUIRE = os.environ.get("MIGRATE_TEST_REQUIRE_SERVICES") == "1"

# The target side's login role: no superuser, like an RDS master user.
RDS_USER = "rds_master"
RDS_PASSWORD = "rds-master-password"


def unavailable(reason: str) -> NoReturn:
    if REQUIRE:
        pytest.fail(f"required service unavailable (MIGRATE_TEST_REQUIRE_SERVICES=1): {reason}", pytrace=False)
    pytest.skip(reason)


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class ContainerPostgres:
    """The same surface as LocalPostgres, on testcontainers' PostgresContainer (when a Docker daemon answers)."""

    def __init__(self, name: str) -> None:
        from testcontainers.postgres import PostgresContainer

        self.name = name
        self.password = "local-superuser-pw"
        self._c = PostgresContainer("postgres:16", username=SUPERUSER, password=self.password, dbname="postgres")

    def start(self) -> ContainerPostgres:
        self._c.start()
        self.port = int(self._c.get_exposed_port(5432))
        self.host = self._c.get_container_host_ip()
        return self

    def stop(self, **_: Any) -> None:
        self._c.stop()

    def url(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        pw = self.password if password is None and user == SUPERUSER else password
        auth = f"{user}:{pw}@" if pw else f"{user}@"
        return f"postgresql://{auth}{self.host}:{self.port}/{dbname}"

    # The DDL helpers are shared with LocalPostgres.
    execute = LocalPostgres.execute
    create_role = LocalPostgres.create_role
    create_database = LocalPostgres.create_database
    drop_database = LocalPostgres.drop_database


def start_cluster(name: str) -> Any:
    """A running cluster from local binaries, else a container, else skip/fail with the reason."""
    if find_bindir() is not None:
        try:
            return LocalPostgres(name).start()
        except Exception as exc:  # the reason is the useful part
            unavailable(f"PostgreSQL {name} cluster could not start: {exc}")
    if docker_answers():
        return ContainerPostgres(name).start()
    unavailable("no PostgreSQL server binaries (initdb/pg_ctl/postgres) and no Docker daemon")


@dataclass
class DbPair:
    """Fresh source and target databases for one test."""

    source_cluster: Any
    target_cluster: Any
    source_db: str
    target_db: str

    @property
    def source_url(self) -> str:
        return self.source_cluster.url(self.source_db)

    @property
    def target_url(self) -> str:
        return self.target_cluster.url(self.target_db, RDS_USER, RDS_PASSWORD)

    @property
    def target_admin_url(self) -> str:
        return self.target_cluster.url(self.target_db)

    def source_sql(self, sql: str) -> None:
        self.source_cluster.execute(sql, self.source_db)

    def target_sql(self, sql: str) -> None:
        self.target_cluster.execute(sql, self.target_db)


def new_db_pair(source_cluster: Any, target_cluster: Any) -> DbPair:
    suffix = uuid.uuid4().hex[:10]
    src = source_cluster.create_database(f"src_{suffix}")
    tgt = target_cluster.create_database(f"tgt_{suffix}", owner=RDS_USER)
    return DbPair(source_cluster, target_cluster, src, tgt)
