"""The Payne (Ting, Conroy, Rix & Cargile 2019, ApJ 879, 69): a neural emulator of the spectrum,
labels → normalized flux at every pixel, learnt from stars of known labels; a star's labels are
those whose emulated spectrum fits it best by χ² (`stargrad.solver`, shared with the Cannon).

Emulator. Standardized labels ℓ (K,) → `hidden` dense layers with a smooth activation (SiLU: the
test step differentiates the emulator twice, and The Payne's leaky ReLU has no curvature) → one
wide linear layer to all P pixels (a shared trunk; The Payne trains one small network per pixel,
which is the same function class with per-pixel hidden units). Output: the batch's normalized
flux (continuum-normalized flux minus the per-pixel training mean, `input_norm="mean"`).

Training step, through the shared loop (`stargrad.train.fit`): the loss is a star's χ² per
unmasked pixel, Σ_p w_p (x_p − f_p(ℓ))² / Σ_p [w_p > 0] with w = 1/σ² from `x_err` (+inf at
masked pixels, and `pixel_valid` False: weight 0, whatever x holds there), averaged over the
batch; early stopping on the valid split's loss. **Stars with a missing label are left out** (they
contribute 0; the emulator needs every label as input) — unlike the Cannon's default, nothing is
inferred. Catalogue label errors are not used. After the loop (`Model.finish`) the emulator's
own per-pixel error s_p is the maximum-likelihood intrinsic scatter of the valid split's
residuals at the catalogue labels (`solver.fit_scatter`; +inf: weight 0, for a pixel with no
valid star), and frozen with the test step's constants.

Test step (`apply`), star by star: the labels of least χ²(ℓ) = Σ_p (x_p − f_p(ℓ))² / (σ_p² + s_p²)
+ |ℓ|²/τ² by `solver.solve_star`, through the emulator's last layer as a linear read-out
(`solver.readout_objective`). The iterations' Gauss-Newton matrix DᵀMD takes for M the Gram
Σ_b c_b ΘᵀW̄_bΘ of the typical pixel weights W̄ (training median σ², the emulator's scatter) over
`GRAM_BLOCKS` contiguous pixel blocks b, formed once per call, each scaled to the star by
c_b = tr(ΘᵀW_bΘ)/tr(ΘᵀW̄_bΘ), a P-term dot product, instead of the star's own ΘᵀWΘ (0.5 GFLOP
a star): that changes the steps only, since the value and gradient are the star's own; the
covariance and the convergence test come from the star's exact A = ∂f/∂ℓ at the solution
(`solver.fit_summary`), `SUMMARY_CHUNK` stars at a time. `n_iter` Levenberg-Marquardt iterations
from each of two starts — the training mean and the training label vector among `n_prototypes`
whose emulated spectrum fits best — then `n_polish` from the better one, inside the training
label range widened by `bound_margin` of its width on each side; τ = `prior_std` is a weak
prior that keeps a label the spectrum does not constrain near the mean. The polish keeps the
Gauss-Newton matrix of the better start's labels (chord iterations, `readout_objective`'s `h`):
its evaluations need no D, only a vector-Jacobian product of the trunk for the gradient.

Outputs (standardized units): `value` (B, K); `log_var_model` (B, K), log diag (AᵀΣ⁻¹A + I/τ²)⁻¹
with Σ = diag σ² (the measurement noise alone, A = ∂f/∂ℓ at the solution: becomes std_model);
`log_var` (B, K), log of diag (AᵀC⁻¹A + I/τ²)⁻¹ − that, C = diag(σ² + s²) (the emulator's
error propagated as the Cannon's scatter is: becomes std_predictive, so that std_total² is the
diagonal of the full formal covariance); `chi2`, `chi2_red` (B,) as the Cannon's; `converged`
(B,) bool (`solver.converged`). Without `x_err` every pixel gets the training median σ_p² and
none is masked. Derivatives of `value` in the flux are implicit (`solver.implicit_solution`).

Regression only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import solver
from ..layers import Init, dense, init_params, positive_ints
from . import Model, Traits

TRAITS = Traits(uses_flux_errors=True)

#: Floor of the predictive variance (standardized label units²) before its log.
MIN_LABEL_VARIANCE = 1e-12
#: Contiguous pixel blocks whose typical Gram is rescaled to each star (see `apply`): the closer
#: the steps' matrix is to the star's own, the fewer iterations a fit needs; of the default run's
#: test stars 98.0 % converged with 8 blocks after 6 + 6 iterations, 99.4 % with 64 after 2 + 4.
GRAM_BLOCKS = 64
#: Stars whose exact A = ∂f/∂ℓ (P × K each) and AᵀWA are formed at once at the solution: a few
#: keep A in the processor's cache for the two products that read it (bench/bench_payne.py).
SUMMARY_CHUNK = 8


def _positive_int(name: str, value, allow_zero: bool = False) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < (0 if allow_zero else 1):
        raise ValueError(f"payne: {name} must be a {'non-negative' if allow_zero else 'positive'}"
                         f" integer, got {value!r}")
    return int(value)


def _positive_number(name: str, value, allow_zero: bool = False) -> float:
    ok = (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, (bool, np.bool_)) and np.isfinite(value)
          and (value >= 0 if allow_zero else value > 0))
    if not ok:
        raise ValueError(f"payne: {name} must be a finite number {'>=' if allow_zero else '>'} "
                         f"0, got {value!r}")
    return float(value)


def _blocks(a, n_blocks: int):
    """(P, ...) → (n_blocks, ⌈P/n_blocks⌉, ...): contiguous pixel blocks, zero-padded at the end."""
    size = -(-a.shape[0] // n_blocks)
    padded = jnp.pad(a, [(0, size * n_blocks - a.shape[0])] + [(0, 0)] * (a.ndim - 1))
    return padded.reshape((n_blocks, size) + a.shape[1:])


def typical_gram_blocks(theta, w_typical) -> dict:
    """The read-out Gram ΘᵀW̄Θ of typical pixel weights w̄ (P,), per block of `GRAM_BLOCKS`
    contiguous pixels: grams (G, T, T), norms ‖Θ_p‖² per block (G, P/G) and traces
    tr ΘᵀW̄_bΘ (G,)."""
    theta_b, w_b = _blocks(theta, GRAM_BLOCKS), _blocks(w_typical, GRAM_BLOCKS)
    norms = jnp.sum(jnp.square(theta_b), axis=2)
    return {"grams": jax.vmap(solver.weighted_gram)(theta_b, w_b), "norms": norms,
            "traces": jnp.sum(w_b * norms, axis=1)}


def star_gram(typical: dict, weights):
    """Σ_b c_b ΘᵀW̄_bΘ (T, T): the typical blocks' Grams, each scaled to a star's pixel weights
    (P,) by c_b = tr(ΘᵀW_bΘ)/tr(ΘᵀW̄_bΘ) (0 for a block of no typical weight)."""
    traces = jnp.sum(_blocks(weights, GRAM_BLOCKS) * typical["norms"], axis=1)
    has_weight = typical["traces"] > 0
    scale = jnp.where(has_weight, traces / jnp.where(has_weight, typical["traces"], 1.0), 0.0)
    return jnp.tensordot(scale, typical["grams"], axes=1)


def emulate(emulator: dict, labels):
    """Normalized flux (..., P) of standardized labels (..., K)."""
    return dense(emulator["out"], hidden_features(emulator, labels))


def hidden_features(emulator: dict, labels):
    """The last hidden layer's output (..., H) of standardized labels (..., K)."""
    h = labels
    for layer in emulator["hidden"]:
        h = jax.nn.silu(dense(layer, h))
    return h


def readout(emulator: dict):
    """(Θ (P, H + 1), v(ℓ) -> (H + 1,)): the emulator as a linear read-out of its last hidden
    layer and a constant, f(ℓ) = Θ v(ℓ), for `solver.readout_objective`."""
    theta = jnp.concatenate([emulator["out"]["w"].T, emulator["out"]["b"][:, None]], axis=1)

    def features(labels):
        h = hidden_features(emulator, labels)
        return jnp.concatenate([h, jnp.ones(h.shape[:-1] + (1,), h.dtype)], axis=-1)
    return theta, features


def noise_weights(x, x_err, pixel_valid=None):
    """1/σ² (B, P), 0 at masked pixels (x_err +inf, or pixel_valid False)."""
    w = solver.inverse_variance(jnp.square(jnp.asarray(x_err, x.dtype)), 0.0)
    return w if pixel_valid is None else jnp.where(pixel_valid, w, 0.0)


def emulator_chi2(emulator: dict, batch: dict):
    """Per star χ² per unmasked pixel (B,) of the emulated spectra at the catalogue labels,
    and whether the star counts (every label valid, at least one unmasked pixel)."""
    x = batch["x"]
    w = noise_weights(x, batch["x_err"], batch.get("pixel_valid"))
    complete = jnp.all(batch["valid"], axis=1)
    labels = jnp.where(batch["valid"], batch["y"], 0.0)
    resid = jnp.where(w > 0, x - emulate(emulator, labels), 0.0)
    n_pix = jnp.sum(w > 0, axis=1)
    per_star = jnp.sum(w * resid * resid, axis=1) / jnp.maximum(n_pix, 1)
    counts = complete & (n_pix > 0)
    return jnp.where(counts, per_star, 0.0), counts


def build(*, n_inputs: int, n_outputs: int, kind: str = "regression", hidden=(256, 256),
          n_iter: int = 3, n_polish: int = 4, n_prototypes: int = 64, bound_margin: float = 0.1,
          prior_std: float = 10.0, star_chunk: int = 256) -> Model:
    """The Payne for `n_inputs` pixels and `n_outputs` labels (regression only).

    hidden: widths of the emulator's hidden layers. Test step: n_iter Levenberg-Marquardt
    iterations from each of two starts, then n_polish from the better one; n_prototypes
    training label vectors (the mean included) to pick the second start from; bound_margin:
    labels stay within the training range widened by this fraction of its width on each side;
    prior_std: τ (standardized units); star_chunk: stars solved at once (memory ~ star_chunk ×
    P × K floats)."""
    if kind != "regression":
        raise ValueError(f"payne: kind must be 'regression' (the emulator's inputs are "
                         f"continuous labels), got {kind!r}")
    n_inputs, n_outputs = _positive_int("n_inputs", n_inputs), _positive_int("n_outputs", n_outputs)
    hidden = positive_ints("payne", "hidden", hidden)
    n_iter = _positive_int("n_iter", n_iter)
    n_prototypes = _positive_int("n_prototypes", n_prototypes)
    n_polish = _positive_int("n_polish", n_polish, allow_zero=True)
    star_chunk = _positive_int("star_chunk", star_chunk)
    bound_margin = _positive_number("bound_margin", bound_margin, allow_zero=True)
    prior_prec = 1.0 / _positive_number("prior_std", prior_std) ** 2
    widths = [n_outputs, *hidden]

    def init(key):
        """Random emulator; frozen constants of an untrained model (no scatter, unit flux
        variance, labels within ±5 standardized units, one start at the mean)."""
        layout = {"hidden": [{"w": Init("normal", (a, b), float(np.sqrt(2.0 / a))),
                              "b": Init("zeros", (b,))} for a, b in zip(widths[:-1], widths[1:])],
                  "out": {"w": Init("normal", (widths[-1], n_inputs),
                                    float(0.1 / np.sqrt(widths[-1]))),
                          "b": Init("zeros", (n_inputs,))}}
        return {"emulator": init_params(key, layout),
                "frozen": {"scatter": jnp.zeros(n_inputs), "flux_var": jnp.ones(n_inputs),
                           "lower": jnp.full(n_outputs, -5.0), "upper": jnp.full(n_outputs, 5.0),
                           "prototypes": jnp.zeros((1, n_outputs))}}

    def init_data(train, key):
        """`init` with the frozen constants of the training set: the label box, the
        prototypes (stars with every label) and the median flux variance of each pixel."""
        params = init(key)
        complete = np.asarray(train["valid"]).all(axis=1)
        if not complete.any():
            raise ValueError("payne: no training star has every label; the emulator needs them")
        labels = np.asarray(train["y"], np.float64)[complete]
        low, high = labels.min(axis=0), labels.max(axis=0)
        width = np.maximum(high - low, 1e-6)
        var = np.square(np.asarray(train["x_err"], np.float64))
        if "pixel_valid" in train:
            var = np.where(np.asarray(train["pixel_valid"], bool), var, np.inf)
        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        params["frozen"].update(lower=f32(low - bound_margin * width),
                                upper=f32(high + bound_margin * width),
                                prototypes=f32(solver.prototype_labels(labels, n_prototypes)),
                                flux_var=f32(solver.typical_flux_var(var)))
        return params

    def finish(params, train, valid):
        """The emulator's per-pixel scatter s (P,) from the valid split's residuals at the
        catalogue labels of its stars with every label (maximum likelihood, flux errors known)."""
        complete = np.asarray(valid["valid"]).all(axis=1)
        if not complete.any():
            raise ValueError("payne: no valid-split star has every label; the emulator's "
                             "scatter cannot be measured")
        x = jnp.asarray(valid["x"])[complete]
        pred = emulate(params["emulator"], jnp.asarray(valid["y"])[complete])
        var = jnp.square(jnp.asarray(valid["x_err"]))[complete]
        if "pixel_valid" in valid:
            var = jnp.where(jnp.asarray(valid["pixel_valid"])[complete], var, jnp.inf)
        s2 = solver.fit_scatter((x - pred).T, var.T, 0)
        frozen = {**params["frozen"], "scatter": jnp.sqrt(s2).astype(jnp.float32)}
        return {**params, "frozen": frozen}

    def loss(params, batch, key):
        if "x_err" not in batch:
            raise ValueError("payne: the training batch needs x_err (the loss is a χ²)")
        per_star, counts = emulator_chi2(params["emulator"], batch)
        return jnp.mean(per_star), {"chi2_pixel": (jnp.sum(per_star)
                                                   / jnp.maximum(jnp.sum(counts), 1))}

    def apply(params, x, key=None, train=False, x_err=None):
        frozen, emulator = params["frozen"], params["emulator"]
        x = jnp.asarray(x, jnp.float32)
        flux_var = (jnp.broadcast_to(frozen["flux_var"], x.shape) if x_err is None
                    else jnp.square(jnp.asarray(x_err, x.dtype)))
        w_noise = solver.inverse_variance(flux_var, 0.0)
        w_total = solver.inverse_variance(flux_var, frozen["scatter"])
        x = jnp.where(w_total > 0, x, 0.0)
        proto_flux = emulate(emulator, frozen["prototypes"])                   # (J, P)
        proto_chi2 = (jnp.square(proto_flux) @ w_total.T
                      - 2.0 * proto_flux @ (w_total * x).T)                    # (J, B), + const
        best = frozen["prototypes"][jnp.argmin(proto_chi2, axis=0)]            # (B, K)
        starts = jnp.stack([jnp.zeros_like(best), best], axis=1)               # (B, 2, K)
        flux_fn = lambda labels: emulate(emulator, labels)  # noqa: E731
        options = dict(n_iter=n_iter, n_polish=n_polish, lower=frozen["lower"],
                       upper=frozen["upper"], prior_prec=prior_prec)

        theta, features = readout(emulator)
        typical = typical_gram_blocks(
            theta, solver.inverse_variance(frozen["flux_var"], frozen["scatter"]))

        def solve(args):
            xs, wt, ss = args
            gram = star_gram(typical, wt)
            objective = solver.readout_objective(theta, gram, features, xs, wt, prior_prec)
            return solver.solve_star(
                flux_fn, xs, wt, ss, objective=objective, **options,
                polish_objective=lambda terms: solver.readout_objective(
                    theta, gram, features, xs, wt, prior_prec, h=terms[1]))

        def summarize(args):
            labels, xs, wt, wn = args
            a, f = solver.flux_jacobian(flux_fn, labels)
            fit = solver.fit_summary(solver.flux_terms(a, f, labels, xs, wt, prior_prec), labels,
                                     lower=options["lower"], upper=options["upper"],
                                     prior_prec=prior_prec)
            h_noise = solver.flux_terms(a, f, labels, xs, wn, prior_prec)[1]
            var_total = jnp.diagonal(fit["covariance"])
            var_model = jnp.minimum(jnp.diagonal(solver.covariance(h_noise)), var_total)
            n_pix = jnp.sum(wt > 0)
            return {"log_var_model": jnp.log(var_model),
                    "log_var": jnp.log(jnp.maximum(var_total - var_model, MIN_LABEL_VARIANCE)),
                    "chi2": fit["chi2"], "converged": fit["converged"],
                    "chi2_red": fit["chi2"] / jnp.maximum(n_pix - n_outputs, 1)}

        value = lax.map(solve, (x, w_total, starts), batch_size=min(star_chunk, x.shape[0]))
        summary = lax.map(summarize, (lax.stop_gradient(value), x, w_total, w_noise),
                          batch_size=min(SUMMARY_CHUNK, x.shape[0]))
        return {"value": value, **summary}

    return Model(init=init, apply=apply, loss=loss, stochastic=False, input_norm="mean",
                 init_data=init_data, finish=finish)
