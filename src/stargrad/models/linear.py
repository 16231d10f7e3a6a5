"""Ridge regression in closed form: value = x @ w + b (normalized flux -> normalized labels).

Each label column is fitted on the stars where it is valid, minimising
sum_valid (y - x w - b)^2 + alpha |w|^2 with an unpenalised intercept (sklearn `Ridge`).
The solve uses the primal p x p system when there are at least as many stars as pixels and the
dual n x n system otherwise (7514 pixels, a few thousand stars).

Classification is ridge on the 0/1 targets with the value clipped to [0, 1] as the class-1
probability: a least-squares classifier, not a logistic one.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..losses import label_loss, logit_of
from . import Model

SOLVERS = ("auto", "primal", "dual")


def ridge_fit(x, y, valid, alpha: float, solver: str = "auto"):
    """Per-label ridge weights (P, K) and intercepts (K,), in float64.

    Labels that share the same valid stars are solved together; a label with no valid star
    gets w = 0, b = 0 (the normalized training mean)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    valid = np.asarray(valid, bool)
    n_pixels, n_labels = x.shape[1], y.shape[1]
    w = np.zeros((n_pixels, n_labels))
    b = np.zeros(n_labels)
    patterns, group = np.unique(valid.T, axis=0, return_inverse=True)
    for g, rows in enumerate(patterns):
        cols = np.flatnonzero(group.reshape(-1) == g)
        if not rows.any():
            continue
        xs, ys = x[rows], y[rows][:, cols]
        x_mean, y_mean = xs.mean(axis=0), ys.mean(axis=0)
        xc, yc = xs - x_mean, ys - y_mean
        if solver == "dual" or (solver == "auto" and len(xs) < n_pixels):
            wg = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(len(xs)), yc)
        else:
            wg = np.linalg.solve(xc.T @ xc + alpha * np.eye(n_pixels), xc.T @ yc)
        w[:, cols] = wg
        b[cols] = y_mean - x_mean @ wg
    return w, b


def build(*, n_inputs: int, n_outputs: int, kind: str = "regression", alpha: float = 1.0,
          solver: str = "auto") -> Model:
    """Ridge model; `alpha` > 0 is the L2 strength, `solver` "auto" | "primal" | "dual"."""
    alpha = float(alpha)
    if not alpha > 0:
        raise ValueError(f"linear: alpha must be > 0, got {alpha}")
    if solver not in SOLVERS:
        raise ValueError(f"linear: solver must be one of {SOLVERS}, got {solver!r}")

    def init(key):
        return {"w": jnp.zeros((n_inputs, n_outputs)), "b": jnp.zeros((n_outputs,))}

    def apply(params, x, key=None, train=False):
        value = x @ params["w"] + params["b"]
        if kind == "classification":
            value = jnp.clip(value, 0.0, 1.0)
            return {"value": value, "logit": logit_of(value)}
        return {"value": value}

    def loss(params, batch, key):
        return label_loss(apply(params, batch["x"]), batch, kind)

    def fit(train, valid, key):
        x, y = train["x"], train["y"]
        if x.shape[1] != n_inputs or y.shape[1] != n_outputs:
            raise ValueError(f"linear: train x/y have shapes {x.shape}/{y.shape}, model expects "
                             f"{n_inputs} pixels and {n_outputs} labels")
        w, b = ridge_fit(x, y, train["valid"], alpha, solver)
        return {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}

    return Model(init=init, apply=apply, loss=loss, fit=fit)
