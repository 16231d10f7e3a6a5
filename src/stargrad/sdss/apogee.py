"""APOGEE facts in code: the DR17 wavelength grid, chips, gap removal, element windows,
the H-band line list, pixel-mask bits and label names.

Wavelengths are vacuum Ångström throughout; the apStar/aspcapStar grid is log-linear with
8575 pixels, and the gap-removed grid used by every model has 7514 pixels.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

LOG10_LAMBDA0 = 4.179
LOG10_STEP = 6.0e-6
N_PIX = 8575
#: Half-open [start, stop) slices of the three detectors on the 8575 grid (DR13–DR17).
CHIPS = {"blue": (246, 3274), "green": (3585, 6080), "red": (6344, 8335)}
N_PIX_GAPLESS = sum(stop - start for start, stop in CHIPS.values())  # 7514
#: Offsets of the chips inside the 7514-pixel array.
CHIP_OFFSETS = {"blue": (0, 3028), "green": (3028, 5523), "red": (5523, 7514)}
SPEED_OF_LIGHT_KMS = 299792.458
KMS_PER_PIXEL = SPEED_OF_LIGHT_KMS * np.log(10.0) * LOG10_STEP  # 4.14 km/s

#: The 22 labels of the `aspcap` task, astroNN's order; abundances are [X/H] in dex.
ASPCAP_LABELS = ("teff", "logg", "C", "C1", "N", "O", "Na", "Mg", "Al", "Si", "P", "S",
                 "K", "Ca", "Ti", "Ti2", "V", "Cr", "Mn", "Fe", "Co", "Ni")
#: aspcap label -> ASPCAP DR17 window element name.
WINDOW_ELEMENT = {"C1": "CI", "Ti2": "TiII"}
#: aspcap label -> allStar column holding it (abundances other than Fe are stored as [X/Fe]).
ALLSTAR_COLUMN = {"teff": "TEFF", "logg": "LOGG", "Fe": "FE_H", "C1": "CI_FE", "Ti2": "TIII_FE"}
LABEL_UNITS = {"teff": "K", "logg": "dex (cgs)"}

#: The catalogues' "no value" marker; NaN, ±inf and −9999.99 mean the same (`is_missing`).
MAGIC_NUMBER = -9999.0

#: APOGEE_PIXMASK bit numbers.
PIXMASK_BITS = {"BADPIX": 0, "CRPIX": 1, "SATPIX": 2, "UNFIXABLE": 3, "BADDARK": 4,
                "BADFLAT": 5, "BADERR": 6, "NOSKY": 7, "LITTROW_GHOST": 8,
                "PERSIST_HIGH": 9, "PERSIST_MED": 10, "PERSIST_LOW": 11, "SIG_SKYLINE": 12,
                "SIG_TELLURIC": 13, "NOT_ENOUGH_PSF": 14}
#: Bits that astroNN masks by default (flux and error set to 1).
ASTRONN_MASK_BITS = (0, 1, 2, 3, 4, 5, 6, 7, 12)


def is_missing(values) -> np.ndarray:
    """True where a catalogue value (label, label error, seismic column, flux or error) is
    missing: NaN, ±inf, or −9999 and below. DR17 writes undetermined values as NaN, −9999 or
    −9999.99 (no APOGEE quantity lies that low), so every column goes through this test
    before any arithmetic on it."""
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (values <= MAGIC_NUMBER)


def allstar_column(label: str) -> str:
    """allStar column name for an aspcap label (e.g. 'Mg' -> 'MG_FE', 'Fe' -> 'FE_H')."""
    return ALLSTAR_COLUMN.get(label, f"{label.upper()}_FE")


def label_unit(label: str) -> str:
    return LABEL_UNITS.get(label, "dex")


def wavelength(n_pix: int = N_PIX) -> np.ndarray:
    """Vacuum wavelength (Å) of every pixel: the 8575 apStar grid, or the 7514 gap-removed grid."""
    full = 10.0 ** (LOG10_LAMBDA0 + LOG10_STEP * np.arange(N_PIX))
    if n_pix == N_PIX:
        return full
    if n_pix == N_PIX_GAPLESS:
        return gap_delete(full)
    raise ValueError(f"wavelength: n_pix must be {N_PIX} or {N_PIX_GAPLESS}, got {n_pix}")


def _kept_index() -> np.ndarray:
    return np.concatenate([np.arange(a, b) for a, b in CHIPS.values()])


KEPT_PIXELS = _kept_index()


def gap_delete(spectra, axis: int = -1):
    """Drop the chip gaps and edges: 8575 pixels -> 7514 (7514 input is returned as is)."""
    n = np.shape(spectra)[axis]
    if n == N_PIX_GAPLESS:
        return spectra
    if n != N_PIX:
        raise ValueError(f"gap_delete: expected {N_PIX} or {N_PIX_GAPLESS} pixels, got {n}")
    return np.take(spectra, KEPT_PIXELS, axis=axis)


def gap_insert(spectra, fill: float = 0.0, axis: int = -1) -> np.ndarray:
    """Inverse of gap_delete: put 7514-pixel data back on the 8575 grid, gaps filled with `fill`."""
    spectra = np.asarray(spectra)
    spectra = np.moveaxis(spectra, axis, -1)
    if spectra.shape[-1] != N_PIX_GAPLESS:
        raise ValueError(f"gap_insert: expected {N_PIX_GAPLESS} pixels, got {spectra.shape[-1]}")
    out = np.full(spectra.shape[:-1] + (N_PIX,), fill, dtype=spectra.dtype)
    out[..., KEPT_PIXELS] = spectra
    return np.moveaxis(out, -1, axis)


def chips_split(spectra) -> list[np.ndarray]:
    """Split gap-removed (or 8575) spectra into [blue, green, red] along the last axis."""
    spectra = gap_delete(np.asarray(spectra))
    return [spectra[..., a:b] for a, b in CHIP_OFFSETS.values()]


def chip_of_pixel(pixel_7514: np.ndarray) -> np.ndarray:
    """Chip name of each gap-removed pixel index."""
    pixel_7514 = np.asarray(pixel_7514)
    names = np.array(list(CHIP_OFFSETS))
    edges = np.array([b for _, b in CHIP_OFFSETS.values()])
    return names[np.searchsorted(edges, pixel_7514, side="right")]


def pixel_of_wavelength(wavelength_vac, n_pix: int = N_PIX) -> np.ndarray:
    """Fractional pixel index of a vacuum wavelength (Å) on the 8575 grid.

    With n_pix=7514 it returns the gap-removed index, NaN for wavelengths in a gap."""
    pix = (np.log10(np.asarray(wavelength_vac, dtype=float)) - LOG10_LAMBDA0) / LOG10_STEP
    if n_pix == N_PIX:
        return pix
    out = np.full(np.shape(pix), np.nan)
    for (a, b), (o, _) in zip(CHIPS.values(), CHIP_OFFSETS.values()):
        inside = (pix >= a - 0.5) & (pix < b - 0.5)
        out = np.where(inside, pix - a + o, out)
    return out


def velocity_offset_kms(wavelength_a, wavelength_b) -> np.ndarray:
    """Velocity difference c·(a−b)/b in km/s."""
    a, b = np.asarray(wavelength_a, float), np.asarray(wavelength_b, float)
    return SPEED_OF_LIGHT_KMS * (a - b) / b


def bitmask_boolean(bitmask, bits=ASTRONN_MASK_BITS) -> np.ndarray:
    """True where any of `bits` is set in an APOGEE_PIXMASK array."""
    target = sum(1 << int(b) for b in bits)
    return (np.asarray(bitmask).astype(np.int64) & target) != 0


def _data_path(name: str):
    return resources.files("stargrad") / "data" / name


@lru_cache(maxsize=1)
def load_lines() -> pd.DataFrame:
    """The H-band line list (species, air, vac Å, window element, χ eV, log gf)."""
    with _data_path("apogee_lines.csv").open() as fh:
        return pd.read_csv(fh)


@lru_cache(maxsize=1)
def load_molecular_lines() -> pd.DataFrame:
    """CN, OH and CO lines of the APOGEE DR17 line list (species, air, vac Å, χ eV, log gf):
    the subset `sdss.turbospectrum` bundles."""
    with _data_path("apogee_dr17_molecular_lines.csv").open() as fh:
        return pd.read_csv(fh)


@lru_cache(maxsize=2)
def load_windows(active_only: bool = True) -> pd.DataFrame:
    """ASPCAP DR17 element windows (element, start/end vacuum Å, flag); global mask excluded."""
    with _data_path("aspcap_dr17_windows.csv").open() as fh:
        win = pd.read_csv(fh)
    win = win[win["element"] != "global_mask_v02"]
    if active_only:
        win = win[win["flag"] == 1]
    return win.reset_index(drop=True)


@lru_cache(maxsize=1)
def continuum_pixels() -> np.ndarray:
    """Indices (7514 grid) of the 532 DR16/DR17 continuum pixels."""
    with _data_path("apogee_dr17_continuum_pixels.csv").open() as fh:
        return pd.read_csv(fh)["pixel_7514"].to_numpy()


def window_element(label: str) -> str:
    """ASPCAP window element for a label name ('C1' -> 'CI', 'Mg' -> 'Mg')."""
    return WINDOW_ELEMENT.get(label, label)


def window_mask(element: str, n_pix: int = N_PIX_GAPLESS, active_only: bool = True) -> np.ndarray:
    """Boolean mask of the pixels whose centre lies in an ASPCAP DR17 window of `element`."""
    element = window_element(element)
    win = load_windows(active_only)
    rows = win[win["element"] == element]
    if rows.empty:
        known = sorted(set(win["element"]))
        raise KeyError(f"no {'active ' if active_only else ''}ASPCAP DR17 window for element "
                       f"{element!r}; known: {known}")
    lam = wavelength(n_pix)
    mask = np.zeros(n_pix, dtype=bool)
    for start, end in zip(rows["start_vac_angstrom"], rows["end_vac_angstrom"]):
        mask |= (lam >= start) & (lam <= end)
    return mask


def window_elements(active_only: bool = True) -> list[str]:
    """Element names that have ASPCAP DR17 windows, in file order."""
    return list(dict.fromkeys(load_windows(active_only)["element"]))
