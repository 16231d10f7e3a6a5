"""Figures of the generative models (matplotlib, Agg; one file per call): reconstruction
error against latent size, the latent space coloured by labels and by population, denoising,
prior samples, decoder Jacobians, the most anomalous spectra, and generated against real spectra
(line depths, nearest training spectra, principal-component scores). Spectra are on the 7514-pixel gap-removed
grid, drawn against vacuum wavelength (Å) with the chip gaps left blank."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..sdss import apogee  # noqa: E402
from .figures import save_figure  # noqa: E402
from ..tasks import unit  # noqa: E402

_EVSTATE_NAMES = {0: "RGB", 1: "RC"}
#: [Fe/H] (dex) below which a star counts as metal-poor halo in the population panel (the mock
#: puts its accreted halo there, and the disk's metal-poor tail).
HALO_FEH = -0.8


def populations(fe, evstate) -> np.ndarray:
    """The mock's three populations: "halo" ([Fe/H] < HALO_FEH), else "RC" (evstate 1) or
    "RGB" (evstate 0); "" where a label is missing."""
    fe, evstate = np.asarray(fe, dtype=float), np.asarray(evstate, dtype=float)
    out = np.where(evstate == 1, "RC", "RGB").astype(object)
    out[fe < HALO_FEH] = "halo"
    out[apogee.is_missing(fe) | apogee.is_missing(evstate)] = ""
    return out


def _on_grid(name: str, spectra) -> np.ndarray:
    """(..., 7514) spectra -> (..., 8575) with NaN in the gaps, so lines break there."""
    spectra = np.asarray(spectra, dtype=float)
    if spectra.shape[-1] != apogee.N_PIX_GAPLESS:
        raise ValueError(f"{name} must have {apogee.N_PIX_GAPLESS} pixels on its last axis, "
                         f"got shape {spectra.shape}")
    return apogee.gap_insert(spectra, fill=np.nan)


def _wave_limits(ax) -> None:
    lam = apogee.wavelength(apogee.N_PIX_GAPLESS)
    ax.set_xlim(lam[0], lam[-1])
    ax.set_xlabel("vacuum wavelength (Å)")


def plot_error_vs_size(path, table: pd.DataFrame) -> None:
    """Mean (solid) and median (dashed) reconstruction error against latent size per family
    (an `generative.error_table`)."""
    missing = {"family", "size", "mean_error", "median_error"} - set(table.columns)
    if missing:
        raise ValueError(f"plot_error_vs_size: table lacks columns {sorted(missing)}")
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    for i, (family, rows) in enumerate(table.sort_values("size").groupby("family", sort=True)):
        color = f"C{i}"
        ax.plot(rows["size"], rows["mean_error"], "o-", color=color, label=f"{family} mean")
        ax.plot(rows["size"], rows["median_error"], "s--", color=color, label=f"{family} median")
    ax.set_xlabel("latent dimension / number of components")
    ax.set_ylabel("test reconstruction MSE (normalized units²)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_latent_space(path, z, labels: Mapping[str, np.ndarray]) -> None:
    """Latent means (N, d ≥ 2), first two dimensions, one panel per label (e.g. teff, logg, Fe,
    evstate); `evstate` (0 RGB, 1 RC) is drawn as classes; −9999/NaN are grey. With both Fe and
    evstate, a last panel colours the three populations (`populations`)."""
    z = np.asarray(z, dtype=float)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"plot_latent_space: z must have shape (N, d >= 2), got {z.shape}")
    if not labels:
        raise ValueError("plot_latent_space: give at least one label to colour by")
    by_population = "Fe" in labels and "evstate" in labels
    n_panels = len(labels) + by_population
    fig, axes = plt.subplots(1, n_panels, figsize=(3.6 * n_panels, 3.4),
                             constrained_layout=True, squeeze=False)
    for ax, (name, values) in zip(axes[0], labels.items()):
        values = np.asarray(values, dtype=float)
        if values.shape != (len(z),):
            raise ValueError(f"plot_latent_space: label {name!r} has shape {values.shape}, "
                             f"expected ({len(z)},)")
        ok = ~apogee.is_missing(values)
        ax.scatter(z[~ok, 0], z[~ok, 1], s=3, color="0.8", lw=0)
        if name == "evstate":
            for cls, cls_name in _EVSTATE_NAMES.items():
                sel = ok & (values == cls)
                ax.scatter(z[sel, 0], z[sel, 1], s=4, lw=0, alpha=0.7, label=cls_name)
            ax.legend(fontsize=8, markerscale=3)
        else:
            sc = ax.scatter(z[ok, 0], z[ok, 1], c=values[ok], s=4, lw=0, cmap="viridis")
            fig.colorbar(sc, ax=ax, label=f"{name} [{unit(name)}]")
        ax.set_title(name)
        ax.set_xlabel("z₁")
        ax.set_ylabel("z₂")
    if by_population:
        ax = axes[0, -1]
        groups = populations(labels["Fe"], labels["evstate"])
        for name, text in (("RGB", "RGB"), ("RC", "RC"), ("halo", f"[Fe/H] < {HALO_FEH}")):
            ax.scatter(z[groups == name, 0], z[groups == name, 1], s=4, lw=0, alpha=0.7,
                       label=text)
        ax.legend(fontsize=8, markerscale=3)
        ax.set_title("population")
        ax.set_xlabel("z₁")
        ax.set_ylabel("z₂")
    save_figure(fig, path)


def plot_denoising(path, x_noisy, x_clean, x_recon, chip: str = "green",
                   title: str = "") -> None:
    """One star on one chip: noisy input, noiseless flux and the model's reconstruction."""
    if chip not in apogee.CHIP_OFFSETS:
        raise ValueError(f"plot_denoising: chip must be one of {list(apogee.CHIP_OFFSETS)}, "
                         f"got {chip!r}")
    start, stop = apogee.CHIP_OFFSETS[chip]
    lam = apogee.wavelength(apogee.N_PIX_GAPLESS)[start:stop]
    fig, ax = plt.subplots(figsize=(11, 3.4), constrained_layout=True)
    for name, spec, style in (("noisy", x_noisy, dict(color="0.6", lw=0.6)),
                              ("noiseless", x_clean, dict(color="k", lw=0.9)),
                              ("reconstructed", x_recon, dict(color="C3", lw=0.9))):
        spec = np.asarray(spec, dtype=float)
        if spec.shape != (apogee.N_PIX_GAPLESS,):
            raise ValueError(f"plot_denoising: {name} spectrum must have shape "
                             f"({apogee.N_PIX_GAPLESS},), got {spec.shape}")
        ax.plot(lam, spec[start:stop], label=name, **style)
    ax.set_xlim(lam[0], lam[-1])
    ax.set_xlabel("vacuum wavelength (Å)")
    ax.set_ylabel("normalized flux")
    ax.set_title(title or f"denoising, {chip} chip")
    ax.legend(fontsize=8, ncol=3)
    save_figure(fig, path)


def plot_prior_samples(path, samples, offset: float | None = None) -> None:
    """Decoded prior samples (n, 7514) stacked with a vertical `offset` (default: 1.5× the
    samples' largest 1–99 % range)."""
    grid = _on_grid("samples", samples)
    if grid.ndim != 2:
        raise ValueError(f"plot_prior_samples: samples must be (n, 7514), got {grid.shape}")
    if offset is None:
        lo, hi = np.nanpercentile(grid, [1, 99], axis=1)
        offset = 1.5 * float(np.max(hi - lo)) or 1.0
    lam = apogee.wavelength()
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.8 * len(grid)), constrained_layout=True)
    for i, spec in enumerate(grid):
        ax.plot(lam, spec + i * offset, lw=0.5)
    _wave_limits(ax)
    ax.set_ylabel(f"flux + offset ({offset:.3g} per sample)")
    ax.set_title(f"{len(grid)} spectra decoded from the prior")
    save_figure(fig, path)


def plot_decoder_jacobian(path, jacobian) -> None:
    """d spectrum / d z_k (d, 7514) against wavelength, one panel per latent dimension."""
    grid = _on_grid("jacobian", jacobian)
    if grid.ndim != 2:
        raise ValueError(f"plot_decoder_jacobian: jacobian must be (d, 7514), got {grid.shape}")
    lam = apogee.wavelength()
    fig, axes = plt.subplots(len(grid), 1, figsize=(12, 1.0 + 2.0 * len(grid)), sharex=True,
                             constrained_layout=True, squeeze=False)
    for k, (ax, row) in enumerate(zip(axes[:, 0], grid)):
        ax.axhline(0.0, color="0.3", ls="--", lw=0.6)
        ax.plot(lam, row, lw=0.5, color=f"C{k}")
        ax.set_ylabel(f"∂ flux / ∂ z{k + 1}")
    _wave_limits(axes[-1, 0])
    fig.suptitle("how each latent dimension changes the decoded spectrum")
    save_figure(fig, path)


def plot_anomalies(path, x, recon, ranking: pd.DataFrame, n: int = 5) -> None:
    """The `n` top-ranked spectra of `ranking` (a `generative.rank_anomalies` table) with
    their reconstructions; `x`, `recon` are (N, 7514) and indexed by `ranking["index"]`."""
    x_grid, r_grid = _on_grid("x", x), _on_grid("recon", recon)
    if x_grid.shape != r_grid.shape:
        raise ValueError(f"plot_anomalies: x {x_grid.shape} and recon {r_grid.shape} differ")
    rows = ranking.head(n)
    if rows.empty:
        raise ValueError("plot_anomalies: ranking is empty")
    lam = apogee.wavelength()
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.0 + 1.8 * len(rows)), sharex=True,
                             constrained_layout=True, squeeze=False)
    for ax, rank, i, star, score in zip(axes[:, 0], rows["rank"], rows["index"], rows["id"],
                                        rows["score"]):
        ax.plot(lam, x_grid[i], lw=0.5, color="k", label="spectrum")
        ax.plot(lam, r_grid[i], lw=0.6, color="C3", label="reconstruction")
        ax.set_title(f"#{rank}  {star}  score {score:.3g}", fontsize=9)
        ax.set_ylabel("flux")
    axes[0, 0].legend(fontsize=8, ncol=2)
    _wave_limits(axes[-1, 0])
    save_figure(fig, path)


def _step_hist(ax, values, bins, **style) -> None:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values):
        ax.hist(values, bins=bins, histtype="step", density=True, **style)


def plot_line_depths(path, lines: pd.DataFrame, real_depths, depths: Mapping[str, np.ndarray]):
    """One panel per line (a `sample_quality.strongest_lines` table): the depth distribution of
    the real test spectra (filled) and of each source's samples (steps)."""
    real_depths = np.asarray(real_depths, dtype=float)
    if real_depths.shape[1:] != (len(lines),):
        raise ValueError(f"plot_line_depths: real depths have shape {real_depths.shape}, "
                         f"expected (N, {len(lines)})")
    fig, axes = plt.subplots(1, len(lines), figsize=(3.4 * len(lines), 3.2),
                             constrained_layout=True, squeeze=False)
    for j, (ax, line) in enumerate(zip(axes[0], lines.itertuples())):
        real = real_depths[:, j][np.isfinite(real_depths[:, j])]
        bins = np.linspace(*np.percentile(real, [0.5, 99.5]), 30) if len(real) else 30
        ax.hist(real, bins=bins, density=True, color="0.8", label="real test")
        for i, (name, depth) in enumerate(depths.items()):
            _step_hist(ax, np.asarray(depth)[:, j], bins, color=f"C{i}", label=name)
        ax.set_title(f"{line.species} {line.vac:.2f} Å", fontsize=9)
        ax.set_xlabel("line depth (1 − flux)")
    axes[0, 0].set_ylabel("density")
    axes[0, -1].legend(fontsize=7)
    save_figure(fig, path)


def plot_nearest_distances(path, real_nn, nearest: Mapping[str, np.ndarray]) -> None:
    """Distance of each sample to its nearest training spectrum (principal components), per
    source, against the real test spectra's own: far lower means memorised spectra."""
    real_nn = np.asarray(real_nn, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    everything = np.concatenate([real_nn, *map(np.ravel, nearest.values())])
    bins = np.linspace(0.0, np.percentile(everything, 99), 40)
    ax.hist(real_nn, bins=bins, density=True, color="0.8", label="real test")
    for i, (name, nn) in enumerate(nearest.items()):
        _step_hist(ax, nn, bins, color=f"C{i}", label=name)
    ax.set_xlabel("distance to the nearest training spectrum (PC scores, flux units)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_sample_scores(path, real_scores, scores: Mapping[str, np.ndarray]) -> None:
    """First two principal-component scores of each source's samples over the real test
    spectra's, one panel per source."""
    real_scores = np.asarray(real_scores, dtype=float)
    if not scores:
        raise ValueError("plot_sample_scores: no sources")
    fig, axes = plt.subplots(1, len(scores), figsize=(3.4 * len(scores), 3.3),
                             constrained_layout=True, squeeze=False, sharex=True, sharey=True)
    for i, (ax, (name, sc)) in enumerate(zip(axes[0], scores.items())):
        sc = np.asarray(sc, dtype=float)
        ax.scatter(real_scores[:, 0], real_scores[:, 1], s=3, lw=0, color="0.6", label="real test")
        ax.scatter(sc[:, 0], sc[:, 1], s=3, lw=0, color=f"C{i}", alpha=0.7, label=name)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("PC 1")
        ax.legend(fontsize=7, markerscale=3)
    axes[0, 0].set_ylabel("PC 2")
    save_figure(fig, path)
