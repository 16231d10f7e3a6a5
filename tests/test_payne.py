"""The Payne: the emulator's χ² loss by hand, masked pixels and missing labels, gradients against
finite differences, training through the shared loop recovers a known emulator and its labels
within their formal errors, the implicit Jacobian is the efficient estimator, non-convergence is
flagged, parameters round-trip, hyper-parameters are checked."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.stats import mad_std

from stargrad import models, train
from stargrad.models import payne
from stargrad.params_io import load_params, save_params

N_PIXELS, N_LABELS = 30, 3
HYPER = dict(hidden=[16], n_prototypes=16, star_chunk=32)
MODEL = models.build("payne", n_inputs=N_PIXELS, n_outputs=N_LABELS, **HYPER)
TEACHER = MODEL.init(jax.random.key(7))["emulator"]
TEACHER["out"]["w"] = TEACHER["out"]["w"] * 3.0         # lines of a few per cent


def draw(n, seed, noise=(0.005, 0.02)):
    """A batch of n stars from the teacher emulator: labels, flux, per-star flux errors."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, N_LABELS)).astype(np.float32)
    sigma = (rng.uniform(*noise, (n, 1)) * np.ones((1, N_PIXELS))).astype(np.float32)
    flux = np.asarray(payne.emulate(TEACHER, jnp.asarray(y)))
    x = (flux + rng.normal(size=flux.shape) * sigma).astype(np.float32)
    return {"x": x, "y": y, "y_err": np.zeros_like(y), "valid": np.ones_like(y, bool),
            "x_err": sigma, "pixel_valid": np.ones_like(x, bool)}


@pytest.fixture(scope="module")
def trained():
    train_batch, valid_batch = draw(600, seed=1), draw(200, seed=2)
    cfg = train.TrainConfig(learning_rate=0.01, batch_size=50, max_epochs=300,
                            early_stopping_patience=30, plateau_patience=10)
    params, history = train.fit(MODEL, train_batch, valid_batch, cfg, jax.random.key(0),
                                log=lambda *_: None)
    return params, history


def test_loss_is_the_chi2_per_unmasked_pixel_of_complete_stars():
    params = MODEL.init(jax.random.key(1))
    batch = draw(4, seed=3)
    batch["x_err"][0, :5] = np.inf                         # masked by the error
    batch["pixel_valid"][1, 3] = False                     # masked by the flag
    batch["valid"][2, 1] = False                           # a missing label: star left out
    pred = np.asarray(payne.emulate(params["emulator"], jnp.asarray(batch["y"])), np.float64)
    expected = []
    for i in range(4):
        w = 1.0 / batch["x_err"][i].astype(np.float64) ** 2
        w[~batch["pixel_valid"][i]] = 0.0
        r = batch["x"][i] - pred[i]
        expected.append(0.0 if i == 2 else np.sum(w * r * r) / np.sum(w > 0))
    value, metrics = MODEL.loss(params, batch, None)
    np.testing.assert_allclose(float(value), np.mean(expected), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["chi2_pixel"]), np.sum(expected) / 3, rtol=1e-5)


def test_masked_pixels_and_missing_labels_change_nothing():
    params = MODEL.init(jax.random.key(2))
    batch = draw(5, seed=4)
    batch["x_err"][0, :4] = np.inf
    batch["pixel_valid"][1, 7] = False
    batch["valid"][3, 0] = False
    grad = jax.grad(lambda p, b: MODEL.loss(p, b, None)[0])
    edited = {k: v.copy() for k, v in batch.items()}
    edited["x"][0, :4] = 1e3                               # masked pixels hold anything
    edited["x"][1, 7] = -1e3
    edited["y"][3] = [50.0, -50.0, 1e3]                    # a star with a missing label
    edited["x"][3] = 7.0
    assert float(MODEL.loss(params, batch, None)[0]) == float(MODEL.loss(params, edited, None)[0])
    for a, b in zip(jax.tree.leaves(grad(params, batch)), jax.tree.leaves(grad(params, edited))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_loss_gradient_matches_finite_differences():
    batch = draw(6, seed=5)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                              MODEL.init(jax.random.key(3)))
        loss = lambda w: MODEL.loss(  # noqa: E731
            {**params, "emulator": {**params["emulator"], "hidden": [
                {**params["emulator"]["hidden"][0], "w": w}]}}, batch, None)[0]
        w0 = params["emulator"]["hidden"][0]["w"]
        g = jax.grad(loss)(w0)
        eps = 1e-6
        for i, j in [(0, 0), (2, 5), (1, 11)]:
            fd = (loss(w0.at[i, j].add(eps)) - loss(w0.at[i, j].add(-eps))) / (2 * eps)
            np.testing.assert_allclose(g[i, j], fd, rtol=1e-5, atol=1e-9)


def test_training_recovers_the_emulator_and_labels_within_formal_errors(trained):
    params, history = trained
    assert history["valid_chi2_pixel"].min() < 1.3             # noise-limited emulator
    assert np.all(np.isfinite(np.asarray(params["frozen"]["scatter"])))
    test = draw(200, seed=6)
    out = jax.jit(lambda p, x, e: MODEL.apply(p, x, x_err=e))(params, test["x"], test["x_err"])
    assert np.all(np.asarray(out["converged"]))
    std = np.sqrt(np.exp(out["log_var"]) + np.exp(out["log_var_model"]))
    z = (np.asarray(out["value"]) - test["y"]) / std
    inside = np.all((test["y"] > params["frozen"]["lower"]) & (test["y"] < params["frozen"]["upper"]), axis=1)
    spread = mad_std(z[inside], axis=0)
    assert np.all((spread > 0.75) & (spread < 1.3)), spread
    assert 0.8 < np.median(np.asarray(out["chi2_red"])) < 1.3
    assert np.all(np.asarray(out["value"]) >= np.asarray(params["frozen"]["lower"]) - 1e-6)


def test_implicit_jacobian_is_the_efficient_estimator_at_zero_residual(trained):
    params, _ = trained
    labels = draw(2, seed=7)["y"] * 0.5
    x = np.asarray(payne.emulate(params["emulator"], jnp.asarray(labels)))
    x_err = np.full_like(x, 0.01)

    def value(xs, es):
        return MODEL.apply(params, xs[None], x_err=es[None])["value"][0]

    jac = np.asarray(jax.jit(jax.vmap(jax.jacrev(value)))(x, x_err))
    s2 = np.asarray(params["frozen"]["scatter"], np.float64) ** 2
    for i in range(2):
        a = np.asarray(jax.jacfwd(lambda t: payne.emulate(params["emulator"], t))(
            jnp.asarray(labels[i])), np.float64)
        w = 1.0 / (0.01 ** 2 + s2)
        efficient = np.linalg.solve(a.T @ (a * w[:, None]) + np.eye(N_LABELS) / 100.0, a.T * w)
        np.testing.assert_allclose(jac[i], efficient, atol=2e-3 * np.abs(efficient).max())


def test_a_star_that_does_not_converge_is_flagged(trained):
    params, _ = trained
    short = models.build("payne", n_inputs=N_PIXELS, n_outputs=N_LABELS,
                         **{**HYPER, "n_iter": 1, "n_polish": 0})
    test = draw(8, seed=8, noise=(1e-4, 2e-4))
    out = short.apply(params, test["x"], x_err=test["x_err"])
    assert not np.all(np.asarray(out["converged"]))
    assert np.all(np.isfinite(np.asarray(out["value"])))


def test_params_round_trip_and_apply_without_flux_errors(trained, tmp_path):
    params, _ = trained
    save_params(tmp_path / "p.npz", params)
    back = jax.tree.map(jnp.asarray, load_params(tmp_path / "p.npz"))
    test = draw(4, seed=9)
    a = MODEL.apply(params, test["x"], x_err=test["x_err"])["value"]
    np.testing.assert_array_equal(np.asarray(a),
                                  np.asarray(MODEL.apply(back, test["x"], x_err=test["x_err"])["value"]))
    without = MODEL.apply(params, test["x"])                      # the training median σ
    np.testing.assert_allclose(np.asarray(without["value"]), test["y"], atol=0.5)


@pytest.mark.parametrize("name, value", [("hidden", [0]), ("n_iter", 0), ("n_polish", -1),
                                         ("n_prototypes", 1.5),
                                         ("bound_margin", -0.1), ("prior_std", 0.0),
                                         ("star_chunk", True)])
def test_bad_hyper_parameters_raise_naming_them(name, value):
    with pytest.raises(ValueError, match=name):
        models.build("payne", n_inputs=N_PIXELS, n_outputs=N_LABELS, **{name: value})


def test_classification_and_label_free_training_sets_are_refused():
    with pytest.raises(ValueError, match="regression"):
        models.build("payne", n_inputs=N_PIXELS, n_outputs=1, kind="classification")
    batch = draw(5, seed=10)
    batch["valid"][:, 0] = False
    with pytest.raises(ValueError, match="every label"):
        MODEL.init_data(batch, jax.random.key(0))
