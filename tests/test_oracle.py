"""The oracle: the shared solver fitting the mock's true forward model recovers a star's labels
within errors that equal the Cramér–Rao bound, stays inside its box, and is first in the
scorecard."""
import numpy as np
import pandas as pd

from stargrad.sdss import apogee
from stargrad import mock
from stargrad.stages.compare import scorecard
from stargrad.mock import crb, forward
from stargrad.stages.oracle import fit_oracle, training_box


def test_oracle_reaches_the_cramer_rao_bound_on_noisy_true_spectra():
    truth = mock.population.draw_labels(60, 0, seed=3, n_anomalies=0)
    labels = truth[list(mock.LABELS)].to_numpy(float)
    train, test = labels[:50], labels[50:53]
    box = training_box(train, 0.1, 16)
    rng = np.random.default_rng(0)
    error = np.full((3, apogee.N_PIX_GAPLESS), 0.01)
    flux = forward.batch_spectra(test)[:, apogee.KEPT_PIXELS] + rng.normal(size=error.shape) * error
    mask = np.zeros(flux.shape, bool)
    mask[0, 100:400] = True                           # masked pixels hold anything
    flux[0, 100:400] = 5.0
    fit = fit_oracle(flux, error, mask, box, n_iter=10, batch_size=2)
    assert fit["converged"].all()
    masked_error = np.where(mask, 1e10, error)
    bounds = np.array([crb.crb(test[i], masked_error[i]) for i in range(3)])
    at_fit = np.array([crb.crb(fit["value"][i], masked_error[i]) for i in range(3)])
    np.testing.assert_allclose(fit["std"], at_fit, rtol=0.02)   # formal error = CRB at the fit
    z = (fit["value"] - test) / bounds
    assert np.all(np.abs(z) < 4.5), z
    assert 0.5 < np.sqrt(np.mean(z ** 2)) < 1.6
    assert np.median(fit["chi2"] / (apogee.N_PIX_GAPLESS - 22)) < 1.1
    lower = box[0] + box[1] * box[2]
    upper = box[0] + box[1] * box[3]
    assert np.all((fit["value"] >= lower - 1e-9) & (fit["value"] <= upper + 1e-9))


def test_scorecard_lists_the_oracle_first():
    metrics = pd.DataFrame([{"model": m, "split": "test", "label": "Fe", "mse": 0.01,
                             "mad_std": 0.1, "bias_median": 0.0, "crb_ratio": r}
                            for m, r in (("cannon", 2.7), ("oracle", 1.0), ("payne", 1.5))])
    assert list(scorecard(metrics, {})["model"]) == ["oracle", "cannon", "payne"]
