"""Generative adversarial network of spectra on the training spectra's PCA basis, conditioned
on labels (by default teff, logg, [Fe/H]; `condition=[]` for the unconditional GAN).

Generator. With V (K, P) the training spectra's first K principal components, m their mean and
λ the explained variances (the frozen basis of models/vae.py, fitted by `init_data`), the
generator maps noise ε ~ N(0, I_noise_dim) and the conditioning labels c (normalized like the
task's labels) through an MLP to whitened coefficients g(ε, c) ∈ R^K; the spectrum is
x = m + (g ⊙ √λ) V in the model's normalized flux. Discriminator: an MLP with dropout on the
whitened scores s = (x − m)Vᵀ/√λ of a spectrum, concatenated with c, to one logit. Both use
leaky ReLU (slope 0.2).

Why the basis and not a 1-D transposed convolution: a spectrum of 7514 pixels has a few
dozen degrees of freedom (64 components hold the mock's signal; the rest is noise), so on the
basis a step costs O(K·P) per spectrum for the projection and O(K·width) for the networks: ~1
MFLOP per spectrum, against ~100 MFLOP for one 8-tap, 32×32-channel convolution layer over the
full grid (7514·8·32·32·2), i.e. two orders of magnitude per layer, which the ≤ 3 min training
budget on 2 CPU cores does not allow. The basis also keeps every sample on the manifold PCA
already captures, leaving the GAN to learn the non-Gaussian distribution of the coefficients —
what Gaussian-in-PCA sampling cannot. A discriminator on pixels would moreover tell real spectra
from any noise-free sample by their photon noise alone.

Loss: the non-saturating GAN loss (Goodfellow+2014): discriminator
L_D = E softplus(−D(x_real, c)) + E softplus(D(M G(ε, c), c)), generator
L_G = E softplus(−D(M G(ε, c), c)) + λ m, the labels c of the batch's real stars (stars with a
missing conditioning label carry weight 0). M observes each generated spectrum through the
bad-pixel mask of the real star whose labels it was given (masked pixels at the training mean,
as they are in the real spectra): the discriminator compares like with like, and the generator
learns spectra, not spectra with holes. Without M the generator learns the masked spectra's
scores, and its samples are masked a second time when they are judged (with the moment term
they came out 10–50 % too wide in principal components 5–16 of the default mock).
m = `moment_mismatch`, weight λ = `moment_weight`, pulls the batch's mean and covariance of the
whitened scores towards the real batch's (feature matching on the statistics the Fréchet
distance measures); λ = 0.3 helped on the default mock and λ = 1 let its batch-to-batch noise
swamp the adversarial signal (README: the GAN section). With one simultaneous update of both
players per step it trained without divergence on the default mock (L_D near 2 ln 2, the
equilibrium, without the moment term and 0.8–0.9 with it; the validation Fréchet distance
falls between swings); WGAN-GP would need several critic steps per generator step and the gradient penalty's second
derivatives, several times the cost per generator update, so the cheaper loss was kept.
Whether the samples pass the classifier two-sample test is measured by the generative_samples
rule, not assumed here.

Two players in the one training loop (`stargrad.train.fit`): `loss` returns
L_D(θ_D, sg θ_G) + L_G(sg θ_D, θ_G) with sg = stop_gradient, so the gradient with respect to
each player's parameters is exactly that of its own loss and one optimizer step updates both
simultaneously (Adam's state is per parameter: one Adam over both is two Adams with the same
learning rate). Checkpoints, resume and schedules are the loop's. The two losses are the
`d_loss` and `g_loss` metrics (history.csv: train_d_loss, train_g_loss, valid_d_loss,
valid_g_loss; with λ > 0 also `moments`, m, which carries the real batch's own sampling variance
and so stays well above 0). A GAN's losses say little about its samples, so the validation loss
(`key=None`: dropout off, noise from a fixed key) is instead the Fréchet distance
(stargrad.generative.frechet) between the batch's real and generated spectra in the first
`fd_components` components (scores in normalized flux, not whitened, where a few odd stars
would dominate the covariances): the
loop keeps the parameters of the epoch whose samples were closest to the validation spectra,
and its plateau schedule and early stopping act on that distance.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import layers
from ..sdss.apogee import ASPCAP_LABELS
from ..generative.frechet import frechet_distance, weighted_moments
from . import Model, Traits
from .pca import check_input_norm, fill_masked, pixel_valid_of
from .vae import basis_initializers

TRAITS = Traits(supervised=False)

FAMILY = "gan"
#: The labels a GAN is conditioned on unless its hyper `condition` says otherwise.
DEFAULT_CONDITION = ("teff", "logg", "Fe")
LEAK = 0.2


def _mlp_layout(widths) -> list[dict]:
    """He-normal (for leaky ReLU) dense layers of the given widths."""
    return [{"w": layers.Init("normal", (a, b), (2.0 / (1 + LEAK ** 2) / a) ** 0.5),
             "b": layers.Init("zeros", (b,))} for a, b in zip(widths[:-1], widths[1:])]


def _mlp(h, params, key=None, dropout_rate: float = 0.0):
    """Leaky-ReLU hidden layers (dropout after each when `key` is given), linear last layer."""
    for i, layer in enumerate(params[:-1]):
        h = layers.dropout(key, jax.nn.leaky_relu(layers.dense(layer, h), LEAK), dropout_rate,
                           salt=i)
    return layers.dense(params[-1], h)


def whiten(basis: dict, x):
    """Whitened basis scores (B, K) of normalized spectra x (B, P)."""
    basis = jax.lax.stop_gradient(basis)
    return (x - basis["mean"]) @ basis["components"].T / basis["scale"]


def unwhiten(basis: dict, scores):
    """Normalized spectra (B, P) of whitened basis scores (B, K)."""
    basis = jax.lax.stop_gradient(basis)
    return basis["mean"] + (scores * basis["scale"]) @ basis["components"]


def generate_scores(params, noise, conditions):
    """Whitened basis scores (B, K) of the generator at noise (B, noise_dim), labels (B, C)."""
    return _mlp(jnp.concatenate([noise, conditions], axis=1), params["generator"])


def sample(params, key, conditions):
    """Spectra (B, P) in the model's normalized flux, one per row of `conditions` (B, C):
    normalized conditioning labels, (B, 0) for the unconditional GAN."""
    noise_dim = params["generator"][0]["w"].shape[0] - conditions.shape[1]
    noise = jax.random.normal(key, (conditions.shape[0], noise_dim))
    return unwhiten(params["frozen"], generate_scores(params, noise, conditions))


def moment_mismatch(real, fake, twin, weights):
    """The generator's mean and covariance against the real batch's,
    |μ_g − μ_r|² + ‖C_g − C_r‖²_F, from two independent fake batches (B, K) at the real batch's
    conditions:
    (m_a − m_r)·(m_b − m_r) + ⟨C_a − C_r, C_b − C_r⟩. Its expectation is the mismatch plus the
    real batch's own sampling variance, a constant, so its gradient in the generator is unbiased.
    The squared difference to one fake batch would add that batch's sampling variance, ≈
    (tr C_g)²/B, whose gradient shrinks the samples' spread. This is feature matching
    (Salimans+2016) on the statistics the Fréchet distance measures; rows of weight 0 do not
    count."""
    moments = [weighted_moments(a, weights) for a in (real, fake, twin)]
    (mean_r, cov_r), (mean_a, cov_a), (mean_b, cov_b) = moments
    return (jnp.dot(mean_a - mean_r, mean_b - mean_r)
            + jnp.sum((cov_a - cov_r) * (cov_b - cov_r)))


def build(*, n_inputs: int, n_outputs: int, kind: str = "regression", labels=None,
          condition=DEFAULT_CONDITION, basis: int = 64, noise_dim: int = 16,
          generator_hidden=(128, 128), discriminator_hidden=(128, 128),
          dropout_rate: float = 0.2, fd_components: int = 16, moment_weight: float = 0.0,
          input_norm: str = "standard") -> Model:
    """GAN Model over `n_inputs` pixels on the training spectra's first `basis` components.

    `labels` (default: the 22 aspcap labels, which needs n_outputs=22) names the task's labels
    in order; `condition` lists those the GAN is conditioned on (read from the batch's `y`);
    `moment_weight` λ ≥ 0 weighs the generator's moment-matching term (`moment_mismatch`).
    `apply(params, x)` returns the whitened basis scores a spectrum shows the discriminator
    ("z") and its projection onto the basis ("value"); samples come from `sample`."""
    del kind
    labels = tuple(ASPCAP_LABELS if labels is None else labels)
    if len(labels) != n_outputs:
        raise ValueError(f"{FAMILY}: {len(labels)} label names for {n_outputs} task labels; give "
                         "`labels` in the task's order")
    unknown = [c for c in condition if c not in labels]
    if unknown or len(set(condition)) != len(condition):
        raise ValueError(f"{FAMILY}: condition must name distinct task labels ({', '.join(labels)}), "
                         f"got {list(condition)}")
    check_input_norm(FAMILY, input_norm)
    for name, value in (("n_inputs", n_inputs), ("basis", basis), ("noise_dim", noise_dim),
                        ("fd_components", fd_components)):
        layers.positive_ints(FAMILY, name, (value,))
    generator_hidden = layers.positive_ints(FAMILY, "generator_hidden", generator_hidden)
    discriminator_hidden = layers.positive_ints(FAMILY, "discriminator_hidden",
                                                discriminator_hidden)
    if basis > n_inputs or fd_components > basis:
        raise ValueError(f"{FAMILY}: need fd_components ({fd_components}) <= basis ({basis}) <= "
                         f"n_inputs ({n_inputs})")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"{FAMILY}: dropout_rate must be in [0, 1), got {dropout_rate!r}")
    if not (isinstance(moment_weight, (int, float)) and not isinstance(moment_weight, bool)
            and 0.0 <= moment_weight < float("inf")):
        raise ValueError(f"{FAMILY}: moment_weight must be a finite number >= 0, got "
                         f"{moment_weight!r}")
    cond_index = jnp.asarray([labels.index(c) for c in condition], dtype=jnp.int32)
    n_cond = len(condition)
    layout = {"generator": _mlp_layout((noise_dim + n_cond, *generator_hidden, basis)),
              "discriminator": _mlp_layout((basis + n_cond, *discriminator_hidden, 1))}

    init, init_data = basis_initializers(
        lambda key, frame: {"frozen": frame, **layers.init_params(key, layout)}, n_inputs, basis)

    def apply(params, x, key=None, train=False, x_err=None):
        del key, train
        if x.ndim != 2 or x.shape[1] != n_inputs:
            raise ValueError(f"{FAMILY}.apply: x must have shape (B, {n_inputs}), got {x.shape}")
        z = whiten(params["frozen"], x)
        return {"value": unwhiten(params["frozen"], z), "z": z}

    def discriminate(d_params, scores, conditions, key):
        return _mlp(jnp.concatenate([scores, conditions], axis=1), d_params, key,
                    dropout_rate)[:, 0]

    def loss(params, batch, key):
        valid = pixel_valid_of(batch)
        real = whiten(params["frozen"], fill_masked(batch["x"], valid))
        known = batch["valid"][:, cond_index]
        conditions = jnp.where(known, batch["y"][:, cond_index], 0.0)
        weight = jnp.all(known, axis=1).astype(real.dtype)
        total = jnp.maximum(weight.sum(), 1.0)
        n = real.shape[0]
        noise_key, real_key, fake_key = jax.random.split(
            jax.random.key(0) if key is None else key, 3)
        if key is None:   # validation: dropout off, fixed noise
            real_key = fake_key = None
        noise = jax.random.normal(noise_key, (2, n, noise_dim))
        frozen = params["frozen"]

        def observed(scores):   # a generated spectrum through the mask of the batch's real star
            return whiten(frozen, fill_masked(unwhiten(frozen, scores), valid))

        fake = observed(generate_scores(params, noise[0], conditions))
        d_params = params["discriminator"]
        real_logit = discriminate(d_params, real, conditions, real_key)
        fake_logit = discriminate(d_params, jax.lax.stop_gradient(fake), conditions, fake_key)
        g_logit = discriminate(jax.lax.stop_gradient(d_params), fake, conditions, fake_key)
        d_loss = jnp.sum(weight * (jax.nn.softplus(-real_logit)
                                   + jax.nn.softplus(fake_logit))) / total
        g_loss = jnp.sum(weight * jax.nn.softplus(-g_logit)) / total
        metrics = {"d_loss": d_loss}
        if moment_weight:
            twin = observed(generate_scores(params, noise[1], conditions))
            metrics["moments"] = moment_mismatch(real, fake, twin, weight)
            g_loss = g_loss + moment_weight * metrics["moments"]
        metrics["g_loss"] = g_loss
        if key is None:   # in normalized flux units: whitening would let outliers dominate
            scale = jax.lax.stop_gradient(params["frozen"]["scale"][:fd_components])
            fd = frechet_distance(real[:, :fd_components] * scale,
                                  fake[:, :fd_components] * scale, weight, weight)
            return fd, {**metrics, "frechet": fd}
        return d_loss + g_loss, metrics

    return Model(init=init, apply=apply, loss=loss, stochastic=False, input_norm=input_norm,
                 init_data=init_data)
