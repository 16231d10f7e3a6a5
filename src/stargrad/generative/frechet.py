"""Fréchet distance between two sets of vectors, each summarised by its mean and covariance
(Heusel+2017's FID without the Inception network): the 2-Wasserstein distance between the
Gaussians N(μ₁, C₁) and N(μ₂, C₂),

    FD = |μ₁ − μ₂|² + tr C₁ + tr C₂ − 2 tr (C₁^½ C₂ C₁^½)^½,

in the squared units of the vectors. Matrix square roots by symmetric eigendecomposition
(eigenvalues clipped at 0), so it runs under jit and on rank-deficient sets. Kept apart from the
sample checks (stargrad.generative.sample_quality) because the GAN family's validation loss uses it
too.
"""
from __future__ import annotations

import jax.numpy as jnp


def weighted_moments(a, weights=None):
    """(mean (d,), covariance (d, d)) of rows of `a` (n, d) with non-negative `weights` (n,)
    (None: all 1); the covariance normalized by the total weight (biased)."""
    a = jnp.asarray(a, jnp.float32)
    w = jnp.ones(a.shape[0]) if weights is None else jnp.asarray(weights, jnp.float32)
    total = jnp.maximum(w.sum(), 1e-12)
    mean = (w[:, None] * a).sum(0) / total
    centred = a - mean
    return mean, (w[:, None] * centred).T @ centred / total


def _sqrt_psd(c):
    values, vectors = jnp.linalg.eigh((c + c.T) / 2)
    return (vectors * jnp.sqrt(jnp.clip(values, 0.0))) @ vectors.T


def frechet_distance(a, b, weights_a=None, weights_b=None):
    """FD between the rows of `a` (n, d) and of `b` (m, d), optionally weighted per row."""
    mean_a, cov_a = weighted_moments(a, weights_a)
    mean_b, cov_b = weighted_moments(b, weights_b)
    root_a = _sqrt_psd(cov_a)
    cross = jnp.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return (jnp.sum((mean_a - mean_b) ** 2) + jnp.trace(cov_a) + jnp.trace(cov_b)
            - 2.0 * jnp.sum(jnp.sqrt(jnp.clip(cross, 0.0))))
