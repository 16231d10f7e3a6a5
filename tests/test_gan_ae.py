"""The plain autoencoder (models/ae.py) against PCA, and the GAN (models/gan.py) in the shared
training loop: each player's gradient is its own loss's, the losses move, a checkpointed run
resumes to the same bytes, bad hyper-parameters are named."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stargrad.generative import analysis as generative
from stargrad import train as training
from stargrad.models import build, gan
from stargrad.params_io import save_params

P = 48
LABELS = ("teff", "logg", "Fe")


def _spectra(seed: int, n: int):
    """(spectra (n, P), labels (n, 3)): two lines whose shift and depth follow the labels
    nonlinearly (a curved 2-parameter manifold PCA needs more components for)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1.0, 1.0, (n, 3))
    centre = np.array([14.0, 32.0])[None, :] + 3.0 * t[:, :1]
    depth = (0.3 + 0.15 * t[:, 1:2])[:, :, None]
    prof = np.exp(-0.5 * ((np.arange(P)[None, None] - centre[:, :, None]) / 2.0) ** 2)
    flux = 1.0 - (depth * prof).sum(axis=1) + 0.005 * rng.standard_normal((n, P))
    return flux.astype(np.float32), t.astype(np.float32)


def _batch(seed: int, n: int, mean=None, scale=None):
    flux, labels = _spectra(seed, n)
    mean = flux.mean(0) if mean is None else mean
    scale = flux.std() if scale is None else scale
    return {"x": ((flux - mean) / scale).astype(np.float32), "y": labels,
            "y_err": np.zeros_like(labels), "valid": np.ones(labels.shape, bool),
            "pixel_valid": np.ones((n, P), bool)}, mean, scale


@pytest.fixture(scope="module")
def splits():
    train, mean, scale = _batch(0, 256)
    return train, _batch(1, 64, mean, scale)[0], _batch(2, 128, mean, scale)[0]


QUIET = dict(log=lambda _: None)


# ---------------------------------------------------------------------------- autoencoder

def test_untrained_ae_is_pca_and_training_lowers_its_error_below_pca(splits):
    train, valid, test = splits
    ae = build("ae", n_inputs=P, n_outputs=3, latent_dim=2, basis=12, num_hidden=(32, 16))
    pca = build("pca", n_inputs=P, n_outputs=3, n_components=2)
    pca_params = pca.fit(train, valid, jax.random.key(0))
    pca_err = generative.reconstruction_error(pca, pca_params, test["x"])
    start = ae.init_data(train, jax.random.key(0))
    assert "log_var" not in start["encoder"]        # no sampling: no log σ² head
    np.testing.assert_allclose(generative.reconstruction_error(ae, start, test["x"]), pca_err,
                               rtol=1e-3, atol=1e-7)
    cfg = training.TrainConfig(learning_rate=3e-3, batch_size=32, max_epochs=40,
                               early_stopping_patience=None)
    params, history = training.fit(ae, train, valid, cfg, jax.random.key(0), **QUIET)
    assert set(history.columns) >= {"train_recon", "valid_recon"}
    assert "train_kl" not in history.columns
    ae_err = generative.reconstruction_error(ae, params, test["x"])
    assert ae_err.mean() < 0.8 * pca_err.mean()
    assert generative.latent_dim_of(params) == 2
    # deterministic: a key changes nothing
    x = jnp.asarray(test["x"][:4])
    np.testing.assert_array_equal(ae.apply(params, x)["value"],
                                  ae.apply(params, x, key=jax.random.key(5))["value"])


@pytest.mark.parametrize("hyper,message", [
    ({"basis": 0}, "ae: basis must be a positive integer"),
    ({"basis": 4, "latent_dim": 6}, r"ae: basis must be an integer in \[latent_dim, n_inputs\]"),
    ({"basis": 8, "num_hidden": [16, 0]}, "ae: num_hidden must be positive integers"),
    ({"basis": 8, "input_norm": "log"}, "ae: input_norm"),
])
def test_ae_names_bad_hyper_parameters(hyper, message):
    with pytest.raises(ValueError, match=message):
        build("ae", n_inputs=P, n_outputs=3, **hyper)


# ---------------------------------------------------------------------------- GAN

def _gan(**hyper):
    spec = dict(labels=LABELS, basis=8, noise_dim=4, generator_hidden=(16,),
                discriminator_hidden=(16,), fd_components=4)
    return build("gan", n_inputs=P, n_outputs=3, **{**spec, **hyper})


@pytest.mark.parametrize("moment_weight", [0.0, 1.0])
def test_each_player_gets_exactly_the_gradient_of_its_own_loss(splits, moment_weight):
    train = {k: jnp.asarray(v[:32]) for k, v in splits[0].items()}
    model = _gan(moment_weight=moment_weight)
    params = model.init_data(splits[0], jax.random.key(0))
    key = jax.random.key(1)
    total = jax.grad(lambda p: model.loss(p, train, key)[0])(params)
    own = {player: jax.grad(lambda p: model.loss(p, train, key)[1][f"{player[0]}_loss"])(params)
           for player in ("discriminator", "generator")}
    for player in ("discriminator", "generator"):
        for a, b in zip(jax.tree.leaves(total[player]), jax.tree.leaves(own[player][player])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # the generator's loss does not move the discriminator, nor the discriminator's the generator
    other = {"discriminator": "generator", "generator": "discriminator"}
    for player, grads in own.items():
        assert all(not np.any(g) for g in jax.tree.leaves(grads[other[player]]))
    assert all(not np.any(g) for g in jax.tree.leaves(total["frozen"]))


def test_moment_mismatch_pulls_the_spread_towards_the_real_one_without_shrinking_it():
    """Fakes drawn from the real distribution with one dimension scaled by s: the expected
    mismatch's slope in s at s = 1 is 0 (its gradient is unbiased), while the plain squared
    difference of one fake batch's covariance to the real one's slopes upwards there (≈ 4(K + 1)/n:
    it pulls the samples' spread below the real one's). A mean shifted by 1 adds 1."""
    n, k, draws = 64, 6, 400
    keys = jax.random.split(jax.random.key(0), draws)
    weights = jnp.ones(n)

    def mismatch(key, scale, shift=0.0):
        """(moment_mismatch, plain squared covariance difference) of one draw."""
        real, fake, twin = jax.random.normal(key, (3, n, k))
        moved = lambda a: a.at[:, 0].multiply(scale).at[:, 0].add(shift)  # noqa: E731
        _, c_r = gan.weighted_moments(real, weights)
        _, c_f = gan.weighted_moments(moved(fake), weights)
        return (gan.moment_mismatch(real, moved(fake), moved(twin), weights),
                jnp.sum((c_f - c_r) ** 2))

    def per_draw(scale, shift=0.0):
        return jax.vmap(lambda key: mismatch(key, scale, shift))(keys)

    slope_ours = jax.vmap(jax.grad(lambda s, key: mismatch(key, s)[0]), (None, 0))(1.0, keys)
    slope_naive = jax.grad(lambda s: per_draw(s)[1].mean())(1.0)
    assert abs(float(slope_ours.mean())) < 4 * float(slope_ours.std()) / draws ** 0.5
    assert float(slope_naive) == pytest.approx(4 * (k + 1) / n, rel=0.25)
    shift = per_draw(1.0, 1.0)[0] - per_draw(1.0)[0]
    assert float(shift.mean()) == pytest.approx(1.0, abs=4 * float(shift.std()) / draws ** 0.5)


@pytest.mark.parametrize("moment_weight", [0.0, 1.0])
def test_tiny_gan_losses_move_and_its_checkpoint_resumes_to_the_same_bytes(splits, tmp_path,
                                                                           moment_weight):
    train, valid, _ = splits
    model = _gan(moment_weight=moment_weight)
    cfg = training.TrainConfig(learning_rate=2e-3, batch_size=32, max_epochs=6,
                               early_stopping_patience=None)
    params, history = training.fit(model, train, valid, cfg, jax.random.key(0), **QUIET)
    assert {"train_d_loss", "train_g_loss", "valid_d_loss", "valid_g_loss",
            "valid_frechet"} <= set(history.columns)
    np.testing.assert_allclose(history["valid_loss"], history["valid_frechet"], rtol=1e-6)
    for column in ("train_d_loss", "train_g_loss"):
        assert np.all(np.isfinite(history[column]))
        assert np.ptp(history[column]) > 1e-3, history[column]
    # the generator improved on its random start: samples nearer the validation spectra
    assert history["valid_frechet"].min() < history["valid_frechet"].iat[0]

    ckpt = tmp_path / "ckpt"
    first = training.TrainConfig(**{**cfg.to_dict(), "max_epochs": 3})
    training.fit(model, train, valid, first, jax.random.key(0), checkpoint_dir=ckpt, **QUIET)
    lines = []
    resumed, resumed_history = training.fit(model, train, valid, cfg, jax.random.key(0),
                                            checkpoint_dir=ckpt, log=lines.append)
    assert any("resuming from" in line for line in lines)
    save_params(tmp_path / "straight.npz", params)
    save_params(tmp_path / "resumed.npz", resumed)
    assert (tmp_path / "straight.npz").read_bytes() == (tmp_path / "resumed.npz").read_bytes()
    cols = [c for c in history.columns if c != "seconds"]
    assert history[cols].equals(resumed_history[cols])


def test_conditional_samples_follow_their_labels(splits):
    train, valid, _ = splits
    model = _gan()
    params = model.init_data(train, jax.random.key(0))
    cond = jnp.asarray(train["y"][:5])
    key = jax.random.key(3)
    a, b = gan.sample(params, key, cond), gan.sample(params, key, cond.at[:, 0].add(1.0))
    assert a.shape == (5, P) and not np.allclose(a, b)
    np.testing.assert_array_equal(a, gan.sample(params, key, cond))   # same key, same samples
    # samples lie in the basis: projecting them changes nothing
    np.testing.assert_allclose(model.apply(params, a)["value"], a, atol=1e-4)


def test_generated_spectra_reach_the_discriminator_through_the_real_stars_masks(splits):
    """Each fake is observed through the mask of the real star whose labels it was given, as
    real spectra are: where every pixel is masked, real and fake look alike (the training mean),
    the discriminator cannot tell them apart and the generator gets no gradient."""
    batch = {k: jnp.asarray(v[:16]) for k, v in splits[0].items()}
    model = _gan(moment_weight=1.0)
    params = model.init_data(splits[0], jax.random.key(0))
    blind = dict(batch, pixel_valid=jnp.zeros_like(batch["pixel_valid"]))
    for data, moves in ((batch, True), (blind, False)):
        grads = jax.grad(lambda p: model.loss(p, data, jax.random.key(1))[1]["g_loss"])(params)
        assert any(np.any(g) for g in jax.tree.leaves(grads["generator"])) == moves
    _, metrics = model.loss(params, blind, None)
    assert float(metrics["moments"]) == 0.0 and abs(float(metrics["frechet"])) < 1e-6


def test_stars_missing_a_conditioning_label_are_left_out_of_the_loss(splits):
    batch = {k: jnp.asarray(v[:16]) for k, v in splits[0].items()}
    model = _gan()
    params = model.init_data(splits[0], jax.random.key(0))
    missing = dict(batch, valid=batch["valid"].at[:4, 1].set(False))
    # what a star without a conditioning label holds (its spectrum, the label's value) is
    # ignored: weight 0 in both players' losses and in the validation Fréchet distance
    other = dict(missing, x=missing["x"].at[:4].set(100.0), y=missing["y"].at[:4, 1].set(1e6))
    for key in (None, jax.random.key(2)):
        a, b = model.loss(params, missing, key), model.loss(params, other, key)
        assert np.isfinite(float(a[0]))
        for name in a[1]:
            np.testing.assert_allclose(a[1][name], b[1][name], rtol=1e-6, err_msg=name)
    full = model.loss(params, batch, None)[1]
    assert float(full["d_loss"]) != pytest.approx(float(model.loss(params, missing, None)[1]["d_loss"]))


@pytest.mark.parametrize("hyper,message", [
    ({"condition": ["teff", "mass"]}, "gan: condition must name distinct task labels"),
    ({"condition": ["teff", "teff"]}, "gan: condition must name distinct"),
    ({"labels": ("teff", "logg")}, "gan: 2 label names for 3 task labels"),
    ({"dropout_rate": 1.0}, "gan: dropout_rate must be in"),
    ({"noise_dim": 0}, "gan: noise_dim"),
    ({"fd_components": 9}, r"gan: need fd_components \(9\) <= basis \(8\)"),
    ({"generator_hidden": [16, -1]}, "gan: generator_hidden"),
    ({"input_norm": "log"}, "gan: input_norm"),
    ({"moment_weight": -1.0}, "gan: moment_weight must be a finite number >= 0"),
])
def test_gan_names_bad_hyper_parameters(hyper, message):
    with pytest.raises(ValueError, match=message):
        _gan(**hyper)
