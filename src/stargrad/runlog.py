"""Logging for rule scripts: timestamped lines in the rule's log file, tracebacks included."""
from __future__ import annotations

import contextlib
import time
import traceback
from pathlib import Path


@contextlib.contextmanager
def rule_logger(path):
    """Yield log(msg) writing to `path`; an exception's traceback is logged before it propagates."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        def log(message: str) -> None:
            fh.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
            fh.flush()
        try:
            yield log
        except BaseException:
            fh.write(traceback.format_exc())
            fh.flush()
            raise
