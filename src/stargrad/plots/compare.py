"""Figures for the comparison stage (matplotlib, Agg backend, one file per call)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..predictions import mad_std  # noqa: E402
from ..sdss.apogee import is_missing  # noqa: E402
from .figures import label_grid, save_figure  # noqa: E402
from ..tasks import unit  # noqa: E402


def plot_pred_vs_true(path, table: pd.DataFrame, labels, title: str, kind: str = "regression"):
    """Predicted against true value per label, with the 1:1 line and the robust scatter."""
    fig, axes = label_grid(len(labels))
    for ax, label in zip(axes, labels):
        true, pred = table[f"{label}_true"].to_numpy(), table[label].to_numpy()
        ok = ~is_missing(true)
        if kind == "classification":
            for cls, name in ((0, "RGB"), (1, "RC")):
                sel = ok & (true == cls)
                ax.hist(pred[sel], bins=30, range=(0, 1), alpha=0.6, label=f"true {name}")
            ax.set_xlabel("P(RC)")
            ax.legend(fontsize=7)
        else:
            ax.scatter(true[ok], pred[ok], s=3, alpha=0.5, lw=0)
            lo, hi = np.percentile(true[ok], [0.5, 99.5]) if ok.any() else (0, 1)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            if ok.any():
                ax.text(0.04, 0.92, f"σ={mad_std(pred[ok] - true[ok]):.3g}", transform=ax.transAxes,
                        fontsize=7)
            ax.set_xlabel(f"true {label} [{unit(label)}]", fontsize=7)
            ax.set_ylabel("predicted", fontsize=7)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def plot_metric_by_label(path, metrics: pd.DataFrame, metric: str, title: str, ylabel: str,
                         reference: float | None = None):
    """One line per model of a metric (e.g. crb_ratio, z_mad_std) across the labels."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * metrics["label"].nunique() + 2), 3.2))
    labels = list(dict.fromkeys(metrics["label"]))
    for model, rows in metrics.groupby("model", sort=True):
        rows = rows.set_index("label").reindex(labels)
        ax.plot(range(len(labels)), rows[metric].to_numpy(dtype=float), "o-", ms=3, label=model)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, fontsize=7)
    ax.set_ylabel(ylabel)
    if metric in ("crb_ratio",):
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_ranking(path, rank: pd.DataFrame, title: str):
    """Horizontal bars of each model's score (rank table from compare.ranking), best on top."""
    fig, ax = plt.subplots(figsize=(5, 0.45 * len(rank) + 1.2))
    order = rank.iloc[::-1]
    ax.barh(order["model"], order["score"], color="C0")
    metric = rank["metric"].iloc[0] if len(rank) else ""
    if metric == "median crb_ratio":
        ax.axvline(1.0, color="k", ls="--", lw=0.8)
    ax.set_xlabel(metric)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
