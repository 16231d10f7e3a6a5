"""The predict rule: every split of a task's dataset with one trained model, with calibrated
uncertainties."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.stats import mad_std

from ..dataset import load_split, normalized_labels, task_labels
from ..mc import predict_with_uncertainty
from ..predictions import write_predictions
from ..provenance import atomic_path, header_cards
from ..tasks import Task
from ..trained import load_trained


def check_calibration_mode(calibrate: bool, mc_splits, where: str = "config") -> None:
    """Calibration is fitted on the valid split and applied to test: with MC dropout both
    must be predicted the same way (both in `mc_splits` or neither)."""
    if calibrate and ("test" in mc_splits) != ("valid" in mc_splits):
        raise ValueError(f"{where}: predict.calibrate fits on the valid split and applies to "
                         f"test, so predict.mc_splits must list both or neither (it is "
                         f"{sorted(mc_splits)}), or set predict.calibrate: false")


def calibration_scales(out: dict, y: np.ndarray, valid: np.ndarray, min_stars: int = 20):
    """Per-label variance-scaling factors (Laves et al. 2020 "sigma scaling", robust): the
    mad_std of (value - y) / std_total over the stars that have the label, in normalized units.
    A label with fewer than `min_stars` such stars keeps 1. Returns (scales, stars used)."""
    z = np.where(valid, (out["value"] - y) / np.where(valid, out["std_total"], 1.0), np.nan)
    n = valid.sum(axis=0)
    scales = np.ones(z.shape[1])
    for k in np.flatnonzero(n >= min_stars):
        scales[k] = float(mad_std(z[valid[:, k], k]))
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError(f"calibration: non-positive or non-finite scale factors {scales}")
    return scales, n


def predict_splits(model_dir, split_paths, out_paths, *, mc_samples: int, seed: int,
                   mc_splits=("valid", "test", "cluster"), calibrate: bool = True,
                   calibration_path=None, batch_size: int = 256, config_digest: str = "",
                   log=print) -> None:
    """Predict every star of each compiled split with one trained model (loaded once); write
    one PREDICTIONS table per split, in physical units. MC dropout (Bayesian families) runs
    on `mc_splits` only; other splits get one dropout-off pass (std_model = 0).

    With `calibrate` (regression), the validation split's predictions fit one scale factor per
    label (`calibration_scales`) that gives `<label>_std_calibrated` = factor x std_total on
    every split; the factors go to `calibration_path` (CSV). Without it the factor is 1."""
    model, params, norm, meta = load_trained(model_dir)
    task = Task(meta["task"], meta["dataset"], tuple(meta["labels"]), meta["kind"])
    stems = [Path(p).stem for p in split_paths]
    calibrate = calibrate and task.kind == "regression"
    if calibrate and "valid" not in stems:
        raise ValueError(f"{model_dir}: calibration needs the valid split among {stems}")
    if model.stochastic and mc_samples > 0:
        check_calibration_mode(calibrate, mc_splits, where=str(model_dir))
    # Predictions first, then calibration, then files: keep only ids and truths of each split,
    # not its spectra (a DR17 training split is GBs).
    outs, ids, truths = {}, {}, {}
    for stem, split_path in zip(stems, split_paths):
        t0 = time.perf_counter()
        data = load_split(split_path)
        ids[stem], truths[stem] = data.ids, task_labels(data, task)
        samples = mc_samples if stem in mc_splits else 0
        if len(data):
            outs[stem] = predict_with_uncertainty(model, params, norm.inputs(data), meta,
                                                  mc_samples=samples, seed=seed,
                                                  batch_size=batch_size,
                                                  x_err=norm.input_errors(data))
        else:       # e.g. the cluster split of a dataset without a cluster
            outs[stem] = {k: np.zeros((0, task.n_outputs)) for k in
                          ("value", "std_model", "std_predictive", "std_total")}
        log(f"predicted {len(data)} stars of {Path(split_path).name} with {meta['model']}/"
            f"{task.name} ({samples if model.stochastic else 0} MC samples) in "
            f"{time.perf_counter() - t0:.1f} s")
    scales, n_used = np.ones(task.n_outputs), np.zeros(task.n_outputs, int)
    if calibrate:
        scales, n_used = calibration_scales(outs["valid"],
                                            *normalized_labels(truths["valid"], norm))
        log("calibration (std_total scale from the valid split): "
            + ", ".join(f"{label} {s:.3g}" for label, s in zip(task.labels, scales)))
    if calibration_path is not None:
        with atomic_path(calibration_path) as tmp:
            pd.DataFrame({"label": task.labels, "scale": scales, "n_valid": n_used,
                          "method": "valid mad_std of z" if calibrate else "none"}
                         ).to_csv(tmp, index=False, float_format="%.6g")
    for stem, out_path in zip(stems, out_paths):
        out = dict(outs[stem], std_calibrated=outs[stem]["std_total"] * scales)
        write_predictions(out_path, ids[stem], truths[stem], task, norm, out, header_cards(
            config_digest, seed, model=meta["model"], task=task.name, split=stem,
            mcsample=mc_samples if model.stochastic and stem in mc_splits else 0))
