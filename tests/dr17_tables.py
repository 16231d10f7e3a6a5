"""A DR17-shaped allStar table for tests: every aspcap label column and its error."""
from __future__ import annotations

import numpy as np
import pandas as pd

from stargrad.sdss import apogee


def allstar_table(ids, fields, rng) -> pd.DataFrame:
    """APOGEE_ID, TELESCOPE (apo25m), FIELD, SNR, TEFF, LOGG, FE_H and every [X/Fe] of the
    aspcap labels with its _ERR, drawn in giant-like ranges."""
    n = len(ids)
    rows = {"APOGEE_ID": list(ids), "TELESCOPE": ["apo25m"] * n, "FIELD": list(fields),
            "SNR": rng.uniform(50, 300, n), "TEFF": rng.uniform(4000, 5000, n),
            "TEFF_ERR": np.full(n, 50.0), "LOGG": rng.uniform(1, 3, n), "LOGG_ERR": np.full(n, 0.1),
            "FE_H": rng.uniform(-1, 0.3, n), "FE_H_ERR": np.full(n, 0.03)}
    for label in apogee.ASPCAP_LABELS:
        col = apogee.allstar_column(label)
        if col not in rows:
            rows[col] = rng.uniform(-0.2, 0.4, n)
            rows[f"{col}_ERR"] = np.full(n, 0.04)
    return pd.DataFrame(rows)
