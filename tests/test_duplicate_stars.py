"""Stars with several allStar rows, as in DR17 (a star observed in two fields, or by both
telescopes, has a row each): one rule everywhere. The download fetches the row select and
compile use (the highest-SNR one), or every row with fetch_all; compile finds that row's file;
the catalogue predicts each row from its own spectrum. Real DR17-layout FITS files in a
temporary SAS tree, served by the loopback HTTP server of tests/httpserver.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import stargrad
from httpserver import serve
from stargrad.sdss import apogee, download, survey
from stargrad.datasets.compile import compile_dataset
from stargrad.datasets.dataset import load_split
from stargrad.datasets.select import select_and_split
from stargrad.stages.catalogue import FLAGS, predict_shard, write_reference
from stargrad.stages.train import train_model
from stargrad.tasks import make_task

from dr17_tables import allstar_table

FAST = dict(retries=1, backoff_s=0.0, timeout_s=5, allow_http=True)
TWO_FIELDS, BOTH_TELESCOPES = "2M00000001+0000001", "2M00000002+0000002"
#: The duplicated stars' rows: (APOGEE_ID, TELESCOPE, FIELD, SNR); the first row of each is
#: not the one with the highest SNR, so "first row" and "highest SNR" disagree.
DUPLICATES = [(TWO_FIELDS, "apo25m", "FA", 50.0), (TWO_FIELDS, "apo25m", "FB", 200.0),
              (BOTH_TELESCOPES, "lco25m", "FC", 80.0), (BOTH_TELESCOPES, "apo25m", "FA", 300.0)]
PRIMARY = {TWO_FIELDS: ("apo25m", "FB"), BOTH_TELESCOPES: ("apo25m", "FA")}
SINGLES = [f"2M0000{i:04d}+0000000" for i in range(10, 24)]


pytestmark = pytest.mark.usefixtures("no_proxy")


@pytest.fixture
def sas(tmp_path):
    """A SAS tree: an allStar with the DUPLICATES rows and 14 single stars, and an aspcapStar
    file for every row (a different spectrum per row: line depth scales with its LOGG) with the
    sha1sum list of each field."""
    root = tmp_path / "sas"
    rng = np.random.default_rng(11)
    ids = [d[0] for d in DUPLICATES] + SINGLES
    fields = [d[2] for d in DUPLICATES] + ["FA" if i % 2 else "FB" for i in range(len(SINGLES))]
    table = allstar_table(ids, fields, rng)
    table["TELESCOPE"] = [d[1] for d in DUPLICATES] + ["apo25m"] * len(SINGLES)
    table.loc[:len(DUPLICATES) - 1, "SNR"] = [d[3] for d in DUPLICATES]
    survey.write_allstar(root / survey.ALLSTAR_NAME, table)
    pixel = np.arange(apogee.N_PIX)
    for row in table.itertuples():
        depth = 0.1 * row.LOGG
        flux = 1.0 - depth * np.exp(-0.5 * ((pixel % 400 - 200) / 3.0) ** 2)
        flux = flux + 0.002 * rng.standard_normal(apogee.N_PIX)
        survey.write_aspcapstar(root / survey.aspcapstar_relpath(row.TELESCOPE, row.FIELD,
                                                                 row.APOGEE_ID),
                                flux, np.full(apogee.N_PIX, 0.002))
    for (telescope, field), group in table.groupby(["TELESCOPE", "FIELD"]):
        names = [f"aspcapStar-dr17-{i}.fits" for i in group["APOGEE_ID"]]
        (root / telescope / field / download.checksum_list_name(telescope, field)).write_text(
            "".join(f"{survey.file_sha1(root / telescope / field / n)}  {n}\n" for n in names))
    return root, table


def _split(table, path):
    split = select_and_split(table, {"split": {"seed": 1, "counts": {"train": 10, "valid": 4,
                                                                     "test": 2}}})
    split.to_csv(path, index=False)
    return split


def _spectrum_files(requests):
    return sorted(p for p, _, status in requests if "aspcapStar-dr17-" in p and status == 200)


def test_download_and_compile_use_the_same_row_of_a_duplicated_star(sas, tmp_path):
    sas_root, table = sas
    _split(table, tmp_path / "split.csv")
    root = tmp_path / "dr17"
    with serve(sas_root) as server:
        manifest = download.download_chunk(sas_root / survey.ALLSTAR_NAME,
                                           [tmp_path / "split.csv"], 0, 1, root, server.url,
                                           tmp_path / "chunk0.csv", log=lambda m: None, **FAST)
        fetched = _spectrum_files(server.requests)
    assert len(manifest) == 16 and (manifest["status"] == "ok").all(), manifest
    for star, (telescope, field) in PRIMARY.items():
        assert fetched.count(f"/{telescope}/{field}/aspcapStar-dr17-{star}.fits") == 1
        assert sum(star in p for p in fetched) == 1, fetched
    out = [tmp_path / f"{s}.fits" for s in ("train", "valid", "test")]
    compile_dataset(tmp_path / "split.csv", sas_root / survey.ALLSTAR_NAME, None, root, out,
                    tmp_path / "quarantine.csv", manifests=[tmp_path / "chunk0.csv"],
                    log=lambda m: None)
    assert pd.read_csv(tmp_path / "quarantine.csv").empty
    data = {s.stem: load_split(s) for s in out}
    for star, (telescope, field) in PRIMARY.items():
        name, k = next((n, list(d.ids).index(star)) for n, d in data.items() if star in d.ids)
        flux, _ = survey.read_aspcapstar(root / survey.aspcapstar_relpath(telescope, field, star))
        np.testing.assert_allclose(data[name].flux[k], apogee.gap_delete(flux), rtol=1e-6)
        logg = table.loc[(table["APOGEE_ID"] == star) & (table["FIELD"] == field), "LOGG"]
        assert data[name].labels.set_index("APOGEE_ID").loc[star, "logg"] == pytest.approx(
            logg.item())


def test_the_catalogue_predicts_every_row_from_its_own_spectrum(sas, tmp_path):
    """fetch_all downloads every row's file; the catalogue gives each row its own spectrum's
    prediction; a failed download of one row of a star flags that row only."""
    sas_root, table = sas
    split = _split(table, tmp_path / "split.csv")
    root = tmp_path / "dr17"
    gone = DUPLICATES[2]                         # BOTH_TELESCOPES at lco25m: 404 on the server
    gone_rel = survey.aspcapstar_relpath(gone[1], gone[2], gone[0])
    with serve(sas_root) as server:
        server.fail(gone_rel, "404")
        manifest = download.download_chunk(sas_root / survey.ALLSTAR_NAME, [], 0, 1, root,
                                           server.url, tmp_path / "all.csv", log=lambda m: None,
                                           **FAST)
        fetched = _spectrum_files(server.requests)
    assert len(fetched) == len(table) - 1 and len(manifest) == len(table)
    assert manifest.loc[manifest["status"] != "ok", "path"].tolist() == [str(root / gone_rel)]
    survey.write_allstar(root / survey.ALLSTAR_NAME, table)

    out = [tmp_path / f"{s}.fits" for s in ("train", "valid", "test")]
    compile_dataset(tmp_path / "split.csv", root / survey.ALLSTAR_NAME, None, root, out,
                    tmp_path / "quarantine.csv", manifests=[tmp_path / "all.csv"],
                    log=lambda m: None)
    model_dir = tmp_path / "model"
    train_model(out[0], out[1], model_dir, task=make_task("logg", {"dataset": "d",
                                                                   "labels": ["logg"]}),
                model_name="linear", model_spec={"family": "linear", "hyper": {"alpha": 1e-3}},
                seed=0, code_digest="test", config_digest="test", log=lambda m: None)
    write_reference(out[0], model_dir, tmp_path / "reference.npz", n_components=2,
                    log=lambda m: None)
    predict_shard(root / survey.ALLSTAR_NAME, root, model_dir, tmp_path / "reference.npz",
                  tmp_path / "split.csv", tmp_path / "shard.fits", tmp_path / "shard_q.csv",
                  shard=0, n_shards=1, skip=survey.manifest_skips([tmp_path / "all.csv"]),
                  log=lambda m: None)
    catalogue = survey.read_table(tmp_path / "shard.fits", "CATALOGUE").sort_values("ROW")
    assert list(catalogue["ROW"]) == list(range(len(table)))
    flags = catalogue["FLAG"].to_numpy()
    assert flags[2] & FLAGS["QUARANTINED"] and np.isnan(catalogue["logg"].iat[2])
    assert not (np.delete(flags, 2) & (FLAGS["NO_SPECTRUM"] | FLAGS["QUARANTINED"])).any()
    quarantine = pd.read_csv(tmp_path / "shard_q.csv")
    assert quarantine[["APOGEE_ID", "TELESCOPE", "FIELD"]].values.tolist() == [list(gone[:3])]

    trained = stargrad.load(model_dir, calibration=None)
    rows = [0, 1, 3]                              # the readable rows of the duplicated stars
    paths = [root / survey.aspcapstar_relpath(*table.loc[r, ["TELESCOPE", "FIELD",
                                                              "APOGEE_ID"]]) for r in rows]
    own = trained.predict(*stargrad.api.spectra(paths))["logg"].to_numpy()
    np.testing.assert_allclose(catalogue["logg"].to_numpy()[rows], own, rtol=1e-5)
    assert abs(own[0] - own[1]) > 0.05              # the two fields' spectra differ
    in_training = set(split.loc[split["split"].isin(["train", "valid"]), "APOGEE_ID"])
    assert (catalogue["IN_TRAINING"] == catalogue["APOGEE_ID"].isin(in_training)).all()
