"""Compile a dataset: read each selected star's spectrum (`spectra.read_clean_spectrum`:
aspcapStar, or apStar normalized; gap-removed, bad pixels masked), and stream every split
into `<split>.fits` with the catalogue labels beside it; stars that cannot be used are listed
in quarantine.csv."""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from ..sdss import apogee, survey
from ..sdss.apogee import MAGIC_NUMBER, is_missing
from ..provenance import atomic_path
from ..sdss.spectra import BAD_ERROR, MAX_BAD_FRACTION, read_clean_spectrum

QUARANTINE_COLUMNS = ("APOGEE_ID", "split", "path", "reason")


# ---------------------------------------------------------------------------- labels

def labels_from_catalogue(allstar: pd.DataFrame, seismic: pd.DataFrame | None,
                          log=print) -> pd.DataFrame:
    """Task labels per star: teff, logg, [X/H] from the allStar ([X/Fe] + [Fe/H]), their
    errors, and the seismic labels joined on APOGEE_ID. A value that is NaN, ±inf, −9999 or
    −9999.99 in the catalogue (`apogee.is_missing`, tested before any arithmetic) is written as
    −9999, and so is an error that is missing; a label is missing when its value is, or for
    [X/Fe] when [Fe/H] is, and its error when its own or (for [X/Fe]) FE_H_ERR is. A label whose
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
        # Missing is decided on the catalogue's own values, before any sum: hypot(−9999, e)
        # would otherwise pass as an error of 9999.
        missing, err_missing = is_missing(value), is_missing(err)
        if col.endswith("_FE"):
            missing |= is_missing(fe)
            err_missing |= is_missing(fe_err)
            with np.errstate(invalid="ignore"):      # inf − inf where already missing
                value, err = value + fe, np.hypot(err, fe_err)
        out[label] = np.where(missing, MAGIC_NUMBER, value)
        out[f"{label}_err"] = np.where(missing | err_missing, MAGIC_NUMBER, np.abs(err))
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

def compile_split(survey_root, stars: pd.DataFrame, labels: pd.DataFrame, out_path, *,
                  header: dict, split_name: str, bad_error: float = BAD_ERROR,
                  max_bad_fraction: float = MAX_BAD_FRACTION, skip: dict | None = None,
                  on_bad_file: str = "quarantine", spectra: str = "aspcapStar",
                  chunk_size: int = 256, log=print) -> pd.DataFrame:
    """Write `<split>.fits` (FLUX, ERROR, MASK images of N×7514 + LABELS table), streaming
    `chunk_size` spectra at a time so memory does not grow with the survey.

    `stars` has APOGEE_ID, TELESCOPE, FIELD (one row per star: `survey.primary_rows`).
    Unreadable spectra, spectra with more than `max_bad_fraction` bad pixels, rows whose path
    parts cannot name a file under the root (`survey.spectrum_path`), and rows listed in `skip`
    ((APOGEE_ID, TELESCOPE, FIELD) -> reason, e.g. failed downloads), are left out and returned
    as quarantine rows — or raise, with on_bad_file="error"."""
    survey_root = Path(survey_root)
    skip = skip or {}
    quarantine, good = [], []
    for row in stars.itertuples(index=False):
        path, reason = survey.row_spectrum(survey_root, spectra, row, skip)
        if reason is None and path.exists():
            good.append((row.APOGEE_ID, path))
            continue
        reason = reason or "file is missing"
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
    allstar = survey.primary_rows(survey.read_allstar(allstar_path))
    seismic = survey.read_seismic(seismic_path) if seismic_path else None
    labels = labels_from_catalogue(allstar, seismic, log)
    stars = allstar[["APOGEE_ID", "TELESCOPE", "FIELD"]].merge(split_table, on="APOGEE_ID")
    unknown = set(split_table["APOGEE_ID"]) - set(stars["APOGEE_ID"])
    if unknown:
        raise ValueError(f"{split_csv}: {len(unknown)} stars are not in {allstar_path}, "
                         f"e.g. {sorted(unknown)[:3]}")
    skip = survey.manifest_skips(manifests)
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
