"""VAE against PCA at equal latent size on the compiled mock splits (a script, not a test).

Trains each VAE configuration with the workflow's loop (`stargrad.train.fit`, the train split,
early stopping on the valid split), fits PCA with the same number of components, and prints per
model: training seconds and epochs, mean and median test reconstruction error (the
`reconstruction.csv` metric, normalized units²) beside PCA's, and the denoising ratios against
the mock's noiseless flux (`denoising.csv`: ratio_of_means, median_ratio; planted anomalies
left out). Run it after the workflow has compiled the dataset (`results/data/main/`):

    PYTHONPATH=src .venv/bin/python bench/bench_vae.py [--sizes 2 8] [--basis 64]
        [--hidden 128 64] [--beta 1e-4] [--lr 1e-3] [--epochs 200] [--patience 20]
        [--batch-size 64] [--conv] [--seed 17]

`--conv` trains the convolutional VAE (`basis` 0) with the other settings instead.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from stargrad.generative import analysis as generative
from stargrad.stages import generative as generative_stage
from stargrad import train
from stargrad.sdss.apogee import ASPCAP_LABELS, N_PIX_GAPLESS
from stargrad.datasets.dataset import Normalizer, batch, load_split
from stargrad.mock import read_truth
from stargrad.models import build
from stargrad.tasks import Task

TASK = Task("aspcap", "main", tuple(ASPCAP_LABELS))


def load(data_dir: Path, survey_root: Path) -> dict:
    """Normalized train/valid/test batches, and the test split's noisy and noiseless flux
    (planted anomalies left out) normalized the same way."""
    splits = {s: load_split(data_dir / f"{s}.fits") for s in ("train", "valid", "test")}
    norm = Normalizer.fit(splits["train"], TASK, "standard")
    test = splits["test"]
    planted = read_truth(survey_root / "truth.fits").set_index("APOGEE_ID")["anomaly"]
    keep = planted.reindex(test.ids).fillna("").to_numpy() == ""
    clean = generative_stage.read_model_flux(
        survey_root, survey_root / "allStar-dr17-synspec_rev1.fits", test.ids[keep])
    return {**{s: batch(d, TASK, norm) for s, d in splits.items()},
            "denoise": ((test.flux[keep] - norm.input_mean) / norm.input_std,
                        (clean - norm.input_mean) / norm.input_std, ~test.mask[keep])}


def scores(model, params, data: dict) -> dict:
    test = data["test"]
    err = generative.reconstruction_error(model, params, test["x"], test["pixel_valid"])
    d = generative.denoise_score(model, params, *data["denoise"])
    return {"mean": err.mean(), "median": np.median(err),
            "ratio_of_means": d["denoised_mse"].mean() / d["noisy_mse"].mean(),
            "median_ratio": d["ratio"].median()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("results/data/main"))
    ap.add_argument("--survey", type=Path, default=Path("resources/mock"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--basis", type=int, default=64)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--beta", type=float, default=1e-4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--plateau-patience", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--conv", action="store_true")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()

    data = load(args.data, args.survey)
    print(f"{len(data['train']['x'])} train / {len(data['valid']['x'])} valid / "
          f"{len(data['test']['x'])} test spectra; {len(data['denoise'][0])} test stars denoised")
    cfg = train.TrainConfig(learning_rate=args.lr, batch_size=args.batch_size,
                            max_epochs=args.epochs, early_stopping_patience=args.patience,
                            plateau_patience=args.plateau_patience)
    rows = []
    for size in args.sizes:
        pca = build("pca", n_inputs=N_PIX_GAPLESS, n_outputs=1, n_components=size)
        t0 = time.perf_counter()
        pca_params = pca.fit(data["train"], None, None)
        rows.append({"model": f"pca_{size}", "seconds": time.perf_counter() - t0, "epochs": 1,
                     **scores(pca, pca_params, data)})
        vae = build("vae", n_inputs=N_PIX_GAPLESS, n_outputs=1, latent_dim=size,
                    beta=args.beta, basis=0 if args.conv else args.basis,
                    num_hidden=tuple(args.hidden))
        t0 = time.perf_counter()
        params, history = train.fit(vae, data["train"], data["valid"], cfg,
                                    jax.random.PRNGKey(args.seed), log=lambda _: None)
        rows.append({"model": f"vae_{size}", "seconds": time.perf_counter() - t0,
                     "epochs": len(history), **scores(vae, params, data)})
        print(pd.DataFrame(rows[-2:]).to_string(index=False, float_format="%.4g"), flush=True)
    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False, float_format="%.4g"))


if __name__ == "__main__":
    main()
