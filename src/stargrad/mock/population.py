"""The mock's stars: red-giant labels along a giant branch with high- and low-α disks, an
accreted halo, red clump vs RGB, seismic scaling relations and an M13-like cluster."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import LABELS

#: [X/Fe] pattern of the field: base + k_alpha·[Mg/Fe] + k_feh·[Fe/H] + N(0, scatter).
#: In the disk Al follows Mg closely, so a model can learn Al from Mg lines ("cheat").
_XFE_PATTERN = {  # label: (base, k_alpha, k_feh, scatter)
    "C": (-0.05, 0.3, 0.0, 0.05), "N": (0.30, 0.0, -0.1, 0.06), "O": (0.0, 0.85, 0.0, 0.03),
    "Na": (0.02, 0.2, 0.0, 0.07), "Al": (0.0, 1.0, 0.0, 0.03), "Si": (0.0, 0.7, 0.0, 0.025),
    "P": (0.05, 0.4, 0.0, 0.10), "S": (0.0, 0.8, 0.0, 0.05), "K": (0.0, 0.3, 0.0, 0.05),
    "Ca": (0.0, 0.5, 0.0, 0.03), "Ti": (-0.02, 0.6, 0.0, 0.04), "V": (0.0, 0.3, 0.0, 0.07),
    "Cr": (0.0, 0.0, 0.0, 0.03), "Mn": (-0.05, -0.3, 0.2, 0.03), "Co": (0.02, 0.3, 0.0, 0.06),
    "Ni": (0.0, 0.1, 0.03, 0.02),
}
#: labels that are a second measurement of another element: [X/H] = parent + N(0, scatter)
_TWIN_LABELS = {"C1": ("C", 0.04), "Ti2": ("Ti", 0.04)}
#: M13-like cluster (Harris catalogue-like values)
CLUSTER = dict(name="M13", feh=-1.53, feh_scatter=0.02, mgfe=0.30, mgfe_scatter=0.02,
               al_range=(-0.2, 1.2), mass=0.80, ra=250.4217, dec=36.4613)
NU_MAX_SUN, DNU_SUN, TEFF_SUN, LOGG_SUN = 3090.0, 135.1, 5777.0, 4.438


def _rgb_teff(logg, feh, mass):
    """Teff (K) along a red-giant branch: cooler up the branch, hotter when metal-poor or
    more massive at fixed log g."""
    return 4580.0 + 380.0 * (logg - 2.5) - 250.0 * feh + 120.0 * (mass - 1.2)


def _seismic(teff, logg, mass):
    """(radius R☉, ν_max μHz, Δν μHz) from the scaling relations (Huber+2011 solar values)."""
    radius = np.sqrt(mass * 10.0 ** (LOGG_SUN - logg))
    numax = NU_MAX_SUN * 10.0 ** (logg - LOGG_SUN) * (teff / TEFF_SUN) ** -0.5
    dnu = DNU_SUN * np.sqrt(mass) * radius ** -1.5
    return radius, numax, dnu


def _abundances(rng, n, feh, mgfe, mass, is_rc):
    """[X/H] of every abundance label from a star's [Fe/H], [Mg/Fe], mass and state."""
    xh = {"Fe": feh, "Mg": mgfe + feh}
    for label, (base, k_alpha, k_feh, scatter) in _XFE_PATTERN.items():
        xfe = base + k_alpha * mgfe + k_feh * feh + rng.normal(0.0, scatter, n)
        if label == "C":   # first dredge-up: more massive giants lose more C, gain more N
            xfe = xfe - 0.12 * (mass - 1.2) - 0.06 * is_rc
        if label == "N":
            xfe = xfe + 0.25 * (mass - 1.2) + 0.08 * is_rc
        xh[label] = xfe + feh
    for label, (parent, scatter) in _TWIN_LABELS.items():
        xh[label] = xh[parent] + rng.normal(0.0, scatter, n)
    return xh


def _field_stars(rng, n: int) -> pd.DataFrame:
    tail = rng.random(n) < 0.10
    feh = np.where(tail, -0.6 - rng.exponential(0.35, n), rng.normal(-0.12, 0.22, n))
    feh = np.clip(feh, -1.8, 0.45)
    high_alpha = rng.random(n) < 0.1 + 0.6 / (1.0 + np.exp((feh + 0.35) / 0.12))
    mgfe = np.where(high_alpha, np.clip(0.30 - 0.22 * (feh + 0.5), 0.12, 0.32),
                    0.04 - 0.10 * feh) + rng.normal(0.0, 0.025, n)
    # accreted halo (Gaia-Enceladus-like): half the stars below [Fe/H] = -0.8, on a lower
    # [Mg/Fe] sequence and Al-poor, [Al/Fe] ≈ -0.25 (Hasselquist+2021)
    accreted = (feh < -0.8) & (rng.random(n) < 0.5)
    mgfe = np.where(accreted, np.clip(0.22 - 0.25 * (feh + 1.2), 0.05, 0.30)
                    + rng.normal(0.0, 0.03, n), mgfe)
    mass = np.where(high_alpha | accreted, np.clip(rng.normal(1.0, 0.08, n), 0.8, 1.3),
                    np.clip(0.85 + rng.gamma(2.0, 0.25, n), 0.85, 3.0))
    is_rc = rng.random(n) < 0.30
    logg_rgb = 0.8 + 2.7 * rng.random(n) ** 0.7
    logg_rc = np.clip(2.40 + 0.18 * (mass - 1.2) + rng.normal(0.0, 0.06, n), 2.2, 2.9)
    logg = np.where(is_rc, logg_rc, logg_rgb)
    teff = _rgb_teff(logg, feh, mass) + np.where(is_rc, 100.0, 0.0) + rng.normal(0.0, 40.0, n)
    teff = np.clip(teff, 3850.0, 5350.0)
    dpi1 = np.where(is_rc, 300.0, 60.0 + 30.0 * np.clip((logg - 1.8) / 1.7, 0.0, 1.0))
    dpi1 = dpi1 * (1.0 + rng.normal(0.0, 0.10, n))
    xh = _abundances(rng, n, feh, mgfe, mass, is_rc)
    xh["Al"] = xh["Al"] - 0.45 * accreted
    return pd.DataFrame({"teff": teff, "logg": logg, **xh, "mass": mass, "dpi1": dpi1,
                         "evstate": is_rc.astype(np.int16), "is_cluster": False})


def _cluster_stars(rng, n: int) -> pd.DataFrame:
    """M13-like: one [Fe/H] and [Mg/Fe], a wide Al spread with Na–Al correlation and O–Al
    anticorrelation (multiple populations); all on the RGB."""
    c = CLUSTER
    feh = c["feh"] + rng.normal(0.0, c["feh_scatter"], n)
    mgfe = c["mgfe"] + rng.normal(0.0, c["mgfe_scatter"], n)
    mass = np.full(n, c["mass"])
    lo, hi = c["al_range"]
    # stratified draw: the spread spans the full range even for a handful of stars
    alfe = lo + (hi - lo) * (rng.permutation(n) + rng.random(n)) / max(n, 1)
    logg = 0.8 + 2.5 * rng.random(n)
    teff = np.clip(_rgb_teff(logg, feh, mass) + rng.normal(0.0, 30.0, n), 3850.0, 5350.0)
    is_rc = np.zeros(n, bool)
    xh = _abundances(rng, n, feh, mgfe, mass, is_rc)
    second_gen = alfe - lo
    xh["Al"] = alfe + feh
    xh["Na"] = feh + 0.4 * second_gen + rng.normal(0.0, 0.05, n)
    xh["O"] = feh + 0.45 - 0.35 * second_gen + rng.normal(0.0, 0.05, n)
    xh["N"] = xh["N"] + 0.5 * second_gen
    dpi1 = (60.0 + 30.0 * np.clip((logg - 1.8) / 1.7, 0.0, 1.0)) * (1 + rng.normal(0, 0.1, n))
    return pd.DataFrame({"teff": teff, "logg": logg, **xh, "mass": mass, "dpi1": dpi1,
                         "evstate": is_rc.astype(np.int16), "is_cluster": True})


def draw_labels(n_field: int, n_cluster: int, seed: int, n_anomalies: int = 8) -> pd.DataFrame:
    """True labels of a mock survey: `n_field` field giants then `n_cluster` M13-like stars.

    Columns: the 22 aspcap labels (teff K, logg dex, [X/H] dex), mass (M☉), radius (R☉),
    numax and dnu (μHz, scaling relations), dpi1 (s), evstate (0 RGB, 1 RC), snr,
    is_cluster, anomaly ('', 'continuum' or 'binary'; field stars only)."""
    for name, value in (("n_field", n_field), ("n_cluster", n_cluster),
                        ("n_anomalies", n_anomalies)):
        if int(value) != value or value < 0:
            raise ValueError(f"draw_labels: {name} must be a non-negative integer, got {value!r}")
    if n_anomalies > n_field:
        raise ValueError(f"draw_labels: n_anomalies={n_anomalies} exceeds n_field={n_field}")
    if n_field + n_cluster == 0:
        raise ValueError("draw_labels: n_field + n_cluster must be at least 1")
    rng = np.random.default_rng([int(seed), 1])
    table = pd.concat([_field_stars(rng, n_field), _cluster_stars(rng, n_cluster)],
                      ignore_index=True)
    radius, numax, dnu = _seismic(table["teff"].to_numpy(), table["logg"].to_numpy(),
                                  table["mass"].to_numpy())
    table["radius"], table["numax"], table["dnu"] = radius, numax, dnu
    snr = np.clip(150.0 * np.exp(rng.normal(0.0, 0.5, len(table))), 40.0, 600.0)
    table["snr"] = snr.astype(np.float32).astype(float)   # the catalogue's float32 SNR exactly
    anomaly = np.full(len(table), "", dtype=object)
    odd = rng.choice(n_field, size=n_anomalies, replace=False)
    anomaly[odd[: n_anomalies // 2]] = "continuum"
    anomaly[odd[n_anomalies // 2:]] = "binary"
    table["anomaly"] = anomaly
    columns = list(LABELS) + ["mass", "radius", "dnu", "numax", "dpi1", "evstate", "snr",
                              "is_cluster", "anomaly"]
    return table[columns]
