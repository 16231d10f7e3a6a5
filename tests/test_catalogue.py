"""The survey catalogue and the Python API on the CI run: one row per allStar row with the
same numbers the per-split predictions give, bad spectra flagged without losing any other
star, memory bounded by the block size, and `stargrad.load(...).predict/explain`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd
import pytest
import yaml

import stargrad
from stargrad.sdss import apogee, survey
from stargrad.datasets.dataset import load_split
from stargrad.predictions import read_predictions
from stargrad.stages.catalogue import FLAGS, predict_shard

from workflow_jobs import CONFIG

pytestmark = pytest.mark.workflow
MODELS = yaml.safe_load(CONFIG.read_text())["catalogue"]["models"]


def _catalogue(run, model, task="aspcap") -> pd.DataFrame:
    return survey.read_table(run / f"results/catalogue/{model}/{task}.fits", "CATALOGUE")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_catalogue_rows_are_the_allstar_rows_with_the_split_predictions(run, model):
    table = _catalogue(run, model)
    allstar = survey.read_allstar(run / "resources/mock-ci/allStar-dr17-synspec_rev1.fits")
    assert list(table["APOGEE_ID"]) == list(allstar["APOGEE_ID"])
    assert list(table["FIELD"]) == list(allstar["FIELD"])
    by_id = table.set_index("APOGEE_ID")
    split = pd.read_csv(run / "results/data/main/split.csv")
    training = set(split.loc[split["split"].isin(["train", "valid"]), "APOGEE_ID"])
    assert set(by_id.index[by_id["IN_TRAINING"]]) == training
    labels = [c for c in table.columns if f"{c}_std_total" in table.columns]
    stochastic = json.loads((run / f"results/models/{model}/aspcap/model.json").read_text())[
        "stochastic"]
    checked = 0
    for name in ("train", "valid", "test", "cluster"):
        pred = read_predictions(run / f"results/predictions/{model}/aspcap/{name}.fits")
        pred = pred.set_index("APOGEE_ID")
        checked += len(pred)
        if stochastic and name == "train":
            continue                    # predicted with dropout off, the catalogue with MC
        ours = by_id.loc[pred.index]
        for label in labels:
            for column in (label, f"{label}_std_total", f"{label}_std_calibrated"):
                # float32 rounding: other batches sum in another order
                scale = np.abs(pred[column]).max()
                np.testing.assert_allclose(ours[column], pred[column], rtol=2e-5,
                                           atol=1e-5 * scale, err_msg=f"{model} {name} {column}")
    assert checked == len(table)
    meta = fitsio.read_header(str(run / f"results/catalogue/{model}/aspcap.fits"), 0)
    assert meta["MODEL"] == model and meta["SGCFGH"] and meta["CODEHASH"]


def _survey_copy(run, tmp_path, n_copies: int = 1):
    """A copy of the CI survey whose allStar lists every star `n_copies` times (in new fields
    whose directories link the original files) — a survey n_copies times larger on disk."""
    src = run / "resources/mock-ci"
    root = tmp_path / "survey"
    shutil.copytree(src, root, symlinks=True)
    allstar = survey.read_allstar(src / survey.ALLSTAR_NAME)
    parts = [allstar]
    for k in range(1, n_copies):
        more = allstar.copy()
        more["FIELD"] = more["FIELD"] + f"_copy{k}"
        for telescope, field in set(zip(allstar["TELESCOPE"], allstar["FIELD"])):
            (root / telescope / f"{field}_copy{k}").symlink_to(src / telescope / field)
        parts.append(more)
    survey.write_allstar(root / survey.ALLSTAR_NAME, pd.concat(parts, ignore_index=True))
    return root


def _shard(run, root, tmp_path, model, **kwargs):
    out, quarantine = tmp_path / "shard.fits", tmp_path / "quarantine.csv"
    predict_shard(root / survey.ALLSTAR_NAME, root, run / f"results/models/{model}/aspcap",
                  run / f"results/catalogue/{model}/aspcap/reference.npz",
                  run / "results/data/main/split.csv", out, quarantine, shard=0, n_shards=1,
                  calibration_path=run / f"results/predictions/{model}/aspcap/calibration.csv",
                  block_size=32, mc_samples=4, seed=17, log=lambda msg: None, **kwargs)
    return survey.read_table(out, "CATALOGUE"), pd.read_csv(quarantine)


def test_missing_corrupt_and_nan_spectra_are_flagged_and_nothing_else_is_lost(run, tmp_path):
    root = _survey_copy(run, tmp_path)
    allstar = survey.read_allstar(root / survey.ALLSTAR_NAME)
    path = [root / survey.aspcapstar_relpath(r.TELESCOPE, r.FIELD, r.APOGEE_ID)
            for r in allstar.iloc[:3].itertuples()]
    for p in path:                              # links into the run: replace, never write
        p.unlink()
    survey.write_aspcapstar(path[1], np.full(apogee.N_PIX, np.nan), np.ones(apogee.N_PIX))
    path[2].write_bytes(b"not a FITS file")
    table, quarantine = _shard(run, root, tmp_path, "linear")
    assert list(table["ROW"]) == list(range(len(allstar)))
    flags = table["FLAG"].to_numpy()
    assert flags[0] & FLAGS["NO_SPECTRUM"] and np.isnan(table["teff"][0])
    for k in (1, 2):
        assert flags[k] & FLAGS["QUARANTINED"] and np.isnan(table["teff"][k])
    assert list(quarantine["APOGEE_ID"]) == list(allstar["APOGEE_ID"][1:3])
    assert "pixels are bad" in quarantine["reason"][0] and "not a FITS" in quarantine["reason"][1]
    assert np.isfinite(table["teff"][3:]).all()
    assert not (flags[3:] & (FLAGS["NO_SPECTRUM"] | FLAGS["QUARANTINED"])).any()
    reference = _catalogue(run, "linear")
    np.testing.assert_allclose(table["teff"][3:], reference["teff"][3:], rtol=1e-6)


def _peak_rss_mb(run, root, tmp_path, model) -> float:
    """Peak resident memory (MB) of one catalogue shard job on `root`, in its own process."""
    code = ("import resource\nfrom pathlib import Path\nfrom test_catalogue import _shard\n"
            f"_shard(Path({str(run)!r}), Path({str(root)!r}), Path({str(tmp_path)!r}), "
            f"{model!r})\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(proc.stdout.split()[-1])


@pytest.mark.long
def test_catalogue_memory_does_not_grow_with_the_survey(run, tmp_path):
    """Peak memory of a catalogue shard on the CI survey and on one ten times larger: the
    spectra stream through in blocks, so only the output rows grow (a few kB a star)."""
    small = _peak_rss_mb(run, _survey_copy(run, tmp_path / "1"), tmp_path / "1",
                         "bcnn_censored")
    large = _peak_rss_mb(run, _survey_copy(run, tmp_path / "10", 10), tmp_path / "10",
                         "bcnn_censored")
    print(f"\ncatalogue shard peak RSS: {small:.0f} MB for 276 stars, {large:.0f} MB for 2760")
    assert large - small < 60


def test_api_reproduces_the_workflow_predictions_and_explains(run):
    model_dir = run / "results/models/bcnn_censored/aspcap"
    model = stargrad.load(model_dir)
    data = load_split(run / "results/data/main/test.fits")
    table = model.predict(data.flux, data.error, data.mask, ids=data.ids, mc_samples=4,
                          seed=17)
    pred = read_predictions(run / "results/predictions/bcnn_censored/aspcap/test.fits")
    for column in ("teff", "Mg_std_total", "Al_std_calibrated"):
        np.testing.assert_allclose(table[column], pred[column], rtol=2e-5, err_msg=column)
    # aspcapStar paths go through the workflow's own reading and cleaning
    allstar = survey.read_allstar(run / "resources/mock-ci/allStar-dr17-synspec_rev1.fits")
    row = allstar.set_index("APOGEE_ID").loc[data.ids[0]]
    path = run / "resources/mock-ci" / survey.aspcapstar_relpath(row.TELESCOPE, row.FIELD,
                                                                 data.ids[0])
    one = model.predict(path, ids=data.ids[:1], mc_samples=4, seed=17)
    np.testing.assert_allclose(one["teff"], table["teff"][:1], rtol=1e-5)
    # explain: ridge's Jacobian is its weights, in label per unit flux
    ridge = stargrad.load(run / "results/models/linear/aspcap")
    jac = ridge.explain(data.flux[:2], mask=data.mask[:2])
    weights = np.asarray(ridge.params["w"]).T * ridge.norm.label_std[:, None]
    assert jac.shape == (2, 22, apogee.N_PIX_GAPLESS)
    np.testing.assert_allclose(jac[1], weights / ridge.norm.input_std, rtol=1e-4,
                               atol=1e-6 * np.abs(weights).max())


def test_api_rejects_bad_input_clearly(run, tmp_path):
    model = stargrad.load(run / "results/models/linear/aspcap")
    with pytest.raises(ValueError, match="8575 or 7514 pixels"):
        model.predict(np.ones((2, 8000)))
    flux = np.ones((2, apogee.N_PIX))
    flux[1, 500] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/inf pixels in spectra \[1\].*mask="):
        model.predict(flux)
    ok = model.predict(flux, mask=~np.isfinite(flux))
    assert np.isfinite(ok["teff"]).all()
    with pytest.raises(ValueError, match="not a trained model directory.*params.npz"):
        stargrad.load(run / "results/data/main")
    with pytest.raises(survey.SurveyFileError, match="missing"):
        model.predict(tmp_path / "nope.fits")
