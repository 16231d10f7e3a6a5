"""Throughput of the bcnn families on this machine (a script, not a test).

For each family, on synthetic data (N spectra x 7514 pixels, 22 labels, batch 64):
time to the first finished epoch (compile included), training spectra/s after warm-up,
the training ceiling (the same training with the conv block replaced by a free pass-through of
its output's shape: what the dense layers, heads, loss and Adam alone allow on this machine),
MC-dropout inference spectra/s (100 samples) and mean 22-label Jacobian spectra/s (the
workflow's `attribution.mean_jacobian`, dropout off). Prints a table with each figure also as a
ratio to astroNN 1.1.0: by default the issue's figures for a 2-core machine; with
`--astronn JSON`, figures measured on this machine by `bench/astronn_baseline.py --json JSON`
(in a TensorFlow venv of its own). It also prints the machine's float32 matmul GFLOP/s and the
1-minute load average before and after, so that figures taken on a shared, loaded machine
compare as ratios. Set XLA_FLAGS=--xla_cpu_multi_thread_eigen=true before Python starts to
measure with XLA's multi-threaded Eigen (stargrad turns it off by default).

    .venv/bin/python bench/bench_models.py [--n-spectra 3000] [--epochs 3]
        [--families bcnn bcnn_censored] [--astronn JSON] [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from stargrad.sdss import apogee
from stargrad import models, train
from stargrad.models import bcnn as bcnn_module
from stargrad.attribution.jacobian import mean_jacobian
from stargrad.mc import mc_predict

N_LABELS = len(apogee.ASPCAP_LABELS)
#: astroNN 1.1.0 on a 2-core CPU of this machine type (spectra/s), for the printed ratios.
ASTRONN = {"bcnn": {"train": 1200, "mc": 18, "jacobian": 23},
           "bcnn_censored": {"train": 900, "mc": 18, "jacobian": 12}}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of float32 (n x n) @ (n x n) throughput in GFLOP/s."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda m: m @ m)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def synthetic(n: int, seed: int = 0) -> dict:
    """Random mean-subtracted-like spectra and standardized labels, ~10% missing."""
    rng = np.random.default_rng(seed)
    x = (0.05 * rng.standard_normal((n, apogee.N_PIX_GAPLESS))).astype(np.float32)
    valid = rng.random((n, N_LABELS)) > 0.1
    y = np.where(valid, rng.standard_normal((n, N_LABELS)), 0.0).astype(np.float32)
    y_err = np.where(valid, 0.05 * rng.random((n, N_LABELS)), 0.0).astype(np.float32)
    return {"x": x, "y": y, "y_err": y_err, "valid": valid}


def bench_training(model, data: dict, epochs: int) -> tuple[float, float]:
    """(seconds to the first finished epoch incl. compile, spectra/s over later epochs, mean
    epoch time as `astronn_baseline.py` takes it)."""
    n_valid = max(len(data["y"]) // 10, 1)
    tr = {k: v[n_valid:] for k, v in data.items()}
    va = {k: v[:n_valid] for k, v in data.items()}
    stamps = []
    cfg = train.TrainConfig(learning_rate=5e-4, batch_size=64, max_epochs=epochs,
                            early_stopping_patience=None)
    t0 = time.perf_counter()
    _, history = train.fit(model, tr, va, cfg, jax.random.key(0),
                           log=lambda *_: stamps.append(time.perf_counter()))
    first = stamps[0] - t0
    later = history["seconds"].to_numpy()[1:]
    rate = len(tr["y"]) / later.mean() if later.size else float("nan")
    return first, rate


def free_conv_features(params, x, key, spec):
    """Stand-in for `bcnn.conv_features` at no cost: the first T * C2 pixels of the flux,
    scaled by a trainable parameter so that the dense layers' input gradient is still
    computed, as in the real step."""
    return x[:, :spec.n_pooled * spec.num_filters[1]] * params["conv1"]["b"][0]


def bench_ceiling(family: str, data: dict, epochs: int) -> float:
    """Training spectra/s of `family` with the conv block free (`free_conv_features`)."""
    with mock.patch.object(bcnn_module, "conv_features", free_conv_features):
        model = models.build(family, n_inputs=apogee.N_PIX_GAPLESS, n_outputs=N_LABELS)
        return bench_training(model, data, epochs)[1]


def bench_mc(model, params, x, mc_samples: int) -> float:
    mc_predict(model, params, x[:64], jax.random.key(1), mc_samples=mc_samples)  # compile
    t0 = time.perf_counter()
    mc_predict(model, params, x, jax.random.key(2), mc_samples=mc_samples)
    return len(x) / (time.perf_counter() - t0)


def bench_jacobian(model, params, x, chunk: int) -> float:
    """Spectra/s of the mean 22-label Jacobian as the workflow computes it
    (`attribution.mean_jacobian`, dropout off, `chunk` stars per vmapped chunk), after a
    first call that compiles."""
    mean_jacobian(model, params, x[:chunk], chunk_size=chunk)
    t0 = time.perf_counter()
    mean_jacobian(model, params, x, chunk_size=chunk)
    return len(x) / (time.perf_counter() - t0)


def measured_astronn(path: str) -> dict:
    """astroNN figures from `astronn_baseline.py --json`, keyed by our family names."""
    with open(path) as f:
        measured = json.load(f)
    return {ours: {k: measured[theirs][k] for k in ("train", "mc", "jacobian")}
            for ours, theirs in (("bcnn", "ApogeeBCNN"), ("bcnn_censored", "ApogeeBCNNCensored"))
            if theirs in measured}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-spectra", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--families", nargs="+", default=["bcnn", "bcnn_censored"],
                        choices=["bcnn", "bcnn_censored"])
    parser.add_argument("--mc-samples", type=int, default=100)
    parser.add_argument("--mc-spectra", type=int, default=256)
    parser.add_argument("--jacobian-spectra", type=int, default=256)
    parser.add_argument("--jacobian-chunk", type=int, default=32,
                        help="stars per vmapped Jacobian chunk (the workflow's "
                             "attribute.chunk_size)")
    parser.add_argument("--astronn", metavar="JSON",
                        help="ratios against astroNN figures measured on this machine by "
                             "bench/astronn_baseline.py --json, instead of the built-in ones")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_spectra, args.epochs, args.mc_samples = 200, 2, 10
        args.mc_spectra, args.jacobian_spectra = 64, 32
    if not 1 <= args.jacobian_chunk <= args.jacobian_spectra <= args.n_spectra:
        parser.error("need 1 <= --jacobian-chunk <= --jacobian-spectra <= --n-spectra")
    astronn = measured_astronn(args.astronn) if args.astronn else ASTRONN
    missing = set(args.families) - set(astronn)
    if missing:
        parser.error(f"--astronn {args.astronn} has no figures for {sorted(missing)}")
    if args.n_spectra < 20 or args.epochs < 2:
        parser.error("need --n-spectra >= 20 and --epochs >= 2 (epoch 1 includes compilation)")
    gflops, load = matmul_gflops(), os.getloadavg()[0]
    env = {"jax": jax.__version__, "platform": jax.devices()[0].platform,
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "matmul_gflops": round(gflops, 1),
           "load_before": round(load, 2), "n_spectra": args.n_spectra,
           "mc_samples": args.mc_samples}
    print(f"jax {env['jax']} on {env['platform']}; XLA_FLAGS={env['xla_flags']!r}; "
          f"float32 matmul {gflops:.0f} GFLOP/s; load average {load:.1f}", flush=True)
    data = synthetic(args.n_spectra)
    x = data["x"][:args.mc_spectra]
    rows = []
    for family in args.families:
        model = models.build(family, n_inputs=apogee.N_PIX_GAPLESS, n_outputs=N_LABELS)
        first, train_rate = bench_training(model, data, args.epochs)
        ceiling = bench_ceiling(family, data, args.epochs)
        params = jax.jit(model.init)(jax.random.key(0))
        mc_rate = bench_mc(model, params, x, args.mc_samples)
        jac_rate = bench_jacobian(model, params, data["x"][:args.jacobian_spectra],
                                  args.jacobian_chunk)
        rows.append({"family": family, "first_epoch_s": round(first, 2),
                     "train": round(train_rate, 1), "ceiling": round(ceiling, 1),
                     "mc": round(mc_rate, 2),
                     "jacobian": round(jac_rate, 2), "load_after": round(os.getloadavg()[0], 2)})
    header = (f"{'family':14s} {'1st epoch s':>11s} {'train /s':>15s} {'ceiling /s':>15s} "
              f"{'MC(' + str(args.mc_samples) + ') /s':>15s} {'Jacobian /s':>15s} {'load':>5s}")
    print(header)
    for row in rows:
        ref = astronn[row["family"]]
        cells = [f"{row[k]:7.1f} ({row[k] / ref[r]:4.1f}x)"
                 for k, r in (("train", "train"), ("ceiling", "train"), ("mc", "mc"),
                              ("jacobian", "jacobian"))]
        print(f"{row['family']:14s} {row['first_epoch_s']:11.1f} "
              + " ".join(f"{c:>15s}" for c in cells) + f" {row['load_after']:5.1f}")
    source = f"measured, {args.astronn}" if args.astronn else "the issue's 2-core figures"
    shown = {f: {k: round(v) for k, v in r.items()} for f, r in astronn.items()}
    print(f"(spectra/s; ratios to astroNN 1.1.0 ({source}): {shown}; "
          f"matmul {gflops:.0f} GFLOP/s; ceiling: training with the conv block free)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "astronn": astronn, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
