"""The demo: a PaaS-shaped application's data on embedded local services, ready to migrate.

`Demo` starts two PostgreSQL clusters (the "PaaS" source, whose app role owns its database, and
the "AWS" target, whose database is owned by a non-superuser role like an RDS master user) and
one S3 API server; seeds a dataset shaped like a UK social-housing data-collection service
(organisations, users, lettings and sales logs with jsonb and enum columns; a bulk-upload bucket
of CSV files and a CDS-export bucket of XML and zip files); and writes a plan file plus a
VCAP_SERVICES file, so the migration itself runs through exactly the `run` code path:
vcap: references for the PaaS side, secretsmanager: and env: references for the AWS side.

Every password and key is random per demo and lives only in files of mode 0600 inside the
demo's work directory. The library never prints: the CLI shows what `connection_help` returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.config import register_secret
from migrate.errors import ConfigError, ToolError
from migrate.progress import NullReporter, Reporter

log = logging.getLogger(__name__)

ENV_NAME = "demo"
STATE_FILE = "demo-state.json"
REGION = "eu-west-2"
SOURCE_ROLE, SOURCE_DB = "paas_app", "submit_social_housing"
TARGET_ROLE, TARGET_DB = "rds_admin", "core"
PG_SERVICE = "core-production-postgres"
CSV_SERVICE, EXPORT_SERVICE = "core-production-csv-bucket", "core-production-export-bucket"
MIB = 1024 * 1024


def _secret(prefix: str = "") -> str:
    value = prefix + secrets.token_urlsafe(18)
    register_secret(value)
    return value


def _write_private(path: Path, text: str) -> None:
    """Create a file readable by its owner only (it holds demo credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Sizes:
    organisations: int
    users: int
    lettings_logs: int
    sales_logs: int
    csv_files: int
    export_files: int

    @classmethod
    def for_scale(cls, scale: float) -> Sizes:
        if scale <= 0:
            raise ConfigError("--scale must be greater than 0")

        def n(base: int, minimum: int) -> int:
            return max(minimum, round(base * scale))

        return cls(
            organisations=n(250, 10), users=n(2500, 50), lettings_logs=n(30000, 500), sales_logs=n(10000, 200),
            csv_files=n(240, 10), export_files=n(80, 5),
        )


SCHEMA_SQL = """
CREATE TYPE provider_type AS ENUM ('LA', 'PRP');
CREATE TYPE user_role AS ENUM ('data_provider', 'data_coordinator', 'support');
CREATE TYPE log_status AS ENUM ('not_started', 'in_progress', 'completed', 'pending', 'deleted');

CREATE TABLE organisations (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    provider_type provider_type NOT NULL,
    housing_registration_no text,
    phone text,
    postcode text,
    holds_own_stock boolean NOT NULL DEFAULT true,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text,
    organisation_id bigint NOT NULL REFERENCES organisations (id),
    role user_role NOT NULL,
    is_dpo boolean NOT NULL DEFAULT false,
    encrypted_password text NOT NULL,
    sign_in_count integer NOT NULL DEFAULT 0,
    last_sign_in_at timestamptz,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX index_users_on_organisation_id ON users (organisation_id);
CREATE TABLE lettings_logs (
    id bigserial PRIMARY KEY,
    status log_status NOT NULL DEFAULT 'not_started',
    created_by_id bigint REFERENCES users (id),
    owning_organisation_id bigint REFERENCES organisations (id),
    managing_organisation_id bigint REFERENCES organisations (id),
    startdate date,
    tenancycode text,
    age1 integer,
    sex1 text,
    ecstat1 integer,
    hhmemb integer,
    beds integer,
    brent numeric(10, 2),
    scharge numeric(10, 2),
    period integer,
    postcode_full text,
    la text,
    values_updated_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    answers jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX index_lettings_logs_on_owning_organisation_id ON lettings_logs (owning_organisation_id);
CREATE INDEX index_lettings_logs_on_status_and_startdate ON lettings_logs (status, startdate);
CREATE INDEX index_lettings_logs_on_answers ON lettings_logs USING gin (answers);
CREATE TABLE sales_logs (
    id bigserial PRIMARY KEY,
    status log_status NOT NULL DEFAULT 'not_started',
    created_by_id bigint REFERENCES users (id),
    owning_organisation_id bigint REFERENCES organisations (id),
    saledate date,
    purchid text,
    type integer,
    ownershipsch integer,
    value numeric(12, 2),
    deposit numeric(12, 2),
    mortgage numeric(12, 2),
    postcode_full text,
    la text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    answers jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX index_sales_logs_on_owning_organisation_id ON sales_logs (owning_organisation_id);
CREATE TABLE bulk_uploads (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    log_type text NOT NULL CHECK (log_type IN ('lettings', 'sales')),
    year integer NOT NULL,
    filename text NOT NULL,
    identifier uuid NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);
CREATE VIEW completed_lettings_logs AS
    SELECT id, owning_organisation_id, startdate, brent FROM lettings_logs WHERE status = 'completed';
"""

# Rows are computed server-side (generate_series) and deterministic in g, so a rerun seeds the same data.
DATA_SQL = """
INSERT INTO organisations (name, provider_type, housing_registration_no, phone, postcode, holds_own_stock,
                           created_at, updated_at)
SELECT 'Organisation ' || g || CASE WHEN g % 11 = 0 THEN ' Housing Association – Ŵales' ELSE '' END,
       CASE WHEN g % 3 = 0 THEN 'LA' ELSE 'PRP' END::provider_type,
       'LH' || lpad(g::text, 4, '0'), '0' || (2070000000 + g)::text, 'SW1A ' || (g % 9) || 'AA', g % 5 <> 0,
       timestamptz '2021-04-01 09:00+00' + g * interval '3 hours',
       timestamptz '2024-01-01 00:00+00' + g * interval '1 minute'
FROM generate_series(1, {organisations}) AS g;

INSERT INTO users (email, name, organisation_id, role, is_dpo, encrypted_password, sign_in_count,
                   last_sign_in_at, active, created_at)
SELECT 'user' || g || '@example.org', 'User ' || g, 1 + g % {organisations},
       (enum_range(NULL::user_role))[1 + g % 3], g % 17 = 0, '$2a$12$' || md5(g::text), g % 40,
       CASE WHEN g % 4 = 0 THEN NULL ELSE timestamptz '2024-06-01 00:00+00' + g * interval '7 minutes' END,
       g % 23 <> 0, timestamptz '2022-01-01 00:00+00' + g * interval '1 hour'
FROM generate_series(1, {users}) AS g;

INSERT INTO lettings_logs (status, created_by_id, owning_organisation_id, managing_organisation_id, startdate,
                           tenancycode, age1, sex1, ecstat1, hhmemb, beds, brent, scharge, period,
                           postcode_full, la, values_updated_at, created_at, updated_at, answers)
SELECT (enum_range(NULL::log_status))[1 + (g * 7) % 5], 1 + g % {users}, 1 + g % {organisations},
       1 + (g * 3) % {organisations}, date '2021-04-01' + g % 1400, 'T' || g, 16 + (g * 13) % 70,
       CASE g % 3 WHEN 0 THEN 'F' WHEN 1 THEN 'M' END, 1 + g % 10, 1 + g % 6, 1 + g % 5,
       (80 + (g * 37) % 400) + (g % 100) / 100.0, (g * 7) % 50 + (g % 10) / 10.0, 1 + g % 4,
       'LS' || (1 + g % 28) || ' ' || (g % 9) || 'AB', 'E0800' || lpad((g % 500)::text, 4, '0'),
       CASE WHEN g % 9 = 0 THEN timestamptz '2024-09-01 12:00+00' + g * interval '1 second' END,
       timestamptz '2021-04-01 00:00+00' + g * interval '20 minutes',
       timestamptz '2023-04-01 00:00+00' + g * interval '13 minutes',
       jsonb_build_object(
           'needstype', 1 + g % 2, 'renewal', g % 7 = 0, 'reason', 40 + g % 10,
           'illness', CASE WHEN g % 5 = 0 THEN 'yes' END,
           'housingneeds', jsonb_build_array(g % 3, g % 4),
           'income', jsonb_build_object('net', 100 + g % 900, 'frequency', 1 + g % 3),
           'comment', 'log ' || g || ' ✓ ünïcödé')
FROM generate_series(1, {lettings_logs}) AS g;

INSERT INTO sales_logs (status, created_by_id, owning_organisation_id, saledate, purchid, type, ownershipsch,
                        value, deposit, mortgage, postcode_full, la, created_at, updated_at, answers)
SELECT (enum_range(NULL::log_status))[1 + (g * 3) % 5], 1 + g % {users}, 1 + g % {organisations},
       date '2021-04-01' + g % 1400, 'P' || g, 1 + g % 30, 1 + g % 3,
       100000 + (g::bigint * 7919) % 400000, 5000 + (g * 31) % 50000, 80000 + (g::bigint * 104729) % 300000,
       'M' || (1 + g % 40) || ' ' || (g % 9) || 'XY', 'E0600' || lpad((g % 300)::text, 4, '0'),
       timestamptz '2021-04-01 00:00+00' + g * interval '55 minutes',
       timestamptz '2023-04-01 00:00+00' + g * interval '41 minutes',
       jsonb_build_object('jointpur', 1 + g % 2, 'privacynotice', true, 'buyers',
                          jsonb_build_array(jsonb_build_object('age', 20 + g % 50, 'ecstat', 1 + g % 10)))
FROM generate_series(1, {sales_logs}) AS g;

-- One row per CSV file in the bulk-upload bucket; the identifier is the object key's file name.
INSERT INTO bulk_uploads (user_id, log_type, year, filename, identifier, created_at)
SELECT 1 + g % {users}, CASE WHEN g % 3 = 0 THEN 'sales' ELSE 'lettings' END, 2022 + g % 3,
       'upload-' || g || '.csv', md5(g::text)::uuid, timestamptz '2024-04-01 00:00+00' + g * interval '1 hour'
FROM generate_series(0, {csv_files} - 1) AS g;
"""


class Demo:
    """The demo's services and data. start() → seed() → write_plan(); stop() undoes all of it."""

    def __init__(self, *, scale: float = 1.0, workdir: Path | None = None) -> None:
        self.sizes = Sizes.for_scale(scale)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="paas-migrate-demo-"))
        # The clusters live under workdir; when root, their server runs as `postgres` and must traverse it.
        os.chmod(self.workdir, 0o711)
        self.source_pg: Any = None
        self.target_pg: Any = None
        self.s3: Any = None
        self.source_role_pw = _secret()
        self.target_role_pw = _secret()
        self.source_keys = {"access_key_id": "AKIA" + secrets.token_hex(8).upper(), "secret_access_key": _secret()}
        self.target_keys = {"access_key_id": "AKIA" + secrets.token_hex(8).upper(), "secret_access_key": _secret()}
        suffix = secrets.token_hex(4)
        self.buckets = {
            "csv": (f"paas-s3-broker-prod-lon-{suffix}-csv", "core-production-bulk-upload"),
            "export": (f"paas-s3-broker-prod-lon-{suffix}-export", "core-production-cds-export"),
        }
        self.objects: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.plan_path = self.workdir / "plan.toml"
        self.vcap_path = self.workdir / "vcap-services.json"

    # ---- services ----

    def start(self, reporter: Reporter | None = None) -> Demo:
        """Start both clusters and the S3 API server (in parallel: initdb is the slow part)."""
        from migrate.local.postgres import LocalPostgres
        from migrate.local.s3server import LocalS3Server

        rep = reporter or NullReporter()
        rep.note(f"demo: starting two PostgreSQL clusters and an S3 API server on 127.0.0.1 (work directory "
                 f"{self.workdir})")
        self.source_pg = LocalPostgres("demo-paas", base_dir=self.workdir / "pg-paas", password=_secret())
        self.target_pg = LocalPostgres("demo-aws", base_dir=self.workdir / "pg-aws", password=_secret())
        self.s3 = LocalS3Server(log_path=self.workdir / "s3-server.log")
        self._save_state()  # before starting anything, so --stop can always find what to stop
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(self.source_pg.start), pool.submit(self.target_pg.start), pool.submit(self.s3.start)]
            errors = [f.exception() for f in futures]
        self._save_state()
        for err in errors:
            if err is not None:
                raise err
        self.source_pg.create_role(SOURCE_ROLE, self.source_role_pw)
        self.source_pg.create_database(SOURCE_DB, owner=SOURCE_ROLE)
        self.target_pg.create_role(TARGET_ROLE, self.target_role_pw)
        self.target_pg.create_database(TARGET_DB, owner=TARGET_ROLE)
        rep.note(f"demo: PaaS-side PostgreSQL on port {self.source_pg.port}, AWS-side on {self.target_pg.port}, "
                 f"S3 API at {self.s3.endpoint_url}")
        return self

    def stop(self) -> None:
        """Stop every service this demo started and delete its work directory (idempotent)."""
        for name in ("s3", "source_pg", "target_pg"):
            svc = getattr(self, name)
            if svc is not None:
                try:
                    svc.stop()
                except Exception as exc:  # keep stopping the others
                    log.warning("could not stop the demo's %s: %s", name, exc)
                setattr(self, name, None)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _save_state(self) -> None:
        state: dict[str, Any] = {"clusters": []}
        for pg in (self.source_pg, self.target_pg):
            if pg is not None:
                state["clusters"].append({"name": pg.name, "base_dir": str(pg.base_dir), "bindir": str(pg.bindir),
                                          "port": pg.port})
        proc = getattr(self.s3, "_proc", None)
        if proc is not None:
            state["s3_pid"] = proc.pid
        _write_private(self.workdir / STATE_FILE, json.dumps(state, indent=2) + "\n")

    # ---- data ----

    def source_url(self) -> str:
        return self.source_pg.url(SOURCE_DB, SOURCE_ROLE, self.source_role_pw)

    def target_url(self) -> str:
        return self.target_pg.url(TARGET_DB, TARGET_ROLE, self.target_role_pw)

    def seed(self, reporter: Reporter | None = None) -> None:
        """Create the application's schema and rows on the source, and fill the source buckets."""
        rep = reporter or NullReporter()
        s = self.sizes
        rep.note(f"demo: seeding {s.lettings_logs:,} lettings logs, {s.sales_logs:,} sales logs, {s.users:,} users, "
                 f"{s.organisations:,} organisations")
        import psycopg

        with psycopg.connect(self.source_url(), autocommit=True) as conn:
            conn.execute(SCHEMA_SQL.encode())
            conn.execute(DATA_SQL.format(**s.__dict__).encode())
        self._seed_buckets(rep)

    def _s3_client(self, keys: dict[str, str]) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.s3.endpoint_url, region_name=REGION,
                            aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"])

    def _seed_buckets(self, rep: Reporter) -> None:
        src, tgt = self._s3_client(self.source_keys), self._s3_client(self.target_keys)
        where = {"CreateBucketConfiguration": {"LocationConstraint": REGION}}
        for source_bucket, target_bucket in self.buckets.values():
            src.create_bucket(Bucket=source_bucket, **where)
            tgt.create_bucket(Bucket=target_bucket, **where)  # made by Terraform in real life, empty
        objects = list(self._csv_objects()) + list(self._export_objects())
        rep.note(f"demo: uploading {len(objects) + 2} objects to the PaaS-side buckets")
        rep.on_start("demo: seed objects", total=len(objects) + 2, unit="objects")

        def put(item: tuple[str, str, bytes, str]) -> None:
            bucket, key, body, ctype = item
            src.put_object(Bucket=bucket, Key=key, Body=body, ContentType=ctype)
            rep.on_progress("demo: seed objects", 1)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(put, objects))
        # One multipart object per bucket (their ETags end in -N: verified part by part).
        csv_bucket, export_bucket = self.buckets["csv"][0], self.buckets["export"][0]
        self._multipart(src, csv_bucket, "lettings/2024/full-year-upload.csv", self._big_csv(11 * MIB), "text/csv")
        rep.on_progress("demo: seed objects", 1)
        self._multipart(src, export_bucket, "core_2023_2024_apr_mar_f0001_full.zip", self._big_zip(), "application/zip")
        rep.on_progress("demo: seed objects", 1)
        rep.on_done("demo: seed objects")

    def _count(self, bucket: str, size: int) -> None:
        self.objects[bucket] = self.objects.get(bucket, 0) + 1
        self.bytes[bucket] = self.bytes.get(bucket, 0) + size

    def _csv_objects(self) -> Iterator[tuple[str, str, bytes, str]]:
        bucket = self.buckets["csv"][0]
        rng = random.Random(8)
        for i in range(self.sizes.csv_files):
            log_type = "lettings" if i % 3 else "sales"
            year = 2022 + i % 3
            ident = uuid.UUID(hashlib.md5(str(i).encode()).hexdigest())  # = md5(i::text)::uuid in bulk_uploads
            lines = [
                "Field number,1,2,3,4,5,6,7,8,9,10",
                "Question,Owning organisation,Managing organisation,Tenancy start date,Tenant code,Age,Sex,"
                "Economic status,Household members,Bedrooms,Basic rent",
            ]
            for r in range(20 + rng.randrange(200)):
                lines.append(f"{1 + r % 9},LH{r % 250:04d},LH{(r * 3) % 250:04d},{1 + r % 28:02d}/04/{year},"
                             f"T{i}-{r},{16 + r % 70},{'FM'[r % 2]},{1 + r % 10},{1 + r % 6},{1 + r % 5},"
                             f"{80 + r % 400}.{r % 100:02d}")
            body = ("\n".join(lines) + "\n").encode()
            self._count(bucket, len(body))
            yield bucket, f"{log_type}/{year}/{ident}.csv", body, "text/csv"

    def _export_xml(self, n: int, rows: int) -> bytes:
        forms = "".join(
            f"<Form><id>{n * 1000 + r}</id><status>completed</status><startdate>2024-04-{1 + r % 28:02d}</startdate>"
            f"<brent>{80 + r % 400}.00</brent><la>E0800{r % 500:04d}</la></Form>"
            for r in range(rows)
        )
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<Group><Group>{forms}</Group></Group>\n'.encode()

    def _export_objects(self) -> Iterator[tuple[str, str, bytes, str]]:
        bucket = self.buckets["export"][0]
        for i in range(self.sizes.export_files):
            name = f"core_2024_2025_apr_mar_f{i // 10 + 1:04d}_inc{i + 1:04d}"
            xml = self._export_xml(i, 30 + i % 50)
            self._count(bucket, len(xml))
            yield bucket, f"{name}_pt001.xml", xml, "application/xml"
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(f"{name}_pt001.xml", xml)
                zf.writestr("manifest.xml", f"<Manifest><Count>{30 + i % 50}</Count></Manifest>")
            body = buf.getvalue()
            self._count(bucket, len(body))
            yield bucket, f"{name}.zip", body, "application/zip"
        manifest = b"<Report><Exports>" + b"".join(
            f"<Export>core_2024_2025_apr_mar_f{i // 10 + 1:04d}_inc{i + 1:04d}.zip</Export>".encode()
            for i in range(self.sizes.export_files)
        ) + b"</Exports></Report>\n"
        self._count(bucket, len(manifest))
        yield bucket, "Manifest_2024_2025.xml", manifest, "application/xml"

    def _big_csv(self, size: int) -> bytes:
        row = b"1,LH0001,LH0002,01/04/2024,T-big,42,F,1,3,2,512.34\n"
        return (row * (size // len(row) + 1))[:size]

    def _big_zip(self) -> bytes:
        # Stored (not deflated) random-ish bytes, so the archive really is above the 5 MiB part size.
        buf = io.BytesIO()
        rng = random.Random(12)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("core_2023_2024_apr_mar_f0001_full.xml", rng.randbytes(7 * MIB))
        return buf.getvalue()

    def _multipart(self, client: Any, bucket: str, key: str, body: bytes, ctype: str) -> None:
        part = 5 * MIB
        upload = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=ctype)
        parts = []
        for n, start in enumerate(range(0, len(body), part), 1):
            resp = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=n,
                                      Body=body[start:start + part])
            parts.append({"PartNumber": n, "ETag": resp["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                         MultipartUpload={"Parts": parts})
        self._count(bucket, len(body))

    # ---- the plan file, VCAP_SERVICES and the run's environment ----

    def write_plan(self) -> tuple[Path, dict[str, str]]:
        """Write plan.toml (references only, no secret) and vcap-services.json (0600), and store the
        AWS-side database credentials as an RDS-style secret in the S3 server's Secrets Manager.

        Returns the plan path and the environment `run` resolves references against.
        """
        vcap = {
            "postgres": [{
                "name": PG_SERVICE, "label": "postgres", "plan": "small-13", "tags": ["postgres", "relational"],
                "credentials": {
                    "uri": f"postgres://{SOURCE_ROLE}:{self.source_role_pw}@127.0.0.1:{self.source_pg.port}/{SOURCE_DB}",
                    "host": "127.0.0.1", "port": self.source_pg.port, "name": SOURCE_DB,
                    "username": SOURCE_ROLE, "password": self.source_role_pw,
                },
            }],
            "aws-s3-bucket": [
                {"name": service, "label": "aws-s3-bucket", "plan": "default", "tags": ["s3"],
                 "credentials": {"bucket_name": self.buckets[label][0], "aws_region": REGION,
                                 "aws_access_key_id": self.source_keys["access_key_id"],
                                 "aws_secret_access_key": self.source_keys["secret_access_key"],
                                 "deploy_env": "prod-lon"}}
                for label, service in (("csv", CSV_SERVICE), ("export", EXPORT_SERVICE))
            ],
        }
        _write_private(self.vcap_path, json.dumps(vcap, indent=2) + "\n")

        secret_name = "core/production/rds-master"
        sm = self._aws_client("secretsmanager")
        sm.create_secret(Name=secret_name, SecretString=json.dumps({
            "engine": "postgres", "host": "127.0.0.1", "port": self.target_pg.port, "dbname": TARGET_DB,
            "username": TARGET_ROLE, "password": self.target_role_pw,
        }))
        endpoint = self.s3.endpoint_url
        buckets = "".join(
            f"""
[environments.{ENV_NAME}.buckets.{label}]
source = "vcap:{service}"
source_endpoint_url = "{endpoint}"
target = "s3://{self.buckets[label][1]}"
target_endpoint_url = "{endpoint}"
target_region = "{REGION}"
target_credentials = {{ access_key_id = "env:DEMO_TARGET_AWS_ACCESS_KEY_ID", \
secret_access_key = "env:DEMO_TARGET_AWS_SECRET_ACCESS_KEY" }}
mode = "{mode}"
"""
            # The PaaS bucket lives in another account: its key reads it, the task role writes the target
            # (stream). The export bucket shows `auto`, which picks server-side when the target may read.
            for label, service, mode in (("csv", CSV_SERVICE, "stream"), ("export", EXPORT_SERVICE, "auto"))
        )
        plan = f"""# Written by `paas-migrate demo`. No secret in here: only references to where they are.
[defaults]
jobs = 2
workers = 16

[environments.{ENV_NAME}.database]
source = "vcap:{PG_SERVICE}"
target = "secretsmanager:{secret_name}"
{buckets}"""
        self.plan_path.write_text(plan)
        return self.plan_path, self.run_environ()

    def _aws_client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.s3.endpoint_url, region_name=REGION,
                            aws_access_key_id=self.target_keys["access_key_id"],
                            aws_secret_access_key=self.target_keys["secret_access_key"])

    def run_environ(self) -> dict[str, str]:
        """What the process running the migration sees: the PaaS side's VCAP file and the AWS side's
        credentials (which an ECS task would get from its role)."""
        env = dict(os.environ)
        env.update({
            "MIGRATE_VCAP_SERVICES_FILE": str(self.vcap_path),
            "MIGRATE_AWS_ENDPOINT_URL": self.s3.endpoint_url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.target_keys["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self.target_keys["secret_access_key"],
            "DEMO_TARGET_AWS_ACCESS_KEY_ID": self.target_keys["access_key_id"],
            "DEMO_TARGET_AWS_SECRET_ACCESS_KEY": self.target_keys["secret_access_key"],
        })
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_SESSION_TOKEN", None)
        return env

    # ---- --keep ----

    def write_connection_files(self) -> None:
        """pgpass and AWS credentials files (0600) so the kept services can be used without any
        password being printed."""
        lines = [
            f"127.0.0.1:{self.source_pg.port}:*:{SOURCE_ROLE}:{self.source_role_pw}",
            f"127.0.0.1:{self.target_pg.port}:*:{TARGET_ROLE}:{self.target_role_pw}",
            f"127.0.0.1:{self.source_pg.port}:*:postgres:{self.source_pg.password}",
            f"127.0.0.1:{self.target_pg.port}:*:postgres:{self.target_pg.password}",
        ]
        _write_private(self.workdir / "pgpass", "\n".join(lines) + "\n")
        creds = "".join(
            f"[{profile}]\naws_access_key_id = {k['access_key_id']}\naws_secret_access_key = {k['secret_access_key']}\n"
            f"region = {REGION}\n\n"
            for profile, k in (("demo-paas", self.source_keys), ("demo-aws", self.target_keys))
        )
        _write_private(self.workdir / "aws-credentials", creds)
        keys = ("MIGRATE_VCAP_SERVICES_FILE", "MIGRATE_AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "DEMO_TARGET_AWS_ACCESS_KEY_ID", "DEMO_TARGET_AWS_SECRET_ACCESS_KEY")
        env = self.run_environ()
        _write_private(self.workdir / "run.env", "".join(f"export {k}={shlex.quote(env[k])}\n" for k in keys))

    def connection_help(self) -> list[str]:
        """How to reach the kept services: commands that read passwords from 0600 files."""
        self.write_connection_files()
        wd = self.workdir
        pgpass = f"PGPASSFILE={wd / 'pgpass'}"
        aws = f"AWS_SHARED_CREDENTIALS_FILE={wd / 'aws-credentials'} aws --endpoint-url {self.s3.endpoint_url}"
        return [
            f"The demo's services are still running; their credentials are in {wd} (mode 0600).",
            f"  PaaS-side database: {pgpass} psql 'postgresql://{SOURCE_ROLE}@127.0.0.1:{self.source_pg.port}/{SOURCE_DB}'",
            f"  AWS-side database:  {pgpass} psql 'postgresql://{TARGET_ROLE}@127.0.0.1:{self.target_pg.port}/{TARGET_DB}'",
            f"  PaaS-side buckets:  {aws} --profile demo-paas s3 ls s3://{self.buckets['csv'][0]}",
            f"  AWS-side buckets:   {aws} --profile demo-aws s3 ls s3://{self.buckets['csv'][1]}",
            f"  plan file:          {self.plan_path}",
            f"  plan it again:      (. {wd / 'run.env'} && paas-migrate run --plan {self.plan_path} "
            f"--env {ENV_NAME} --dry-run)",
            f"Stop everything and delete {wd}:  paas-migrate demo --stop {wd}",
        ]


def stop_kept(workdir: str | Path) -> list[str]:
    """Stop the services a `demo --keep` left running in `workdir` and delete it.

    Refuses a directory without the demo's state file (it never deletes anything else). Returns
    what it did, one line each.
    """
    from migrate.local.postgres import LocalPostgres

    wd = Path(workdir)
    state_path = wd / STATE_FILE
    if not state_path.is_file():
        raise ConfigError(f"{wd} is not a demo directory (no {STATE_FILE})",
                          hint="give the directory `demo --keep` printed")
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {state_path}: {exc}") from None
    done: list[str] = []
    for c in state.get("clusters", []):
        pg = LocalPostgres(c["name"], base_dir=c["base_dir"], bindir=Path(c["bindir"]), port=c["port"])
        pg.started = (Path(c["base_dir"]) / "data" / "postmaster.pid").exists()
        if pg.started:
            pg.stop(remove=False)
            done.append(f"stopped the {c['name']} PostgreSQL cluster (port {c['port']})")
    pid = state.get("s3_pid")
    if isinstance(pid, int) and _is_moto(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)  # return only once it has exited (its port is free again)
            done.append(f"stopped the S3 API server (pid {pid})")
    shutil.rmtree(wd, ignore_errors=True)
    done.append(f"deleted {wd}")
    return done


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until the S3 server `pid` (not our child) has exited; SIGKILL it after `timeout` seconds."""
    import time

    killed = False
    deadline = time.monotonic() + timeout
    while _is_moto(pid):  # an exited (zombie) process has an empty cmdline
        if time.monotonic() >= deadline:
            if killed:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + timeout
        time.sleep(0.05)


def _is_moto(pid: int) -> bool:
    # Never signal a process that merely reused the pid.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"moto.server" in cmdline


def check_tools() -> None:
    """Fail early, with the fix, when the demo cannot run here."""
    from migrate.local.postgres import find_bindir

    if find_bindir() is None:
        raise ToolError("the demo needs the PostgreSQL server binaries (initdb, pg_ctl, postgres)",
                        hint="apt-get install postgresql, or set MIGRATE_PG_BINDIR")
    bindir = find_bindir()
    if shutil.which("pg_dump") is None and not (bindir is not None and (bindir / "pg_dump").exists()):
        raise ToolError("the demo needs pg_dump and pg_restore", hint="apt-get install postgresql-client")
