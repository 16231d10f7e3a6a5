"""The Cannon: training recovers a known quadratic model and its scatter, the test step recovers
labels within their formal errors, implicit derivatives, uninformative labels, missing labels,
masked pixels, the training loop, L1 regularisation and hyper-parameter checks."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.stats import mad_std

from stargrad import models, train
from stargrad.models import cannon
from stargrad.params_io import load_params, save_params

N_PIXELS, N_LABELS, N_TRAIN = 24, 3, 500
N_TERMS = cannon.n_terms(N_LABELS, 2)
MODEL = models.build("cannon", n_inputs=N_PIXELS, n_outputs=N_LABELS)
#: the default model's test step, compiled once for CHUNK stars (with and without x_err)
CHUNK = 64
APPLY = jax.jit(lambda params, x, x_err: MODEL.apply(params, x, x_err=x_err))


def true_model(seed=0, dead_label=None):
    """A quadratic model (θ (P, T), scatter s (P,)); a `dead_label` has no coefficient."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.04, (N_PIXELS, N_TERMS))
    theta[:, 0] = rng.normal(0.0, 0.1, N_PIXELS)
    theta[:, 1:1 + N_LABELS] *= 2.0                    # linear terms dominate, as in spectra
    if dead_label is not None:
        j, k = np.triu_indices(N_LABELS)
        dead = np.concatenate([[False], np.arange(N_LABELS) == dead_label,
                               (j == dead_label) | (k == dead_label)])
        theta[:, dead] = 0.0
    scatter = np.where(rng.random(N_PIXELS) < 0.25, 0.0, rng.uniform(0.002, 0.02, N_PIXELS))
    return theta, scatter


def draw(theta, scatter, n, seed):
    """Batch of n stars from a model: standardized labels, flux, per-star flux errors."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, N_LABELS))
    sigma = rng.uniform(0.005, 0.02, (n, 1)) * np.ones((1, N_PIXELS))
    flux = cannon.label_vector(y, 2) @ theta.T
    x = flux + rng.normal(size=flux.shape) * np.sqrt(sigma ** 2 + scatter ** 2)
    return {"x": x.astype(np.float32), "y": y.astype(np.float32),
            "y_err": np.zeros_like(y, np.float32), "valid": np.ones_like(y, bool),
            "x_err": sigma.astype(np.float32)}


@pytest.fixture(scope="module")
def truth():
    return true_model()


@pytest.fixture(scope="module")
def trained(truth):
    """(training batch, params) of the default model."""
    batch = draw(*truth, N_TRAIN, seed=1)
    return batch, MODEL.fit(batch, None, jax.random.key(0))


def outputs(params, x, x_err=None):
    """The default model's outputs for any number of stars, CHUNK (zero-padded) at a time."""
    n = len(x)
    pad = -n % CHUNK
    x = np.concatenate([x, np.zeros((pad, N_PIXELS), np.float32)])
    if x_err is not None:
        x_err = np.concatenate([x_err, np.ones((pad, N_PIXELS), np.float32)])
    parts = [APPLY(params, x[i:i + CHUNK], None if x_err is None else x_err[i:i + CHUNK])
             for i in range(0, len(x), CHUNK)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts])[:n] for k in parts[0]}


@functools.lru_cache(maxsize=None)
def jacobian_fn(model):
    """Jitted per-star Jacobians d value / d x (B, K, P) of `model`, given params and x_err."""
    def value(params, xs, es):
        return model.apply(params, xs[None], x_err=es[None])["value"][0]
    return jax.jit(jax.vmap(jax.jacrev(value, argnums=1), in_axes=(None, 0, 0)))


# ---------------------------------------------------------------- training step

def test_training_recovers_coefficients_and_scatter(truth, trained):
    theta, scatter = truth
    batch, params = trained
    v = cannon.label_vector(batch["y"].astype(np.float64), 2)
    var = batch["x_err"].astype(np.float64) ** 2 + scatter ** 2
    z = []
    for p in range(N_PIXELS):       # coefficient errors in units of their standard errors
        cov = np.linalg.inv(v.T @ (v / var[:, p:p + 1]))
        z.append((np.asarray(params["theta"])[p] - theta[p]) / np.sqrt(np.diag(cov)))
    z = np.concatenate(z)
    assert np.max(np.abs(z)) < 5.0
    assert 0.75 < np.sqrt(np.mean(z ** 2)) < 1.35
    # s² has sampling std ≈ sqrt(2/N) (σ² + s²) about its maximum-likelihood value
    fitted = np.asarray(params["scatter"], np.float64)
    tolerance = 4.0 * np.sqrt(2.0 / N_TRAIN) * var.mean(axis=0)
    assert np.all(np.abs(fitted ** 2 - scatter ** 2) < tolerance)
    assert np.all(np.abs(fitted - scatter)[scatter > 0.01] < 0.15 * scatter[scatter > 0.01])


def test_test_step_recovers_labels_within_formal_errors(truth, trained):
    _, params = trained
    test = draw(*truth, 300, seed=2)
    out = outputs(params, test["x"], test["x_err"])
    z = (out["value"] - test["y"]) / np.exp(0.5 * out["log_var"])
    spread = mad_std(z, axis=0)
    assert np.all((spread > 0.8) & (spread < 1.25)), spread
    assert 0.9 < np.median(out["chi2_red"]) < 1.15
    # a star whose labels lie far outside the training distribution (4-5 sigma) is still found
    far = dict(test, y=np.array([[4.0, -4.5, 3.5]], np.float32))
    far["x"] = (cannon.label_vector(far["y"].astype(np.float64), 2) @ truth[0].T
                ).astype(np.float32)
    far["x_err"] = np.full((1, N_PIXELS), 0.01, np.float32)
    np.testing.assert_allclose(outputs(params, far["x"], far["x_err"])["value"], far["y"],
                               atol=0.05)


def test_implicit_jacobian_equals_unrolled_and_efficient_estimator(truth, trained):
    _, params = trained
    test = draw(*truth, 3, seed=3)
    unrolled = models.build("cannon", n_inputs=N_PIXELS, n_outputs=N_LABELS, implicit=False,
                            n_iter=10, n_polish=6)

    def jacobians(model, x, x_err):
        return np.asarray(jacobian_fn(model)(params, x, x_err))

    implicit = jacobians(MODEL, test["x"], test["x_err"])
    scale = np.abs(implicit).max()
    np.testing.assert_allclose(implicit, jacobians(unrolled, test["x"], test["x_err"]),
                               atol=2e-3 * scale)
    # at zero residual the derivative is the efficient estimator (AᵀC⁻¹A + I/τ²)⁻¹AᵀC⁻¹
    fitted = np.asarray(params["theta"], np.float64)
    labels = test["y"].astype(np.float64)
    exact = (cannon.label_vector(labels, 2) @ fitted.T).astype(np.float32)
    jac = jacobians(MODEL, exact, test["x_err"])
    poly = cannon.polynomial(jnp.asarray(fitted), N_LABELS, 2)
    s2 = np.asarray(params["scatter"], np.float64) ** 2
    for i in range(len(labels)):
        a = np.asarray(cannon.flux_and_gradient(poly, jnp.asarray(labels[i]))[1])
        w = 1.0 / (test["x_err"][i].astype(np.float64) ** 2 + s2)
        fisher = a.T @ (a * w[:, None]) + np.eye(N_LABELS) / 10.0 ** 2
        efficient = np.linalg.solve(fisher, a.T * w)
        np.testing.assert_allclose(jac[i], efficient, atol=2e-3 * np.abs(efficient).max())


def test_label_without_spectral_signature_gets_a_large_error():
    theta, scatter = true_model(seed=4, dead_label=2)
    params = MODEL.fit(draw(theta, scatter, N_TRAIN, seed=5), None, None)
    test = draw(theta, scatter, 50, seed=6)
    out = outputs(params, test["x"], test["x_err"])
    std = np.exp(0.5 * out["log_var"])
    # of the order of the training spread (1), from the coefficients' noise alone
    assert np.all(std[:, 2] > 0.5) and np.all(std[:, :2] < 0.1)
    z = (out["value"][:, 2] - test["y"][:, 2]) / std[:, 2]
    assert np.max(np.abs(z)) < 5.0 and np.median(np.abs(z)) < 1.5      # not confidently wrong


# ---------------------------------------------------------------- missing labels, masks

def test_missing_labels_are_inferred_and_refitted(truth, trained):
    batch, params_complete = trained
    rng = np.random.default_rng(7)
    valid = np.ones_like(batch["valid"])
    missing_rows = rng.choice(N_TRAIN, 100, replace=False)
    valid[missing_rows, rng.integers(0, N_LABELS, 100)] = False
    gappy = dict(batch, valid=valid, y=np.where(valid, batch["y"], 0.0).astype(np.float32))
    hyper = dict(n_iter=8, n_polish=4)
    params, labels = cannon.train_cannon(gappy, **hyper)
    junk, labels_junk = cannon.train_cannon(dict(gappy, y=np.where(valid, gappy["y"], 1e3)),
                                            **hyper)
    for name in params:                      # what missing entries hold never matters
        np.testing.assert_array_equal(np.asarray(params[name]), np.asarray(junk[name]))
    np.testing.assert_array_equal(labels, labels_junk)
    # inferred labels are close to the truth (formal errors of these spectra are ~0.01-0.05),
    # known ones are untouched, and the refit on every star matches the complete-label fit
    np.testing.assert_array_equal(labels[valid], batch["y"][valid].astype(np.float64))
    assert np.max(np.abs(labels[~valid] - batch["y"][~valid])) < 0.25
    assert np.median(np.abs(labels[~valid] - batch["y"][~valid])) < 0.05
    np.testing.assert_allclose(params["theta"], params_complete["theta"], atol=5e-3)
    dropped, used = cannon.train_cannon(gappy, missing_labels="drop", **hyper)
    assert len(used) == int(valid.all(axis=1).sum())


def test_masked_pixels_do_not_influence_fit_or_test_step(truth, trained):
    batch, _ = trained
    rng = np.random.default_rng(8)
    masked = rng.random(batch["x"].shape) < 0.1
    masked[:, 0] = True                              # one pixel with no training data at all
    x_err = np.where(masked, np.inf, batch["x_err"]).astype(np.float32)
    fits = [MODEL.fit(dict(batch, x=np.where(masked, junk, batch["x"]).astype(np.float32),
                           x_err=x_err), None, None) for junk in (0.0, 7.5)]
    for name in fits[0]:
        np.testing.assert_array_equal(np.asarray(fits[0][name]), np.asarray(fits[1][name]))
    assert np.isinf(np.asarray(fits[0]["scatter"])[0])        # unlearnable: weight 0 at test
    # pixel_valid False masks like an infinite error
    by_flag = MODEL.fit(dict(batch, pixel_valid=~masked), None, None)
    by_error = MODEL.fit(dict(batch, x_err=x_err), None, None)
    np.testing.assert_allclose(by_flag["theta"], by_error["theta"], rtol=1e-6, atol=1e-7)

    params = fits[0]
    test = draw(*truth, 3, seed=9)
    test_mask = rng.random(test["x"].shape) < 0.2
    test_err = np.where(test_mask, np.inf, test["x_err"]).astype(np.float32)
    values = [outputs(params, np.where(test_mask, junk, test["x"]).astype(np.float32),
                      test_err)["value"] for junk in (0.0, -3.0)]
    np.testing.assert_array_equal(values[0], values[1])
    jac = np.asarray(jacobian_fn(MODEL)(params, test["x"], test_err))
    assert np.all(jac.transpose(0, 2, 1)[test_mask] == 0.0)
    assert np.all(jac[:, :, 0] == 0.0)


def test_apply_without_flux_errors_uses_the_training_median(trained):
    batch, params = trained
    out = outputs(params, batch["x"][:20])
    typical = np.broadcast_to(np.median(batch["x_err"] ** 2, axis=0), (20, N_PIXELS))
    ref = outputs(params, batch["x"][:20], np.sqrt(typical).astype(np.float32))
    np.testing.assert_allclose(out["value"], ref["value"], atol=1e-4)   # formal σ ~ 0.03


# ---------------------------------------------------------------- training loop, params

def test_train_fit_end_to_end_and_params_roundtrip(truth, trained, tmp_path):
    batch = {k: v[:7 * 64] for k, v in trained[0].items()}   # whole batches of 64: 2 compiles
    valid_batch = draw(*truth, 64, seed=10)
    valid_batch["x_err"][:, 3] = np.inf
    params, history = train.fit(MODEL, batch, valid_batch, train.TrainConfig(),
                                jax.random.key(0), log=lambda _: None)
    assert len(history) == 1
    row = history.iloc[0]
    assert row["valid_loss"] == pytest.approx(row["valid_mse"])
    assert row["valid_loss"] < 0.01                   # labels to ~0.1 of the training spread
    assert 0.8 < row["valid_chi2_red"] < 1.2 and 0.8 < row["train_chi2_red_catalogue"] < 1.2
    save_params(tmp_path / "params.npz", params)
    loaded = jax.tree.map(jnp.asarray, load_params(tmp_path / "params.npz"))
    x = valid_batch["x"][:4]
    np.testing.assert_array_equal(outputs(params, x)["value"], outputs(loaded, x)["value"])


def test_check_batch_accepts_infinite_flux_errors_only():
    base = {"x": np.zeros((2, 3), np.float32), "y": np.zeros((2, 1), np.float32),
            "y_err": np.zeros((2, 1), np.float32), "valid": np.ones((2, 1), bool)}
    ok = train._check_batch("train", dict(base, x_err=np.array([[1.0, np.inf, 0.1]] * 2)))
    assert ok["x_err"].dtype == np.float32
    for bad in (np.nan, -np.inf):
        with pytest.raises(ValueError, match="x_err.*NaN/-inf"):
            train._check_batch("train", dict(base, x_err=np.array([[1.0, bad, 0.1]] * 2)))
    with pytest.raises(ValueError, match="NaN/inf"):
        train._check_batch("train", dict(base, x=np.full((2, 3), np.inf, np.float32)))
    with pytest.raises(ValueError, match="x_err"):
        train._check_batch("train", dict(base, x_err=np.ones((2, 4), np.float32)))


# ---------------------------------------------------------------- L1, order 1, hyper-parameters

def test_l1_solution_satisfies_the_lasso_optimality_conditions(truth):
    batch = draw(*truth, 200, seed=11)
    l1 = 200.0
    theta, _ = cannon.fit_pixels(batch["y"].astype(np.float64), jnp.asarray(batch["x"].T),
                                 jnp.asarray(batch["x_err"].T ** 2), order=2, scatter=False,
                                 scatter_iter=0, l1=l1, l1_iter=3000)
    v = cannon.label_vector(batch["y"].astype(np.float64), 2)
    w = 1.0 / batch["x_err"].astype(np.float64) ** 2
    grad = -(v * w[:, :1]).T @ (batch["x"] - v @ theta.T)   # ∇½χ², (T, P); σ same per star
    active = np.abs(theta.T) > 1e-6
    scale = l1
    assert np.all(np.abs(grad[0]) < 1e-3 * np.abs(v.T * w[:, 0]).sum())   # intercept free
    on = active[1:]
    np.testing.assert_allclose(grad[1:][on], -l1 * np.sign(theta.T[1:][on]), atol=0.02 * scale)
    assert np.all(np.abs(grad[1:][~on]) <= l1 * 1.02)
    assert 0 < (~on).sum()                   # the penalty zeroes some coefficients
    more, _ = cannon.fit_pixels(batch["y"].astype(np.float64), jnp.asarray(batch["x"].T),
                                jnp.asarray(batch["x_err"].T ** 2), order=2, scatter=False,
                                scatter_iter=0, l1=20 * l1, l1_iter=3000)
    assert (np.abs(more[:, 1:]) < 1e-6).sum() > (~on).sum()


def test_order_one_model_recovers_linear_labels():
    rng = np.random.default_rng(12)
    theta = rng.normal(0.0, 0.05, (N_PIXELS, 1 + N_LABELS))
    y = rng.normal(size=(400, N_LABELS))
    x = cannon.label_vector(y, 1) @ theta.T + 0.01 * rng.normal(size=(400, N_PIXELS))
    batch = {"x": x.astype(np.float32), "y": y.astype(np.float32),
             "y_err": np.zeros_like(y, np.float32), "valid": np.ones_like(y, bool),
             "x_err": np.full(x.shape, 0.01, np.float32)}
    model = models.build("cannon", n_inputs=N_PIXELS, n_outputs=N_LABELS, order=1)
    params = model.fit(batch, None, None)
    np.testing.assert_allclose(params["theta"], theta, atol=5e-3)
    out = model.apply(params, batch["x"][:50], x_err=batch["x_err"][:50])
    z = (np.asarray(out["value"]) - y[:50]) / np.exp(0.5 * np.asarray(out["log_var"]))
    assert np.all(np.abs(z) < 5)


@pytest.mark.parametrize("name, value", [
    ("order", 3), ("order", True), ("l1", -1.0), ("l1", float("nan")), ("scatter", "yes"),
    ("scatter_iter", -1), ("missing_labels", "impute"), ("n_iter", 0), ("n_polish", 2.5),
    ("n_prototypes", 0), ("prior_std", 0.0), ("prior_std", float("inf")), ("implicit", 1),
    ("l1_iter", 0), ("pixel_chunk", 0), ("star_chunk", -3), ("n_outputs", 0)])
def test_bad_hyper_parameters_raise_naming_them(name, value):
    hyper = {"n_inputs": N_PIXELS, "n_outputs": N_LABELS, name: value}
    with pytest.raises(ValueError, match=f"cannon: {name} must be"):
        models.build("cannon", **hyper)


def test_classification_and_unusable_training_sets_are_refused(trained):
    with pytest.raises(ValueError, match="regression"):
        models.build("cannon", n_inputs=N_PIXELS, n_outputs=1, kind="classification")
    assert models.traits("cannon") == models.Traits(uses_flux_errors=True)
    batch, _ = trained
    with pytest.raises(ValueError, match="every label"):
        MODEL.fit(dict(batch, valid=np.zeros_like(batch["valid"])), None, None)
    no_errors = {k: v for k, v in batch.items() if k != "x_err"}
    no_scatter = models.build("cannon", n_inputs=N_PIXELS, n_outputs=N_LABELS, scatter=False)
    with pytest.raises(ValueError, match="scatter=False needs flux errors"):
        no_scatter.fit(no_errors, None, None)
    with pytest.raises(ValueError, match="pixels"):
        MODEL.fit(dict(batch, x=batch["x"][:, :5]), None, None)
