"""The train rule: fit one model on one task and write its directory."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import numpy as np

from .. import models, params_io, train
from ..datasets.dataset import Normalizer, batch, load_split
from ..provenance import atomic_path, write_json
from ..tasks import Task
from ..trained import apply_in_chunks, build_model


def model_batch(data, task: Task, norm: Normalizer, family: str) -> dict:
    """`dataset.batch` of a split without the flux errors when the family does not read them
    (they would double the memory the training arrays take on the device)."""
    out = batch(data, task, norm)
    if not models.traits(family).uses_flux_errors:
        del out["x_err"]
    return out


#: The job's share of its walltime kept for saving a checkpoint and writing the outputs.
WALLTIME_MARGIN = 0.1


def walltime_deadline(walltime_s: float | None, job_start: float) -> float | None:
    """The `time.monotonic()` by which a job with a walltime (a SLURM job's runtime, s) must
    have saved its training state: `job_start` (when the job began,
    `stargrad.pipeline.job.STARTED`) plus the walltime less WALLTIME_MARGIN of it, so that loading
    the data counts; None without a walltime."""
    return None if walltime_s is None else job_start + walltime_s * (1 - WALLTIME_MARGIN)


def train_model(train_path, valid_path, out_dir, *, task: Task, model_name: str, model_spec: dict,
                seed: int, code_digest: str, config_digest: str, checkpoint_dir=None,
                walltime_s: float | None = None, job_start: float | None = None,
                run_control: dict | None = None, log=print) -> None:
    """Train one model on one task; write params.npz, model.json, norm.json, history.csv.

    Training state is checkpointed in `checkpoint_dir` (None: no checkpoints), outside the outputs (which Snakemake
    deletes when a job fails) and named by the code and config digests, so that only a rerun
    of the same code and config resumes it (and `train.fit` resumes it only on the same data).
    A job that would pass its time budget (`time_budget_s`, or its walltime `walltime_s`
    counted from `job_start`, a `time.monotonic()` value, by default this call's start) saves
    and stops (train.TimeBudgetExceeded, a non-zero exit); Snakemake's retry resumes. The
    directory is removed once the model is written. `run_control` may hold the TrainConfig
    fields that steer the run but not its result (train.RUN_CONTROL_FIELDS); other keys in
    it are ignored."""
    out_dir = Path(out_dir)
    deadline = walltime_deadline(walltime_s, time.monotonic() if job_start is None
                                 else job_start)
    t0 = time.perf_counter()
    train_data, valid_data = load_split(train_path), load_split(valid_path)
    log(f"train {model_name}/{task.name}: family {model_spec['family']}, {len(train_data)} train / "
        f"{len(valid_data)} valid spectra, labels {list(task.labels)}")
    model = build_model(model_spec, task)
    norm = Normalizer.fit(train_data, task, model.input_norm)
    train_batch, valid_batch = (model_batch(d, task, norm, model_spec["family"])
                                for d in (train_data, valid_data))
    control = {k: v for k, v in (run_control or {}).items() if k in train.RUN_CONTROL_FIELDS}
    cfg = train.TrainConfig.from_dict({"seed": seed, **model_spec.get("train", {}), **control})
    if deadline is not None or cfg.time_budget_s is not None:
        left = None if deadline is None else deadline - time.monotonic()
        log(f"time budget: time_budget_s {cfg.time_budget_s}, walltime "
            f"{'none' if left is None else f'{left:.0f} s left of {walltime_s:.0f} s'} "
            f"(checkpoints in {checkpoint_dir})")
    params, history = train.fit(model, train_batch, valid_batch, cfg, jax.random.PRNGKey(seed),
                                checkpoint_dir=checkpoint_dir, deadline=deadline, log=log)
    pred = apply_in_chunks(model, params, valid_batch["x"], valid_batch.get("x_err"))["value"]
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
    settings = {k: v for k, v in model_spec.get("train", {}).items()
                if k not in train.RUN_CONTROL_FIELDS}
    write_json(out_dir / "model.json", {
        "model": model_name, "family": model_spec["family"], "hyper": model_spec.get("hyper", {}),
        "train": settings, "task": task.name, "dataset": task.dataset,
        "labels": list(task.labels), "kind": task.kind, "input_norm": model.input_norm,
        "stochastic": model.stochastic, "seed": seed, "code_hash": code_digest,
        "config_hash": config_digest, "n_train": len(train_data), "n_valid": len(valid_data),
        "epochs": int(len(history)), "residual_std_normalized": residual_std.tolist()})
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log(f"trained {model_name}/{task.name} in {time.perf_counter() - t0:.1f} s")
