"""Units and grids of Jacobians: physical units, the 7514 and 8575 pixel grids, label checks."""
from __future__ import annotations

import numpy as np

from ..sdss import apogee

P = apogee.N_PIX_GAPLESS
#: Value of the chip gaps on the 8575 grid: NaN, so that gaps read as "no data" (plots break
#: the curve there, sums need nansum) rather than as a zero gradient.
GAP_FILL = np.nan


def as_7514(array, name: str) -> np.ndarray:
    """Float array on the 7514 grid along the last axis (8575 input is gap-deleted)."""
    array = np.asarray(array, dtype=float)
    if array.ndim == 0 or array.shape[-1] not in (P, apogee.N_PIX):
        raise ValueError(f"{name}: last axis must have {P} (or {apogee.N_PIX}) pixels, "
                         f"got shape {array.shape}")
    return apogee.gap_delete(array)


def to_physical(jac_norm, input_std, label_std) -> np.ndarray:
    """d label / d flux in label units (K, dex, μHz, ...) per unit of continuum-normalized flux.

    jac_norm (..., K, P) is d normalized label / d normalized flux; label_std (K,) the label
    normalization scale; input_std (P,) or a scalar, the per-pixel flux scale (1 for
    mean-only or no input normalization)."""
    jac = np.asarray(jac_norm, dtype=float)
    label_std = np.asarray(label_std, dtype=float)
    input_std = np.asarray(input_std, dtype=float)
    if jac.ndim < 2:
        raise ValueError(f"to_physical: jac_norm must be (..., K, P), got shape {jac.shape}")
    k, p = jac.shape[-2:]
    if label_std.shape != (k,):
        raise ValueError(f"to_physical: label_std must have shape ({k},), got {label_std.shape}")
    if input_std.shape not in ((), (p,)):
        raise ValueError(f"to_physical: input_std must be a scalar or ({p},), "
                         f"got {input_std.shape}")
    for name, std in (("label_std", label_std), ("input_std", input_std)):
        if not np.all(np.isfinite(std) & (std > 0)):
            raise ValueError(f"to_physical: {name} must be finite and > 0")
    return jac * label_std[:, None] / input_std


def to_full_grid(jac) -> np.ndarray:
    """Put (..., 7514) Jacobians on the 8575 apStar grid; gap pixels are NaN (`GAP_FILL`)."""
    jac = np.asarray(jac, dtype=float)
    if jac.ndim == 0 or jac.shape[-1] != P:
        raise ValueError(f"to_full_grid: last axis must have {P} pixels, got shape {jac.shape}")
    return apogee.gap_insert(jac, fill=GAP_FILL)


def check_labels(labels, jac, where: str) -> list[str]:
    labels = [str(label) for label in labels]
    if jac.ndim != 2 or jac.shape[0] != len(labels):
        raise ValueError(f"{where}: expected a (K={len(labels)}, P) array for labels {labels}, "
                         f"got shape {jac.shape}")
    return labels
