"""Provenance and safe file writing: config digests, FITS header cards, atomic writes.

Files carry no timestamps, so the same config and seed give byte-identical outputs.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path

from . import __version__


def config_hash(config) -> str:
    """Short SHA-1 of a JSON-serialisable config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def header_cards(config_digest: str | None = None, seed: int | None = None, **extra) -> dict:
    """FITS header keywords recording what made a file (8-character keys)."""
    cards = {"SGVERS": __version__}
    if config_digest is not None:
        cards["SGCFGH"] = config_digest
    if seed is not None:
        cards["SGSEED"] = int(seed)
    cards.update({k.upper()[:8]: v for k, v in extra.items()})
    return cards


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An interrupted job therefore never leaves a valid-looking partial file under the final name;
    the temporary files of earlier writers of `path` that were killed before cleaning up are
    removed here, so a rerun leaves none behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for orphan in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        orphan.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj) -> None:
    """Write JSON atomically, sorted keys, trailing newline."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    import numpy as np
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
