"""Which shard of an `s3 copy --shard I/N` run owns a key: a stable hash, the same in every process."""

from __future__ import annotations

import hashlib

from migrate.errors import ConfigError


def shard_of(key: str, n: int) -> int:
    """The 1-based shard (1..n) that owns `key`.

    The first 8 bytes of SHA-256 over the UTF-8 key, modulo n: stable across processes, machines and
    Python versions (unlike hash(), which is salted per process).
    """
    if n < 1:
        raise ValueError("the number of shards must be at least 1")
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 1 <= I <= N; None or '' -> None. Raises ConfigError on anything else."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    left, sep, right = text.partition("/")
    try:
        if not sep:
            raise ValueError
        i, n = int(left), int(right)
    except ValueError:
        raise ConfigError(f"--shard {text!r} is not I/N", hint="for example --shard 2/8 (1-based)") from None
    if n < 1 or not 1 <= i <= n:
        raise ConfigError(f"--shard {text!r} is out of range", hint="I must be between 1 and N, e.g. 1/4 … 4/4")
    return i, n
