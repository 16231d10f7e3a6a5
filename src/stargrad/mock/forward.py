"""The differentiable forward model: normalized flux on the 8575-pixel grid from the 22 labels,
lines as pixel-sampled LSF profiles with curve-of-growth depths."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..sdss import apogee
from ..batching import padded_chunks
from . import N_LABELS, LABELS
from .lines import LOGG_REF, THETA_REF, line_groups

#: Gaussian LSF, constant in pixels: R ≈ 22,500 is a FWHM of 3.2 apStar pixels.
LSF_SIGMA_PX = 3.2 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_NARROW_OFFSETS = np.arange(-7, 8)        # ±5 σ of the LSF
_BRACKETT_OFFSETS = np.arange(-40, 41)    # Lorentzian wings
D_MAX = 0.75          # saturated depth of a metal or molecular line
D_MAX_BRACKETT = 0.35
BRACKETT_HWHM_PX = 2.5  # Stark half width (px) at log g = LOGG_REF, before the LSF


def _line_opacity(theta, group: dict, d_max: float):
    """Peak optical depth of every line: depth = d_max·τ/(1+τ) from the curve of growth
    log τ = log τ_ref + Σ[X/H] − (θ − θ_ref)·χ_eff + γ·(log g − 2.5), θ = 5040/Teff."""
    theta_t = 5040.0 / theta[0]
    log_tau = (group["log_tau_ref"] + group["abund"] @ theta
               - (theta_t - THETA_REF) * group["chi_eff"]
               + group["gamma"] * (theta[1] - LOGG_REF))
    tau = 10.0 ** log_tau
    depth = d_max * tau / (1.0 + tau)
    return -jnp.log1p(-depth)


def _scatter(opacity, centre, offsets, amplitude, profile):
    base = jnp.floor(centre).astype(jnp.int32)
    idx = base[:, None] + jnp.asarray(offsets, jnp.int32)[None, :]
    weights = profile(idx - centre[:, None])
    return opacity.at[idx].add(amplitude[:, None] * weights, mode="drop")


@jax.jit
def spectrum(theta, shift_px=0.0):
    """Normalized model flux (8575,) for labels θ (22,), optionally Doppler-shifted by
    `shift_px` pixels (4.14 km/s each). Chip gaps and edges are exactly 0; elsewhere
    0 < flux ≤ 1. Lines are pixel-sampled Gaussians of the LSF (the same as scatter-adding
    them at sub-pixel positions and convolving with the LSF); Brackett lines are Lorentzians
    whose Stark width grows with log g, seen through the LSF."""
    tables = line_groups()
    theta = jnp.asarray(theta)
    narrow, brackett = tables["narrow"], tables["brackett"]
    opacity = jnp.zeros(apogee.N_PIX, theta.dtype)
    opacity = _scatter(opacity, narrow["pixel"] + shift_px, _NARROW_OFFSETS,
                       _line_opacity(theta, narrow, D_MAX),
                       lambda dx: jnp.exp(-0.5 * (dx / LSF_SIGMA_PX) ** 2))
    hwhm = jnp.hypot(BRACKETT_HWHM_PX * 10.0 ** (0.3 * (theta[1] - LOGG_REF)),
                     np.sqrt(2.0 * np.log(2.0)) * LSF_SIGMA_PX)
    opacity = _scatter(opacity, brackett["pixel"] + shift_px, _BRACKETT_OFFSETS,
                       _line_opacity(theta, brackett, D_MAX_BRACKETT),
                       lambda dx: 1.0 / (1.0 + (dx / hwhm) ** 2))
    return jnp.exp(-opacity) * tables["chip_mask"]


#: d flux / d θ (8575, 22) of one star; vmap it over stars.
jacobian = jax.jit(jax.jacfwd(spectrum))


@jax.jit
def _spectra(thetas, shifts):
    return jax.vmap(spectrum)(thetas, shifts)


def batch_spectra(thetas, shifts=None, batch_size: int = 128) -> np.ndarray:
    """Model fluxes (N, 8575) float32 of label rows (N, 22), in fixed-size jitted batches."""
    thetas = _check_thetas(thetas, "batch_spectra")
    shifts = np.zeros(len(thetas)) if shifts is None else np.asarray(shifts, float)
    out = np.empty((len(thetas), apogee.N_PIX), np.float32)
    chunks = padded_chunks((thetas.astype(np.float32), shifts.astype(np.float32)), batch_size,
                           pad="edge")
    for start, n_valid, (th, sh) in chunks:
        out[start:start + n_valid] = np.asarray(_spectra(th, sh))[:n_valid]
    return out


def _check_thetas(thetas, where: str) -> np.ndarray:
    thetas = np.asarray(thetas, dtype=float)
    if thetas.ndim != 2 or thetas.shape[1] != N_LABELS:
        raise ValueError(f"{where}: labels must have shape (N, {N_LABELS}) in the order "
                         f"{', '.join(LABELS)}; got {thetas.shape}")
    if not np.all(np.isfinite(thetas)) or np.any(thetas[:, 0] <= 0):
        raise ValueError(f"{where}: labels must be finite with Teff > 0 K")
    return thetas
