"""Compile a dataset: read each selected star's spectrum (aspcapStar, or apStar normalized
here), gap-remove it, mask its bad pixels, and stream every split into `<split>.fits` with the
catalogue labels beside it; stars that cannot be used are listed in quarantine.csv."""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from . import apogee, continuum, survey
from .apogee import MAGIC_NUMBER, is_missing
from .download import manifest_skips
from .provenance import atomic_path
from .select import unique_stars

#: An error above this (normalized flux units) marks a pixel as bad, as do flux <= 0, error
#: <= 0 and non-finite values; bad pixels get flux 1 and error 1, astroNN's masking convention.
BAD_ERROR = 1.0
#: A spectrum with a larger fraction of bad pixels is quarantined rather than compiled.
MAX_BAD_FRACTION = 0.5
QUARANTINE_COLUMNS = ("APOGEE_ID", "split", "path", "reason")


# ---------------------------------------------------------------------------- labels

def labels_from_catalogue(allstar: pd.DataFrame, seismic: pd.DataFrame | None,
                          log=print) -> pd.DataFrame:
    """Task labels per star: teff, logg, [X/H] from the allStar ([X/Fe] + [Fe/H]), their
    errors, and the seismic labels joined on APOGEE_ID. A value that is −9999, NaN or ±inf in
    the catalogue (`apogee.is_missing`) is written as −9999, and so is an error that is
    missing; a label is missing when its value is, or for [X/Fe] when [Fe/H] is. A label whose
    column the catalogue lacks is missing for every star (and logged)."""
    out = pd.DataFrame({"APOGEE_ID": allstar["APOGEE_ID"].to_numpy()})
    out["SNR"] = allstar["SNR"].to_numpy(dtype=np.float32) if "SNR" in allstar else np.nan

    def column(name):
        return allstar[name].to_numpy(dtype=float) if name in allstar else np.full(len(out), np.nan)

    fe, fe_err = column("FE_H"), column("FE_H_ERR")
    for label in apogee.ASPCAP_LABELS:
        col = apogee.allstar_column(label)
        if col not in allstar:
            log(f"allStar has no column {col}: label {label!r} is missing for every star")
        value, err = column(col), column(f"{col}_ERR")
        missing = is_missing(value)
        if col.endswith("_FE"):
            missing |= is_missing(fe)
            value = value + fe
            err = np.hypot(err, fe_err)
        out[label] = np.where(missing, MAGIC_NUMBER, value)
        out[f"{label}_err"] = np.where(missing | is_missing(err), MAGIC_NUMBER, np.abs(err))
    seismic_cols = {"dnu": "DNU", "numax": "NUMAX", "dpi1": "DPI1"}
    joined = (out[["APOGEE_ID"]].merge(seismic, on="APOGEE_ID", how="left")
              if seismic is not None else None)
    for label, col in seismic_cols.items():
        value = (joined[col].to_numpy(dtype=float) if joined is not None and col in joined
                 else np.full(len(out), np.nan))
        out[label] = np.where(is_missing(value), MAGIC_NUMBER, value)
        out[f"{label}_err"] = np.where(is_missing(value), MAGIC_NUMBER, 0.0)
    evstate = np.full(len(out), MAGIC_NUMBER)
    if joined is not None and "EVSTATE" in joined:
        raw = joined["EVSTATE"].to_numpy(dtype=float)
        evstate = np.select([raw == 1, raw == 2], [0.0, 1.0], MAGIC_NUMBER)
    out["evstate"] = evstate
    out["evstate_err"] = np.where(evstate == MAGIC_NUMBER, MAGIC_NUMBER, 0.0)
    return out


# ---------------------------------------------------------------------------- compile

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


def compile_split(survey_root, stars: pd.DataFrame, labels: pd.DataFrame, out_path, *,
                  header: dict, split_name: str, bad_error: float = BAD_ERROR,
                  max_bad_fraction: float = MAX_BAD_FRACTION, skip: dict | None = None,
                  on_bad_file: str = "quarantine", spectra: str = "aspcapStar",
                  chunk_size: int = 256, log=print) -> pd.DataFrame:
    """Write `<split>.fits` (FLUX, ERROR, MASK images of N×7514 + LABELS table), streaming
    `chunk_size` spectra at a time so memory does not grow with the survey.

    `stars` has APOGEE_ID, TELESCOPE, FIELD. Unreadable spectra, spectra with more than
    `max_bad_fraction` bad pixels, and stars listed in `skip` (APOGEE_ID -> reason, e.g.
    failed downloads), are left out and returned as quarantine rows — or raise, with
    on_bad_file="error"."""
    survey_root = Path(survey_root)
    skip = skip or {}
    quarantine, good = [], []
    for row in stars.itertuples(index=False):
        path = survey_root / survey.spectrum_relpath(spectra, row.TELESCOPE, row.FIELD,
                                                     row.APOGEE_ID)
        if row.APOGEE_ID in skip:
            reason = skip[row.APOGEE_ID]
        elif not path.exists():
            reason = "file is missing"
        else:
            good.append((row.APOGEE_ID, path))
            continue
        if on_bad_file == "error":
            raise survey.SurveyFileError(path, reason)
        quarantine.append((row.APOGEE_ID, split_name, str(path), reason))
    labels = labels.set_index("APOGEE_ID")
    with atomic_path(out_path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header={**header, "SPLIT": split_name})
            kept = _write_images(fits, good, quarantine, split_name, on_bad_file, chunk_size,
                                 log, kind=spectra, bad_error=bad_error,
                                 max_bad_fraction=max_bad_fraction)
            table = labels.loc[kept].reset_index()
            fits.write(survey.to_records(table), extname="LABELS")
    log(f"compile {split_name}: {len(kept)} spectra written to {out_path}, "
        f"{len(quarantine)} quarantined")
    return pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)


def _write_images(fits, good, quarantine, split_name, on_bad_file, chunk_size, log, **cleaning):
    """Read, clean and append spectra chunk by chunk; returns the IDs written.

    The image HDUs are sized for every candidate and shrunk at the end to the spectra that
    could be read, so each file is read once and memory holds one chunk."""
    n_pix = apogee.N_PIX_GAPLESS
    dtypes = {"FLUX": np.float32, "ERROR": np.float32, "MASK": np.uint8}
    for name, dtype in dtypes.items():
        fits.create_image_hdu(dims=[max(len(good), 1), n_pix], dtype=dtype, extname=name,
                              header={"BUNIT": "1 = bad pixel" if name == "MASK"
                                      else "normalized flux"})
    chunk = {name: [] for name in dtypes}
    kept: list[str] = []

    def flush():
        start = len(kept) - len(chunk["FLUX"])
        for name, parts in chunk.items():
            if parts:
                fits[name].write(np.stack(parts), start=[start, 0])
            parts.clear()

    for apogee_id, path in good:
        try:
            arrays = read_clean_spectrum(path, **cleaning)
        except survey.SurveyFileError as exc:
            if on_bad_file == "error":
                raise
            quarantine.append((apogee_id, split_name, str(path), exc.reason))
            continue
        for name, arr in zip(dtypes, arrays):
            chunk[name].append(arr)
        kept.append(apogee_id)
        if len(chunk["FLUX"]) == chunk_size:
            flush()
            log(f"  {split_name}: {len(kept)}/{len(good)} spectra")
    flush()
    for name in dtypes:
        fits[name].reshape([max(len(kept), 1), n_pix])
    return kept


def compile_dataset(split_csv, allstar_path, seismic_path, survey_root, out_paths, quarantine_path,
                    *, manifests=(), bad_error: float = BAD_ERROR,
                    max_bad_fraction: float = MAX_BAD_FRACTION, on_bad_file: str = "quarantine",
                    header: dict | None = None, spectra: str = "aspcapStar",
                    chunk_size: int = 256, log=print) -> None:
    """The compile rule: every split of a dataset to `<split>.fits`, plus quarantine.csv
    listing each star left out (failed download, unreadable file) with the reason."""
    split_table = pd.read_csv(split_csv, dtype={"APOGEE_ID": str})
    allstar = unique_stars(survey.read_allstar(allstar_path))
    seismic = survey.read_seismic(seismic_path) if seismic_path else None
    labels = labels_from_catalogue(allstar, seismic, log)
    stars = allstar[["APOGEE_ID", "TELESCOPE", "FIELD"]].merge(split_table, on="APOGEE_ID")
    unknown = set(split_table["APOGEE_ID"]) - set(stars["APOGEE_ID"])
    if unknown:
        raise ValueError(f"{split_csv}: {len(unknown)} stars are not in {allstar_path}, "
                         f"e.g. {sorted(unknown)[:3]}")
    skip = manifest_skips(manifests)
    quarantine = []
    for out_path in out_paths:
        name = Path(out_path).stem
        quarantine.append(compile_split(survey_root, stars[stars["split"] == name], labels,
                                        out_path, header=header or {}, split_name=name,
                                        bad_error=bad_error, max_bad_fraction=max_bad_fraction,
                                        skip=skip, on_bad_file=on_bad_file,
                                        spectra=spectra, chunk_size=chunk_size, log=log))
    table = pd.concat(quarantine, ignore_index=True)
    with atomic_path(quarantine_path) as tmp:
        table.to_csv(tmp, index=False)
    if len(table):
        log(f"quarantined {len(table)} stars: {table['reason'].value_counts().to_dict()}")
