"""The predictions file contract: one PREDICTIONS table per (model, task, split), physical units.

Columns: APOGEE_ID, then per label `<l>` (value), `<l>_std_model`, `<l>_std_predictive`,
`<l>_std_total`, `<l>_std_calibrated` and `<l>_true` (the catalogue value, −9999 when missing);
then `converged` (bool) for families that fit each star by χ² (`stargrad.solver`): False marks a
fit that did not converge.
"""
from __future__ import annotations

import fitsio
import numpy as np
import pandas as pd

from .provenance import atomic_path
from .sdss.survey import read_table

#: The model name of the mock's oracle (the true forward model fitted by χ², `stages.oracle`):
#: reserved, and first in every scorecard.
ORACLE = "oracle"


#: 1 / Φ⁻¹(3/4): the median absolute deviation of a normal distribution is σ / 1.4826...
MAD_TO_STD = 1.482602218505602


def mad_std(values):
    """Robust standard deviation of an array: 1.4826 × median |x − median x|, the same
    operations as astropy.stats.mad_std (same result to the bit, tested), without importing
    astropy in every predict job."""
    values = np.asanyarray(values)
    return np.median(np.abs(values - np.median(values))) * MAD_TO_STD


#: Uncertainty columns of a PREDICTIONS table, per label (physical units).
STD_COLUMNS = ("std_model", "std_predictive", "std_total", "std_calibrated")


def write_predictions(path, ids, predicted: pd.DataFrame, truth: np.ndarray, labels,
                      header: dict) -> None:
    """Write one PREDICTIONS table: APOGEE_ID, the `predicted` columns of each label (value and
    STD_COLUMNS, physical units; `api.TrainedModel.predict`) and `<label>_true` from `truth`
    (N, K)."""
    columns = {"APOGEE_ID": np.asarray(ids).astype("S32")}
    for k, label in enumerate(labels):
        for name in (label, *(f"{label}_{s}" for s in STD_COLUMNS)):
            columns[name] = predicted[name].to_numpy(np.float64)
        columns[f"{label}_true"] = np.asarray(truth[:, k], np.float64)
    if "converged" in predicted:
        columns["converged"] = predicted["converged"].to_numpy(bool)
    table = np.empty(len(ids), dtype=[(n, v.dtype) for n, v in columns.items()])
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
