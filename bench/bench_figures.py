"""CPU seconds of the figures a run draws most of: one mean-Jacobian figure per aspcap label
(the attribute rule draws 22 per model) and the 22-panel predicted-against-true grid
(plot_pred_vs_true), on seeded synthetic values (a script, not a test).

    .venv/bin/python bench/bench_figures.py [--out DIR]      # figures kept in DIR if given
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stargrad.attribution.lines import lines_table
from stargrad.plots.attribution import plot_label_jacobians
from stargrad.plots.compare import plot_pred_vs_true
from stargrad.sdss.apogee import ASPCAP_LABELS, N_PIX_GAPLESS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the figures here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = list(ASPCAP_LABELS)
    jacobian = rng.normal(size=(len(labels), N_PIX_GAPLESS))
    lines = lines_table(jacobian, labels)
    truth = rng.normal(size=(400, len(labels)))
    table = pd.DataFrame({**{label: truth[:, k] + 0.1 * rng.normal(size=len(truth))
                             for k, label in enumerate(labels)},
                          **{f"{label}_true": truth[:, k] for k, label in enumerate(labels)}})
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        warm_up = out / "warm-up"
        warm_up.mkdir(exist_ok=True)
        plot_label_jacobians(warm_up, jacobian[:1], labels[:1], lines)
        t0 = time.process_time()
        plot_label_jacobians(out, jacobian, labels, lines)
        t1 = time.process_time()
        plot_pred_vs_true(out / "pred_vs_true.png", table, labels, "synthetic (400 stars)")
        t2 = time.process_time()
        kb = np.mean([(out / f"{label}.png").stat().st_size for label in labels]) / 1e3
    print(f"{len(labels)} mean-Jacobian figures: {t1 - t0:.1f} CPU s "
          f"({(t1 - t0) / len(labels):.2f} a figure, {kb:.1f} kB a file)")
    print(f"predicted-against-true grid of {len(labels)} panels: {t2 - t1:.1f} CPU s")


if __name__ == "__main__":
    main()
