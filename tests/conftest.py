"""Session-scoped real services (two PostgreSQL clusters, an S3 API server over HTTP) and
per-test fresh databases and buckets."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migrate.config import S3CopyConfig, S3Side
from migrate.local.s3server import REGION, SOURCE_KEYS, TARGET_KEYS, LocalS3Server
from tests.support.services import RDS_PASSWORD, RDS_USER, DbPair, new_db_pair, start_cluster, unavailable

os.environ.setdefault("MIGRATE_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def pg_source() -> Iterator[Any]:
    cluster = start_cluster("source")
    print(f"\n[services] source PostgreSQL cluster up on port {cluster.port}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pg_target() -> Iterator[Any]:
    cluster = start_cluster("target")
    cluster.create_role(RDS_USER, RDS_PASSWORD)
    print(f"\n[services] target PostgreSQL cluster up on port {cluster.port}")
    yield cluster
    cluster.stop()


@pytest.fixture
def dbs(pg_source: Any, pg_target: Any) -> Iterator[DbPair]:
    """A fresh, empty source database and a fresh target database owned by a non-superuser."""
    pair = new_db_pair(pg_source, pg_target)
    yield pair
    pg_source.drop_database(pair.source_db)
    pg_target.drop_database(pair.target_db)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3Server]:
    try:
        server = LocalS3Server().start()
    except Exception as exc:
        unavailable(f"local S3 API server (moto) could not start: {exc}")
    print(f"\n[services] S3 API server up at {server.endpoint_url}")
    yield server
    server.stop()


@dataclass
class BucketPair:
    server: LocalS3Server
    source_bucket: str
    target_bucket: str
    source: Any  # boto3 client with the source credentials
    target: Any  # boto3 client with the target credentials

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def env(self) -> dict[str, str]:
        """MIGRATE_* variables giving each side its own credentials."""
        return {
            "MIGRATE_SOURCE_AWS_ACCESS_KEY_ID": SOURCE_KEYS["access_key_id"],
            "MIGRATE_SOURCE_AWS_SECRET_ACCESS_KEY": SOURCE_KEYS["secret_access_key"],
            "MIGRATE_TARGET_AWS_ACCESS_KEY_ID": TARGET_KEYS["access_key_id"],
            "MIGRATE_TARGET_AWS_SECRET_ACCESS_KEY": TARGET_KEYS["secret_access_key"],
            "MIGRATE_SOURCE_AWS_REGION": REGION,
            "MIGRATE_TARGET_AWS_REGION": REGION,
        }

    def config(self, state_dir: Path, **kw: Any) -> S3CopyConfig:
        """A copy (or verify) configuration from source to target bucket, each side with its own keys."""
        env = self.env()
        src = S3Side.build("source", f"s3://{self.source_bucket}", endpoint_url=self.endpoint_url, environ=env)
        tgt = S3Side.build("target", f"s3://{self.target_bucket}", endpoint_url=self.endpoint_url, environ=env)
        return S3CopyConfig(source=src, target=tgt, state_dir=state_dir, **kw)

    def put_multipart(self, key: str, sizes: list[int], **extra: Any) -> bytes:
        """A multipart object in the source bucket with parts of these sizes; returns its bytes."""
        client, bucket = self.source, self.source_bucket
        up = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        parts, whole = [], b""
        for i, size in enumerate(sizes, 1):
            body = hashlib.sha256(f"{key}{i}".encode()).digest() * (size // 32) + b"x" * (size % 32)
            whole += body
            r = client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=i, Body=body)
            parts.append({"PartNumber": i, "ETag": r["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                         MultipartUpload={"Parts": parts})
        return whole

    def cli_args(self, state_dir: Path, *extra: str) -> list[str]:
        """The same as command-line options (the keys come from env())."""
        return ["--source", f"s3://{self.source_bucket}", "--target", f"s3://{self.target_bucket}",
                "--source-endpoint-url", self.endpoint_url, "--target-endpoint-url", self.endpoint_url,
                "--state-dir", str(state_dir), *extra]


@pytest.fixture
def buckets(s3_server: LocalS3Server) -> BucketPair:
    """Fresh, empty source and target buckets, each reached with its own credential set."""
    suffix = uuid.uuid4().hex[:12]
    src_client = s3_server.client("s3", SOURCE_KEYS)
    tgt_client = s3_server.client("s3", TARGET_KEYS)
    cfg = {"CreateBucketConfiguration": {"LocationConstraint": REGION}}
    src_client.create_bucket(Bucket=f"source-{suffix}", **cfg)
    tgt_client.create_bucket(Bucket=f"target-{suffix}", **cfg)
    return BucketPair(s3_server, f"source-{suffix}", f"target-{suffix}", src_client, tgt_client)
