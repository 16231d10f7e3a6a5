"""The real-vs-mock machinery (bench/real_vs_mock.py): on a spectrum the forward model made,
the fit returns the labels within their Cramér–Rao errors and a reduced χ² of 1
(σ²/(σ² + floor²) with the floor), and the residual is white; on the real giant it gives a
finite χ² and a figure; residual features are named from the line list."""
from pathlib import Path

import numpy as np
import pytest

from stargrad.sdss import apogee
from stargrad import mock
from stargrad.mock import real_vs_mock
from stargrad.mock import crb, forward

GIANT = Path(__file__).parent / "data" / "real_dr17" / "apStar-dr17-2M17335483-2753043.fits"
N_ITER = 10
#: One start besides the population's mean and best prototype (exercises `extra_starts`).
STARTS = real_vs_mock.label_vector(4500.0, 2.5, 0.0)[None]


@pytest.fixture(scope="module")
def box():
    return real_vs_mock.mock_box(n_stars=200, n_prototypes=8)


def test_fit_of_a_mock_spectrum_returns_its_labels_and_unit_reduced_chi2(box):
    truth = mock.population.draw_labels(5, 0, seed=11, n_anomalies=0)
    labels = truth[list(mock.LABELS)].to_numpy(float)[0]
    sigma = 0.01
    error = np.full(apogee.N_PIX_GAPLESS, sigma)
    rng = np.random.default_rng(1)
    mask = np.zeros(apogee.N_PIX_GAPLESS, bool)
    mask[2000:2100] = True
    model = forward.batch_spectra(labels[None])[0, apogee.KEPT_PIXELS].astype(float)
    operator, columns = real_vs_mock.model_continuum(error, mask)   # normalized as the data
    flux = model / (operator @ model[columns]) + rng.normal(size=error.shape) * sigma
    flux[2000:2100] = 7.0                                   # masked pixels hold anything
    fits = real_vs_mock.fit_real(flux, error, mask, box, starts=STARTS, n_iter=N_ITER)
    raw, floor = fits["raw"], fits["floor"]
    assert raw["converged"] and raw["dof"] == apogee.N_PIX_GAPLESS - 100 - 22
    assert abs(raw["reduced_chi2"] - 1.0) < 0.05
    expected = sigma ** 2 / (sigma ** 2 + real_vs_mock.ERROR_FLOOR ** 2)
    assert abs(floor["reduced_chi2"] - expected) < 0.03
    bound = crb.crb(labels, np.where(mask, 1e10, error))
    z = (raw["labels"] - labels) / bound
    assert np.all(np.abs(z) < 5), z
    diag = real_vs_mock.diagnose(flux, mask, raw)
    shares = [c["chi2_share"] for c in diag["classes"].values()]
    assert abs(sum(shares) - 1.0) < 1e-9
    assert diag["acf_hwhm_px"] < 1.0 < diag["lsf_acf_hwhm_px"]    # white residual
    assert diag["large_scale_share"] < 0.05
    assert abs(diag["classes"]["continuum"]["mean_residual"]) < 1e-3


def test_features_are_named_from_the_line_list():
    lines = real_vs_mock.named_lines()
    wave = apogee.wavelength(apogee.N_PIX_GAPLESS)
    vac = np.sort(lines["vac"].to_numpy())
    isolated = [w for w in lines[lines["species"].eq("Fe I")]["vac"]
                if np.min(np.abs(vac[vac != w] - w)) > 2.0 and wave[100] < w < wave[2900]]
    fe = isolated[len(isolated) // 2]
    centre = int(np.argmin(np.abs(wave - fe)))
    resid = np.zeros(apogee.N_PIX_GAPLESS)
    resid[centre - 2:centre + 3] = -30.0
    resid[100] = 5.0                                        # one pixel: smoothed away
    features = real_vs_mock.residual_features(resid, np.zeros(resid.shape, bool), n_features=2)
    assert features["line"].iloc[0] == "Fe I"
    assert features["line_vac"].iloc[0] == pytest.approx(fe)
    assert features["residual"].iloc[0] < -20 and features["also"].iloc[0] == ""


def test_real_giant_gives_a_finite_chi2_and_a_figure(box, tmp_path):
    flux, error, mask = real_vs_mock.read_real(GIANT)
    assert flux.shape == (apogee.N_PIX_GAPLESS,) and 0 < mask.sum() < 1000
    fits = real_vs_mock.fit_real(flux, error, mask, box, starts=STARTS, n_iter=N_ITER)
    fit = fits["floor"]
    assert np.isfinite(fit["reduced_chi2"]) and fit["reduced_chi2"] > 1.0
    assert fits["raw"]["reduced_chi2"] > fit["reduced_chi2"]
    # the mock with the DR17 molecular lines: 33.6 in the full fit (README); the mock with
    # CN and OH at random positions was at 86.7, with air wavelengths taken as vacuum 137
    assert fit["reduced_chi2"] < 45.0
    lower, upper = box[0] + box[1] * box[2], box[0] + box[1] * box[3]
    assert np.all((fit["labels"] >= lower - 1e-9) & (fit["labels"] <= upper + 1e-9))
    diag = real_vs_mock.diagnose(flux, mask, fit)
    path = tmp_path / "giant.png"
    real_vs_mock.residual_figure(path, "giant", flux, mask, fit, diag["features"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
