"""One star's spectrum as every stage reads it: the aspcapStar as published, or the apStar
continuum-normalized here, gap-removed to 7514 pixels with its bad pixels masked (compile,
the catalogue and `stargrad.load(...).predict` on files)."""
from __future__ import annotations

import numpy as np

from . import apogee, continuum, survey

#: An error above this (normalized flux units) marks a pixel as bad, as do flux <= 0, error
#: <= 0 and non-finite values; bad pixels get flux 1 and error 1, astroNN's masking convention.
BAD_ERROR = 1.0
#: A spectrum with a larger fraction of bad pixels is quarantined rather than compiled.
MAX_BAD_FRACTION = 0.5


def clean_spectrum(flux: np.ndarray, error: np.ndarray, bad_error: float = BAD_ERROR,
                   bad=None):
    """Gap-delete an 8575-pixel spectrum and mask its bad pixels (flux 1, error 1, mask 1):
    non-finite flux or error, flux <= 0, error <= 0 or > `bad_error`, and `bad` (pixels already
    flagged, e.g. by the apStar pixel mask)."""
    flux, error = apogee.gap_delete(flux), apogee.gap_delete(error)
    with np.errstate(invalid="ignore"):
        masked = (~np.isfinite(flux) | ~np.isfinite(error) | (flux <= 0) | (error <= 0)
                  | (error > bad_error))
    if bad is not None:
        masked |= apogee.gap_delete(np.asarray(bad, bool))
    flux = np.where(masked, 1.0, flux).astype(np.float32)
    error = np.where(masked, 1.0, error).astype(np.float32)
    return flux, error, masked.astype(np.uint8)


def read_spectrum(path, kind: str | None = "aspcapStar"):
    """(flux, error, bad) of one star: aspcapStar as published (bad None), or apStar (row 0,
    the pixel-weighted combined spectrum) continuum-normalized with astroNN's method on 7514
    pixels, `bad` its masked pixels. The file's own layout says which it is
    (`survey.spectrum_kind`); `kind` None reads either, otherwise a file of the other kind
    is a SurveyFileError."""
    found, (first, second, third) = survey.read_spectrum_hdus(path)
    if kind is not None and found != kind:
        raise survey.SurveyFileError(path, f"is an {found} file ({survey.SPECTRUM_LAYOUTS[found]}), "
                                           f"expected an {kind}")
    if found == "apStar":
        return continuum.continuum_normalize(*continuum.apstar_arrays(path, first, second, third))
    return (*survey.aspcapstar_arrays(path, first, second), None)


def read_clean_spectrum(path, kind: str | None = "aspcapStar", bad_error: float = BAD_ERROR,
                        max_bad_fraction: float = MAX_BAD_FRACTION):
    """`clean_spectrum` of `read_spectrum`: (flux, error, mask) on 7514 pixels. Raises
    SurveyFileError naming the file when more than `max_bad_fraction` of the pixels are bad."""
    flux, error, bad = read_spectrum(path, kind)
    flux, error, mask = clean_spectrum(flux, error, bad_error, bad)
    n_bad = int(mask.sum())
    if n_bad > max_bad_fraction * mask.size:
        raise survey.SurveyFileError(path, f"{n_bad} of {mask.size} pixels are bad (non-finite "
                                           f"flux or error, flux <= 0, error <= 0 or > "
                                           f"{bad_error:g}), more than max_bad_fraction "
                                           f"{max_bad_fraction:g}")
    return flux, error, mask
