"""The mock's line list: every feature of the generator with its strength law, from the real
H-band line list (atomic lines), the CN, OH and CO lines of the APOGEE DR17 line list
(positions, excitation and gf of ¹²C¹⁴N, ¹³C¹⁴N, ¹⁶OH, ¹²C¹⁶O and ¹³C¹⁶O; Smith et al. 2021),
and the Brackett series; deterministic."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ..sdss import apogee
from . import LABEL_INDEX, N_LABELS

#: Reference star of the line strengths: Teff (K), log g (dex), all [X/H] = 0.
TEFF_REF, LOGG_REF = 4500.0, 2.5
THETA_REF = 5040.0 / TEFF_REF
#: 12CO Δv=3 band heads (vacuum Å) as the line list gives them.
CO_BAND_HEADS = (15581.6, 15780.3, 15982.4, 16189.6, 16400.6, 16618.7, 16840.9)
_LINE_SEED = 20170543  # fixes the default strengths of atomic lines without gf

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
#: Isotopologues of the APOGEE DR17 line list (`sdss.turbospectrum`) -> (abundance labels, log
#: of its share of the molecule (12C/13C ≈ 20 in first-ascent giants after the first
#: dredge-up), χ_eff (eV) of the molecule's number density: negative, stronger when cooler;
#: each line adds its lower level's χ), log g coefficient, molecule.
_LISTED_MOLECULES = {
    "12C14N": (("C", "N"), 0.0, -3.5, -0.1, "CN"),
    "13C14N": (("C", "N"), -1.3, -3.5, -0.1, "CN"),
    "16OH": (("O",), 0.0, -6.0, -0.1, "OH"),
    "12C16O": (("C",), 0.0, -2.5, -0.15, "CO"),
    "13C16O": (("C",), -1.3, -2.5, -0.15, "CO"),
}
#: log τ of the strongest line of each molecule at the reference star (4500 K, log g 2.5,
#: solar): depths ≈ 0.2 (CN, CO) and ≈ 0.3 (OH), as in a K giant's H-band spectrum at
#: R ≈ 22,500.
MOLECULE_LOG_TAU_MAX = {"CN": -0.45, "OH": -0.2, "CO": -0.45}
MOLECULE_LOG_TAU_MIN = -3.0     # weaker lines (at the reference star) are left out
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


def listed_molecular_lines() -> pd.DataFrame:
    """CN, OH and CO lines of the APOGEE DR17 line list (the bundled subset) with log τ at the
    reference star in LTE, relative to each molecule's strongest line:

        τ ∝ (isotopologue share) · gf · 10^(−θ_ref χ),

    and chi_eff = the molecule's χ_eff + the line's χ, so that each line's temperature law
    carries its excitation."""
    listed = apogee.load_molecular_lines()
    frames = []
    for name, (labels, log_share, chi_eff, gamma, molecule) in _LISTED_MOLECULES.items():
        rows = listed[listed["species"].eq(name)]
        chi = rows["chi_eV"].to_numpy()
        frames.append(pd.DataFrame(dict(
            species=molecule, labels=[labels] * len(rows), wavelength=rows["vac"].to_numpy(),
            log_strength=log_share + rows["loggf"].to_numpy() - THETA_REF * chi,
            chi_eff=chi_eff + chi, gamma=gamma, kind="molecular")))
    lines = pd.concat(frames, ignore_index=True)
    lines = lines[_on_grid(apogee.pixel_of_wavelength(lines["wavelength"].to_numpy()))]
    strongest = lines.groupby("species")["log_strength"].transform("max")
    lines["log_tau_ref"] = (lines["log_strength"] - strongest
                            + lines["species"].map(MOLECULE_LOG_TAU_MAX))
    keep = lines["log_tau_ref"] > MOLECULE_LOG_TAU_MIN
    return lines[keep].drop(columns="log_strength").reset_index(drop=True)


def _on_grid(pixel) -> np.ndarray:
    """Whether a line at (fractional) `pixel` of the 8575 grid lies on it or within 10 px of
    its ends."""
    return (pixel > -10) & (pixel < apogee.N_PIX + 10)


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
    table = pd.concat([_atomic_lines(rng), listed_molecular_lines(), _brackett_lines()],
                      ignore_index=True)
    table["pixel"] = apogee.pixel_of_wavelength(table["wavelength"].to_numpy())
    return table[_on_grid(table["pixel"].to_numpy())].reset_index(drop=True)


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
