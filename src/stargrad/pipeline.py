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

from . import models, params_io, train
from .apogee import MAGIC_NUMBER
from .dataset import Normalizer, batch, load_split, task_labels
from .provenance import atomic_path, header_cards, write_json
from .tasks import Task


# ---------------------------------------------------------------------------- train

def build_model(model_spec: dict, task: Task) -> models.Model:
    from .apogee import N_PIX_GAPLESS
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
    resid2 = np.where(valid, (pred - valid_batch["y"]) ** 2, 0.0)
    residual_std = np.sqrt(resid2.sum(0) / np.maximum(valid.sum(0), 1))
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
        from .mc import mc_predict
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


def predict_splits(model_dir, split_paths, out_paths, *, mc_samples: int, seed: int,
                   batch_size: int = 256, config_digest: str = "", log=print) -> None:
    """Predict every star of each compiled split with one trained model (loaded once); write
    one PREDICTIONS table per split, in physical units."""
    model, params, norm, meta = load_trained(model_dir)
    task = Task(meta["task"], meta["dataset"], tuple(meta["labels"]), meta["kind"])
    for split_path, out_path in zip(split_paths, out_paths):
        t0 = time.perf_counter()
        data = load_split(split_path)
        if len(data):
            out = predict_arrays(model, params, norm.inputs(data), meta, mc_samples=mc_samples,
                                 seed=seed, batch_size=batch_size)
        else:       # e.g. the cluster split of a dataset without a cluster
            out = {k: np.zeros((0, task.n_outputs)) for k in
                   ("value", "std_model", "std_predictive", "std_total")}
        _write_predictions(out_path, data, task, norm, out, header_cards(
            config_digest, seed, model=meta["model"], task=task.name, split=Path(split_path).stem,
            mcsample=mc_samples if model.stochastic else 0))
        log(f"predicted {len(data)} stars of {Path(split_path).name} with {meta['model']}/"
            f"{task.name} in {time.perf_counter() - t0:.1f} s")


def _write_predictions(path, data, task: Task, norm: Normalizer, out: dict, header: dict) -> None:
    truth = task_labels(data, task)
    scale = 1.0 if task.kind == "classification" else norm.label_std
    columns = {"APOGEE_ID": data.ids.astype("S32")}
    for k, label in enumerate(task.labels):
        columns[label] = out["value"][:, k] * norm.label_std[k] + norm.label_mean[k]
        for name in ("std_model", "std_predictive", "std_total"):
            columns[f"{label}_{name}"] = out[name][:, k] * np.broadcast_to(scale, (task.n_outputs,))[k]
        columns[f"{label}_true"] = truth[:, k]
    table = np.empty(len(data), dtype=[(n, v.dtype if n == "APOGEE_ID" else np.float64)
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


def missing_to_nan(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(values == MAGIC_NUMBER, np.nan, values)
