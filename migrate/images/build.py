"""Building the db-migration and s3-migration images with whichever builder this machine has.

docker (when its daemon answers), podman or buildah: all three take the same Dockerfile and the
same `build -f FILE -t REF --iidfile F CONTEXT` shape, so one code path builds the real images and
the test image. External programs run with argv lists (never a shell); their output is streamed
to the log, and a failure becomes one ToolError line (the builder's last error line).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from migrate import __version__
from migrate.config import redact
from migrate.errors import ConfigError, ToolError
from migrate.progress import NullReporter, Reporter

log = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("db-migration", "s3-migration")
BUILDERS: tuple[str, ...] = ("docker", "podman", "buildah")
# Local names carry an explicit registry part so that docker, podman and buildah all store the
# image under the same reference (buildah/podman would otherwise prefix "localhost/" themselves).
LOCAL_REGISTRY = "localhost"
SOURCE_ROOT = Path(__file__).resolve().parents[2]

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


@dataclass(frozen=True)
class Builder:
    """A container builder program and the storage options it is run with.

    `storage_driver`, `storage_root` and `isolation` only apply to podman and buildah (docker keeps
    its storage in the daemon). Running buildah as root inside a container usually needs
    `storage_driver="vfs"` and `isolation="chroot"`.
    """

    kind: str
    executable: str
    storage_driver: str | None = None
    storage_root: Path | None = None
    isolation: str | None = None

    @property
    def daemonless(self) -> bool:
        return self.kind in ("podman", "buildah")

    def global_args(self) -> list[str]:
        if not self.daemonless:
            return []
        args: list[str] = []
        if self.storage_root is not None:
            # containers/storage wants a root (layers) and a runroot (locks, mounts); keep both
            # under the one directory the user chose so that build and push see the same store.
            args += ["--root", str(self.storage_root / "storage"), "--runroot", str(self.storage_root / "run")]
        if self.storage_driver:
            args += ["--storage-driver", self.storage_driver]
        return args

    def argv(self, *args: str) -> list[str]:
        return [self.executable, *self.global_args(), *args]


@dataclass(frozen=True)
class BuildSpec:
    """One image to build: its name (the local repository), Dockerfile, context, tags and options."""

    name: str
    dockerfile: Path
    context: Path
    tags: tuple[str, ...]
    platform: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def refs(self) -> list[str]:
        return [local_ref(self.name, t) for t in self.tags]


@dataclass(frozen=True)
class BuiltImage:
    name: str
    refs: tuple[str, ...]
    image_id: str
    builder: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "refs": list(self.refs), "image_id": self.image_id, "builder": self.builder}


def local_ref(name: str, tag: str) -> str:
    return f"{LOCAL_REGISTRY}/{name}:{tag}"


def expand_targets(target: str) -> list[str]:
    if target == "all":
        return list(TARGETS)
    if target not in TARGETS:
        raise ConfigError(f"unknown image {target!r}", hint="choose db-migration, s3-migration or all")
    return [target]


def validate_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise ConfigError(f"invalid image tag {tag!r}", hint="letters, digits, '_', '.', '-'; at most 128")
    return tag


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"invalid image name {name!r}", hint="lower-case letters, digits, '.', '_', '-', '/'")
    return name


def parse_build_args(pairs: Iterable[str]) -> dict[str, str]:
    """`K=V` strings to a dict. Build args end up in the image history: never pass a secret."""
    from migrate.config import register_secret
    from migrate.ecs.taskdef import looks_secret

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--build-arg {pair.split('=')[0]!r}… is not KEY=VALUE")
        why = looks_secret(key, value)
        if why:
            register_secret(value)
            raise ConfigError(f"--build-arg {key} looks like a secret ({why}); build arguments stay in the"
                              " image's history", hint="give secrets to the task at run time (task definition secrets)")
        out[key] = value
    return out


def git_short_sha(root: Path = SOURCE_ROOT) -> str | None:
    """The checkout's short commit id, or None outside a git checkout. Read-only."""
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return None
    try:
        proc = subprocess.run(
            [git, "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and sha else None


def default_tags(root: Path = SOURCE_ROOT) -> list[str]:
    """The package version, plus the git short SHA when building from a checkout."""
    tags = [__version__]
    sha = git_short_sha(root)
    if sha:
        tags.append(sha)
    return tags


def image_spec(
    name: str,
    *,
    tags: Sequence[str],
    context: Path = SOURCE_ROOT,
    dockerfile: Path | None = None,
    platform: str | None = None,
    build_args: Mapping[str, str] | None = None,
) -> BuildSpec:
    """The BuildSpec of one of our images (docker/NAME/Dockerfile, the repository as context)."""
    validate_name(name)
    context = context.resolve()
    dockerfile = (dockerfile or context / "docker" / name / "Dockerfile").resolve()
    if not context.is_dir():
        raise ConfigError(f"build context {context} is not a directory")
    if not dockerfile.is_file():
        raise ConfigError(
            f"no Dockerfile at {dockerfile}",
            hint="build from a source checkout of paas-migrate (the images are built from the local code)",
        )
    if not tags:
        raise ConfigError("no tag given for the image")
    labels = {"org.opencontainers.image.title": name, "org.opencontainers.image.version": __version__}
    sha = git_short_sha(context)
    if sha:
        labels["org.opencontainers.image.revision"] = sha
    return BuildSpec(
        name=name,
        dockerfile=dockerfile,
        context=context,
        tags=tuple(validate_tag(t) for t in tags),
        platform=platform,
        build_args=dict(build_args or {}),
        labels=labels,
    )


# --- detection -------------------------------------------------------------------------------------


def docker_daemon_answers(executable: str, timeout: float = 15.0) -> bool:
    """True when `docker info` reaches a daemon. Read-only."""
    try:
        proc = subprocess.run([executable, "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def detect_builder(
    choice: str = "auto",
    *,
    storage_driver: str | None = None,
    storage_root: Path | None = None,
    isolation: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
    docker_probe: Callable[[str], bool] = docker_daemon_answers,
) -> Builder:
    """Pick the builder: the one asked for, or docker with a reachable daemon, else podman, else buildah.

    Runs `docker info` to probe the daemon; builds nothing.
    """
    if choice not in ("auto", *BUILDERS):
        raise ConfigError(f"unknown builder {choice!r}", hint="choose auto, docker, podman or buildah")

    def make(kind: str, exe: str) -> Builder:
        return Builder(kind, exe, storage_driver=storage_driver, storage_root=storage_root, isolation=isolation)

    if choice != "auto":
        exe = which(choice)
        if exe is None:
            raise ToolError(f"{choice} is not installed (not found on PATH)", hint=_INSTALL_HINT)
        if choice == "docker" and not docker_probe(exe):
            raise ToolError("the Docker daemon is not running (docker info failed)",
                            hint="start it (e.g. systemctl start docker), or use --builder buildah")
        return make(choice, exe)

    docker = which("docker")
    if docker is not None and docker_probe(docker):
        return make("docker", docker)
    for kind in ("podman", "buildah"):
        exe = which(kind)
        if exe is not None:
            if docker is not None:
                log.info("docker is installed but its daemon does not answer; using %s", kind)
            return make(kind, exe)
    if docker is not None:
        raise ToolError("the Docker daemon is not running (docker info failed) and neither podman nor buildah "
                        "is installed", hint="start the daemon, or install buildah (apt-get install buildah)")
    raise ToolError("no container builder found (docker, podman or buildah)", hint=_INSTALL_HINT)


_INSTALL_HINT = "install buildah (apt-get install buildah), podman, or Docker"


# --- running tools ---------------------------------------------------------------------------------


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    input_text: str | None = None,
    timeout: float | None = 600,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a short external command; return its stdout, or raise ToolError with its last error line.

    Secrets go through `input_text` (stdin), never argv. Output is captured (these commands print little).
    """
    log.debug("running: %s", redact(" ".join(argv)))
    try:
        proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None)
    except FileNotFoundError:
        raise ToolError(f"{what}: {argv[0]} not found", hint=_INSTALL_HINT) from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what} did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise ToolError(f"{what} failed: {last_error_line(proc.stderr or proc.stdout)}")
    return proc.stdout


_ERRORISH = re.compile(r"(?i)\berror\b|failed|denied|unauthorized|not found|no such")
# Lines that say *that* something failed, not *what*: builders' step summaries, pip's epilogue.
_GENERIC = re.compile(r"(?i)^(error: building at step|error: subprocess-exited-with-error|note: |"
                      r"subprocess exited|exit status \d+$)")


def last_error_line(output: str) -> str:
    """The most useful single line of a failed tool's output.

    The last line that names an error, preferring a specific cause (pip's "ERROR: No matching
    distribution ...") over a builder's generic "Error: building at STEP ...: exit status 1".
    """
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if not lines:
        return "(no output)"
    errorish = [ln for ln in lines if _ERRORISH.search(ln)]
    if not errorish:
        return redact(lines[-1])[:500]
    last = errorish[-1]
    if _GENERIC.search(last):
        specific = [ln for ln in errorish[:-1] if not _GENERIC.search(ln)]
        if specific:
            step = re.search(r'(?i)at STEP "([^"]{0,60})', last)
            where = f" (at STEP {step.group(1)!r}...)" if step else ""
            return redact(specific[-1] + where)[:500]
    return redact(last)[:500]


def stream_tool(argv: Sequence[str], *, what: str, reporter: Reporter, keep: int = 40) -> None:
    """Run a long command (a build), logging each output line and noting build steps to `reporter`.

    Only the last `keep` lines are held in memory, for the error message.
    """
    log.info("running: %s", redact(" ".join(argv)))
    tail: deque[str] = deque(maxlen=keep)
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
    except FileNotFoundError:
        raise ToolError(f"{what}: {argv[0]} not found", hint=_INSTALL_HINT) from None
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            log.debug("%s", line)
            if re.match(r"^(STEP \d+/\d+|#\d+ \[|Step \d+/\d+)", line):
                reporter.note(redact(line)[:200])
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise ToolError(f"{what} failed (exit {code}): {last_error_line(chr(10).join(tail))}",
                        hint="run with -vv to see the builder's output")


# --- building --------------------------------------------------------------------------------------


def build_command(builder: Builder, spec: BuildSpec, iidfile: Path) -> list[str]:
    """The exact argv that builds `spec` (what --dry-run would print)."""
    args = ["build", "-f", str(spec.dockerfile), "--iidfile", str(iidfile)]
    for ref in spec.refs:
        args += ["-t", ref]
    if spec.platform:
        args += ["--platform", spec.platform]
    if builder.daemonless and builder.isolation:
        args += ["--isolation", builder.isolation]
    for key, value in spec.build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    for key, value in spec.labels.items():
        args += ["--label", f"{key}={value}"]
    args.append(str(spec.context))
    return builder.argv(*args)


def build_image(builder: Builder, spec: BuildSpec, reporter: Reporter | None = None) -> BuiltImage:
    """Build one image and tag it with every tag of `spec`; return its references and image ID.

    Pushes nothing.
    """
    rep = reporter or NullReporter()
    with tempfile.TemporaryDirectory(prefix="paas-migrate-build-") as tmp:
        iidfile = Path(tmp) / "iid"
        argv = build_command(builder, spec, iidfile)
        rep.note(f"building {spec.name} with {builder.kind} ({', '.join(spec.refs)})")
        stream_tool(argv, what=f"{builder.kind} build of {spec.name}", reporter=rep)
        try:
            image_id = iidfile.read_text().strip()
        except OSError:
            raise ToolError(f"{builder.kind} build of {spec.name} wrote no image ID") from None
    if not image_id.startswith("sha256:"):
        image_id = f"sha256:{image_id}"
    log.info("built %s: %s", spec.name, image_id)
    return BuiltImage(spec.name, tuple(spec.refs), image_id, builder.kind)

