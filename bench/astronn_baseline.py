"""astroNN 1.1.0 throughput on this machine, the baseline `bench_models.py` is compared with.

Runs astroNN's ApogeeBCNN and ApogeeBCNNCensored on synthetic data shaped as
`bench_models.py`'s (N spectra x 7514 pixels, 22 labels, ~10% missing, batch 64; flux around 1
and labels in physical ranges, since astroNN normalizes them itself) and prints seconds to the
first finished epoch, training spectra/s over the later epochs (mean epoch time), MC-dropout
inference spectra/s (astroNN's `predict`, 100 samples) and mean 22-label Jacobian spectra/s
(`jacobian(mean_output=True)`). TensorFlow is not a stargrad dependency: run this in a venv of
its own, never in stargrad's:

    python3 -m venv /tmp/astronn-venv
    /tmp/astronn-venv/bin/pip install "tensorflow==2.12.1" "tensorflow-probability==0.20.1" \
        "astroNN==1.1.0"
    /tmp/astronn-venv/bin/python bench/astronn_baseline.py [--n-spectra 3000] [--json PATH]

astroNN writes its model folders into the working directory; the script runs in a temporary
one.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

# Spelled out rather than imported from stargrad.sdss.apogee: this runs in astroNN's venv, which
# has no stargrad (nor the JAX it imports).
N_PIX = 7514
#: astroNN's 22 censored-model targets, in its order (its ApogeeBCNNCensored requires them).
LABELS = ["teff", "logg", "C", "C1", "N", "O", "Na", "Mg", "Al", "Si", "P", "S", "K", "Ca",
          "Ti", "Ti2", "V", "Cr", "Mn", "Fe", "Co", "Ni"]


def synthetic(n: int, seed: int = 0):
    """Continuum-normalized-like flux around 1 and labels in physical-like ranges, ~10% -9999."""
    rng = np.random.default_rng(seed)
    x = (1.0 + 0.05 * rng.standard_normal((n, N_PIX))).astype(np.float32)
    y = rng.standard_normal((n, len(LABELS))).astype(np.float32)
    y[:, 0] = 4700 + 300 * y[:, 0]
    y[:, 1] = 2.5 + 0.5 * y[:, 1]
    y[:, 2:] *= 0.2
    y_err = (0.05 * rng.random((n, len(LABELS)))).astype(np.float32)
    y_err[:, 0] *= 1000
    missing = rng.random(y.shape) < 0.1
    y[missing], y_err[missing] = -9999.0, -9999.0
    return x, y, y_err


def measure(family: str, x, y, y_err, epochs: int, mc_spectra: int, jac_spectra: int) -> dict:
    import tensorflow as tf
    from astroNN import models

    stamps = []

    class EpochStamps(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            stamps.append(time.perf_counter())

    net = getattr(models, family)()
    net.max_epochs, net.batch_size, net.mc_num = epochs, 64, 100
    net.targetname = LABELS
    net.callbacks = [EpochStamps()]
    t0 = time.perf_counter()
    net.fit(x, y, labels_err=y_err)
    n_train = len(x) - int(round(len(x) * net.val_size))
    later = np.diff(stamps)
    # The mean, not the median: astroNN's later epochs alternate between two durations
    # (about 1.4 and 2.5 s for ApogeeBCNN on 2,700 spectra), and a run pays for both.
    out = {"first_epoch_s": stamps[0] - t0, "train": n_train / float(np.mean(later)),
           "later_epochs_s": [round(float(s), 3) for s in later]}

    net.predict(x[:64])                                  # warm-up, as bench_models does
    t0 = time.perf_counter()
    net.predict(x[:mc_spectra])
    out["mc"] = mc_spectra / (time.perf_counter() - t0)

    net.jacobian(x[:8], mean_output=True)
    t0 = time.perf_counter()
    net.jacobian(x[:jac_spectra], mean_output=True)
    out["jacobian"] = jac_spectra / (time.perf_counter() - t0)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-spectra", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--families", nargs="+", default=["ApogeeBCNN", "ApogeeBCNNCensored"],
                        choices=["ApogeeBCNN", "ApogeeBCNNCensored"])
    parser.add_argument("--mc-spectra", type=int, default=256)
    parser.add_argument("--jacobian-spectra", type=int, default=64)
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch includes compilation)")
    json_path = os.path.abspath(args.json) if args.json else None
    x, y, y_err = synthetic(args.n_spectra)
    import astroNN
    import tensorflow as tf
    print(f"astroNN {astroNN.__version__}, TensorFlow {tf.__version__}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)
        for family in args.families:
            results[family] = measure(family, x, y, y_err, args.epochs, args.mc_spectra,
                                      args.jacobian_spectra)
    print(f"{'family':20s} {'1st epoch s':>11s} {'train /s':>9s} {'MC(100) /s':>10s} "
          f"{'Jacobian /s':>11s}")
    for family, r in results.items():
        print(f"{family:20s} {r['first_epoch_s']:11.1f} {r['train']:9.0f} {r['mc']:10.1f} "
              f"{r['jacobian']:11.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
