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
    rows = [dict(species=s, wavelength=w, chi=c, loggf=g, window_centre=False)
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
    spec = lines["species"].map(_SPECIES)
    label = spec.str[0]
    ion = spec.str[1]
    default_chi, default_loggf = spec.str[2], spec.str[3]
    chi = lines["chi"].fillna(default_chi).to_numpy(float)
    # lines without atomic data: default χ and a log gf spread around the species default;
    # window-centre lines (no catalogue line there) are taken weaker
    jitter = rng.uniform(-0.7, 0.7, len(lines)) - 0.5 * lines["window_centre"].to_numpy(float)
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


# --------------------------------------------------------------------------- labels

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


# --------------------------------------------------------------------------- catalogue

# (telescope, field, location id, RA°, Dec°, share of the field stars)
_FIELDS = (("apo25m", "K2_C5_121+36", 5251, 130.1, 17.6, 0.25),
           ("apo25m", "120+12", 4424, 8.2, 74.6, 0.20),
           ("apo25m", "060+00", 4151, 290.9, 24.2, 0.20),
           ("apo25m", "TESS_CVZ_N", 5702, 270.0, 66.6, 0.20),
           ("lco25m", "300-04", 6312, 187.4, -66.7, 0.15))
_CLUSTER_FIELD = ("apo25m", CLUSTER["name"], 4325, CLUSTER["ra"], CLUSTER["dec"])
#: catalogue label uncertainty at S/N = 100 (DR12-like, apogee-facts §1.4); scales as 100/S/N
_NOMINAL_ERR = {"teff": 40.0, "logg": 0.08, "C": 0.035, "C1": 0.06, "N": 0.067, "O": 0.026,
                "Na": 0.095, "Mg": 0.029, "Al": 0.063, "Si": 0.043, "P": 0.10, "S": 0.048,
                "K": 0.063, "Ca": 0.040, "Ti": 0.041, "Ti2": 0.08, "V": 0.20, "Cr": 0.05,
                "Mn": 0.048, "Fe": 0.035, "Co": 0.07, "Ni": 0.043}
_ALPHA_LABELS = ("O", "Mg", "Si", "S", "Ca", "Ti")
ASPCAPFLAG_BITS = {"SN_WARN": 11, "STAR_BAD": 23, "SN_BAD": 27}
STARFLAG_BITS = {"PERSIST_LOW": 11}


def _apogee_id(ra: float, dec: float) -> str:
    """2MASS-style designation 2MHHMMSSss±DDMMSSs of a position in degrees."""
    hours = ra / 15.0
    hh, rem = divmod(round(hours * 360000), 360000)
    mm, ss = divmod(rem, 6000)
    sign = "-" if dec < 0 else "+"
    dd, rem = divmod(round(abs(dec) * 36000), 36000)
    dm, ds = divmod(rem, 600)
    return f"2M{hh % 24:02d}{mm:02d}{ss:04d}{sign}{dd:02d}{dm:02d}{ds:03d}"


def _positions(rng, truth: pd.DataFrame) -> pd.DataFrame:
    """Telescope, field, location id, RA/Dec and a unique APOGEE_ID for every star."""
    n = len(truth)
    is_cluster = truth["is_cluster"].to_numpy()
    shares = np.array([f[5] for f in _FIELDS])
    pick = rng.choice(len(_FIELDS), size=n, p=shares / shares.sum())
    fields = [_CLUSTER_FIELD if c else _FIELDS[k][:5] for c, k in zip(is_cluster, pick)]
    radius_deg = np.where(is_cluster, 0.15, 1.5) * np.sqrt(rng.random(n))
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    dec = np.array([f[4] for f in fields]) + radius_deg * np.sin(angle)
    ra = (np.array([f[3] for f in fields])
          + radius_deg * np.cos(angle) / np.cos(np.radians(dec))) % 360.0
    ids, seen = [], set()
    for i in range(n):
        ident = _apogee_id(ra[i], dec[i])
        while ident in seen:   # nudge by 0.1" until unique
            dec[i] += 1.0 / 36000.0
            ident = _apogee_id(ra[i], dec[i])
        seen.add(ident)
        ids.append(ident)
    return pd.DataFrame({"APOGEE_ID": ids, "TELESCOPE": [f[0] for f in fields],
                         "FIELD": [f[1] for f in fields],
                         "LOCATION_ID": np.array([f[2] for f in fields], np.int32),
                         "RA": ra, "DEC": dec})


def _allstar_table(rng, truth: pd.DataFrame, meta: pd.DataFrame, persistence: np.ndarray,
                   missing_rate: float) -> pd.DataFrame:
    """DR17-named allStar columns: true labels ([X/Fe] except FE_H), errors ∝ 1/S/N, flags,
    and −9999 for a `missing_rate` of each label independently."""
    n = len(truth)
    snr = truth["snr"].to_numpy()
    aspcapflag = np.zeros(n, np.int64)
    aspcapflag |= np.where(snr < 70, 1 << ASPCAPFLAG_BITS["SN_WARN"], 0)
    aspcapflag |= np.where(snr < 50, (1 << ASPCAPFLAG_BITS["SN_BAD"])
                           | (1 << ASPCAPFLAG_BITS["STAR_BAD"]), 0)
    starflag = np.where(persistence, 1 << STARFLAG_BITS["PERSIST_LOW"], 0).astype(np.int64)
    binary = truth["anomaly"].eq("binary").to_numpy()
    vscatter = np.where(binary, rng.uniform(5.0, 20.0, n), rng.lognormal(np.log(0.15), 0.6, n))
    nvisits = rng.integers(1, 13, n).astype(np.int32)
    feh = truth["Fe"].to_numpy()
    alpha_m = truth[list(_ALPHA_LABELS)].to_numpy().mean(axis=1) - feh
    cols = {**meta, "SNR": snr.astype(np.float32), "STARFLAG": starflag,
            "ASPCAPFLAG": aspcapflag, "VSCATTER": vscatter.astype(np.float32),
            "NVISITS": nvisits,
            "M_H": feh.astype(np.float32), "M_H_ERR": (0.027 * 100 / snr).astype(np.float32),
            "ALPHA_M": alpha_m.astype(np.float32),
            "ALPHA_M_ERR": (0.013 * 100 / snr).astype(np.float32)}
    for label in LABELS:
        value = truth[label].to_numpy()
        if label not in ("teff", "logg", "Fe"):
            value = value - feh
        error = _NOMINAL_ERR[label] * 100.0 / snr
        missing = rng.random(n) < missing_rate
        column = apogee.allstar_column(label)
        cols[column] = np.where(missing, apogee.MAGIC_NUMBER, value).astype(np.float32)
        cols[column + "_ERR"] = np.where(missing, apogee.MAGIC_NUMBER, error).astype(np.float32)
    cols["MEMBER"] = np.where(truth["is_cluster"].to_numpy(), CLUSTER["name"], "")
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------- observed spectra

def _continuum_distortion(rng) -> np.ndarray:
    """A bad continuum (≤ 1): a tilt dropping 3–8% at one end and a 2–6% curvature."""
    x = np.linspace(-1.0, 1.0, apogee.N_PIX) * rng.choice([-1.0, 1.0])
    return 1.0 - rng.uniform(0.03, 0.08) * (1.0 + x) / 2.0 - rng.uniform(0.02, 0.06) * x ** 2


def _binary_companion(rng, theta: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A hotter, smaller companion: (labels, flux ratio, velocity shift in pixels)."""
    companion = theta.copy()
    companion[0] += rng.uniform(200.0, 500.0)
    companion[1] += rng.uniform(0.5, 1.5)
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(8.0, 15.0)   # 33–62 km/s
    return companion, rng.uniform(0.3, 0.6), shift


def _observe(rng, model: np.ndarray, snr: float, persistence: bool, sky_prob: float):
    """Noisy flux and error on the 8575 grid from a noiseless flux: σ = 1/S/N inside the chips,
    0 in the gaps; persistence and sky-line residual pixels get a perturbed flux and an error
    of BAD_PIXEL_ERROR. Returns (flux, error, number of bad pixels)."""
    inside = np.zeros(apogee.N_PIX, bool)
    inside[apogee.KEPT_PIXELS] = True
    error = np.where(inside, 1.0 / snr, 0.0)
    flux = np.where(inside, model + rng.normal(0.0, 1.0, apogee.N_PIX) / snr, 0.0)
    bad = np.zeros(apogee.N_PIX, bool)
    if persistence:
        blue_start, blue_stop = apogee.CHIPS["blue"]
        start = rng.integers(blue_start, blue_stop - 1000)
        stop = start + rng.integers(200, 1000)
        ramp = np.linspace(0.0, 1.0, stop - start)
        flux[start:stop] += rng.uniform(0.05, 0.2) * np.sin(np.pi * ramp)
        bad[start:stop] = True
    for line in AIRGLOW_LINES:
        if rng.random() < sky_prob:
            centre = int(round(float(apogee.pixel_of_wavelength(line))))
            span = slice(centre - 2, centre + 3)
            flux[span] += rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.4)
            bad[span] = True
    bad &= inside
    error[bad] = BAD_PIXEL_ERROR
    flux[~inside] = 0.0
    return flux.astype(np.float32), error.astype(np.float32), int(bad.sum())


def write_mock_survey(root, *, n_field: int, n_cluster: int, seed: int, n_anomalies: int = 8,
                      missing_rate: float = 0.02, seismic_fraction: float = 0.7,
                      bad_pixel_fraction: float = 0.1, config_digest: str | None = None,
                      batch_size: int = 128, log=print) -> None:
    """Write a deterministic mock survey under `root` in the DR17 layout: the allStar
    catalogue, one aspcapStar per star (HDU1 noisy flux, HDU2 error, HDU3 noiseless model
    without anomalies, HDU4 the star's allStar row), seismic.csv for a `seismic_fraction` of
    field stars, and truth.fits. `bad_pixel_fraction` is the probability that a star has a
    persistence stretch on the blue chip, and that each airglow line leaves a residual."""
    for name, value in (("missing_rate", missing_rate), ("seismic_fraction", seismic_fraction),
                        ("bad_pixel_fraction", bad_pixel_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"write_mock_survey: {name} must lie in [0, 1], got {value!r}")
    root = Path(root)
    truth = draw_labels(n_field, n_cluster, seed, n_anomalies)
    rng = np.random.default_rng([int(seed), 2])
    meta = _positions(rng, truth)
    persistence = rng.random(len(truth)) < bad_pixel_fraction
    allstar = _allstar_table(rng, truth, meta, persistence, missing_rate)
    cards = provenance.header_cards(config_digest, seed=seed)
    rows = survey.to_records(allstar)
    thetas = truth[list(LABELS)].to_numpy(float)
    anomaly = truth["anomaly"].to_numpy()
    n = len(truth)
    n_bad = 0
    log(f"mock survey: {n} stars ({n_field} field, {n_cluster} cluster) -> {root}")
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        models = batch_spectra(thetas[start:stop], batch_size=batch_size)
        for i in range(start, stop):
            star_rng = np.random.default_rng([int(seed), 3, i])
            model = models[i - start]
            clean = model
            if anomaly[i] == "continuum":
                clean = model * _continuum_distortion(star_rng)
            elif anomaly[i] == "binary":
                companion, ratio, shift = _binary_companion(star_rng, thetas[i])
                second = np.asarray(spectrum(companion.astype(np.float32), np.float32(shift)))
                clean = (model + ratio * second) / (1.0 + ratio)
            flux, error, bad = _observe(star_rng, clean, truth["snr"].iat[i], persistence[i],
                                        bad_pixel_fraction)
            n_bad += bad > 0
            path = root / survey.aspcapstar_relpath(meta["TELESCOPE"].iat[i],
                                                    meta["FIELD"].iat[i], meta["APOGEE_ID"].iat[i])
            survey.write_aspcapstar(path, flux, error, model=model,
                                    header={**cards, "OBJID": meta["APOGEE_ID"].iat[i]},
                                    row=rows[i:i + 1])
            if (i + 1) % 500 == 0 or i + 1 == n:
                log(f"mock survey: {i + 1}/{n} aspcapStar files written")
    # the catalogues last: a complete allStar implies every spectrum it lists exists
    _write_seismic(root / survey.SEISMIC_NAME, rng, meta["APOGEE_ID"], truth, seismic_fraction)
    _write_truth(root / TRUTH_NAME, meta["APOGEE_ID"], truth, cards)
    survey.write_allstar(root / survey.ALLSTAR_NAME, allstar, header=cards)
    log(f"mock survey: {n_bad} stars with bad pixels, {int(persistence.sum())} with persistence, "
        f"{int((anomaly != '').sum())} anomalies")


def _write_truth(path, ids, truth: pd.DataFrame, cards: dict) -> None:
    table = truth.copy()
    table.insert(0, "APOGEE_ID", ids.to_numpy())
    with provenance.atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header=cards)
            fits.write(survey.to_records(table), extname="TRUTH")


def read_truth(path) -> pd.DataFrame:
    """The TRUTH table of a mock survey (`truth.fits` or the survey root holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_NAME
    try:
        data = fitsio.read(str(path), ext="TRUTH")
    except (OSError, ValueError) as exc:
        raise survey.SurveyFileError(path, f"cannot read the TRUTH table: {exc}") from exc
    frame = {}
    for name in data.dtype.names:
        col = data[name]
        if col.dtype.kind in "SU":
            col = np.char.strip(col.astype(str))
        else:
            col = col.astype(col.dtype.newbyteorder("="))
        frame[name] = col
    return pd.DataFrame(frame)


def _write_seismic(path, rng, ids, truth: pd.DataFrame, fraction: float) -> None:
    """seismic.csv for a `fraction` of the field stars (EVSTATE 1 RGB, 2 RC)."""
    field = np.flatnonzero(~truth["is_cluster"].to_numpy())
    chosen = np.sort(rng.choice(field, size=int(round(fraction * len(field))), replace=False))
    table = pd.DataFrame({"APOGEE_ID": ids.to_numpy()[chosen],
                          "DNU": truth["dnu"].to_numpy()[chosen].round(5),
                          "NUMAX": truth["numax"].to_numpy()[chosen].round(4),
                          "DPI1": truth["dpi1"].to_numpy()[chosen].round(3),
                          "EVSTATE": truth["evstate"].to_numpy()[chosen] + 1})
    with provenance.atomic_path(path) as tmp:
        table[list(survey.SEISMIC_COLUMNS)].to_csv(tmp, index=False)


# --------------------------------------------------------------------------- Cramér–Rao bound

def _fisher_products(theta, error):
    """(σ_CRB (22,), efficient weights (22, 7514)) of one star from its labels and its error
    array (8575 or 7514 pixels). The Fisher matrix is Jacobi-scaled before the solve because
    Teff (K) and abundances (dex) differ by orders of magnitude in sensitivity."""
    error = jnp.asarray(error)
    if error.shape[-1] == apogee.N_PIX:
        error = jnp.take(error, apogee.KEPT_PIXELS, axis=-1)
    grad = jnp.take(jacobian(theta), apogee.KEPT_PIXELS, axis=0)       # (7514, 22)
    inv_err = 1.0 / error
    scaled = grad * inv_err[:, None]
    fisher = scaled.T @ scaled
    norm = jnp.sqrt(jnp.diag(fisher))
    inverse_n = jnp.linalg.inv(fisher / jnp.outer(norm, norm))
    sigma = jnp.sqrt(jnp.diag(inverse_n)) / norm
    weights = (inverse_n @ (scaled / norm).T) * inv_err[None, :] / norm[:, None]
    return sigma, weights


@jax.jit
def crb(theta, error):
    """Cramér–Rao bound σ_k = sqrt(diag F⁻¹) (22,) in label units (K, dex) for labels θ and a
    per-pixel flux error (8575 or 7514), F = Gᵀ C⁻¹ G over the 7514 chip pixels."""
    return _fisher_products(theta, error)[0]


@jax.jit
def efficient_weights(theta, error):
    """Efficient-estimator weights F⁻¹ Gᵀ C⁻¹ (22, 7514): d label / d normalized flux."""
    return _fisher_products(theta, error)[1]


_batch_fisher = jax.jit(jax.vmap(_fisher_products))


def _read_errors(survey_root: Path, allstar: pd.DataFrame, ids) -> np.ndarray:
    """Gap-removed error arrays (N, 7514) of stars from their aspcapStar files."""
    out = np.empty((len(ids), apogee.N_PIX_GAPLESS), np.float32)
    for row, ident in enumerate(ids):
        star = allstar.loc[ident]
        path = survey_root / survey.aspcapstar_relpath(star["TELESCOPE"], star["FIELD"], ident)
        error = apogee.gap_delete(survey.read_aspcapstar(path)[1])
        if np.any(error <= 0):
            raise survey.SurveyFileError(path, f"error has {int(np.sum(error <= 0))} "
                                               "non-positive pixels inside the chips")
        out[row] = error
    return out


def write_truth_products(survey_root, split_csv, out_path, chunk_size: int = 64,
                         log=print) -> None:
    """Write the mock's truth products for the `test` and `cluster` stars of a split: a CRB
    table (APOGEE_ID, split, crb_<label> in K or dex) and an EFFICIENT_WEIGHTS image
    (22, 7514), the mean efficient-estimator weights over the test stars."""
    survey_root = Path(survey_root)
    split = pd.read_csv(split_csv, dtype={"APOGEE_ID": str, "split": str})
    missing = {"APOGEE_ID", "split"} - set(split.columns)
    if missing:
        raise ValueError(f"{split_csv}: split table lacks columns {sorted(missing)}")
    split = split[split["split"].isin(["test", "cluster"])].reset_index(drop=True)
    if not split["split"].eq("test").any():
        raise ValueError(f"{split_csv}: no star in the 'test' split")
    truth = read_truth(survey_root).set_index("APOGEE_ID")
    allstar = survey.read_allstar(survey_root / survey.ALLSTAR_NAME,
                                  columns=["APOGEE_ID", "TELESCOPE", "FIELD"])
    allstar = allstar.set_index("APOGEE_ID")
    unknown = sorted(set(split["APOGEE_ID"]) - set(truth.index))
    if unknown:
        raise ValueError(f"{split_csv}: {len(unknown)} stars not in {survey_root / TRUTH_NAME}, "
                         f"e.g. {unknown[:3]}")
    ids = split["APOGEE_ID"].to_numpy()
    thetas = truth.loc[ids, list(LABELS)].to_numpy(np.float32)
    is_test = split["split"].eq("test").to_numpy()
    sigma = np.empty((len(ids), N_LABELS), np.float64)
    weight_sum = np.zeros((N_LABELS, apogee.N_PIX_GAPLESS), np.float64)
    for start in range(0, len(ids), chunk_size):
        stop = min(start + chunk_size, len(ids))
        errors = _read_errors(survey_root, allstar, ids[start:stop])
        pad = chunk_size - (stop - start)
        th = np.pad(thetas[start:stop], ((0, pad), (0, 0)), mode="edge")
        er = np.pad(errors, ((0, pad), (0, 0)), mode="edge")
        s, w = (np.asarray(a) for a in _batch_fisher(th, er))
        sigma[start:stop] = s[:stop - start]
        weight_sum += w[:stop - start][is_test[start:stop]].sum(axis=0)
        log(f"truth products: {stop}/{len(ids)} stars")
    table = pd.DataFrame({"APOGEE_ID": ids, "split": split["split"].to_numpy()})
    for k, label in enumerate(LABELS):
        table[f"crb_{label}"] = sigma[:, k]
    seed = fitsio.read_header(str(survey_root / TRUTH_NAME), ext=0).get("SGSEED")
    cards = provenance.header_cards(seed=seed)
    weight_cards = {"BUNIT": "label/flux", "NTEST": int(is_test.sum()),
                    **{f"LABEL{k + 1}": label for k, label in enumerate(LABELS)}}
    with provenance.atomic_path(out_path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header=cards)
            fits.write(survey.to_records(table), extname="CRB")
            fits.write((weight_sum / is_test.sum()).astype(np.float32),
                       extname="EFFICIENT_WEIGHTS", header=weight_cards)
