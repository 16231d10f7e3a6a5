"""The generative-stage rule logic on a tiny compiled mock survey with tiny PCA/VAE models."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stargrad.stages import generative as stage
from stargrad.sdss import survey
from stargrad.mock import writer as mock_writer
from stargrad.sdss.apogee import ASPCAP_LABELS
from stargrad.datasets.compile import compile_dataset
from stargrad.datasets.dataset import load_split
from stargrad.stages.train import train_model
from stargrad.tasks import Task

SPLITS = ("train", "valid", "test", "cluster")
TASK = Task("aspcap", "main", tuple(ASPCAP_LABELS))
PCA_SIZES = (1, 2, 4)
QUIET = dict(log=lambda _: None)


def _compile(split_csv, survey_root, data) -> list:
    splits = [data / f"{s}.fits" for s in SPLITS]
    compile_dataset(split_csv, survey_root / survey.ALLSTAR_NAME,
                    survey_root / survey.SEISMIC_NAME, survey_root, splits,
                    data / "quarantine.csv", **QUIET)
    return splits


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 40-star mock (4 planted anomalies) compiled into 24/6/10 train/valid/test stars, three
    PCAs and one 2-D VAE trained through stages.train.train_model."""
    root = tmp_path_factory.mktemp("gen")
    survey_root = root / "survey"
    mock_writer.write_mock_survey(survey_root, n_field=40, n_cluster=0, seed=3, n_anomalies=4, **QUIET)
    # Planted anomalies held out of training: 24 stars cannot outvote a star a component
    # could be spent on.
    truth = mock_writer.read_truth(survey_root / mock_writer.TRUTH_NAME).sort_values("anomaly", kind="stable")
    pd.DataFrame({"APOGEE_ID": truth["APOGEE_ID"],
                  "split": ["train"] * 24 + ["valid"] * 6 + ["test"] * 10}) \
        .to_csv(root / "split.csv", index=False)
    splits = _compile(root / "split.csv", survey_root, root / "data")
    specs = {f"pca_{k}": {"family": "pca", "hyper": {"n_components": k}} for k in PCA_SIZES}
    specs["vae_2"] = {"family": "vae", "hyper": {"latent_dim": 2, "num_hidden": [16, 8],
                                                 "beta": 1e-3},
                      "train": {"max_epochs": 1, "batch_size": 8, "learning_rate": 5e-4}}
    dirs = {}
    for name, spec in specs.items():
        dirs[name] = root / "models" / name
        train_model(splits[0], splits[1], dirs[name], task=TASK, model_name=name,
                    model_spec=spec, seed=0, code_digest="test", config_digest="test", **QUIET)
    return {"root": root, "survey": survey_root, "splits": dict(zip(SPLITS, splits)),
            "models": dirs, "truth": survey_root / mock_writer.TRUTH_NAME}


def test_reconstruction_error_falls_with_pca_size(world, tmp_path):
    dirs = [world["models"][m] for m in ("vae_2", *(f"pca_{k}" for k in PCA_SIZES))]
    table = stage.reconstruction(dirs, world["splits"]["test"], tmp_path / "r.csv",
                                 tmp_path / "r.png", **QUIET)
    on_disk = pd.read_csv(tmp_path / "r.csv")
    assert list(on_disk.columns) == ["model", "family", "size", "mean_error", "median_error",
                                     "n_stars"]
    assert len(on_disk) == 4 and (on_disk["n_stars"] == 10).all()
    pca = table[table["family"] == "pca"]
    assert list(pca["size"]) == list(PCA_SIZES)
    # nested orthogonal projections: more components never reconstruct worse
    assert np.all(np.diff(pca["mean_error"]) < 0)
    assert (tmp_path / "r.png").stat().st_size > 0


def test_planted_anomalies_rank_above_median(world, tmp_path):
    paths = [world["splits"][s] for s in SPLITS]
    table = stage.anomalies(world["models"]["pca_4"], paths, tmp_path / "a.csv",
                            tmp_path / "a.png", truth_path=world["truth"], n_shown=3, **QUIET)
    on_disk = pd.read_csv(tmp_path / "a.csv", keep_default_na=False)
    assert list(on_disk.columns) == ["APOGEE_ID", "split", "score", "rank", "planted"]
    assert len(on_disk) == 40 and on_disk["APOGEE_ID"].is_unique
    assert list(on_disk["rank"]) == list(range(1, 41))
    assert np.all(np.diff(on_disk["score"]) <= 0)
    truth = mock_writer.read_truth(world["truth"]).set_index("APOGEE_ID")["anomaly"]
    assert dict(zip(table["APOGEE_ID"], table["planted"])) == truth.to_dict()
    planted = table[table["planted"] != ""]
    assert len(planted) == 4 and (planted["rank"] <= 20).all()
    assert (tmp_path / "a.png").stat().st_size > 0


@pytest.fixture(scope="module")
def odd_world(world):
    """The same 40 stars split with one planted anomaly of each kind in the training split
    (and two in the test split), and PCA-4 trained there."""
    # "" < "binary" < "continuum": 36 normal stars, then binary, binary, continuum, continuum
    ids = pd.read_csv(world["root"] / "split.csv")["APOGEE_ID"].to_numpy()
    order = np.r_[ids[:22], ids[[36, 38]], ids[22:36], ids[[37, 39]]]
    root = world["root"] / "odd"
    root.mkdir()
    pd.DataFrame({"APOGEE_ID": order, "split": ["train"] * 24 + ["valid"] * 6 + ["test"] * 10}) \
        .to_csv(root / "split.csv", index=False)
    splits = _compile(root / "split.csv", world["survey"], root / "data")
    train_model(splits[0], splits[1], root / "pca_4", task=TASK, model_name="pca_4",
                model_spec={"family": "pca", "hyper": {"n_components": 4}}, seed=0,
                code_digest="test", config_digest="test", **QUIET)
    return {"splits": splits, "model": root / "pca_4"}


def test_planted_anomalies_in_the_training_split_are_found(world, odd_world, tmp_path):
    """Scored in-sample, the two planted in the training split rank last (39th and 40th of 40):
    PCA-4 fitted on 24 stars spends components on them. Cross-fitted (6 folds of 4 stars), each
    scores over twice the training split's median and ranks in the top half."""
    table = stage.anomalies(odd_world["model"], odd_world["splits"], tmp_path / "a.csv",
                            tmp_path / "a.png", truth_path=world["truth"], n_shown=3, n_folds=6,
                            **QUIET)
    planted = table[table["planted"] != ""]
    assert sorted(planted["split"]) == ["test", "test", "train", "train"]
    in_train = planted[planted["split"] == "train"]
    assert (in_train["rank"] <= 20).all()
    assert (in_train["score"] > 2 * table.loc[table["split"] == "train", "score"].median()).all()


def test_model_flux_is_the_noiseless_spectrum(world):
    """HDU3 read and gap-deleted like the compiled flux: residuals are pure noise (χ² ≈ 1)."""
    test = load_split(world["splits"]["test"])
    clean = stage.read_model_flux(world["survey"], world["survey"] / survey.ALLSTAR_NAME,
                                  test.ids)
    planted = mock_writer.read_truth(world["truth"]).set_index("APOGEE_ID")["anomaly"]
    normal = planted.reindex(test.ids).to_numpy() == ""
    good = ~test.mask[normal]
    chi2 = ((test.flux[normal] - clean[normal]) / test.error[normal])[good] ** 2
    assert 0.8 < chi2.mean() < 1.2
    with pytest.raises(ValueError, match="not listed"):
        stage.read_model_flux(world["survey"], world["survey"] / survey.ALLSTAR_NAME, ["2M_NONE"])


def test_pca_denoises(world, tmp_path):
    dirs = [world["models"][m] for m in ("pca_4", "vae_2")]
    table = stage.denoise(dirs, world["splits"]["test"], world["survey"] / survey.ALLSTAR_NAME,
                          world["survey"], world["truth"], tmp_path / "d.csv", tmp_path / "plots",
                          **QUIET)
    assert set(table["model"]) == {"pca_4", "vae_2"}
    pca = table.set_index("model").loc["pca_4"]
    assert pca["denoised_mse"] < pca["noisy_mse"]
    assert np.isclose(pca["ratio_of_means"], pca["denoised_mse"] / pca["noisy_mse"])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["pca_4.png", "vae_2.png"]


def test_latent_regression_table(world, tmp_path):
    table = stage.latent_regression(
        world["models"]["pca_4"], world["splits"]["train"], world["splits"]["test"],
        tmp_path / "l.csv", labels=["logg", "Fe"], n_labelled=16, seed=0, hidden=[8],
        train_spec={"learning_rate": 3e-3, "batch_size": 8, "max_epochs": 5}, **QUIET)
    on_disk = pd.read_csv(tmp_path / "l.csv")
    assert list(on_disk.columns) == ["model", "input", "label", "test_mse", "n_labelled", "n_test"]
    assert set(zip(table["input"], table["label"])) == {
        (i, l) for i in ("latent", "spectrum") for l in ("logg", "Fe")}
    assert np.isfinite(table["test_mse"]).all() and (table["test_mse"] > 0).all()
    with pytest.raises(KeyError, match="lacks columns"):
        stage.latent_regression(world["models"]["pca_4"], world["splits"]["train"],
                                world["splits"]["test"], tmp_path / "x.csv", labels=["nope"],
                                n_labelled=16, seed=0, hidden=[8], train_spec={}, **QUIET)


def test_vae_figures(world, tmp_path):
    vae = world["models"]["vae_2"]
    stage.latent_space(vae, world["splits"]["test"], tmp_path / "z.png", **QUIET)
    stage.decoder_plots(vae, world["splits"]["test"], tmp_path / "p.png", tmp_path / "j.png",
                        n_samples=3, seed=0, **QUIET)
    for name in ("z.png", "p.png", "j.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_supervised_model_dir_is_rejected(world, tmp_path):
    model_dir = tmp_path / "linear"
    train_model(world["splits"]["train"], world["splits"]["valid"], model_dir, task=TASK,
                model_name="linear", model_spec={"family": "linear", "hyper": {"alpha": 1.0}},
                seed=0, code_digest="test", config_digest="test", **QUIET)
    with pytest.raises(ValueError, match="is not a model with an encoder"):
        stage.reconstruction([model_dir], world["splits"]["test"], tmp_path / "r.csv",
                             tmp_path / "r.png", **QUIET)
