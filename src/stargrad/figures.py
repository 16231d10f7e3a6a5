"""Figures the same way everywhere: grids of one panel per label, and saving atomically, at
screen resolution (the report embeds every figure), with no creation date in the file (same
input, same bytes)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .provenance import atomic_path  # noqa: E402

#: Dots per inch of saved figures: screen resolution keeps the report light.
SCREEN_DPI = 90
#: savefig metadata that keeps creation dates out of vector formats.
_NO_DATE = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def save_figure(fig, path, dpi: int = SCREEN_DPI) -> None:
    """Write `fig` to `path` (format from the suffix, PNG by default) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fmt = path.suffix.lstrip(".") or "png"
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_NO_DATE.get(fmt))
    plt.close(fig)


def label_grid(n: int, size: float = 2.6):
    """A figure of n panels, up to 6 per row; returns (figure, flat axes)."""
    ncol = min(n, 6)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(size * ncol, size * nrow), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat
