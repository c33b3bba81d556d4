"""Logging set-up: everything goes to stderr, every record passes through redaction."""

from __future__ import annotations

import logging
import sys
import time

from migrate.config import redact


class RedactingFilter(logging.Filter):
    """Rewrites each record's message so that no password or registered secret reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatted tracebacks carry exception messages; scrub them at format time.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class _LevelPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger: warnings by default, info with -v, debug with -vv."""
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_paas_migrate", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._paas_migrate = True  # type: ignore[attr-defined]
    if verbosity:
        # The timestamps of the progress lines (UTC, ISO 8601): one format in a task's log.
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
    else:  # warnings and errors only: as the CLI writes its own ("warning: …", "error: …")
        formatter = _LevelPrefix()
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (botocore retries, urllib3) is noise unless asked for twice.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
