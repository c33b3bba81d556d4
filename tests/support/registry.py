"""A real container registry on loopback for the image tests: Debian's `docker-registry`
(distribution v2.8) with a temporary config and storage, optionally behind htpasswd auth."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from migrate.local import stop_process
from migrate.local.postgres import free_port

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def bcrypt_hash(password: str) -> str | None:
    """An htpasswd-compatible bcrypt hash (the only scheme the registry accepts), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # removed in Python 3.13; glibc's libcrypt does bcrypt on Debian
        # 2^4 rounds: the registry checks the hash on every request, keep it cheap in tests.
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
        if hashed and hashed.startswith("$2"):
            return hashed
    except (ImportError, AttributeError, ValueError):
        pass
    htpasswd = shutil.which("htpasswd")
    if htpasswd:
        proc = subprocess.run([htpasswd, "-nbB", "-C", "4", "u", password], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.strip().split(":", 1)[1]
    return None


@dataclass
class Manifest:
    digest: str
    media_type: str
    body: dict


class LocalRegistry:
    """`docker-registry serve CONFIG` on 127.0.0.1:<free port>, plain HTTP, storage under `workdir`."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.users = users or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._auth: str | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.workdir / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
            "  secret: local-registry-test-only",
        ]
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            entries = []
            for user, password in self.users.items():
                hashed = bcrypt_hash(password)
                if hashed is None:
                    raise RuntimeError("cannot make a bcrypt hash (no crypt module, no htpasswd binary)")
                entries.append(f"{user}:{hashed}")
            htpasswd.write_text("\n".join(entries) + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: test-registry", f"    path: {htpasswd}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0) -> LocalRegistry:
        exe = shutil.which("docker-registry")
        if exe is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(self._config())
        log = open(self.workdir / "registry.log", "ab")  # noqa: SIM115
        self._proc = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=log, start_new_session=True)
        log.close()
        if self.users:
            user, password = next(iter(self.users.items()))
            self.set_auth(user, password)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited at start: {self.log_tail()}")
            try:
                self._get("/v2/")
                return self
            except urllib.error.HTTPError:
                return self  # it answers (401 without credentials is an answer)
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url} within {timeout:.0f}s")

    def log_tail(self) -> str:
        try:
            return (self.workdir / "registry.log").read_text()[-800:]
        except OSError:
            return ""

    def set_auth(self, user: str, password: str) -> None:
        import base64

        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _get(self, path: str, headers: dict[str, str] | None = None) -> tuple[dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=dict(headers or {}))
        if self._auth:
            req.add_header("Authorization", self._auth)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(resp.headers.items()), resp.read()

    def manifest(self, name: str, reference: str) -> Manifest:
        """GET /v2/NAME/manifests/REF with the Accept headers a client sends (404 → HTTPError)."""
        headers, body = self._get(f"/v2/{name}/manifests/{reference}", {"Accept": MANIFEST_TYPES})
        lower = {k.lower(): v for k, v in headers.items()}
        return Manifest(lower.get("docker-content-digest", ""), lower.get("content-type", ""), json.loads(body))

    def manifest_bytes(self, name: str, reference: str) -> bytes:
        return self._get(f"/v2/{name}/manifests/{reference}", {"Accept": MANIFEST_TYPES})[1]

    def tags(self, name: str) -> list[str]:
        return json.loads(self._get(f"/v2/{name}/tags/list")[1]).get("tags") or []

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
