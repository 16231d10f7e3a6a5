"""Monte Carlo dropout inference (astroNN's `predict`), all in normalized label units.

For each star: value = MC mean of `value`; std_model = MC standard deviation of `value`
(ddof 0); std_predictive = sqrt(exp(MC mean of `log_var`)) (the exp of the mean log-variance,
as astroNN); std_total = sqrt(std_model^2 + std_predictive^2). Multiply by the label std to get
physical units. Models without a `log_var` output get std_predictive = 0 (the caller fills it).

The MC samples of one chunk of stars are vmapped (in groups bounding the activations held at
once) inside one jitted program; stars go through in fixed-size chunks, the last one padded
(`batching`), so one compilation serves any number of stars. Each star draws its dropout masks
from the key and its own ID, so its result does not depend on the batch it is in.
"""
from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from .batching import map_chunks

def _moments(model, params, x, keys, mc_batch: int, x_err=None) -> dict:
    """MC moments over `keys` for one chunk of stars `x` (B, P): S keys, or (S, B) keys, one
    per star and sample."""
    def one(k):
        out = model.apply(params, x, k, x_err=x_err)
        return {name: out[name] for name in ("value", "log_var") if name in out}

    samples = jax.lax.map(one, keys, batch_size=mc_batch)
    mean = samples["value"].mean(axis=0)
    std_model = jnp.sqrt(jnp.mean(jnp.square(samples["value"] - mean), axis=0))
    std_predictive = (jnp.exp(0.5 * samples["log_var"].mean(axis=0)) if "log_var" in samples
                      else jnp.zeros_like(mean))
    return _with_total({"value": mean, "std_model": std_model, "std_predictive": std_predictive})


def _with_total(out: dict) -> dict:
    out["std_total"] = jnp.sqrt(jnp.square(out["std_model"]) + jnp.square(out["std_predictive"]))
    return out


def _deterministic(model, params, x, x_err=None) -> dict:
    """One dropout-off pass: std_predictive from `log_var`, std_model from `log_var_model`
    (a χ² fit's measurement-noise variance, the Payne), 0 where absent; a per-star
    `converged` flag passes through."""
    out = model.apply(params, x, None, x_err=x_err)
    zeros = jnp.zeros_like(out["value"])
    std = {name: jnp.exp(0.5 * out[key]) if key in out else zeros
           for name, key in (("std_predictive", "log_var"), ("std_model", "log_var_model"))}
    extra = {"converged": out["converged"]} if "converged" in out else {}
    return _with_total({"value": out["value"], **std, **extra})


@functools.lru_cache(maxsize=32)
def _compiled(model, mc_samples: int, mc_batch: int):
    """Jitted `run(params, x_chunk, x_err_chunk, key, star_seeds) -> moments`, per model:
    sample s of star j draws its dropout masks from fold_in(split(key, S)[s], seed_j)."""
    if mc_samples == 0:
        return jax.jit(lambda params, x, x_err, key, seeds: _deterministic(model, params, x,
                                                                          x_err))

    def run(params, x, x_err, key, seeds):
        per_sample = jax.random.split(key, mc_samples)
        keys = jax.vmap(lambda k: jax.vmap(lambda s: jax.random.fold_in(k, s))(seeds))(per_sample)
        return _moments(model, params, x, keys, mc_batch, x_err)
    return jax.jit(run)


def star_seeds(ids) -> np.ndarray:
    """uint32 seeds of stars from their IDs (a stable hash), so that a star's dropout draws
    follow it into any batch, split or catalogue shard."""
    return np.array([int.from_bytes(hashlib.sha1(str(i).strip().encode()).digest()[:4], "big")
                     for i in ids], dtype=np.uint32)


def mc_predict(model, params, x, key, mc_samples: int = 100, batch_size: int = 64,
               max_rows: int = 256, x_err=None, ids=None) -> dict:
    """MC-dropout prediction of (N, P) normalized flux (and its errors `x_err`, for families
    that use them) -> dict of (N, K) numpy arrays (value, std_model, std_predictive,
    std_total; normalized units). A star's dropout draws come from `key` and its ID (`ids`,
    default its row number; `star_seeds`), so its result does not depend on the batch.

    `mc_samples=0`, or a model that is not stochastic, gives one dropout-off pass with
    std_model = 0. Stars go through in chunks of exactly `batch_size` (the last one padded), so
    one compiled program serves every call with that `batch_size`, whatever the number of
    stars; at most `max_rows` (stars x MC samples) forward passes are vmapped at once, which
    bounds the activations held at once (the default keeps them in cache;
    bench/bench_models.py measures the rate)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"mc_predict: x must be a non-empty (stars, pixels) array, "
                         f"got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("mc_predict: x holds NaN or inf values")
    mc_samples, batch_size = int(mc_samples), int(batch_size)
    if mc_samples < 0 or batch_size < 1 or max_rows < 1:
        raise ValueError(f"mc_predict: need mc_samples >= 0, batch_size >= 1 and max_rows >= 1, "
                         f"got {mc_samples}, {batch_size}, {max_rows}")
    n = x.shape[0]
    mc_batch = max(1, min(mc_samples, max_rows // batch_size))
    run = _compiled(model, mc_samples if model.stochastic else 0, mc_batch)
    seeds = star_seeds(np.arange(n) if ids is None else ids)
    if len(seeds) != n:
        raise ValueError(f"mc_predict: {len(seeds)} ids for {n} spectra")
    if x_err is None:
        return map_chunks(lambda xb, sb, start: run(params, xb, None, key, sb),
                          (x, seeds), batch_size)
    return map_chunks(lambda xb, sb, eb, start: run(params, xb, eb, key, sb),
                      (x, seeds, np.asarray(x_err, np.float32)), batch_size)


def predict_with_uncertainty(model, params, x, meta: dict, *, mc_samples: int, seed: int,
                             batch_size: int = 256, x_err=None, ids=None) -> dict:
    """Value and uncertainties of (N, P) normalized flux in normalized label units: dict of
    (N, K) arrays value, std_model, std_predictive, std_total; stars in chunks of
    `batch_size` (`mc_predict`).

    Stochastic models with `mc_samples` > 0 use MC dropout (`mc_predict`, key from `seed`,
    each star's draws also from its ID in `ids`);
    others one dropout-off pass. Classification: std_predictive = sqrt(p(1-p)). Families
    without a variance head: std_predictive is the validation RMS of the trained model
    (`meta["residual_std_normalized"]`)."""
    if model.stochastic and mc_samples > 0:
        out = mc_predict(model, params, x, jax.random.PRNGKey(seed), mc_samples=mc_samples,
                         batch_size=batch_size, x_err=x_err, ids=ids)
    else:
        out = mc_predict(model, params, x, None, mc_samples=0, batch_size=batch_size,
                         x_err=x_err)
    out = {name: np.asarray(value) for name, value in out.items()}
    if meta["kind"] == "classification":
        p = np.clip(out["value"], 0.0, 1.0)
        out["std_predictive"] = np.sqrt(p * (1.0 - p))
    elif not np.any(out["std_predictive"]):
        out["std_predictive"] = np.broadcast_to(
            np.asarray(meta["residual_std_normalized"]), out["value"].shape).copy()
    out["std_total"] = np.sqrt(out["std_model"] ** 2 + out["std_predictive"] ** 2)
    return out
