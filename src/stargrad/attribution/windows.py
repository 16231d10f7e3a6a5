"""The share of |J| inside each element's active ASPCAP DR17 windows."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ..sdss import apogee
from .units import as_7514, check_labels


@lru_cache(maxsize=1)
def _window_matrix() -> tuple[tuple[str, ...], np.ndarray]:
    """(elements, (E, P) bool) masks of the active ASPCAP DR17 windows on the 7514 grid."""
    elements = tuple(apogee.window_elements())
    return elements, np.array([apogee.window_mask(e) for e in elements])


def own_element(label: str) -> str | None:
    """The ASPCAP window element of a label ('Mg' -> 'Mg', 'C1' -> 'CI'), None for labels
    without windows (teff, logg, seismic labels)."""
    element = apogee.window_element(label)
    return element if element in _window_matrix()[0] else None


def window_shares(mean_abs_jac, labels, exclusive: bool = False) -> pd.DataFrame:
    """Share of Σ_p |J| inside each element's active ASPCAP DR17 windows, per label.

    Columns: label, own_element, share_own (share in the label's own element's windows, NaN
    for labels without windows), one column per window element, and `none` (pixels outside
    every window). Windows overlap heavily (C, N, O and Fe cover most of the spectrum), so by
    default a pixel counts fully for every element whose windows contain it and the element
    columns plus `none` need not sum to 1. exclusive=True splits each overlapping pixel's |J|
    equally among its elements, so that they sum to 1 (share_own is then exclusive too). The
    `Fe` column is the share in the Fe windows. |J| is taken of the input; pass the
    mean |J| over stars so that gradients of opposite sign in different stars still count."""
    weight = np.abs(as_7514(mean_abs_jac, "window_shares: mean_abs_jac"))
    labels = check_labels(labels, weight, "window_shares")
    elements, masks = _window_matrix()
    cover = masks.sum(axis=0)
    per_element = masks / np.maximum(cover, 1) if exclusive else masks.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = (weight @ per_element.T) / weight.sum(axis=1, keepdims=True)
        none = weight[:, cover == 0].sum(axis=1) / weight.sum(axis=1)
    table = pd.DataFrame(shares, columns=list(elements))
    table.insert(0, "label", labels)
    owns = [own_element(label) for label in labels]
    table.insert(1, "own_element", pd.Series(owns, dtype="str"))
    table.insert(2, "share_own", [table.at[i, e] if e else np.nan for i, e in enumerate(owns)])
    table["none"] = none
    return table
