"""The strongest features of a mean Jacobian, matched to the H-band line list (vacuum Å)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..sdss import apogee
from .units import P, as_7514, check_labels

#: Default half-width (km/s) for matching a feature to a line: one resolution element
#: (13.3 km/s FWHM at R = 22,500) plus a little for the pixel quantisation (4.14 km/s).
MAX_KMS = 15.0


def top_features(mean_jac_k, n: int = 10, min_separation_px: int = 4) -> pd.DataFrame:
    """The n largest peaks of |J| for one label, at least `min_separation_px` apStar pixels
    apart (greedy, strongest first; pixels with J = 0 are never features).

    Columns: rank, pixel_7514, pixel_8575, wavelength_vac (Å), chip, sign (±1), jacobian."""
    j = as_7514(mean_jac_k, "top_features: mean_jac_k")
    if j.ndim != 1:
        raise ValueError(f"top_features: mean_jac_k must be one label's (P,) Jacobian, "
                         f"got shape {j.shape}")
    if not np.all(np.isfinite(j)):
        raise ValueError("top_features: mean_jac_k has non-finite values")
    full = apogee.KEPT_PIXELS
    chosen: list[int] = []
    for p in np.argsort(-np.abs(j), kind="stable"):
        if len(chosen) == n or j[p] == 0:
            break
        if all(abs(int(full[p]) - int(full[q])) >= min_separation_px for q in chosen):
            chosen.append(int(p))
    pix = np.array(chosen, dtype=int)
    return pd.DataFrame({
        "rank": np.arange(1, len(pix) + 1),
        "pixel_7514": pix,
        "pixel_8575": full[pix],
        "wavelength_vac": apogee.wavelength(P)[pix],
        "chip": apogee.chip_of_pixel(pix).astype(str),
        "sign": np.sign(j[pix]).astype(int),
        "jacobian": j[pix],
    })


def match_lines(features: pd.DataFrame, lines: pd.DataFrame | None = None,
                max_kms: float = MAX_KMS, n_lines: int = 3) -> pd.DataFrame:
    """Add the up-to-`n_lines` nearest lines within `max_kms` of each feature's wavelength.

    New columns species_i, lambda_i (vacuum Å), dv_kms_i = c·(λ_line − λ_feature)/λ_feature,
    for i = 1..n_lines, nearest first; empty where fewer lines are close enough. The default
    list (`apogee.load_lines`) holds stellar atomic and molecular lines only: arc-lamp lines
    (Th, Ar, U, Ne) are wavelength calibration, not absorption in the star."""
    lines = apogee.load_lines() if lines is None else lines
    missing = {"species", "vac"} - set(lines.columns)
    if missing:
        raise ValueError(f"match_lines: lines table lacks columns {sorted(missing)}")
    if "wavelength_vac" not in features.columns:
        raise ValueError("match_lines: features need a 'wavelength_vac' column (top_features)")
    lines = lines.drop_duplicates(subset=["species", "vac"])
    species = lines["species"].astype(str).to_numpy()
    vac = lines["vac"].to_numpy(dtype=float)
    out = features.copy()
    cols = {f"{name}_{i}": [] for i in range(1, n_lines + 1)
            for name in ("species", "lambda", "dv_kms")}
    for wl in features["wavelength_vac"].to_numpy(dtype=float):
        dv = apogee.velocity_offset_kms(vac, wl)
        near = [i for i in np.argsort(np.abs(dv), kind="stable")[:n_lines]
                if abs(dv[i]) <= max_kms]
        for rank in range(n_lines):
            hit = near[rank] if rank < len(near) else None
            cols[f"species_{rank + 1}"].append(species[hit] if hit is not None else None)
            cols[f"lambda_{rank + 1}"].append(vac[hit] if hit is not None else np.nan)
            cols[f"dv_kms_{rank + 1}"].append(dv[hit] if hit is not None else np.nan)
    for name, values in cols.items():
        out[name] = pd.Series(values, index=out.index,
                              dtype="str" if name.startswith("species") else float)
    return out


def lines_table(mean_jac, labels, n: int = 10, min_separation_px: int = 4,
                max_kms: float = MAX_KMS, lines: pd.DataFrame | None = None) -> pd.DataFrame:
    """Top features of every label matched to lines: one row per (label, rank)."""
    mean_jac = as_7514(mean_jac, "lines_table: mean_jac")
    labels = check_labels(labels, mean_jac, "lines_table")
    frames = []
    for label, row in zip(labels, mean_jac):
        table = match_lines(top_features(row, n, min_separation_px), lines, max_kms)
        table.insert(0, "label", label)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)
