"""The Payne and the oracle on a finished workflow run (a script, not a test): accuracy against
the Cramér–Rao bound per label, the emulators' held-out residual, the test-step and
implicit-Jacobian rates, and the same fits on noise-free test spectra (bias against noise).

Reads, under `--run` (a workflow directory), results/predictions/{payne,oracle,cannon}/aspcap/
test.fits (those present), results/truth/main/crb.fits, the trained models
results/models/{payne,cannon}/aspcap and benchmarks/train/payne/aspcap.tsv. Prints per label:
mad_std of the test residuals / the median per-star CRB (the scorecard's `crb_ratio`) and the
calibrated z spread for every model found; the median over labels; the valid split's χ² per
unmasked pixel of each emulator at the catalogue labels (noise weights 1/σ² only, stars with
every label: the held-out misfit of the model of the spectrum, 1 for a perfect one); the payne
test step's rate (stars/s, after compilation) and the implicit Jacobian of `--jacobian-stars`
stars; with `--noise-free N`, payne and the oracle fitted to the true forward model's spectra of
N test stars (no noise, the stars' own σ as weights): the median |error| / CRB per label is then
pure model bias. Wall times depend on the machine's load (the 1-minute load average is printed).

    PYTHONPATH=src .venv/bin/python bench/bench_payne.py --run . [--noise-free 100]
        [--oracle-stars 200] [--payne-stars 200] [--rate-stars 256] [--jacobian-stars 200]
        [--json PATH]

Without the workflow's oracle predictions, `--oracle-stars N` fits the oracle here to the first
N test stars and scores every model on those N stars (the oracle's z spread is then raw).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import stargrad
from stargrad.sdss import apogee
from stargrad.attribution.jacobian import jacobian
from stargrad.stages.compare import task_metrics
from stargrad.datasets.dataset import load_split, task_labels
from stargrad.mock.forward import batch_spectra
from stargrad.mock.writer import read_truth
from stargrad.models import cannon, payne
from stargrad.predictions import read_predictions
from stargrad.stages.oracle import fit_oracle, training_box
from stargrad.sdss.survey import read_table
from stargrad.tasks import Task

TASK = Task("aspcap", "main", tuple(apogee.ASPCAP_LABELS))
MODELS = ("oracle", "payne", "cannon")


def oracle_subset(run: Path, n: int) -> pd.DataFrame:
    """Oracle PREDICTIONS-like table of the first n test stars, fitted here (std uncalibrated)
    and kept in <run>/results/bench/oracle_test_<n>.csv, which a later call reads back."""
    cache = run / f"results/bench/oracle_test_{n}.csv"
    if cache.exists():
        return pd.read_csv(cache, dtype={"APOGEE_ID": str})
    test = load_split(run / "results/data/main/test.fits")
    train = load_split(run / "results/data/main/train.fits")
    box = training_box(task_labels(train, TASK), 0.1, 32)
    rows = slice(0, min(n, len(test)))
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_oracle(test.flux[rows], test.error[rows], test.mask[rows], box, n_iter=10)
    print(f"oracle: {len(fit['value'])} test stars in {time.perf_counter() - t0:.0f} s "
          f"({time.process_time() - c0:.0f} CPU s), {int(fit['converged'].sum())} converged")
    truth = task_labels(test, TASK)[rows]
    table = {"APOGEE_ID": test.ids[rows]}
    for k, label in enumerate(TASK.labels):
        table[label], table[f"{label}_true"] = fit["value"][:, k], truth[:, k]
        for col in ("std_total", "std_calibrated"):
            table[f"{label}_{col}"] = fit["std"][:, k]
    table["converged"] = fit["converged"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table).to_csv(cache, index=False)
    return pd.DataFrame(table)


def payne_subset(run: Path, n: int) -> pd.DataFrame:
    """Payne predictions of the first n test stars (std_calibrated = std_total, uncalibrated)."""
    test = load_split(run / "results/data/main/test.fits")
    trained = stargrad.load(run / "results/models/payne/aspcap", calibration=None)
    table = trained.predict(test.flux[:n], test.error[:n], test.mask[:n], mc_samples=0)
    truth = task_labels(test, TASK)[:n]
    for k, label in enumerate(TASK.labels):
        table[f"{label}_std_calibrated"] = table[f"{label}_std_total"]
        table[f"{label}_true"] = truth[:, k]
    table["APOGEE_ID"] = test.ids[:n]
    return table


def scorecard(run: Path, crb: pd.DataFrame, oracle_stars: int, payne_stars: int) -> pd.DataFrame:
    """crb_ratio and calibrated z spread per (model, label) from the test predictions; with
    `oracle_stars` and no oracle predictions, the oracle fitted here to that many test stars and
    every model scored on those stars; with `payne_stars` and no payne predictions, payne
    predicted here (uncalibrated) on that many test stars."""
    predictions = {(m, "test"): read_predictions(run / f"results/predictions/{m}/aspcap/test.fits")
                   for m in MODELS if (run / f"results/predictions/{m}/aspcap/test.fits").exists()}
    if oracle_stars and ("oracle", "test") not in predictions:
        oracle = oracle_subset(run, oracle_stars)
        ids = set(oracle["APOGEE_ID"])
        predictions = {key: table[table["APOGEE_ID"].isin(ids)].reset_index(drop=True)
                       for key, table in predictions.items()}
        predictions[("oracle", "test")] = oracle
    if payne_stars and ("payne", "test") not in predictions:    # uncalibrated
        predictions[("payne", "test")] = payne_subset(run, payne_stars)
    print("stars scored:", {m: len(t) for (m, _), t in predictions.items()})
    metrics = task_metrics(predictions, list(TASK.labels), "regression", "aspcap", crb)
    return metrics.pivot(index="label", columns="model",
                         values=["crb_ratio", "z_mad_std_calibrated"]).loc[list(TASK.labels)]


def valid_chi2(run: Path) -> dict:
    """Median over complete valid stars of χ²/unmasked pixel (1/σ² weights) at catalogue labels."""
    valid = load_split(run / "results/data/main/valid.fits")
    out = {}
    for name in ("payne", "cannon"):
        model_dir = run / f"results/models/{name}/aspcap"
        if not model_dir.exists():
            continue
        trained = stargrad.load(model_dir, calibration=None)
        x, x_err, mask = trained.inputs(valid.flux, valid.error, valid.mask)
        y = task_labels(valid, TASK)
        complete = ~np.any((y == -9999) | ~np.isfinite(y), axis=1)
        ell = ((y - trained.norm.label_mean) / trained.norm.label_std)[complete]
        if name == "payne":
            pred = np.asarray(payne.emulate(trained.params["emulator"], jnp.asarray(ell, jnp.float32)))
        else:
            order = trained.meta["hyper"].get("order", 2)
            pred = cannon.label_vector(ell, order) @ np.asarray(trained.params["theta"], np.float64).T
        w = np.where(mask[complete], 0.0, 1.0 / np.square(x_err[complete].astype(np.float64)))
        chi2 = (w * (x[complete] - pred) ** 2).sum(1) / (w > 0).sum(1)
        out[name] = float(np.median(chi2))
    return out


def rates(run: Path, n_rate: int, n_jacobian: int) -> dict:
    """Payne test step (stars/s) on n_rate test stars after a compiling call, for the labels
    alone and for every output, the fraction of those stars whose fit converged, and the
    implicit Jacobian of n_jacobian stars (s, after compiling its chunk of 32)."""
    trained = stargrad.load(run / "results/models/payne/aspcap", calibration=None)
    test = load_split(run / "results/data/main/test.fits")
    x, x_err, _ = trained.inputs(test.flux, test.error, test.mask)
    n = min(n_rate, len(x))
    out = {}
    # "value": the labels alone (XLA drops the rest); "all": every output, as `predict` runs it
    for name, pick in (("", lambda out: out["value"]), ("_all_outputs", lambda out: out)):
        apply = jax.jit(lambda p, xs, es: pick(trained.model.apply(p, xs, x_err=es)))
        jax.block_until_ready(apply(trained.params, x[:n], x_err[:n]))
        t0, c0 = time.perf_counter(), time.process_time()
        result = jax.block_until_ready(apply(trained.params, x[:n], x_err[:n]))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.update({f"test_step{name}_stars_per_s": n / wall,
                    f"test_step{name}_cpu_s_per_star": cpu / n})
    out["test_step_converged_fraction"] = float(np.mean(result["converged"]))   # every output
    m = min(n_jacobian, len(x))
    jacobian(trained.model, trained.params, x[:32], x_err=x_err[:32], chunk_size=32)
    t0, c0 = time.perf_counter(), time.process_time()
    jacobian(trained.model, trained.params, x[:m], x_err=x_err[:m], chunk_size=32)
    out.update(jacobian_stars=m, jacobian_s=time.perf_counter() - t0,
               jacobian_cpu_s=time.process_time() - c0)
    return out


def noise_free(run: Path, n: int, crb: pd.DataFrame) -> pd.DataFrame:
    """Median |fit − truth| / CRB per label of payne and the oracle on noise-free spectra."""
    test = load_split(run / "results/data/main/test.fits")
    rows = np.arange(min(n, len(test)))
    truth = read_truth(run / "resources/mock").set_index("APOGEE_ID")
    theta = truth.loc[test.ids[rows], list(apogee.ASPCAP_LABELS)].to_numpy(float)
    flux = batch_spectra(theta)[:, apogee.KEPT_PIXELS]
    error, mask = test.error[rows], test.mask[rows]
    bound = crb.set_index("APOGEE_ID").loc[test.ids[rows],
                                           [f"crb_{l}" for l in TASK.labels]].to_numpy()
    train = load_split(run / "results/data/main/train.fits")
    box = training_box(task_labels(train, TASK), 0.1, 32)
    fits = {"oracle": fit_oracle(flux, error, mask, box, n_iter=10)["value"]}
    trained = stargrad.load(run / "results/models/payne/aspcap", calibration=None)
    fits["payne"] = trained.predict(flux, error, mask)[list(TASK.labels)].to_numpy()
    return pd.DataFrame({name: np.median(np.abs(value - theta) / bound, axis=0)
                         for name, value in fits.items()}, index=list(TASK.labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("."))
    parser.add_argument("--noise-free", type=int, default=0)
    parser.add_argument("--oracle-stars", type=int, default=0)
    parser.add_argument("--payne-stars", type=int, default=0)
    parser.add_argument("--jacobian-stars", type=int, default=200)
    parser.add_argument("--rate-stars", type=int, default=256)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--oracle-only", action="store_true",
                        help="fit and cache the oracle's test subset, then stop")
    args = parser.parse_args()
    if args.oracle_only:
        oracle_subset(args.run, args.oracle_stars)
        return
    print(f"load average (1 min) before: {os.getloadavg()[0]:.2f}")
    crb = read_table(args.run / "results/truth/main/crb.fits", "CRB", what="CRB table")
    card = scorecard(args.run, crb, args.oracle_stars, args.payne_stars)
    pd.set_option("display.width", 200)
    print(card.round(3).to_string())
    medians = card["crb_ratio"].median().round(3).to_dict()
    print("median crb_ratio over 22 labels:", medians)
    chi2 = valid_chi2(args.run)
    print("valid χ²/pixel at catalogue labels:", chi2)
    bench = args.run / "benchmarks/train/payne/aspcap.tsv"
    train_s = float(pd.read_csv(bench, sep="\t")["s"].iloc[0]) if bench.exists() else None
    print("payne training (benchmark file, s):", train_s)
    speed = rates(args.run, args.rate_stars, args.jacobian_stars)
    print("rates:", {k: round(v, 3) for k, v in speed.items()})
    result = {"crb_ratio": card["crb_ratio"].to_dict(), "median_crb_ratio": medians,
              "z_calibrated": card["z_mad_std_calibrated"].to_dict(), "valid_chi2": chi2,
              "train_s": train_s, **speed}
    if args.noise_free:
        bias = noise_free(args.run, args.noise_free, crb)
        print(f"noise-free test spectra ({args.noise_free} stars): median |error| / CRB")
        print(bias.round(3).to_string())
        result["noise_free"] = bias.to_dict()
    print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
