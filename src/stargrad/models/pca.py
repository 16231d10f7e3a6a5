"""Principal component analysis of spectra, the linear baseline of the VAE.

`fit` takes the per-pixel mean over valid pixels, replaces masked pixels by it, and computes the
principal components by SVD of the centred training spectra (in JAX). `apply` projects onto the
first `n_components` components: "z" (and "z_mean") are the scores, "value" the reconstruction.
The masked-pixel helpers here (`pixel_valid_of`, `fill_masked`, `masked_mse`) are shared with
the VAE, whose dense variant is built on `fit_components`.
"""
from __future__ import annotations

import jax.numpy as jnp

from . import Model, Traits

TRAITS = Traits(supervised=False)


def check_input_norm(family: str, input_norm: str) -> None:
    if input_norm not in ("standard", "mean", "none"):
        raise ValueError(f"{family}: input_norm must be 'standard', 'mean' or 'none', "
                         f"got {input_norm!r}")


def pixel_valid_of(batch) -> jnp.ndarray:
    """The batch's (B, P) bool good-pixel mask; all True when it has no `pixel_valid`."""
    x = batch["x"]
    valid = batch.get("pixel_valid")
    if valid is None:
        return jnp.ones(x.shape, dtype=bool)
    if valid.shape != x.shape:
        raise ValueError(f"batch['pixel_valid'] has shape {valid.shape}, expected x's {x.shape}")
    return jnp.asarray(valid, dtype=bool)


def fill_masked(x, pixel_valid):
    """Set masked pixels to 0, the training mean after input normalization."""
    return jnp.where(pixel_valid, x, 0.0)


def masked_mse(recon, x, pixel_valid):
    """Per-star mean squared error over valid pixels (0 for a star without valid pixels)."""
    sq = jnp.where(pixel_valid, (recon - fill_masked(x, pixel_valid)) ** 2, 0.0)
    n_valid = jnp.sum(pixel_valid, axis=-1)
    return jnp.sum(sq, axis=-1) / jnp.maximum(n_valid, 1)


def fit_components(x, pixel_valid, n_components: int) -> dict:
    """Mean (P,), components (K, P, orthonormal rows) and explained variance (K,) of spectra.

    Each component's sign is fixed so that its largest-|value| pixel is positive, making the
    result independent of the SVD implementation."""
    x = jnp.asarray(x, dtype=jnp.float32)
    n_stars, n_pix = x.shape
    if n_stars < 2:
        raise ValueError(f"pca.fit: need at least 2 training spectra, got {n_stars}")
    if n_components > min(n_stars, n_pix):
        raise ValueError(f"pca: n_components={n_components} exceeds min(n_stars, n_pixels) = "
                         f"{min(n_stars, n_pix)} of the training batch")

    n_good = jnp.sum(pixel_valid, axis=0)
    mean = jnp.sum(fill_masked(x, pixel_valid), axis=0) / jnp.maximum(n_good, 1)
    centred = jnp.where(pixel_valid, x, mean) - mean
    _, s, vt = jnp.linalg.svd(centred, full_matrices=False)
    comps = vt[:n_components]
    peak = jnp.take_along_axis(comps, jnp.argmax(jnp.abs(comps), axis=1)[:, None], axis=1)
    comps = comps * jnp.sign(peak)
    return {"mean": mean, "components": comps,
            "explained_variance": s[:n_components] ** 2 / (n_stars - 1)}


def build(*, n_inputs: int, n_outputs: int | None = None, kind: str = "regression",
          n_components: int = 8, input_norm: str = "standard") -> Model:
    """PCA Model over `n_inputs` pixels keeping `n_components`; `n_outputs`, `kind` ignored.

    `input_norm` defaults to the VAE's, so that their reconstruction errors share units."""
    del n_outputs, kind  # unsupervised
    check_input_norm("pca", input_norm)
    for name, value in (("n_inputs", n_inputs), ("n_components", n_components)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"pca: {name} must be a positive integer, got {value!r}")
    if n_components > n_inputs:
        raise ValueError(f"pca: n_components={n_components} exceeds n_inputs={n_inputs}")

    def init(key):
        del key  # deterministic: fit() computes the parameters
        return {"mean": jnp.zeros(n_inputs), "components": jnp.zeros((n_components, n_inputs)),
                "explained_variance": jnp.zeros(n_components)}

    def apply(params, x, key=None, train=False, x_err=None):
        del key, train
        if x.ndim != 2 or x.shape[1] != n_inputs:
            raise ValueError(f"pca.apply: x must have shape (B, {n_inputs}), got {x.shape}")
        z = (x - params["mean"]) @ params["components"].T
        return {"value": params["mean"] + z @ params["components"], "z_mean": z, "z": z}

    def loss(params, batch, key):
        valid = pixel_valid_of(batch)
        out = apply(params, fill_masked(batch["x"], valid))
        recon = jnp.mean(masked_mse(out["value"], batch["x"], valid))
        return recon, {"recon": recon}

    def fit(train_batch, valid_batch, key):
        del valid_batch, key  # closed form: nothing to tune or draw
        x = jnp.asarray(train_batch["x"])
        if x.ndim != 2 or x.shape[1] != n_inputs:
            raise ValueError(f"pca.fit: train_batch['x'] must have shape (N, {n_inputs}), "
                             f"got {x.shape}")
        return fit_components(x, pixel_valid_of(train_batch), n_components)

    return Model(init=init, apply=apply, loss=loss, fit=fit, input_norm=input_norm)
