"""Two real SDSS DR17 apStar files (tests/data/real_dr17: a 3-visit giant with 5 rows, a
1-visit dwarf with 2 rows; row 0, the pixel-weighted combined spectrum, is the one read) through
every path that takes an apStar: the download from a local SAS directory and from a loopback
HTTP server, compile (`survey.sas.spectra: apStar`), the catalogue, and
`stargrad.load(...).predict/explain/reconstruct` — which tell apStar from aspcapStar by the
file's HDU layout, not its name. Models are trained on a 40-star mock in the fixture."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd
import pytest

import stargrad
from stargrad.sdss import apogee, download, survey
from stargrad.sdss.apogee import ASPCAP_LABELS
from stargrad.datasets.compile import compile_dataset
from stargrad.sdss.continuum import continuum_normalize
from stargrad.datasets.dataset import load_split
from stargrad.mock import writer as mock_writer
from stargrad.stages.catalogue import FLAGS, predict_shard, write_reference
from stargrad.stages.train import train_model
from stargrad.tasks import Task

from dr17_tables import allstar_table
from httpserver import serve

REAL = Path(__file__).parent / "data" / "real_dr17"
#: APOGEE_ID -> (FIELD, rows in HDUs 1–3, pixels the astroNN APOGEE_PIXMASK bits flag in row 0)
STARS = {"2M17335483-2753043": ("000+02", 5, 121),
         "2M19485057+5005279": ("K04_083+13", 2, 245)}
QUIET = dict(log=lambda _: None)
FAST = dict(retries=1, backoff_s=0.0, timeout_s=5)


def _real_path(apogee_id: str) -> Path:
    return REAL / f"apStar-dr17-{apogee_id}.fits"


@pytest.fixture(scope="module")
def sas(tmp_path_factory):
    """A DR17 `redux/dr17/stars` tree holding the two real files and their fields' sha1sum
    lists, and an allStar that lists the two stars."""
    root = tmp_path_factory.mktemp("sas")
    for apogee_id, (field, _, _) in STARS.items():
        rel = survey.spectrum_relpath("apStar", "apo25m", field, apogee_id)
        (root / rel).parent.mkdir(parents=True)
        shutil.copyfile(_real_path(apogee_id), root / rel)
        digest = hashlib.sha1((root / rel).read_bytes()).hexdigest()
        (root / "apo25m" / field / download.checksum_list_name("apo25m", field, "apStar")
         ).write_text(f"{digest}  {Path(rel).name}\n")
    table = allstar_table(list(STARS), [f for f, _, _ in STARS.values()],
                          np.random.default_rng(0))
    survey.write_allstar(root / survey.ALLSTAR_NAME, table)
    return root


@pytest.fixture(scope="module")
def survey_root(sas, tmp_path_factory):
    """The real files downloaded from the local SAS directory, as `survey.sas` does."""
    root = tmp_path_factory.mktemp("resources")
    stars = survey.read_allstar(sas / survey.ALLSTAR_NAME)
    manifest = download.download_spectra(stars, root, str(sas), spectra="apStar", **FAST,
                                         **QUIET)
    assert (manifest["status"] == "ok").all(), manifest
    shutil.copyfile(sas / survey.ALLSTAR_NAME, root / survey.ALLSTAR_NAME)
    return root


@pytest.fixture(scope="module")
def compiled(survey_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_data")
    pd.DataFrame({"APOGEE_ID": list(STARS), "split": "test"}).to_csv(out / "split.csv",
                                                                     index=False)
    compile_dataset(out / "split.csv", survey_root / survey.ALLSTAR_NAME, None, survey_root,
                    [out / "test.fits"], out / "quarantine.csv", spectra="apStar", **QUIET)
    return load_split(out / "test.fits"), pd.read_csv(out / "quarantine.csv"), out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Ridge (supervised) and a 2-component PCA (generative) trained on a 40-star mock's
    aspcap task, and the mock's compiled train split."""
    root = tmp_path_factory.mktemp("mock")
    mock_writer.write_mock_survey(root / "survey", n_field=40, n_cluster=0, seed=3,
                                  n_anomalies=0, **QUIET)
    allstar = survey.read_allstar(root / "survey" / survey.ALLSTAR_NAME)
    pd.DataFrame({"APOGEE_ID": allstar["APOGEE_ID"], "split": ["train"] * 30 + ["valid"] * 10}
                 ).to_csv(root / "split.csv", index=False)
    splits = [root / "train.fits", root / "valid.fits"]
    compile_dataset(root / "split.csv", root / "survey" / survey.ALLSTAR_NAME, None,
                    root / "survey", splits, root / "quarantine.csv", **QUIET)
    task = Task("aspcap", "main", tuple(ASPCAP_LABELS))
    specs = {"linear": {"family": "linear", "hyper": {"alpha": 0.1}},
             "pca_2": {"family": "pca", "hyper": {"n_components": 2}}}
    dirs = {}
    for name, spec in specs.items():
        dirs[name] = root / "models" / name / "aspcap"
        train_model(*splits, dirs[name], task=task, model_name=name, model_spec=spec, seed=0,
                    code_digest="test", config_digest="test", **QUIET)
    return {"root": root, "models": dirs, "train": splits[0], "split_csv": root / "split.csv"}


# --------------------------------------------------------------------------- the files

def test_real_files_are_told_apart_by_their_layout(tmp_path):
    for apogee_id, (_, rows, _) in STARS.items():
        assert survey.spectrum_kind(_real_path(apogee_id)) == "apStar"
        assert fitsio.read(_real_path(apogee_id), 1).shape == (rows, apogee.N_PIX)
    # a name is not a kind: the giant under an aspcapStar name is still an apStar
    renamed = tmp_path / "aspcapStar-dr17-2M17335483-2753043.fits"
    shutil.copyfile(_real_path("2M17335483-2753043"), renamed)
    assert survey.spectrum_kind(renamed) == "apStar"
    mock = tmp_path / "apStar-dr17-looks-like-one.fits"
    survey.write_aspcapstar(mock, np.ones(apogee.N_PIX), np.full(apogee.N_PIX, 0.01))
    assert survey.spectrum_kind(mock) == "aspcapStar"


# --------------------------------------------------------------------------- download

def test_download_from_a_loopback_sas_gives_the_same_verified_files(sas, survey_root,
                                                                   tmp_path):
    stars = survey.read_allstar(sas / survey.ALLSTAR_NAME)
    with serve(sas) as server:
        manifest = download.download_spectra(stars, tmp_path, server.url, spectra="apStar", allow_http=True,
                                             **FAST, **QUIET)
        fetched = sorted(path for path, _, status in server.requests if status == 200)
    assert (manifest["status"] == "ok").all(), manifest
    assert [p for p in fetched if p.endswith(".fits")] == sorted(
        "/" + survey.spectrum_relpath("apStar", "apo25m", f, i) for i, (f, _, _) in STARS.items())
    for path in manifest["path"]:
        rel = Path(path).relative_to(tmp_path)
        assert Path(path).read_bytes() == (survey_root / rel).read_bytes()
        assert manifest.set_index("path").loc[path, "sha1"] == hashlib.sha1(
            (sas / rel).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- compile

def test_compile_reads_row_0_masks_the_pixmask_bits_and_normalizes(compiled):
    data, quarantine, _ = compiled
    assert len(quarantine) == 0 and list(data.ids) == list(STARS)
    is_continuum = np.zeros(apogee.N_PIX_GAPLESS, bool)
    is_continuum[apogee.continuum_pixels()] = True
    for k, (apogee_id, (_, _, n_flagged)) in enumerate(STARS.items()):
        flux, error, bits = (fitsio.read(_real_path(apogee_id), ext) for ext in (1, 2, 3))
        flagged = apogee.gap_delete(apogee.bitmask_boolean(bits[0]))
        # every bad pixel of these two files is one the APOGEE_PIXMASK bits flag
        assert flagged.sum() == n_flagged
        np.testing.assert_array_equal(data.mask[k], flagged)
        assert (data.flux[k, flagged] == 1).all() and (data.error[k, flagged] == 1).all()
        # row 0 (pixel-weighted combination), not row 1 (global weighting)
        row0 = continuum_normalize(flux[0], error[0], bits[0])
        np.testing.assert_array_equal(data.flux[k], row0[0])
        row1 = continuum_normalize(flux[1], error[1], bits[1])
        assert not np.array_equal(data.flux[k], row1[0])
        for start, stop in apogee.CHIP_OFFSETS.values():
            good = ~data.mask[k, start:stop]
            chip = data.flux[k, start:stop]
            # the continuum fit puts the continuum pixels at 1 and the lines below it
            assert abs(np.median(chip[good & is_continuum[start:stop]]) - 1) < 0.015
            assert 0.85 < np.median(chip[good]) < 1.0
        snr = fitsio.read_header(_real_path(apogee_id), 0)["SNR"]
        # normalized errors ≈ 1 / (S/N) on the continuum (within a factor 2: S/N varies)
        median_error = np.median(data.error[k, ~data.mask[k] & is_continuum])
        assert 0.5 / snr < median_error < 2.0 / snr


def test_compile_as_aspcapstar_quarantines_the_apstar_files_with_the_reason(survey_root,
                                                                            compiled, tmp_path):
    _, _, out = compiled
    root = tmp_path / "renamed"
    for apogee_id, (field, _, _) in STARS.items():
        dest = root / survey.aspcapstar_relpath("apo25m", field, apogee_id)
        dest.parent.mkdir(parents=True)
        shutil.copyfile(_real_path(apogee_id), dest)
    compile_dataset(out / "split.csv", survey_root / survey.ALLSTAR_NAME, None, root,
                    [tmp_path / "test.fits"], tmp_path / "q.csv", **QUIET)
    quarantine = pd.read_csv(tmp_path / "q.csv")
    assert sorted(quarantine["APOGEE_ID"]) == sorted(STARS)
    assert quarantine["reason"].str.contains("is an apStar file.*expected an aspcapStar").all()


# --------------------------------------------------------------------------- API

def test_api_reads_apstar_paths_as_compile_does(trained, compiled):
    data, _, _ = compiled
    model = stargrad.load(trained["models"]["linear"])
    paths = [_real_path(i) for i in STARS]
    x_path, _, mask_path = model.inputs(paths)
    x_arrays, _, mask_arrays = model.inputs(data.flux, data.error, data.mask)
    np.testing.assert_array_equal(mask_path, data.mask)
    np.testing.assert_array_equal(x_path, x_arrays)
    by_path = model.predict(paths)
    by_arrays = model.predict(data.flux, data.error, data.mask)
    pd.testing.assert_frame_equal(by_path, by_arrays)
    uncalibrated = by_path.filter(regex="_std_calibrated$")
    assert uncalibrated.isna().all().all()          # no calibration.csv beside this model
    assert np.isfinite(by_path.drop(columns=uncalibrated.columns).to_numpy()).all()
    one = model.predict(paths[1])            # one path, the 1-visit file
    pd.testing.assert_frame_equal(one, by_arrays.iloc[[1]].reset_index(drop=True))
    jac = model.explain(paths)
    np.testing.assert_array_equal(jac, model.explain(data.flux, mask=data.mask))
    # ridge is linear: its Jacobian is its weights, whatever the spectrum
    weights = np.asarray(model.params["w"]).T * model.norm.label_std[:, None]
    np.testing.assert_allclose(jac[0], weights / model.norm.input_std, rtol=1e-4,
                               atol=1e-6 * np.abs(weights).max())


def test_api_reads_aspcapstar_and_apstar_paths_together(trained, tmp_path):
    """A mock aspcapStar and a real apStar in one call, each read as its layout says."""
    model = stargrad.load(trained["models"]["linear"])
    rng = np.random.default_rng(1)
    flux = np.zeros(apogee.N_PIX, np.float32)
    flux[apogee.KEPT_PIXELS] = rng.uniform(0.7, 1.0, apogee.N_PIX_GAPLESS)
    error = np.where(flux > 0, 0.01, 0.0).astype(np.float32)
    aspcap = tmp_path / "apStar-dr17-but-an-aspcapStar.fits"
    survey.write_aspcapstar(aspcap, flux, error)
    both = model.predict([aspcap, _real_path("2M19485057+5005279")])
    alone = model.predict(flux[None])
    np.testing.assert_allclose(both.iloc[0], alone.iloc[0], rtol=1e-5, atol=1e-5)  # float32 sums


def test_api_names_a_fits_that_is_neither_kind(trained, tmp_path):
    model = stargrad.load(trained["models"]["linear"])
    odd = tmp_path / "odd.fits"
    with fitsio.FITS(str(odd), "rw") as fits:
        fits.write(None)
        for _ in range(3):
            fits.write(np.ones((3, 4), np.float32))
    with pytest.raises(survey.SurveyFileError,
                       match=r"odd\.fits: neither an aspcapStar \(HDU1 normalized flux.*nor an "
                             r"apStar \(.*APOGEE_PIXMASK.*found HDU1 IMAGE_HDU shape \(3, 4\)"):
        model.predict(odd)


def test_generative_model_reconstructs_the_real_spectra(trained, compiled):
    data, _, _ = compiled
    pca = stargrad.load(trained["models"]["pca_2"])
    paths = [_real_path(i) for i in STARS]
    out = pca.reconstruct(paths)
    assert out["flux"].shape == (2, apogee.N_PIX_GAPLESS) and out["latent"].shape == (2, 2)
    # PCA: the reconstruction is the mean plus the projection on the components, in the
    # model's normalized units, then back to continuum-normalized flux
    mean, components = (np.asarray(pca.params[k], np.float64) for k in ("mean", "components"))
    z = (pca.norm.inputs(data.flux, data.mask) - mean) @ components.T
    expected = (mean + z @ components) * pca.norm.input_std + pca.norm.input_mean
    np.testing.assert_allclose(out["latent"], z, rtol=1e-4, atol=1e-4 * np.abs(z).max())
    np.testing.assert_allclose(out["flux"], expected, atol=1e-4)
    # the real spectra are far from the mock's plane: residuals well above their noise
    residual = np.where(data.mask, 0.0, data.flux - out["flux"]) / data.error
    assert (np.sqrt(np.mean(residual ** 2, axis=1)) > 3).all()


# --------------------------------------------------------------------------- catalogue

def test_catalogue_predicts_and_flags_the_real_stars(trained, survey_root, compiled, tmp_path):
    _, _, out = compiled
    model_dir = trained["models"]["linear"]
    write_reference(trained["train"], model_dir, tmp_path / "reference.npz", n_components=8,
                    **QUIET)
    predict_shard(survey_root / survey.ALLSTAR_NAME, survey_root, model_dir,
                  tmp_path / "reference.npz", out / "split.csv", tmp_path / "shard.fits",
                  tmp_path / "q.csv", shard=0, n_shards=1, spectra="apStar", **QUIET)
    table = survey.read_table(tmp_path / "shard.fits", "CATALOGUE").set_index("APOGEE_ID")
    assert list(table.index) == list(STARS)
    assert len(pd.read_csv(tmp_path / "q.csv")) == 0
    api = stargrad.load(model_dir).predict([_real_path(i) for i in STARS], mc_samples=0)
    np.testing.assert_allclose(table["teff"], api["teff"], rtol=1e-5)
    np.testing.assert_allclose(table["Fe_std_total"], api["Fe_std_total"], rtol=1e-5)
    # a real giant and a real dwarf are unlike 40 mock giants' spectra
    threshold = float(np.load(tmp_path / "reference.npz")["chi2_threshold"])
    assert (table["PCA_CHI2"] > threshold).all(), (table["PCA_CHI2"], threshold)
    assert (table["FLAG"] & FLAGS["UNLIKE_TRAINING"]).all()
    assert not (table["FLAG"] & (FLAGS["NO_SPECTRUM"] | FLAGS["QUARANTINED"])).any()
