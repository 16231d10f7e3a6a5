"""Compiled datasets: per-split FITS files of gap-removed spectra plus labels, their
normalization (statistics from the training split only) and model-ready batches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from . import apogee, continuum, survey
from .download import spectrum_relpath
from .apogee import MAGIC_NUMBER
from .provenance import atomic_path
from .select import unique_stars
from .tasks import Task

#: An error above this (normalized flux units) marks a pixel as bad, as do flux <= 0 and
#: non-finite values; bad pixels get flux 1 and error 1, astroNN's masking convention.
BAD_ERROR = 1.0
QUARANTINE_COLUMNS = ("APOGEE_ID", "split", "path", "reason")


# ---------------------------------------------------------------------------- labels

def labels_from_catalogue(allstar: pd.DataFrame, seismic: pd.DataFrame | None) -> pd.DataFrame:
    """Task labels per star: teff, logg, [X/H] from the allStar ([X/Fe] + [Fe/H]), their
    errors, and the seismic labels joined on APOGEE_ID; −9999 where missing."""
    out = pd.DataFrame({"APOGEE_ID": allstar["APOGEE_ID"].to_numpy()})
    out["SNR"] = allstar["SNR"].to_numpy(dtype=np.float32) if "SNR" in allstar else np.nan
    fe = allstar["FE_H"].to_numpy(dtype=float)
    fe_err = allstar["FE_H_ERR"].to_numpy(dtype=float) if "FE_H_ERR" in allstar else np.zeros_like(fe)
    for label in apogee.ASPCAP_LABELS:
        col = apogee.allstar_column(label)
        if col not in allstar:
            raise KeyError(f"allStar has no column {col} for label {label!r}")
        value = allstar[col].to_numpy(dtype=float)
        err = allstar[f"{col}_ERR"].to_numpy(dtype=float) if f"{col}_ERR" in allstar else np.zeros_like(value)
        missing = value == MAGIC_NUMBER
        if col.endswith("_FE"):
            missing |= fe == MAGIC_NUMBER
            value = value + fe
            err = np.hypot(err, fe_err)
        out[label] = np.where(missing, MAGIC_NUMBER, value)
        out[f"{label}_err"] = np.where(missing, MAGIC_NUMBER, np.abs(err))
    seismic_cols = {"dnu": "DNU", "numax": "NUMAX", "dpi1": "DPI1"}
    joined = (out[["APOGEE_ID"]].merge(seismic, on="APOGEE_ID", how="left")
              if seismic is not None else None)
    for label, col in seismic_cols.items():
        if joined is not None and col in joined:
            value = joined[col].to_numpy(dtype=float)
            value = np.where(np.isfinite(value) & (value != MAGIC_NUMBER), value, MAGIC_NUMBER)
        else:
            value = np.full(len(out), MAGIC_NUMBER)
        out[label] = value
        out[f"{label}_err"] = np.where(value == MAGIC_NUMBER, MAGIC_NUMBER, 0.0)
    evstate = np.full(len(out), MAGIC_NUMBER)
    if joined is not None and "EVSTATE" in joined:
        raw = joined["EVSTATE"].to_numpy(dtype=float)
        evstate = np.select([raw == 1, raw == 2], [0.0, 1.0], MAGIC_NUMBER)
    out["evstate"] = evstate
    out["evstate_err"] = np.where(evstate == MAGIC_NUMBER, MAGIC_NUMBER, 0.0)
    return out


# ---------------------------------------------------------------------------- compile

def clean_spectrum(flux: np.ndarray, error: np.ndarray, bad_error: float = BAD_ERROR):
    """Gap-delete an 8575-pixel spectrum and mask bad pixels (flux 1, error 1, mask 1)."""
    flux, error = apogee.gap_delete(flux), apogee.gap_delete(error)
    bad = ~np.isfinite(flux) | ~np.isfinite(error) | (flux <= 0) | (error > bad_error) | (error <= 0)
    flux = np.where(bad, 1.0, flux).astype(np.float32)
    error = np.where(bad, 1.0, error).astype(np.float32)
    return flux, error, bad.astype(np.uint8)


def read_spectrum(path, kind: str = "aspcapStar") -> tuple[np.ndarray, np.ndarray]:
    """(flux, error) of one star: aspcapStar as published, or apStar continuum-normalized
    with astroNN's method (7514 pixels)."""
    if kind == "apStar":
        return continuum.continuum_normalize(*continuum.read_apstar(path))
    return survey.read_aspcapstar(path)


def compile_split(survey_root, stars: pd.DataFrame, labels: pd.DataFrame, out_path, *,
                  header: dict, split_name: str, bad_error: float = BAD_ERROR,
                  skip: dict | None = None, on_bad_file: str = "quarantine",
                  spectra: str = "aspcapStar", chunk_size: int = 256, log=print) -> pd.DataFrame:
    """Write `<split>.fits` (FLUX, ERROR, MASK images of N×7514 + LABELS table), streaming
    `chunk_size` spectra at a time so memory does not grow with the survey.

    `stars` has APOGEE_ID, TELESCOPE, FIELD. Unreadable spectra, and stars listed in `skip`
    (APOGEE_ID -> reason, e.g. failed downloads), are left out and returned as quarantine
    rows — or raise, with on_bad_file="error"."""
    survey_root = Path(survey_root)
    skip = skip or {}
    quarantine, good = [], []
    for row in stars.itertuples(index=False):
        path = survey_root / spectrum_relpath(spectra, row.TELESCOPE, row.FIELD, row.APOGEE_ID)
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
            kept = _write_images(fits, good, quarantine, split_name, bad_error, on_bad_file,
                                 spectra, chunk_size, log)
            table = labels.loc[kept].reset_index()
            fits.write(survey.to_records(table), extname="LABELS")
    log(f"compile {split_name}: {len(kept)} spectra written to {out_path}, "
        f"{len(quarantine)} quarantined")
    return pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)


def _write_images(fits, good, quarantine, split_name, bad_error, on_bad_file, spectra, chunk_size,
                  log):
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
            flux, error = read_spectrum(path, spectra)
        except survey.SurveyFileError as exc:
            if on_bad_file == "error":
                raise
            quarantine.append((apogee_id, split_name, str(path), exc.reason))
            continue
        for name, arr in zip(dtypes, clean_spectrum(flux, error, bad_error)):
            chunk[name].append(arr)
        kept.append(apogee_id)
        if len(chunk["FLUX"]) == chunk_size:
            flush()
            log(f"  {split_name}: {len(kept)}/{len(good)} spectra")
    flush()
    for name in dtypes:
        fits[name].reshape([max(len(kept), 1), n_pix])
    return kept


# ---------------------------------------------------------------------------- load

@dataclass
class SplitData:
    """One compiled split: spectra (N×7514) and the labels table."""
    ids: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray
    labels: pd.DataFrame
    header: dict

    def __len__(self):
        return len(self.ids)


def load_split(path) -> SplitData:
    """Read a compiled `<split>.fits`, checking its contract (HDUs, shapes, row counts)."""
    path = Path(path)
    try:
        with fitsio.FITS(str(path)) as fits:
            hdr = fits[0].read_header()
            header = {k: hdr[k] for k in hdr.keys()}
            names = {hdu.get_extname() for hdu in fits}
            missing = {"FLUX", "ERROR", "MASK", "LABELS"} - names
            if missing:
                raise survey.SurveyFileError(path, f"missing HDUs {sorted(missing)}")
            table = fits["LABELS"].read()
            flux, error, mask = (fits[n].read() for n in ("FLUX", "ERROR", "MASK"))
    except OSError as exc:
        raise survey.SurveyFileError(path, f"cannot read compiled split: {exc}") from exc
    n = len(table)
    flux, error, mask = (a[:n] if a is not None else np.zeros((0, apogee.N_PIX_GAPLESS))
                         for a in (flux, error, mask))
    for name, arr in (("FLUX", flux), ("ERROR", error), ("MASK", mask)):
        if arr.shape != (n, apogee.N_PIX_GAPLESS):
            raise survey.SurveyFileError(path, f"{name} has shape {arr.shape}, expected "
                                               f"({n}, {apogee.N_PIX_GAPLESS})")
    frame = {}
    for name in table.dtype.names:
        col = table[name]
        frame[name] = np.char.strip(col.astype(str)) if col.dtype.kind in "SU" else col.astype(col.dtype.newbyteorder("="))
    labels = pd.DataFrame(frame)
    return SplitData(ids=labels["APOGEE_ID"].to_numpy(), flux=flux.astype(np.float32),
                     error=error.astype(np.float32), mask=mask.astype(bool), labels=labels,
                     header=header)


# ---------------------------------------------------------------------------- normalization

@dataclass
class Normalizer:
    """Input and label normalization; statistics come from the training split only.

    input_mode: "standard" (per-pixel mean and std), "mean" (per-pixel mean subtracted,
    astroNN mode 3) or "none". Labels are standardized (astroNN mode 2) for regression
    and left as 0/1 for classification."""
    input_mode: str
    input_mean: np.ndarray
    input_std: np.ndarray
    labels: tuple[str, ...]
    label_mean: np.ndarray
    label_std: np.ndarray

    @classmethod
    def fit(cls, data: SplitData, task: Task, input_mode: str) -> "Normalizer":
        good = ~data.mask
        count = np.maximum(good.sum(axis=0), 1)
        mean = np.where(good, data.flux, 0.0).sum(axis=0) / count
        if input_mode == "standard":
            var = (np.where(good, data.flux - mean, 0.0) ** 2).sum(axis=0) / count
            std = np.sqrt(var)
            std = np.where(std > 1e-6, std, 1.0)
        elif input_mode == "mean":
            std = np.ones_like(mean)
        elif input_mode == "none":
            mean, std = np.zeros_like(mean), np.ones_like(mean)
        else:
            raise ValueError(f"unknown input normalization {input_mode!r}")
        y = task_labels(data, task)
        lmean, lstd = [], []
        for k, label in enumerate(task.labels):
            valid = y[:, k] != MAGIC_NUMBER
            if not valid.any():
                raise ValueError(f"no training star has label {label!r}: cannot train task {task.name}")
            if task.kind == "classification":
                lmean.append(0.0), lstd.append(1.0)
            else:
                lmean.append(y[valid, k].mean())
                lstd.append(max(y[valid, k].std(), 1e-8))
        return cls(input_mode, mean.astype(np.float32), std.astype(np.float32), task.labels,
                   np.array(lmean), np.array(lstd))

    def inputs(self, data: SplitData) -> np.ndarray:
        """Normalized flux; bad pixels are set to the training mean (i.e. 0 after centring)."""
        x = (data.flux - self.input_mean) / self.input_std
        return np.where(data.mask, 0.0, x).astype(np.float32)

    def to_json(self) -> dict:
        return {"input_mode": self.input_mode, "input_mean": self.input_mean.tolist(),
                "input_std": self.input_std.tolist(), "labels": list(self.labels),
                "label_mean": self.label_mean.tolist(), "label_std": self.label_std.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Normalizer":
        return cls(d["input_mode"], np.asarray(d["input_mean"], np.float32),
                   np.asarray(d["input_std"], np.float32), tuple(d["labels"]),
                   np.asarray(d["label_mean"]), np.asarray(d["label_std"]))


def task_labels(data: SplitData, task: Task) -> np.ndarray:
    """(N, K) physical label values of a task, −9999 where missing."""
    missing = [l for l in task.labels if l not in data.labels]
    if missing:
        raise KeyError(f"compiled split lacks label columns {missing}")
    return np.stack([data.labels[l].to_numpy(dtype=float) for l in task.labels], axis=1)


def normalized_labels(y: np.ndarray, norm: Normalizer) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) physical labels -> (float32 normalized labels, 0 where missing; valid mask)."""
    valid = (y != MAGIC_NUMBER) & np.isfinite(y)
    return np.where(valid, (y - norm.label_mean) / norm.label_std, 0.0).astype(np.float32), valid


def batch(data: SplitData, task: Task, norm: Normalizer) -> dict:
    """The model-ready batch dict of a whole split (see docs/ARCHITECTURE.md)."""
    y_norm, valid = normalized_labels(task_labels(data, task), norm)
    err = np.stack([data.labels[f"{l}_err"].to_numpy(dtype=float) for l in task.labels], axis=1)
    err_norm = np.where(valid & (err != MAGIC_NUMBER), np.abs(err) / norm.label_std, 0.0)
    return {"x": norm.inputs(data), "y": y_norm,
            "y_err": err_norm.astype(np.float32), "valid": valid, "pixel_valid": ~data.mask}


def compile_dataset(split_csv, allstar_path, seismic_path, survey_root, out_paths, quarantine_path,
                    *, manifests=(), bad_error: float = BAD_ERROR, on_bad_file: str = "quarantine",
                    header: dict | None = None, spectra: str = "aspcapStar",
                    chunk_size: int = 256, log=print) -> None:
    """The compile rule: every split of a dataset to `<split>.fits`, plus quarantine.csv
    listing each star left out (failed download, unreadable file) with the reason."""
    split_table = pd.read_csv(split_csv, dtype={"APOGEE_ID": str})
    allstar = unique_stars(survey.read_allstar(allstar_path))
    seismic = survey.read_seismic(seismic_path) if seismic_path else None
    labels = labels_from_catalogue(allstar, seismic)
    stars = allstar[["APOGEE_ID", "TELESCOPE", "FIELD"]].merge(split_table, on="APOGEE_ID")
    unknown = set(split_table["APOGEE_ID"]) - set(stars["APOGEE_ID"])
    if unknown:
        raise ValueError(f"{split_csv}: {len(unknown)} stars are not in {allstar_path}, "
                         f"e.g. {sorted(unknown)[:3]}")
    skip = {}
    for manifest in manifests:
        rows = pd.read_csv(manifest, dtype={"APOGEE_ID": str}, keep_default_na=False)
        bad = rows[rows["status"] != "ok"]
        skip.update(zip(bad["APOGEE_ID"], bad["reason"]))
    quarantine = []
    for out_path in out_paths:
        name = Path(out_path).stem
        quarantine.append(compile_split(survey_root, stars[stars["split"] == name], labels,
                                        out_path, header=header or {}, split_name=name,
                                        bad_error=bad_error, skip=skip, on_bad_file=on_bad_file,
                                        spectra=spectra, chunk_size=chunk_size, log=log))
    table = pd.concat(quarantine, ignore_index=True)
    with atomic_path(quarantine_path) as tmp:
        table.to_csv(tmp, index=False)
    if len(table):
        log(f"quarantined {len(table)} stars: {table['reason'].value_counts().to_dict()}")
