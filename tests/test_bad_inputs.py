"""A matrix of bad inputs walked through the real entry points: the compile step on a small
DR17-layout tree (corrupt, truncated, mis-shaped, NaN and non-positive spectra, labels missing
as −9999 or NaN), the selection, the Python API (`stargrad.load(...)` of models trained on that
tree: bad spectra, files and model directories, a generative model asked for labels), and the
workflow itself on config/ci.yaml for config errors (`snakemake -n`, which stops before any
job). Each bad input must end in a clear error naming
the file or key, or in a quarantine row with the reason — and every good star must survive.
The matrix (input → outcome) is printed at the end (`pytest -s` shows it)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import stargrad
from stargrad.sdss import apogee, download, survey
from stargrad.sdss.apogee import MAGIC_NUMBER
from stargrad.datasets.compile import compile_dataset, labels_from_catalogue
from stargrad.datasets.dataset import Normalizer, batch, load_split
from stargrad.datasets.select import select_and_split
from stargrad.stages.train import train_model
from stargrad.tasks import make_task

from dr17_tables import allstar_table
from httpserver import serve

REPO = Path(__file__).resolve().parents[1]
MATRIX: list[tuple[str, str, str]] = []     # (where, input, outcome)
GOOD = [f"2M{i:08d}+0000000" for i in range(8)]


def _spectrum(rng):
    flux = np.zeros(apogee.N_PIX, np.float32)
    flux[apogee.KEPT_PIXELS] = rng.uniform(0.6, 1.0, apogee.N_PIX_GAPLESS)
    error = np.zeros(apogee.N_PIX, np.float32)
    error[apogee.KEPT_PIXELS] = 0.01
    return flux, error


def _first_half(data: bytes) -> bytes:
    return data[:len(data) // 2]


def _fits_bytes(path, flux, error) -> bytes:
    survey.write_aspcapstar(path, flux, error)
    return path.read_bytes()


#: name -> (what is wrong, how the file is made from a good (flux, error) and its path)
BAD_SPECTRA = {
    "corrupt": ("random bytes instead of FITS",
                lambda path, f, e, rng: path.write_bytes(rng.bytes(20000))),
    "truncated": ("the first half of a valid file",
                  lambda path, f, e, rng: path.write_bytes(_first_half(_fits_bytes(path, f, e)))),
    "wrong_pixels": ("8000-pixel flux and error",
                     lambda path, f, e, rng: _write_raw(path, f[:8000], e[:8000])),
    "all_nan": ("NaN flux at every pixel",
                lambda path, f, e, rng: survey.write_aspcapstar(path, np.full_like(f, np.nan), e)),
    "errors_not_positive": ("error 0 or negative at every pixel",
                            lambda path, f, e, rng: survey.write_aspcapstar(path, f, -np.abs(e))),
    "missing": ("listed in allStar, no file", lambda path, f, e, rng: None),
}
#: name -> (what is odd, how) for spectra that are kept with masked pixels
MASKED_SPECTRA = {
    "some_nan_inf": ("NaN and inf flux at 300 pixels", slice(1000, 1300)),
    "some_bad_errors": ("error 0 at 200 pixels", slice(5000, 5200)),
}


def _write_raw(path, flux, error):
    """An aspcapStar-like file whose arrays do not have 8575 pixels."""
    import fitsio
    path.parent.mkdir(parents=True, exist_ok=True)
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        fits.write(None)
        fits.write(flux)
        fits.write(error)
        fits.write(flux)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A DR17-shaped allStar (NaN and −9999 labels, one star with none) and its spectra."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(4)
    ids = GOOD + [f"2M9999{i:04d}+0000000" for i in range(len(BAD_SPECTRA) + len(MASKED_SPECTRA))]
    n = len(ids)
    table = allstar_table(ids, ["F1"] * n, rng)
    table.loc[1, "MG_FE"] = np.nan                 # DR17 marks some values NaN ...
    table.loc[2, "MG_FE_ERR"] = np.nan             # ... and some errors
    table.loc[3, "AL_FE"] = MAGIC_NUMBER           # ... others −9999
    table.loc[4, "FE_H"] = np.nan                  # no [Fe/H]: every [X/H] is missing
    label_cols = [c for c in table if c not in ("APOGEE_ID", "TELESCOPE", "FIELD", "SNR")]
    table.loc[5, label_cols] = np.nan              # a star with every label missing
    survey.write_allstar(root / survey.ALLSTAR_NAME, table)
    for i, ident in enumerate(ids):
        path = root / survey.aspcapstar_relpath("apo25m", "F1", ident)
        flux, error = _spectrum(rng)
        name = _case_of(ident)
        if name in BAD_SPECTRA:
            BAD_SPECTRA[name][1](path, flux, error, rng)
        elif name in MASKED_SPECTRA:
            span = apogee.KEPT_PIXELS[MASKED_SPECTRA[name][1]]
            if name == "some_nan_inf":
                flux[span] = np.where(np.arange(len(span)) % 2, np.nan, np.inf)
            else:
                error[span] = 0.0
            survey.write_aspcapstar(path, flux, error)
        else:
            survey.write_aspcapstar(path, flux, error)
    split = pd.DataFrame({"APOGEE_ID": ids, "split": "train"})
    split.to_csv(root / "split.csv", index=False)
    return root, table


def _case_of(ident: str) -> str | None:
    if ident in GOOD:
        return None
    names = list(BAD_SPECTRA) + list(MASKED_SPECTRA)
    return names[int(ident[6:10])]


def _ident(name: str) -> str:
    names = list(BAD_SPECTRA) + list(MASKED_SPECTRA)
    return f"2M9999{names.index(name):04d}+0000000"


@pytest.fixture(scope="module")
def compiled(tree, tmp_path_factory):
    root, _ = tree
    out = tmp_path_factory.mktemp("compiled")
    compile_dataset(root / "split.csv", root / survey.ALLSTAR_NAME, None, root,
                    [out / f"{s}.fits" for s in ("train", "valid", "test", "cluster")],
                    out / "quarantine.csv", log=lambda msg: None)
    return load_split(out / "train.fits"), pd.read_csv(out / "quarantine.csv")


@pytest.mark.parametrize("name", list(BAD_SPECTRA))
def test_unusable_spectrum_is_quarantined_with_its_reason(compiled, name):
    data, quarantine = compiled
    row = quarantine[quarantine["APOGEE_ID"] == _ident(name)]
    assert len(row) == 1, quarantine
    reason = row["reason"].iat[0]
    assert _ident(name) in row["path"].iat[0] and reason
    expected = {"corrupt": "not a FITS file", "truncated": "truncated", "wrong_pixels": "shape",
                "all_nan": "pixels are bad", "errors_not_positive": "pixels are bad",
                "missing": "missing"}[name]
    assert expected in reason, reason
    assert _ident(name) not in set(data.ids)
    MATRIX.append(("compile", f"{name}: {BAD_SPECTRA[name][0]}", f"quarantined: {reason}"))


@pytest.mark.parametrize("name", list(MASKED_SPECTRA))
def test_partly_bad_spectrum_is_kept_with_its_bad_pixels_masked(compiled, name):
    data, quarantine = compiled
    k = list(data.ids).index(_ident(name))
    span = MASKED_SPECTRA[name][1]
    assert data.mask[k, span].all() and (data.flux[k, span] == 1.0).all()
    assert np.isfinite(data.flux[k]).all() and (data.error[k] > 0).all()
    assert data.mask[k].sum() == span.stop - span.start
    MATRIX.append(("compile", f"{name}: {MASKED_SPECTRA[name][0]}",
                   f"kept, {int(data.mask[k].sum())} pixels masked (MASK=1, flux 1, error 1)"))


def test_no_good_star_is_lost(compiled):
    data, quarantine = compiled
    kept = set(data.ids)
    assert set(GOOD) <= kept
    assert kept | set(quarantine["APOGEE_ID"]) == set(GOOD) | {_ident(n) for n in
                                                               [*BAD_SPECTRA, *MASKED_SPECTRA]}


def test_nan_and_magic_labels_are_missing_everywhere(compiled):
    data, _ = compiled
    task = make_task("aspcap", {"dataset": "main", "labels": "aspcap"})
    labels = data.labels.set_index("APOGEE_ID")
    assert labels.loc[GOOD[1], "Mg"] == MAGIC_NUMBER                 # NaN [Mg/Fe]
    assert labels.loc[GOOD[2], "Mg_err"] == MAGIC_NUMBER             # NaN error only
    assert labels.loc[GOOD[2], "Mg"] != MAGIC_NUMBER
    assert labels.loc[GOOD[3], "Al"] == MAGIC_NUMBER                 # −9999 [Al/Fe]
    assert (labels.loc[GOOD[4], ["Mg", "Al", "Ni"]] == MAGIC_NUMBER).all()   # NaN [Fe/H]
    assert (labels.loc[GOOD[5], list(task.labels)] == MAGIC_NUMBER).all()    # nothing known
    norm = Normalizer.fit(data, task, "mean")
    assert np.isfinite(norm.label_mean).all() and np.isfinite(norm.label_std).all()
    b = batch(data, task, norm)
    assert np.isfinite(b["y"]).all() and np.isfinite(b["y_err"]).all()
    assert not b["valid"][list(data.ids).index(GOOD[5])].any()
    assert b["y_err"][list(data.ids).index(GOOD[2]), task.labels.index("Mg")] == 0.0
    MATRIX.append(("compile", "allStar label or error NaN / −9999, a star with none",
                   "−9999 in LABELS; masked in every loss (valid False); training stats finite"))


#: DR17's spellings of "no value" (float32, as the FITS columns hold them).
MISSING_SPELLINGS = {"NaN": np.nan, "+inf": np.inf, "-inf": -np.inf, "-9999": -9999.0,
                     "-9999.99": float(np.float32(-9999.99))}
#: allStar column -> (labels that must come out missing, errors that must, labels that must not)
MISSING_COLUMNS = {
    "TEFF": (["teff"], ["teff_err"], ["logg"]),
    "TEFF_ERR": ([], ["teff_err"], ["teff"]),
    "MG_FE": (["Mg"], ["Mg_err"], ["Fe", "Al"]),
    "MG_FE_ERR": ([], ["Mg_err"], ["Mg", "Al_err"]),
    "FE_H": (["Fe", "Mg", "Ni"], ["Fe_err", "Mg_err"], ["teff"]),
    "FE_H_ERR": ([], ["Fe_err", "Mg_err", "Ni_err"], ["Fe", "Mg", "teff_err"]),
    "DNU": (["dnu"], ["dnu_err"], ["numax"]),
}


@pytest.mark.parametrize("spelling", list(MISSING_SPELLINGS))
@pytest.mark.parametrize("column", list(MISSING_COLUMNS))
def test_every_missing_spelling_in_every_column_is_missing(column, spelling):
    """A value or error spelt NaN, ±inf, −9999 or −9999.99 comes out −9999 (never a sum with
    it, such as hypot(−9999, 0.03) = 9999 for an [X/H] error), and nothing else is touched."""
    rng = np.random.default_rng(7)
    table = allstar_table(["2M00000001+0000000", "2M00000002+0000000"], ["F1", "F1"], rng)
    seismic = pd.DataFrame({"APOGEE_ID": table["APOGEE_ID"], "DNU": [4.0, 5.0],
                            "NUMAX": [40.0, 50.0], "DPI1": [70.0, 80.0], "EVSTATE": [1, 2]})
    where = seismic if column == "DNU" else table
    where[column] = where[column].astype(float)
    where.loc[0, column] = MISSING_SPELLINGS[spelling]
    labels = labels_from_catalogue(table, seismic, log=lambda msg: None)
    missing, errors, kept = MISSING_COLUMNS[column]
    first, second = labels.iloc[0], labels.iloc[1]
    assert (first[missing + errors] == MAGIC_NUMBER).all(), first[missing + errors]
    assert (first[kept] != MAGIC_NUMBER).all(), first[kept]
    assert (second.drop(["APOGEE_ID", "evstate", "evstate_err"]) != MAGIC_NUMBER).all()
    numbers = labels.drop(columns="APOGEE_ID").to_numpy(float)
    assert np.isfinite(numbers).all()
    assert ((numbers == MAGIC_NUMBER) | (np.abs(numbers) < 9000)).all(), labels.T
    if spelling in ("NaN", "-9999.99"):
        MATRIX.append(("compile", f"allStar {column} = {spelling} (and each other spelling)",
                       f"-9999 in {', '.join(missing + errors)}; {', '.join(kept)} kept"))


def test_on_bad_file_error_names_the_file(tree, tmp_path):
    root, _ = tree
    with pytest.raises(survey.SurveyFileError) as err:
        compile_dataset(root / "split.csv", root / survey.ALLSTAR_NAME, None, root,
                        [tmp_path / "train.fits"], tmp_path / "q.csv", on_bad_file="error",
                        log=lambda msg: None)
    assert "aspcapStar-dr17-2M9999" in str(err.value)
    MATRIX.append(("compile", "any unusable spectrum with survey.on_bad_file: error",
                   f"stops: ...{str(err.value)[-90:]}"))


def test_selection_that_leaves_a_split_empty_is_an_error(tree):
    _, table = tree
    cases = {"cuts keep nobody": {"selection": {"cuts": {"TEFF": [9000, 9500]}},
                                  "split": {"seed": 1, "counts": {"train": 1, "valid": 1,
                                                                  "test": 1}}},
             "fractions leave test empty": {"split": {"seed": 1, "fractions": {
                 "train": 0.9, "valid": 0.05, "test": 0.01}}}}
    for what, spec in cases.items():
        with pytest.raises(ValueError) as err:
            select_and_split(table, spec)
        MATRIX.append(("select", what, f"error: {err.value}"))


# --------------------------------------------------------------------------- paths, sources

#: what is wrong -> (TELESCOPE, FIELD, APOGEE_ID, the column the reason must name)
UNSAFE_ROWS = {
    "TELESCOPE climbing out": ("apo25m/../..", "F1", "2M00000101+0000000", "TELESCOPE"),
    "TELESCOPE not DR17's": ("apo26m", "F1", "2M00000102+0000000", "TELESCOPE"),
    "FIELD with '..'": ("apo25m", "../../outside", "2M00000103+0000000", "FIELD"),
    "FIELD absolute": ("apo25m", "/tmp/outside", "2M00000104+0000000", "FIELD"),
    "FIELD blank": ("apo25m", "   ", "2M00000105+0000000", "FIELD"),
    "APOGEE_ID with a separator": ("apo25m", "F1", "../../../2M00000106", "APOGEE_ID"),
    "APOGEE_ID absolute": ("apo25m", "F1", "/etc/2M00000107", "APOGEE_ID"),
}
FAST = dict(retries=1, backoff_s=0.0, timeout_s=5)


@pytest.fixture
def sas(tmp_path, no_proxy):
    """A loopback SAS: two good aspcapStar files in apo25m/F1 with their sha1sum list, and the
    rows (good + UNSAFE_ROWS) of an allStar that names them."""
    root = tmp_path / "sas"
    rng = np.random.default_rng(3)
    good = pd.DataFrame({"APOGEE_ID": GOOD[:2], "TELESCOPE": "apo25m", "FIELD": "F1"})
    for ident in good["APOGEE_ID"]:
        survey.write_aspcapstar(root / survey.aspcapstar_relpath("apo25m", "F1", ident),
                                *_spectrum(rng))
    (root / "apo25m/F1" / download.checksum_list_name("apo25m", "F1")).write_text("".join(
        f"{survey.file_sha1(root / 'apo25m/F1' / n)}  {n}\n"
        for n in (f"aspcapStar-dr17-{i}.fits" for i in good["APOGEE_ID"])))
    unsafe = pd.DataFrame([(ident, tel, field) for tel, field, ident, _ in UNSAFE_ROWS.values()],
                          columns=list(survey.ID_COLUMNS))
    return root, pd.concat([good, unsafe], ignore_index=True)


def _files_outside(top: Path, *allowed: Path) -> list[Path]:
    """Files and directories under `top` that lie under none of `allowed`."""
    return [p for p in top.rglob("*")
            if not any(p == a or a in p.parents or p in a.parents for a in allowed)]


def test_unsafe_path_parts_are_quarantined_by_the_download(sas, tmp_path):
    """allStar text never becomes a path outside the survey root: each unsafe row is a
    quarantine row naming its column, nothing is written outside, the good rows download."""
    root_sas, rows = sas
    root = tmp_path / "survey"
    with serve(root_sas) as server:
        manifest = download.download_spectra(rows, root, server.url, allow_http=True,
                                             log=lambda m: None, **FAST)
        assert all(".." not in p and "outside" not in p for p, _, _ in server.requests)
    assert _files_outside(tmp_path, root, root_sas) == []
    by_id = manifest.set_index("APOGEE_ID")
    assert (by_id.loc[GOOD[:2], "status"] == "ok").all()
    for what, (_, _, ident, column) in UNSAFE_ROWS.items():
        status, reason = by_id.loc[ident.strip(), ["status", "reason"]]
        assert status == "quarantined" and column in reason, (what, reason)
        MATRIX.append(("download", f"allStar {what}", f"quarantined: {reason}"))


def test_unsafe_path_parts_are_quarantined_by_compile(sas, tmp_path):
    root_sas, rows = sas
    table = allstar_table(rows["APOGEE_ID"], rows["FIELD"], np.random.default_rng(5))
    table["TELESCOPE"] = rows["TELESCOPE"]
    survey.write_allstar(root_sas / survey.ALLSTAR_NAME, table)
    pd.DataFrame({"APOGEE_ID": rows["APOGEE_ID"], "split": "train"}).to_csv(
        tmp_path / "split.csv", index=False)
    compile_dataset(tmp_path / "split.csv", root_sas / survey.ALLSTAR_NAME, None, root_sas,
                    [tmp_path / "train.fits"], tmp_path / "quarantine.csv", log=lambda m: None)
    quarantine = pd.read_csv(tmp_path / "quarantine.csv", dtype=str).set_index("APOGEE_ID")
    assert list(load_split(tmp_path / "train.fits").ids) == GOOD[:2]
    for what, (_, _, ident, column) in UNSAFE_ROWS.items():
        reason = quarantine.loc[ident.strip(), "reason"]
        assert column in reason and ("cannot name" in reason or "not one of" in reason), reason
    MATRIX.append(("compile", "allStar TELESCOPE/FIELD/APOGEE_ID with '/', '..', blank or an "
                   "unknown telescope", "quarantined, the column named"))


def test_plain_http_is_refused_unless_asked_and_schemes_ignore_case(sas, tmp_path):
    root_sas, rows = sas
    good = rows.iloc[:2]
    with serve(root_sas) as server:
        for call in (lambda: download.download_spectra(good, tmp_path / "a", server.url),
                     lambda: download.download_allstar(server.url, tmp_path / "allStar.fits")):
            with pytest.raises(ValueError, match="allow_http") as err:
                call()
        MATRIX.append(("download", "base_url http://… (allow_http false)",
                       f"error: {str(err.value)[:80]}..."))
        shouting = server.url.replace("http://", "HTTP://")
        manifest = download.download_spectra(good, tmp_path / "b", shouting, allow_http=True,
                                             log=lambda m: None, **FAST)
        assert (manifest["status"] == "ok").all(), manifest
        assert len(server.requests) == 3                # the sha1sum list and two files
    MATRIX.append(("download", "base_url HTTP://… with allow_http true", "downloaded over HTTP"))
    with pytest.raises(ValueError, match="scheme 'ftp'"):
        download.download_spectra(good, tmp_path / "c", "ftp://data.sdss.org/sas")
    MATRIX.append(("download", "base_url ftp://…", "error: unsupported URL scheme 'ftp'"))


def test_verify_none_still_refuses_a_short_read(sas, tmp_path):
    """A server that sends no Content-Length and closes half-way: the file is not whole FITS,
    so the transfer is retried (resumed), and quarantined when it never completes."""
    root_sas, rows = sas
    good = rows.iloc[:2]
    rel = [survey.aspcapstar_relpath("apo25m", "F1", i) for i in good["APOGEE_ID"]]
    with serve(root_sas) as server:
        server.fail(rel[0], "truncate_unsized")
        server.fail(rel[1], "truncate_unsized", "truncate_unsized")
        manifest = download.download_spectra(good, tmp_path / "r", server.url, verify="none",
                                             allow_http=True, log=lambda m: None, **FAST)
    first, second = manifest.itertuples()
    assert first.status == "ok"
    assert (tmp_path / "r" / rel[0]).read_bytes() == (root_sas / rel[0]).read_bytes()
    assert second.status == "quarantined" and "short read" in second.reason, second.reason
    assert not (tmp_path / "r" / rel[1]).exists()
    MATRIX.append(("download", "verify: none, no Content-Length, connection closed half-way",
                   f"retried; quarantined when it persists: {second.reason[:60]}..."))


def test_an_allstar_placed_by_hand_is_checked(sas, tmp_path):
    root_sas, rows = sas
    path = root_sas / survey.ALLSTAR_NAME
    survey.write_allstar(path, allstar_table(GOOD[:2], ["F1", "F1"], np.random.default_rng(1)))
    digest = survey.file_sha1(path)
    with pytest.raises(survey.SurveyFileError, match="allstar_sha1") as err:
        survey.verify_allstar(path, "0" * 40, tmp_path / "allStar.sha1")
    assert str(path) in str(err.value) and not (tmp_path / "allStar.sha1").exists()
    MATRIX.append(("survey", "allStar placed by hand, SHA-1 not allstar_sha1",
                   "error naming the file (rule verify_allstar, before select_split)"))
    assert survey.verify_allstar(path, digest.upper(), tmp_path / "allStar.sha1") == digest
    path.write_bytes(path.read_bytes()[:-2880])
    with pytest.raises(survey.SurveyFileError, match="truncated"):
        survey.verify_allstar(path, None, tmp_path / "other.sha1")
    MATRIX.append(("survey", "allStar placed by hand, cut short, allstar_sha1: null",
                   "error: truncated FITS"))


@pytest.mark.workflow
def test_the_workflow_checks_a_hand_placed_allstar_before_using_it(tmp_path):
    run = tmp_path / "run"
    placed = run / "resources/dr17" / survey.ALLSTAR_NAME
    survey.write_allstar(placed, allstar_table(GOOD, ["F1"] * len(GOOD),
                                               np.random.default_rng(2)))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(run), "--cores", "1", "results/data/main/split.csv",
           "--configfile", str(REPO / "config" / "dr17.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "verify_allstar" in out, out[-3000:]
    log = (run / "logs/download/dr17/verify_allstar.log").read_text()
    assert str(placed.name) in log and "allstar_sha1" in log, log
    assert not (run / "results/data/main/split.csv").exists()


@pytest.fixture(scope="module")
def api_models(tree, tmp_path_factory):
    """Ridge, KNN (not differentiable) and a 2-component PCA (generative) trained on the
    tree's compiled stars (train split as its own validation), as `stargrad.load` gives them."""
    root, _ = tree
    out = tmp_path_factory.mktemp("models")
    compile_dataset(root / "split.csv", root / survey.ALLSTAR_NAME, None, root,
                    [out / "train.fits"], out / "quarantine.csv", log=lambda msg: None)
    task = make_task("aspcap", {"dataset": "main", "labels": "aspcap"})
    dirs = {}
    for name, spec in {"linear": {"family": "linear", "hyper": {"alpha": 0.1}},
                       "knn": {"family": "knn", "hyper": {"k": 3}},
                       "pca_2": {"family": "pca", "hyper": {"n_components": 2}}}.items():
        dirs[name] = out / name / "aspcap"
        train_model(out / "train.fits", out / "train.fits", dirs[name], task=task,
                    model_name=name, model_spec=spec, seed=0, code_digest="test",
                    config_digest="test", log=lambda msg: None)
    return dirs


def _nan_flux():
    flux = np.ones((2, apogee.N_PIX))
    flux[1, 500] = np.nan
    return flux


def _model_dir_copy(model_dir, tmp_path, edit):
    """A copy of a trained model directory with `edit(copy)` applied."""
    import shutil
    copy = tmp_path / "copy" / "aspcap"
    shutil.copytree(model_dir, copy)
    edit(copy)
    return copy


def _model_json_with(copy, **fields):
    meta = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**meta, **fields}))


#: name -> (the bad input, call(models, tree root, tmp_path), exception, message pattern)
API_ERRORS = {
    "wrong pixel count": (
        "predict(flux of shape (2, 8000))",
        lambda m, root, tmp: stargrad.load(m["linear"]).predict(np.ones((2, 8000))),
        ValueError, r"flux must have 8575 or 7514 pixels per spectrum.*got \(2, 8000\)"),
    "NaN without a mask": (
        "predict(flux with a NaN pixel), no mask=",
        lambda m, root, tmp: stargrad.load(m["linear"]).predict(_nan_flux()),
        ValueError, r"1 NaN/inf pixels in spectra \[1\].*pass mask="),
    "error of another shape": (
        "predict(flux (2, 8575), error (3, 8575))",
        lambda m, root, tmp: stargrad.load(m["linear"]).predict(
            np.ones((2, apogee.N_PIX)), np.ones((3, apogee.N_PIX))),
        ValueError, r"error has shape \(3, 7514\), flux \(2, 7514\) \(after gap removal\)"),
    "generative model asked for labels": (
        "a PCA model's predict(flux)",
        lambda m, root, tmp: stargrad.load(m["pca_2"]).predict(np.ones((2, apogee.N_PIX))),
        ValueError, r"pca_2/aspcap \(family pca\) is a generative model of the spectra: it "
                    r"has no labels to predict.*reconstruct\(flux\)"),
    "generative model asked for a Jacobian": (
        "a PCA model's explain(flux)",
        lambda m, root, tmp: stargrad.load(m["pca_2"]).explain(np.ones((2, apogee.N_PIX))),
        ValueError, r"has no labels to explain.*reconstruct"),
    "non-differentiable model asked for a Jacobian": (
        "a KNN model's explain(flux)",
        lambda m, root, tmp: stargrad.load(m["knn"]).explain(np.ones((1, apogee.N_PIX))),
        ValueError, r"knn/aspcap \(family knn\) is not differentiable in the flux.*no Jacobian"),
    "supervised model asked to reconstruct": (
        "a ridge model's reconstruct(flux)",
        lambda m, root, tmp: stargrad.load(m["linear"]).reconstruct(np.ones((1, apogee.N_PIX))),
        ValueError, r"linear/aspcap \(family linear\): a supervised model predicts labels"),
    "path that is no FITS": (
        "predict(path of random bytes)",
        lambda m, root, tmp: stargrad.load(m["linear"]).predict(
            root / survey.aspcapstar_relpath("apo25m", "F1", _ident("corrupt"))),
        survey.SurveyFileError, r"aspcapStar-dr17-2M9999.*not a FITS file"),
    "FITS that is neither spectrum kind": (
        "predict(path of a FITS with 8000-pixel HDUs)",
        lambda m, root, tmp: stargrad.load(m["linear"]).predict(
            root / survey.aspcapstar_relpath("apo25m", "F1", _ident("wrong_pixels"))),
        survey.SurveyFileError, r"neither an aspcapStar \(.*\) nor an apStar \(.*\); "
                                r"found HDU1 IMAGE_HDU shape \(8000,\)"),
    "path with error=": (
        "predict(path, error=array)",
        lambda m, root, tmp: stargrad.load(m["linear"]).predict(
            root / survey.aspcapstar_relpath("apo25m", "F1", GOOD[0]),
            error=np.ones(apogee.N_PIX)),
        ValueError, r"file paths carry their own error and mask"),
    "unknown model directory": (
        "load(a directory that does not exist)",
        lambda m, root, tmp: stargrad.load(tmp / "results/models/nope/aspcap"),
        ValueError, r"nope/aspcap: no such model directory.*model.json, norm.json, params.npz"),
    "incomplete model directory": (
        "load(a model directory without params.npz)",
        lambda m, root, tmp: stargrad.load(_model_dir_copy(
            m["linear"], tmp, lambda d: (d / "params.npz").unlink())),
        ValueError, r"is not a trained model directory: it lacks params.npz"),
    "corrupt model.json": (
        "load(a model directory whose model.json is cut short)",
        lambda m, root, tmp: stargrad.load(_model_dir_copy(
            m["linear"], tmp, lambda d: (d / "model.json").write_text('{"family": "lin'))),
        ValueError, r"is not a usable trained model directory: JSONDecodeError"),
    "unknown family in model.json": (
        "load(a model directory whose model.json names family gpt)",
        lambda m, root, tmp: stargrad.load(_model_dir_copy(
            m["linear"], tmp, lambda d: _model_json_with(d, family="gpt"))),
        ValueError, r"is not a usable trained model directory.*unknown model family 'gpt'"),
}


@pytest.mark.parametrize("case", list(API_ERRORS))
def test_api_names_the_problem(api_models, tree, tmp_path, case):
    what, call, error, pattern = API_ERRORS[case]
    root, _ = tree
    with pytest.raises(error, match=pattern) as err:
        call(api_models, root, tmp_path)
    message = str(err.value).replace(str(tmp_path), "<tmp>").replace(str(root), "<tree>")
    MATRIX.append(("api", f"{case}: {what}", f"error: {message[:160]}"))


def test_api_masked_nan_and_real_spectra_still_predict(api_models):
    """The same model takes NaN flux once `mask` says where it is."""
    flux = _nan_flux()
    table = stargrad.load(api_models["linear"]).predict(flux, mask=~np.isfinite(flux))
    assert np.isfinite(table["teff"]).all() and len(table) == 2
    MATRIX.append(("api", "NaN flux with mask= marking it", "predicted (pixel set to the "
                                                            "training mean)"))


def _dry_run(tmp_path, extra: dict):
    """`snakemake -n` on config/ci.yaml with `extra` entries merged on top (a second file)."""
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(extra))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(tmp_path / "run"), "--cores", "1", "-n", "--configfile",
           str(REPO / "config" / "ci.yaml"), str(tmp_path / "extra.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)


CONFIG_ERRORS = {
    "unknown label name": ({"tasks": {"logg": {"dataset": "rgb_logg", "labels": ["lgg"]}}},
                           "unknown labels ['lgg']"),
    "unknown config key": ({"predict": {"mc_sample": 4}}, "'mc_sample' was unexpected"),
    "model name with a regex character": (
        {"models": {"ml.p": {"family": "mlp", "tasks": ["logg"]}}}, "ml.p"),
    "typo in a model's hyper": ({"models": {"mlp": {"hyper": {"hiden": [8]}}}},
                                "models.mlp.hyper"),
    "bad value in a model's hyper": ({"models": {"bcnn": {"hyper": {"dropout_rate": 1.5}}}},
                                     "dropout_rate"),
    "typo in a model's train": ({"models": {"mlp": {"train": {"learning_rat": 0.1}}}},
                                "models.mlp.train"),
    "unknown model family": ({"models": {"mlp": {"family": "gpt"}}}, "unknown model family"),
    "split as fractions and counts": (
        {"datasets": {"rgb_logg": {"split": {
            "counts": {"train": 6, "valid": 2, "test": 3},
            "fractions": {"train": 0.5, "valid": 0.2, "test": 0.3}}}}},
        "is valid under each of"),
    "split count that is not a whole number": (
        {"datasets": {"rgb_logg": {"split": {"counts": {"train": 60.5, "valid": 20,
                                                        "test": 30}}}}}, "60.5"),
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_error_stops_the_workflow_before_any_job(tmp_path, case):
    extra, message = CONFIG_ERRORS[case]
    proc = _dry_run(tmp_path, extra)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out[-3000:]
    assert not (tmp_path / "run" / "results").exists()
    assert not (tmp_path / "run" / "resources").exists()
    line = next((l.strip() for l in out.splitlines() if message in l), message)
    MATRIX.append(("config", f"{case}: {json.dumps(extra)}", f"stops: {line}"))


def test_print_the_matrix():
    """Runs last: the matrix of everything above (run the module with -s to see it)."""
    print("\nbad-input matrix: where | input -> outcome")
    for where, what, outcome in MATRIX:
        what = what if len(what) <= 70 else what[:67] + "..."
        print(f"  {where:7s} | {what:70s} -> {outcome}")
    assert MATRIX
