"""Generative models of spectra (VAE, PCA) and their analyses, on tiny 64-pixel spectra."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from stargrad.sdss import apogee
from stargrad.generative import analysis as generative
from stargrad.plots import generative as plots_generative
from stargrad import train as training
from stargrad.models import Model, build
from stargrad.models.vae import decode, kl_divergence

P = 64
LINE_CENTRES = np.array([10.0, 22.0, 37.0, 50.0])
DEPTH_MIX = np.array([[1.0, -0.5, 0.3, 0.8], [0.2, 0.9, -1.0, 0.4]])
NOISE = 0.005


def _generate(seed: int, n: int):
    """Spectra from a 2-parameter generator: 4 Gaussian lines whose depths and common width
    depend on t ∈ [-1, 1]². Returns (noisy flux, noiseless flux, t)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1.0, 1.0, (n, 2))
    depth = 0.25 + 0.15 * np.tanh(t @ DEPTH_MIX)
    width = 1.5 + 0.5 * (t[:, 1:2] + 1.0)
    pix = np.arange(P)
    prof = np.exp(-0.5 * ((pix - LINE_CENTRES[:, None])[None] / width[:, :, None]) ** 2)
    clean = 1.0 - np.einsum("nj,njp->np", depth, prof)
    noisy = clean + NOISE * rng.standard_normal(clean.shape)
    return noisy.astype(np.float32), clean.astype(np.float32), t


def _shifted_lines(seed: int, n: int):
    """Spectra on a curved 2-parameter manifold: 3 Gaussian lines (2 px wide) sharing a shift of
    3·t₁ px and a depth of 0.3 + 0.15·t₂, t ∈ [-1, 1]²; noise 0.005. A shift moves flux
    nonlinearly between pixels, so PCA needs about 4 components for what 2 parameters make.
    Returns the noisy flux (n, P)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1.0, 1.0, (n, 2))
    centre = np.array([12.0, 30.0, 48.0])[None, :] + 3.0 * t[:, :1]
    depth = (0.3 + 0.15 * t[:, 1:2])[:, :, None]
    prof = np.exp(-0.5 * ((np.arange(P)[None, None] - centre[:, :, None]) / 2.0) ** 2)
    clean = 1.0 - (depth * prof).sum(axis=1)
    return (clean + NOISE * rng.standard_normal(clean.shape)).astype(np.float32)


def _batch(x, pixel_valid=None):
    """An unsupervised batch; train.fit requires y/y_err/valid, so they are (N, 1) dummies."""
    n = len(x)
    out = {"x": np.asarray(x, np.float32), "y": np.zeros((n, 1), np.float32),
           "y_err": np.zeros((n, 1), np.float32), "valid": np.zeros((n, 1), bool)}
    out["pixel_valid"] = np.ones(out["x"].shape, bool) if pixel_valid is None else pixel_valid
    return out


#: One small untrained VAE shared by the tests below (one compilation of each function).
SMALL_VAE = build("vae", n_inputs=P, n_outputs=1, num_hidden=(16, 8), latent_dim=3, beta=0.3)


def _untrained_vae(seed: int):
    """SMALL_VAE and initial parameters whose zero-initialised output layer is made random,
    so that the decoder output and all gradients are non-trivial."""
    model = SMALL_VAE
    params = model.init(jax.random.key(seed))
    out = params["decoder"]["conv"][-1]
    out["w"] = jnp.asarray(0.3 * np.random.default_rng(seed).standard_normal(out["w"].shape),
                           jnp.float32)
    return model, params


@pytest.fixture(scope="module")
def data():
    """Standardized (per-pixel training mean and std) train/valid/test splits."""
    (tr, _, t_tr), (va, _, _), (te, te_clean, t_te) = (_generate(s, n) for s, n in
                                                       ((0, 256), (1, 64), (2, 128)))
    mean, std = tr.mean(axis=0), tr.std(axis=0)
    norm = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return {"train": norm(tr), "valid": norm(va), "test": norm(te), "test_clean": norm(te_clean),
            "t_train": t_tr, "t_test": t_te, "std": std}


@pytest.fixture(scope="module")
def vae(data):
    """A VAE trained briefly with the shared loop (β small enough for the latent to be used)."""
    model = build("vae", n_inputs=P, n_outputs=1, num_hidden=(32, 16), beta=0.01)
    cfg = training.TrainConfig(learning_rate=3e-3, batch_size=32, max_epochs=25,
                               early_stopping_patience=None)
    params, _ = training.fit(model, _batch(data["train"]), _batch(data["valid"]), cfg,
                             jax.random.key(0), log=lambda _: None)
    return model, params


@pytest.fixture(scope="module")
def curved():
    """Train/valid/test spectra of `_shifted_lines`, centred on the training mean and divided
    by one global scale (so that noise-only pixels stay small)."""
    train, valid, test = (_shifted_lines(s, n) for s, n in ((0, 256), (1, 64), (2, 128)))
    mean, scale = train.mean(axis=0), train.std()
    return [((a - mean) / scale).astype(np.float32) for a in (train, valid, test)]


@pytest.fixture(scope="module")
def pca(data):
    model = build("pca", n_inputs=P, n_outputs=1, n_components=3)
    return model, model.fit(_batch(data["train"]), None, None)


# ------------------------------------------------------------------ VAE loss terms

def test_kl_matches_closed_form_and_monte_carlo():
    mu, log_var = jnp.array([[1.0, -0.5]]), jnp.log(jnp.array([[1.0, 4.0]]))
    # Σ_k ½(σ² + μ² − 1 − ln σ²) = ½(1 + 1 − 1 − 0) + ½(4 + 0.25 − 1 − ln 4)
    expected = 0.5 + 0.5 * (3.25 - np.log(4.0))
    assert float(kl_divergence(mu, log_var)[0]) == pytest.approx(expected, rel=1e-6)

    # E_q[log q(z) − log p(z)] by sampling q; the normalisations 1/√(2π) cancel
    mu, sigma = np.array([1.0, -0.5]), np.array([1.0, 2.0])
    z = mu + sigma * np.random.default_rng(1).standard_normal((200_000, 2))
    log_q = np.sum(-0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma), axis=1)
    log_p = np.sum(-0.5 * z ** 2, axis=1)
    assert np.mean(log_q - log_p) == pytest.approx(expected, abs=0.02)


def test_loss_is_masked_mse_plus_beta_kl():
    model, params = _untrained_vae(0)
    x = np.random.default_rng(1).standard_normal((5, P)).astype(np.float32)
    valid = np.ones_like(x, bool)
    valid[0, :10] = valid[2, 40:] = False
    valid[4] = False  # a star with no good pixel contributes no reconstruction term
    value, metrics = jax.jit(model.loss)(params, _batch(x, valid), None)
    out = jax.jit(model.apply)(params, jnp.asarray(np.where(valid, x, 0.0)))
    sq = (np.asarray(out["value"]) - x) ** 2
    per_star = [sq[i, valid[i]].mean() if valid[i].any() else 0.0 for i in range(5)]
    kl = np.mean(np.asarray(kl_divergence(out["z_mean"], out["z_log_var"])))
    assert float(metrics["recon"]) == pytest.approx(np.mean(per_star), rel=1e-5)
    assert float(metrics["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(value) == pytest.approx(np.mean(per_star) + 0.3 * kl, rel=1e-5)


def test_masked_pixels_change_neither_loss_nor_gradient():
    model, params = _untrained_vae(2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, P)).astype(np.float32)
    valid = rng.uniform(size=(4, P)) > 0.2
    x_other = np.where(valid, x, 1e3)
    x_other[~valid & (np.arange(P) % 2 == 0)] = np.nan
    grad = jax.jit(jax.value_and_grad(model.loss, has_aux=True))
    (l1, _), g1 = grad(params, _batch(x, valid), jax.random.key(5))
    (l2, _), g2 = grad(params, _batch(x_other, valid), jax.random.key(5))
    assert float(l1) == float(l2)
    assert all(np.abs(np.asarray(a)).max() > 0 for a in jax.tree.leaves(g1))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(g1))


def test_sampling_uses_the_key_and_is_repeatable():
    model = SMALL_VAE
    params = model.init(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, params, model.init(jax.random.key(0)))
    x = jnp.asarray(_generate(0, 3)[0])
    apply = jax.jit(model.apply)
    det = apply(params, x)
    np.testing.assert_array_equal(det["z"], det["z_mean"])
    a, b = apply(params, x, jax.random.key(1)), apply(params, x, jax.random.key(1))
    np.testing.assert_array_equal(a["z"], b["z"])
    assert not np.allclose(a["z"], det["z"])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="latent_dim"):
        build("vae", n_inputs=P, n_outputs=1, latent_dim=0)
    with pytest.raises(ValueError, match="beta"):
        build("vae", n_inputs=P, n_outputs=1, beta=-1.0)
    with pytest.raises(ValueError, match="input_norm"):
        build("pca", n_inputs=P, n_outputs=1, input_norm="minmax")
    with pytest.raises(ValueError, match=r"shape \(B, 64\)"):
        SMALL_VAE.apply(SMALL_VAE.init(jax.random.key(0)), jnp.zeros((2, P + 1)))
    pca = build("pca", n_inputs=P, n_outputs=1, n_components=5)
    with pytest.raises(ValueError, match="n_components=5 exceeds"):
        pca.fit(_batch(np.zeros((4, P))), None, None)
    x = np.zeros((2, P), np.float32)
    x[0, 3] = np.nan
    with pytest.raises(ValueError, match="x has 1 non-finite"):
        generative.reconstruction_error(pca, pca.init(None), x)
    valid = np.ones_like(x, bool)
    valid[0, 3] = False  # the same NaN at a masked pixel is fine
    assert np.isfinite(generative.reconstruction_error(pca, pca.init(None), x, valid)).all()


# ------------------------------------------------------------------ PCA

def test_pca_all_components_reconstruct_exactly_and_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 12)).astype(np.float32)
    model = build("pca", n_inputs=12, n_outputs=1, n_components=12)
    params = model.fit(_batch(x), None, None)
    fresh = rng.standard_normal((3, 12)).astype(np.float32)
    np.testing.assert_allclose(model.apply(params, jnp.asarray(fresh))["value"], fresh,
                               atol=1e-4)
    centred = x - x.mean(axis=0)
    s = np.linalg.svd(centred.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(params["explained_variance"], s ** 2 / (len(x) - 1), rtol=1e-4)
    np.testing.assert_allclose(params["components"] @ params["components"].T, np.eye(12),
                               atol=1e-5)

    # fewer stars than pixels: all N components still reproduce the training spectra
    wide = rng.standard_normal((10, 30)).astype(np.float32)
    model = build("pca", n_inputs=30, n_outputs=1, n_components=10)
    params = model.fit(_batch(wide), None, None)
    np.testing.assert_allclose(model.apply(params, jnp.asarray(wide))["value"], wide, atol=1e-4)


def test_pca_fills_masked_pixels_with_the_valid_mean():
    x = np.array([[1.0, 2.0], [3.0, 50.0], [5.0, 6.0]], np.float32)
    valid = np.array([[True, True], [True, False], [True, True]])
    params = build("pca", n_inputs=2, n_outputs=1, n_components=2).fit(_batch(x, valid), None, None)
    np.testing.assert_allclose(params["mean"], [3.0, 4.0], rtol=1e-6)
    # centred pixel 1 is (-2, 0, 2): var 4; pixel 0 is (-2, 0, 2) too, fully correlated
    np.testing.assert_allclose(params["explained_variance"], [8.0, 0.0], atol=1e-5)


# ------------------------------------------------------------------ PCA-basis VAE

def test_basis_vae_starts_as_pca_of_its_latent_size(curved):
    train = curved[0]
    vae = build("vae", n_inputs=P, n_outputs=1, latent_dim=2, basis=8, num_hidden=(16, 8))
    params = vae.init_data(_batch(train), jax.random.key(0))
    pca = build("pca", n_inputs=P, n_outputs=1, n_components=2)
    pca_params = pca.fit(_batch(train), None, None)
    out = jax.jit(vae.apply)(params, jnp.asarray(train))
    want = jax.jit(pca.apply)(pca_params, jnp.asarray(train))
    np.testing.assert_allclose(out["value"], want["value"], atol=1e-4)
    # μ is the whitened PCA scores, so the prior N(0, I) matches the training codes' spread
    np.testing.assert_allclose(out["z_mean"] * params["frozen"]["scale"][:2], want["z"],
                               atol=1e-4)
    untrained = vae.init(jax.random.key(0))  # no data: the training-mean spectrum
    assert not np.any(jax.jit(vae.apply)(untrained, jnp.asarray(train))["value"])
    with pytest.raises(ValueError, match="basis must be 0"):
        build("vae", n_inputs=P, n_outputs=1, latent_dim=4, basis=3)


def test_basis_vae_beats_pca_of_equal_size_on_a_curved_manifold(curved):
    """Two latent parameters generate the spectra; PCA-2 cannot follow the curved manifold,
    a decoder that adds a learned nonlinear correction to PCA-2 can (about 4 components' worth)."""
    train, valid, test = curved
    vae = build("vae", n_inputs=P, n_outputs=1, latent_dim=2, basis=16, num_hidden=(32, 16),
                beta=1e-3)
    cfg = training.TrainConfig(learning_rate=3e-3, batch_size=32, max_epochs=40,
                               early_stopping_patience=None)
    params, _ = training.fit(vae, _batch(train), _batch(valid), cfg, jax.random.key(0),
                             log=lambda _: None)
    err = {}
    for k in (2, 3):
        pca = build("pca", n_inputs=P, n_outputs=1, n_components=k)
        err[k] = generative.reconstruction_error(pca, pca.fit(_batch(train), None, None),
                                                 test).mean()
    vae_err = generative.reconstruction_error(vae, params, test)
    assert vae_err.mean() < 0.25 * err[2] and vae_err.mean() < err[3]
    # the loop never updates the frozen basis
    basis = vae.init_data(_batch(train), jax.random.key(0))["frozen"]
    jax.tree.map(np.testing.assert_array_equal, params["frozen"], basis)


# ------------------------------------------------------------------ analyses

def test_trained_vae_beats_the_mean_spectrum(data, vae):
    model, params = vae
    err = generative.reconstruction_error(model, params, data["test"])
    mean_spectrum_err = np.mean(data["test"] ** 2, axis=1)  # 0 is the training mean
    assert err.shape == (len(data["test"]),)
    assert err.mean() < 0.7 * mean_spectrum_err.mean()


def test_error_table_matches_per_star_errors(data, vae, pca):
    x = data["train"]
    pcas = [(k, build("pca", n_inputs=P, n_outputs=1, n_components=k)) for k in (1, 2, 3)]
    vae_model, vae_params = vae
    entries = [("pca", k, m.fit(_batch(x), None, None), m) for k, m in pcas]
    entries.append(("vae", 2, vae_params, vae_model))
    table = generative.error_table(entries, x)
    assert list(table["family"]) == ["pca"] * 3 + ["vae"]
    vae_err = generative.reconstruction_error(vae_model, vae_params, x)
    assert table["mean_error"].iloc[3] == pytest.approx(vae_err.mean(), rel=1e-6)
    assert table["median_error"].iloc[3] == pytest.approx(np.median(vae_err), rel=1e-6)
    assert np.all(np.diff(table["mean_error"].iloc[:3]) < 0)  # more components, less error


def test_denoise_score_against_the_noiseless_flux(data, pca):
    model, params = pca
    table = generative.denoise_score(model, params, data["test"], data["test_clean"])
    recon = np.asarray(model.apply(params, jnp.asarray(data["test"]))["value"])
    np.testing.assert_allclose(table["noisy_mse"],
                               np.mean((data["test"] - data["test_clean"]) ** 2, axis=1),
                               rtol=1e-5)
    np.testing.assert_allclose(table["denoised_mse"],
                               np.mean((recon - data["test_clean"]) ** 2, axis=1), rtol=1e-4)
    # 3 components of 64 keep a small share of white noise: the reconstruction is cleaner
    assert table["ratio"].median() < 0.5


def test_anomaly_score_ranks_tilted_continua_high(data, vae, pca):
    x = data["test"].copy()
    odd = np.arange(5)
    tilt = 0.05 * np.linspace(-1.0, 1.0, P)  # continuum slope, ±5 % of the flux
    x[odd] += (tilt / data["std"]).astype(np.float32)
    error = np.broadcast_to(NOISE / data["std"], x.shape)
    for model, params in (vae, pca):
        for err in (None, error):
            scores = generative.anomaly_score(model, params, x, error=err)
            assert np.all(scores[odd] > np.median(scores[5:]))
    ranking = generative.rank_anomalies(scores, ids=[f"star{i}" for i in range(len(x))])
    assert set(ranking["index"][:5]) == set(odd)
    assert list(ranking["rank"][:3]) == [1, 2, 3]
    assert np.all(np.diff(ranking["score"]) <= 0)


def test_folds_are_balanced_and_drawn_from_the_key():
    folds = generative.fold_of(23, 5, jax.random.key(0))
    assert sorted(np.bincount(folds)) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(folds, generative.fold_of(23, 5, jax.random.key(0)))
    assert not np.array_equal(folds, generative.fold_of(23, 5, jax.random.key(1)))
    with pytest.raises(ValueError, match="n_folds"):
        generative.fold_of(3, 4, jax.random.key(0))


def test_cross_fitted_scores_find_odd_spectra_in_the_training_set(curved):
    """Three odd spectra, each with a feature of its own, sit among 256 training spectra. PCA-8
    fitted on all of them spends spare components on those features, so in-sample they look
    ordinary; each cross-fitted model has not seen its odd spectrum, which then ranks first."""
    train, valid, _ = curved
    x = train.copy()
    odd = np.array([17, 90, 201])
    pix = np.arange(P)
    x[odd[0]] += 4.0 * np.exp(-0.5 * ((pix - 5.0) / 1.5) ** 2)      # an emission line
    x[odd[1]] += np.linspace(-2.0, 2.0, P)                           # a continuum tilt
    x[odd[2]] -= 3.0 * np.exp(-0.5 * ((pix - 40.0) / 4.0) ** 2)      # a broad depression
    pca = build("pca", n_inputs=P, n_outputs=1, n_components=8)
    in_sample = generative.anomaly_score(pca, pca.fit(_batch(x), None, None), x)
    in_sample_ranks = generative.rank_anomalies(in_sample)["index"].tolist()
    assert min(in_sample_ranks.index(i) for i in odd) > len(x) // 4  # hidden in-sample

    cfg = training.TrainConfig()
    folds, fold_params = generative.cross_fit(pca, _batch(x), _batch(valid), cfg,
                                              jax.random.key(3), n_folds=4, log=lambda _: None)
    assert len(fold_params) == 4 and sorted(np.bincount(folds)) == [64] * 4
    scores = generative.cross_fitted_anomaly_score(pca, folds, fold_params, x)
    assert set(generative.rank_anomalies(scores)["index"][:3]) == set(odd)
    # star i is scored by the model fitted without its fold
    i = odd[1]
    rest = folds != folds[i]
    refit = pca.fit(_batch(x[rest]), None, None)
    assert scores[i] == pytest.approx(generative.anomaly_score(pca, refit, x[i:i + 1])[0],
                                      rel=1e-5)
    with pytest.raises(ValueError, match="folds must lie in"):
        generative.cross_fitted_anomaly_score(pca, folds, fold_params[:3], x)


def test_cross_fit_refits_data_derived_constants_and_the_loop_keeps_them():
    """A model whose `init_data` takes the training mean as a frozen constant (as the
    PCA-basis VAE takes its basis): each fold's fit derives it from that fold's stars only,
    and training never moves it."""
    def init_data(batch, key):
        return {"frozen": {"mean": jnp.mean(batch["x"], axis=0)}, "shift": jnp.zeros(P)}

    def apply(params, x, key=None, train=False, x_err=None):
        return {"value": params["frozen"]["mean"] + params["shift"] + 0.0 * x}

    def loss(params, batch, key):
        mse = jnp.mean((apply(params, batch["x"])["value"] - batch["x"]) ** 2)
        return mse, {"mse": mse}

    model = Model(init=lambda key: init_data({"x": jnp.zeros((1, P))}, key), apply=apply,
                  loss=loss, init_data=init_data)
    x = np.random.default_rng(0).normal(size=(40, P)).astype(np.float32)
    cfg = training.TrainConfig(learning_rate=0.1, batch_size=10, max_epochs=3,
                               optimizer="adamw", weight_decay=0.5)
    folds, fold_params = generative.cross_fit(model, _batch(x), _batch(x[:8]), cfg,
                                              jax.random.key(0), n_folds=2, log=lambda _: None)
    for k, params in enumerate(fold_params):
        np.testing.assert_allclose(params["frozen"]["mean"], x[folds != k].mean(axis=0),
                                   rtol=1e-5, atol=1e-6)
        assert np.abs(params["shift"]).max() > 0  # the rest did train


def test_decoder_jacobian_matches_finite_differences():
    _, params = _untrained_vae(7)
    z0 = np.array([0.3, -0.7, 1.1])
    jac = generative.decoder_jacobian(params, z0, n_pixels=P)
    assert jac.shape == (3, P)
    # central differences in float64 (eps far below the distance to the ReLU kinks)
    eps = 1e-5
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        dec64 = jax.jit(lambda p, z: decode(p, z, P))
        for k in range(3):
            step = np.zeros(3)
            step[k] = eps
            plus, minus = dec64(params64, jnp.asarray(np.stack([z0 + step, z0 - step])))
            fd = np.asarray((plus - minus) / (2 * eps))
            np.testing.assert_allclose(jac[k], fd, atol=1e-4 * np.abs(fd).max())
    assert np.abs(jac).max() > 0
    pca = build("pca", n_inputs=P, n_outputs=1, n_components=2)
    pca_params = pca.fit(_batch(_generate(0, 16)[0]), None, None)
    np.testing.assert_allclose(generative.decoder_jacobian(pca_params, np.zeros(2)),
                               pca_params["components"], atol=1e-6)


def test_sample_prior_decodes_standard_normal_draws():
    _, params = _untrained_vae(0)
    samples = generative.sample_prior(params, jax.random.key(3), 4, n_pixels=P)
    z = jax.random.normal(jax.random.key(3), (4, 3))
    np.testing.assert_allclose(samples, decode(params, z, P), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(samples,
                                  generative.sample_prior(params, jax.random.key(3), 4, n_pixels=P))


def test_latent_regression_compares_latent_and_spectrum_inputs(data, pca):
    # PCA scores stand in for a latent space that certainly holds the generator's parameters
    model, params = pca
    cfg = training.TrainConfig(learning_rate=1e-2, batch_size=64, max_epochs=150,
                               early_stopping_patience=None)  # full batch: 1 step per epoch
    y_train, y_test = data["t_train"].copy(), data["t_test"]
    y_train[:8, 1] = apogee.MAGIC_NUMBER  # missing labels are masked, not learned
    table = generative.latent_regression(model, params, data["train"], y_train, data["test"],
                                         y_test, jax.random.key(4), labels=("t1", "t2"),
                                         n_labelled=64, hidden=(16,), cfg=cfg,
                                         log=lambda _: None)
    assert list(table["input"]) == ["latent", "latent", "spectrum", "spectrum"]
    assert list(table["label"]) == ["t1", "t2", "t1", "t2"]
    assert (table["n_test"] == len(y_test)).all() and (table["n_labelled"] == 64).all()
    # both inputs carry the generator's parameters: far better than predicting the mean
    assert (table["test_mse"] < 0.5 * y_test.var(axis=0).min()).all()
    with pytest.raises(ValueError, match="n_labelled=300"):
        generative.latent_regression(model, params, data["train"], y_train, data["test"],
                                     y_test, jax.random.key(4), labels=("t1", "t2"),
                                     n_labelled=300)


# ------------------------------------------------------------------ plots

def test_plots_write_their_files(tmp_path):
    rng = np.random.default_rng(0)
    n = apogee.N_PIX_GAPLESS
    spectra = rng.normal(size=(6, n)).astype(np.float32)
    table = pd.DataFrame({"family": ["pca", "pca", "vae", "vae"], "size": [2, 4, 2, 4],
                          "mean_error": [0.4, 0.2, 0.3, 0.25],
                          "median_error": [0.3, 0.15, 0.2, 0.2]})
    z = rng.normal(size=(50, 2))
    labels = {"teff": rng.uniform(4000, 5000, 50), "logg": rng.uniform(1, 3, 50),
              "Fe": np.where(np.arange(50) < 3, apogee.MAGIC_NUMBER, 0.0),
              "evstate": rng.integers(0, 2, 50).astype(float)}
    ranking = generative.rank_anomalies(rng.uniform(size=6))
    calls = {
        "error.png": lambda p: plots_generative.plot_error_vs_size(p, table),
        "latent.png": lambda p: plots_generative.plot_latent_space(p, z, labels),
        "denoise.png": lambda p: plots_generative.plot_denoising(p, *spectra[:3], chip="red"),
        "prior.pdf": lambda p: plots_generative.plot_prior_samples(p, spectra[:3]),
        "jacobian.png": lambda p: plots_generative.plot_decoder_jacobian(p, spectra[:2]),
        "anomalies.png": lambda p: plots_generative.plot_anomalies(p, spectra, spectra, ranking,
                                                                   n=2),
    }
    for name, call in calls.items():
        assert call(tmp_path / name) is None
        assert (tmp_path / name).stat().st_size > 1000
    with pytest.raises(ValueError, match="7514 pixels"):
        plots_generative.plot_decoder_jacobian(tmp_path / "bad.png", np.zeros((2, P)))
