"""Variational autoencoders of spectra: a convolutional one after astroNN's ApogeeCVAE
(hyper `basis` = 0) and a dense one on a PCA basis of the training spectra (`basis` = K > 0).

PCA-basis VAE. With V (K, P) the training spectra's first K principal components, m their mean
and λ the explained variances, the encoder reads the whitened scores s = (x − m)Vᵀ/√λ:
μ = sA + MLP_μ(s), log σ² = MLP_σ(s); the decoder returns
x̂ = m + ((zB + MLP_c(z)) ⊙ √λ) V, a linear map of z plus a learned nonlinear correction, in
the basis. A and B start as the identity on the first d = latent_dim components and the MLPs'
output layers at zero, so the initial model *is* PCA with d components (μ = its whitened
scores, which the N(0, I) prior fits) and training only has to learn the nonlinear part. PCA-d
being a special case, training starts from its reconstruction and lowers the loss from there;
started from random A and B instead, the same network ended above PCA-8 at d = 8 on the mock.
m, V, √λ are data-derived constants, fitted by the Model's `init_data` from the training batch
and kept under params["frozen"], which the training loop never updates. Apart from two
(B, K) × (K, P) products everything runs in K dimensions: a step costs ~2·2BKP flops, a small
fraction of the convolutional VAE's.

Convolutional VAE. Encoder: Conv1D(2, 8) → Conv1D(4, 8) → MaxPool(4) → Dense(128) → Dense(64)
→ (μ, log σ²), ReLU throughout, linear heads. Decoder: Dense(64) → Dense(L·4) → reshape (L, 4)
→ nearest-neighbour upsampling to P pixels → Conv1D(4, 8) → Conv1D(2, 8) → Conv1D(1, 8) linear.

Design choice (hyper `upsample`, default 4): astroNN's decoder expands Dense(64) straight to
7514·4 values (1.9 M weights, the largest layer of the model). That layer's output lies in a
space of rank ≤ 64 whatever its width, so the width buys no latent capacity; it only has to
give the following convolutions enough positional freedom. We expand to L = ⌈P/4⌉ positions
and repeat each 4 times before the same three convolutions (together a learned transposed
convolution of stride 4; the 8-px kernels restore ~2-px-wide lines): 4× fewer weights in the
decoder's biggest layer and, measured on CPU (B=64, P=7514), a ~1.5× faster training step.
`upsample=1` gives astroNN's layout exactly.
Not ported: astroNN's dropout (0.1, plain) and L1/L2 penalties; the KL term regularises.

Inputs are normalized flux, by default standardized per pixel (`input_norm="standard"`, astroNN's
ApogeeCVAE uses its mode 2, the same). With the per-pixel mean subtracted only ("mean"), pixel
variations are ~0.01–0.05: the MSE is ~1e-3 of its standardized value (β must shrink alike)
and the unit-scale network trains less reliably (synthetic spectra, 25 epochs: 1 of 3 seeds
stuck at the mean spectrum, against 0 of 12 standardized).
Masked pixels (batch key `pixel_valid` False) are set to 0 — the training mean — before
encoding and contribute nothing to the reconstruction error.

β (both): the loss is mean-over-pixels MSE + β·KL (astroNN's form). Matching a Gaussian
likelihood of per-pixel residual variance s² needs β ≈ 2s²/P (≈1e-4 for P = 7514); β = 1 (the
default) weighs the KL so heavily that the latent code is typically unused (posterior collapse).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from . import Model, Traits
from .pca import check_input_norm, fill_masked, fit_components, masked_mse, pixel_valid_of

TRAITS = Traits(supervised=False)


#: Initial log σ² of every star's posterior (σ ≈ 0.14, while the He-initialised μ spread ≈ 1),
#: with the output layer initialised to zero. Measured on synthetic spectra (tests' generator,
#: 25 epochs): with He-initialised heads and output the first losses are ~10× the data variance,
#: the first updates kill the two-channel ReLU layer before the output, and the VAE stays at
#: the mean spectrum (2 of 6 seeds); with a zero output but σ = 1 at the start, the decoder
#: first learns to ignore the then-uninformative noisy codes (1 of 5); with both guards 0 of 12.
INITIAL_LOG_VAR = -4.0


def _positive_ints(name: str, values, family: str = "vae") -> tuple[int, ...]:
    values = tuple(values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                             for v in values):
        raise ValueError(f"{family}: {name} must be positive integers, got {values!r}")
    return values


def _he_layers(key, shapes) -> list[dict]:
    """He-normal weights (std √(2/fan_in), fan_in = product of all but the last axis) and zero
    biases for each weight shape, from a single draw: one random kernel to compile instead of
    one per shape (each costs ~1 s on CPU)."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = jax.random.normal(key, (sum(sizes),))
    layers, start = [], 0
    for shape, size in zip(shapes, sizes):
        w = flat[start:start + size].reshape(shape) * math.sqrt(2.0 * shape[-1] / size)
        layers.append({"w": w, "b": jnp.zeros(shape[-1])})
        start += size
    return layers


def _conv(h, layer):
    """'same' 1-D convolution of (B, W, C_in) -> (B, W, C_out) (Keras padding for even kernels)."""
    out = jax.lax.conv_general_dilated(h, layer["w"], window_strides=(1,), padding="SAME",
                                       dimension_numbers=("NWC", "WIO", "NWC"))
    return out + layer["b"]


def _upsample_repeat(h, n_out: int):
    """Nearest-neighbour upsampling of (B, L, C) to (B, n_out, C): each position repeated
    ⌈n_out/L⌉ times, then cropped. A broadcast + reshape, cheap forward and backward."""
    batch, n_in, channels = h.shape
    factor = -(-n_out // n_in)
    h = jnp.broadcast_to(h[:, :, None, :], (batch, n_in, factor, channels))
    return h.reshape(batch, n_in * factor, channels)[:, :n_out]


def _dense(h, layer):
    return h @ layer["w"] + layer["b"]


def init_params(key, *, n_inputs: int, latent_dim: int = 2, num_filters=(2, 4),
                filter_len: int = 8, pool_length: int = 4, num_hidden=(128, 64),
                upsample: int = 4) -> dict:
    """He-normal initial parameters (zero biases) of the encoder and decoder; the output
    convolution starts at zero and the log σ² head at INITIAL_LOG_VAR."""
    n_pooled = n_inputs // pool_length
    n_coarse = -(-n_inputs // upsample)
    enc_channels = (1,) + tuple(num_filters)
    widths = (n_pooled * num_filters[-1],) + tuple(num_hidden)
    dec_channels = (num_filters[-1],) + tuple(reversed(num_filters))
    shapes = ([(filter_len, a, b) for a, b in zip(enc_channels[:-1], enc_channels[1:])]
              + list(zip(widths[:-1], widths[1:]))
              + [(num_hidden[-1], latent_dim),
                 (latent_dim, num_hidden[-1]), (num_hidden[-1], n_coarse * num_filters[-1])]
              + [(filter_len, a, b) for a, b in zip(dec_channels[:-1], dec_channels[1:])])
    layers = iter(_he_layers(key, shapes))
    enc_conv = [next(layers) for _ in num_filters]
    enc_dense = [next(layers) for _ in num_hidden]
    mu = next(layers)
    dec_dense = [next(layers), next(layers)]
    dec_conv = list(layers)
    # Posterior collapse guards, see INITIAL_LOG_VAR: the output layer starts at zero
    # (reconstruction = training mean, loss ≈ 1 on standardized flux).
    dec_conv.append({"w": jnp.zeros((filter_len, num_filters[0], 1)), "b": jnp.zeros(1)})
    return {"encoder": {"conv": enc_conv, "dense": enc_dense,
                        "mu": mu,
                        "log_var": {"w": jnp.zeros((num_hidden[-1], latent_dim)),
                                    "b": jnp.full(latent_dim, INITIAL_LOG_VAR)}},
            "decoder": {"dense": dec_dense, "conv": dec_conv}}


def _encode_conv(params, x, pool_length: int):
    enc = params["encoder"]
    h = x[..., None]
    for layer in enc["conv"]:
        h = jax.nn.relu(_conv(h, layer))
    n_pooled = h.shape[1] // pool_length
    h = h[:, :n_pooled * pool_length].reshape(h.shape[0], n_pooled, pool_length, h.shape[2])
    h = h.max(axis=2).reshape(h.shape[0], -1)
    for layer in enc["dense"]:
        h = jax.nn.relu(_dense(h, layer))
    return _dense(h, enc["mu"]), _dense(h, enc["log_var"])


def _decode_conv(params, z, n_pixels: int):
    dec = params["decoder"]
    h = z
    for layer in dec["dense"]:
        h = jax.nn.relu(_dense(h, layer))
    channels = dec["conv"][0]["w"].shape[1]
    h = h.reshape(h.shape[0], -1, channels)
    if h.shape[1] != n_pixels:
        h = _upsample_repeat(h, n_pixels)
    for layer in dec["conv"][:-1]:
        h = jax.nn.relu(_conv(h, layer))
    return _conv(h, dec["conv"][-1])[..., 0]


# ---------------------------------------------------------------------------- PCA-basis VAE

def fit_basis(x, pixel_valid, n_components: int) -> dict:
    """The frozen PCA basis of training spectra: mean (P,), components (K, P, orthonormal rows)
    and scale (K,) = √(explained variance), floored at 1e-6 of the first (rank-deficient data)."""
    pca = fit_components(x, pixel_valid, n_components)
    scale = jnp.sqrt(pca["explained_variance"])
    return {"mean": pca["mean"], "components": pca["components"],
            "scale": jnp.maximum(scale, 1e-6 * scale[0])}


def init_basis_params(key, basis: dict, *, latent_dim: int = 2, num_hidden=(128, 64),
                      variational: bool = True) -> dict:
    """Initial parameters of the PCA-basis VAE on `basis` (K components; see `fit_basis`).

    The linear paths start as PCA with `latent_dim` components: μ = the first d whitened
    scores, decoded coefficients = z on the first d components. The nonlinear corrections'
    output layers and the log σ² head start at zero (log σ² = INITIAL_LOG_VAR), so the initial
    model reconstructs exactly as PCA-d; hidden layers are He-normal. `variational=False`
    (the plain autoencoder, models/ae.py) leaves out the log σ² head."""
    n_basis = basis["components"].shape[0]
    if latent_dim > n_basis:
        raise ValueError(f"latent_dim ({latent_dim}) exceeds basis ({n_basis})")
    enc_widths = (n_basis,) + tuple(num_hidden)
    dec_widths = (latent_dim,) + tuple(reversed(num_hidden))
    layers = _he_layers(key, list(zip(enc_widths[:-1], enc_widths[1:]))
                        + list(zip(dec_widths[:-1], dec_widths[1:])))
    eye = jnp.eye(n_basis, latent_dim)
    encoder = {"linear": eye, "dense": layers[:len(num_hidden)],
               "mu": _zero_layer(num_hidden[-1], latent_dim)}
    if variational:
        encoder["log_var"] = _zero_layer(num_hidden[-1], latent_dim)
        encoder["log_var"]["b"] = jnp.full(latent_dim, INITIAL_LOG_VAR)
    return {"frozen": basis, "encoder": encoder,
            "decoder": {"linear": eye.T, "dense": layers[len(num_hidden):],
                        "out": _zero_layer(num_hidden[0], n_basis)}}


def _zero_layer(n_in: int, n_out: int) -> dict:
    return {"w": jnp.zeros((n_in, n_out)), "b": jnp.zeros(n_out)}


def _mlp(h, layers):
    for layer in layers:
        h = jax.nn.relu(_dense(h, layer))
    return h


def _encode_basis(params, x):
    basis = jax.lax.stop_gradient(params["frozen"])
    scores = (x - basis["mean"]) @ basis["components"].T / basis["scale"]
    enc = params["encoder"]
    h = _mlp(scores, enc["dense"])
    log_var = _dense(h, enc["log_var"]) if "log_var" in enc else None
    return scores @ enc["linear"] + _dense(h, enc["mu"]), log_var


def _decode_basis(params, z):
    basis = jax.lax.stop_gradient(params["frozen"])
    dec = params["decoder"]
    coeff = z @ dec["linear"] + _dense(_mlp(z, dec["dense"]), dec["out"])
    return basis["mean"] + (coeff * basis["scale"]) @ basis["components"]


# ---------------------------------------------------------------------------- both

def encode(params, x, pool_length: int = 4):
    """(B, P) normalized flux -> (z_mean, z_log_var), each (B, latent_dim); z_log_var is None
    for a plain autoencoder's parameters (no log σ² head)."""
    if "frozen" in params:
        return _encode_basis(params, x)
    return _encode_conv(params, x, pool_length)


def decode(params, z, n_pixels: int):
    """(B, latent_dim) latent vectors -> (B, n_pixels) normalized flux."""
    if "frozen" in params:
        return _decode_basis(params, z)
    return _decode_conv(params, z, n_pixels)


def kl_divergence(z_mean, z_log_var):
    """KL(N(μ, σ²) ‖ N(0, I)) per star, summed over latent dimensions (nats)."""
    return -0.5 * jnp.sum(1.0 + z_log_var - z_mean ** 2 - jnp.exp(z_log_var), axis=-1)


def build(*, n_inputs: int, n_outputs: int | None = None, kind: str = "regression",
          latent_dim: int = 2, beta: float = 1.0, basis: int = 0, num_filters=(2, 4),
          filter_len: int = 8, pool_length: int = 4, num_hidden=(128, 64), upsample: int = 4,
          input_norm: str = "standard") -> Model:
    """VAE Model over `n_inputs` pixels; `n_outputs` and `kind` are ignored.

    `basis` = 0: the convolutional VAE; `basis` = K > 0: the dense VAE on the training
    spectra's first K principal components (`num_filters`, `filter_len`, `pool_length` and
    `upsample` unused), whose `init_data` fits that basis."""
    del n_outputs, kind  # unsupervised: the target is the spectrum itself
    check_input_norm("vae", input_norm)
    for name, value in (("filter_len", filter_len), ("pool_length", pool_length),
                        ("upsample", upsample)):
        _positive_ints(name, (value,))
    num_filters = _positive_ints("num_filters", num_filters)
    if pool_length > n_inputs or upsample > n_inputs:
        raise ValueError(f"vae: pool_length ({pool_length}) and upsample ({upsample}) must not "
                         f"exceed n_inputs ({n_inputs})")
    if not beta >= 0:
        raise ValueError(f"vae: beta must be >= 0, got {beta!r}")
    if basis:
        return basis_model("vae", n_inputs=n_inputs, latent_dim=latent_dim, basis=basis,
                           num_hidden=num_hidden, input_norm=input_norm, beta=beta)
    num_hidden = _check_sizes("vae", n_inputs, latent_dim, basis, num_hidden)
    arch = dict(latent_dim=latent_dim, num_filters=num_filters, filter_len=filter_len,
                pool_length=pool_length, num_hidden=num_hidden, upsample=upsample)

    @jax.jit  # one compilation instead of eager per-op compiles (seconds on CPU)
    def init(key):
        return init_params(key, n_inputs=n_inputs, **arch)

    return _model(init, None, n_inputs, pool_length, beta, input_norm)


def _check_sizes(family: str, n_inputs: int, latent_dim: int, basis: int, num_hidden):
    """Check the sizes shared by both VAEs and the autoencoder; return num_hidden as a tuple."""
    for name, value in (("n_inputs", n_inputs), ("latent_dim", latent_dim)):
        _positive_ints(name, (value,), family)
    if not (isinstance(basis, int) and not isinstance(basis, bool)
            and (basis == 0 or latent_dim <= basis <= n_inputs)):
        conv = "0 (convolutional) or " if family == "vae" else ""
        raise ValueError(f"{family}: basis must be {conv}an integer in [latent_dim, n_inputs] "
                         f"= [{latent_dim}, {n_inputs}], got {basis!r}")
    return _positive_ints("num_hidden", num_hidden, family)


def basis_model(family: str, *, n_inputs: int, latent_dim: int, basis: int, num_hidden,
                input_norm: str, beta: float | None) -> Model:
    """The PCA-basis model on `basis` components: the VAE (`beta` ≥ 0 weighs its KL term), or
    with `beta=None` the plain autoencoder (no log σ² head, no sampling, no KL; models/ae.py).
    `family` names the model in error messages."""
    num_hidden = _check_sizes(family, n_inputs, latent_dim, basis, num_hidden)
    check_input_norm(family, input_norm)
    variational = beta is not None

    def basis_params(key, frame):
        return init_basis_params(key, frame, latent_dim=latent_dim, num_hidden=num_hidden,
                                 variational=variational)

    init, init_data = basis_initializers(basis_params, n_inputs, basis)
    return _model(init, init_data, n_inputs, 4, beta, input_norm, family)


def basis_initializers(params_on, n_inputs: int, basis: int):
    """(init, init_data) of a model on a frozen PCA basis, given `params_on(key, frame)` that
    builds its parameters on a basis frame (`fit_basis`'s dict): `init(key)` puts them on a
    zero basis of unit scale (every output the training-mean spectrum), `init_data(train_batch,
    key)` on the training spectra's first `basis` components."""

    @jax.jit
    def init(key):
        return params_on(key, {"mean": jnp.zeros(n_inputs),
                               "components": jnp.zeros((basis, n_inputs)),
                               "scale": jnp.ones(basis)})

    @jax.jit
    def init_data(train_batch, key):
        return params_on(key, fit_basis(jnp.asarray(train_batch["x"]),
                                        pixel_valid_of(train_batch), basis))

    return init, init_data


def _model(init, init_data, n_inputs: int, pool_length: int, beta: float | None,
           input_norm: str, family: str = "vae") -> Model:
    """The Model around an encoder/decoder: z = μ (+ σ ε when `apply` gets a key, VAE only),
    loss = pixel-mean masked MSE (+ β KL for the VAE, `beta` not None)."""

    def apply(params, x, key=None, train=False, x_err=None):
        del train  # no dropout: train and inference passes are the same
        if x.ndim != 2 or x.shape[1] != n_inputs:
            raise ValueError(f"{family}.apply: x must have shape (B, {n_inputs}), got {x.shape}")
        z_mean, z_log_var = encode(params, x, pool_length)
        z = z_mean
        out = {"z_mean": z_mean}
        if z_log_var is not None:
            if key is not None:
                z = z + jnp.exp(0.5 * z_log_var) * jax.random.normal(key, z_mean.shape)
            out["z_log_var"] = z_log_var
        return {"value": decode(params, z, n_inputs), "z": z, **out}

    def loss(params, batch, key):
        valid = pixel_valid_of(batch)
        out = apply(params, fill_masked(batch["x"], valid), key)
        recon = jnp.mean(masked_mse(out["value"], batch["x"], valid))
        if beta is None:
            return recon, {"recon": recon}
        kl = jnp.mean(kl_divergence(out["z_mean"], out["z_log_var"]))
        return recon + beta * kl, {"recon": recon, "kl": kl}

    return Model(init=init, apply=apply, loss=loss, stochastic=False, input_norm=input_norm,
                 init_data=init_data)
