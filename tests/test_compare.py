"""Comparison metrics against hand-computed values."""
import numpy as np
import pandas as pd
from astropy.stats import mad_std

from stargrad.sdss.apogee import MAGIC_NUMBER
from stargrad.stages.compare import classification_metrics, regression_metrics, task_metrics
from stargrad.stages.predict import calibration_scales


def test_regression_metrics_by_hand():
    true = np.array([1.0, 2.0, 3.0, MAGIC_NUMBER, 5.0])
    pred = np.array([1.5, 1.0, 3.0, 100.0, 6.0])
    std = np.full(5, 0.5)
    crb = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    m = regression_metrics(pred, true, std, crb)
    resid = np.array([0.5, -1.0, 0.0, 1.0])
    assert m["n"] == 4
    np.testing.assert_allclose(m["mse"], np.mean(resid ** 2))
    np.testing.assert_allclose(m["bias_median"], 0.25)
    np.testing.assert_allclose(m["mad_std"], mad_std(resid))
    np.testing.assert_allclose(m["z_mad_std"], mad_std(resid / 0.5))
    assert "z_mad_std_calibrated" not in m
    m2 = regression_metrics(pred, true, std, crb, std_calibrated=2 * std)
    np.testing.assert_allclose(m2["z_mad_std_calibrated"], mad_std(resid / 1.0))
    np.testing.assert_allclose(m["crb_median"], np.median([0.1, 0.2, 0.3, 0.5]))
    np.testing.assert_allclose(m["crb_ratio"], mad_std(resid) / 0.25)
    np.testing.assert_allclose(m["spread_ratio"], mad_std(pred[[0, 1, 2, 4]]) / mad_std(true[[0, 1, 2, 4]]))


def test_classification_metrics_per_class():
    true = np.array([0, 0, 0, 1, 1, MAGIC_NUMBER])
    prob = np.array([0.1, 0.7, 0.2, 0.9, 0.4, 0.9])
    m = classification_metrics(prob, true)
    assert m["n"] == 5
    np.testing.assert_allclose(m["accuracy"], 3 / 5)
    np.testing.assert_allclose(m["accuracy_rgb"], 2 / 3)
    np.testing.assert_allclose(m["accuracy_rc"], 1 / 2)


def test_task_metrics_rows_and_crb_join_by_id():
    table = pd.DataFrame({"APOGEE_ID": ["a", "b", "c"], "logg": [1.0, 2.0, 3.5],
                          "logg_true": [1.0, 2.5, 3.0], "logg_std_total": [0.5, 0.5, 0.5]})
    crb = pd.DataFrame({"APOGEE_ID": ["c", "b", "a"], "crb_logg": [0.3, 0.2, 0.1]})
    out = task_metrics({("m1", "test"): table, ("m2", "test"): table}, ["logg"], "regression",
                       "logg", crb)
    assert list(out["model"]) == ["m1", "m2"]
    np.testing.assert_allclose(out["crb_median"], 0.2)


def test_scorecard_joins_cluster_and_attribution_and_ranks():
    from stargrad.stages.compare import ranking, scorecard
    metrics = pd.DataFrame([
        {"model": "a", "split": "test", "label": "Al", "mse": 0.01, "mad_std": 0.1, "bias_median": 0.0,
         "z_mad_std": 1.0, "crb_ratio": 2.0},
        {"model": "b", "split": "test", "label": "Al", "mse": 0.04, "mad_std": 0.2, "bias_median": 0.1,
         "z_mad_std": 1.5, "crb_ratio": 4.0},
        {"model": "a", "split": "cluster", "label": "Al", "spread_ratio": 0.9},
        {"model": "b", "split": "cluster", "label": "Al", "spread_ratio": 0.2},
    ])
    attribution = {"a": {"fidelity": pd.DataFrame({"label": ["Al"], "fidelity": [0.7]}),
                         "windows": pd.DataFrame({"label": ["Al"], "share_own": [0.4], "Fe": [0.1]})}}
    card = scorecard(metrics, attribution)
    a, b = card.set_index("model").loc["a"], card.set_index("model").loc["b"]
    assert a["cluster_spread_ratio"] == 0.9 and b["cluster_spread_ratio"] == 0.2
    assert a["fidelity"] == 0.7 and a["share_own"] == 0.4 and a["share_Fe"] == 0.1
    assert np.isnan(b["fidelity"])
    rank = ranking(card, "regression")
    assert list(rank["model"]) == ["a", "b"] and rank["metric"][0] == "median crb_ratio"


def test_calibration_scales_are_the_valid_z_spread():
    """The scale is mad_std((value - y) / std_total) over stars with the label; with residuals
    twice the claimed std it is ~2, a label with too few stars keeps 1, and scaled stds give
    z spread 1 on the same stars."""
    rng = np.random.default_rng(3)
    n = 4000
    y = rng.standard_normal((n, 3))
    std_total = np.exp(rng.uniform(-1, 0, (n, 3)))
    value = y + std_total * rng.standard_normal((n, 3)) * np.array([2.0, 0.5, 1.0])
    truth = y.copy()
    truth[5:, 2] = np.nan                     # missing (NaN or -9999) labels are left out
    truth[5::2, 2] = -9999.0
    table = pd.DataFrame({**{f"l{k}": value[:, k] for k in range(3)},
                          **{f"l{k}_std_total": std_total[:, k] for k in range(3)}})
    scales, used = calibration_scales(table, truth, ["l0", "l1", "l2"])
    assert list(used) == [n, n, 5]
    z = (value - y) / std_total
    np.testing.assert_allclose(scales[:2], [mad_std(z[:, 0]), mad_std(z[:, 1])], rtol=1e-12)
    np.testing.assert_allclose(scales[:2], [2.0, 0.5], rtol=0.05)
    assert scales[2] == 1.0
    np.testing.assert_allclose(mad_std(z[:, :2] / scales[:2], axis=0), 1.0, rtol=1e-12)


def test_mad_std_is_astropys_to_the_bit():
    from stargrad.predictions import mad_std as ours
    assert ours(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == 1.482602218505602  # median |x-3| = 1
    rng = np.random.default_rng(5)
    for values in (rng.normal(3, 2, 101), rng.standard_t(2, 400).astype(np.float32),
                   pd.Series(rng.normal(size=50)), np.full(4, 2.5)):
        mine, astropys = ours(values), mad_std(values)
        assert mine == astropys and np.asarray(mine).dtype == np.asarray(astropys).dtype
