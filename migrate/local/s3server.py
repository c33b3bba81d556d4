"""A real S3 API over HTTP on loopback: moto's server, in its own process (so that it does not share
our GIL), for `demo`, the tests and the benchmarks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from migrate.errors import ToolError
from migrate.local import stop_process
from migrate.local.postgres import free_port

log = logging.getLogger(__name__)

# Two distinct credential sets, as a PaaS service key (source) and an ECS task role (target) would be.
SOURCE_KEYS = {"access_key_id": "AKIDSOURCEEXAMPLE000", "secret_access_key": "source-secret-key-for-local-tests"}
TARGET_KEYS = {"access_key_id": "AKIDTARGETEXAMPLE000", "secret_access_key": "target-secret-key-for-local-tests"}
REGION = "eu-west-2"


class LocalS3Server:
    """`python -m moto.server` on 127.0.0.1:<free port>. Every AWS API moto implements is served."""

    def __init__(self, port: int | None = None, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalS3Server:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise ToolError("moto[server] is not installed", hint="pip install 'moto[server]'") from None
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out, stderr=out, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ToolError(f"the local S3 server exited at start (code {self._proc.returncode})")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise ToolError(f"the local S3 server did not answer on {self.endpoint_url} within {timeout:.0f}s")
        log.info("local S3 API server on %s (pid %s)", self.endpoint_url, self._proc.pid)
        return self

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str = "s3", keys: dict[str, str] | None = None):
        import boto3

        k = keys or SOURCE_KEYS
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=k["access_key_id"],
            aws_secret_access_key=k["secret_access_key"],
        )
