"""The Cannon on the compiled mock (a script, not a test): training time, test-step rate,
accuracy against the Cramér–Rao bound, attribution fidelity, and the arithmetic against the
machine's float32 matmul rate.

Trains the `cannon` family (22 aspcap labels) on the train split with flux errors (x_err from
the split's ERROR, +inf at MASK), then on the test split reports, per label, the mad_std of the
residuals in physical units, the median per-star Cramér–Rao bound (CRB table of crb.fits), their
ratio, the median formal error over the CRB and the spread (mad_std) of the z-scores; and the
cosine similarity of the mean Jacobian (physical units) with the mean efficient-estimator
weights (EFFICIENT_WEIGHTS of crb.fits), as the workflow's attribute stage computes it
(`attribution.mean_jacobian`, apply without x_err) and with each star's x_err. The FLOP counts
are estimates of the arithmetic the algorithm needs (multiply-adds × 2), not measured.
Prints the 1-minute load average before and after: on a shared machine, read rates as ratios
to the matmul rate.

    PYTHONPATH=src .venv/bin/python bench/bench_cannon.py [--data results/data/main]
        [--crb results/truth/main/crb.fits] [--hyper '{"n_iter": 8}'] [--jacobian-stars 400]
        [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import fitsio
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from astropy.stats import mad_std

from stargrad.sdss import apogee
from stargrad import attribution, models
from stargrad.datasets.dataset import Normalizer, batch, load_split
from stargrad.models import cannon
from stargrad.tasks import Task

TASK = Task("aspcap", "main", tuple(apogee.ASPCAP_LABELS))
FIDELITY_LABELS = ("teff", "logg", "Fe", "Mg")


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of float32 (n x n) @ (n x n) throughput in GFLOP/s (jax, as the family runs)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda m: m @ m)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def split_batch(data, norm) -> dict:
    """Model batch of a split with x_err: flux error (normalized units), +inf at masked pixels."""
    out = batch(data, TASK, norm)
    out["x_err"] = cannon.flux_errors(data.error, data.mask, norm.input_std)
    return out


def read_crb(path, ids) -> tuple[pd.DataFrame, np.ndarray]:
    """(CRB table indexed by APOGEE_ID for `ids`, mean efficient weights (22, 7514))."""
    table = fitsio.read(str(path), ext="CRB")
    frame = pd.DataFrame({name: (np.char.strip(table[name].astype(str))
                                 if table[name].dtype.kind in "SU" else table[name].astype(float))
                          for name in table.dtype.names})
    weights = fitsio.read(str(path), ext="EFFICIENT_WEIGHTS").astype(np.float64)
    return frame.set_index("APOGEE_ID").loc[ids], weights


def test_step(model, params, data: dict, chunk: int) -> tuple[dict, float, float]:
    """(outputs (N, ...), compile-and-first-chunk seconds, stars/s after it) of the jitted
    apply over fixed-size chunks of stars (the last one padded)."""
    apply = jax.jit(lambda p, x, e: model.apply(p, x, x_err=e))
    n = len(data["x"])
    pad = -n % chunk
    x = np.concatenate([data["x"], np.zeros((pad, data["x"].shape[1]), np.float32)])
    err = np.concatenate([data["x_err"], np.ones((pad, data["x"].shape[1]), np.float32)])
    t0 = time.perf_counter()
    parts = [jax.tree.map(np.asarray, apply(params, x[:chunk], err[:chunk]))]
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(chunk, len(x), chunk):
        parts.append(jax.tree.map(np.asarray, apply(params, x[start:start + chunk],
                                                     err[start:start + chunk])))
    rate = (len(x) - chunk) / (time.perf_counter() - t0)
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}, first, rate


def accuracy_table(out: dict, data: dict, norm, crb: pd.DataFrame) -> pd.DataFrame:
    """Per label: mad_std of the residual (physical units), median CRB, their ratio, median
    formal error / median CRB, mad_std of z = residual / formal error, stars used."""
    rows = []
    for k, label in enumerate(TASK.labels):
        ok = data["valid"][:, k]
        resid = (out["value"][ok, k] - data["y"][ok, k]) * norm.label_std[k]
        formal = np.exp(0.5 * out["log_var"][ok, k]) * norm.label_std[k]
        bound = float(np.median(crb[f"crb_{label}"].to_numpy()[ok]))
        rows.append({"label": label, "mad_std": mad_std(resid), "crb": bound,
                     "ratio": mad_std(resid) / bound, "formal_over_crb": np.median(formal) / bound,
                     "z_spread": mad_std(resid / formal), "n": int(ok.sum())})
    return pd.DataFrame(rows)


def mean_jacobian_with_errors(model, params, x, x_err, chunk: int) -> np.ndarray:
    """Mean over stars of d value / d x (K, P) with each star's flux errors."""
    def value(xs, es):
        return model.apply(params, xs[None], x_err=es[None])["value"][0]

    jac = jax.jit(jax.vmap(jax.jacrev(value)))
    total = 0.0
    for start in range(0, len(x), chunk):
        total = total + np.asarray(jac(x[start:start + chunk], x_err[start:start + chunk]),
                                   np.float64).sum(axis=0)
    return total / len(x)


def flop_estimates(n_train: int, n_complete: int, n_pixels: int, n_labels: int, hyper: dict,
                   n_prototypes: int) -> dict:
    """Arithmetic (FLOPs, multiply-add = 2) of the dominant steps. Fit, per pixel: normal
    equations from pair products 2 N T(T+1)/2 + right side 2 N T + LU (2/3) T³, once on the
    complete stars and scatter_iter times on all (missing labels inferred). Test step, per
    star: M = ΘᵀC⁻¹Θ 2 P T(T+1)/2; references 3 × (2 P T + 2 P T); prototypes 2 × 2 P J;
    order-1 start 2 P (K+1)(K+2)/2; per LM iteration MD 2T²K + DᵀMD 2TK² + MΔv 2T²."""
    t = cannon.n_terms(n_labels, 2)
    u = t * (t + 1) // 2

    def solve(n):
        return 2 * n * u + 2 * n * t + 2 * t ** 3 / 3

    refits = max(hyper.get("scatter_iter", 1) - 1, 0) + 1
    per_pixel = solve(n_complete) + refits * solve(n_train)
    iterations = 2 * hyper.get("n_iter", 8) + hyper.get("n_polish", 4)
    per_star = (2 * n_pixels * u + 3 * 4 * n_pixels * t + 4 * n_pixels * n_prototypes
                + n_pixels * (n_labels + 1) * (n_labels + 2)
                + iterations * (2 * t * t * n_labels + 2 * t * n_labels ** 2 + 2 * t * t))
    return {"fit_per_pixel": per_pixel, "fit_total": per_pixel * n_pixels,
            "test_per_star": per_star}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="results/data/main")
    parser.add_argument("--crb", default="results/truth/main/crb.fits")
    parser.add_argument("--hyper", default="{}", help="JSON of cannon hyper-parameters")
    parser.add_argument("--chunk", type=int, default=256, help="stars per test-step call")
    parser.add_argument("--jacobian-stars", type=int, default=400,
                        help="test stars of the mean Jacobian (the workflow's max_stars)")
    parser.add_argument("--jacobian-chunk", type=int, default=32)
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this file")
    args = parser.parse_args(argv)
    hyper = json.loads(args.hyper)

    gflops, load_before = matmul_gflops(), os.getloadavg()[0]
    train_data, test_data = (load_split(f"{args.data}/{s}.fits") for s in ("train", "test"))
    norm = Normalizer.fit(train_data, TASK, "mean")
    train_batch, test_batch = split_batch(train_data, norm), split_batch(test_data, norm)
    crb, weights = read_crb(args.crb, test_data.ids)
    model = models.build("cannon", n_inputs=apogee.N_PIX_GAPLESS, n_outputs=len(TASK.labels),
                         **hyper)
    fit_hyper = {k: v for k, v in hyper.items() if k not in ("implicit", "star_chunk")}

    stages = []
    t0 = time.perf_counter()
    params, _ = cannon.train_cannon(train_batch, log=stages.append, **fit_hyper)
    fit_seconds = time.perf_counter() - t0
    out, first_chunk, rate = test_step(model, params, test_batch, args.chunk)
    table = accuracy_table(out, test_batch, norm, crb)

    x_jac = test_batch["x"][:args.jacobian_stars]
    t0 = time.perf_counter()
    mean_j, _ = attribution.mean_jacobian(model, params, x_jac, chunk_size=args.jacobian_chunk)
    jac_seconds = time.perf_counter() - t0
    fid = attribution.fidelity(attribution.to_physical(mean_j, norm.input_std, norm.label_std),
                               weights, labels=TASK.labels).set_index("label")["fidelity"]
    mean_j_err = mean_jacobian_with_errors(model, params, x_jac,
                                           test_batch["x_err"][:args.jacobian_stars],
                                           args.jacobian_chunk)
    fid_err = attribution.fidelity(attribution.to_physical(mean_j_err, norm.input_std,
                                                           norm.label_std),
                                   weights, labels=TASK.labels).set_index("label")["fidelity"]
    table["fidelity"] = table["label"].map(fid)
    table["fidelity_x_err"] = table["label"].map(fid_err)
    load_after = os.getloadavg()[0]

    n_complete = int(train_batch["valid"].all(axis=1).sum())
    flops = flop_estimates(len(train_batch["x"]), n_complete, apogee.N_PIX_GAPLESS,
                           len(TASK.labels), hyper, hyper.get("n_prototypes", 256))
    pd.set_option("display.width", 160)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nmedian CRB ratio {table['ratio'].median():.2f}   fidelity "
          + ", ".join(f"{l} {fid[l]:.3f} (with x_err {fid_err[l]:.3f})" for l in FIDELITY_LABELS))
    print(f"training: {fit_seconds:.1f} s for {len(train_batch['x'])} stars "
          f"({n_complete} with every label); stages:")
    for line in stages:
        print(f"  {line}")
    print(f"test step: {rate:.1f} stars/s after a first chunk of {args.chunk} in "
          f"{first_chunk:.1f} s (compile included)")
    print(f"mean Jacobian (attribution.mean_jacobian, {len(x_jac)} stars): "
          f"{len(x_jac) / jac_seconds:.1f} stars/s (compile included)")
    print(f"float32 matmul: {gflops:.0f} GFLOP/s; estimated arithmetic: fit "
          f"{flops['fit_per_pixel'] / 1e6:.0f} MFLOP/pixel, {flops['fit_total'] / 1e12:.2f} TFLOP "
          f"-> {flops['fit_total'] / fit_seconds / 1e9:.0f} GFLOP/s achieved; test step "
          f"{flops['test_per_star'] / 1e6:.0f} MFLOP/star -> "
          f"{flops['test_per_star'] * rate / 1e9:.0f} GFLOP/s achieved")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"table": table.to_dict(orient="records"), "fit_seconds": fit_seconds,
                       "stages": stages, "test_stars_per_s": rate,
                       "jacobian_stars_per_s": len(x_jac) / jac_seconds, "matmul_gflops": gflops,
                       "flops": flops, "load": [load_before, load_after], "hyper": hyper},
                      f, indent=1)


if __name__ == "__main__":
    main()
