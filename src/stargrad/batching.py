"""Fixed-size chunks over the rows (stars) of arrays, the last chunk padded, so that one jitted
program serves any number of stars and memory is bounded by the chunk size."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def padded_chunks(arrays, size: int, pad: str = "zeros") -> Iterator[tuple[int, int, tuple]]:
    """Yield (start, n_valid, chunk) over consecutive `size`-row chunks of `arrays` (a tuple of
    arrays sharing their leading axis). The last chunk is padded to `size` rows with zeros, or
    with copies of its last row (pad="edge", for inputs that must stay valid, e.g. labels)."""
    if pad not in ("zeros", "edge"):
        raise ValueError(f"padded_chunks: pad must be 'zeros' or 'edge', got {pad!r}")
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"padded_chunks: arrays differ in length: {[len(a) for a in arrays]}")
    if int(size) < 1:
        raise ValueError(f"padded_chunks: size must be >= 1, got {size}")
    for start in range(0, n, int(size)):
        chunk = tuple(a[start:start + size] for a in arrays)
        n_valid = len(chunk[0])
        if n_valid < size:
            widths = lambda a: [(0, size - n_valid)] + [(0, 0)] * (a.ndim - 1)  # noqa: E731
            chunk = tuple(np.pad(a, widths(a), mode="constant" if pad == "zeros" else "edge")
                          for a in chunk)
        yield start, n_valid, chunk


def map_chunks(fn: Callable, arrays, size: int, pad: str = "zeros") -> dict:
    """Concatenate `fn(*chunk, start)` over `padded_chunks(arrays, size, pad)`, dropping the
    padding rows. `fn` returns a dict of arrays whose leading axis is the chunk's rows; other
    entries (e.g. per-chunk scalars) are left out. Returns a dict of numpy arrays."""
    parts: dict[str, list] = {}
    for start, n_valid, chunk in padded_chunks(arrays, size, pad):
        size_now = len(chunk[0])
        for name, value in fn(*chunk, start).items():
            if np.ndim(value) >= 1 and np.shape(value)[0] == size_now:
                parts.setdefault(name, []).append(np.asarray(value)[:n_valid])
    return {name: np.concatenate(values) for name, values in parts.items()}
