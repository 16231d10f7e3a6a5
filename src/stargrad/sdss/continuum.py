"""The optional apStar path: read combined apStar spectra (raw flux) and continuum-normalize
them the astroNN way (per-chip degree-2 Chebyshev fit over the DR17 continuum pixels).

aspcapStar files are already normalized by ASPCAP; only apStar input needs this module.
"""
from __future__ import annotations


import numpy as np
from numpy.polynomial import Chebyshev, chebyshev

from . import apogee
from .survey import SurveyFileError, read_image_hdus

#: Added to σ² before inverting, as astroNN does, so zero errors do not give infinite weight.
_IVAR_FLOOR = 1e-8


def read_apstar(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, error, bitmask) of an apStar/asStar file on the 8575 grid; flux in
    1e-17 erg s⁻¹ cm⁻² Å⁻¹, bitmask the APOGEE_PIXMASK integers.

    DR17 files hold (n_rows, 8575) arrays whose rows 0 and 1 are the two combined spectra
    (pixel- and global-weighted) and rows 2+ the visits (a one-visit star has 2 rows, see
    tests/data/real_dr17); this returns row 0, the pixel-weighted combination. 1-D arrays (a
    single spectrum) are read as they are."""
    return apstar_arrays(path, *read_image_hdus(path, (1, 2, 3)))


def apstar_arrays(path, flux, error, bitmask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`read_apstar` of an apStar's HDU 1–3 data already read: row 0, shapes checked
    (SurveyFileError naming `path`)."""
    out = []
    for name, arr in zip(("flux", "error", "mask"), (flux, error, bitmask)):
        shape = None if arr is None else arr.shape
        if arr is None or arr.ndim not in (1, 2) or arr.shape[-1] != apogee.N_PIX or arr.size == 0:
            raise SurveyFileError(path, f"{name} has shape {shape}, expected ({apogee.N_PIX},) "
                                        f"or (n_rows, {apogee.N_PIX})")
        out.append(arr if arr.ndim == 1 else arr[0])
    flux, error, mask = out
    return flux.astype(np.float64), error.astype(np.float64), mask.astype(np.int64)


def _as_spectra(name: str, arr) -> np.ndarray:
    """(N, 7514) float64 view of a 1-D or 2-D spectrum array on the 8575 or 7514 grid."""
    arr = np.asarray(arr)
    if arr.ndim not in (1, 2) or arr.shape[-1] not in (apogee.N_PIX, apogee.N_PIX_GAPLESS):
        raise ValueError(f"continuum_normalize: {name} must have shape (..., {apogee.N_PIX}) or "
                         f"(..., {apogee.N_PIX_GAPLESS}) with 1 or 2 dims, got {arr.shape}")
    return np.atleast_2d(apogee.gap_delete(arr))


def continuum_normalize(flux, error, bitmask=None, deg: int = 2,
                        bits=apogee.ASTRONN_MASK_BITS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continuum-normalize spectra (8575 or 7514 px, 1-D or (N, P)) onto the 7514 grid.

    Per chip, a Chebyshev series of degree `deg` in pixel index is fitted to the flux at the
    DR17 continuum pixels with numpy weights w = 1/(σ² + 1e-8) (astroNN's choice); flux and
    error are divided by it. Unlike astroNN, pixels with masked `bits`, non-finite flux or
    non-finite error are left out of the fit. Afterwards negative flux → 0; pixels with
    non-finite flux or error, a non-positive continuum, or masked bits → flux 1 and error 1
    (astroNN's convention) and are flagged. Returns (flux, error, bad): float32 flux and error
    and a bool bad-pixel mask, shaped like the input but with 7514 pixels."""
    squeeze = np.ndim(flux) == 1
    flux, error = _as_spectra("flux", flux).astype(float), _as_spectra("error", error).astype(float)
    if flux.shape != error.shape:
        raise ValueError(f"continuum_normalize: flux {flux.shape} and error {error.shape} "
                         "differ in shape after gap removal")
    masked = np.zeros(flux.shape, dtype=bool)
    if bitmask is not None:
        bitmask = _as_spectra("bitmask", bitmask)
        if bitmask.shape != flux.shape:
            raise ValueError(f"continuum_normalize: bitmask {bitmask.shape} does not match "
                             f"flux {flux.shape} after gap removal")
        masked = apogee.bitmask_boolean(bitmask, bits)
    if int(deg) < 0:
        raise ValueError(f"continuum_normalize: deg must be >= 0, got {deg}")
    is_cont = np.zeros(apogee.N_PIX_GAPLESS, dtype=bool)
    is_cont[apogee.continuum_pixels()] = True
    usable = is_cont & ~masked & np.isfinite(flux) & np.isfinite(error)
    continuum = np.full(flux.shape, np.nan)
    for start, stop in apogee.CHIP_OFFSETS.values():
        x = np.arange(stop - start)
        for i in range(flux.shape[0]):
            keep = usable[i, start:stop]
            if keep.sum() <= deg:  # too few continuum pixels: the chip stays NaN → flux 1
                continue
            sigma = error[i, start:stop][keep]
            fit = Chebyshev.fit(x[keep], flux[i, start:stop][keep], int(deg),
                                w=1.0 / (sigma ** 2 + _IVAR_FLOOR))
            continuum[i, start:stop] = fit(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm_flux, norm_error = flux / continuum, error / continuum
    norm_flux[norm_flux < 0] = 0.0
    bad = ~np.isfinite(norm_flux) | ~np.isfinite(norm_error) | ~(continuum > 0) | masked
    norm_flux[bad] = 1.0
    norm_error[bad] = 1.0
    norm_flux, norm_error = norm_flux.astype(np.float32), norm_error.astype(np.float32)
    return (norm_flux[0], norm_error[0], bad[0]) if squeeze else (norm_flux, norm_error, bad)


def continuum_operator(error, usable, deg: int = 2) -> np.ndarray:
    """The continuum `continuum_normalize` fits to one spectrum, as a linear map of the flux
    at the pixels `usable` in the fit (bool (7514,): continuum pixels, unmasked, finite):
    (7514, U) matrix M with continuum = M @ flux[usable], for the errors σ (7514,). Per chip
    the same weighted Chebyshev least squares (numpy's weights w = 1/(σ² + 1e-8), domain the
    usable pixels' range); a chip with ≤ `deg` usable pixels gets rows of NaN. Lets a model
    spectrum be normalized exactly as the data were (`mock.real_vs_mock`)."""
    error, usable = np.asarray(error, float), np.asarray(usable, bool)
    operator = np.zeros((apogee.N_PIX_GAPLESS, int(usable.sum())))
    column = np.cumsum(usable) - 1               # each usable pixel's column in the operator
    for start, stop in apogee.CHIP_OFFSETS.values():
        x = np.arange(stop - start, dtype=float)
        keep = usable[start:stop]
        if keep.sum() <= deg:
            operator[start:stop] = np.nan
            continue
        lo, hi = x[keep].min(), x[keep].max()
        vander = chebyshev.chebvander((2.0 * x - (lo + hi)) / (hi - lo), int(deg))
        w = 1.0 / (error[start:stop][keep] ** 2 + _IVAR_FLOOR)
        solve = np.linalg.pinv(vander[keep] * w[:, None]) * w[None, :]
        operator[start:stop, column[start + np.flatnonzero(keep)]] = vander @ solve
    return operator
