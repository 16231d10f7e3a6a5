"""Figures the same way everywhere: grids of one panel per label, and saving atomically, at
screen resolution (the report embeds every figure), dense curves and point clouds drawn
without antialiasing (it multiplies a PNG's size and shows nothing at that density), PNGs
with a palette of at most 256 colours, and no creation date in the file (same input, same
bytes)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..provenance import atomic_path  # noqa: E402

#: Dots per inch of saved figures: screen resolution keeps the report light.
SCREEN_DPI = 90
#: savefig metadata that keeps creation dates out of vector formats.
_NO_DATE = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}
#: A curve with more points than this, or a point cloud with more markers, is dense: its
#: antialiased edges would blend into thousands of distinct colours, which PNG's compression
#: cannot shrink (a chip-panel Jacobian figure: 221 kB antialiased, 60 kB without).
DENSE_POINTS = 500
#: Colours of a saved PNG's palette. A plot has a few dozen colours plus the blends of
#: antialiased text and edges; mapping those blends to the nearest of 256 (octree, no dither)
#: is invisible and makes the file 2–4 times smaller than matplotlib's 32-bit RGBA.
PNG_COLOURS = 256
#: zlib level of a saved PNG: 8 makes files 2–3 % larger than 9 (PIL's `optimize`) in less than
#: half the time, 6 files 20 % larger (bench/bench_figures.py prints the sizes).
PNG_COMPRESS_LEVEL = 8


def save_figure(fig, path, dpi: int = SCREEN_DPI, close: bool = True) -> None:
    """Write `fig` to `path` (format from the suffix, PNG by default) and close it unless
    `close` is False; dense artists (`DENSE_POINTS`) are drawn without antialiasing."""
    path = Path(path)
    for ax in fig.axes:
        for line in ax.get_lines():
            if len(line.get_xdata()) > DENSE_POINTS:
                line.set_antialiased(False)
        for collection in ax.collections:
            if len(collection.get_offsets()) > DENSE_POINTS:
                collection.set_antialiased(False)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_path(path) as tmp:
        if fmt == "png":
            palette = _rendered_rgb(fig, dpi).quantize(PNG_COLOURS,
                                                        method=Image.Quantize.FASTOCTREE,
                                                        dither=Image.Dither.NONE)
            palette.save(tmp, format="png", compress_level=PNG_COMPRESS_LEVEL)
        else:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_NO_DATE.get(fmt))
    if close:
        plt.close(fig)


def _rendered_rgb(fig, dpi: int) -> Image.Image:
    """`fig` drawn by Agg at `dpi`, as an RGB image: the canvas's own pixels, without the PNG
    that savefig would encode and PIL decode again."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")


#: label_grid's margins and gaps between panels, inches.
GRID_MARGINS = {"left": 0.5, "right": 0.12, "bottom": 0.42, "top": 0.6, "wgap": 0.55,
                "hgap": 0.62}


def label_grid(n: int, size: float = 2.6):
    """A figure of n panels, up to 6 per row, `size` inches each, with fixed margins and gaps
    (inches: `GRID_MARGINS`) for panels with a title, 6-point ticks and 7-point axis labels
    under a suptitle: a tight layout would measure every tick of every panel, which took longer
    than drawing them. Returns (figure, flat axes)."""
    ncol = min(n, 6)
    nrow = int(np.ceil(n / ncol))
    width, height = size * ncol, size * nrow
    m = GRID_MARGINS
    panel_w = (width - m["left"] - m["right"] - (ncol - 1) * m["wgap"]) / ncol
    panel_h = (height - m["bottom"] - m["top"] - (nrow - 1) * m["hgap"]) / nrow
    fig, axes = plt.subplots(nrow, ncol, figsize=(width, height), squeeze=False,
                             gridspec_kw={"left": m["left"] / width,
                                          "right": 1 - m["right"] / width,
                                          "bottom": m["bottom"] / height,
                                          "top": 1 - m["top"] / height,
                                          "wspace": m["wgap"] / panel_w,
                                          "hspace": m["hgap"] / panel_h})
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat
