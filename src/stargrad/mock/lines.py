"""The mock's line list: every feature of the generator with its strength law, from the real
H-band line list (atomic lines), molecular forests in the element windows, and the Brackett
series; deterministic."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ..sdss import apogee
from . import LABEL_INDEX, N_LABELS

#: Reference star of the line strengths: Teff (K), log g (dex), all [X/H] = 0.
TEFF_REF, LOGG_REF = 4500.0, 2.5
THETA_REF = 5040.0 / TEFF_REF
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
def line_groups() -> dict:
    table = line_table()
    brackett = table["kind"].eq("brackett").to_numpy()
    chip_mask = np.zeros(apogee.N_PIX, np.float32)
    chip_mask[apogee.KEPT_PIXELS] = 1.0
    return dict(narrow=_line_group(~brackett, table), brackett=_line_group(brackett, table),
                chip_mask=chip_mask)
