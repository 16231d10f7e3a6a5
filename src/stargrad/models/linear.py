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
from . import Model, Traits

TRAITS = Traits()

SOLVERS = ("auto", "primal", "dual")


def ridge_fit(x, y, valid, alpha: float, solver: str = "auto"):
    """Per-label ridge weights (P, K) and intercepts (K,), in float64.

    Labels that share the same valid stars are solved together; a label with no valid star
    gets w = 0, b = 0 (the normalized training mean). The dual (fewer stars than pixels)
    inverts A = X Xᵀ + αI once for all stars: a group that lacks stars r needs the inverse of
    A's principal block on its stars v, which is (A⁻¹)_vv − (A⁻¹)_vr ((A⁻¹)_rr)⁻¹ (A⁻¹)_rv,
    so 22 labels with different missing stars cost one n³ inversion instead of 22."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    valid = np.asarray(valid, bool)
    n_pixels, n_labels = x.shape[1], y.shape[1]
    w = np.zeros((n_pixels, n_labels))
    b = np.zeros(n_labels)
    dual = solver == "dual" or (solver == "auto" and len(x) < n_pixels)
    a_inv = np.linalg.inv(x @ x.T + alpha * np.eye(len(x))) if dual else None
    patterns, group = np.unique(valid.T, axis=0, return_inverse=True)
    for g, rows in enumerate(patterns):
        cols = np.flatnonzero(group.reshape(-1) == g)
        if not rows.any():
            continue
        xs, ys = x[rows], y[rows][:, cols]
        if dual:
            wg, b[cols] = _dual_block(a_inv, rows, xs, ys)
        else:
            x_mean, y_mean = xs.mean(axis=0), ys.mean(axis=0)
            xc = xs - x_mean
            wg = np.linalg.solve(xc.T @ xc + alpha * np.eye(n_pixels), xc.T @ (ys - y_mean))
            b[cols] = y_mean - x_mean @ wg
        w[:, cols] = wg
    return w, b


def _dual_block(a_inv, rows, xs, ys):
    """Ridge on the stars `rows` from the full inverse: with M = (A_vv)⁻¹, the unpenalised
    intercept is b = 1ᵀMy / 1ᵀM1 and the dual coefficients a = M(y − b) satisfy 1ᵀa = 0.
    M is applied without copying A⁻¹'s n×n block: (A⁻¹)_vv z = (A⁻¹ [z; 0])_v."""
    drop = ~rows
    rhs = np.concatenate([ys, np.ones((len(ys), 1))], axis=1)
    padded = np.zeros((len(rows), rhs.shape[1]))
    padded[rows] = rhs
    applied = (a_inv @ padded)[rows]
    if drop.any():
        cross = a_inv[:, drop][rows]                        # (A⁻¹)_vr
        applied -= cross @ np.linalg.solve(a_inv[np.ix_(drop, drop)], cross.T @ rhs)
    my, m1 = applied[:, :-1], applied[:, -1]
    intercept = my.sum(axis=0) / m1.sum()
    coef = my - m1[:, None] * intercept[None, :]
    return xs.T @ coef, intercept


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

    def apply(params, x, key=None, train=False, x_err=None):
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
