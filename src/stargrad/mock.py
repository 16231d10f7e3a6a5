"""The embedded mock APOGEE survey: a differentiable generator `flux = f(labels)` on the DR17
8575-pixel grid, red-giant labels with realistic structure, a writer in the exact DR17 file
layout, and the ground truth beside it (true labels, Cramér–Rao bound, efficient weights).

A label vector θ holds the 22 `apogee.ASPCAP_LABELS` in order: Teff (K), log g (dex, cgs),
then [X/H] (dex) for C, C I, N, O, Na, Mg, Al, Si, P, S, K, Ca, Ti, Ti II, V, Cr, Mn, Fe, Co, Ni.
Wavelengths are vacuum Ångström; fluxes are continuum-normalized.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fitsio
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import apogee, provenance, survey

LABELS = apogee.ASPCAP_LABELS
N_LABELS = len(LABELS)
LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}
TRUTH_NAME = "truth.fits"

#: Reference star of the line strengths: Teff (K), log g (dex), all [X/H] = 0.
TEFF_REF, LOGG_REF = 4500.0, 2.5
THETA_REF = 5040.0 / TEFF_REF
#: Gaussian LSF, constant in pixels: R ≈ 22,500 is a FWHM of 3.2 apStar pixels.
LSF_SIGMA_PX = 3.2 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_NARROW_OFFSETS = np.arange(-7, 8)        # ±5 σ of the LSF
_BRACKETT_OFFSETS = np.arange(-40, 41)    # Lorentzian wings
D_MAX = 0.75          # saturated depth of a metal or molecular line
D_MAX_BRACKETT = 0.35
BRACKETT_HWHM_PX = 2.5  # Stark half width (px) at log g = LOGG_REF, before the LSF
BAD_PIXEL_ERROR = 1.0e3
#: Bright OH airglow lines (vacuum Å, SA `airglow.vac.apogee`): sites of sky-line residuals.
AIRGLOW_LINES = (15187.14, 15240.95, 15287.79, 15332.40, 15395.33, 15474.21, 15500.86,
                 15539.71, 15570.16, 15597.63, 15631.44, 15654.95, 15702.54, 15972.60,
                 16030.83, 16079.75, 16128.61, 16194.62, 16235.79, 16270.32, 16302.28,
                 16350.65, 16388.49, 16414.74, 16475.65, 16502.37, 16553.81, 16609.99,
                 16692.38, 16708.65, 16724.04, 16733.67, 16840.48, 16903.68)
#: 12CO Δv=3 band heads (vacuum Å), where the CO forest is densest and strongest.
CO_BAND_HEADS = (15581.6, 15780.3, 15982.4, 16189.6, 16400.6, 16618.7, 16840.9)

_LINE_SEED = 20170543  # fixes the defaults and forest positions of the line list

# species -> (label, ionisation energy of the neutral in eV or None for an ion,
#             default χ eV, default log gf, log τ of the median line at the reference star,
#             log g coefficient of log τ)
# Lines of species without an aspcap label (_FOLLOW_FE) follow [Fe/H].
_SPECIES = {
    "Fe I": ("Fe", 7.90, 5.5, -0.5, -0.2, 0.0),
    "Ni I": ("Ni", 7.64, 5.4, -0.3, -0.5, 0.0),
    "Si I": ("Si", 8.15, 6.0, -0.4, 0.1, 0.0),
    "Mg I": ("Mg", 7.65, 5.9, -0.8, 0.2, 0.1),   # pressure-broadened wings: log g sensitive
    "Al I": ("Al", 5.99, 4.1, -0.2, 0.2, 0.0),
    "Ti I": ("Ti", 6.83, 2.0, -1.5, -0.5, 0.0),
    "Ti II": ("Ti2", None, 3.1, -2.0, -0.9, -1.0 / 3.0),
    "V I": ("V", 6.75, 2.1, -1.2, -1.3, 0.0),
    "Cr I": ("Cr", 6.77, 4.7, 0.0, -0.8, 0.0),
    "Mn I": ("Mn", 7.43, 4.9, -0.5, -0.5, 0.0),
    "Co I": ("Co", 7.88, 3.4, -1.2, -1.2, 0.0),
    "Ca I": ("Ca", 6.11, 4.5, -0.5, -0.3, 0.0),
    "Ca II": ("Ca", None, 7.5, 0.0, -1.2, -1.0 / 3.0),
    "K I": ("K", 4.34, 2.67, -0.5, -0.4, 0.0),
    "Na I": ("Na", 5.14, 3.75, -0.5, -1.0, 0.0),
    "S I": ("S", 10.36, 8.7, 0.3, -0.9, 0.0),
    "P I": ("P", 10.49, 7.2, 0.0, -1.5, 0.0),
    "C I": ("C1", 11.26, 9.6, 0.0, -0.9, 0.0),
    "Ce II": ("Fe", None, 0.8, -1.5, -1.2, -1.0 / 3.0),
    "Nd II": ("Fe", None, 0.7, -1.5, -1.5, -1.0 / 3.0),
    "Yb II": ("Fe", None, 3.0, -1.0, -1.4, -1.0 / 3.0),
    "Cu I": ("Fe", 7.73, 5.4, -0.5, -1.3, 0.0),
    "Ge I": ("Fe", 7.90, 5.0, -0.5, -1.5, 0.0),
    "Rb I": ("Fe", 4.18, 1.6, -0.5, -1.5, 0.0),
}
_FOLLOW_FE = ("Ce II", "Nd II", "Yb II", "Cu I", "Ge I", "Rb I")
# molecule -> (abundance labels, window element of its forest, effective excitation χ_eff eV
#              (negative: stronger when cooler), log g coefficient, log τ range of forest lines,
#              mean spacing of forest lines in Å)
_MOLECULES = {
    "12CO": (("C",), "C", -2.5, -0.15, (-1.9, -0.9), 1.6),
    "CN": (("C", "N"), "N", -3.5, -0.1, (-1.9, -0.9), 1.6),
    "OH": (("O",), "O", -6.0, -0.1, (-1.2, -0.3), 2.0),
}
_CATALOGUE_MOLECULES = {"12CO": "12CO", "13CO": "12CO", "CN": "CN", "OH": "OH"}
_BRACKETT_CHI_EFF = 8.0   # steep: Brackett lines grow quickly above ~4800 K
_BRACKETT_GAMMA = -1.0 / 3.0


# --------------------------------------------------------------------------- line list

def _merged_windows(element: str) -> list[tuple[float, float]]:
    """Active DR17 windows of an element (vacuum Å), overlapping ones merged."""
    win = apogee.load_windows()
    rows = win[win["element"] == element].sort_values("start_vac_angstrom")
    merged: list[list[float]] = []
    for start, end in zip(rows["start_vac_angstrom"], rows["end_vac_angstrom"]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _atomic_lines(rng: np.random.Generator) -> pd.DataFrame:
    """Atomic lines of the catalogue plus one line at the centre of every active window of an
    aspcap element that holds none of its lines; log τ, χ_eff and γ per line."""
    cat = apogee.load_lines()
    cat = cat[cat["species"].isin(list(_SPECIES))].copy()
    # the catalogue repeats a few lines (two sources within 0.01 Å): keep the one with atomic data
    cat = cat.sort_values(["species", "vac", "chi_eV"], na_position="last")
    near = cat["vac"].diff().abs().lt(0.05) & cat["species"].eq(cat["species"].shift())
    cat = cat[~near]
    rows = [dict(species=s, wavelength=w, chi=c, loggf=g)
            for s, w, c, g in zip(cat["species"], cat["vac"], cat["chi_eV"], cat["loggf"])]
    own_species: dict[str, list[str]] = {}
    for species, spec in _SPECIES.items():
        if species not in _FOLLOW_FE:
            own_species.setdefault(spec[0], []).append(species)
    for label, species_of_label in own_species.items():
        waves = cat.loc[cat["species"].isin(species_of_label), "vac"].to_numpy()
        for start, end in _merged_windows(apogee.window_element(label)):
            if not np.any((waves >= start) & (waves <= end)):
                rows.append(dict(species=species_of_label[0], wavelength=0.5 * (start + end),
                                 chi=np.nan, loggf=np.nan, window_centre=True))
    lines = pd.DataFrame(rows)
    lines["window_centre"] = lines.get("window_centre", False)
    lines["window_centre"] = lines["window_centre"].fillna(False).astype(bool)
    spec = lines["species"].map(_SPECIES)
    label = spec.str[0]
    ion = spec.str[1]
    default_chi, default_loggf = spec.str[2], spec.str[3]
    chi = lines["chi"].fillna(default_chi).to_numpy(float)
    jitter = rng.uniform(-0.7, 0.7, len(lines)) - 0.5 * lines["window_centre"].to_numpy()
    loggf = lines["loggf"].fillna(default_loggf + jitter).to_numpy(float)
    # line/continuum opacity with H⁻ continuum: neutrals of majority-ionized elements scale as
    # 10^(-θ(χ - I + 0.75)), majority ions as 10^(-θ(χ + 0.75)) / P_e (hence γ = -1/3)
    chi_eff = np.where(ion.isna(), chi + 0.75, chi - ion.fillna(0.0).to_numpy(float) + 0.75)
    strength = loggf - THETA_REF * chi_eff
    centre = spec.str[4].to_numpy(float)
    median = pd.Series(strength).groupby(lines["species"].to_numpy()).transform("median")
    log_tau = np.clip(centre + strength - median.to_numpy(), -2.5, 1.2)
    return pd.DataFrame(dict(species=lines["species"], labels=label.map(lambda s: (s,)),
                             wavelength=lines["wavelength"].to_numpy(float), log_tau_ref=log_tau,
                             chi_eff=chi_eff, gamma=spec.str[5].to_numpy(float), kind="atomic"))


def _molecular_lines(rng: np.random.Generator) -> pd.DataFrame:
    """Molecular forests (CO in the C windows, CN in the N windows, OH in the O windows) and
    the catalogue's molecular band markers as stronger lines."""
    frames = []
    cat = apogee.load_lines()
    for molecule, (labels, element, chi_eff, gamma, (lo, hi), spacing) in _MOLECULES.items():
        waves = []
        for start, end in _merged_windows(element):
            n = max(1, int(round((end - start) / spacing)))
            waves.append(np.sort(rng.uniform(start, end, n)))
        waves = np.concatenate(waves)
        log_tau = rng.uniform(lo, hi, len(waves))
        if molecule == "12CO":
            past_head = np.array([min((w - h for h in CO_BAND_HEADS if w >= h), default=1e9)
                                  for w in waves])
            log_tau = log_tau + 0.6 * np.exp(-past_head / 25.0)
        markers = cat.loc[cat["species"].map(_CATALOGUE_MOLECULES).eq(molecule)]
        marker_tau = np.where(markers["species"].eq("13CO"), -1.2, hi)
        frames.append(pd.DataFrame(dict(
            species=molecule, labels=[labels] * (len(waves) + len(markers)),
            wavelength=np.concatenate([waves, markers["vac"].to_numpy(float)]),
            log_tau_ref=np.concatenate([log_tau, marker_tau]),
            chi_eff=chi_eff, gamma=gamma, kind="molecular")))
    return pd.concat(frames, ignore_index=True)


def _brackett_lines() -> pd.DataFrame:
    cat = apogee.load_lines()
    br = cat[cat["species"].str.startswith("H I Br")]
    n_upper = br["species"].str.replace("H I Br", "").astype(int).to_numpy()
    return pd.DataFrame(dict(species=br["species"].to_numpy(), labels=[()] * len(br),
                             wavelength=br["vac"].to_numpy(float),
                             log_tau_ref=-0.7 - 0.08 * (n_upper - 11),
                             chi_eff=_BRACKETT_CHI_EFF, gamma=_BRACKETT_GAMMA, kind="brackett"))


@lru_cache(maxsize=1)
def line_table() -> pd.DataFrame:
    """Every feature of the generator, deterministic: species, labels (tuple of aspcap labels
    whose [X/H] enter log τ), wavelength (vacuum Å), pixel (8575 grid), log_tau_ref (log τ at
    Teff 4500 K, log g 2.5, solar), chi_eff (eV), gamma (d log τ / d log g), kind
    ('atomic', 'molecular', 'brackett')."""
    rng = np.random.default_rng(_LINE_SEED)
    table = pd.concat([_atomic_lines(rng), _molecular_lines(rng), _brackett_lines()],
                      ignore_index=True)
    table["pixel"] = apogee.pixel_of_wavelength(table["wavelength"].to_numpy())
    inside = (table["pixel"] > -10) & (table["pixel"] < apogee.N_PIX + 10)
    return table[inside].reset_index(drop=True)


def _line_group(kind_mask: np.ndarray, table: pd.DataFrame) -> dict:
    sub = table[kind_mask]
    abund = np.zeros((len(sub), N_LABELS), np.float32)
    for row, labels in enumerate(sub["labels"]):
        for label in labels:
            abund[row, LABEL_INDEX[label]] = 1.0
    return dict(pixel=sub["pixel"].to_numpy(np.float32), abund=abund,
                log_tau_ref=sub["log_tau_ref"].to_numpy(np.float32),
                chi_eff=sub["chi_eff"].to_numpy(np.float32),
                gamma=sub["gamma"].to_numpy(np.float32))


@lru_cache(maxsize=1)
def _tables() -> dict:
    table = line_table()
    brackett = table["kind"].eq("brackett").to_numpy()
    chip_mask = np.zeros(apogee.N_PIX, np.float32)
    chip_mask[apogee.KEPT_PIXELS] = 1.0
    return dict(narrow=_line_group(~brackett, table), brackett=_line_group(brackett, table),
                chip_mask=chip_mask)


# --------------------------------------------------------------------------- generator

def _line_opacity(theta, group: dict, d_max: float):
    """Peak optical depth of every line: depth = d_max·τ/(1+τ) from the curve of growth
    log τ = log τ_ref + Σ[X/H] − (θ − θ_ref)·χ_eff + γ·(log g − 2.5), θ = 5040/Teff."""
    theta_t = 5040.0 / theta[0]
    log_tau = (group["log_tau_ref"] + group["abund"] @ theta
               - (theta_t - THETA_REF) * group["chi_eff"]
               + group["gamma"] * (theta[1] - LOGG_REF))
    tau = 10.0 ** log_tau
    depth = d_max * tau / (1.0 + tau)
    return -jnp.log1p(-depth)


def _scatter(opacity, centre, offsets, amplitude, profile):
    base = jnp.floor(centre).astype(jnp.int32)
    idx = base[:, None] + jnp.asarray(offsets, jnp.int32)[None, :]
    weights = profile(idx - centre[:, None])
    return opacity.at[idx].add(amplitude[:, None] * weights, mode="drop")


@jax.jit
def spectrum(theta, shift_px=0.0):
    """Normalized model flux (8575,) for labels θ (22,), optionally Doppler-shifted by
    `shift_px` pixels (4.14 km/s each). Chip gaps and edges are exactly 0; elsewhere
    0 < flux ≤ 1. Lines are pixel-sampled Gaussians of the LSF (the same as scatter-adding
    them at sub-pixel positions and convolving with the LSF); Brackett lines are Lorentzians
    whose Stark width grows with log g, seen through the LSF."""
    tables = _tables()
    theta = jnp.asarray(theta)
    narrow, brackett = tables["narrow"], tables["brackett"]
    opacity = jnp.zeros(apogee.N_PIX, theta.dtype)
    opacity = _scatter(opacity, narrow["pixel"] + shift_px, _NARROW_OFFSETS,
                       _line_opacity(theta, narrow, D_MAX),
                       lambda dx: jnp.exp(-0.5 * (dx / LSF_SIGMA_PX) ** 2))
    hwhm = jnp.hypot(BRACKETT_HWHM_PX * 10.0 ** (0.3 * (theta[1] - LOGG_REF)),
                     np.sqrt(2.0 * np.log(2.0)) * LSF_SIGMA_PX)
    opacity = _scatter(opacity, brackett["pixel"] + shift_px, _BRACKETT_OFFSETS,
                       _line_opacity(theta, brackett, D_MAX_BRACKETT),
                       lambda dx: 1.0 / (1.0 + (dx / hwhm) ** 2))
    return jnp.exp(-opacity) * tables["chip_mask"]


#: d flux / d θ (8575, 22) of one star; vmap it over stars.
jacobian = jax.jit(jax.jacfwd(spectrum))


@jax.jit
def _spectra(thetas, shifts):
    return jax.vmap(spectrum)(thetas, shifts)


def batch_spectra(thetas, shifts=None, batch_size: int = 128) -> np.ndarray:
    """Model fluxes (N, 8575) float32 of label rows (N, 22), in fixed-size jitted batches."""
    thetas = _check_thetas(thetas, "batch_spectra")
    shifts = np.zeros(len(thetas)) if shifts is None else np.asarray(shifts, float)
    out = np.empty((len(thetas), apogee.N_PIX), np.float32)
    for start in range(0, len(thetas), batch_size):
        stop = min(start + batch_size, len(thetas))
        pad = batch_size - (stop - start)
        th = np.pad(thetas[start:stop], ((0, pad), (0, 0)), mode="edge")
        sh = np.pad(shifts[start:stop], (0, pad), mode="edge")
        out[start:stop] = np.asarray(_spectra(th.astype(np.float32), sh.astype(np.float32)))[
            :stop - start]
    return out


def _check_thetas(thetas, where: str) -> np.ndarray:
    thetas = np.asarray(thetas, dtype=float)
    if thetas.ndim != 2 or thetas.shape[1] != N_LABELS:
        raise ValueError(f"{where}: labels must have shape (N, {N_LABELS}) in the order "
                         f"{', '.join(LABELS)}; got {thetas.shape}")
    if not np.all(np.isfinite(thetas)) or np.any(thetas[:, 0] <= 0):
        raise ValueError(f"{where}: labels must be finite with Teff > 0 K")
    return thetas
