"""What each workflow rule does, as library calls: the rule scripts only translate
`snakemake.input/output/params` into these functions."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import fitsio
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from astropy.stats import mad_std

from . import attribution, models, params_io, plots_attribution, train
from .apogee import N_PIX_GAPLESS
from .mc import mc_predict
from .dataset import Normalizer, batch, load_split, normalized_labels, task_labels
from .provenance import atomic_path, header_cards, write_json
from .tasks import Task

#: Uncertainty columns of a PREDICTIONS table, per label (physical units).
STD_COLUMNS = ("std_model", "std_predictive", "std_total", "std_calibrated")


# ---------------------------------------------------------------------------- train

def build_model(model_spec: dict, task: Task) -> models.Model:
    return models.build(model_spec["family"], n_inputs=N_PIX_GAPLESS, n_outputs=task.n_outputs,
                        kind=task.kind, **model_spec.get("hyper", {}))


def deterministic_apply(model: models.Model, params, x: np.ndarray, batch_size: int = 256) -> dict:
    """apply() with dropout off over `x` in batches; returns numpy arrays."""
    apply = jax.jit(lambda p, xb: model.apply(p, xb, key=None, train=False))
    outs: dict[str, list] = {}
    for start in range(0, len(x), batch_size):
        out = apply(params, jnp.asarray(x[start:start + batch_size]))
        for name, value in out.items():
            if np.ndim(value) == 2 and value.shape[0] == min(batch_size, len(x) - start):
                outs.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(parts) for name, parts in outs.items()}


def train_model(train_path, valid_path, out_dir, *, task: Task, model_name: str, model_spec: dict,
                seed: int, code_digest: str, config_digest: str, log=print) -> None:
    """Train one model on one task; write params.npz, model.json, norm.json, history.csv."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    train_data, valid_data = load_split(train_path), load_split(valid_path)
    log(f"train {model_name}/{task.name}: family {model_spec['family']}, {len(train_data)} train / "
        f"{len(valid_data)} valid spectra, labels {list(task.labels)}")
    model = build_model(model_spec, task)
    norm = Normalizer.fit(train_data, task, model.input_norm)
    train_batch, valid_batch = batch(train_data, task, norm), batch(valid_data, task, norm)
    cfg = train.TrainConfig.from_dict({"seed": seed, **model_spec.get("train", {})})
    # A checkpoint only resumes the code that wrote it: edited code starts afresh.
    params, history = train.fit(model, train_batch, valid_batch, cfg, jax.random.PRNGKey(seed),
                                checkpoint_dir=out_dir / f"checkpoint-{code_digest}", log=log)
    pred = deterministic_apply(model, params, valid_batch["x"])["value"]
    valid = valid_batch["valid"]
    if pred.shape == valid.shape:   # supervised: the validation RMS per label
        resid2 = np.where(valid, (pred - valid_batch["y"]) ** 2, 0.0)
        residual_std = np.sqrt(resid2.sum(0) / np.maximum(valid.sum(0), 1))
    else:                           # VAE/PCA: `value` is the reconstructed spectrum
        residual_std = np.full(valid.shape[1], np.nan)
    params_io.save_params(out_dir / "params.npz", params)
    write_json(out_dir / "norm.json", norm.to_json())
    # Wall-clock time goes to the log and benchmark files, never into results (same config
    # and seed must give the same bytes).
    with atomic_path(out_dir / "history.csv") as tmp:
        history.drop(columns=["seconds"], errors="ignore").to_csv(tmp, index=False)
    write_json(out_dir / "model.json", {
        "model": model_name, "family": model_spec["family"], "hyper": model_spec.get("hyper", {}),
        "train": model_spec.get("train", {}), "task": task.name, "dataset": task.dataset,
        "labels": list(task.labels), "kind": task.kind, "input_norm": model.input_norm,
        "stochastic": model.stochastic, "seed": seed, "code_hash": code_digest,
        "config_hash": config_digest, "n_train": len(train_data), "n_valid": len(valid_data),
        "epochs": int(len(history)), "residual_std_normalized": residual_std.tolist()})
    for checkpoint in out_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    log(f"trained {model_name}/{task.name} in {time.perf_counter() - t0:.1f} s")


def load_trained(model_dir):
    """(Model, params, Normalizer, metadata) of a trained model directory."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    norm = Normalizer.from_json(json.loads((model_dir / "norm.json").read_text()))
    task = Task(meta["task"], meta["dataset"], tuple(meta["labels"]), meta["kind"])
    model = build_model({"family": meta["family"], "hyper": meta["hyper"]}, task)
    params = jax.tree_util.tree_map(jnp.asarray, params_io.load_params(model_dir / "params.npz"))
    return model, params, norm, meta


# ---------------------------------------------------------------------------- predict

def predict_arrays(model, params, x, meta, *, mc_samples: int, seed: int, batch_size: int = 256):
    """Value and uncertainties in normalized units: dict of (N, K) arrays."""
    if model.stochastic and mc_samples > 0:
        out = mc_predict(model, params, x, jax.random.PRNGKey(seed), mc_samples=mc_samples,
                         batch_size=batch_size)
        out = {k: np.asarray(v) for k, v in out.items()}
    else:
        det = deterministic_apply(model, params, x, batch_size)
        out = {"value": det["value"], "std_model": np.zeros_like(det["value"])}
        out["std_predictive"] = (np.sqrt(np.exp(det["log_var"])) if "log_var" in det
                                 else np.zeros_like(det["value"]))
    if meta["kind"] == "classification":
        p = np.clip(out["value"], 0.0, 1.0)
        out["std_predictive"] = np.sqrt(p * (1.0 - p))
    elif not np.any(out["std_predictive"]):
        # Families without a variance head: the validation RMS is the predictive spread.
        out["std_predictive"] = np.broadcast_to(
            np.asarray(meta["residual_std_normalized"]), out["value"].shape).copy()
    out["std_total"] = np.sqrt(out["std_model"] ** 2 + out["std_predictive"] ** 2)
    return out


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
    if (calibrate and model.stochastic and mc_samples > 0 and "test" in stems
            and ("test" in mc_splits) != ("valid" in mc_splits)):
        raise ValueError(f"{model_dir}: calibration is fitted on the valid split and applied to "
                         f"test, so both need the same mode: predict.mc_splits is "
                         f"{sorted(mc_splits)}; list both or neither, or set "
                         f"predict.calibrate: false")
    # Predictions first, then calibration, then files: keep only ids and truths of each split,
    # not its spectra (a DR17 training split is GBs).
    outs, ids, truths = {}, {}, {}
    for stem, split_path in zip(stems, split_paths):
        t0 = time.perf_counter()
        data = load_split(split_path)
        ids[stem], truths[stem] = data.ids, task_labels(data, task)
        samples = mc_samples if stem in mc_splits else 0
        if len(data):
            outs[stem] = predict_arrays(model, params, norm.inputs(data), meta,
                                        mc_samples=samples, seed=seed, batch_size=batch_size)
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
        _write_predictions(out_path, ids[stem], truths[stem], task, norm, out, header_cards(
            config_digest, seed, model=meta["model"], task=task.name, split=stem,
            mcsample=mc_samples if model.stochastic and stem in mc_splits else 0))


def _write_predictions(path, ids, truth, task: Task, norm: Normalizer, out: dict,
                       header: dict) -> None:
    columns = {"APOGEE_ID": ids.astype("S32")}
    for k, label in enumerate(task.labels):
        columns[label] = out["value"][:, k] * norm.label_std[k] + norm.label_mean[k]
        for name in STD_COLUMNS:
            columns[f"{label}_{name}"] = out[name][:, k] * norm.label_std[k]
        columns[f"{label}_true"] = truth[:, k]
    table = np.empty(len(ids), dtype=[(n, v.dtype if n == "APOGEE_ID" else np.float64)
                                       for n, v in columns.items()])
    for n, v in columns.items():
        table[n] = v
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header=header)
            fits.write(table, extname="PREDICTIONS")


def read_predictions(path) -> pd.DataFrame:
    table = fitsio.read(str(path), ext="PREDICTIONS")
    frame = {n: (np.char.strip(table[n].astype(str)) if table[n].dtype.kind in "SU"
                 else table[n].astype(np.float64)) for n in table.dtype.names}
    return pd.DataFrame(frame)


# ---------------------------------------------------------------------------- attribute

def attribute(model_dir, split_path, out_dir, *, chunk_size: int, mc_samples: int, seed: int,
              max_stars: int, truth_path=None, config_digest: str = "", log=print) -> None:
    """The attribute rule: mean Jacobian d label / d flux (physical units) over the test
    stars, dropout off; for Bayesian families also averaged over `mc_samples` dropout masks.
    Writes jacobian.fits, lines.csv, windows.csv, fidelity.csv and one figure per label."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    model, params, norm, meta = load_trained(model_dir)
    data = load_split(split_path)
    x = norm.inputs(data)[:max_stars]
    labels = list(meta["labels"])
    label_std = norm.label_std          # 1 for classification (Normalizer)
    mean_j, mean_abs = attribution.mean_jacobian(model, params, x, chunk_size=chunk_size)
    mean_j = attribution.to_physical(mean_j, norm.input_std, label_std)
    mean_abs = attribution.to_physical(mean_abs, norm.input_std, label_std)
    log(f"Jacobian of {len(x)} stars × {len(labels)} labels (dropout off) in "
        f"{time.perf_counter() - t0:.1f} s: {len(x) / (time.perf_counter() - t0):.1f} spectra/s")
    header = header_cards(config_digest, seed, model=meta["model"], task=meta["task"],
                          nstars=len(x))
    with atomic_path(out_dir / "jacobian.fits") as tmp:
        attribution.write_jacobian_fits(tmp, mean_j, mean_abs, labels, header)
        if model.stochastic and mc_samples > 0:
            t1 = time.perf_counter()
            mc_j, _ = attribution.mean_jacobian(model, params, x, chunk_size=max(1, chunk_size // 4),
                                                key=jax.random.PRNGKey(seed), mc_samples=mc_samples)
            with fitsio.FITS(str(tmp), "rw") as fits:
                fits.write(attribution.to_physical(mc_j, norm.input_std, label_std).astype(np.float32),
                           extname="MEAN_JACOBIAN_MC", header={"MCSAMPLE": mc_samples})
            log(f"MC-averaged Jacobian ({mc_samples} dropout masks) in {time.perf_counter() - t1:.1f} s")
    lines = attribution.lines_table(mean_j, labels)
    shares = attribution.window_shares(mean_abs, labels)
    if truth_path:
        weights = fitsio.read(str(truth_path), ext="EFFICIENT_WEIGHTS")
        fid = attribution.fidelity(mean_j, weights, labels=labels)
    else:
        fid = pd.DataFrame({"label": labels, "fidelity": np.nan})
    for name, table in (("lines.csv", lines), ("windows.csv", shares), ("fidelity.csv", fid)):
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for k, label in enumerate(labels):
        plots_attribution.plot_label_jacobian(plot_dir / f"{label}.png", mean_j[k], label,
                                              lines[lines["label"] == label])
    log(f"attribution of {meta['model']}/{meta['task']} done in {time.perf_counter() - t0:.1f} s")
