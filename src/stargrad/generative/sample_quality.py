"""Generated spectra judged against real ones by numbers: Fréchet distance and a classifier
two-sample test in the training spectra's principal components, line-depth distributions with
their Kolmogorov–Smirnov statistic, nearest-training-spectrum distances (memorisation) and the
samples' spread (collapse).

Spectra are continuum-normalized flux (N, 7514). The comparisons run in the space of the
training spectra's first k principal components (scores in flux units, `pca_space`): there a
generator is judged on the stellar signal, while in pixel space the photon noise of real
spectra, which no noise-free sample has, would tell them apart by itself.
"""
from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from .. import train as training
from ..sdss.apogee import N_PIX_GAPLESS, load_lines, pixel_of_wavelength
from .frechet import frechet_distance
from ..models import build
from ..models.pca import fit_components


def _spectra(name: str, flux) -> np.ndarray:
    flux = np.asarray(flux, dtype=np.float32)
    if flux.ndim != 2 or flux.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N >= 2, P), got {flux.shape}")
    return flux


def pca_space(train_flux, train_valid=None, n_components: int = 16) -> dict:
    """Mean (P,) and first `n_components` principal components (k, P) of training spectra
    (masked pixels, `train_valid` False, filled with the mean)."""
    flux = _spectra("train_flux", train_flux)
    valid = np.ones(flux.shape, bool) if train_valid is None else np.asarray(train_valid, bool)
    fitted = fit_components(flux, valid, n_components)
    return {"mean": np.asarray(fitted["mean"]), "components": np.asarray(fitted["components"])}


def project(space: dict, flux, valid=None) -> np.ndarray:
    """Scores (N, k) of spectra on the components of `space`; masked pixels count as the mean."""
    flux = np.asarray(flux, dtype=np.float32)
    if flux.ndim != 2 or flux.shape[1] != space["mean"].shape[0]:
        raise ValueError(f"spectra must have shape (N, {space['mean'].shape[0]}), got {flux.shape}")
    centred = flux - space["mean"]
    if valid is not None:
        centred = np.where(valid, centred, 0.0)
    if not np.isfinite(centred).all():
        raise ValueError("spectra have non-finite values at valid pixels")
    return centred @ space["components"].T


def observed(flux, masks, rows) -> np.ndarray:
    """Generated spectra (N, P) as the instrument delivers real ones: NaN (masked) where
    `masks[rows]` (True = bad pixel; `rows` (N,) picks a real star's mask per spectrum), so
    that they are scored with the same pixels missing as the real spectra they are held against."""
    flux, rows = np.asarray(flux), np.asarray(rows)
    if rows.shape != (len(flux),):
        raise ValueError(f"rows must give one mask row per spectrum ({len(flux)}), got shape "
                         f"{rows.shape}")
    return np.where(np.asarray(masks, bool)[rows], np.nan, flux)


def frechet(a, b) -> float:
    """Fréchet distance between score sets a (n, k) and b (m, k) (flux units²)."""
    return float(frechet_distance(np.asarray(a, np.float32), np.asarray(b, np.float32)))


def auc(score, positive) -> float:
    """Area under the ROC curve of `score` for the bool `positive` (Mann–Whitney U / n₊n₋,
    ties counted half): 0.5 when the score cannot separate the classes."""
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        raise ValueError("auc needs both classes")
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classifier_two_sample(real, fake, key, *, n_seeds: int = 3, hidden=(64, 64),
                          cfg: training.TrainConfig | None = None, log=print) -> np.ndarray:
    """AUCs (n_seeds,) of a classifier two-sample test (Lopez-Paz & Oquab 2017) of score sets
    `real` (n, k) against `fake` (m, k).

    Per seed: min(n, m) rows of each set are drawn; an MLP (`hidden`, ReLU) learns to tell them
    apart on one half (a fifth of it for early stopping) and its AUC is taken on the other half.
    0.5: the classifier cannot tell the samples apart; 1: it always can."""
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake must be (N, k) with the same k, got {real.shape}, "
                         f"{fake.shape}")
    n = min(len(real), len(fake))
    if n < 10:
        raise ValueError(f"classifier_two_sample: need at least 10 rows of each, got {n}")
    if not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"n_seeds must be a positive integer, got {n_seeds!r}")
    cfg = cfg or training.TrainConfig(learning_rate=3e-3, batch_size=64, max_epochs=200,
                                      early_stopping_patience=15)
    model = build("mlp", n_inputs=real.shape[1], n_outputs=1, kind="classification",
                  hidden=tuple(hidden))
    aucs = []
    for seed in range(n_seeds):
        k_real, k_fake, k_split, k_fit = jax.random.split(jax.random.fold_in(key, seed), 4)
        x = np.concatenate([real[np.asarray(jax.random.permutation(k_real, len(real)))[:n]],
                            fake[np.asarray(jax.random.permutation(k_fake, len(fake)))[:n]]])
        y = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.float32)[:, None]
        order = np.asarray(jax.random.permutation(k_split, 2 * n))
        train_idx, test_idx = order[:n], order[n:]
        n_stop = max(2, n // 5)
        mean, std = x[train_idx].mean(0), x[train_idx].std(0) + 1e-12
        x = (x - mean) / std

        def batch(idx):
            return {"x": x[idx], "y": y[idx], "y_err": np.zeros_like(y[idx]),
                    "valid": np.ones(y[idx].shape, bool)}

        params, _ = training.fit(model, batch(train_idx[n_stop:]), batch(train_idx[:n_stop]),
                                 cfg, k_fit, log=lambda *_: None)
        prob = np.asarray(model.apply(params, x[test_idx])["value"])[:, 0]
        aucs.append(auc(prob, y[test_idx, 0] > 0.5))
        log(f"classifier two-sample test, seed {seed}: AUC {aucs[-1]:.3f}")
    return np.asarray(aucs)


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(a) or not len(b):
        raise ValueError("ks_statistic needs two non-empty samples")
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def line_depths(flux, centres, half_width: int = 1) -> np.ndarray:
    """Depth 1 − min(flux) within ±`half_width` pixels of each line centre pixel: (N, L)."""
    flux = np.asarray(flux, dtype=float)
    centres = np.asarray(centres, dtype=int)
    window = centres[:, None] + np.arange(-half_width, half_width + 1)
    window = np.clip(window, 0, flux.shape[1] - 1)
    return 1.0 - flux[:, window].min(axis=2)


def strongest_lines(reference_flux, species, reference_valid=None) -> pd.DataFrame:
    """For each of `species` (e.g. "Fe I"), the line of the line list with the deepest median
    depth in `reference_flux` (N, 7514): species, vac (Å), pixel (7514 grid), median_depth.
    Lines in the chip gaps, or with a masked centre in over half the spectra, are skipped."""
    lines = load_lines()
    flux = np.asarray(reference_flux, dtype=float)
    if reference_valid is not None:
        flux = np.where(reference_valid, flux, np.nan)
    rows = []
    for name in species:
        rows_of = lines[lines["species"] == name]
        if rows_of.empty:
            raise ValueError(f"species {name!r} is not in the line list; known: "
                             f"{', '.join(sorted(lines['species'].unique()))}")
        pix = pixel_of_wavelength(rows_of["vac"].to_numpy(), N_PIX_GAPLESS)
        ok = np.isfinite(pix)
        if not ok.any():
            raise ValueError(f"every {name} line of the line list falls in a chip gap")
        pix = np.round(pix[ok]).astype(int)
        with np.errstate(all="ignore"):
            depth = np.nanmedian(line_depths(np.nan_to_num(flux, nan=1.0), pix), axis=0)
        usable = np.mean(np.isfinite(flux[:, pix]), axis=0) > 0.5
        if not usable.any():
            raise ValueError(f"every {name} line is masked in most reference spectra")
        best = int(np.argmax(np.where(usable, depth, -np.inf)))
        rows.append({"species": name, "vac": float(rows_of["vac"].to_numpy()[ok][best]),
                     "pixel": int(pix[best]), "median_depth": float(depth[best])})
    return pd.DataFrame(rows)


def nearest_distances(x, reference, chunk: int = 512) -> np.ndarray:
    """Euclidean distance (N,) from each row of `x` (N, k) to its nearest row of `reference`."""
    x, reference = np.asarray(x, np.float64), np.asarray(reference, np.float64)
    ref_sq = (reference ** 2).sum(1)
    out = np.empty(len(x))
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        sq = (part ** 2).sum(1)[:, None] + ref_sq[None, :] - 2.0 * part @ reference.T
        out[start:start + chunk] = np.sqrt(np.maximum(sq.min(axis=1), 0.0))
    return out


def spread(scores) -> float:
    """√(trace of the covariance) of score vectors (N, k): their total spread (flux units);
    a collapsed generator's is far below the real spectra's."""
    scores = np.asarray(scores, np.float64)
    return float(np.sqrt(np.trace(np.cov(scores, rowvar=False))))
