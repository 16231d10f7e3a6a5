"""astroNN-style continuum normalization of apStar spectra, and the apStar reader."""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pytest
from numpy.polynomial import Chebyshev

from stargrad.sdss import apogee, continuum
from stargrad.sdss.continuum import continuum_normalize, read_apstar
from stargrad.sdss.survey import SurveyFileError

P = apogee.N_PIX_GAPLESS
CRPIX = 1 << apogee.PIXMASK_BITS["CRPIX"]
PERSIST_HIGH = 1 << apogee.PIXMASK_BITS["PERSIST_HIGH"]  # not an astroNN mask bit


def _continuum():
    """A known degree-2 continuum per chip (1e-17 erg/s/cm²/Å), different on each chip."""
    out = np.empty(P)
    for k, (a, b) in enumerate(apogee.CHIP_OFFSETS.values()):
        x = np.arange(b - a)
        out[a:b] = Chebyshev([300.0 + 50 * k, -40.0 + 10 * k, 15.0], domain=[0, b - a - 1])(x)
    return out


def _lines():
    """Absorption lines (depths 0.1–0.6) on non-continuum pixels only; 1 elsewhere."""
    rng = np.random.default_rng(3)
    depth = np.zeros(P)
    free = np.setdiff1d(np.arange(P), apogee.continuum_pixels())
    depth[rng.choice(free, 800, replace=False)] = rng.uniform(0.1, 0.6, 800)
    return 1.0 - depth


def test_recovers_known_continuum_and_lines():
    cont, lines = _continuum(), _lines()
    flux, error = cont * lines, 0.01 * cont
    norm, err, _ = continuum_normalize(flux, error)
    assert norm.shape == (P,) and norm.dtype == np.float32
    np.testing.assert_allclose(norm[apogee.continuum_pixels()], 1.0, atol=1e-5)
    np.testing.assert_allclose(norm, lines, atol=1e-5)
    np.testing.assert_allclose(err, 0.01, rtol=1e-4)


def test_full_grid_input_and_batches_match_single_spectra():
    cont, lines = _continuum(), _lines()
    flux = apogee.gap_insert(np.stack([cont * lines, 2.0 * cont * lines]), fill=0.0)
    error = apogee.gap_insert(np.stack([0.01 * cont, 0.03 * cont]), fill=0.0)
    norm, err, _ = continuum_normalize(flux, error)
    assert norm.shape == (2, P)
    one, one_err, _ = continuum_normalize(flux[1], error[1])
    np.testing.assert_array_equal(norm[1], one)
    np.testing.assert_array_equal(err[1], one_err)
    np.testing.assert_allclose(norm, np.stack([lines, lines]), atol=1e-5)


def test_inverse_variance_weights_downweight_noisy_outliers():
    cont = _continuum()
    flux, error = cont.copy(), 0.01 * cont
    outliers = apogee.continuum_pixels()[::10]
    flux[outliers] *= 1.5
    error[outliers] *= 1e3  # weight 1e-6 of the others': the fit must ignore them
    norm, _, _ = continuum_normalize(flux, error)
    good = np.setdiff1d(apogee.continuum_pixels(), outliers)
    np.testing.assert_allclose(norm[good], 1.0, atol=1e-4)
    unweighted, _, _ = continuum_normalize(flux, np.full(P, 0.01 * cont.mean()))
    assert np.abs(unweighted[good] - 1.0).max() > 0.02  # equal weights are pulled up


def test_masked_bits_set_flux_and_error_to_one_and_skip_the_fit():
    cont, lines = _continuum(), _lines()
    flux, error = cont * lines, 0.01 * cont
    mask = np.zeros(P, dtype=np.int64)
    cont_pix = apogee.continuum_pixels()
    hit = cont_pix[::7]
    persist = np.setdiff1d(cont_pix[3::50], hit)
    flux[hit] = 1e6  # cosmic rays on continuum pixels: masked, must not bend the fit
    mask[hit] = CRPIX
    mask[persist] |= PERSIST_HIGH
    norm, err, _ = continuum_normalize(flux, error, mask)
    np.testing.assert_array_equal(norm[hit], 1.0)
    np.testing.assert_array_equal(err[hit], 1.0)
    keep = np.setdiff1d(np.arange(P), hit)
    np.testing.assert_allclose(norm[keep], lines[keep], atol=1e-5)
    np.testing.assert_allclose(err[persist], 0.01, rtol=1e-4)  # bit 9 is not masked
    # with bit 9 among the bits it is
    norm9, err9, _ = continuum_normalize(flux, error, mask, bits=(1, 9))
    assert np.all(norm9[persist] == 1.0) and np.all(err9[persist] == 1.0)


def test_negative_and_nonfinite_flux():
    cont = _continuum()
    flux, error = cont.copy(), 0.01 * cont
    flux[100], flux[101], error[102] = -5.0, np.nan, np.inf
    norm, err, _ = continuum_normalize(flux, error)
    assert norm[100] == 0.0
    assert (norm[101], err[101]) == (1.0, 1.0)
    assert (norm[102], err[102]) == (1.0, 1.0)
    assert np.all(np.isfinite(norm)) and np.all(np.isfinite(err))


def test_dead_chip_gives_ones():
    cont = _continuum()
    flux = cont.copy()
    a, b = apogee.CHIP_OFFSETS["green"]
    flux[a:b] = np.nan
    norm, err, _ = continuum_normalize(flux, 0.01 * cont)
    assert np.all(norm[a:b] == 1.0) and np.all(err[a:b] == 1.0)
    np.testing.assert_allclose(norm[:a], 1.0, atol=1e-5)


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match="flux must have shape"):
        continuum_normalize(np.ones(7000), np.ones(7000))
    with pytest.raises(ValueError, match="differ"):
        continuum_normalize(np.ones(P), np.ones(apogee.N_PIX)[None].repeat(2, 0))
    with pytest.raises(ValueError, match="bitmask"):
        continuum_normalize(np.ones(P), np.ones(P), np.zeros(100, dtype=int))


def _write_apstar(path, flux, error, mask):
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        fits.write(None, header={"TELESCOP": "apo25m"})
        for arr, name in ((flux, "FLUX"), (error, "ERROR"), (mask, "MASK"), (flux, "SKY FLUX")):
            fits.write(arr, extname=name)


def test_read_apstar_single_and_multi_visit(tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.uniform(100, 200, (4, apogee.N_PIX)).astype(np.float32)
    masks = rng.integers(0, 1 << 14, (4, apogee.N_PIX)).astype(np.int32)
    _write_apstar(tmp_path / "multi.fits", rows, rows / 100, masks)
    flux, error, mask = read_apstar(tmp_path / "multi.fits")
    np.testing.assert_array_equal(flux, rows[0])
    np.testing.assert_array_equal(error, rows[0] / 100)
    np.testing.assert_array_equal(mask, masks[0])
    _write_apstar(tmp_path / "one.fits", rows[2], rows[2] / 100, masks[2])
    flux, _, mask = read_apstar(tmp_path / "one.fits")
    np.testing.assert_array_equal(flux, rows[2])
    np.testing.assert_array_equal(mask, masks[2])


def test_read_apstar_bad_files_name_the_path(tmp_path):
    with pytest.raises(SurveyFileError, match="missing"):
        read_apstar(tmp_path / "nope.fits")
    short = np.ones(100, dtype=np.float32)
    _write_apstar(tmp_path / "short.fits", short, short, short.astype(np.int32))
    with pytest.raises(SurveyFileError, match=r"short\.fits.*shape"):
        read_apstar(tmp_path / "short.fits")
    good = tmp_path / "good.fits"
    full = np.ones(apogee.N_PIX, dtype=np.float32)
    _write_apstar(good, full, full, full.astype(np.int32))
    (tmp_path / "cut.fits").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(SurveyFileError, match=r"cut\.fits"):
        read_apstar(tmp_path / "cut.fits")


def test_apstar_masked_pixels_stay_masked_in_the_compiled_split(tmp_path):
    """The continuum step sets masked pixels to flux 1 and error 1, which the bad-error cut
    alone would not catch: the compiled MASK must flag them and the training statistics must
    leave them out."""
    import pandas as pd

    from stargrad.sdss import survey
    from stargrad.datasets.compile import compile_dataset
    from stargrad.datasets.dataset import Normalizer, load_split
    from stargrad.tasks import make_task

    cont, lines = _continuum(), _lines()
    ids = [f"2M0000000{i}+0000000" for i in range(3)]
    masked = apogee.KEPT_PIXELS[2000:2040]
    for ident in ids:
        flux = np.zeros(apogee.N_PIX, np.float32)
        flux[apogee.KEPT_PIXELS] = cont * lines
        mask = np.zeros(apogee.N_PIX, np.int32)
        mask[masked] = CRPIX
        flux[masked] = 1e5                       # a cosmic ray: not flux 1 until normalized
        path = tmp_path / survey.spectrum_relpath("apStar", "apo25m", "F", ident)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_apstar(path, flux, np.full(apogee.N_PIX, 0.5, np.float32), mask)
    table = pd.DataFrame({"APOGEE_ID": ids, "TELESCOPE": "apo25m", "FIELD": "F",
                          "TEFF": [4500.0, 4600.0, 4700.0], "LOGG": 2.5, "FE_H": 0.0})
    survey.write_allstar(tmp_path / survey.ALLSTAR_NAME, table)
    pd.DataFrame({"APOGEE_ID": ids, "split": "train"}).to_csv(tmp_path / "split.csv",
                                                              index=False)
    compile_dataset(tmp_path / "split.csv", tmp_path / survey.ALLSTAR_NAME, None, tmp_path,
                    [tmp_path / "train.fits"], tmp_path / "q.csv", spectra="apStar",
                    log=lambda msg: None)
    data = load_split(tmp_path / "train.fits")
    assert len(data) == 3
    np.testing.assert_array_equal(data.mask[:, 2000:2040], True)
    assert data.mask.sum() == 3 * 40
    np.testing.assert_array_equal(data.flux[:, 2000:2040], 1.0)
    norm = Normalizer.fit(data, make_task("teff", {"dataset": "d", "labels": ["teff"]}), "mean")
    # the masked pixels have no good value: their mean falls back to 0 instead of 1
    np.testing.assert_array_equal(norm.input_mean[2000:2040], 0.0)


REAL_DR17 = Path(__file__).parent / "data" / "real_dr17"


def test_the_continuum_operator_is_the_fit_continuum_normalize_makes():
    """`continuum_operator` (a model normalized as the data were) reproduces the continuum
    that `continuum_normalize` divides the real apStar files by, to float rounding."""
    for path in sorted(REAL_DR17.glob("apStar-*.fits")):
        flux, error, bitmask = continuum.read_apstar(path)
        norm, _, bad = continuum.continuum_normalize(flux, error, bitmask)
        raw, raw_error = apogee.gap_delete(flux), apogee.gap_delete(error)
        usable = np.zeros(apogee.N_PIX_GAPLESS, bool)
        usable[apogee.continuum_pixels()] = True
        usable &= ~apogee.bitmask_boolean(apogee.gap_delete(bitmask), apogee.ASTRONN_MASK_BITS)
        usable &= np.isfinite(raw) & np.isfinite(raw_error)
        fitted = continuum.continuum_operator(raw_error, usable) @ raw[usable]
        np.testing.assert_allclose(raw[~bad] / fitted[~bad], norm[~bad], rtol=1e-6)
