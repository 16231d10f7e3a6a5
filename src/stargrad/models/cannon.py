"""The Cannon (Ness et al. 2015, ApJ 808, 16; Casey et al. 2016, arXiv:1603.03040): every pixel's
flux is a polynomial in the labels, learnt from stars of known labels, and a star's labels are
those whose model spectrum fits its spectrum best.

Model. With ℓ (K,) the standardized labels (zero mean, unit std over the training set), pixel p
of a star has flux x_p ~ N(f_p(ℓ), σ_p² + s_p²) with f_p(ℓ) = θ_pᵀ v(ℓ), where the label vector
v = (1, ℓ_1 … ℓ_K) for `order` 1 and (1, ℓ_k, ℓ_j ℓ_k for j ≤ k) for `order` 2 (T = 1 + K +
K(K+1)/2 terms), σ_p is the star's flux error and s_p the pixel's intrinsic scatter (the model's
own error). Flux is in the batch's normalized units: continuum-normalized flux minus the
per-pixel training mean (`input_norm="mean"`, below).

Training step (`fit`), pixel by pixel (Ness+2015 eq. 4-5): θ_p by least squares with weights
1/(σ_np² + s_p²), and s_p² by maximum likelihood given θ_p, alternating (`scatter_iter` refits
after the first); with `l1` > 0 the coefficients minimise ½χ²_p + l1 Σ_k≥1 |θ_pk| (Casey+2016
eq. 5; the constant term is not penalised), solved by ADMM (`l1_iter` iterations). All pixels
share the label vectors, so the per-pixel normal equations are one matrix product: weights
(P, N) times the N products of pairs of columns of an orthonormal basis of the label vectors,
in float32; in that basis their condition number is the spread of the weights, not that of the
polynomial terms. The scatter's likelihood uses residuals scaled by N_p/(N_p − T) (the mean
leverage of a star is T/N_p), so that a pixel the polynomial fits exactly gets s_p ≈ the
residual spread rather than an overfit fraction of it.

Test step (`apply`), star by star, with the shared solver (`stargrad.solver`): the labels minimising χ²(ℓ) = Σ_p (x_p − f_p(ℓ))² / (σ_p² +
s_p²) + |ℓ|²/τ², jittable and vmapped, in a fixed number of iterations: `n_iter` Gauss-Newton
Levenberg-Marquardt iterations from each of two starting points — the least-squares labels of
an order-1 Cannon fitted alongside (linear in ℓ, so solved exactly) and the training label
vector, among `n_prototypes` (the training mean and training stars), whose model spectrum fits
best — then `n_polish` Newton iterations from the one of lower χ². The weak Gaussian prior of
width τ = `prior_std` (standardized units) keeps the problem well posed when a label leaves the
spectrum unchanged: that label then stays near the training mean with a formal error ≈ τ
instead of taking an arbitrary value; for a label the spectrum constrains, the prior's pull is
(σ/τ)² of the distance to the mean, negligible. Each iteration costs O(T²), not O(P K²): χ² is
a quadratic form in v(ℓ) whose T × T matrix ΘᵀC⁻¹Θ is formed once per star (see `ChiSquare`).

Outputs (standardized label units): `value` (B, K); `log_var` (B, K), log of the diagonal of the
formal covariance (AᵀC⁻¹A + I/τ²)⁻¹ at the optimum, A = ∂f/∂ℓ (P, K), C = diag(σ_p² + s_p²)
(the inverse Fisher matrix when the data dominate the prior); `chi2` (B,), the χ² of the
spectrum at `value` (prior term excluded); `chi2_red` (B,), chi2 / (unmasked pixels − K);
`converged` (B,) bool, `solver.converged` at `value`.

Derivatives. With `implicit` (default) the labels are differentiated through the optimality
condition g(ℓ*, x) = ∇_ℓ ½χ² = 0 (`solver.implicit_solution`):
dℓ*/dx = H⁻¹ AᵀC⁻¹ with H = AᵀC⁻¹A + I/τ² − 2 Σ_p r_p Q_p / (σ_p² + s_p²), Q_p the symmetric
matrix of the pixel's quadratic terms and r the residual; at zero residual (and τ → ∞) this is
the efficient estimator (AᵀC⁻¹A)⁻¹AᵀC⁻¹, and it is what differentiating the iterations gives
once they have converged (`implicit=False` differentiates through them, for tests).

Flux errors and masked pixels. Batches carry `x_err` (B, P), the flux error in normalized
units with +inf at masked pixels (no information: weight 0 in both steps, whatever `x` holds
there); `pixel_valid` False also masks a pixel. A training batch without `x_err` gives every
pixel of every star the same error, taken as 0: the fitted scatter s_p then carries all of the
noise (which needs `scatter=True`). The workflow passes every star's `x_err`; `apply` without
it (a caller with no flux errors) uses for each pixel the median training variance σ_p² and
treats no pixel as masked, so masked pixels should hold the training mean — which they do
with input_norm "mean" (0), and why this family uses it rather than "none" (masked pixels are
0 flux there, a line as deep as the continuum). Pixels with fewer than T + 1 unmasked training
stars cannot be fitted and get s_p = +inf, i.e. weight 0 at test time. Variances are floored at
`solver.MIN_VARIANCE`.

Missing labels (`missing_labels`). "infer" (default): fit on the stars with every label, infer
only the missing labels of the other stars with the test step holding their known labels fixed,
then refit on every star, the inferred labels taken as exact. "drop": fit on complete stars
only. Catalogue label errors (`y_err`) are not used (the Cannon takes training labels as exact).

Loss (the history row and validation): the masked MSE of the test-step labels against the
catalogue (standardized units, as the other families' `mse`, so histories compare), with metrics
`chi2_red` (mean reduced χ² at the test-step labels) and `chi2_red_catalogue` (mean over the
batch's stars with every label valid of the reduced χ² at their catalogue labels; 0 if none).

Regression only.
"""
from __future__ import annotations

import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import solver
from ..solver import fit_scatter, inverse_variance, prototype_labels, typical_flux_var
from ..losses import label_loss
from . import Model, Traits

TRAITS = Traits(uses_flux_errors=True)

ORDERS = (1, 2)
MISSING_LABELS = ("infer", "drop")
#: Relative diagonal jitter of the per-pixel normal equations (in the orthonormal basis their
#: condition number is the spread of the weights, far below 1/JITTER).
JITTER = 1e-7
#: Singular values of the scaled label vectors below this fraction of the largest are dropped
#: (an exactly duplicated or constant label): the fit takes the minimum-norm coefficients.
RANK_TOL = 1e-8


# --------------------------------------------------------------------------- label vectors

def n_terms(n_labels: int, order: int) -> int:
    """Number T of terms of the label vector v(ℓ)."""
    return 1 + n_labels + (n_labels * (n_labels + 1) // 2 if order == 2 else 0)


def label_vector(labels, order: int):
    """v(ℓ) (..., T) of standardized labels (..., K): 1, ℓ_k, then ℓ_j ℓ_k for j ≤ k in
    row-major (np.triu_indices) order. NumPy in, NumPy out; JAX arrays give JAX arrays."""
    xp = np if isinstance(labels, np.ndarray) else jnp
    columns = [xp.ones(labels.shape[:-1] + (1,), labels.dtype), labels]
    if order == 2:
        j, k = np.triu_indices(labels.shape[-1])
        columns.append(labels[..., j] * labels[..., k])
    return xp.concatenate(columns, axis=-1)


def _derivative_index(n_labels: int) -> np.ndarray:
    """(K, K) index of the term ℓ_min(k,j) ℓ_max(k,j) in the label vector."""
    j, k = np.triu_indices(n_labels)
    index = np.zeros((n_labels, n_labels), int)
    index[j, k] = index[k, j] = 1 + n_labels + np.arange(len(j))
    return index


class Polynomial(NamedTuple):
    """f(ℓ) = c + b ℓ + ℓᵀ q ℓ per pixel: c (P,), b (P, K), q (P, K, K) symmetric or None."""
    c: jnp.ndarray
    b: jnp.ndarray
    q: jnp.ndarray | None


def polynomial(theta, n_labels: int, order: int) -> Polynomial:
    """The coefficients (P, T) of `label_vector` order as (c, b, q): q_jj = θ_jj and
    q_jk = q_kj = θ_jk / 2 for j < k."""
    c, b = theta[:, 0], theta[:, 1:1 + n_labels]
    if order == 1:
        return Polynomial(c, b, None)
    half = 0.5 * (1.0 + np.eye(n_labels))
    return Polynomial(c, b, theta[:, _derivative_index(n_labels)] * half)


def flux_and_gradient(poly: Polynomial, labels):
    """Model flux f(ℓ) (P,) and A = ∂f/∂ℓ (P, K) of one star's labels (K,)."""
    if poly.q is None:
        return poly.c + poly.b @ labels, poly.b
    q_ell = poly.q @ labels
    return poly.c + (poly.b + q_ell) @ labels, poly.b + 2.0 * q_ell


# --------------------------------------------------------------------------- pixel weights

def flux_errors(error, mask, input_std=1.0) -> np.ndarray:
    """Batch `x_err` (N, P) float32 from a split's flux errors and bad-pixel mask: error divided
    by the per-pixel input std (normalized units), +inf where masked, non-finite or ≤ 0."""
    error = np.asarray(error, np.float64) / np.asarray(input_std, np.float64)
    bad = np.asarray(mask, bool) | ~np.isfinite(error) | (error <= 0)
    return np.where(bad, np.inf, error).astype(np.float32)


# --------------------------------------------------------------------------- training step

class Design(NamedTuple):
    """The training label vectors in a form fit for the per-pixel normal equations.

    The label vectors are centred and scaled (`mean`, `scale`, T: constant column untouched),
    then factored by SVD as U Σ Wᵀ; `basis` = U (N, r) float32 has orthonormal columns,
    `pairs` (N, r(r+1)/2) their products two by two, `to_scaled` = W Σ⁻¹ (T, r) maps basis
    coefficients β to scaled coefficients u, `from_scaled` = Σ Wᵀ (r, T) the reverse."""
    basis: jnp.ndarray
    pairs: jnp.ndarray
    to_scaled: np.ndarray
    from_scaled: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


def make_design(labels, order: int) -> Design:
    """`Design` of training labels (N, K), computed in float64."""
    v = label_vector(np.asarray(labels, np.float64), order)
    mean, scale = v.mean(axis=0), v.std(axis=0)
    mean[0], scale[0] = 0.0, 1.0
    scale = np.where(scale > 0, scale, 1.0)
    u, sing, wt = np.linalg.svd((v - mean) / scale, full_matrices=False)
    keep = sing > RANK_TOL * sing[0]
    u, sing, wt = u[:, keep], sing[keep], wt[keep]
    basis = jnp.asarray(u, jnp.float32)
    i, j = np.triu_indices(basis.shape[1])
    return Design(basis, basis[:, i] * basis[:, j], wt.T / sing, sing[:, None] * wt, mean, scale)


def _normal_equations(design: Design, weights, flux):
    """Per-pixel normal equations in the basis: Gram (C, r, r) and right side (C, r), from
    weights and flux (C, N)."""
    upper = weights @ design.pairs
    return upper[:, solver.pair_matrix(design.basis.shape[1])], (weights * flux) @ design.basis


def _spd_solve(gram, rhs):
    """Solve the symmetric positive definite systems (C, r, r) (C, r), with a relative diagonal
    jitter (LU: XLA's batched Cholesky measured slower on CPU)."""
    r = gram.shape[-1]
    trace = jnp.trace(gram, axis1=-2, axis2=-1)[:, None, None]
    gram = gram + (JITTER * trace / r + 1e-30) * jnp.eye(r)
    return jnp.linalg.solve(gram, rhs[..., None])[..., 0]


@jax.jit
def _wls_chunk(design: Design, weights, flux):
    """Basis coefficients β (C, r) of weighted least squares for C pixels."""
    return _spd_solve(*_normal_equations(design, weights, flux))


def _soft_threshold(u, threshold):
    return jnp.sign(u) * jnp.maximum(jnp.abs(u) - threshold, 0.0)


@partial(jax.jit, static_argnames="n_iter")
def _lasso_chunk(design: Design, weights, flux, penalty, n_iter: int):
    """Scaled coefficients u (C, T) minimising ½χ² + Σ_k penalty_k |u_k| for C pixels, by ADMM
    (Boyd et al. 2011, §6.4) with ρ the mean diagonal of the Gram: the u-update solves
    (G + ρI) u = b + ρ(z − y) with a once-inverted matrix, then z = soft(u + y, penalty/ρ)."""
    gram_b, rhs_b = _normal_equations(design, weights, flux)
    lift = jnp.asarray(design.from_scaled, gram_b.dtype)          # (r, T): β = lift u
    gram = jnp.einsum("rt,crs,su->ctu", lift, gram_b, lift)
    rhs = rhs_b @ lift
    t = gram.shape[-1]
    rho = jnp.trace(gram, axis1=-2, axis2=-1)[:, None] / t + 1e-30
    inverse = jnp.linalg.inv(gram + rho[:, :, None] * jnp.eye(t))
    threshold = penalty[None, :] / rho

    def step(_, state):
        z, y = state
        u = jnp.einsum("ctu,cu->ct", inverse, rhs + rho * (z - y))
        z = _soft_threshold(u + y, threshold)
        return z, y + u - z

    zeros = jnp.zeros_like(rhs)
    z, _ = lax.fori_loop(0, n_iter, step, (zeros, zeros))
    return z


def _pixel_chunks(n_pixels: int, chunk: int):
    for start in range(0, n_pixels, chunk):
        yield start, min(start + chunk, n_pixels)


def _padded(a, start, stop, chunk):
    """Rows start:stop of a (P, N) array, zero-padded to `chunk` rows (one compilation)."""
    block = a[start:stop]
    return jnp.pad(block, ((0, chunk - (stop - start)), (0, 0)))


def solve_pixels(design: Design, flux_t, weights_t, *, l1: float, l1_iter: int, chunk: int):
    """Coefficients (P, T) of every pixel, in the raw label-vector basis (float64): weighted
    least squares, or with `l1` > 0 the L1-penalised fit. flux_t, weights_t are (P, N)."""
    n_pixels = flux_t.shape[0]
    chunk = min(chunk, n_pixels)
    scaled = []
    penalty = jnp.asarray(l1 / design.scale, jnp.float32).at[0].set(0.0)
    for start, stop in _pixel_chunks(n_pixels, chunk):
        w, f = _padded(weights_t, start, stop, chunk), _padded(flux_t, start, stop, chunk)
        if l1 > 0:
            u = np.asarray(_lasso_chunk(design, w, f, penalty, l1_iter), np.float64)
        else:
            u = np.asarray(_wls_chunk(design, w, f), np.float64) @ design.to_scaled.T
        scaled.append(u[:stop - start])
    return unscale(np.concatenate(scaled), design)


def unscale(scaled, design: Design) -> np.ndarray:
    """Raw coefficients θ (P, T) from coefficients of the centred, scaled label vectors."""
    theta = scaled / design.scale
    theta[:, 0] = scaled[:, 0] - theta[:, 1:] @ design.mean[1:]
    return theta


def fit_pixels(labels, flux_t, flux_var_t, *, order: int, scatter: bool, scatter_iter: int,
               l1: float = 0.0, l1_iter: int = 200, chunk: int = 256, scatter2=None):
    """Coefficients θ (P, T) float64 and intrinsic variances s² (P,) of every pixel from
    training labels (N, K), flux and flux variances (P, N) (+inf: masked). Alternates the
    per-pixel fit and the scatter's maximum likelihood `scatter_iter` + 1 times, starting from
    `scatter2` (default 0); without `scatter` s² stays 0."""
    design = make_design(labels, order)
    n_t = n_terms(labels.shape[1], order)
    good = jnp.isfinite(flux_var_t)
    unlearnable = good.sum(axis=1) <= n_t
    s2 = jnp.zeros(flux_t.shape[0], jnp.float32) if scatter2 is None else jnp.asarray(scatter2)
    s2 = jnp.where(unlearnable, jnp.inf, jnp.where(jnp.isfinite(s2), s2, 0.0))
    basis_labels = jnp.asarray(label_vector(np.asarray(labels, np.float64), order), jnp.float32)
    for _ in range(scatter_iter + 1):
        weights = inverse_variance(flux_var_t, jnp.sqrt(s2)[:, None])
        theta = solve_pixels(design, flux_t, weights, l1=l1, l1_iter=l1_iter, chunk=chunk)
        if scatter:
            resid = flux_t - jnp.asarray(theta, jnp.float32) @ basis_labels.T
            s2 = fit_scatter(resid, flux_var_t, n_t)
        else:
            s2 = jnp.where(unlearnable, jnp.inf, 0.0)
    return theta, np.asarray(s2, np.float64)


# --------------------------------------------------------------------------- test step
#
# A star's χ² is a quadratic form in its label vector v = v(ℓ) (T,): with C⁻¹ = diag(1/(σ² +
# s²)) and a reference v_ref = v(ℓ_ref), r_ref = x − Θ v_ref and Δv = v − v_ref,
#     χ²(ℓ) = r_refᵀC⁻¹r_ref − 2 Δvᵀ ΘᵀC⁻¹r_ref + Δvᵀ (ΘᵀC⁻¹Θ) Δv,
# exactly. So the test step reads the P pixels once per star, to form M = ΘᵀC⁻¹Θ (T, T),
# h = ΘᵀC⁻¹r_ref (T,) and c = r_refᵀC⁻¹r_ref — one matrix product over all stars of a batch —
# and each iteration then costs O(T²) instead of O(P K²). Gradient and Gauss-Newton matrix
# follow with D = ∂v/∂ℓ (T, K): ∇½χ² = −Dᵀ(h − MΔv), AᵀC⁻¹A = DᵀMD. The reference is the
# order-1 estimate for the search and the search's result for the last (Newton) iterations:
# near the reference the three terms are of the order of χ² itself, so float32 rounding stays
# far below the differences the iterations compare.

class ChiSquare(NamedTuple):
    """χ²(ℓ) = c − 2 Δvᵀh + Δvᵀ m Δv of one star, Δv = v(ℓ) − v_ref."""
    m: jnp.ndarray
    h: jnp.ndarray
    c: jnp.ndarray
    v_ref: jnp.ndarray


def chi_square(theta, x, inv_var, ref_labels, order: int, m=None) -> ChiSquare:
    """The `ChiSquare` of one star (x, inv_var (P,)) about reference labels (K,); `m` reuses
    ΘᵀC⁻¹Θ, which does not depend on the reference."""
    v_ref = label_vector(ref_labels, order)
    resid = x - theta @ v_ref
    w_resid = inv_var * resid
    m = solver.weighted_gram(theta, inv_var) if m is None else m
    return ChiSquare(m, theta.T @ w_resid, resid @ w_resid, v_ref)


def _derivative_lookup(n_labels: int, order: int) -> np.ndarray:
    """(T, K) index into a = (0, 1, ℓ, 2ℓ) such that D = ∂v/∂ℓ = a[index]."""
    t = n_terms(n_labels, order)
    index = np.zeros((t, n_labels), int)
    index[1 + np.arange(n_labels), np.arange(n_labels)] = 1
    if order == 2:
        j, k = np.triu_indices(n_labels)
        rows = 1 + n_labels + np.arange(len(j))
        index[rows, j] = 2 + k                          # ∂(ℓ_j ℓ_k)/∂ℓ_j = ℓ_k
        index[rows, k] = 2 + j
        diag = j == k
        index[rows[diag], j[diag]] = 2 + n_labels + j[diag]   # ∂ℓ_j²/∂ℓ_j = 2ℓ_j
    return index


def label_jacobian(labels, order: int):
    """D = ∂v/∂ℓ (T, K) of one star's labels (K,)."""
    one = jnp.ones(1, labels.dtype)
    table = jnp.concatenate([0.0 * one, one, labels, 2.0 * labels])
    return table[_derivative_lookup(labels.shape[0], order)]


def _curvature(q, n_labels: int, order: int):
    """Σ_t q_t ∇²v_t (K, K): the second derivative of qᵀv(ℓ), constant in ℓ (v is quadratic)."""
    if order == 1:
        return jnp.zeros((n_labels, n_labels), q.dtype)
    return q[_derivative_index(n_labels)] * (1.0 + jnp.eye(n_labels, dtype=q.dtype))


def _value_and_step(form: ChiSquare, labels, prior_prec, order: int):
    """(χ² + |ℓ|²/τ², q = MΔv − h, g = −½∇(χ² + |ℓ|²/τ²) = −Dᵀq − ℓ/τ²): O(T²)."""
    dv = label_vector(labels, order) - form.v_ref
    q = form.m @ dv - form.h
    chi2 = form.c + dv @ (q - form.h)
    g = -label_jacobian(labels, order).T @ q - prior_prec * labels
    return chi2 + prior_prec * jnp.sum(labels * labels), q, g


def _gauss_newton_matrix(form: ChiSquare, labels, prior_prec, order: int):
    """H = DᵀMD + I/τ² (K, K), the Gauss-Newton matrix AᵀC⁻¹A + I/τ²: O(T²K)."""
    d = label_jacobian(labels, order)
    return d.T @ (form.m @ d) + prior_prec * jnp.eye(labels.shape[0], dtype=d.dtype)


def _objective(form: ChiSquare, labels, prior_prec, order: int):
    """(χ² + |ℓ|²/τ², its Gauss-Newton matrix H, the residual curvature S with ½∇²(χ² +
    |ℓ|²/τ²) = H + S, and g = −½∇(χ² + |ℓ|²/τ²) = Dᵀ(h − MΔv) − ℓ/τ²)."""
    obj, q, g = _value_and_step(form, labels, prior_prec, order)
    h = _gauss_newton_matrix(form, labels, prior_prec, order)
    return obj, h, _curvature(q, labels.shape[0], order), g


def _objective_of(form: ChiSquare, prior_prec, order: int):
    """The `solver` objective of one star: labels -> `_objective(form, labels, ...)`."""
    return lambda labels: _objective(form, labels, prior_prec, order)


def linear_estimate(theta1, x, inv_var1, known, free, prior_prec):
    """Labels (K,) of least χ² + |ℓ|²/τ² under the order-1 model Θ1 (P, K+1), exact (the
    objective is quadratic): free labels move, the others keep their `known` values."""
    start = jnp.where(free, 0.0, known)
    form = chi_square(theta1, x, inv_var1, start, 1)
    _, h, _, g = _objective(form, start, prior_prec, 1)
    return start + solver.scaled_solve(h, g, free)


def prototype_start(proto_flux, proto_flux2, prototypes, x, inv_var):
    """The row of `prototypes` (J, K) whose model spectrum (proto_flux (J, P); proto_flux2 its
    square) has the least χ² against one star (x, inv_var (P,))."""
    w_x = inv_var * x
    chi2 = jnp.sum(w_x * x) - 2.0 * proto_flux @ w_x + proto_flux2 @ inv_var
    return prototypes[jnp.argmin(chi2)]


def best_labels(theta, x, inv_var, form: ChiSquare, linear, prototype, known, free, prior_prec,
                order: int, n_iter: int, n_polish: int):
    """One star's test step: `n_iter` Levenberg-Marquardt iterations (`solver`) from the order-1
    estimate `linear` (the reference of `form`) and from the best training `prototype`; then
    `n_polish` Newton iterations from the better one with χ² referenced there, so that the last
    steps compare χ² values whose float32 rounding is far below their differences. Labels (K,);
    only `free` move."""
    starts = jnp.stack([linear, jnp.where(free, prototype, known)])
    best, _ = solver.best_of_starts(_objective_of(form, prior_prec, order), starts, free, n_iter)
    near = chi_square(theta, x, inv_var, best, order, m=form.m)
    return solver.levenberg_marquardt(_objective_of(near, prior_prec, order), best, free,
                                      n_polish, newton=True)[0]


def _model_flux(theta, labels, n_labels: int, order: int):
    """f(ℓ) (P,) and A = ∂f/∂ℓ (P, K) directly from the pixels (for derivatives)."""
    poly = polynomial(theta, n_labels, order)
    return flux_and_gradient(poly, labels)


def implicit_labels(theta, x, inv_var, form: ChiSquare, linear, prototype, prior_prec,
                    order: int, n_iter: int, n_polish: int):
    """`best_labels` (all labels free), differentiated by the implicit function theorem at the
    optimum, where ∇_ℓ ½(χ² + |ℓ|²/τ²) = ℓ/τ² − AᵀC⁻¹(x − f(ℓ)) = 0 (pixel by pixel)."""
    n_labels = linear.shape[0]
    free, known = jnp.ones(n_labels, bool), jnp.zeros(n_labels, x.dtype)

    def optimality(labels):
        f, a = _model_flux(theta, labels, n_labels, order)
        return prior_prec * labels - a.T @ (inv_var * (x - f))

    def solve(_):
        return best_labels(theta, x, inv_var, form, linear, prototype, known, free, prior_prec,
                           order, n_iter, n_polish)

    return solver.implicit_solution(optimality, solve, known)


def star_result(form: ChiSquare, labels, n_pixels, free, prior_prec, order: int) -> dict:
    """Outputs of one star at its labels: value, log_var (log diag of the formal covariance
    (AᵀC⁻¹A + I/τ²)⁻¹), chi2 (prior term excluded), chi2_red = chi2 / (n_pixels − K) and
    converged (`solver.fit_summary`, from one evaluation of the objective)."""
    fit = solver.fit_summary(_objective_of(form, prior_prec, order)(labels), labels, free=free,
                             prior_prec=prior_prec)
    dof = jnp.maximum(n_pixels - labels.shape[0], 1)
    return {"value": labels, "log_var": jnp.log(jnp.diagonal(fit["covariance"])),
            "chi2": fit["chi2"], "chi2_red": fit["chi2"] / dof, "converged": fit["converged"]}


# --------------------------------------------------------------------------- batches of stars

def _weights(params, x, x_err):
    """(x with masked pixels zeroed, 1/(σ² + s²) of the order-2 and order-1 models), (B, P)."""
    flux_var = (jnp.broadcast_to(params["flux_var"], x.shape) if x_err is None
                else jnp.square(jnp.asarray(x_err, x.dtype)))
    inv_var = inverse_variance(flux_var, params["scatter"])
    inv_var1 = inverse_variance(flux_var, params["linear_scatter"])
    return jnp.where(inv_var > 0, x, 0.0), inv_var, inv_var1


def test_step(params, x, x_err=None, *, order: int, n_iter: int, n_polish: int,
              prior_std: float, implicit: bool = True, known=None, free=None,
              star_chunk: int = 256) -> dict:
    """The labels of stars (B, P) of normalized flux: dict of value, log_var (B, K) and chi2,
    chi2_red (B,) (module docstring). x_err (B, P): flux errors, +inf at masked pixels (None:
    the training median per pixel). With `known`/`free` (B, K) only the free labels move,
    the others keep their known values (used for missing training labels; not implicit)."""
    x = jnp.asarray(x, jnp.float32)
    theta, theta1 = params["theta"], params["linear_theta"]
    n_labels = theta1.shape[1] - 1
    prior_prec = 1.0 / prior_std ** 2
    x, inv_var, inv_var1 = _weights(params, x, x_err)
    all_free = jnp.ones(n_labels, bool)
    prototypes = params["prototypes"]
    proto_flux = label_vector(prototypes, order) @ theta.T
    proto_flux2 = jnp.square(proto_flux)

    def one(args):
        xs, w, w1 = args[:3]
        kn, fr = args[3:] if len(args) == 5 else (jnp.zeros(n_labels, xs.dtype), all_free)
        linear = linear_estimate(theta1, xs, w1, kn, fr, prior_prec)
        proto = prototype_start(proto_flux, proto_flux2, prototypes, xs, w)
        form = chi_square(theta, xs, w, linear, order)
        if implicit and len(args) == 3:
            labels = implicit_labels(theta, xs, w, form, linear, proto, prior_prec, order,
                                     n_iter, n_polish)
        else:
            labels = best_labels(theta, xs, w, form, linear, proto, kn, fr, prior_prec, order,
                                 n_iter, n_polish)
        final = chi_square(theta, xs, w, labels, order, m=form.m)
        return star_result(final, labels, jnp.sum(w > 0), fr, prior_prec, order)

    args = (x, inv_var, inv_var1)
    if known is not None:
        args += (jnp.asarray(known, x.dtype), jnp.asarray(free, bool))
    return lax.map(one, args, batch_size=min(star_chunk, x.shape[0]))


def catalogue_chi2_red(params, x, x_err, labels, *, order: int) -> jnp.ndarray:
    """Reduced χ² (B,) of spectra (B, P) at given standardized labels (B, K)."""
    x, inv_var, _ = _weights(params, jnp.asarray(x, jnp.float32), x_err)
    labels = jnp.asarray(labels, jnp.float32)
    resid = x - label_vector(labels, order) @ params["theta"].T
    n_dof = jnp.maximum(jnp.sum(inv_var > 0, axis=1) - labels.shape[1], 1)
    return jnp.sum(inv_var * resid * resid, axis=1) / n_dof


# --------------------------------------------------------------------------- training

def training_flux_var(batch: dict) -> np.ndarray:
    """Training flux variances (N, P) float32: x_err² (+inf at masked pixels; pixel_valid
    False also masks), or 0 everywhere (equal errors) when the batch has no x_err."""
    x = np.asarray(batch["x"])
    if "x_err" in batch:
        err = np.asarray(batch["x_err"], np.float32)
        if err.shape != x.shape:
            raise ValueError(f"cannon: x_err has shape {err.shape}, x has {x.shape}")
        if np.isnan(err).any() or (err < 0).any():
            raise ValueError("cannon: x_err must be >= 0 or +inf (masked), never NaN")
        var = np.square(err)
    else:
        var = np.zeros(x.shape, np.float32)
    if "pixel_valid" in batch:
        var = np.where(np.asarray(batch["pixel_valid"], bool), var, np.inf)
    return var.astype(np.float32)


def _parameters(labels, flux_t, var_t, theta, s2, flux_var, *, scatter: bool, scatter_iter: int,
                chunk: int, n_prototypes: int) -> dict:
    """The parameter pytree: the model (theta (P, T), scatter s (P,)), the order-1 model of the
    test step's first starting point (linear_theta (P, K+1), linear_scatter (P,), fitted here
    on the same stars), the prototypes of its second (J, K) and the typical flux variance
    flux_var (P,) used without x_err."""
    theta1, s2_1 = fit_pixels(labels, flux_t, var_t, order=1, scatter=scatter,
                              scatter_iter=scatter_iter, chunk=chunk)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return {"theta": f32(theta), "scatter": f32(np.sqrt(s2)),
            "flux_var": f32(typical_flux_var(flux_var)),
            "linear_theta": f32(theta1), "linear_scatter": f32(np.sqrt(s2_1)),
            "prototypes": f32(prototype_labels(labels, n_prototypes))}


def train_cannon(batch: dict, *, order: int = 2, scatter: bool = True, scatter_iter: int = 1,
                 missing_labels: str = "infer", l1: float = 0.0, l1_iter: int = 200,
                 pixel_chunk: int = 256, n_iter: int = 8, n_polish: int = 4,
                 prior_std: float = 10.0, n_prototypes: int = 256, log=None):
    """Fit the Cannon to a training batch (x, y, valid; optional x_err, pixel_valid). Returns
    (params, the training labels (N, K) it used: the catalogue's, with missing labels inferred
    by the test step under "infer"; the complete stars' only under "drop"). `log`, if given,
    receives one line per stage with its wall time."""
    clock = _Stopwatch(log)
    x = np.asarray(batch["x"], np.float32)
    y = np.asarray(batch["y"], np.float64)
    ok = np.asarray(batch["valid"], bool)
    n_t = n_terms(y.shape[1], order)
    if "x_err" not in batch and not scatter:
        raise ValueError("cannon: scatter=False needs flux errors, and the training batch has no "
                         "x_err (without them the scatter is the only noise model)")
    flux_var = training_flux_var(batch)
    complete = ok.all(axis=1)
    if complete.sum() <= n_t:
        raise ValueError(f"cannon: {int(complete.sum())} training stars have every label; "
                         f"the fit needs more than the {n_t} coefficients per pixel")
    flux_t, var_t = jnp.asarray(x.T), jnp.asarray(flux_var.T)
    opts = dict(scatter=scatter, l1=l1, l1_iter=l1_iter, chunk=pixel_chunk)
    keep, s2 = np.flatnonzero(complete), None
    if missing_labels == "infer" and not complete.all():
        theta, s2 = fit_pixels(y[keep], flux_t[:, keep], var_t[:, keep], order=order,
                               scatter_iter=0, **opts)
        clock(f"fit on the {len(keep)} stars with every label")
        params = _parameters(y[keep], flux_t[:, keep], var_t[:, keep], theta, s2,
                             flux_var[keep], scatter=scatter, scatter_iter=0, chunk=pixel_chunk,
                             n_prototypes=n_prototypes)
        clock("order-1 model")
        y = infer_missing(params, x, flux_var, y, ok, order=order, n_iter=n_iter,
                          n_polish=n_polish, prior_std=prior_std)
        clock(f"missing labels of {len(y) - len(keep)} stars")
        keep = np.arange(len(y))
        scatter_iter = max(scatter_iter - 1, 0)    # the fit on complete stars was the first
    labels, flux_t, var_t, flux_var = y[keep], flux_t[:, keep], var_t[:, keep], flux_var[keep]
    theta, s2 = fit_pixels(labels, flux_t, var_t, order=order, scatter_iter=scatter_iter,
                           scatter2=s2, **opts)
    clock(f"fit on {len(keep)} stars ({scatter_iter + 1} solve(s) per pixel)")
    params = _parameters(labels, flux_t, var_t, theta, s2, flux_var, scatter=scatter,
                         scatter_iter=scatter_iter, chunk=pixel_chunk, n_prototypes=n_prototypes)
    clock("order-1 model")
    return params, labels


class _Stopwatch:
    """Calls `log(f"{what}: {seconds since the last call} s")`; does nothing without `log`."""

    def __init__(self, log):
        self.log, self.last = log, time.perf_counter()

    def __call__(self, what: str) -> None:
        if self.log is not None:
            now = time.perf_counter()
            self.log(f"cannon: {what}: {now - self.last:.1f} s")
            self.last = now


@partial(jax.jit, static_argnames=("order", "n_iter", "n_polish", "prior_std"))
def _test_step_fixed(params, x, x_err, known, free, *, order, n_iter, n_polish, prior_std):
    return test_step(params, x, x_err, order=order, n_iter=n_iter, n_polish=n_polish,
                     prior_std=prior_std,
                     known=known, free=free)["value"]


def infer_missing(params, x, flux_var, y, ok, *, order: int, n_iter: int, n_polish: int,
                  prior_std: float,
                  chunk: int = 256) -> np.ndarray:
    """Labels (N, K) float64: `y` where `ok`, elsewhere inferred by the test step from the
    star's spectrum with its known labels fixed."""
    y = np.array(y, np.float64)
    rows = np.flatnonzero(~ok.all(axis=1))
    for start in range(0, len(rows), chunk):
        idx = rows[start:start + chunk]
        pad = np.concatenate([idx, np.full(chunk - len(idx), idx[-1])])  # one compilation
        value = _test_step_fixed(params, x[pad], np.sqrt(flux_var[pad]),
                                 np.where(ok[pad], y[pad], 0.0), ~ok[pad], order=order,
                                 n_iter=n_iter, n_polish=n_polish, prior_std=prior_std)
        y[idx] = np.where(ok[idx], y[idx], np.asarray(value, np.float64)[:len(idx)])
    return y


# --------------------------------------------------------------------------- the family

def _is_int(value, minimum: int) -> bool:
    return (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and value >= minimum)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value)))


def check_hyper(**hyper) -> None:
    """ValueError naming the first hyper-parameter out of its domain."""
    rules = {
        "n_inputs": (lambda v: _is_int(v, 1), "a positive integer"),
        "n_outputs": (lambda v: _is_int(v, 1), "a positive integer"),
        "order": (lambda v: _is_int(v, 1) and v in ORDERS, "1 or 2"),
        "l1": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
        "scatter": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
        "scatter_iter": (lambda v: _is_int(v, 0), "an integer >= 0"),
        "missing_labels": (lambda v: v in MISSING_LABELS, f"one of {MISSING_LABELS}"),
        "n_iter": (lambda v: _is_int(v, 1), "a positive integer"),
        "n_polish": (lambda v: _is_int(v, 1), "a positive integer"),
        "n_prototypes": (lambda v: _is_int(v, 1), "a positive integer"),
        "prior_std": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
        "implicit": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
        "l1_iter": (lambda v: _is_int(v, 1), "a positive integer"),
        "pixel_chunk": (lambda v: _is_int(v, 1), "a positive integer"),
        "star_chunk": (lambda v: _is_int(v, 1), "a positive integer"),
    }
    for name, value in hyper.items():
        ok, what = rules[name]
        if not ok(value):
            raise ValueError(f"cannon: {name} must be {what}, got {value!r}")


def build(*, n_inputs: int, n_outputs: int, kind: str = "regression", order: int = 2,
          l1: float = 0.0, scatter: bool = True, scatter_iter: int = 1,
          missing_labels: str = "infer", n_iter: int = 8, n_polish: int = 4,
          n_prototypes: int = 256, prior_std: float = 10.0,
          implicit: bool = True, l1_iter: int = 200, pixel_chunk: int = 256,
          star_chunk: int = 256) -> Model:
    """The Cannon for `n_inputs` pixels and `n_outputs` labels (regression only).

    order: 1 or 2, the degree of the label vector. l1: Casey+2016's Λ (units of ½χ² per unit
    coefficient) on the non-constant coefficients, 0 for none; l1_iter: its ADMM iterations.
    scatter: fit the intrinsic scatter s_p (else 0); scatter_iter: scatter-and-refit rounds
    after the first fit (the refit on every star after inferring missing labels is one).
    missing_labels: "infer" or "drop" (module docstring). Test step: n_iter Gauss-Newton
    iterations from each of the two starting points, n_polish Newton iterations from the
    better, n_prototypes training label vectors (the mean included) to pick the second start
    from; prior_std: τ, the width of the labels' weak prior (standardized units); implicit:
    differentiate the labels implicitly (False: through the iterations). pixel_chunk: pixels
    per batch of normal equations in `fit` (memory ~ pixel_chunk × T² floats); star_chunk:
    stars solved at once by `apply` (memory ~ star_chunk × T² floats). `fit` is deterministic
    and uses neither the validation batch nor the key."""
    if kind != "regression":
        raise ValueError(f"cannon: kind must be 'regression' (the Cannon models the flux as a "
                         f"polynomial in continuous labels), got {kind!r}")
    check_hyper(n_inputs=n_inputs, n_outputs=n_outputs, order=order, l1=l1, scatter=scatter,
                scatter_iter=scatter_iter, missing_labels=missing_labels, n_iter=n_iter,
                n_polish=n_polish, n_prototypes=n_prototypes,
                prior_std=prior_std, implicit=implicit, l1_iter=l1_iter,
                pixel_chunk=pixel_chunk, star_chunk=star_chunk)
    n_t = n_terms(n_outputs, order)
    step = dict(order=int(order), n_iter=int(n_iter), n_polish=int(n_polish),
                prior_std=float(prior_std))
    fit_hyper = dict(order=int(order), scatter=bool(scatter), scatter_iter=int(scatter_iter),
                     missing_labels=missing_labels, l1=float(l1), l1_iter=int(l1_iter),
                     pixel_chunk=int(pixel_chunk), n_iter=int(n_iter), n_polish=int(n_polish),
                     n_prototypes=int(n_prototypes),
                     prior_std=float(prior_std))

    def init(key):
        """An untrained model (flux 0 everywhere, labels at the prior): `fit` it first."""
        return {"theta": jnp.zeros((n_inputs, n_t)), "scatter": jnp.zeros((n_inputs,)),
                "flux_var": jnp.ones((n_inputs,)),
                "linear_theta": jnp.zeros((n_inputs, n_outputs + 1)),
                "linear_scatter": jnp.zeros((n_inputs,)),
                "prototypes": jnp.zeros((1, n_outputs))}

    def apply(params, x, key=None, train=False, x_err=None):
        return test_step(params, x, x_err, implicit=bool(implicit), star_chunk=int(star_chunk),
                         **step)

    def loss(params, batch, key):
        x_err = batch.get("x_err")
        if x_err is None and "pixel_valid" in batch:
            x_err = jnp.where(batch["pixel_valid"], jnp.sqrt(params["flux_var"]), jnp.inf)
        out = apply(params, batch["x"], x_err=x_err)
        mse, metrics = label_loss(out, batch, kind)
        complete = jnp.all(batch["valid"], axis=1)
        at_catalogue = catalogue_chi2_red(params, batch["x"], x_err, batch["y"], order=order)
        metrics["chi2_red"] = jnp.mean(out["chi2_red"])
        metrics["chi2_red_catalogue"] = (jnp.sum(jnp.where(complete, at_catalogue, 0.0))
                                         / jnp.maximum(jnp.sum(complete), 1))
        return mse, metrics

    def fit(train, valid, key):
        x, y = np.asarray(train["x"]), np.asarray(train["y"])
        if x.shape[1] != n_inputs or y.shape[1] != n_outputs:
            raise ValueError(f"cannon: train x/y have shapes {x.shape}/{y.shape}, model expects "
                             f"{n_inputs} pixels and {n_outputs} labels")
        return train_cannon(train, **fit_hyper)[0]

    return Model(init=init, apply=apply, loss=loss, fit=fit, stochastic=False, input_norm="mean")
