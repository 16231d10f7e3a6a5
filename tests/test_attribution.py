"""Tests of stargrad.attribution and plots_attribution: exact Jacobians against closed forms and
finite differences, chunking and MC invariances, line matching, window shares, FITS files."""
from __future__ import annotations

import astropy.io.fits
import fitsio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stargrad.sdss import apogee
from stargrad.attribution import (files, jacobian as jacobians, lines as line_matching,
                                  similarity, units, windows)
from stargrad.models import Model
from stargrad.provenance import header_cards


def _unused_loss(params, batch, key):
    raise NotImplementedError("attribution never trains")


def linear_model(n_in, n_out):
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w": jax.random.normal(k1, (n_in, n_out)), "b": jax.random.normal(k2, (n_out,))}

    def apply(params, x, key=None, train=False, x_err=None):
        return {"value": x @ params["w"] + params["b"]}

    return Model(init=init, apply=apply, loss=_unused_loss)


def mlp_model(n_in, n_hidden, n_out, dropout=0.0):
    """Two-layer tanh MLP; with dropout > 0 it is stochastic (MC dropout when given a key)."""
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (n_in, n_hidden)) / np.sqrt(n_in),
                "b1": jnp.zeros(n_hidden),
                "w2": jax.random.normal(k2, (n_hidden, n_out)) / np.sqrt(n_hidden),
                "b2": jnp.zeros(n_out)}

    def apply(params, x, key=None, train=False, x_err=None):
        h = jnp.tanh(x @ params["w1"] + params["b1"])
        if dropout and key is not None:
            keep = jax.random.bernoulli(key, 1.0 - dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - dropout), 0.0)
        return {"value": h @ params["w2"] + params["b2"]}

    return Model(init=init, apply=apply, loss=_unused_loss, stochastic=dropout > 0)


def _x(n, p, seed=0):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, p)), dtype=np.float32)


def test_linear_jacobian_equals_weights_for_every_star():
    model = linear_model(12, 3)
    params = model.init(jax.random.key(1))
    jac = jacobians.jacobian(model, params, _x(5, 12))
    assert jac.shape == (5, 3, 12)
    np.testing.assert_allclose(jac, np.broadcast_to(np.asarray(params["w"]).T, jac.shape),
                               rtol=1e-6)


def test_mlp_jacobian_matches_central_finite_differences():
    model = mlp_model(8, 6, 2)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), model.init(jax.random.key(2)))
    x = _x(3, 8, seed=3)
    jac = jacobians.jacobian(model, params, x)
    eps = 1e-2
    f = lambda xx: np.asarray(model.apply(params, np.asarray(xx, np.float64))["value"])  # noqa
    fd = np.empty_like(jac)
    for p in range(8):
        step = np.zeros(8)
        step[p] = eps
        fd[:, :, p] = (f(x + step) - f(x - step)) / (2 * eps)
    assert np.abs(jac).max() > 0.05
    np.testing.assert_allclose(jac, fd, atol=2e-4)


def test_chunking_mean_and_fwd_mode_agree():
    model = mlp_model(20, 7, 4)
    params = model.init(jax.random.key(4))
    x = _x(10, 20, seed=5)
    full = jacobians.jacobian(model, params, x, chunk_size=64)
    np.testing.assert_allclose(jacobians.jacobian(model, params, x, chunk_size=3), full, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(jacobians.jacobian(model, params, x, mode="fwd"), full, rtol=1e-4,
                               atol=1e-6)
    mean, mean_abs = jacobians.mean_jacobian(model, params, x, chunk_size=3)
    np.testing.assert_allclose(mean, full.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mean_abs, np.abs(full).mean(axis=0), rtol=1e-5, atol=1e-7)
    assert not np.allclose(mean_abs, np.abs(mean))  # signs vary across stars: |J| matters


def test_mc_dropout_jacobian_is_mean_of_single_key_jacobians():
    model = mlp_model(16, 10, 3, dropout=0.5)
    params = model.init(jax.random.key(6))
    x = _x(7, 16, seed=7)
    key = jax.random.key(8)
    singles = [jacobians.jacobian(model, params, x, key=k, chunk_size=4)
               for k in jax.random.split(key, 4)]
    assert not np.allclose(singles[0], singles[1])  # different dropout masks
    mc = jacobians.jacobian(model, params, x, key=key, mc_samples=4, chunk_size=4)
    np.testing.assert_allclose(mc, np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    mean, _ = jacobians.mean_jacobian(model, params, x, key=key, mc_samples=4, chunk_size=4)
    np.testing.assert_allclose(mean, mc.mean(axis=0), rtol=1e-5, atol=1e-6)
    # key=None: dropout off, deterministic, equal to the model without dropout.
    plain = jacobians.jacobian(mlp_model(16, 10, 3), params, x)
    np.testing.assert_allclose(jacobians.jacobian(model, params, x), plain, rtol=1e-6)


def test_bad_arguments_raise_clear_errors():
    model = linear_model(12, 3)
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match="x must be"):
        jacobians.jacobian(model, params, np.zeros(12))
    with pytest.raises(ValueError, match="model.apply fails"):
        jacobians.jacobian(model, params, np.zeros((2, 11)))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        jacobians.jacobian(model, params, np.zeros((2, 12)), mc_samples=3)
    with pytest.raises(ValueError, match="chunk_size"):
        jacobians.jacobian(model, params, np.zeros((2, 12)), chunk_size=0)
    with pytest.raises(ValueError, match="non-finite"):
        jacobians.jacobian(model, params, np.full((2, 12), np.nan))


def test_physical_units_and_full_grid():
    jac = np.ones((2, apogee.N_PIX_GAPLESS))
    input_std = np.full(apogee.N_PIX_GAPLESS, 0.5)
    phys = units.to_physical(jac, input_std, np.array([100.0, 0.1]))
    np.testing.assert_allclose(phys[:, 0], [200.0, 0.2])
    np.testing.assert_allclose(units.to_physical(jac, 1.0, np.array([3.0, 1.0]))[:, 5], [3.0, 1.0])
    with pytest.raises(ValueError, match="input_std"):
        units.to_physical(jac, np.zeros(apogee.N_PIX_GAPLESS), np.ones(2))
    full = units.to_full_grid(phys)
    assert full.shape == (2, apogee.N_PIX)
    assert np.isnan(full[:, :246]).all() and np.isnan(full[:, 3274:3585]).all()
    np.testing.assert_array_equal(full[:, apogee.KEPT_PIXELS], phys)


def _mg_pixel():
    return int(round(float(apogee.pixel_of_wavelength(15770.147, apogee.N_PIX_GAPLESS))))


def test_planted_line_is_found_and_named():
    jac = np.zeros(apogee.N_PIX_GAPLESS)
    p = _mg_pixel()
    jac[p] = -2.0
    jac[p + 2] = -1.5          # closer than min_separation_px: not a separate feature
    jac[6000] = 1.0
    feats = line_matching.top_features(jac, n=5, min_separation_px=4)
    assert list(feats["pixel_7514"]) == [p, 6000]   # zero pixels are never features
    assert feats.loc[0, "sign"] == -1 and feats.loc[0, "chip"] == "blue"
    assert feats.loc[0, "pixel_8575"] == apogee.KEPT_PIXELS[p]
    assert feats.loc[0, "wavelength_vac"] == pytest.approx(apogee.wavelength()[p + 246])
    matched = line_matching.match_lines(feats, max_kms=15.0)
    assert matched.loc[0, "species_1"] == "Mg I"
    assert abs(matched.loc[0, "dv_kms_1"]) < 2.1          # half a pixel (4.14 km/s)
    assert matched.loc[0, "lambda_1"] == pytest.approx(15770.147)
    dv = matched[["dv_kms_1", "dv_kms_2", "dv_kms_3"]].to_numpy()
    assert (np.abs(dv[np.isfinite(dv)]) <= 15.0).all()
    table = line_matching.lines_table(np.stack([jac, -jac]), ["Mg", "Fe"], n=2)
    assert list(table["label"]) == ["Mg", "Mg", "Fe", "Fe"]
    assert list(table["sign"]) == [-1, 1, 1, -1]
    assert table.loc[0, "species_1"] == "Mg I"


def test_window_shares_overlapping_and_exclusive():
    elements, masks = windows._window_matrix()
    mg = apogee.window_mask("Mg")
    others = masks[[e != "Mg" for e in elements]].any(axis=0)
    mg_only = mg & ~others
    outside = ~masks.any(axis=0)
    assert mg_only.sum() > 0 and outside.sum() > 0
    jac = np.stack([mg_only, mg, outside]).astype(float)
    labels = ["Mg", "Al", "teff"]
    shares = windows.window_shares(jac, labels)
    row = shares.iloc[0]
    assert row["Mg"] == pytest.approx(1.0) and row["share_own"] == pytest.approx(1.0)
    assert all(row[e] == 0.0 for e in elements if e != "Mg") and row["none"] == 0.0
    # All Mg window pixels: Mg gets 1, each other element its overlap fraction.
    row = shares.iloc[1]
    assert row["Mg"] == pytest.approx(1.0)
    assert row["Fe"] == pytest.approx((mg & apogee.window_mask("Fe")).sum() / mg.sum())
    assert row["own_element"] == "Al"
    assert row["share_own"] == pytest.approx((mg & apogee.window_mask("Al")).sum() / mg.sum())
    assert shares.iloc[2]["none"] == 1.0 and np.isnan(shares.iloc[2]["share_own"])
    excl = windows.window_shares(jac, labels, exclusive=True)
    np.testing.assert_allclose(excl[list(elements) + ["none"]].sum(axis=1), 1.0)
    cover = masks.sum(axis=0)
    assert excl.iloc[1]["Mg"] == pytest.approx((1.0 / cover[mg]).sum() / mg.sum())
    assert excl.iloc[0]["Mg"] == pytest.approx(1.0)


def test_similarity_and_fidelity():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, apogee.N_PIX_GAPLESS))
    np.testing.assert_allclose(similarity.cosine_similarity(w, 2.5 * w), 1.0)
    assert similarity.cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == 0.0
    fid = similarity.fidelity(np.stack([3 * w[1], -w[0]]), w, labels=["logg", "teff"],
                      weight_labels=["teff", "logg", "Fe"])
    np.testing.assert_allclose(fid["fidelity"], [1.0, -1.0])
    assert np.isnan(similarity.fidelity(w[:1], w, labels=["Mg"], weight_labels=["teff", "logg", "Fe"])
                    ["fidelity"][0])
    sim = similarity.similarity_matrix({"a": w, "b": -w, "c": w + 0.1}, ["teff", "logg", "Fe"])
    assert len(sim) == 3 * 9
    teff = sim[sim.label == "teff"].pivot(index="model_a", columns="model_b", values="cosine")
    np.testing.assert_allclose(np.diag(teff), 1.0)
    np.testing.assert_allclose(teff.to_numpy(), teff.to_numpy().T)
    assert teff.loc["a", "b"] == pytest.approx(-1.0)


def test_jacobian_fits_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    labels = ["teff", "Mg", "dpi1"]
    mean = rng.normal(size=(3, apogee.N_PIX_GAPLESS)).astype(np.float32)
    per_star = rng.normal(size=(2, 3, apogee.N_PIX_GAPLESS)).astype(np.float32)
    cards = header_cards("abc123", seed=7, model="mlp")
    path = tmp_path / "jacobian.fits"
    files.write_jacobian_fits(path, mean, np.abs(mean), labels, cards, per_star=per_star)
    back = files.read_jacobian_fits(path)
    assert back["labels"] == labels and back["header"]["SGSEED"] == 7
    np.testing.assert_array_equal(back["mean_jacobian"], mean)
    np.testing.assert_array_equal(back["mean_abs_jacobian"], np.abs(mean))
    np.testing.assert_array_equal(back["per_star"], per_star)
    np.testing.assert_array_equal(back["mean_jacobian_8575"], units.to_full_grid(mean))
    with astropy.io.fits.open(path) as hdul:
        assert [h.name for h in hdul[1:]] == ["MEAN_JACOBIAN", "MEAN_ABS_JACOBIAN",
                                              "MEAN_JACOBIAN_8575", "PER_STAR", "LABELS"]
        np.testing.assert_array_equal(hdul["MEAN_JACOBIAN"].data, mean)
        assert hdul["MEAN_JACOBIAN_8575"].header["CTYPE1"] == "LOG-LINEAR"
        assert list(hdul["LABELS"].data["UNIT"])[0] == "K"
    np.testing.assert_array_equal(fitsio.read(str(path), ext="PER_STAR"), per_star)
    again = tmp_path / "again.fits"
    files.write_jacobian_fits(again, mean, np.abs(mean), labels, cards, per_star=per_star)
    assert again.read_bytes() == path.read_bytes()
    files.write_jacobian_fits(again, mean, np.abs(mean), labels, cards)
    assert files.read_jacobian_fits(again)["per_star"] is None
    astropy.io.fits.PrimaryHDU().writeto(tmp_path / "empty.fits")
    with pytest.raises(ValueError, match="missing HDUs"):
        files.read_jacobian_fits(tmp_path / "empty.fits")


def test_plots_write_png(tmp_path):
    from stargrad.plots import attribution as pa

    jac = np.zeros(apogee.N_PIX_GAPLESS)
    jac[_mg_pixel()] = 1.0
    jac[100] = -0.5
    lines = line_matching.match_lines(line_matching.top_features(jac, n=3)).assign(label="Mg")
    pa.plot_label_jacobians(tmp_path, jac[None], ["Mg"], lines)
    (tmp_path / "cmp").mkdir()
    pa.plot_jacobian_comparisons(tmp_path / "cmp", {"Mg": {"mlp": jac, "bcnn": 3 * jac}})
    pa.plot_classifier_gradient(tmp_path / "evstate.png", jac[None], "evstate")
    for name in ("Mg", "cmp/Mg", "evstate"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
