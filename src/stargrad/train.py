"""The one generic training loop for every gradient-trained model family.

`fit` runs optax Adam over shuffled minibatches kept on device (one `lax.scan` per epoch),
evaluates the validation loss after each epoch, lowers the learning rate on a plateau and
stops early, as astroNN's Keras callbacks do, and returns the best-validation parameters.
Families with a closed-form `Model.fit` (ridge, KNN, PCA) bypass the loop.

Calling conventions for family authors:
- training steps call `model.loss(params, batch, key)` with a fresh key per step;
- validation calls `model.loss(params, batch, None)`: `key=None` means deterministic
  (dropout off), so the validation loss is the same every time it is computed;
- a family with `model.init_data` gets its initial parameters from `init_data(train, key)`
  (the training batch dict) instead of `init(key)`: data-derived constants such as a PCA basis;
- a family with `model.finish` gets the best parameters through `finish(params, train, valid)`
  after the loop: constants measured with the trained model (the Payne's emulator scatter
  from validation residuals);
- a top-level `"frozen"` entry of a params dict is never updated (its updates are zeroed
  after the optimizer, weight decay included): constants the loss reads but does not train.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jax import lax

from .params_io import load_params, save_params
from .train_config import RUN_CONTROL_FIELDS, TrainConfig  # noqa: F401  (re-exported)

BATCH_KEYS = ("x", "y", "y_err", "valid")
#: Optional (B, P) flux errors, normalized like x; +inf marks a masked pixel (no information).
FLUX_ERROR_KEY = "x_err"
CHECKPOINT_NAME = "checkpoint.npz"
FROZEN = "frozen"
# Changing these on resume is allowed; any other config difference is an error.
_RESUMABLE_FIELDS = ("max_epochs", "checkpoint_every", "time_budget_s")


class TimeBudgetExceeded(RuntimeError):
    """Training stopped before its time budget ran out, its state saved in a checkpoint that
    the next call (e.g. Snakemake's retry of the job) resumes."""


# ---------------------------------------------------------------- input checks

def _check_batch(which: str, batch) -> dict:
    """Validate a batch dict of numpy arrays; return it with float32 x/y/y_err (and x_err, which
    may hold +inf at masked pixels but no NaN or −inf)."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"{which} must be a dict of arrays, got {type(batch).__name__}")
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(f"{which} lacks {', '.join(missing)} (needs {', '.join(BATCH_KEYS)})")
    out = {}
    for name, value in batch.items():
        arr = np.asarray(value)
        label = f"{which}[{name!r}]"
        if arr.ndim == 0:
            raise ValueError(f"{label} must have a leading star axis, got a scalar")
        if name == "valid" and arr.dtype != bool:
            raise TypeError(f"{label} must be bool, got {arr.dtype}")
        if name in ("x", "y", "y_err", FLUX_ERROR_KEY):
            if arr.ndim != 2:
                axis = "pixels" if name in ("x", FLUX_ERROR_KEY) else "labels"
                raise ValueError(f"{label} must be 2-D (stars, {axis}), got shape {arr.shape}")
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"{label} must be numeric, got {arr.dtype}")
            arr = arr.astype(np.float32, copy=False)
        elif arr.dtype.kind not in "fiub":
            raise TypeError(f"{label} must be numeric or bool, got {arr.dtype}")
        if arr.dtype.kind == "f":
            # x_err is +inf at masked pixels (no information), else positive; nothing else may
            # be non-finite
            allowed = arr > 0 if name == FLUX_ERROR_KEY else np.isfinite(arr)
            bad = int(np.size(arr) - np.count_nonzero(allowed))
            if bad:
                what = "NaN/-inf or non-positive" if name == FLUX_ERROR_KEY else "NaN/inf"
                raise ValueError(f"{label} has {bad} {what} values")
        out[name] = arr
    n_stars, n_labels = out["y"].shape
    if n_stars == 0:
        raise ValueError(f"{which} has no stars")
    for name, arr in out.items():
        if arr.shape[0] != n_stars:
            raise ValueError(f"{which}[{name!r}] has {arr.shape[0]} stars, "
                             f"{which}['y'] has {n_stars}")
    if FLUX_ERROR_KEY in out and out[FLUX_ERROR_KEY].shape != out["x"].shape:
        raise ValueError(f"{which}[{FLUX_ERROR_KEY!r}] has shape {out[FLUX_ERROR_KEY].shape}, "
                         f"expected {out['x'].shape} like {which}['x']")
    for name in ("y_err", "valid"):
        if out[name].shape != (n_stars, n_labels):
            raise ValueError(f"{which}[{name!r}] has shape {out[name].shape}, "
                             f"expected {(n_stars, n_labels)} like {which}['y']")
    return out


def _check_compatible(train: dict, valid: dict) -> None:
    if set(train) != set(valid):
        raise ValueError(f"train and valid hold different arrays: "
                         f"{sorted(train)} vs {sorted(valid)}")
    for name in train:
        if train[name].shape[1:] != valid[name].shape[1:]:
            raise ValueError(f"train[{name!r}] rows have shape {train[name].shape[1:]}, "
                             f"valid[{name!r}] rows {valid[name].shape[1:]}")


def _checked_loss(loss):
    """`loss` that fails clearly, while JAX traces it (before any step runs), unless it returns
    (scalar, {name: scalar}) with no metric named 'loss'. Checked in the traces that training
    makes anyway: a trace of its own took as long as a small model's whole training step."""
    def checked(params, batch, key):
        out = loss(params, batch, key)
        ok = (isinstance(out, tuple) and len(out) == 2 and getattr(out[0], "shape", None) == ()
              and isinstance(out[1], dict)
              and all(getattr(v, "shape", None) == () and k != "loss" for k, v in out[1].items()))
        if not ok:
            shapes = jax.tree.map(lambda v: getattr(v, "shape", type(v).__name__), out)
            raise TypeError(f"model.loss must return (scalar, {{name: scalar}}) with no metric "
                            f"named 'loss'; got shapes {shapes}")
        return out
    return checked


def _as_key(key, seed: int):
    """A typed PRNG key from a key (typed or raw uint32), an int seed, or None (use `seed`)."""
    if key is None:
        return jax.random.key(seed)
    if isinstance(key, int):
        return jax.random.key(key)
    key = jnp.asarray(key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


# ---------------------------------------------------------------- evaluation

def _split_batches(data: dict, batch_size: int):
    """Fixed batches: (arrays reshaped to (n_full, batch_size, ...), remainder arrays, n_rest)."""
    n = len(data["y"])
    n_full, n_rest = divmod(n, batch_size)
    full = {k: a[:n_full * batch_size].reshape((n_full, batch_size) + a.shape[1:])
            for k, a in data.items()}
    rest = {k: a[n_full * batch_size:] for k, a in data.items()}
    return full, rest, n_rest


def _average(parts) -> tuple[float, dict]:
    """Star-weighted mean of per-batch (losses, metrics, batch_size) parts."""
    total, weights, metrics = 0.0, 0, {}
    for losses, mets, size in parts:
        losses = np.asarray(losses, np.float64).reshape(-1)
        total += float(losses.sum()) * size
        weights += losses.size * size
        for name, values in mets.items():
            value = float(np.sum(np.asarray(values, np.float64))) * size
            metrics[name] = metrics.get(name, 0.0) + value
    return total / weights, {name: value / weights for name, value in metrics.items()}


def make_evaluator(model, data: dict, batch_size: int):
    """Return `evaluate(params) -> (loss, {metric: value})`, the star-weighted mean of
    `model.loss(params, batch, None)` over fixed (unshuffled) batches of `data`."""
    batch_size = min(batch_size, len(data["y"]))
    # sliced before going to the device: no XLA program for each slice
    full, rest, n_rest = _split_batches(data, batch_size)
    full, rest = jax.device_put((full, rest))

    loss = _checked_loss(model.loss)

    def batch_loss(params, batch):
        return loss(params, batch, None)

    full_loss = jax.jit(lambda params, batches: lax.map(lambda b: batch_loss(params, b), batches))
    rest_loss = jax.jit(batch_loss)

    def evaluate(params):
        parts = [(*full_loss(params, full), batch_size)]
        if n_rest:
            parts.append((*rest_loss(params, rest), n_rest))
        return _average(parts)

    return evaluate


# ---------------------------------------------------------------- training

def _optimizer(cfg: TrainConfig):
    if cfg.optimizer == "sgd":
        return optax.inject_hyperparams(optax.sgd)(learning_rate=cfg.learning_rate,
                                                   momentum=cfg.momentum or None)
    if cfg.optimizer == "adamw":
        return optax.inject_hyperparams(optax.adamw)(
            learning_rate=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    return optax.inject_hyperparams(optax.adam)(learning_rate=cfg.learning_rate, eps=cfg.adam_eps)


def _with_learning_rate(opt_state, lr: float):
    hyper = dict(opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))
    return opt_state._replace(hyperparams=hyper)


def _hold_frozen(updates):
    """`updates` with its top-level FROZEN entry (if any) set to zero."""
    if isinstance(updates, Mapping) and FROZEN in updates:
        return {**updates, FROZEN: jax.tree.map(jnp.zeros_like, updates[FROZEN])}
    return updates


def _make_epoch(model, tx, data: dict, batch_size: int, drop_last: bool):
    """Return `epoch(params, opt_state, key) -> (params, opt_state, loss, metrics)`.

    The training arrays stay on device; each epoch draws a permutation from `key`, scans the
    full minibatches, and (unless `drop_last`) takes one more step on the partial batch."""
    n = len(data["y"])
    n_full, n_rest = divmod(n, batch_size)
    n_rest = 0 if drop_last else n_rest
    grad_fn = jax.value_and_grad(_checked_loss(model.loss), has_aux=True)

    def step(params, opt_state, batch, key):
        (loss, metrics), grads = grad_fn(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, _hold_frozen(updates)), opt_state, loss, metrics

    @jax.jit
    def scan_epoch(params, opt_state, data, idx, keys):
        def body(carry, inputs):
            batch = {name: a[inputs[0]] for name, a in data.items()}
            params, opt_state, loss, metrics = step(*carry, batch, inputs[1])
            return (params, opt_state), (loss, metrics)

        (params, opt_state), (losses, metrics) = lax.scan(body, (params, opt_state), (idx, keys))
        return params, opt_state, losses, metrics

    rest_step = jax.jit(step)

    def epoch(params, opt_state, key):
        # The shuffle and step keys are drawn outside `scan_epoch`: XLA compiles the PRNG
        # slowly on CPU, and these eager calls hit JAX's cache across `fit` calls.
        perm_key, step_key = jax.random.split(key)
        order = jax.random.permutation(perm_key, n)
        keys = jax.random.split(step_key, n_full + 1)
        idx = order[:n_full * batch_size].reshape(n_full, batch_size)
        params, opt_state, losses, metrics = scan_epoch(params, opt_state, data, idx, keys[:-1])
        parts = [(losses, metrics, batch_size)]
        if n_rest:
            batch = {name: a[order[n_full * batch_size:]] for name, a in data.items()}
            params, opt_state, loss, mets = rest_step(params, opt_state, batch, keys[-1])
            parts.append((loss, mets, n_rest))
        loss, metrics = _average(parts)
        return params, opt_state, loss, metrics

    return epoch


def _schedule_step(sched: dict, valid_loss: float, epoch: int, cfg: TrainConfig):
    """Advance ReduceLROnPlateau and early stopping (Keras semantics, mode 'min', no cooldown).

    Returns the new schedule state and whether this epoch is the best so far."""
    sched = dict(sched)
    if valid_loss < sched["plateau_best"] - cfg.plateau_min_delta:
        sched["plateau_best"], sched["plateau_wait"] = valid_loss, 0
    else:
        sched["plateau_wait"] += 1
        if sched["plateau_wait"] >= cfg.plateau_patience and sched["lr"] > cfg.min_learning_rate:
            sched["lr"] = max(sched["lr"] * cfg.plateau_factor, cfg.min_learning_rate)
            sched["plateau_wait"] = 0
    improved = valid_loss < sched["best_valid"]
    if improved:
        sched["best_valid"], sched["best_epoch"] = valid_loss, epoch
    patience = cfg.early_stopping_patience
    sched["stopped"] = patience is not None and epoch - sched["best_epoch"] >= patience
    return sched, improved


def _fresh_schedule(cfg: TrainConfig) -> dict:
    return {"epoch": 0, "lr": cfg.learning_rate, "plateau_best": math.inf, "plateau_wait": 0,
            "best_valid": math.inf, "best_epoch": 0, "stopped": False}


def _data_shapes(train: dict, valid: dict) -> dict:
    return {f"{which}/{k}": list(a.shape) for which, d in (("train", train), ("valid", valid))
            for k, a in sorted(d.items())}


def _data_digest(train: dict, valid: dict) -> str:
    """SHA-1 of the training and validation arrays (names, dtypes, shapes and bytes): a
    checkpoint resumes only on the very data it was fitted to."""
    digest = hashlib.sha1()
    for which, data in (("train", train), ("valid", valid)):
        for name, array in sorted(data.items()):
            array = np.ascontiguousarray(np.asarray(array))
            digest.update(f"{which}/{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _save_checkpoint(path: Path, params, opt_state, best_params, meta: dict) -> None:
    save_params(path, {"params": params, "best_params": best_params,
                       "opt_state": jax.tree.leaves(opt_state),
                       "meta": np.array(json.dumps(meta, sort_keys=True))})


def _load_checkpoint(path: Path, meta_now: dict, params, opt_state):
    """Restore (params, opt_state, best_params, schedule, history) from `path`, checking that it
    was written by the same run (config apart from the resumable fields, key, the training
    data's digest and shapes, parameter shapes)."""
    saved = load_params(path)
    meta = json.loads(str(saved["meta"]))
    cfg_now, cfg_then = meta_now["config"], meta["config"]
    for name in sorted(set(cfg_now) | set(cfg_then)):
        if name not in _RESUMABLE_FIELDS and cfg_now.get(name) != cfg_then.get(name):
            raise ValueError(f"{path}: checkpoint was written with {name}={cfg_then.get(name)!r}, "
                             f"this run has {cfg_now.get(name)!r}; delete it to start over")
    for name in ("key", "data_shapes", "data_digest"):
        if meta.get(name) != meta_now[name]:
            what = {"data_digest": "training data (SHA-1 of the train and valid arrays)"}.get(
                name, name.replace("_", " "))
            raise ValueError(f"{path}: checkpoint was written with a different {what} "
                             f"({meta.get(name)} vs {meta_now[name]}); delete it to start over")
    restored = {}
    for name in ("params", "best_params"):
        tree = saved[name]
        same = (jax.tree.structure(tree) == jax.tree.structure(params)
                and all(np.shape(a) == np.shape(b) and np.asarray(a).dtype == b.dtype
                        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(params))))
        if not same:
            raise ValueError(f"{path}: checkpoint {name} do not match the model's parameter "
                             "structure/shapes; delete it to start over")
        restored[name] = jax.tree.map(jnp.asarray, tree)
    leaves = saved["opt_state"]
    treedef = jax.tree.structure(opt_state)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"{path}: checkpoint optimizer state has {len(leaves)} arrays, "
                         f"expected {treedef.num_leaves}; delete it to start over")
    opt_state = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in leaves])
    return restored["params"], opt_state, restored["best_params"], meta["schedule"], meta["history"]


def _log_epoch(log, row: dict, max_epochs: int) -> None:
    lr = row["learning_rate"]
    lr_text = "" if math.isnan(lr) else f"  lr {lr:.2e}"
    log(f"epoch {row['epoch']}/{max_epochs}  train_loss {row['train_loss']:.6g}  "
        f"valid_loss {row['valid_loss']:.6g}{lr_text}  {row['seconds']:.2f} s")


def _history_frame(rows: list) -> pd.DataFrame:
    """History table with a fixed column order (base columns, then metrics by name)."""
    base = ["epoch", "train_loss", "valid_loss", "learning_rate", "seconds"]
    extra = sorted({name for row in rows for name in row} - set(base))
    return pd.DataFrame(rows, columns=base + extra)


def _row(epoch, train_loss, train_metrics, valid_loss, valid_metrics, lr, seconds) -> dict:
    row = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
           "learning_rate": lr, "seconds": seconds}
    row.update({f"train_{k}": v for k, v in train_metrics.items()})
    row.update({f"valid_{k}": v for k, v in valid_metrics.items()})
    return row


def fit(model, train: dict, valid: dict, cfg: TrainConfig, key=None, *,
        checkpoint_dir=None, deadline: float | None = None, log=print):
    """Train `model` on batch dicts `train`/`valid` (x, y, y_err, valid; normalized units).

    Returns (best-validation params, history DataFrame with epoch, train_loss, valid_loss,
    learning_rate, seconds and `train_<m>`/`valid_<m>` per scalar metric of the family).
    `key` is a PRNG key (None: `jax.random.key(cfg.seed)`). With `checkpoint_dir`, the state is
    saved there every `cfg.checkpoint_every` epochs and a rerun resumes from it, giving the
    same result as an uninterrupted run; a checkpoint resumes only with the same config, key
    and data (its SHA-1). When the next epoch would pass `cfg.time_budget_s` (seconds since
    this call started) or `deadline` (a `time.monotonic()` value, e.g. the job's start plus its
    walltime), whichever is sooner, the state is saved and TimeBudgetExceeded raised, after at
    least one epoch. Families with `model.fit` are fitted in closed form (one history
    row)."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    limits = [t for t in (deadline, None if cfg.time_budget_s is None
                          else time.monotonic() + cfg.time_budget_s) if t is not None]
    stop_at = min(limits) if limits else None
    train, valid = _check_batch("train", train), _check_batch("valid", valid)
    _check_compatible(train, valid)
    key = _as_key(key, cfg.seed)
    init_key, loop_key = jax.random.split(key)
    valid_eval = make_evaluator(model, valid, cfg.batch_size)

    if model.fit is not None:
        start = time.perf_counter()
        params = model.fit(train, valid, init_key)
        train_loss, train_metrics = make_evaluator(model, train, cfg.batch_size)(params)
        valid_loss, valid_metrics = valid_eval(params)
        row = _row(1, train_loss, train_metrics, valid_loss, valid_metrics, math.nan,
                   time.perf_counter() - start)
        _log_epoch(log, row, 1)
        return params, _history_frame([row])

    n_train = len(train["y"])
    batch_size = min(cfg.batch_size, n_train)
    if batch_size < cfg.batch_size:
        log(f"train has {n_train} stars, fewer than batch_size={cfg.batch_size}: "
            f"one batch of {n_train} per epoch")
    tx = _optimizer(cfg)
    # One program each for the initial parameters and the optimizer state, rather than one
    # per parameter shape for every eager jnp call in them.
    params = (jax.jit(model.init)(init_key) if model.init_data is None
              else model.init_data(train, init_key))
    opt_state = jax.jit(tx.init)(params)
    best_params, sched, history = params, _fresh_schedule(cfg), []

    meta = {"format": 2, "config": cfg.to_dict(),
            "key": np.asarray(jax.random.key_data(key)).tolist(),
            "data_shapes": _data_shapes(train, valid), "data_digest": _data_digest(train, valid)}
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        params, opt_state, best_params, sched, history = _load_checkpoint(ckpt, meta, params,
                                                                          opt_state)
        log(f"resuming from {ckpt} after epoch {sched['epoch']}")

    epoch_fn = _make_epoch(model, tx, jax.device_put(train), batch_size, cfg.drop_last)
    # Compile the validation pass on a second thread while the first epoch compiles (the
    # value is discarded; an error it raises is raised again by the first real evaluation).
    warm_up = ThreadPoolExecutor(max_workers=1)
    warm_up.submit(valid_eval, params)
    warm_up.shutdown(wait=False)
    longest = 0.0
    while not sched["stopped"] and sched["epoch"] < cfg.max_epochs:
        epoch = sched["epoch"] + 1
        start = time.perf_counter()
        lr = sched["lr"]
        params, opt_state, train_loss, train_metrics = epoch_fn(
            params, _with_learning_rate(opt_state, lr), jax.random.fold_in(loop_key, epoch))
        valid_loss, valid_metrics = valid_eval(params)
        if not (math.isfinite(train_loss) and math.isfinite(valid_loss)):
            raise FloatingPointError(f"epoch {epoch}: non-finite loss (train {train_loss}, valid "
                                     f"{valid_loss}) at learning_rate {lr:g}")
        sched, improved = _schedule_step(sched, valid_loss, epoch, cfg)
        sched["epoch"] = epoch
        if improved:
            best_params = params
        row = _row(epoch, train_loss, train_metrics, valid_loss, valid_metrics, lr,
                   time.perf_counter() - start)
        history.append(row)
        _log_epoch(log, row, cfg.max_epochs)
        longest = max(longest, row["seconds"])
        out_of_time = (stop_at is not None and ckpt is not None and not sched["stopped"]
                       and epoch < cfg.max_epochs and time.monotonic() + longest > stop_at)
        if ckpt is not None and (epoch % cfg.checkpoint_every == 0 or out_of_time):
            _save_checkpoint(ckpt, params, opt_state, best_params,
                             {**meta, "schedule": sched, "history": history})
        if out_of_time:
            raise TimeBudgetExceeded(
                f"stopped after epoch {epoch} of {cfg.max_epochs}: another epoch (~{longest:.0f} "
                f"s) would pass the time budget (time_budget_s {cfg.time_budget_s}, or the "
                f"job's walltime); {ckpt} holds the state and the next attempt resumes from it")
    if sched["stopped"]:
        log(f"early stopping after epoch {sched['epoch']}")
    log(f"best valid_loss {sched['best_valid']:.6g} at epoch {sched['best_epoch']}")
    if model.finish is not None:
        best_params = model.finish(best_params, train, valid)
    return best_params, _history_frame(history)
