"""End to end: run the real workflow as a `snakemake` subprocess on config/ci.yaml in a
temporary working directory, then check every contract file."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import fitsio
import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits as afits

from stargrad.sdss import apogee
from stargrad import models
from stargrad.params_io import load_params

from workflow_jobs import (CONFIG, ENV, REPO, command, planned_jobs, result_files,
                           snakemake, workflow_copy)

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(CONFIG.read_text())


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_survey_has_dr17_layout(run, config):
    root = run / "resources" / config["survey"]["name"]
    allstar = root / "allStar-dr17-synspec_rev1.fits"
    with afits.open(allstar) as hdul:
        cols = set(hdul[1].columns.names)
    assert {"APOGEE_ID", "TELESCOPE", "FIELD", "SNR", "STARFLAG", "ASPCAPFLAG", "TEFF", "LOGG",
            "FE_H", "MG_FE", "AL_FE", "CI_FE", "TIII_FE", "MEMBER"} <= cols
    first = next(root.glob("*/*/aspcapStar-dr17-*.fits"))
    with afits.open(first) as hdul:
        assert len(hdul) >= 4
        for ext in (1, 2, 3):
            assert hdul[ext].data.shape == (apogee.N_PIX,)
            assert hdul[ext].header["CRVAL1"] == pytest.approx(4.179)
            assert hdul[ext].header["CDELT1"] == pytest.approx(6e-6)


def test_split_and_compiled_files(run, config):
    for dataset, spec in config["datasets"].items():
        split = pd.read_csv(run / f"results/data/{dataset}/split.csv")
        counts = split["split"].value_counts()
        for name in ("train", "valid", "test"):
            data_path = run / f"results/data/{dataset}/{name}.fits"
            with fitsio.FITS(str(data_path)) as fits:
                n = fits["LABELS"].get_nrows()
                assert fits["FLUX"].get_dims() == [n, apogee.N_PIX_GAPLESS]
                assert fits["MASK"].get_dims() == [n, apogee.N_PIX_GAPLESS]
                header = fits[0].read_header()
                assert header["SGCFGH"] and header["SGVERS"]
            quarantined = pd.read_csv(run / f"results/data/{dataset}/quarantine.csv")
            assert n + (quarantined["split"] == name).sum() == counts[name]
        if spec["split"].get("cluster_member"):
            assert counts["cluster"] == config["survey"]["mock"]["n_cluster"]


def test_models_predictions_and_metrics(run, config):
    for model, spec in config["models"].items():
        if spec["family"] in ("vae", "ae", "pca", "gan"):   # unsupervised: generative test
            continue
        for task in spec["tasks"]:
            d = run / f"results/models/{model}/{task}"
            meta = json.loads((d / "model.json").read_text())
            assert meta["family"] == spec["family"] and meta["task"] == task
            norm = json.loads((d / "norm.json").read_text())
            assert len(norm["input_mean"]) == apogee.N_PIX_GAPLESS
            assert load_params(d / "params.npz")
            assert not list(d.glob("checkpoint*"))
            history = pd.read_csv(d / "history.csv")
            assert {"epoch", "train_loss", "valid_loss"} <= set(history.columns)
            pred = fitsio.read(str(run / f"results/predictions/{model}/{task}/test.fits"), ext="PREDICTIONS")
            labels = meta["labels"]
            calibration = pd.read_csv(run / f"results/predictions/{model}/{task}/calibration.csv")
            assert list(calibration["label"]) == labels
            assert np.all(calibration["scale"] > 0)
            if meta["kind"] == "classification":
                assert np.all(calibration["scale"] == 1.0)
            for k, label in enumerate(labels):
                for suffix in ("", "_std_model", "_std_predictive", "_std_total",
                               "_std_calibrated", "_true"):
                    assert f"{label}{suffix}" in pred.dtype.names
                assert np.all(np.isfinite(pred[label]))
                np.testing.assert_allclose(
                    pred[f"{label}_std_total"] ** 2,
                    pred[f"{label}_std_model"] ** 2 + pred[f"{label}_std_predictive"] ** 2,
                    rtol=1e-5)
                np.testing.assert_allclose(pred[f"{label}_std_calibrated"],
                                           calibration["scale"][k] * pred[f"{label}_std_total"],
                                           rtol=1e-5)
    for task in config["tasks"]:
        metrics = pd.read_csv(run / f"results/compare/{task}/metrics.csv")
        assert set(metrics["split"]) >= {"train", "valid", "test"}
        assert (run / f"results/compare/{task}/summary.png").stat().st_size > 1000


def test_models_beat_the_mean_on_the_mock(run, config):
    """On the test split every family predicts log g better than the training mean."""
    metrics = pd.read_csv(run / "results/compare/logg/metrics.csv")
    truth = fitsio.read(str(run / "results/predictions/linear/logg/test.fits"))["logg_true"]
    train = fitsio.read(str(run / "results/data/rgb_logg/train.fits"), ext="LABELS")["logg"]
    baseline = np.mean((truth - train.mean()) ** 2)
    rows = metrics[(metrics["split"] == "test") & (metrics["label"] == "logg")]
    assert len(rows) == len([m for m, s in config["models"].items() if "logg" in s["tasks"]])
    for row in rows.itertuples():
        assert row.mse < baseline, f"{row.model}: test MSE {row.mse:.4f} >= mean baseline {baseline:.4f}"


def test_crb_ratio_reported_on_the_mock(run):
    metrics = pd.read_csv(run / "results/compare/aspcap/metrics.csv")
    test = metrics[metrics["split"] == "test"]
    assert test["crb_ratio"].notna().all() and (test["crb_ratio"] > 0.3).all()


def test_oracle_row_first_and_chi2_fits_flag_convergence(run, config):
    """The mock's oracle (the true forward model fitted by the shared solver) heads the aspcap
    scorecard with a CRB ratio per label; every χ²-fitted family writes `converged`."""
    card = pd.read_csv(run / "results/compare/aspcap/scorecard.csv")
    assert card["model"].iloc[0] == "oracle"
    oracle = card[card["model"] == "oracle"]
    assert len(oracle) == 22 and oracle["crb_ratio"].notna().all()
    for model, spec in config["models"].items():
        if spec["family"] in ("cannon", "payne"):
            pred = fitsio.read(str(run / f"results/predictions/{model}/aspcap/test.fits"),
                               ext="PREDICTIONS")
            assert "converged" in pred.dtype.names


@pytest.mark.long
def test_second_run_does_nothing_and_one_target_rebuilds_alone(run, tmp_path):
    """In a copy of the run's directory (its files' times and Snakemake's records kept), so
    that the tests reading the run in parallel never see it change."""
    dry = snakemake(run, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    work = tmp_path / "work"
    shutil.copytree(run, work, symlinks=True)
    target = work / "results/models/mlp/logg/params.npz"
    before = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}
    target.unlink()
    snakemake(work, "results/models/mlp/logg/params.npz")
    assert target.exists()
    changed = {p for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t}
    assert changed <= {work / f"results/models/mlp/logg/{n}" for n in
                       ("params.npz", "model.json", "norm.json", "history.csv")}


def test_editing_one_model_reruns_only_its_jobs(run, tmp_path):
    edit = tmp_path / "edit.yaml"
    edit.write_text(yaml.safe_dump({"models": {"mlp": {"train": {"max_epochs": 3}}}}))
    dry = snakemake(run, "-n", "--configfile", str(CONFIG), str(edit))
    jobs = planned_jobs(dry.stdout + dry.stderr)
    per_model = [(rule, wc) for rule, wc in jobs if rule in ("train", "predict", "attribute")]
    assert per_model and all(wc["model"] == "mlp" for _, wc in per_model), jobs
    assert {"train", "predict"} <= {rule for rule, _ in per_model}
    upstream = {"mock_spectra", "mock_survey", "select_split", "compile_dataset",
                "truth_products"}
    assert not upstream & {rule for rule, _ in jobs}, jobs


def test_adding_a_task_to_a_model_trains_that_task_alone(run, tmp_path, config):
    tasks = config["models"]["mlp"]["tasks"]
    new = next(t for t in config["tasks"] if t not in tasks)
    edit = tmp_path / "edit.yaml"
    edit.write_text(yaml.safe_dump({"models": {"mlp": {"tasks": [*tasks, new]}}}))
    jobs = planned_jobs(snakemake(run, "-n", "--configfile", str(CONFIG), str(edit)).stdout)
    trained = [(wc["model"], wc["task"]) for rule, wc in jobs if rule == "train"]
    assert trained == [("mlp", new)], jobs
    assert {wc["task"] for rule, wc in jobs if rule in ("predict", "attribute")} == {new}, jobs


def test_adding_a_model_to_the_catalogue_runs_its_catalogue_alone(run, tmp_path, config):
    listed = config["catalogue"]["models"]
    new = next(m for m, spec in config["models"].items()
               if m not in listed and "aspcap" in spec["tasks"]
               and models.traits(spec["family"]).supervised)
    edit = tmp_path / "edit.yaml"
    edit.write_text(yaml.safe_dump({"catalogue": {"models": {**listed, new: ["aspcap"]}}}))
    jobs = planned_jobs(snakemake(run, "-n", "--configfile", str(CONFIG), str(edit)).stdout)
    assert {rule for rule, _ in jobs} - {"all"} == set(CATALOGUE), jobs
    assert {wc["model"] for rule, wc in jobs if rule in CATALOGUE} == {new}, jobs


#: The catalogue of the CI config includes bcnn_censored, so it follows that model's code.
CATALOGUE = ("catalogue_reference", "catalogue_shard", "catalogue")
#: (edited file, rules that must be planned, rules that may also be planned downstream of those,
#: the models whose train jobs must be planned)
CODE_EDITS = {
    "censored model built on bcnn.py": ("src/stargrad/models/bcnn.py",
                                        {"train", "predict", "attribute"},
                                        {"compare_task", "plot_pred_vs_true", *CATALOGUE,
                                         "generative_samples"},   # its label model
                                        {"bcnn", "bcnn_censored"}),
    "the GAN": ("src/stargrad/models/gan.py", {"train", "generative_samples"}, set(), {"gan"}),
    "attribution engine": ("src/stargrad/attribution/jacobian.py", {"attribute"},
                           {"compare_task"}, set()),
    "a plot": ("src/stargrad/plots/compare.py", {"compare_task", "plot_pred_vs_true"}, set(),
               set()),
    # the HTTP side of real-data downloads: no rule of the mock run imports it (the survey I/O
    # the stages share lives in survey.py), so nothing reruns
    "the HTTP download code": ("src/stargrad/sdss/download.py", set(), set(), set()),
    "the shared χ² solver": ("src/stargrad/solver.py", {"train", "predict", "attribute", "oracle"},
                             {"compare_task", "plot_pred_vs_true"}, {"cannon", "payne"}),
    "the mock's forward model": ("src/stargrad/mock/forward.py",
                                 {"mock_spectra", "mock_survey", "truth_products", "oracle"},
                                 {"select_split", "compile_dataset", "train", "predict",
                                  "attribute", "compare_task", "plot_pred_vs_true",
                                  "generative_reconstruction", "generative_latent_space",
                                  "generative_latent_regression", "generative_decoder",
                                  "generative_anomalies", "generative_denoise",
                                  "generative_samples", *CATALOGUE},
                                 None),
}


def test_a_copy_of_the_workflow_plans_nothing(run, tmp_path):
    """The finished run seen through `workflow_copy` (the edit tests' starting point): the same
    code digests, so nothing to do; what an edit of the copy plans is the edit's alone."""
    copy = workflow_copy(tmp_path)
    dry = snakemake(run, "-n", snakefile=copy / "Snakefile")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


@pytest.mark.parametrize("edit", list(CODE_EDITS))
def test_editing_library_code_reruns_exactly_the_rules_that_run_it(run, tmp_path, edit):
    """From a copy that plans nothing before an edit (test_a_copy_of_the_workflow_plans_nothing)."""
    path, required, downstream, trained = CODE_EDITS[edit]
    copy = workflow_copy(tmp_path)
    with open(copy / path, "a") as handle:
        handle.write("\n# an edit\n")
    jobs = planned_jobs(snakemake(run, "-n", snakefile=copy / "Snakefile").stdout)
    rules = {rule for rule, _ in jobs} - {"all"}
    print(f"{edit}: {sorted(rules)}")
    assert required <= rules and rules <= required | downstream, jobs
    if trained is not None:
        assert {wc["model"] for rule, wc in jobs if rule == "train"} == trained, jobs


def test_command_line_config_applies_on_top_of_the_default(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                           str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n",
                           "--cores", "1", "--config", "seed=3"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout)
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert {wc["model"] for rule, wc in jobs if rule == "train"} == set(default["models"])


@pytest.mark.long
def test_killed_run_resumes_to_the_same_files(run, tmp_path):
    """SIGKILL the whole snakemake process group while a network trains, rerun: the run
    completes and every result equals the uninterrupted run's, byte for byte. The run starts
    from the finished run's files (times kept) less the BCNN's model and everything made from
    it, so that it begins at its training and goes on to all that follows (predictions, MC
    dropout, attribution, the comparison)."""
    work = tmp_path / "killed"
    for top in ("resources", "results"):
        shutil.copytree(run / top, work / top)
    for stage in ("models", "predictions", "attribution", "catalogue"):
        shutil.rmtree(work / "results" / stage / "bcnn", ignore_errors=True)
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(command(work), stdout=out, stderr=subprocess.STDOUT, env=ENV,
                                start_new_session=True)
        log = work / "logs/train/bcnn/aspcap.log"
        deadline = time.monotonic() + 600
        # after bcnn's first epoch has been checkpointed, before it finishes the second
        while not [p for p in (work / "results").rglob("checkpoint.npz") if "bcnn/aspcap" in
                   p.as_posix()]:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "bcnn training never checkpointed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (work / "results/models/bcnn/aspcap/params.npz").exists()
    snakemake(work, "--unlock")
    snakemake(work)
    assert "resuming from" in log.read_text()
    killed, reference = result_files(work), result_files(run)
    assert sorted(killed) == sorted(reference)
    differ = [name for name in reference if killed[name] != reference[name]]
    assert not differ, differ


def test_attribution_and_scorecard(run, config):
    for model, spec in config["models"].items():
        if spec["family"] not in ("linear", "mlp", "bcnn", "bcnn_censored"):
            continue
        for task in spec["tasks"]:
            d = run / f"results/attribution/{model}/{task}"
            with fitsio.FITS(str(d / "jacobian.fits")) as fits:
                k = fits["LABELS"].get_nrows()
                assert fits["MEAN_JACOBIAN"].get_dims() == [k, apogee.N_PIX_GAPLESS]
                assert ("MEAN_JACOBIAN_MC" in fits) == spec["family"].startswith("bcnn")
            lines = pd.read_csv(d / "lines.csv")
            assert {"label", "wavelength_vac", "species_1", "dv_kms_1"} <= set(lines.columns)
            shares = pd.read_csv(d / "windows.csv")
            assert len(shares) == k and shares["none"].between(0, 1).all()
            assert len(list((d / "plots").glob("*.png"))) == k
    card = pd.read_csv(run / "results/compare/aspcap/scorecard.csv")
    assert card["fidelity"].notna().any() and card["cluster_spread_ratio"].notna().any()
    sim = pd.read_csv(run / "results/compare/aspcap/jacobian_similarity.csv")
    diag = sim[sim["model_a"] == sim["model_b"]]["cosine"]
    np.testing.assert_allclose(diag[np.isfinite(diag)], 1.0, rtol=1e-5)


def test_report_is_valid_html_with_every_figure(run):
    snakemake(run, "--report", "report.html")
    html = (run / "report.html").read_text(errors="replace")
    assert html.lstrip().lower().startswith("<!doctype html") and "</html>" in html.lower()
    for name in ("summary.png", "ranking.png", "scorecard.csv", "metrics.csv", "lines.csv",
                 "windows.csv", "pred_vs_true_mlp.png", "Mg.png", "samples.csv",
                 "samples_lines.png"):
        assert name in html, f"{name} missing from the report"
    # per-label Jacobian figures only for attribute.report_labels; the rest stay on disk
    assert "Ti2.png" not in html
    assert (run / "results/attribution/linear/aspcap/plots/Ti2.png").exists()


def test_generative_stage_outputs(run):
    d = run / "results/generative/aspcap"
    recon = pd.read_csv(d / "reconstruction.csv")
    assert set(recon["family"]) == {"vae", "ae", "pca"}
    pca = recon[recon["family"] == "pca"].sort_values("size")
    assert pca["mean_error"].is_monotonic_decreasing
    anomalies = pd.read_csv(next(d.glob("anomalies_*.csv")))
    assert anomalies["rank"].tolist() == list(range(1, len(anomalies) + 1))
    planted = anomalies[anomalies["planted"].fillna("").astype(str).str.len() > 0]
    assert len(planted) and (planted["rank"] <= len(anomalies) / 2).all()
    regression = pd.read_csv(next(d.glob("latent_regression_*.csv")))
    assert np.isfinite(regression["test_mse"]).all()
    samples = pd.read_csv(d / "samples.csv")
    assert list(samples["kind"]) == ["reference", "gan", "vae_prior", "gaussian_pca", "real"]
    scored = samples.iloc[1:]
    assert (scored["frechet"] > 0).all() and scored["auc_mean"].between(0, 1).all()
    assert (scored["auc_std"] >= 0).all() and (scored["spread_ratio"] > 0).all()
    assert {"ks_Fe_I", "ks_Mg_I", "ks_Al_I", "ks_K_I"} <= set(samples.columns)
    assert scored.filter(like="ks_").stack().between(0, 1).all()
    # the conditional GAN and the real test spectra: χ² against the noiseless mock flux and
    # the label model's errors at the conditioning labels; the real spectra's χ² is ≈ 1
    conditional = samples[samples["kind"].isin(["reference", "gan"])]
    assert conditional[["chi2_median", "dteff_median", "dlogg_median", "dFe_median"]].notna().all().all()
    assert 0.7 < samples["chi2_median"].iat[0] < 1.5
    for name in ("samples_lines.png", "samples_nearest.png", "samples_scores.png"):
        assert (d / name).stat().st_size > 0
    assert (d / "latent_space_ae_2.png").exists()


@pytest.mark.parametrize("override,message", [
    ('predict={"mc_splits": ["test"]}', "predict.mc_splits must list both or neither"),
    ('predict={"mc_samples": -1}', "mc_samples"),
    ('generative={"samples": {"pca_model": "vae_2"}}',
     "generative.samples.pca_model 'vae_2' is not a model of family ['pca']"),
    ('generative={"samples": {"label_model": "pca_2"}}',
     "generative.samples.label_model 'pca_2' is not a supervised model"),
])
def test_config_errors_stop_before_any_job(tmp_path, override, message):
    proc = snakemake(tmp_path, "-n", "--config", override, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
