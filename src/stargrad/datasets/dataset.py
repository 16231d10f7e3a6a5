"""Compiled datasets: per-split FITS files of gap-removed spectra plus labels, their
normalization (statistics from the training split only) and model-ready batches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from ..sdss import apogee, survey
from ..sdss.apogee import is_missing
from ..tasks import Task


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


def split_rows(path) -> int:
    """The number of stars of a compiled `<split>.fits`, read from its LABELS header only."""
    try:
        with fitsio.FITS(str(path)) as fits:
            if "LABELS" not in fits:
                raise survey.SurveyFileError(path, "missing HDU LABELS")
            return fits["LABELS"].get_nrows()
    except OSError as exc:
        raise survey.SurveyFileError(path, f"cannot read compiled split: {exc}") from exc


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
    labels = survey.table_frame(table)
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
            valid = ~is_missing(y[:, k])
            if not valid.any():
                raise ValueError(f"no training star has label {label!r}: cannot train task {task.name}")
            if task.kind == "classification":
                lmean.append(0.0), lstd.append(1.0)
            else:
                lmean.append(y[valid, k].mean())
                lstd.append(max(y[valid, k].std(), 1e-8))
        return cls(input_mode, mean.astype(np.float32), std.astype(np.float32), task.labels,
                   np.array(lmean), np.array(lstd))

    def inputs(self, flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Normalized (N, 7514) flux; bad pixels (`mask` True) are set to the training mean
        (i.e. 0 after centring)."""
        x = (flux - self.input_mean) / self.input_std
        return np.where(mask, 0.0, x).astype(np.float32)

    def input_errors(self, error: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Flux errors in the units of `inputs`; +inf at masked pixels (no information)."""
        return np.where(mask, np.inf, error / self.input_std).astype(np.float32)

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
    """(N, K) physical label values of a task; missing ones are −9999 or NaN (`is_missing`)."""
    missing = [l for l in task.labels if l not in data.labels]
    if missing:
        raise KeyError(f"compiled split lacks label columns {missing}")
    return np.stack([data.labels[l].to_numpy(dtype=float) for l in task.labels], axis=1)


def normalized_labels(y: np.ndarray, norm: Normalizer) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) physical labels -> (float32 normalized labels, 0 where missing; valid mask)."""
    valid = ~is_missing(y)
    return np.where(valid, (y - norm.label_mean) / norm.label_std, 0.0).astype(np.float32), valid


def batch(data: SplitData, task: Task, norm: Normalizer) -> dict:
    """The model-ready batch dict of a whole split (see docs/ARCHITECTURE.md): `x` and its
    error `x_err` (+inf at masked pixels), `y` with `y_err` (0 where unknown) and `valid`,
    and `pixel_valid`."""
    y_norm, valid = normalized_labels(task_labels(data, task), norm)
    err = np.stack([data.labels[f"{l}_err"].to_numpy(dtype=float) for l in task.labels], axis=1)
    err_norm = np.where(valid & ~is_missing(err), np.abs(err) / norm.label_std, 0.0)
    return {"x": norm.inputs(data.flux, data.mask),
            "x_err": norm.input_errors(data.error, data.mask), "y": y_norm,
            "y_err": err_norm.astype(np.float32), "valid": valid, "pixel_valid": ~data.mask}


