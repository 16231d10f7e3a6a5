"""The predict rule: every split of a task's dataset with one trained model, with calibrated
uncertainties."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..applied import load
from ..sdss.apogee import is_missing
from ..datasets.dataset import load_split, split_rows, task_labels
from ..predictions import STD_COLUMNS, mad_std, write_predictions
from ..provenance import atomic_path, header_cards
from ..tasks import Task


def check_calibration_mode(calibrate: bool, mc_splits, where: str = "config") -> None:
    """Calibration is fitted on the valid split and applied to test: with MC dropout both
    must be predicted the same way (both in `mc_splits` or neither)."""
    if calibrate and ("test" in mc_splits) != ("valid" in mc_splits):
        raise ValueError(f"{where}: predict.calibrate fits on the valid split and applies to "
                         f"test, so predict.mc_splits must list both or neither (it is "
                         f"{sorted(mc_splits)}), or set predict.calibrate: false")


def calibration_scales(predicted: pd.DataFrame, truth: np.ndarray, labels,
                       min_stars: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per-label variance-scaling factors (Laves et al. 2020 "sigma scaling", robust): the
    mad_std of (value - truth) / std_total over the stars whose truth is known. A label with
    fewer than `min_stars` such stars keeps 1. Returns (scales, stars used)."""
    scales, n = np.ones(len(labels)), np.zeros(len(labels), int)
    for k, label in enumerate(labels):
        known = ~is_missing(truth[:, k])
        n[k] = known.sum()
        if n[k] >= min_stars:
            z = (predicted[label].to_numpy() - truth[:, k]) / predicted[f"{label}_std_total"]
            scales[k] = float(mad_std(z[known]))
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError(f"calibration: non-positive or non-finite scale factors {scales}")
    return scales, n


def predict_splits(model_dir, split_paths, out_paths, *, mc_samples: int, seed: int,
                   mc_splits=("valid", "test", "cluster"), calibrate: bool = True,
                   calibration_path=None, batch_size: int = 256, config_digest: str = "",
                   log=print) -> None:
    """Predict every star of each compiled split with one trained model (`api.load`, loaded
    once); write one PREDICTIONS table per split, in physical units. MC dropout (Bayesian
    families) runs on `mc_splits` only; other splits get one dropout-off pass (std_model = 0).

    With `calibrate` (regression), the validation split's predictions fit one scale factor per
    label (`calibration_scales`) that gives `<label>_std_calibrated` = factor x std_total on
    every split; the factors go to `calibration_path` (CSV). Without it the factor is 1."""
    trained = load(model_dir, calibration=None)
    meta, labels = trained.meta, list(trained.labels)
    stems = [Path(p).stem for p in split_paths]
    calibrate = calibrate and meta["kind"] == "regression"
    if calibrate and "valid" not in stems:
        raise ValueError(f"{model_dir}: calibration needs the valid split among {stems}")
    if trained.model.stochastic and mc_samples > 0:
        check_calibration_mode(calibrate, mc_splits, where=str(model_dir))
    # One chunk size for every split, so that all of them run one compiled program per MC
    # setting (tiny splits: one chunk of the largest split's size, its padding cheap beside a
    # compilation).
    batch_size = min(batch_size, max(1, *(split_rows(p) for p in split_paths)))
    # Predictions first, then calibration, then files: keep only ids and truths of each split,
    # not its spectra (a DR17 training split is GBs).
    predicted, ids, truths = {}, {}, {}
    task = Task(meta["task"], meta["dataset"], tuple(labels), meta["kind"])
    for stem, split_path in zip(stems, split_paths):
        t0 = time.perf_counter()
        data = load_split(split_path)
        ids[stem], truths[stem] = data.ids, task_labels(data, task)
        samples = mc_samples if stem in mc_splits else 0
        predicted[stem] = (trained.predict(data.flux, data.error, data.mask, ids=data.ids,
                                           mc_samples=samples, seed=seed,
                                           batch_size=batch_size) if len(data)
                           else pd.DataFrame({c: np.zeros(0) for c in _columns(labels)}))
        log(f"predicted {len(data)} stars of {Path(split_path).name} with {meta['model']}/"
            f"{task.name} ({samples if trained.model.stochastic else 0} MC samples) in "
            f"{time.perf_counter() - t0:.1f} s")
    scales, n_used = np.ones(len(labels)), np.zeros(len(labels), int)
    if calibrate:
        scales, n_used = calibration_scales(predicted["valid"], truths["valid"], labels)
        log("calibration (std_total scale from the valid split): "
            + ", ".join(f"{label} {s:.3g}" for label, s in zip(labels, scales)))
    if calibration_path is not None:
        with atomic_path(calibration_path) as tmp:
            pd.DataFrame({"label": labels, "scale": scales, "n_valid": n_used,
                          "method": "valid mad_std of z" if calibrate else "none"}
                         ).to_csv(tmp, index=False, float_format="%.6g")
    for stem, out_path in zip(stems, out_paths):
        table = predicted[stem]
        for label, scale in zip(labels, scales):
            table[f"{label}_std_calibrated"] = table[f"{label}_std_total"] * scale
        write_predictions(out_path, ids[stem], table, truths[stem], labels, header_cards(
            config_digest, seed, model=meta["model"], task=task.name, split=stem,
            mcsample=mc_samples if trained.model.stochastic and stem in mc_splits else 0))


def _columns(labels) -> list[str]:
    return [name for label in labels for name in (label, *(f"{label}_{s}" for s in STD_COLUMNS))]
