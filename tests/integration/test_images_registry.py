"""The image builder path for real: buildah builds a FROM-scratch image through the same code as
the real images, `images push` sends it to a real registry (Debian's docker-registry on loopback),
and the manifest is read back over HTTP and checked against what push printed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import ROOT, run_cli
from tests.support.registry import LocalRegistry
from tests.support.services import unavailable

pytestmark = pytest.mark.registry

FIXTURE = ROOT / "tests" / "fixtures" / "scratch-image"
NAME = "s3-migration"  # the scratch image stands in for one of our targets


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Builder options shared by build and push: buildah with its own store under a temp dir.

    As root inside a container, buildah needs the vfs driver (no overlay mounts) and chroot
    isolation for RUN steps.
    """
    if shutil.which("buildah") is None:
        unavailable("buildah is not installed (apt-get install buildah)")
    root = tmp_path_factory.mktemp("buildah-store")
    return ["--builder", "buildah", "--storage-driver", "vfs", "--storage-root", str(root), "--isolation", "chroot"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if shutil.which("docker-registry") is None:
        unavailable("docker-registry is not installed (apt-get install docker-registry)")
    try:
        reg = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    except RuntimeError as exc:
        unavailable(f"local registry could not start: {exc}")
    yield reg
    reg.stop()


def _build(store: list[str], *tags: str, dockerfile: Path = FIXTURE / "Dockerfile") -> dict:
    tag_args = [a for t in tags for a in ("--tag", t)]
    res = run_cli("images", "build", NAME, "--file", str(dockerfile), "--context", str(dockerfile.parent),
                  *tag_args, *store, "--json", timeout=300)
    if res.code != 0 and "error running container" in res.err:
        unavailable(f"buildah cannot build here: {res.err.strip()[-300:]}")
    assert res.code == 0, res.err
    (built,) = json.loads(res.out)["built"]
    return built


def _pushed_lines(out: str) -> dict[str, str]:
    pushed = {}
    for line in out.splitlines():
        if line.startswith("pushed "):
            _, ref, digest = line.split()
            pushed[ref] = digest
    return pushed


def test_build_push_and_read_the_manifest_back(store: list[str], registry: LocalRegistry) -> None:
    built = _build(store, "it-1", "it-extra")
    assert built["refs"] == [f"localhost/{NAME}:it-1", f"localhost/{NAME}:it-extra"]
    assert built["image_id"].startswith("sha256:") and len(built["image_id"]) == 71

    res = run_cli("images", "push", NAME, "--registry", registry.host, "--no-tls-verify",
                  "--tag", "it-1", "--tag", "it-extra", *store, timeout=300)
    assert res.code == 0, res.err
    pushed = _pushed_lines(res.out)
    ref = f"{registry.host}/{NAME}:it-1"
    assert set(pushed) == {ref, f"{registry.host}/{NAME}:it-extra"}

    manifest = registry.manifest(NAME, "it-1")
    body = registry.manifest_bytes(NAME, "it-1")
    # The digest push printed is the one the registry serves, and it is the hash of the bytes served.
    assert manifest.digest == pushed[ref]
    assert "sha256:" + hashlib.sha256(body).hexdigest() == pushed[ref]
    assert pushed[f"{registry.host}/{NAME}:it-extra"] == pushed[ref]  # one image, two tags
    assert {"it-1", "it-extra"} <= set(registry.tags(NAME))
    # The manifest is the image we built: its config is the build's image ID ...
    assert manifest.body["config"]["digest"] == built["image_id"]
    # ... and its one layer holds the fixture's file.
    (layer,) = manifest.body["layers"]
    _, blob = registry._get(f"/v2/{NAME}/blobs/{layer['digest']}")
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "payload.txt")
        content = tar.extractfile(member).read()  # type: ignore[union-attr]
    assert content == (FIXTURE / "payload.txt").read_bytes()
    config = json.loads(registry._get(f"/v2/{NAME}/blobs/{built['image_id']}")[1])
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == NAME


def test_push_with_login_sends_the_password_on_stdin(
    store: list[str], tmp_path: Path, registry: LocalRegistry
) -> None:
    password = "registry-pw-" + tmp_path.name[-8:]
    secured = LocalRegistry(tmp_path / "secured", users={"ci": password})
    try:
        secured.start()
    except RuntimeError as exc:
        unavailable(f"registry with htpasswd auth could not start: {exc}")
    try:
        _build(store, "auth-1")
        common = ["images", "push", NAME, "--registry", secured.host, "--no-tls-verify", "--tag", "auth-1",
                  "--username", "ci", *store]
        bad = run_cli(*common, env={"MIGRATE_REGISTRY_PASSWORD": "wrong-password"}, timeout=120)
        assert bad.code == 1
        assert f"login to {secured.host} failed" in bad.err
        assert "Traceback" not in bad.err and "wrong-password" not in bad.output
        with pytest.raises(urllib.error.HTTPError):
            secured.manifest(NAME, "auth-1")  # nothing was pushed

        res = run_cli(*common, env={"MIGRATE_REGISTRY_PASSWORD": password}, timeout=300)
        assert res.code == 0, res.err
        assert password not in res.output
        (digest,) = _pushed_lines(res.out).values()
        assert secured.manifest(NAME, "auth-1").digest == digest
    finally:
        secured.stop()


def test_pushing_a_tag_that_was_never_built_changes_nothing(store: list[str], registry: LocalRegistry) -> None:
    res = run_cli("images", "push", NAME, "--registry", registry.host, "--no-tls-verify",
                  "--tag", "never-built", *store, timeout=120)
    assert res.code == 1
    assert f"no local image localhost/{NAME}:never-built" in res.err
    assert "images build" in res.err
    assert "Traceback" not in res.err
    try:
        tags = registry.tags(NAME)
    except urllib.error.HTTPError:  # the repository does not even exist: nothing pushed either
        tags = []
    assert "never-built" not in tags


def test_a_failing_build_is_one_clear_line(store: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM scratch\nCOPY does-not-exist.txt /x\n")
    res = run_cli("images", "build", NAME, "--file", str(broken), "--context", str(tmp_path),
                  "--tag", "broken", *store, timeout=120)
    assert res.code == 1
    lines = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.err
    assert "buildah build of s3-migration failed" in lines[0]
    assert "does-not-exist.txt" in lines[0]
    assert "Traceback" not in res.err
