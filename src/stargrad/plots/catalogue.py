"""Figures of a survey catalogue (matplotlib, Agg): the survey's label distributions against
the training set's, uncertainties against S/N, and how many rows each flag marks."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .figures import label_grid, save_figure  # noqa: E402
from ..tasks import unit  # noqa: E402


def plot_label_distributions(path, table: pd.DataFrame, labels) -> None:
    """Per label, the histogram of the predicted values of every catalogued star and of the
    training stars (IN_TRAINING), as densities on common bins."""
    fig, axes = label_grid(len(labels))
    training = table["IN_TRAINING"].to_numpy(bool)
    for ax, label in zip(axes, labels):
        values = table[label].to_numpy(float)
        ok = np.isfinite(values)
        if not ok.any():
            ax.set_title(f"{label}: no prediction", fontsize=8)
            continue
        bins = np.linspace(*np.percentile(values[ok], [0.5, 99.5]), 40)
        ax.hist(values[ok], bins=bins, density=True, histtype="step", label="survey")
        ax.hist(values[ok & training], bins=bins, density=True, histtype="step",
                label="training")
        ax.set_xlabel(f"{label} [{unit(label)}]", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=7)
    fig.suptitle("catalogue: predicted labels of the survey against the training set", fontsize=9)
    save_figure(fig, path)


def plot_uncertainty_vs_snr(path, table: pd.DataFrame, snr: np.ndarray, labels) -> None:
    """Calibrated total uncertainty against S/N per label (log-log), survey stars."""
    fig, axes = label_grid(len(labels))
    for ax, label in zip(axes, labels):
        std = table[f"{label}_std_calibrated"].to_numpy(float)
        ok = np.isfinite(std) & (std > 0) & np.isfinite(snr) & (snr > 0)
        ax.scatter(snr[ok], std[ok], s=2, alpha=0.3, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("S/N", fontsize=7)
        ax.set_ylabel(f"σ {label} [{unit(label)}]", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("catalogue: calibrated uncertainty against S/N", fontsize=9)
    save_figure(fig, path)


def plot_flags(path, flags: np.ndarray, bits: dict) -> None:
    """Share of the catalogue's rows marked by each flag bit, and by none."""
    shares = {name: np.mean((flags & bit) != 0) for name, bit in bits.items()}
    shares["none"] = np.mean(flags == 0)
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(shares) + 1.2))
    names = list(shares)[::-1]
    ax.barh(names, [100 * shares[n] for n in names], color="C0")
    for y, name in enumerate(names):
        ax.text(100 * shares[name], y, f" {100 * shares[name]:.2f}%", va="center", fontsize=7)
    ax.set_xlabel("% of allStar rows")
    ax.set_xlim(0, 110)
    ax.set_title(f"catalogue flags ({len(flags)} rows)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
