"""Exact per-star Jacobians d value / d flux of any differentiable Model, chunked over stars
to bound memory, and their mean over stars.

Reverse vs forward mode: with K ≤ 22 outputs and P = 7514 inputs, `jax.jacrev` needs K
vector-Jacobian products per star and `jax.jacfwd` P Jacobian-vector products (each carrying a
copy of every activation), so reverse mode is the default; bench/bench_models.py measures it.
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from ..batching import padded_chunks


@lru_cache(maxsize=32)
def _chunk_fn(model, mode: str):
    """Jitted per-chunk Jacobians (C, K, P) for one model and AD mode.

    `errors` is None or the chunk's flux errors (held fixed: J is d value / d flux at the
    given errors); `keys` is None (deterministic) or a (S,) array of PRNG keys; star i under
    draw s uses fold_in(keys[s], i) with i its global index, so results do not depend on
    chunking. The parameters stay a jit argument: as closed-over XLA constants they were
    faster with freshly initialised weights but slower with trained ones."""
    jac = jax.jacrev if mode == "rev" else jax.jacfwd

    def chunk(params, xc, errors, index, keys):
        def value(x, x_err, key):
            x_err = None if x_err is None else x_err[None, :]
            return model.apply(params, x[None, :], key=key, train=False,
                               x_err=x_err)["value"][0]

        def star(x, x_err, i):
            if keys is None:
                return jac(value)(x, x_err, None)
            draws = jax.vmap(lambda k: jac(value)(x, x_err, jax.random.fold_in(k, i)))(keys)
            return jnp.mean(draws, axis=0)

        return jax.vmap(star, in_axes=(0, None if errors is None else 0, 0))(xc, errors, index)

    return jax.jit(chunk)


@jax.jit
def _masked_sums(j, n_valid):
    """Sums over the first n_valid stars of J and |J| (the rest of a chunk is padding). A
    loop over stars: XLA's CPU reduce over the leading axis of (C, K, P) is far slower
    (bench/bench_kernels.py)."""
    def add(i, sums):
        ji = jnp.where(i < n_valid, j[i], 0.0)
        return sums[0] + ji, sums[1] + jnp.abs(ji)

    zeros = jnp.zeros(j.shape[1:], j.dtype)
    return jax.lax.fori_loop(0, j.shape[0], add, (zeros, zeros))


def _integer(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"jacobian: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _prepare(model, params, x, x_err, chunk_size, key, mc_samples, mode):
    """Validate arguments; return (arrays to chunk, chunk size, keys or None, K)."""
    if mode not in ("rev", "fwd"):
        raise ValueError(f"jacobian: mode must be 'rev' or 'fwd', got {mode!r}")
    chunk_size = _integer("chunk_size", chunk_size, 1)
    mc_samples = _integer("mc_samples", mc_samples, 0)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"jacobian: x must be (N, P) normalized flux with N >= 1, "
                         f"got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"jacobian: x has {np.count_nonzero(~np.isfinite(x))} non-finite "
                         f"values; mask or fill bad pixels before attribution")
    arrays = (x,)
    if x_err is not None:
        x_err = np.asarray(x_err, dtype=np.float32)
        if x_err.shape != x.shape or np.isnan(x_err).any():
            raise ValueError(f"jacobian: x_err must be like x {x.shape} without NaN, got "
                             f"shape {x_err.shape}")
        arrays += (x_err,)
    if mc_samples > 0 and key is None:
        raise ValueError("jacobian: mc_samples > 0 needs a PRNG key (jax.random.key(seed))")
    if key is not None and not (isinstance(key, jax.Array) and (
            jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            or (key.shape == (2,) and key.dtype == jnp.uint32))):
        raise TypeError(f"jacobian: key must be a JAX PRNG key (jax.random.key(seed)), "
                        f"got {type(key).__name__}")
    try:
        out = jax.eval_shape(lambda p, xx: model.apply(p, xx, key=None, train=False),
                             params, x[:1])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"jacobian: model.apply fails on x of shape {x.shape}: {exc}") from exc
    value = out.get("value") if isinstance(out, dict) else None
    if value is None or len(value.shape) != 2 or value.shape[0] != 1:
        raise ValueError("jacobian: model.apply must return a dict with 'value' of shape (B, K)")
    keys = None
    if key is not None and model.stochastic:
        keys = jax.random.split(key, mc_samples) if mc_samples > 0 else key[None]
    return arrays, min(chunk_size, x.shape[0]), keys, int(value.shape[1])


def _chunk_jacobians(model, params, x, x_err, chunk_size, key, mc_samples, mode):
    """Yield (start, n_valid, (C, K, P) Jacobians of a padded chunk); also returns K."""
    arrays, size, keys, k = _prepare(model, params, x, x_err, chunk_size, key, mc_samples, mode)
    chunk_fn = _chunk_fn(model, mode)

    def chunks():
        for start, n_valid, chunk in padded_chunks(arrays, size):
            errors = chunk[1] if len(chunk) > 1 else None
            index = np.arange(start, start + size, dtype=np.int32)
            yield start, n_valid, chunk_fn(params, chunk[0], errors, index, keys)

    return chunks(), k, arrays[0].shape


def jacobian(model, params, x, *, x_err=None, chunk_size: int = 64, key=None,
             mc_samples: int = 0, mode: str = "rev") -> np.ndarray:
    """Per-star Jacobians d value / d x, shape (N, K, P), in normalized label (class-1
    probability for classifiers) per normalized flux, at flux errors `x_err` (N, P) for the
    families that use them.

    Stars are processed `chunk_size` at a time (vmapped), so device memory is about
    chunk_size × max(mc_samples, 1) × K × P floats plus the model's activations, whatever N.
    Deterministic models ignore `key` and `mc_samples`. Stochastic (MC-dropout) models:
    key=None → dropout off; a key with mc_samples=0 → one dropout draw per star; a key with
    mc_samples=S → the mean Jacobian over S draws, which equals the mean of the single-draw
    Jacobians over the keys jax.random.split(key, S). mode: "rev" (jacrev, default; far faster
    for K ≪ P, see the module docstring) or "fwd" (jacfwd)."""
    chunks, k, (n, p) = _chunk_jacobians(model, params, x, x_err, chunk_size, key, mc_samples,
                                         mode)
    out = np.empty((n, k, p), dtype=np.float32)
    for start, n_valid, j in chunks:
        out[start:start + n_valid] = np.asarray(j)[:n_valid]
    return out


def mean_jacobian(model, params, x, *, x_err=None, chunk_size: int = 64, key=None,
                  mc_samples: int = 0, mode: str = "rev") -> tuple[np.ndarray, np.ndarray]:
    """(mean over stars of J, mean over stars of |J|), each (K, P) float64, accumulated chunk by
    chunk without holding (N, K, P). Arguments as `jacobian`; with MC draws |J| is taken of each
    star's draw-averaged Jacobian."""
    chunks, k, (n, p) = _chunk_jacobians(model, params, x, x_err, chunk_size, key, mc_samples,
                                         mode)
    total, total_abs = np.zeros((k, p)), np.zeros((k, p))
    for _, n_valid, j in chunks:
        s, s_abs = _masked_sums(j, n_valid)
        total += np.asarray(s, dtype=np.float64)
        total_abs += np.asarray(s_abs, dtype=np.float64)
    return total / n, total_abs / n
