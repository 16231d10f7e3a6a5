"""Compiling splits from a DR17-layout tree: labels, bad pixels, quarantine, streaming."""
import re

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits as afits

from stargrad.sdss import apogee, survey
from stargrad.sdss.apogee import MAGIC_NUMBER
from stargrad.datasets.compile import compile_dataset, labels_from_catalogue
from stargrad.sdss.spectra import clean_spectrum
from stargrad.datasets.dataset import Normalizer, batch, load_split
from stargrad.tasks import make_task

from dr17_tables import allstar_table

N_STARS = 9


def write_tree(root, n=N_STARS, seed=0):
    rng = np.random.default_rng(seed)
    table = allstar_table([f"2M{i:08d}+0000000" for i in range(n)],
                          ["F1"] * (n // 2) + ["F2"] * (n - n // 2), rng)
    table.loc[1, "MG_FE"] = MAGIC_NUMBER
    survey.write_allstar(root / survey.ALLSTAR_NAME, table)
    fluxes = {}
    for i, row in table.iterrows():
        flux = np.zeros(apogee.N_PIX, np.float32)
        flux[apogee.KEPT_PIXELS] = rng.uniform(0.5, 1.0, apogee.N_PIX_GAPLESS)
        error = np.full(apogee.N_PIX, 0.01, np.float32)
        error[apogee.KEPT_PIXELS[:10]] = 1e3          # bad pixels, flagged by their error
        survey.write_aspcapstar(root / survey.aspcapstar_relpath(row.TELESCOPE, row.FIELD,
                                                                 row.APOGEE_ID), flux, error)
        fluxes[row.APOGEE_ID] = flux
    pd.DataFrame({"APOGEE_ID": table.APOGEE_ID[:4], "DNU": [4.0, 5.0, 6.0, 7.0],
                  "NUMAX": [30., 40., 50., 60.], "DPI1": [300., 70., 80., 310.],
                  "EVSTATE": [2, 1, 1, 2]}).to_csv(root / "seismic.csv", index=False)
    return table, fluxes


def test_labels_convert_xfe_to_xh_and_keep_missing(tmp_path):
    table, _ = write_tree(tmp_path)
    labels = labels_from_catalogue(survey.read_allstar(tmp_path / survey.ALLSTAR_NAME),
                                   survey.read_seismic(tmp_path / "seismic.csv"))
    np.testing.assert_allclose(labels["Mg"][0], table.MG_FE[0] + table.FE_H[0], rtol=1e-6)
    np.testing.assert_allclose(labels["Fe"], table.FE_H, rtol=1e-6)
    assert labels["Mg"][1] == MAGIC_NUMBER and labels["Mg_err"][1] == MAGIC_NUMBER
    assert list(labels["evstate"][:4]) == [1.0, 0.0, 0.0, 1.0]
    assert (labels["evstate"][4:] == MAGIC_NUMBER).all() and (labels["dpi1"][4:] == MAGIC_NUMBER).all()


def test_clean_spectrum_masks_as_astronn():
    flux = np.ones(apogee.N_PIX, np.float32) * 0.8
    error = np.full(apogee.N_PIX, 0.01, np.float32)
    flux[apogee.KEPT_PIXELS[5]] = -0.1
    error[apogee.KEPT_PIXELS[6]] = 50.0
    f, e, m = clean_spectrum(flux, error)
    assert f.shape == (apogee.N_PIX_GAPLESS,)
    assert m[5] and m[6] and m.sum() == 2
    assert f[5] == 1.0 and e[6] == 1.0 and f[7] == np.float32(0.8)


def compile_tree(tmp_path, split_ids, **kw):
    split_csv = tmp_path / "split.csv"
    pd.DataFrame(split_ids, columns=["APOGEE_ID", "split"]).to_csv(split_csv, index=False)
    outs = [tmp_path / "out" / f"{s}.fits" for s in ("train", "valid", "test", "cluster")]
    compile_dataset(split_csv, tmp_path / survey.ALLSTAR_NAME, tmp_path / "seismic.csv", tmp_path,
                    outs, tmp_path / "out" / "quarantine.csv", header={"SGCFGH": "abc"},
                    log=lambda m: None, **kw)
    return outs


def test_compile_contract_and_quarantine(tmp_path):
    table, fluxes = write_tree(tmp_path)
    ids = list(table.APOGEE_ID)
    # Corrupt one file (truncated) and delete another: both quarantined with a reason.
    bad = tmp_path / survey.aspcapstar_relpath("apo25m", "F1", ids[2])
    bad.write_bytes(bad.read_bytes()[:5000])
    (tmp_path / survey.aspcapstar_relpath("apo25m", "F1", ids[3])).unlink()
    splits = [(i, "train") for i in ids[:6]] + [(i, "valid") for i in ids[6:8]] + [(ids[8], "test")]
    outs = compile_tree(tmp_path, splits, chunk_size=2)
    q = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert sorted(q.APOGEE_ID) == sorted(ids[2:4])
    assert set(q.reason.str.contains("truncated|missing|corrupt"))== {True}
    train = load_split(outs[0])
    assert list(train.ids) == [ids[0], ids[1], ids[4], ids[5]]
    assert train.flux.shape == (4, apogee.N_PIX_GAPLESS) and train.flux.dtype == np.float32
    np.testing.assert_array_equal(train.flux[2, 10:], apogee.gap_delete(fluxes[ids[4]])[10:])
    assert train.mask[:, :10].all() and not train.mask[:, 10:].any()
    assert (train.flux[:, :10] == 1.0).all()
    assert train.header["SGCFGH"] == "abc"
    with afits.open(outs[0]) as hdul:   # the contract, read by astropy too
        assert [h.name for h in hdul[1:]] == ["FLUX", "ERROR", "MASK", "LABELS"]
        assert hdul["FLUX"].data.shape == (4, 7514)
        assert {"APOGEE_ID", "teff", "Mg", "Mg_err", "evstate", "dpi1"} <= set(hdul["LABELS"].columns.names)
    assert len(load_split(outs[3])) == 0         # an empty cluster split is a valid file


def test_compile_error_mode_names_the_file(tmp_path):
    table, _ = write_tree(tmp_path)
    path = tmp_path / survey.aspcapstar_relpath("apo25m", "F1", table.APOGEE_ID[0])
    path.write_bytes(b"not a fits file at all")
    with pytest.raises(survey.SurveyFileError, match=re.escape(path.name)):
        compile_tree(tmp_path, [(i, "train") for i in table.APOGEE_ID], on_bad_file="error")


def test_normalizer_uses_train_stats_and_masks(tmp_path):
    table, _ = write_tree(tmp_path)
    outs = compile_tree(tmp_path, [(i, "train") for i in table.APOGEE_ID])
    data = load_split(outs[0])
    task = make_task("aspcap", {"dataset": "d", "labels": "aspcap"})
    norm = Normalizer.fit(data, task, "standard")
    b = batch(data, task, norm)
    good = ~data.mask
    np.testing.assert_allclose(b["x"][good].reshape(len(data), -1).mean(0), 0, atol=1e-5)
    assert (b["x"][data.mask] == 0).all()
    mg = task.labels.index("Mg")
    assert not b["valid"][1, mg] and b["y"][1, mg] == 0
    valid_mg = b["y"][b["valid"][:, mg], mg]
    np.testing.assert_allclose([valid_mg.mean(), valid_mg.std()], [0, 1], atol=1e-5)
    assert Normalizer.from_json(norm.to_json()).labels == norm.labels
