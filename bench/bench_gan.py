"""GAN samples against the real test spectra, for any trained GANs of a workflow run (a script,
not a test): the `generative_samples` rule's Fréchet distance, classifier two-sample AUC, nearest-
training and spread ratios, beside the Gaussian-in-PCA baseline and the real valid spectra, without
the label model and the χ² (so it needs only the data, the GANs and the PCA model).

Train variants by a config override that adds models, then score them together:

    .venv/bin/snakemake --cores 2 results/models/gan_b/aspcap/params.npz \\
        --configfile config/config.yaml variants.yaml
    PYTHONPATH=src .venv/bin/python bench/bench_gan.py gan gan_b [--run .] [--seeds 6]
        [--pca pca_16] [--seed 0]

Each GAN's samples are drawn with its position in the list folded into the key, and the
baseline's test masks follow from the number of GANs: change the list and every number moves by
sampling noise (about ±0.02 in the distance and ±0.05 in the AUC on the default mock).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from stargrad.stages.generative_samples import generative_samples

COLUMNS = ["source", "frechet", "auc_mean", "auc_std", "nn_ratio", "spread_ratio"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gans", nargs="+", help="model names under results/models/")
    parser.add_argument("--run", type=Path, default=Path("."))
    parser.add_argument("--pca", default="pca_16", help="the baseline's PCA model")
    parser.add_argument("--seeds", type=int, default=6, help="classifier seeds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = args.run / "results/models"
    splits = [args.run / f"results/data/main/{s}.fits" for s in ("train", "valid", "test")]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        table = generative_samples([models / g / "aspcap" for g in args.gans], *splits,
                                   out / "samples.csv", out / "lines.png", out / "nearest.png",
                                   out / "scores.png", pca_dir=models / args.pca / "aspcap",
                                   n_seeds=args.seeds, seed=args.seed, log=lambda *_: None)
    pd.set_option("display.width", 200)
    print(table[COLUMNS].round(3).to_string(index=False))
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
