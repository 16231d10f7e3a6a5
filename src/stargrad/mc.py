"""Monte Carlo dropout inference (astroNN's `predict`), all in normalized label units.

For each star: value = MC mean of `value`; std_model = MC standard deviation of `value`
(ddof 0); std_predictive = sqrt(exp(MC mean of `log_var`)) (the exp of the mean log-variance,
as astroNN); std_total = sqrt(std_model^2 + std_predictive^2). Multiply by the label std to get
physical units. Models without a `log_var` output get std_predictive = 0 (the caller fills it).

The MC samples of one chunk of stars are vmapped (in groups bounding the activations held at
once) inside one jitted program; stars go through in fixed-size chunks, the last one padded,
so one compilation serves any number of stars. Results depend on (key, batch_size) only.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

OUTPUTS = ("value", "std_model", "std_predictive", "std_total")


def _moments(model, params, x, keys, mc_batch: int) -> dict:
    """MC moments over `keys` (S keys) for one chunk of stars `x` (B, P)."""
    def one(k):
        out = model.apply(params, x, k)
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


def _deterministic(model, params, x) -> dict:
    out = model.apply(params, x, None)
    std_predictive = (jnp.exp(0.5 * out["log_var"]) if "log_var" in out
                      else jnp.zeros_like(out["value"]))
    return _with_total({"value": out["value"], "std_model": jnp.zeros_like(out["value"]),
                        "std_predictive": std_predictive})


@functools.lru_cache(maxsize=32)
def _compiled(model, mc_samples: int, mc_batch: int):
    """Jitted `run(params, x_chunk, key, chunk_index) -> moments`, cached per model."""
    if mc_samples == 0:
        return jax.jit(lambda params, x, key, chunk: _deterministic(model, params, x))

    def run(params, x, key, chunk):
        keys = jax.random.split(jax.random.fold_in(key, chunk), mc_samples)
        return _moments(model, params, x, keys, mc_batch)
    return jax.jit(run)


def mc_predict(model, params, x, key, mc_samples: int = 100, batch_size: int = 64,
               max_rows: int = 256) -> dict:
    """MC-dropout prediction of (N, P) normalized flux -> dict of (N, K) numpy arrays
    (value, std_model, std_predictive, std_total; normalized units).

    `mc_samples=0`, or a model that is not stochastic, gives one dropout-off pass with
    std_model = 0. `batch_size` stars are processed per chunk and at most `max_rows`
    (stars x MC samples) forward passes are vmapped at once (256, four samples of 64 stars:
    1.1-1.2x faster for the BCNNs on CPU than 1024, whose activations fall out of cache)."""
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
    batch_size = min(batch_size, n)
    mc_batch = max(1, min(mc_samples, max_rows // batch_size))
    run = _compiled(model, mc_samples if model.stochastic else 0, mc_batch)
    parts = {name: [] for name in OUTPUTS}
    for chunk, start in enumerate(range(0, n, batch_size)):
        xb = x[start:start + batch_size]
        rows = len(xb)
        if rows < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - rows,) + x.shape[1:], np.float32)])
        out = run(params, jnp.asarray(xb), key, chunk)
        for name in OUTPUTS:
            parts[name].append(np.asarray(out[name])[:rows])
    return {name: np.concatenate(parts[name]) for name in OUTPUTS}
