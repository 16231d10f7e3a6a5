"""Figures of gradient attribution (matplotlib, Agg): a mean Jacobian over the three APOGEE
chips against vacuum wavelength (Å), the label's ASPCAP DR17 windows shaded, the strongest
features named by their nearest line."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..sdss import apogee  # noqa: E402
from ..attribution.lines import match_lines, top_features  # noqa: E402
from ..attribution.units import as_7514  # noqa: E402
from ..attribution.windows import own_element  # noqa: E402
from .figures import save_figure  # noqa: E402

CHIP_COLORS = {"blue": "tab:blue", "green": "tab:green", "red": "tab:red"}


#: Fixed margins of the three-panel figure (figure fractions): its text is the same for every
#: label, and a constrained layout would measure every tick and annotation at every save.
_CHIP_MARGINS = {"left": 0.07, "right": 0.99, "bottom": 0.07, "top": 0.945, "hspace": 0.22}


def _chip_figure(ylabel: str):
    fig, axes = plt.subplots(3, 1, figsize=(12, 8), gridspec_kw=_CHIP_MARGINS)
    for ax, chip in zip(axes, apogee.CHIP_OFFSETS):
        ax.axhline(0.0, color="0.3", ls="--", lw=0.8)
        ax.set_ylabel(f"{chip} chip\n{ylabel}")
    axes[-1].set_xlabel("vacuum wavelength (Å)")
    return fig, axes


def _save_chip_figures(ylabel: str, figures) -> None:
    """Save each (path, title, draw) of `figures` as a three-chip figure, `draw(axes)` adding
    its artists to the empty panels. One matplotlib figure serves them all, emptied back to
    its panels between saves: building the panels and their ticks again for every label cost
    more than drawing them. Each file is the one a figure of its own gives."""
    fig, axes = _chip_figure(ylabel)
    empty = [set(ax.get_children()) for ax in axes]
    try:
        for path, title, draw in figures:
            fig.suptitle(title)
            draw(axes)
            save_figure(fig, path, close=False)
            for ax, keep in zip(axes, empty):
                for artist in ax.get_children():
                    if artist not in keep:
                        artist.remove()
                ax.relim()
    finally:
        plt.close(fig)


def _chip_wavelengths():
    """Vacuum wavelengths (Å) of the 7514 pixels, split by chip."""
    return apogee.chips_split(apogee.wavelength(apogee.N_PIX_GAPLESS))


def _draw_chips(axes, y, label: str, color=None, lw=0.8):
    """One (7514,) curve split over the three chip panels."""
    for ax, chip, w, v in zip(axes, apogee.CHIP_OFFSETS, _chip_wavelengths(),
                              apogee.chips_split(y)):
        ax.plot(w, v, lw=lw, color=color or CHIP_COLORS[chip], label=label)
        ax.set_xlim(w[0], w[-1])
        ax.margins(y=0.15)  # room for the line names


def _shade_windows(axes, label: str) -> None:
    """The label's element windows as one gold band collection per chip panel (full height,
    only the windows inside the panel's range: one artist each, however many windows)."""
    element = own_element(label)
    if element is None:
        return
    windows = apogee.load_windows()
    windows = windows[windows["element"] == element]
    spans = np.column_stack([windows["start_vac_angstrom"], windows["end_vac_angstrom"]])
    for ax, w in zip(axes, _chip_wavelengths()):
        inside = spans[(spans[:, 1] >= w[0]) & (spans[:, 0] <= w[-1])]
        bands = [[(a, 0.0), (a, 1.0), (b, 1.0), (b, 0.0)] for a, b in inside]
        ax.add_collection(PolyCollection(bands, transform=ax.get_xaxis_transform(),
                                         facecolors="gold", alpha=0.35, linewidths=0,
                                         label=f"{element} windows"), autolim=False)


#: A feature's leader line, from the name's edge to the point: not clipped to the text box, which
#: matplotlib would do for every annotation at every draw.
_LEADER = {"arrowstyle": "-", "lw": 0.5, "patchA": None, "shrinkA": 0, "shrinkB": 0}


def _annotate(axes, features: pd.DataFrame) -> None:
    """Mark each feature; name it by its nearest line (species_1) where one matched."""
    panel = {chip: ax for chip, ax in zip(apogee.CHIP_OFFSETS, axes)}
    for row in features.itertuples(index=False):
        name = getattr(row, "species_1", None)
        text = f"{name}" if isinstance(name, str) and name else f"{row.wavelength_vac:.1f}"
        up = row.jacobian >= 0
        panel[row.chip].annotate(text, (row.wavelength_vac, row.jacobian),
                                 xytext=(0, 8 if up else -8), textcoords="offset points",
                                 ha="center", va="bottom" if up else "top", fontsize=7,
                                 arrowprops=_LEADER)


def _draw_label_jacobian(axes, j, label: str, features: pd.DataFrame) -> None:
    _shade_windows(axes, label)
    _draw_chips(axes, j, label)
    _annotate(axes, features)
    if own_element(label) is not None:
        axes[0].legend(loc="upper right", fontsize=8)


def plot_label_jacobians(plot_dir, mean_jac, labels, lines: pd.DataFrame,
                         ylabel: str = "∂label/∂flux") -> None:
    """One figure per label, `plot_dir`/<label>.png: its mean Jacobian (row of `mean_jac`,
    (K, 7514)) over the blue/green/red chips, dashed zero line, the label's element windows
    shaded (none for teff, logg), its rows of `lines` (lines_table, match_lines or
    top_features output, with a `label` column) annotated with their species."""
    jac = [as_7514(row, f"plot_label_jacobians({label})") for row, label in zip(mean_jac, labels)]
    _save_chip_figures(ylabel, [
        (Path(plot_dir) / f"{label}.png", f"{label}: mean Jacobian",
         partial(_draw_label_jacobian, j=j, label=label, features=lines[lines["label"] == label]))
        for j, label in zip(jac, labels)])


def _draw_comparison(axes, label: str, jacs: dict) -> None:
    _shade_windows(axes, label)
    for i, (name, j) in enumerate(jacs.items()):
        scale = np.max(np.abs(j)) or 1.0
        _draw_chips(axes, j / scale, f"{name} (max|J| {scale:.3g})", color=f"C{i}")
    axes[0].legend(loc="upper right", fontsize=8)


def plot_jacobian_comparisons(plot_dir, jacs_by_label: dict) -> None:
    """One figure per label, `plot_dir`/<label>.png: several models' mean Jacobians (7514,)
    ({label: {model: jacobian}}) overlaid per chip. Each curve is divided by its own max |J|
    (given in the legend) so that shapes compare across scales."""
    figures = []
    for label, jacs_by_model in jacs_by_label.items():
        if not jacs_by_model:
            raise ValueError(f"plot_jacobian_comparisons: no model for {label!r}")
        jacs = {name: as_7514(jac, f"plot_jacobian_comparisons: model {name!r}")
                for name, jac in jacs_by_model.items()}
        figures.append((Path(plot_dir) / f"{label}.png", f"{label}: mean Jacobian by model",
                        partial(_draw_comparison, label=label, jacs=jacs)))
    _save_chip_figures("J / max|J|", figures)


def plot_classifier_gradient(path, mean_jac, title: str, n_features: int = 10) -> None:
    """A single-output model's mean gradient (e.g. the evstate classifier or the dpi1
    regressor) over the three chips, its `n_features` strongest features named by line."""
    j = as_7514(mean_jac, "plot_classifier_gradient: mean_jac")
    if j.ndim == 2 and j.shape[0] == 1:
        j = j[0]
    if j.ndim != 1:
        raise ValueError(f"plot_classifier_gradient: expected one output, got shape {j.shape}")
    features = match_lines(top_features(j, n_features))

    def draw(axes):
        _draw_chips(axes, j, title)
        _annotate(axes, features)

    _save_chip_figures("∂output/∂flux", [(path, title, draw)])
