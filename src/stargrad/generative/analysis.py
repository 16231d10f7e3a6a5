"""Analyses of the generative models (VAE, autoencoder, PCA) of spectra: reconstruction error, denoising,
label regression from the latent space, anomaly scores, decoder Jacobians, prior samples.

Spectra are normalized the way the model's `input_norm` says (training mean subtracted, and for
"standard" divided by the per-pixel training std), shape (N, P); flux errors and noiseless
flux passed in must be normalized the same way (errors divided by the same std).
`pixel_valid` (N, P) bool marks good pixels (None: all good); masked pixels are set to 0 (the
training mean) before encoding and never enter a score. Latent codes are the means z = μ.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .. import train as training
from ..sdss.apogee import N_PIX_GAPLESS, is_missing
from ..models import build
from ..models.vae import decode
from ..trained import apply_in_chunks

DEFAULT_BATCH = 256


def _spectra(name: str, x, n_pix: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or (n_pix is not None and x.shape[1] != n_pix):
        want = f"(N, {n_pix})" if n_pix is not None else "(N, P) with N >= 1"
        raise ValueError(f"{name} must have shape {want}, got {x.shape}")
    return x


def _mask(pixel_valid, x: np.ndarray, name: str) -> np.ndarray:
    if pixel_valid is None:
        return np.ones(x.shape, dtype=bool)
    valid = np.asarray(pixel_valid)
    if valid.shape != x.shape or valid.dtype != bool:
        raise ValueError(f"{name} must be a bool array of shape {x.shape}, "
                         f"got {valid.dtype} {valid.shape}")
    return valid


def _checked(x, pixel_valid, name: str = "x", n_pix: int | None = None):
    """(spectra with masked pixels set to 0, mask), raising on non-finite valid pixels."""
    x = _spectra(name, x, n_pix)
    valid = _mask(pixel_valid, x, f"pixel_valid of {name}")
    bad = int(np.count_nonzero(valid & ~np.isfinite(x)))
    if bad:
        raise ValueError(f"{name} has {bad} non-finite values at valid pixels")
    return np.where(valid, x, 0.0).astype(np.float32), valid


def _apply_batched(model, params, x: np.ndarray, batch_size: int = DEFAULT_BATCH) -> dict:
    """model.apply(params, x) with z = μ, in fixed-size chunks (one compilation); numpy out."""
    out = apply_in_chunks(model, params, x, batch_size=batch_size)
    return {k: out[k] for k in ("value", "z_mean")}


def _masked_mean(sq: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, sq, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def reconstruct(model, params, x, pixel_valid=None, batch_size: int = DEFAULT_BATCH) -> dict:
    """{"value": (N, P) reconstructions, "z_mean": (N, d) latent means} of spectra `x`."""
    x, _ = _checked(x, pixel_valid)
    return _apply_batched(model, params, x, batch_size)


def reconstruction_error(model, params, x, pixel_valid=None,
                         batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Per-star mean squared reconstruction error over valid pixels (normalized units²)."""
    x, valid = _checked(x, pixel_valid)
    recon = _apply_batched(model, params, x, batch_size)["value"]
    return _masked_mean((recon - x) ** 2, valid)


def error_table(entries, x, pixel_valid=None) -> pd.DataFrame:
    """Reconstruction error of spectra `x` for each (family, size, params, model) entry.

    `size` is the latent dimension (VAE) or number of components (PCA). Columns: family,
    size, mean_error, median_error, n_stars; sorted by family then size."""
    rows = []
    for entry in entries:
        if len(entry) != 4:
            raise ValueError(f"error_table: entries must be (family, size, params, model), "
                             f"got {len(entry)} items")
        family, size, params, model = entry
        err = reconstruction_error(model, params, x, pixel_valid)
        rows.append({"family": family, "size": int(size), "mean_error": float(err.mean()),
                     "median_error": float(np.median(err)), "n_stars": len(err)})
    return pd.DataFrame(rows).sort_values(["family", "size"], ignore_index=True)


def denoise_score(model, params, x_noisy, x_clean, pixel_valid=None) -> pd.DataFrame:
    """Score reconstructions of noisy spectra against the noiseless flux, per star.

    `x_clean` is the noiseless flux (the mock's aspcapStar HDU3 model) normalized like
    `x_noisy` (same mean subtracted). Columns: noisy_mse (input vs clean), denoised_mse
    (reconstruction vs clean), ratio = denoised_mse / noisy_mse (< 1: the model denoises)."""
    x_noisy, valid = _checked(x_noisy, pixel_valid, "x_noisy")
    x_clean, _ = _checked(x_clean, valid, "x_clean", n_pix=x_noisy.shape[1])
    if len(x_clean) != len(x_noisy):
        raise ValueError(f"x_clean has {len(x_clean)} stars, x_noisy {len(x_noisy)}")
    recon = _apply_batched(model, params, x_noisy)["value"]
    noisy = _masked_mean((x_noisy - x_clean) ** 2, valid)
    denoised = _masked_mean((recon - x_clean) ** 2, valid)
    return pd.DataFrame({"noisy_mse": noisy, "denoised_mse": denoised,
                         "ratio": denoised / np.maximum(noisy, np.finfo(np.float32).tiny)})


def anomaly_score(model, params, x, pixel_valid=None, error=None) -> np.ndarray:
    """Per-star reconstruction error over valid pixels: the MSE (normalized units²), or with
    `error` (N, P flux errors, normalized like x) the reduced χ² mean((x − x̂)²/σ²); pixels
    whose error is not finite and positive are left out of the χ²."""
    x, valid = _checked(x, pixel_valid)
    recon = _apply_batched(model, params, x)["value"]
    sq = (recon - x) ** 2
    if error is not None:
        error = _spectra("error", error, x.shape[1])
        if error.shape != x.shape:
            raise ValueError(f"error must have shape {x.shape}, got {error.shape}")
        good = np.isfinite(error) & (error > 0)
        valid = valid & good
        sq = sq / np.where(good, error, 1.0) ** 2
    return _masked_mean(sq, valid)


def fold_of(n: int, n_folds: int, key) -> np.ndarray:
    """(n,) fold index in [0, n_folds) of each of n stars: a random permutation drawn from `key`
    dealt round-robin, so that fold sizes differ by at most one."""
    if not isinstance(n_folds, int) or isinstance(n_folds, bool) or not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be an integer in [2, {n}] (the number of stars), "
                         f"got {n_folds!r}")
    folds = np.empty(n, dtype=int)
    folds[np.asarray(jax.random.permutation(key, n))] = np.arange(n) % n_folds
    return folds


def cross_fit(model, train, valid, cfg: training.TrainConfig, key, *, n_folds: int = 5,
              log=print) -> tuple[np.ndarray, list]:
    """K-fold fits of `model` on the batch dict `train`: (fold (N,) of each training star,
    [params fitted without fold k for k < n_folds]).

    Each fit is `train.fit` on the other folds (closed form, or the gradient loop with `cfg` and
    early stopping on `valid`), so a data-derived initialisation (`init_data`) is refitted too.
    `key` draws the folds and each fit's key."""
    n = len(train["x"])
    fold_key, fit_key = jax.random.split(key)
    folds = fold_of(n, n_folds, fold_key)
    fold_params = []
    for k in range(n_folds):
        keep = folds != k
        log(f"cross_fit: fold {k + 1}/{n_folds}, fitting on {int(keep.sum())} of {n} stars")
        params, _ = training.fit(model, {name: a[keep] for name, a in train.items()}, valid,
                                 cfg, jax.random.fold_in(fit_key, k), log=log)
        fold_params.append(params)
    return folds, fold_params


def cross_fitted_anomaly_score(model, folds, fold_params, x, pixel_valid=None,
                               error=None) -> np.ndarray:
    """`anomaly_score` of each star by the model that did not see it: star i by
    `fold_params[folds[i]]` (the output of `cross_fit` on these stars, in this order)."""
    folds = np.asarray(folds)
    x = _spectra("x", x)
    if folds.shape != (len(x),):
        raise ValueError(f"folds must have shape ({len(x)},), got {folds.shape}")
    if len(x) and not 0 <= folds.min() <= folds.max() < len(fold_params):
        raise ValueError(f"folds must lie in [0, {len(fold_params)}) (one params per fold), "
                         f"got {folds.min()}..{folds.max()}")
    scores = np.empty(len(x))
    for k, params in enumerate(fold_params):
        rows = folds == k
        if rows.any():
            scores[rows] = anomaly_score(
                model, params, x[rows], None if pixel_valid is None else pixel_valid[rows],
                None if error is None else np.asarray(error)[rows])
    return scores


def rank_anomalies(scores, ids=None, top: int | None = None) -> pd.DataFrame:
    """Stars ordered by decreasing anomaly score: rank (1 = most anomalous), index, id, score."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D (one per star), got shape {scores.shape}")
    ids = np.arange(len(scores)) if ids is None else np.asarray(ids)
    if len(ids) != len(scores):
        raise ValueError(f"ids has {len(ids)} entries, scores {len(scores)}")
    order = np.argsort(-scores, kind="stable")[:top]
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "index": order,
                         "id": ids[order], "score": scores[order]})


def _decoder(params, n_pixels: int):
    """z (B, d) -> spectra (B, P) for VAE, autoencoder or PCA parameters."""
    if "components" in params:
        return lambda z: params["mean"] + z @ params["components"]
    if "decoder" in params:
        return lambda z: decode(params, z, n_pixels)
    raise ValueError("params are neither VAE (key 'decoder') nor PCA (key 'components') "
                     f"parameters; top-level keys: {sorted(params)}")


def latent_dim_of(params) -> int:
    """Latent dimension of VAE or autoencoder parameters, or number of PCA components."""
    if "components" in params:
        return int(params["components"].shape[0])
    return int(params["encoder"]["mu"]["b"].shape[0])


def decoder_jacobian(params, z0, n_pixels: int = N_PIX_GAPLESS) -> np.ndarray:
    """d spectrum / d z at latent point z0 (d,), shape (d, P): how each latent dimension
    changes the decoded normalized flux. For PCA it is the component matrix."""
    z0 = jnp.asarray(z0, dtype=jnp.float32)
    d = latent_dim_of(params)
    if z0.shape != (d,):
        raise ValueError(f"z0 must have shape ({d},), got {z0.shape}")
    dec = _decoder(params, n_pixels)
    return np.asarray(jax.jit(jax.jacfwd(lambda z: dec(z[None])[0]))(z0)).T


def sample_prior(params, key, n: int, n_pixels: int = N_PIX_GAPLESS) -> np.ndarray:
    """n spectra (n, P) decoded from the prior: z ~ N(0, I) for the VAE, z ~ N(0, diag(λ))
    with λ the explained variances for PCA."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"sample_prior: n must be a positive integer, got {n!r}")
    z = jax.random.normal(key, (n, latent_dim_of(params)))
    if "components" in params:
        z = z * jnp.sqrt(params["explained_variance"])
    return np.asarray(jax.jit(_decoder(params, n_pixels))(z))


def _standardize(train: np.ndarray, *others: np.ndarray):
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def _label_batch(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> dict:
    return {"x": x, "y": np.where(valid, y, 0.0).astype(np.float32),
            "y_err": np.zeros(y.shape, np.float32), "valid": valid}


def latent_regression(model, params, x_train, y_train, x_test, y_test, key, *,
                      labels=("logg", "Fe"), pixel_valid_train=None, pixel_valid_test=None,
                      n_labelled: int = 256, valid_fraction: float = 0.25, hidden=(32,),
                      cfg: training.TrainConfig | None = None, log=print) -> pd.DataFrame:
    """Learn labels from few stars: the same MLP on latent means z vs on raw spectra.

    `n_labelled` stars are drawn from the training set with `key` (a `valid_fraction` of them
    for early stopping); labels `y_*` (N, K) are physical (K, dex), −9999 or NaN where missing,
    standardized on the labelled subset. Features are standardized too. Returns one row per
    (input, label): input ("latent" | "spectrum"), label, test_mse (physical units²),
    n_labelled, n_test (stars with that label)."""
    x_train, pv_train = _checked(x_train, pixel_valid_train, "x_train")
    x_test, pv_test = _checked(x_test, pixel_valid_test, "x_test", n_pix=x_train.shape[1])
    labels = list(labels)
    ys = []
    for name, y, n in (("y_train", y_train, len(x_train)), ("y_test", y_test, len(x_test))):
        y = np.asarray(y, dtype=float)
        if y.shape != (n, len(labels)):
            raise ValueError(f"{name} must have shape ({n}, {len(labels)}) for labels "
                             f"{labels}, got {y.shape}")
        ys.append(y)
    y_train, y_test = ys
    if not 2 <= n_labelled <= len(x_train):
        raise ValueError(f"n_labelled={n_labelled} must be in [2, {len(x_train)}] (training stars)")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    cfg = cfg or training.TrainConfig(learning_rate=3e-3, batch_size=32, max_epochs=300,
                                      early_stopping_patience=30)
    pick_key, *fit_keys = jax.random.split(key, 3)
    pick = np.asarray(jax.random.permutation(pick_key, len(x_train)))[:n_labelled]
    n_val = max(1, int(round(valid_fraction * n_labelled)))
    fit_idx, val_idx = pick[n_val:], pick[:n_val]

    y_ok = [~is_missing(y) for y in (y_train, y_test)]
    y_sub = y_train[pick]
    ok_sub = y_ok[0][pick]
    if not ok_sub.any(axis=0).all():
        raise ValueError(f"a label in {labels} has no value among the {n_labelled} labelled stars")
    mean = np.array([y_sub[ok_sub[:, k], k].mean() for k in range(len(labels))])
    std = np.array([max(y_sub[ok_sub[:, k], k].std(), 1e-8) for k in range(len(labels))])
    y_norm = np.where(y_ok[0], (y_train - mean) / std, 0.0)

    z_train = reconstruct(model, params, x_train, pv_train)["z_mean"][pick]
    z_test = reconstruct(model, params, x_test, pv_test)["z_mean"]
    features = {"latent": (z_train, z_test), "spectrum": (x_train[pick], x_test)}
    rows = []
    for (name, (f_sub, f_test)), fit_key in zip(features.items(), fit_keys):
        f_sub, f_test = _standardize(f_sub, f_test)
        n_fit = len(fit_idx)
        train_b = _label_batch(f_sub[n_val:], y_norm[fit_idx], y_ok[0][fit_idx])
        valid_b = _label_batch(f_sub[:n_val], y_norm[val_idx], y_ok[0][val_idx])
        mlp = build("mlp", n_inputs=f_sub.shape[1], n_outputs=len(labels), hidden=hidden)
        log(f"latent_regression: MLP {list(hidden)} on {name} ({f_sub.shape[1]} inputs, "
            f"{n_fit} fit + {n_val} valid stars)")
        mlp_params, _ = training.fit(mlp, train_b, valid_b, cfg, fit_key, log=log)
        pred = np.asarray(mlp.apply(mlp_params, jnp.asarray(f_test))["value"]) * std + mean
        for k, label in enumerate(labels):
            ok = y_ok[1][:, k]
            mse = float(np.mean((pred[ok, k] - y_test[ok, k]) ** 2)) if ok.any() else np.nan
            rows.append({"input": name, "label": label, "test_mse": mse,
                         "n_labelled": n_labelled, "n_test": int(ok.sum())})
    return pd.DataFrame(rows)
