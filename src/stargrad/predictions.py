"""The predictions file contract: one PREDICTIONS table per (model, task, split), physical units.

Columns: APOGEE_ID, then per label `<l>` (value), `<l>_std_model`, `<l>_std_predictive`,
`<l>_std_total`, `<l>_std_calibrated` and `<l>_true` (the catalogue value, −9999 when missing).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import fitsio
import numpy as np
import pandas as pd

from .provenance import atomic_path
from .survey import read_table

if TYPE_CHECKING:
    from .dataset import Normalizer
    from .tasks import Task

#: Uncertainty columns of a PREDICTIONS table, per label (physical units).
STD_COLUMNS = ("std_model", "std_predictive", "std_total", "std_calibrated")


def write_predictions(path, ids, truth, task: Task, norm: Normalizer, out: dict,
                      header: dict) -> None:
    """Write one PREDICTIONS table from normalized-unit outputs `out` (value and STD_COLUMNS,
    (N, K) each), converted to physical units with the task's label normalization."""
    columns = {"APOGEE_ID": np.asarray(ids).astype("S32")}
    for k, label in enumerate(task.labels):
        columns[label] = out["value"][:, k] * norm.label_std[k] + norm.label_mean[k]
        for name in STD_COLUMNS:
            columns[f"{label}_{name}"] = out[name][:, k] * norm.label_std[k]
        columns[f"{label}_true"] = truth[:, k]
    table = np.empty(len(ids), dtype=[(n, v.dtype if n == "APOGEE_ID" else np.float64)
                                       for n, v in columns.items()])
    for n, v in columns.items():
        table[n] = v
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header=header)
            fits.write(table, extname="PREDICTIONS")


def read_predictions(path) -> pd.DataFrame:
    """A PREDICTIONS table as a DataFrame (float64 numbers, stripped APOGEE_ID)."""
    table = read_table(path, "PREDICTIONS", what="PREDICTIONS table")
    return table.astype({n: np.float64 for n in table.columns if n != "APOGEE_ID"})
