"""Plain (deterministic) autoencoder of spectra: the PCA-basis VAE of models/vae.py without
sampling, log σ² head or KL term — the lecture's "PCA vs autoencoder".

With V (K, P) the training spectra's first K principal components, m their mean and λ the
explained variances, the encoder reads the whitened scores s = (x − m)Vᵀ/√λ and returns
z = sA + MLP_z(s); the decoder returns x̂ = m + ((zB + MLP_c(z)) ⊙ √λ) V. A and B start as the
identity on the first d = latent_dim components and the MLPs' output layers at zero, so the
untrained autoencoder *is* PCA-d and training lowers the mean squared reconstruction error
(over valid pixels, in the model's normalized units) from PCA-d's; the training loop keeps the
best-validation parameters. Same code as the VAE (`vae.basis_model` with `beta=None`).
"""
from __future__ import annotations

from . import Model, Traits
from .vae import basis_model

TRAITS = Traits(supervised=False)


def build(*, n_inputs: int, n_outputs: int | None = None, kind: str = "regression",
          latent_dim: int = 2, basis: int = 64, num_hidden=(128, 64),
          input_norm: str = "standard") -> Model:
    """Autoencoder Model over `n_inputs` pixels on the training spectra's first `basis`
    principal components (latent_dim ≤ basis ≤ n_inputs); `n_outputs` and `kind` ignored."""
    del n_outputs, kind  # unsupervised: the target is the spectrum itself
    if isinstance(basis, bool) or not isinstance(basis, int) or basis < 1:
        raise ValueError(f"ae: basis must be a positive integer (number of principal "
                         f"components), got {basis!r}")
    return basis_model("ae", n_inputs=n_inputs, latent_dim=latent_dim, basis=basis,
                       num_hidden=num_hidden, input_norm=input_norm, beta=None)
