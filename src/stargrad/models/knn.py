"""k nearest neighbours in normalized-flux space (Euclidean), in JAX.

`fit` stores the training set. A query's k nearest training stars come from squared distances
|q|^2 - 2 q.x + |x|^2 (one matmul per chunk of queries) and `lax.top_k`; each label is the
(weighted) mean over those neighbours whose label is valid, or 0 (the normalized training mean)
when none of the k is. For classification that mean of 0/1 labels is the class-1 probability.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..losses import label_loss, logit_of
from . import Model, Traits

TRAITS = Traits(differentiable=False)

WEIGHTS = ("uniform", "distance")


def _predict_chunk(train_x, train_sq, train_y, train_valid, q, k: int, weights: str):
    """Neighbour-averaged labels (C, K) of a chunk of queries q (C, P)."""
    d2 = jnp.sum(q * q, axis=1)[:, None] - 2.0 * q @ train_x.T + train_sq[None, :]
    _, idx = lax.top_k(-d2, k)
    if weights == "distance":
        # Exact distances of the chosen neighbours: the expansion above cancels badly for
        # near-duplicates, and an exact match must take all the weight (as in sklearn).
        dist = jnp.sqrt(jnp.sum(jnp.square(train_x[idx] - q[:, None, :]), axis=-1))
        exact = dist == 0
        w = jnp.where(jnp.any(exact, axis=1, keepdims=True), exact.astype(q.dtype),
                      1.0 / jnp.where(exact, 1.0, dist))
    else:
        w = jnp.ones(idx.shape, q.dtype)
    w = w[:, :, None] * train_valid[idx]
    total = jnp.sum(w, axis=1)
    mean = jnp.sum(w * train_y[idx], axis=1) / jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, mean, 0.0)


def build(*, n_inputs: int, n_outputs: int, kind: str = "regression", k: int = 10,
          weights: str = "uniform", chunk: int = 128) -> Model:
    """KNN model; `k` neighbours, `weights` "uniform" | "distance" (1/d), queries processed
    `chunk` at a time (memory ~ chunk x n_train floats)."""
    if int(k) != k or k < 1:
        raise ValueError(f"knn: k must be a positive integer, got {k!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"knn: weights must be one of {WEIGHTS}, got {weights!r}")
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"knn: chunk must be a positive integer, got {chunk!r}")
    k, chunk = int(k), int(chunk)

    def init(key):
        """An empty training set: call `fit` before `apply`."""
        return {"x": jnp.zeros((0, n_inputs)), "y": jnp.zeros((0, n_outputs)),
                "valid": jnp.zeros((0, n_outputs), bool)}

    def apply(params, x, key=None, train=False, x_err=None):
        train_x = params["x"]
        if train_x.shape[0] < k:
            raise ValueError(f"knn: params hold {train_x.shape[0]} training stars, fewer than "
                             f"k={k}; fit the model first")

        x = jnp.asarray(x, train_x.dtype)
        n = x.shape[0]
        size = min(chunk, n)
        n_chunks = -(-n // size)
        queries = jnp.pad(x, ((0, n_chunks * size - n), (0, 0))).reshape(n_chunks, size, -1)
        train_sq = jnp.sum(train_x * train_x, axis=1)
        value = lax.map(lambda q: _predict_chunk(train_x, train_sq, params["y"], params["valid"],
                                                 q, k, weights), queries)
        value = value.reshape(n_chunks * size, -1)[:n]
        if kind == "classification":
            return {"value": value, "logit": logit_of(value)}
        return {"value": value}

    def loss(params, batch, key):
        return label_loss(apply(params, batch["x"]), batch, kind)

    def fit(train, valid, key):
        x, y, ok = train["x"], train["y"], train["valid"]
        if x.shape[1] != n_inputs or y.shape[1] != n_outputs:
            raise ValueError(f"knn: train x/y have shapes {x.shape}/{y.shape}, model expects "
                             f"{n_inputs} pixels and {n_outputs} labels")
        if x.shape[0] < k:
            raise ValueError(f"knn: train has {x.shape[0]} stars, fewer than k={k}")
        return {"x": jnp.asarray(x, jnp.float32),
                "y": jnp.where(ok, jnp.asarray(y, jnp.float32), 0.0),
                "valid": jnp.asarray(ok, bool)}

    return Model(init=init, apply=apply, loss=loss, fit=fit)
