"""The mock survey: generator physics and derivatives, label structure, DR17 file layout,
determinism, and the Cramér–Rao truth products."""
from __future__ import annotations

import filecmp

import fitsio
import jax
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits as afits

from stargrad.sdss import apogee, survey
from stargrad import mock
from stargrad.mock import crb, forward, population, writer

REF = np.array([4600.0, 2.4] + [0.05 * (k % 5) - 0.1 for k in range(20)])
KEPT = apogee.KEPT_PIXELS


def test_jacobian_matches_central_finite_differences():
    with jax.enable_x64(True):
        jac = np.asarray(forward.jacobian(REF))
        assert jac.dtype == np.float64 and jac.shape == (apogee.N_PIX, mock.N_LABELS)
        for k, step in enumerate([0.5] + [1e-4] * 21):
            up, down = REF.copy(), REF.copy()
            up[k] += step
            down[k] -= step
            fd = (np.asarray(forward.spectrum(up)) - np.asarray(forward.spectrum(down))) / (2 * step)
            scale = np.abs(jac[:, k]).max()
            assert scale > 0, mock.LABELS[k]          # every label moves the spectrum
            np.testing.assert_allclose(jac[:, k], fd, atol=1e-6 * scale, err_msg=mock.LABELS[k])


def test_mg_line_deepens_with_mg_and_ignores_ni():
    pix = int(round(float(apogee.pixel_of_wavelength(15770.15))))
    near = slice(pix - 3, pix + 4)
    base = np.asarray(forward.spectrum(REF))
    more_mg, more_ni = REF.copy(), REF.copy()
    more_mg[mock.LABEL_INDEX["Mg"]] += 0.2
    more_ni[mock.LABEL_INDEX["Ni"]] += 0.3
    assert base[pix] < 0.7                                          # a strong line
    assert np.asarray(forward.spectrum(more_mg))[pix] < base[pix] - 0.005
    np.testing.assert_array_equal(np.asarray(forward.spectrum(more_ni))[near], base[near])
    assert np.any(np.asarray(forward.spectrum(more_ni)) != base)       # Ni lines elsewhere do move


def test_chip_gaps_exactly_zero_and_flux_bounded():
    flux = forward.batch_spectra(np.stack([REF, REF + np.r_[-500.0, -1.0, [0.3] * 20]]),
                              batch_size=4)
    gaps = np.setdiff1d(np.arange(apogee.N_PIX), KEPT)
    assert np.all(flux[:, gaps] == 0.0)
    assert np.all(flux[:, KEPT] > 0.0) and np.all(flux[:, KEPT] <= 1.05)
    assert flux[1, KEPT].mean() < flux[0, KEPT].mean()   # cooler and metal-rich: more absorption
    np.testing.assert_allclose(flux[0], np.asarray(forward.spectrum(REF)), atol=1e-6)
    with pytest.raises(ValueError, match="batch_spectra: labels must have shape"):
        forward.batch_spectra(np.zeros((3, 5)))


def test_label_structure():
    truth = population.draw_labels(800, 40, seed=5)
    field, cluster = truth[~truth["is_cluster"]], truth[truth["is_cluster"]]
    assert cluster["Fe"].std() < 0.05 and abs(cluster["Fe"].mean() + 1.5) < 0.1
    assert (cluster["Mg"] - cluster["Fe"]).std() < 0.05
    cluster_al = cluster["Al"] - cluster["Fe"]
    assert cluster_al.max() - cluster_al.min() > 1.0 and cluster_al.std() > 0.3
    al_fe, mg_fe = field["Al"] - field["Fe"], field["Mg"] - field["Fe"]
    disk = field["Fe"] > -0.8
    assert np.corrcoef(al_fe[disk], mg_fe[disk])[0, 1] > 0.9   # Al follows Mg in the disk
    # the accreted halo below [Fe/H] = -0.8 is Al-poor: [Al/Fe] under the whole disk's
    assert al_fe[~disk].quantile(0.1) < al_fe[disk].quantile(0.01) - 0.1
    rc, rgb = field[field["evstate"] == 1], field[field["evstate"] == 0]
    assert 0.2 < len(rc) / len(field) < 0.4
    assert rc["logg"].between(2.2, 2.9).all() and 250 < rc["dpi1"].median() < 350
    assert 50 < rgb["dpi1"].median() < 100
    # the RC sits ~100 K hotter and at lower [C/N] than RGB stars of the same log g
    band = rgb[rgb["logg"].between(2.3, 2.55)]
    assert rc["teff"].median() - band["teff"].median() > 40
    assert ((rc["C"] - rc["N"]).median() < (band["C"] - band["N"]).median())
    # scaling relations (Huber+2011 solar values), by hand for one star
    star = field.iloc[0]
    g_rel = 10.0 ** (star["logg"] - 4.438)
    radius = np.sqrt(star["mass"] / g_rel)
    assert star["numax"] == pytest.approx(3090.0 * g_rel * (star["teff"] / 5777.0) ** -0.5)
    assert star["dnu"] == pytest.approx(135.1 * star["mass"] ** 0.5 * radius ** -1.5)
    assert truth["snr"].between(40, 600).all() and (truth["snr"] > 200).mean() > 0.15
    assert (truth["anomaly"] == "continuum").sum() == 4 == (truth["anomaly"] == "binary").sum()
    assert truth.loc[truth["anomaly"] != "", "is_cluster"].eq(False).all()
    pd.testing.assert_frame_equal(truth, population.draw_labels(800, 40, seed=5))
    with pytest.raises(ValueError, match="n_anomalies"):
        population.draw_labels(3, 0, seed=1, n_anomalies=4)


SURVEY = dict(n_field=12, n_cluster=4, n_anomalies=2, missing_rate=0.05)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mock")
    writer.write_mock_survey(root / "a", seed=11, log=lambda msg: None, **SURVEY)
    return root


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_same_bytes_other_seed_differs(tiny):
    writer.write_mock_survey(tiny / "b", seed=11, log=lambda msg: None, **SURVEY)
    writer.write_mock_survey(tiny / "c", seed=12, log=lambda msg: None, **SURVEY)
    files = _files(tiny / "a")
    assert len(files) == 3 + 16 and files == _files(tiny / "b")
    match, mismatch, errors = filecmp.cmpfiles(tiny / "a", tiny / "b", files, shallow=False)
    assert not mismatch and not errors
    assert not filecmp.cmp(tiny / "a" / survey.ALLSTAR_NAME, tiny / "c" / survey.ALLSTAR_NAME,
                           shallow=False)
    with pytest.raises(ValueError, match="missing_rate must lie in"):
        writer.write_mock_survey(tiny / "d", seed=1, n_field=3, n_cluster=0, missing_rate=1.5)


def test_sharded_generation_writes_the_same_files(tiny):
    """The workflow's mock_spectra jobs (3 shards, in any order) then mock_survey: byte for
    byte the files of one write_mock_survey call, and manifests that list each star once."""
    root, settings = tiny / "sharded", dict(seed=11, **SURVEY)
    manifests = [tiny / f"shard{k}.csv" for k in range(3)]
    for k in (2, 0, 1):
        writer.write_mock_shard(root, manifests[k], shard=k, n_shards=3, log=lambda msg: None,
                                **settings)
    writer.write_mock_catalogues(root, writer.mock_population(**settings), log=lambda msg: None)
    files = _files(tiny / "a")
    assert _files(root) == files
    match, mismatch, errors = filecmp.cmpfiles(tiny / "a", root, files, shallow=False)
    assert not mismatch and not errors
    listed = pd.concat([pd.read_csv(m) for m in manifests])
    allstar = survey.read_allstar(root / survey.ALLSTAR_NAME)
    assert sorted(listed["APOGEE_ID"]) == sorted(allstar["APOGEE_ID"])
    assert all((root / path).is_file() for path in listed["path"])
    with pytest.raises(ValueError, match="shard must lie in"):
        writer.write_mock_spectra(root, writer.mock_population(**settings), shard=3, n_shards=3)


def test_dr17_layout_readable_by_astropy_and_fitsio(tiny):
    root = tiny / "a"
    allstar = survey.read_allstar(root / survey.ALLSTAR_NAME)
    wanted = ["APOGEE_ID", "TELESCOPE", "FIELD", "LOCATION_ID", "RA", "DEC", "SNR", "STARFLAG",
              "ASPCAPFLAG", "VSCATTER", "NVISITS", "M_H", "M_H_ERR", "ALPHA_M", "ALPHA_M_ERR",
              "MEMBER"]
    wanted += [c + e for c in map(apogee.allstar_column, mock.LABELS) for e in ("", "_ERR")]
    assert set(wanted) <= set(allstar.columns) and len(allstar) == 16
    assert allstar["APOGEE_ID"].str.fullmatch(r"2M\d{8}[+-]\d{7}").all()
    assert allstar["APOGEE_ID"].is_unique
    assert (allstar["MEMBER"] == "M13").sum() == 4 and (allstar["FIELD"] == "M13").sum() == 4
    assert fitsio.read_header(str(root / survey.ALLSTAR_NAME), ext=0)["SGSEED"] == 11
    star = allstar.iloc[0]
    path = root / survey.aspcapstar_relpath(star["TELESCOPE"], star["FIELD"], star["APOGEE_ID"])
    with afits.open(path) as hdul:
        assert len(hdul) == 5 and hdul[0].header["SGSEED"] == 11
        for ext in (1, 2, 3):
            assert hdul[ext].data.shape == (apogee.N_PIX,)
            assert hdul[ext].header["CRVAL1"] == pytest.approx(4.179)
            assert hdul[ext].header["CDELT1"] == pytest.approx(6e-6)
            assert hdul[ext].header["CTYPE1"] == "LOG-LINEAR"
        assert hdul[4].data["APOGEE_ID"][0].strip() == star["APOGEE_ID"]
    with fitsio.FITS(str(path)) as fh:
        assert len(fh) == 5 and fh[1].read_header()["CDELT1"] == pytest.approx(6e-6)
    seismic = pd.read_csv(root / survey.SEISMIC_NAME)
    assert tuple(seismic.columns) == survey.SEISMIC_COLUMNS
    assert set(seismic["EVSTATE"]) <= {1, 2} and len(seismic) == round(0.7 * 12)
    assert set(seismic["APOGEE_ID"]) <= set(allstar.loc[allstar["MEMBER"] == "", "APOGEE_ID"])


def test_catalogue_is_truth_and_spectra_are_model_plus_noise(tiny):
    root = tiny / "a"
    allstar = survey.read_allstar(root / survey.ALLSTAR_NAME).set_index("APOGEE_ID")
    truth = writer.read_truth(root).set_index("APOGEE_ID").loc[allstar.index]
    n_missing = 0
    for label in mock.LABELS:
        column = apogee.allstar_column(label)
        value, error = allstar[column].to_numpy(), allstar[column + "_ERR"].to_numpy()
        missing = value == apogee.MAGIC_NUMBER
        n_missing += missing.sum()
        np.testing.assert_array_equal(error == apogee.MAGIC_NUMBER, missing)
        expect = truth[label].to_numpy()
        if label not in ("teff", "logg", "Fe"):
            expect = expect - truth["Fe"].to_numpy()
        np.testing.assert_allclose(value[~missing], expect[~missing], rtol=1e-5, atol=1e-5)
        assert np.all(error[~missing] > 0)
    assert n_missing > 0
    for ident, star in allstar.iloc[:6].iterrows():
        path = root / survey.aspcapstar_relpath(star["TELESCOPE"], star["FIELD"], ident)
        flux, error = survey.read_aspcapstar(path)
        model = fitsio.read(str(path), ext=3)
        theta = truth.loc[ident, list(mock.LABELS)].to_numpy(float)
        np.testing.assert_allclose(model, np.asarray(forward.spectrum(theta)), atol=1e-6)
        good = np.zeros(apogee.N_PIX, bool)
        good[KEPT] = error[KEPT] < 1.0
        assert np.all(error[good] == np.float32(1.0 / star["SNR"]))
        assert np.all(flux[~np.isin(np.arange(apogee.N_PIX), KEPT)] == 0.0)
        if truth.loc[ident, "anomaly"] == "":
            pull = (flux[good] - model[good]) / error[good]
            assert abs(pull.std() - 1.0) < 0.05 and abs(pull.mean()) < 0.05


STARS = np.array([REF,                                                   # reference giant
                  [3900.0, 0.9] + [0.35] * 20,                           # cool, metal-rich
                  [5300.0, 3.4] + [-1.6] * 20,                           # hot, metal-poor
                  [4300.0, 1.8] + [0.05 * (k % 7) - 0.4 for k in range(20)]])


@pytest.mark.parametrize("theta", STARS, ids=["ref", "cool-rich", "hot-poor", "mixed"])
def test_crb_scales_with_snr_and_weights_are_unbiased(theta):
    error = np.full(apogee.N_PIX_GAPLESS, 0.01, np.float32)
    sigma = crb.crb(theta, error)
    assert sigma.dtype == np.float64
    np.testing.assert_allclose(crb.crb(theta, error / 2), sigma / 2, rtol=1e-10)
    # against a float64 computation of sqrt(diag F⁻¹) from the same (float32) Jacobian
    grad = np.asarray(forward.jacobian(np.asarray(theta, np.float32)), float)[KEPT]
    fisher = grad.T @ grad / 0.01 ** 2
    np.testing.assert_allclose(sigma, np.sqrt(np.diag(np.linalg.inv(fisher))), rtol=1e-6)
    # the efficient estimator is unbiased to first order: W G = identity (in units of each
    # label's σ, since Teff is in K and abundances in dex); a float32 solve misses this by
    # ~1e-3 at the cool metal-rich star
    weights = crb.efficient_weights(theta, error)
    assert weights.shape == (mock.N_LABELS, apogee.N_PIX_GAPLESS)
    np.testing.assert_allclose(weights @ grad * sigma[None, :] / sigma[:, None],
                               np.eye(mock.N_LABELS), atol=1e-6)


def _compiled_test_split(path, ids):
    """A compiled split's LABELS table with just the star IDs (all truth products read)."""
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        fits.write(survey.to_records(pd.DataFrame({"APOGEE_ID": ids})), extname="LABELS")


def test_write_truth_products(tiny, tmp_path):
    root = tiny / "a"
    truth = writer.read_truth(root)
    split = pd.DataFrame({"APOGEE_ID": truth["APOGEE_ID"],
                          "split": np.where(truth["is_cluster"], "cluster",
                                            ["test", "train"] * 8)})
    split.to_csv(tmp_path / "split.csv", index=False)
    test_ids = split.loc[split["split"] == "test", "APOGEE_ID"].to_numpy()
    _compiled_test_split(tmp_path / "test.fits", test_ids[::-1])   # order must not matter
    out = tmp_path / "crb.fits"
    crb.write_truth_products(root, tmp_path / "split.csv", tmp_path / "test.fits", out,
                             max_stars=4, seed=9, chunk_size=8, log=lambda msg: None)
    table = fitsio.read(str(out), ext="CRB")
    assert len(table) == 6 + 4 and set(np.char.strip(table["split"].astype(str))) == {"test",
                                                                                      "cluster"}
    # the weights average the 4 stars the attribute rule draws with the same seed, and say so
    stars = np.char.strip(fitsio.read(str(out), ext="ATTRIBUTION_STARS")["APOGEE_ID"].astype(str))
    from stargrad.datasets.select import sample_stars
    assert sorted(stars) == sorted(test_ids[sample_stars(test_ids, 4, 9)])
    weights = fitsio.read(str(out), ext="EFFICIENT_WEIGHTS")
    assert weights.shape == (mock.N_LABELS, apogee.N_PIX_GAPLESS)
    allstar = survey.read_allstar(root / survey.ALLSTAR_NAME).set_index("APOGEE_ID")
    by_id = truth.set_index("APOGEE_ID")
    expect_w = np.zeros_like(weights, dtype=float)
    for ident in stars:
        star = allstar.loc[ident]
        _, error = survey.read_aspcapstar(
            root / survey.aspcapstar_relpath(star["TELESCOPE"], star["FIELD"], ident))
        theta = by_id.loc[ident, list(mock.LABELS)].to_numpy(np.float32)
        expect_w += crb.efficient_weights(theta, error) / len(stars)
    np.testing.assert_allclose(weights, expect_w, rtol=1e-4, atol=1e-6 * np.abs(expect_w).max())
    ident = table["APOGEE_ID"][0].strip()
    star = allstar.loc[ident]
    _, error = survey.read_aspcapstar(
        root / survey.aspcapstar_relpath(star["TELESCOPE"], star["FIELD"], ident))
    theta = by_id.loc[ident, list(mock.LABELS)].to_numpy(np.float32)
    got = np.array([table[f"crb_{label}"][0] for label in mock.LABELS])
    np.testing.assert_allclose(got, crb.crb(theta, error), rtol=1e-6)
    split.drop(columns="split").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="bad.csv.*lacks columns"):
        crb.write_truth_products(root, tmp_path / "bad.csv", tmp_path / "test.fits", out,
                                 max_stars=4, seed=9)


def test_listed_molecules_carry_the_line_lists_band_heads_and_lte_temperature_laws():
    """The mock's CN, OH and CO come from the bundled DR17 molecular list: a listed 12C16O line
    within 0.3 Å (1 px) of each 12CO Δv = 3 band head of the 541-line summary list (a wrong
    air-to-vacuum conversion moves them by 4 Å); each molecule's strongest line at the reference
    star has log τ = MOLECULE_LOG_TAU_MAX; an OH line's χ_eff is the molecule's (−6 eV) plus
    the line's own χ from the list; in the forward model the strong OH lines deepen from 4500 K to
    3800 K."""
    from stargrad.mock import forward, lines
    listed = apogee.load_molecular_lines()
    co = listed[listed["species"].eq("12C16O")]["vac"].to_numpy()
    for head in lines.CO_BAND_HEADS:
        assert np.min(np.abs(co - head)) < 0.3, head
    table = lines.line_table()
    molecular = table[table["kind"].eq("molecular")]
    strongest = molecular.groupby("species")["log_tau_ref"].max()
    assert strongest.to_dict() == pytest.approx(lines.MOLECULE_LOG_TAU_MAX)
    assert molecular["log_tau_ref"].gt(lines.MOLECULE_LOG_TAU_MIN).all()
    both = lines.listed_molecular_lines()
    assert set(both["species"]) == {"CN", "OH", "CO"} and len(both) == len(molecular)
    oh = molecular[molecular["species"].eq("OH")]
    listed_oh = listed[listed["species"].eq("16OH")]
    pairs = set(zip(listed_oh["vac"].round(3), (listed_oh["chi_eV"] - 6.0).round(3)))
    assert set(zip(oh["wavelength"].round(3), oh["chi_eff"].round(3))) <= pairs
    strong = oh[(oh["log_tau_ref"] > -1.0)
                & np.isin(np.round(oh["pixel"]).astype(int), apogee.KEPT_PIXELS)]
    pixels = np.round(strong["pixel"]).astype(int).to_numpy()

    def depth(teff):
        flux = np.asarray(forward.spectrum(np.array([teff, 2.5] + [0.0] * 20)))
        return 1.0 - flux[pixels]

    assert len(pixels) > 20 and np.mean(depth(3800.0) - depth(4500.0)) > 0.05


def test_turbospectrum_reader_parses_blocks_converts_to_vacuum_and_names_bad_files(tmp_path):
    """Two blocks in Turbospectrum's format (header, comment, transitions) give every
    transition with its species code; vacuum wavelengths match the 541-line list's own air/vac
    pairs within 0.01 Å; a block whose count does not match and an unparsable line are
    errors naming the file and line."""
    from stargrad.sdss import turbospectrum
    text = ("'0607.012014 '            1      2\n'Sneden web '\n"
            " 15003.781  0.745  -2.939  0.00   66.0  1.00e+00  0.000  'x' 'x'  0.0  1.0\n"
            " 15004.299  0.745  -1.458  0.00   66.0  1.00e+00  0.000  'x' 'x'  0.0  1.0\n"
            "'0108.001016 '            1      1\n'OH Brooke'\n"
            " 15002.153  1.000  -5.000  0.00    8.0  1.00e+00  0.000  'x' 'x'  0.0  1.0\n")
    path = tmp_path / "two.molec"
    path.write_text(text)
    table = turbospectrum.read_turbospectrum(path)
    assert table["code"].tolist() == ["0607.012014", "0607.012014", "0108.001016"]
    assert table["loggf"].tolist() == [-2.939, -1.458, -5.0]
    assert table["chi_eV"].tolist() == [0.745, 0.745, 1.0]
    catalogue = apogee.load_lines()
    np.testing.assert_allclose(turbospectrum.air_to_vacuum(catalogue["air"]), catalogue["vac"],
                               atol=0.01)
    assert np.all(table["vac"] - table["air"] > 4.0)
    path.write_text(text.replace("1      2", "1      3"))
    with pytest.raises(ValueError, match=r"two.molec.*0607.012014 announces 3 lines but has 2"):
        turbospectrum.read_turbospectrum(path)
    path.write_text(text.replace(" 15004.299  0.745", " 15004.299  abc"))
    with pytest.raises(ValueError, match=r"two.molec:4: expected"):
        turbospectrum.read_turbospectrum(path)

