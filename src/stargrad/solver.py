"""Labels of a spectrum by χ² minimisation: one damped Gauss-Newton / Levenberg-Marquardt solver
for every forward model (the Cannon's polynomial, the Payne's emulator, the mock's true
generator), with box bounds, several starts, a convergence flag, the formal covariance and the
implicit derivative of the labels in the flux.

The problem. For one star of flux x (P,) with per-pixel inverse variances w (P,) (0 at masked
pixels) and a differentiable flux model f(ℓ) (P,) of labels ℓ (K,), the labels minimise

    χ²(ℓ) + |ℓ − μ|²/τ²,   χ²(ℓ) = Σ_p w_p (x_p − f_p(ℓ))²,

inside a box lower ≤ ℓ ≤ upper; the optional weak Gaussian prior (precision 1/τ², about μ)
keeps a label the spectrum does not constrain at μ with a formal error ≈ τ. With A = ∂f/∂ℓ
(P, K) and r = x − f: g = −½∇ = Aᵀ W r − (ℓ − μ)/τ², the Gauss-Newton matrix H = AᵀWA + I/τ²,
and the Newton matrix H + S with the residual curvature S = −Σ_p w_p r_p ∇²f_p.

Any model enters through an *objective*: `objective(labels) -> (value, H, S, g)` as above
(`flux_objective` builds it from `flux_fn(labels) -> (P,)` with one forward-mode Jacobian per
evaluation and S = 0; the Cannon builds its own, O(T²) per evaluation, in models/cannon.py).

Iterations (`levenberg_marquardt`): δ solves (H + λ diag H) δ = g in Jacobi-scaled form (labels
differ by orders of magnitude in how well the flux constrains them: Teff in K, abundances in
dex), the trial ℓ + δ is clipped to the box and kept if it lowers the objective; λ starts at
LM_DAMPING, ÷10 on an accepted step and ×10 on a rejected one (within DAMPING_RANGE). A fixed
number of iterations, so everything jits and vmaps over stars. `best_of_starts` runs them from
several starts and keeps the one of least objective; they return the objective's terms at their
labels, for a polish to go on from without evaluating them again. A polish may take a fixed
Gauss-Newton matrix (chord iterations: `readout_objective`'s `h`), as the Payne's does.

Convergence (`converged`): the Newton decrement gᵀH⁻¹g over the labels not held at a bound
(the objective's predicted further decrease, χ² units) is below `tol` and the objective finite.
A star that does not converge is flagged, never an error.

Pixel weights: `inverse_variance` 1/(σ² + s²) with a model's intrinsic scatter s, fitted by
maximum likelihood from residuals (`fit_scatter`); starts from training labels
(`prototype_labels`).

Formal covariance: H⁻¹ = (AᵀWA + I/τ²)⁻¹ at the solution (the inverse Fisher matrix when the
data dominate the prior).

Linear algebra: the K × K solves and inverses are written in plain XLA operations
(`solve_linear`, Gauss-Jordan with partial pivoting; `floored_cholesky` and `lower_inverse`),
not LAPACK. On CPU, jaxlib runs a batched LAPACK kernel by splitting the batch over
XLA's intra-op thread pool and waiting for the pieces; two such kernels that XLA schedules at the
same time (a star's covariance and its convergence test are independent) can each hold a pool
thread while waiting for the other's, and with as many kernels as threads (2 cores) every thread
waits for ever (observed with jaxlib 0.10.2: the Cannon's test step hung at 0% CPU).

Derivative (`implicit_solution`): the labels are differentiated through the optimality
condition ∇(χ² + |ℓ − μ|²/τ²) = 0 by the implicit function theorem (`jax.lax.custom_root`):
dℓ/dx = (H + S)⁻¹ AᵀW, which at zero residual is the efficient estimator (AᵀWA + I/τ²)⁻¹AᵀW
and is what differentiating the converged iterations gives. A label held at a bound gets the
unconstrained derivative.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LM_DAMPING = 1e-3       # initial Levenberg-Marquardt damping, relative to diag(H)
#: λ stays in this range: a long run of rejected (or accepted) steps at the optimum must not
#: overflow (underflow) it in float32.
DAMPING_RANGE = (1e-12, 1e12)
#: Newton decrement gᵀH⁻¹g (χ² units) below which a fit counts as converged: the optimum is
#: within about sqrt(tol) = 0.1 formal standard deviations.
CONVERGENCE_TOL = 1e-2
#: Smallest Cholesky pivot of the Jacobi-scaled H (unit diagonal) kept by `covariance` (about
#: float32 resolution).
PIVOT_FLOOR = 1e-7
#: Floor of σ² + s² (normalized flux units²): a pixel of zero variance would take all the weight.
MIN_VARIANCE = 1e-12
BISECTION_STEPS = 40    # of the scatter's likelihood equation, in log s², per pixel


# --------------------------------------------------------------------------- pixel weights

def inverse_variance(flux_var, scatter):
    """1 / (σ² + s²) with σ², s² ≥ 0 and either possibly +inf (weight 0), floored variance."""
    total = flux_var + jnp.square(scatter)
    return jnp.where(jnp.isfinite(total), 1.0 / jnp.maximum(total, MIN_VARIANCE), 0.0)


def typical_flux_var(flux_var) -> np.ndarray:
    """Per-pixel median over stars of the finite flux variances (P,); +inf where none is."""
    finite = np.where(np.isfinite(flux_var), flux_var, np.nan)
    seen = np.isfinite(finite).any(axis=0)
    typical = np.full(finite.shape[1], np.inf)
    typical[seen] = np.nanmedian(finite[:, seen], axis=0)
    return typical


@partial(jax.jit, static_argnames="n_terms_")
def fit_scatter(resid_t, flux_var_t, n_terms_: int):
    """Maximum-likelihood intrinsic variance s² (P,) of each pixel from residuals (P, N) and
    flux variances σ² (P, N) (+inf: masked): the root of Σ_n (c r_n² − σ_n² − s²)/(σ_n² + s²)²
    with c = N_p/(N_p − T), by bisection in log s² (0 when the residuals are within the flux
    errors); +inf for pixels with N_p ≤ T unmasked stars."""
    good = jnp.isfinite(flux_var_t)
    n_good = good.sum(axis=1)
    dof = n_good / jnp.maximum(n_good - n_terms_, 1)
    r2 = jnp.where(good, jnp.square(resid_t), 0.0) * dof[:, None]
    var = jnp.where(good, flux_var_t, 1.0)

    def slope(log_s2):      # the likelihood's derivative in s², up to a positive factor
        w = jnp.where(good, 1.0 / jnp.maximum(var + jnp.exp(log_s2)[:, None], MIN_VARIANCE), 0.0)
        return jnp.sum(w * (w * r2 - 1.0), axis=1)

    lo = jnp.full(n_good.shape, jnp.log(MIN_VARIANCE), jnp.float32)
    hi = jnp.log(jnp.maximum(r2.max(axis=1), 2.0 * MIN_VARIANCE))

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        rising = slope(mid) > 0
        return jnp.where(rising, mid, lo), jnp.where(rising, hi, mid)

    lo, hi = lax.fori_loop(0, BISECTION_STEPS, bisect, (lo, hi))
    s2 = jnp.where(slope(lo) > 0, jnp.exp(0.5 * (lo + hi)), 0.0)
    return jnp.where(n_good > n_terms_, s2, jnp.inf)


def prototype_labels(labels, n_prototypes: int) -> np.ndarray:
    """(J, K) candidate starting points of standardized labels: the training mean (0) and up to
    `n_prototypes` − 1 training label vectors (N, K), evenly spaced through the training set."""
    rows = np.unique(np.linspace(0, len(labels) - 1, max(n_prototypes - 1, 0)).astype(int))
    return np.concatenate([np.zeros((1, labels.shape[1])), labels[rows]])


# --------------------------------------------------------------------------- small dense algebra

def solve_linear(a, b):
    """x (K,) solving a x = b for a (K, K) by Gauss-Jordan elimination with partial pivoting, in
    plain XLA operations (see the module docstring for why not LAPACK). The row operations reach
    b only through a, so x is linear in b (as `lax.custom_root` needs to transpose it)."""
    rows = jnp.arange(a.shape[0])

    def eliminate(col, state):
        a, b = state
        pivot = jnp.argmax(jnp.where(rows >= col, jnp.abs(a[:, col]), -1.0))
        order = jnp.where(rows == col, pivot, jnp.where(rows == pivot, col, rows))
        a, b = a[order], b[order]
        factor = jnp.where(rows == col, 0.0, a[:, col] / a[col, col])
        return a - factor[:, None] * a[col][None, :], b - factor * b[col]

    a, b = lax.fori_loop(0, a.shape[0], eliminate, (a, b))
    return b / jnp.diagonal(a)


def floored_cholesky(a, floor: float):
    """Lower-triangular L (K, K) with L Lᵀ = a for a symmetric positive semi-definite a of unit
    diagonal, column by column in plain XLA operations (see the module docstring for why not
    LAPACK). A pivot (the remaining diagonal entry) at or below `floor` is a direction the
    earlier ones already explain to rounding: it becomes √floor and its column below the
    diagonal 0, so the direction gets the finite variance 1/floor and rounding noise is not
    divided by a near-zero pivot."""
    rows = jnp.arange(a.shape[0])

    def eliminate(col, state):
        a, low = state
        kept = a[col, col] > floor
        pivot = jnp.sqrt(jnp.where(kept, a[col, col], floor))
        below = jnp.where((rows > col) & kept, a[:, col] / pivot, 0.0)
        return a - jnp.outer(below, below), low.at[:, col].set(below.at[col].set(pivot))

    return lax.fori_loop(0, a.shape[0], eliminate, (a, jnp.zeros_like(a)))[1]


def lower_inverse(low):
    """L⁻¹ (K, K) of a lower-triangular L with a non-zero diagonal, by forward substitution."""
    eye = jnp.eye(low.shape[0], dtype=low.dtype)

    def substitute(row, inv):
        return inv.at[row].set((eye[row] - low[row] @ inv) / low[row, row])

    return lax.fori_loop(0, low.shape[0], substitute, jnp.zeros_like(low))


# --------------------------------------------------------------------------- iterations

def scaled_solve(h, g, free, damping=0.0, scale=None):
    """δ solving (H_ff + λ diag(scale)_ff) δ_f = g_f with δ = 0 at fixed labels (free False);
    `scale` (default H) also sets the Jacobi scaling of the solve."""
    scale = h if scale is None else scale
    d = jnp.sqrt(jnp.maximum(jnp.abs(jnp.diagonal(scale)), 1e-30))
    hs = h / jnp.outer(d, d) + damping * jnp.eye(h.shape[0], dtype=h.dtype)
    both = free[:, None] & free[None, :]
    hs = jnp.where(both, hs, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
    return solve_linear(hs, jnp.where(free, g / d, 0.0)) / d


def covariance(h):
    """H⁻¹ (K, K) of a symmetric positive semi-definite H, Jacobi-scaled (unit diagonal) and
    inverted through its Cholesky factor with pivots floored at PIVOT_FLOOR (`floored_cholesky`):
    a direction the data (nearly) leave free gets a large, finite, positive variance instead of
    a rounding-error sign."""
    d = jnp.sqrt(jnp.maximum(jnp.diagonal(h), 1e-30))
    inv = lower_inverse(floored_cholesky(h / jnp.outer(d, d), PIVOT_FLOOR))
    return inv.T @ inv / jnp.outer(d, d)


def _clip(labels, lower, upper):
    return labels if lower is None else jnp.clip(labels, lower, upper)


def _inside(free, labels, g, lower, upper):
    """`free` without the labels held at a bound by a gradient pointing out of the box (the
    active set: the step of the others must not assume those move)."""
    if lower is None:
        return free
    return free & ~(((labels <= lower) & (g < 0)) | ((labels >= upper) & (g > 0)))


def levenberg_marquardt(objective: Callable, start, free, n_iter: int, *, newton: bool = False,
                        lower=None, upper=None, terms=None):
    """Labels (K,) and the objective's terms (value, H, S, g) at them after `n_iter`
    Levenberg-Marquardt iterations from `start` (`terms`: the objective's terms at `start`, when
    the caller has them); only `free` labels move, and stay inside [lower, upper] (None:
    unbounded): a label at a bound whose gradient points out of the box is held there for the
    step.

    Steps solve (H + λ diag H) δ = g (Gauss-Newton), or with `newton` (H + S + λ diag H) δ = g:
    far from the optimum H + S can be indefinite and Gauss-Newton is the robust choice, but
    near it the model misfit can make S comparable to H, where Newton converges quadratically
    and Gauss-Newton only linearly."""
    terms = objective(start) if terms is None else terms
    use_curv = 1.0 if newton else 0.0

    def step(state, _):
        labels, terms, damping = state
        obj, h, curv, g = terms
        delta = scaled_solve(h + use_curv * curv, g, _inside(free, labels, g, lower, upper),
                             damping, scale=h)
        trial = _clip(labels + delta, lower, upper)
        trial_terms = objective(trial)
        better = trial_terms[0] < obj
        pick = lambda new, old: jnp.where(better, new, old)  # noqa: E731
        return (pick(trial, labels), jax.tree.map(pick, tuple(trial_terms), terms),
                jnp.clip(jnp.where(better, damping * 0.1, damping * 10.0),
                         *DAMPING_RANGE)), None

    damping = jnp.asarray(LM_DAMPING, terms[0].dtype)
    (labels, terms, _), _ = lax.scan(step, (start, tuple(terms), damping), None, length=n_iter)
    return labels, terms


def best_of_starts(objective: Callable, starts, free, n_iter: int, *, lower=None, upper=None):
    """(labels (K,), the objective's terms at them) of the least objective after `n_iter`
    iterations from each row of `starts` (S, K) (clipped to the box first)."""
    labels, terms = jax.vmap(lambda s: levenberg_marquardt(
        objective, _clip(s, lower, upper), free, n_iter, lower=lower, upper=upper))(starts)
    best = jnp.argmin(jnp.where(jnp.isfinite(terms[0]), terms[0], jnp.inf))
    return labels[best], jax.tree.map(lambda t: t[best], terms)


def converged(terms, labels, free, lower=None, upper=None, tol: float = CONVERGENCE_TOL):
    """True when the objective's terms (value, H, S, g) at `labels` are finite and the Newton
    decrement gᵀH⁻¹g over the free labels not held at a bound by a gradient pointing out of the
    box (the further decrease of the objective a Newton step predicts, χ² units) is below
    `tol`."""
    obj, h, _, g = terms
    decrement = jnp.dot(g, scaled_solve(h, g, _inside(free, labels, g, lower, upper)))
    return jnp.isfinite(obj) & jnp.all(jnp.isfinite(labels)) & (decrement < tol)


def _tangent_solve(linear_fn, y):
    """Solve M z = y for the implicit derivative, M the Jacobian of the optimality condition."""
    m = jax.jacfwd(linear_fn)(y)
    return scaled_solve(m, y, jnp.ones(y.shape, bool))


def implicit_solution(optimality: Callable, solve: Callable, guess):
    """`solve(guess)` differentiated by the implicit function theorem at the root of
    `optimality(labels) -> (K,)` (½ the objective's gradient): what closed-over arrays
    (flux, weights, model parameters) get as derivatives does not depend on the iterations."""
    return lax.custom_root(optimality, guess, lambda _, g: solve(g), _tangent_solve)


# --------------------------------------------------------------------------- any flux model

def pair_matrix(r: int) -> np.ndarray:
    """(r, r) position of the product of columns (min, max) in the triu-ordered pairs."""
    i, j = np.triu_indices(r)
    full = np.zeros((r, r), int)
    full[i, j] = full[j, i] = np.arange(len(i))
    return full


def weighted_gram(theta, weights, chunk: int = 512):
    """Θᵀ diag(w) Θ (T, T) of one star's weights (P,), from the products of pairs of columns
    of Θ accumulated over chunks of pixels (vmapped over stars: one matrix product per chunk)."""
    n_pixels, t = theta.shape
    i, j = np.triu_indices(t)
    chunk = min(chunk, n_pixels)
    n_chunks = -(-n_pixels // chunk)
    pad = n_chunks * chunk - n_pixels
    theta_c = jnp.pad(theta, ((0, pad), (0, 0))).reshape(n_chunks, chunk, t)
    weights_c = jnp.pad(weights, (0, pad)).reshape(n_chunks, chunk)

    def add(upper, block):
        th, w = block
        return upper + w @ (th[:, i] * th[:, j]), None

    upper, _ = lax.scan(add, jnp.zeros(len(i), theta.dtype), (theta_c, weights_c))
    return upper[pair_matrix(t)]


def flux_jacobian(flux_fn: Callable, labels):
    """(A = ∂f/∂ℓ (P, K), f (P,)) of `flux_fn` at `labels`, by forward mode (K passes)."""
    return jax.jacfwd(lambda ell: (flux_fn(ell), flux_fn(ell)), has_aux=True)(labels)


def flux_terms(a, f, labels, x, inv_var, prior_prec=0.0, prior_mean=0.0):
    """The objective's terms (χ² + |ℓ − μ|²/τ², H = AᵀWA + I/τ², S = 0, g = AᵀWr − (ℓ − μ)/τ²)
    of one star (x, inv_var (P,)) from the flux f (P,) and its Jacobian A (P, K) at `labels`."""
    w_resid = inv_var * (x - f)
    offset = labels - prior_mean
    h = a.T @ (a * inv_var[:, None]) + prior_prec * jnp.eye(labels.shape[0], dtype=a.dtype)
    value = jnp.dot(x - f, w_resid) + prior_prec * jnp.dot(offset, offset)
    return value, h, jnp.zeros_like(h), a.T @ w_resid - prior_prec * offset


def flux_objective(flux_fn: Callable, x, inv_var, prior_prec=0.0, prior_mean=0.0):
    """The objective of one star (x, inv_var (P,)) under `flux_fn(labels (K,)) -> (P,)`:
    labels -> `flux_terms` at them, with A from one forward-mode Jacobian (K forward passes)."""
    def objective(labels):
        return flux_terms(*flux_jacobian(flux_fn, labels), labels, x, inv_var, prior_prec,
                          prior_mean)
    return objective


def readout_objective(theta, gram, features: Callable, x, inv_var, prior_prec=0.0,
                      prior_mean=0.0, h=None):
    """`flux_objective` for a flux model that is a linear read-out Θ v(ℓ) of features v =
    `features(labels)` (T,), Θ (P, T) (the Payne's last layer with its bias as a column of
    ones), with the Gauss-Newton matrix H = DᵀMD + I/τ² from a Gram matrix M (T, T) and
    D = ∂v/∂ℓ (T, K) by forward mode: the value and g = Dᵀ Θᵀ W r − (ℓ − μ)/τ² come from
    the residual r = x − Θv, so an evaluation costs two read-outs, O(PT), instead of the
    O(PTK) of A = ΘD.

    With M = ΘᵀWΘ (`weighted_gram(theta, inv_var)`) H is exact. Any other symmetric positive
    definite M (an approximation, e.g. a Gram of typical weights scaled to the star) changes the
    steps only: value and gradient are exact, so the iterations stop at the same optimum, and
    the covariance and convergence test must then come from an exact H (`solve_star`, then
    `fit_summary` of `flux_objective`). So does a fixed `h` (K, K), returned as H at every
    labels (chord iterations, e.g. with the H of where they start): D is then not formed, and g
    comes from one vector-Jacobian product of the features."""
    def gradient_terms(labels, v):
        resid = x - v @ theta.T       # not theta @ v: vmapped, that lands pixels-first
        w_resid = inv_var * resid
        offset = labels - prior_mean
        value = jnp.dot(resid, w_resid) + prior_prec * jnp.dot(offset, offset)
        return value, w_resid @ theta, prior_prec * offset

    def objective(labels):
        d, v = jax.jacfwd(lambda ell: (features(ell), features(ell)), has_aux=True)(labels)
        value, readout_grad, prior_grad = gradient_terms(labels, v)
        h = d.T @ (gram @ d) + prior_prec * jnp.eye(labels.shape[0], dtype=d.dtype)
        return value, h, jnp.zeros_like(h), d.T @ readout_grad - prior_grad

    def chord_objective(labels):
        v, vjp = jax.vjp(features, labels)
        value, readout_grad, prior_grad = gradient_terms(labels, v)
        return value, h, jnp.zeros_like(h), vjp(readout_grad)[0] - prior_grad

    return objective if h is None else chord_objective


def flux_optimality(flux_fn: Callable, x, inv_var, prior_prec=0.0, prior_mean=0.0):
    """½∇(χ² + |ℓ − μ|²/τ²) = (ℓ − μ)/τ² − AᵀW(x − f(ℓ)) as a function of the labels, written
    with a vector-Jacobian product so that its own Jacobian (the Newton matrix) is exact."""
    def optimality(labels):
        f, vjp = jax.vjp(flux_fn, labels)
        return prior_prec * (labels - prior_mean) - vjp(inv_var * (x - f))[0]
    return optimality


def solve_star(flux_fn: Callable, x, inv_var, starts, *, n_iter: int, n_polish: int = 0,
               lower=None, upper=None, prior_prec=0.0, prior_mean=0.0, implicit: bool = True,
               objective: Callable | None = None, polish_objective: Callable | None = None):
    """Labels (K,) of one star (x, inv_var (P,)) under `flux_fn`: `n_iter` iterations from each
    row of `starts` (S, K), then `n_polish` more from the best only. With `implicit`, they are
    differentiated through the optimality condition (else through the iterations).
    `objective` replaces `flux_objective` of the same star and prior in the iterations (e.g.
    `readout_objective`), `polish_objective(terms)` it in the polish, given the objective's
    terms at the best start's labels (e.g. a chord `readout_objective` with their H); the
    implicit derivative always comes from `flux_fn`."""
    if objective is None:
        objective = flux_objective(flux_fn, x, inv_var, prior_prec, prior_mean)
    free = jnp.ones(starts.shape[-1], bool)

    def solve(_):
        best, terms = best_of_starts(objective, starts, free, n_iter, lower=lower, upper=upper)
        if n_polish:
            polish = objective if polish_objective is None else polish_objective(terms)
            best = levenberg_marquardt(polish, best, free, n_polish, lower=lower, upper=upper,
                                       terms=terms)[0]
        return best

    if not implicit:
        return solve(starts[0])
    optimality = flux_optimality(flux_fn, x, inv_var, prior_prec, prior_mean)
    return implicit_solution(optimality, solve, starts[0])


def fit_summary(terms, labels, *, free=None, lower=None, upper=None, prior_prec=0.0,
                prior_mean=0.0, tol: float = CONVERGENCE_TOL) -> dict:
    """value (K,) = labels, covariance (K, K) = H⁻¹, chi2 (prior excluded) and converged
    (`converged`; `free` (K,) bool, default all) from the objective's terms (value, H, S, g) at
    the labels."""
    offset = labels - prior_mean
    free = jnp.ones(labels.shape[-1], bool) if free is None else free
    return {"value": labels, "covariance": covariance(terms[1]),
            "chi2": terms[0] - prior_prec * jnp.dot(offset, offset),
            "converged": converged(terms, labels, free, lower, upper, tol)}


def fit_star(flux_fn: Callable, x, inv_var, starts, *, n_iter: int, n_polish: int = 0,
             lower=None, upper=None, prior_prec=0.0, prior_mean=0.0, implicit: bool = True,
             tol: float = CONVERGENCE_TOL, objective: Callable | None = None) -> dict:
    """`solve_star`, then `fit_summary` of `objective` (by default `flux_objective`) at its
    labels: value (K,), covariance (K, K) = H⁻¹ at the solution, chi2 (prior excluded),
    converged (bool)."""
    if objective is None:
        objective = flux_objective(flux_fn, x, inv_var, prior_prec, prior_mean)
    labels = solve_star(flux_fn, x, inv_var, starts, n_iter=n_iter, n_polish=n_polish,
                        lower=lower, upper=upper, prior_prec=prior_prec, prior_mean=prior_mean,
                        implicit=implicit, objective=objective)
    return fit_summary(objective(labels), labels, lower=lower, upper=upper,
                       prior_prec=prior_prec, prior_mean=prior_mean, tol=tol)


def fit_stars(flux_fn: Callable, x, inv_var, starts, *, star_chunk: int = 64, **options) -> dict:
    """`fit_star` over stars: x, inv_var (B, P), starts (B, S, K); the same `options` for all.
    Stars go `star_chunk` at a time through one vmapped program (memory ~ star_chunk × P × K).
    Returns value (B, K), covariance (B, K, K), chi2 (B,), converged (B,)."""
    one = partial(fit_star, flux_fn, **options)
    return lax.map(lambda args: one(*args), (x, inv_var, starts),
                   batch_size=min(star_chunk, x.shape[0]))
