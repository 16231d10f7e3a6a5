"""The checks of generated against real spectra (stargrad.generative.sample_quality,
stargrad.generative.frechet) on cases with known answers."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from stargrad.generative import sample_quality as sq
from stargrad.generative.frechet import frechet_distance

P = 120


def _spectra(seed: int, n: int) -> np.ndarray:
    """Spectra of 3 Gaussian lines whose depths follow two latent parameters, noise 0.005."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 2))
    depth = 0.3 + 0.08 * t @ np.array([[1.0, -0.5, 0.3], [0.2, 0.9, -1.0]])
    prof = np.exp(-0.5 * ((np.arange(P)[None] - np.array([20.0, 60.0, 95.0])[:, None]) / 2.5) ** 2)
    return (1.0 - depth @ prof + 0.005 * rng.standard_normal((n, P))).astype(np.float32)


@pytest.fixture(scope="module")
def space_and_sets():
    train, real_a, real_b = _spectra(0, 400), _spectra(1, 300), _spectra(2, 300)
    space = sq.pca_space(train, n_components=6)
    shuffled = np.random.default_rng(3).permuted(real_b, axis=1)
    return space, {name: sq.project(space, a) for name, a in
                   (("train", train), ("a", real_a), ("b", real_b), ("shuffled", shuffled))}


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    # Rows ±s_k e_k: mean 0 and covariance diag(s²)/3 exactly (biased, over 6 rows).
    def cloud(scales, shift):
        rows = [sign * s * np.eye(3)[k] for k, s in enumerate(scales) for sign in (1, -1)]
        return np.asarray(rows) + shift

    a, b = cloud([1.0, 2.0, 3.0], 0.0), cloud([2.0, 2.0, 1.0], np.array([0.5, -1.0, 0.0]))
    var_a, var_b = np.array([1.0, 4.0, 9.0]) / 3, np.array([4.0, 4.0, 1.0]) / 3
    expected = 0.25 + 1.0 + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert float(frechet_distance(a, b)) == pytest.approx(expected, rel=1e-5)
    assert float(frechet_distance(a, a)) == pytest.approx(0.0, abs=1e-5)


def test_real_against_real_gives_fd_near_zero_and_auc_near_half(space_and_sets):
    _, sets = space_and_sets
    fd_same = sq.frechet(sets["a"], sets["b"])
    fd_shuffled = sq.frechet(sets["a"], sets["shuffled"])
    assert fd_same < 0.02 * fd_shuffled
    aucs = sq.classifier_two_sample(sets["a"], sets["b"], jax.random.key(0), n_seeds=3,
                                    log=lambda _: None)
    assert aucs.shape == (3,) and abs(aucs.mean() - 0.5) < 0.08


def test_real_against_shuffled_pixels_gives_auc_near_one(space_and_sets):
    _, sets = space_and_sets
    aucs = sq.classifier_two_sample(sets["a"], sets["shuffled"], jax.random.key(1), n_seeds=2,
                                    log=lambda _: None)
    assert aucs.min() > 0.97


def test_auc_and_ks_statistic_on_hand_computed_cases():
    assert sq.auc([0.1, 0.2, 0.3, 0.4], [False, False, True, True]) == 1.0
    assert sq.auc([0.4, 0.3, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert sq.auc([1.0, 1.0, 1.0, 1.0], [False, True, False, True]) == 0.5
    assert sq.auc([0.1, 0.3, 0.2, 0.4], [False, False, True, True]) == 0.75
    assert sq.ks_statistic([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert sq.ks_statistic([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]) == 0.0
    assert sq.ks_statistic([0.0, 1.0, 2.0, 3.0], [2.5, 3.5]) == 0.75
    with pytest.raises(ValueError, match="both classes"):
        sq.auc([0.1, 0.2], [True, True])


def test_nearest_distances_and_spread():
    reference = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(sq.nearest_distances(np.array([[0.0, 1.0], [3.0, 4.0]]),
                                                    reference, chunk=1), [1.0, 0.0])
    # a copy of the reference sits at distance 0; a collapsed sample set has no spread
    assert sq.spread(np.repeat([[1.0, 2.0]], 5, axis=0)) == 0.0
    # two rows: variances (3/2)²·2 = 4.5 and (4/2)²·2 = 8 (n − 1 = 1)
    assert sq.spread(reference) == pytest.approx(np.sqrt(12.5))


def test_line_depths_find_the_deepest_line_of_a_species():
    from stargrad.sdss import apogee
    lam = apogee.wavelength(apogee.N_PIX_GAPLESS)
    lines = sq.strongest_lines(np.ones((3, apogee.N_PIX_GAPLESS)), ["K I"])
    assert lines["median_depth"].iat[0] == 0.0       # flat spectra: no depth anywhere
    flux = np.ones((3, apogee.N_PIX_GAPLESS))
    k_lines = apogee.load_lines().query("species == 'K I'")["vac"].to_numpy()
    pix = np.round(apogee.pixel_of_wavelength(k_lines, apogee.N_PIX_GAPLESS)).astype(int)
    flux[:, pix[1] + 1] = 0.6                        # the second line, one pixel off centre
    lines = sq.strongest_lines(flux, ["K I"])
    assert lines["vac"].iat[0] == pytest.approx(k_lines[1])
    assert abs(lam[lines["pixel"].iat[0]] - k_lines[1]) < 0.2
    np.testing.assert_allclose(sq.line_depths(flux, lines["pixel"]), 0.4)
    with pytest.raises(ValueError, match="not in the line list"):
        sq.strongest_lines(flux, ["Xx I"])


def test_generated_spectra_are_scored_through_the_real_masks(space_and_sets):
    """A perfect generator (the real spectra themselves, unmasked) is told apart from masked
    real spectra by the mask pattern alone; observed through their masks it is not."""
    space, _ = space_and_sets
    real = _spectra(2, 300)
    masks = np.random.default_rng(4).random(real.shape) < 0.1
    real_scores = sq.project(space, np.where(masks, np.nan, real), ~masks)
    unmasked = sq.project(space, real)
    observed = sq.observed(real, masks, np.arange(len(real)))
    assert np.isnan(observed[masks]).all() and np.array_equal(observed[~masks], real[~masks])
    through = sq.project(space, np.nan_to_num(observed), np.isfinite(observed))
    assert sq.frechet(real_scores, through) == pytest.approx(0.0, abs=1e-6)
    assert sq.frechet(real_scores, unmasked) > 1e-4
    with pytest.raises(ValueError, match="one mask row per spectrum"):
        sq.observed(real, masks, np.arange(5))
