"""Pickle-free `.npz` storage of parameter pytrees (nested dicts / lists / tuples of arrays).

Each leaf is stored under its path joined by "/" (e.g. `dense/0/w`); the container kinds are
recorded as JSON in the entry `__tree__`, so lists come back as lists and tuples as tuples.
Archives have fixed member timestamps: the same parameters give the same bytes.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .provenance import atomic_path

TREE_KEY = "__tree__"
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


class ParamsFileError(ValueError):
    """A parameter file that cannot be read back; the message names the file and the problem."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _flatten(node, prefix: str, arrays: dict) -> dict:
    """Return the structure record of `node`, filling `arrays` with {key: leaf array}."""
    if isinstance(node, dict):
        items = {}
        for name, child in node.items():
            if not isinstance(name, str) or not name or "/" in name or name == TREE_KEY:
                raise ValueError(f"parameter dict key {name!r} at '{prefix or '/'}' must be a "
                                 "non-empty string without '/'")
            items[name] = _flatten(child, f"{prefix}{name}/", arrays)
        return {"dict": items}
    if isinstance(node, (list, tuple)):
        kind = "list" if isinstance(node, list) else "tuple"
        return {kind: [_flatten(child, f"{prefix}{i}/", arrays) for i, child in enumerate(node)]}
    leaf = np.asarray(node)
    if leaf.dtype == object:
        raise ValueError(f"parameter leaf '{prefix[:-1]}' is not a numeric array "
                         f"({type(node).__name__})")
    arrays[prefix[:-1]] = leaf
    return {"leaf": prefix[:-1]}


def _unflatten(record, arrays, path):
    (kind, body), = record.items()
    if kind == "dict":
        return {name: _unflatten(child, arrays, path) for name, child in body.items()}
    if kind in ("list", "tuple"):
        children = [_unflatten(child, arrays, path) for child in body]
        return children if kind == "list" else tuple(children)
    if kind == "leaf":
        if body not in arrays:
            raise ParamsFileError(path, f"missing array {body!r}")
        return arrays[body]
    raise ParamsFileError(path, f"unknown container kind {kind!r}")


def save_params(path, params) -> None:
    """Write a parameter pytree to `path` (.npz, no pickle), atomically."""
    arrays: dict = {}
    tree = _flatten(params, "", arrays)
    arrays[TREE_KEY] = np.array(json.dumps(tree, sort_keys=True))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_DATE)
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arrays[key], allow_pickle=False)


def load_params(path):
    """Read a pytree written by `save_params`; leaves are numpy arrays, containers as saved."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such parameter file")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ParamsFileError(path, "not an .npz archive")
        with npz:
            arrays = {key: npz[key] for key in npz.files}
        tree = json.loads(str(arrays.pop(TREE_KEY)))
    except KeyError:
        raise ParamsFileError(path, f"not a stargrad parameter file (no {TREE_KEY})") from None
    except ParamsFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ParamsFileError(path, f"corrupt or unreadable parameter file: {exc}") from exc
    return _unflatten(tree, arrays, path)
