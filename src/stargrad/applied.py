"""A trained model applied to any spectra: the one code path of the predict, catalogue and
generative_samples rules and of `stargrad.load` (`stargrad.api`, which adds `explain`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import models
from .sdss.apogee import N_PIX, N_PIX_GAPLESS, gap_delete
from .sdss.spectra import read_clean_spectrum
from .datasets.dataset import Normalizer
from .mc import predict_with_uncertainty
from .predictions import STD_COLUMNS
from .trained import apply_in_chunks, load_trained


MODEL_FILES = ("model.json", "norm.json", "params.npz")
#: The most stars `predict` puts in one compiled chunk unless told otherwise.
DEFAULT_BATCH = 256


@dataclass(frozen=True)
class TrainedModel:
    """A trained model applied to spectra: `predict` (labels with uncertainties) for supervised
    models, `reconstruct` for generative ones (VAE, PCA).
    Spectra are continuum-normalized flux on the 8575-pixel apStar grid or the 7514-pixel
    gap-removed grid, or paths of aspcapStar or apStar files; labels come out in physical
    units (K, dex, μHz, s; the class-1 probability for classification)."""
    model: models.Model
    params: Any
    norm: Normalizer
    meta: dict
    #: per-label factor on std_total giving std_calibrated (None: not calibrated, NaN column)
    calibration: np.ndarray | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.meta["labels"])

    def inputs(self, flux, error=None, mask=None):
        """(normalized flux, normalized errors or None, bad-pixel mask), all (N, 7514), of
        spectra given as arrays or file paths (see `spectra`)."""
        flux, error, mask = spectra(flux, error, mask)
        x_err = None if error is None else self.norm.input_errors(error, mask)
        return self.norm.inputs(flux, mask), x_err, mask

    def predict(self, flux, error=None, mask=None, *, ids=None, mc_samples: int = 100,
                seed: int = 0, batch_size: int | None = None) -> pd.DataFrame:
        """Labels and uncertainties of spectra: one row per spectrum and, per label, the value
        and `<label>_std_model`, `_std_predictive`, `_std_total`, `_std_calibrated` (see
        docs/ARCHITECTURE.md); families that fit each star by χ² add `converged`. Stochastic (MC-dropout) models average `mc_samples` dropout
        masks drawn from `seed` and each star's ID in `ids` (default: its row number), so a
        star gets the same prediction in any batch (0 samples: one dropout-off pass).
        Stars go through in compiled chunks of `batch_size` (default: all of them, up to 256),
        the last one padded: calls with the same `batch_size` share one program."""
        self._require_labels("predict")
        x, x_err, _ = self.inputs(flux, error, mask)
        if batch_size is None:
            batch_size = min(DEFAULT_BATCH, max(len(x), 1))
        out = predict_with_uncertainty(self.model, self.params, x, self.meta,
                                       mc_samples=mc_samples, seed=seed, batch_size=batch_size,
                                       x_err=x_err, ids=ids)
        scale = (np.full(len(self.labels), np.nan) if self.calibration is None
                 else self.calibration)
        out["std_calibrated"] = out["std_total"] * scale
        columns = {}
        for k, label in enumerate(self.labels):
            columns[label] = out["value"][:, k] * self.norm.label_std[k] + self.norm.label_mean[k]
            for name in STD_COLUMNS:
                columns[f"{label}_{name}"] = out[name][:, k] * self.norm.label_std[k]
        if "converged" in out:
            columns["converged"] = np.asarray(out["converged"], bool)
        return pd.DataFrame(columns)


    def reconstruct(self, flux, error=None, mask=None, *, batch_size: int = 256) -> dict:
        """A generative model's (VAE, PCA) view of spectra: "flux", the reconstruction (N, 7514)
        in continuum-normalized flux, and "latent", the latent code z = μ (N, latent size).
        Masked pixels are replaced by the training mean before encoding."""
        if models.traits(self.meta["family"]).supervised:
            raise ValueError(f"{self._name}: a supervised model predicts labels, it does not "
                             f"reconstruct spectra; use predict() or explain()")
        x, _, _ = self.inputs(flux, error, mask)
        out = apply_in_chunks(self.model, self.params, x, batch_size=batch_size)
        return {"flux": out["value"] * self.norm.input_std + self.norm.input_mean,
                "latent": out["z_mean"]}

    @property
    def _name(self) -> str:
        return f"model {self.meta['model']}/{self.meta['task']} (family {self.meta['family']})"

    def _require_labels(self, method: str) -> None:
        if not models.traits(self.meta["family"]).supervised:
            raise ValueError(f"{self._name} is a generative model of the spectra: it has no "
                             f"labels to {method}. It offers reconstruct(flux), the "
                             f"reconstructed spectra and their latent codes "
                             f"(stargrad.generative.analysis scores them: reconstruction error, "
                             f"anomaly score)")


def spectra(flux, error=None, mask=None):
    """(flux, error or None, mask) on the 7514-pixel grid from arrays of one spectrum (P,) or
    many (N, P), P = 8575 or 7514, or from paths of aspcapStar or apStar files (which one each
    file is, its HDU layout says: `survey.spectrum_kind`), read and cleaned as the workflow
    compiles them (apStar: row 0 continuum-normalized; bad pixels masked with flux 1, error 1).
    `mask` (True = bad pixel) masks pixels of arrays; without it, NaN or infinite flux is an
    error."""
    if isinstance(flux, (str, Path)) or (isinstance(flux, (list, tuple)) and flux
                                          and isinstance(flux[0], (str, Path))):
        paths = [flux] if isinstance(flux, (str, Path)) else list(flux)
        if error is not None or mask is not None:
            raise ValueError("spectra given as file paths carry their own error and mask; "
                             "pass error= and mask= only with flux arrays")
        read = [read_clean_spectrum(path, kind=None) for path in paths]
        flux, error, mask = (np.stack(parts) for parts in zip(*read))
        return flux, error, mask.astype(bool)
    flux = _pixels("flux", flux)
    error = None if error is None else _pixels("error", error)
    mask = np.zeros(flux.shape, bool) if mask is None else _pixels("mask", mask).astype(bool)
    for name, arr in (("error", error), ("mask", mask)):
        if arr is not None and arr.shape != flux.shape:
            raise ValueError(f"{name} has shape {arr.shape}, flux {flux.shape} (after gap "
                             f"removal)")
    bad = ~np.isfinite(flux) & ~mask
    if bad.any():
        stars = np.flatnonzero(bad.any(axis=1))
        raise ValueError(f"flux has {int(bad.sum())} NaN/inf pixels in spectra "
                         f"{stars[:5].tolist()}{'...' if len(stars) > 5 else ''}; pass "
                         f"mask= (True = bad pixel) to leave them out")
    if error is not None:
        mask = mask | ~(np.isfinite(error) & (error > 0))
    return np.where(mask, 1.0, flux).astype(np.float32), \
        (None if error is None else np.where(mask, 1.0, error).astype(np.float32)), mask


def _pixels(name: str, arr) -> np.ndarray:
    """(N, 7514) float view of one or many spectra on the 8575 or 7514 grid."""
    arr = np.asarray(arr)
    if arr.ndim not in (1, 2) or arr.shape[-1] not in (N_PIX, N_PIX_GAPLESS) or arr.size == 0:
        raise ValueError(f"{name} must have {N_PIX} or {N_PIX_GAPLESS} pixels per spectrum, "
                         f"shape (P,) or (N, P); got {arr.shape}")
    arr = np.atleast_2d(gap_delete(arr))
    return arr if arr.dtype == bool else arr.astype(np.float64)


def load(model_dir, calibration="auto") -> TrainedModel:
    """A trained model directory (`results/models/<model>/<task>`) as a TrainedModel.

    `calibration`: a calibration.csv path, None, or "auto": the workflow's
    `results/predictions/<model>/<task>/calibration.csv` beside the model when it exists."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir}: no such model directory (a trained model is "
                         f"results/models/<model>/<task>, holding {', '.join(MODEL_FILES)})")
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ValueError(f"{model_dir} is not a trained model directory: it lacks "
                         f"{', '.join(missing)}")
    try:
        model, params, norm, meta = load_trained(model_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{model_dir} is not a usable trained model directory: "
                         f"{type(exc).__name__}: {exc}") from exc
    if calibration == "auto":
        guess = model_dir.parent.parent.parent / "predictions" / meta["model"] / meta["task"] / \
            "calibration.csv"
        calibration = guess if guess.is_file() else None
    scales = None
    if calibration is not None:
        table = pd.read_csv(calibration).set_index("label")
        unknown = [label for label in meta["labels"] if label not in table.index]
        if unknown:
            raise ValueError(f"{calibration}: no scale for labels {unknown}")
        scales = table.loc[list(meta["labels"]), "scale"].to_numpy(float)
    return TrainedModel(model, params, norm, meta, scales)
