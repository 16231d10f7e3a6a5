"""The mock held against a real spectrum: the mock's true forward model (`mock.forward`) fitted
to one real apStar spectrum with every label free, by the oracle's fit (`stages.oracle.fit_oracle`,
the shared `stargrad.solver`), and its misfit taken apart.

The fit: the 22 labels inside the range of a mock population (`mock.population.draw_labels`)
widened by `bound_margin` of its width on each side, from the population's mean, its best
prototype and any `starts` given (e.g. Doppler's estimate); weights 1/σ² from the apStar error
array (continuum-normalized as compile reads apStar), 0 at masked pixels. Done twice: with the
raw errors, and with σ² + floor² (a model-error floor, so that a few pixels with tiny σ and a
large misfit do not decide the fit alone).

The diagnosis, on the residual r = (data − model)/σ of the floored fit:
- χ² shares by pixel class: pixels within `LINE_RADIUS_PX` of a mock line, by the line's kind
  (CO, CN, OH, atomic, Brackett), and the mock's continuum (no mock
  line near); the mean residual of each class (negative: the star absorbs more than the mock
  does there);
- the large-scale share: the fraction of Σr² carried by r smoothed over `CONTINUUM_SCALE_PX`
  (continuum placement and broad bands, not lines);
- the residual autocorrelation's half width at half maximum (px) against that of a feature of
  the LSF's width (2·sqrt(ln 2)·σ_LSF ≈ 2.3 px): wider means residual structure broader than
  one line (bands, blends, a wrong LSF);
- the strongest residual features (the largest |r| smoothed over the LSF, at least
  `FEATURE_SEPARATION_PX` apart), named by the nearest line of the H-band line list
  (`apogee.load_lines`, vacuum Å, and the 12CO band heads) within `NAME_RADIUS_PX`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..sdss import apogee
from ..datasets import compile as compile_
from ..plots.figures import plt, save_figure
from . import LABELS
from .forward import LSF_SIGMA_PX
from .lines import CO_BAND_HEADS, line_table
from .population import draw_labels
from ..sdss.continuum import continuum_operator
from ..stages.oracle import fit_oracle, training_box, true_flux

LINE_RADIUS_PX = 2.0          # a pixel belongs to a line within ±2 px of its centre (FWHM 3.2)
CONTINUUM_SCALE_PX = 101      # running-mean window of the large-scale residual (≈ 23 Å)
FEATURE_SEPARATION_PX = 8
NAME_RADIUS_PX = 3.0
ERROR_FLOOR = 0.01            # model-error floor (continuum units) of the second fit
TOP_PIXEL_FRACTION = 0.01     # "a few pixels": the share of χ² in the worst 1 % of pixels
#: HWHM (px) of the autocorrelation of a Gaussian feature of the LSF's width.
LSF_ACF_HWHM_PX = 2.0 * np.sqrt(np.log(2.0)) * LSF_SIGMA_PX


def mock_box(bound_margin: float = 0.25, n_prototypes: int = 16, n_stars: int = 1000,
             seed: int = 0):
    """The oracle's box (`stages.oracle.training_box`) over a mock population of `n_stars`
    field giants and a tenth as many cluster giants."""
    labels = draw_labels(n_stars, n_stars // 10, seed=seed, n_anomalies=0)
    return training_box(labels[list(LABELS)].to_numpy(float), bound_margin, n_prototypes)


def label_vector(teff: float, logg: float, feh: float) -> np.ndarray:
    """A 22-label start: Teff (K), log g (dex) and every [X/H] = [Fe/H] (dex)."""
    return np.array([teff, logg] + [feh] * (len(LABELS) - 2), float)


def model_continuum(error, mask, deg: int = 2):
    """(operator (7514, U), columns (U,)): the pseudo-continuum that compile's apStar
    normalization (`sdss.continuum.continuum_normalize`) fits, as a linear map of a model
    spectrum's unmasked continuum pixels, with the data's (normalized) errors as weights."""
    usable = np.zeros(apogee.N_PIX_GAPLESS, bool)
    usable[apogee.continuum_pixels()] = True
    usable &= ~np.asarray(mask, bool) & np.isfinite(error)
    return continuum_operator(error, usable, deg), np.flatnonzero(usable)


def fit_real(flux, error, mask, box, *, starts=None, n_iter: int = 30,
             error_floor: float = ERROR_FLOOR, same_continuum: bool = True) -> dict:
    """Fit one spectrum (7514,) with the raw errors and with the floored ones; per fit:
    labels (22,), chi2, dof, reduced_chi2, converged, model (7514,), sigma (7514,) used. With
    `same_continuum` the model is divided by the pseudo-continuum the data's normalization
    would fit to it (`model_continuum`): the data are normalized to their continuum pixels,
    which molecular and atomic lines depress in a cool star, the mock to its true continuum."""
    continuum = model_continuum(error, mask) if same_continuum else None
    out = {}
    for name, sigma in (("raw", np.asarray(error, np.float64)),
                        ("floor", np.hypot(np.asarray(error, np.float64), error_floor))):
        fit = fit_oracle(flux[None], sigma[None], mask[None], box, n_iter=n_iter,
                         batch_size=1, extra_starts=starts, continuum=continuum)
        labels = fit["value"][0]
        with jax.enable_x64(True):
            model = np.asarray(true_flux(0.0, 1.0, continuum)(jnp.asarray(labels)))
        dof = int((~mask).sum()) - len(LABELS)
        out[name] = dict(labels=labels, chi2=float(fit["chi2"][0]), dof=dof,
                         reduced_chi2=float(fit["chi2"][0]) / dof,
                         converged=bool(fit["converged"][0]), model=model, sigma=sigma)
    return out


def _chips(values):
    return [values[a:b] for a, b in apogee.CHIP_OFFSETS.values()]


def _smooth(values, width: int):
    """Running mean of width `width` px within each chip (edges averaged over what exists)."""
    kernel = np.ones(width)
    parts = []
    for part in _chips(values):
        parts.append(np.convolve(part, kernel, "same") / np.convolve(np.ones_like(part), kernel,
                                                                      "same"))
    return np.concatenate(parts)


def pixel_classes(radius_px: float = LINE_RADIUS_PX) -> np.ndarray:
    """(7514,) class of every pixel: the mock species nearest within `radius_px` ('CO',
    'CN', 'OH', 'atomic', 'brackett'), else 'continuum'."""
    table = line_table()
    kind = np.where(table["kind"].eq("molecular"), table["species"], table["kind"]).astype(str)
    pixels = apogee.KEPT_PIXELS.astype(float)
    order = np.argsort(table["pixel"].to_numpy())
    centres, kind = table["pixel"].to_numpy()[order], kind[order]
    right = np.clip(np.searchsorted(centres, pixels), 1, len(centres) - 1)
    left = right - 1
    nearest = np.where(np.abs(centres[left] - pixels) <= np.abs(centres[right] - pixels),
                       left, right)
    near = np.abs(centres[nearest] - pixels) <= radius_px
    return np.where(near, kind[nearest], "continuum")


def autocorrelation_hwhm(resid, max_lag: int = 50) -> float:
    """Half width at half maximum (px, linear between lags) of the residual's autocorrelation,
    averaged over the three chips."""
    acf = np.zeros(max_lag + 1)
    for part in _chips(resid):
        part = part - part.mean()
        acf += np.array([np.dot(part[:len(part) - k], part[k:]) for k in range(max_lag + 1)])
    acf /= acf[0]
    below = np.flatnonzero(acf < 0.5)
    if not len(below):
        return float(max_lag)
    k = below[0]
    return float(k - 1 + (acf[k - 1] - 0.5) / (acf[k - 1] - acf[k]))


def named_lines() -> pd.DataFrame:
    """The H-band line list (species, vac Å) and the mock's 12CO band heads."""
    heads = pd.DataFrame({"species": "12CO head", "vac": CO_BAND_HEADS})
    return pd.concat([apogee.load_lines()[["species", "vac"]], heads], ignore_index=True)


def residual_features(resid, mask, n_features: int = 12) -> pd.DataFrame:
    """The `n_features` strongest residual features: pixel, vacuum Å, LSF-smoothed residual
    (σ units), nearest listed line within `NAME_RADIUS_PX` (line: species, line_vac) or
    'unlisted', and the other lines within that radius (also)."""
    width = int(round(2 * LSF_SIGMA_PX)) | 1
    smooth = np.where(mask, 0.0, _smooth(np.where(mask, 0.0, resid), width))
    wave = apogee.wavelength(apogee.N_PIX_GAPLESS)
    lines = named_lines()
    line_px = apogee.pixel_of_wavelength(lines["vac"].to_numpy(float))
    full_px = apogee.KEPT_PIXELS
    taken = np.zeros(len(resid), bool)
    rows = []
    for i in np.argsort(-np.abs(smooth)):
        if len(rows) == n_features:
            break
        if taken[i]:
            continue
        taken[max(i - FEATURE_SEPARATION_PX, 0):i + FEATURE_SEPARATION_PX + 1] = True
        distance = np.abs(line_px - full_px[i])
        near = [j for j in np.argsort(distance) if distance[j] <= NAME_RADIUS_PX]
        rows.append(dict(pixel=int(i), wavelength=float(wave[i]), residual=float(smooth[i]),
                         line=lines["species"].iloc[near[0]] if near else "unlisted",
                         line_vac=float(lines["vac"].iloc[near[0]]) if near else np.nan,
                         also=" / ".join(f"{lines['species'].iloc[j]} {lines['vac'].iloc[j]:.2f}"
                                         for j in near[1:])))
    return pd.DataFrame(rows)


def diagnose(flux, mask, fit: dict) -> dict:
    """Where the misfit of one fit (`fit_real`'s 'raw' or 'floor') sits (see module doc)."""
    good = ~np.asarray(mask, bool)
    resid = np.where(good, (flux - fit["model"]) / fit["sigma"], 0.0)
    r2 = resid ** 2
    classes = pixel_classes()
    shares = {}
    for name in ("CO", "CN", "OH", "atomic", "brackett", "continuum"):
        sel = good & (classes == name)
        shares[name] = dict(n_pixels=int(sel.sum()), chi2_share=float(r2[sel].sum() / r2.sum()),
                            chi2_per_pixel=float(r2[sel].mean()) if sel.any() else np.nan,
                            mean_residual=float(np.mean(flux[sel] - fit["model"][sel]))
                            if sel.any() else np.nan)
    top = np.sort(r2[good])[::-1][:max(1, int(TOP_PIXEL_FRACTION * good.sum()))]
    large = _smooth(resid, CONTINUUM_SCALE_PX)
    return dict(classes=shares, top_pixel_share=float(top.sum() / r2.sum()),
                large_scale_share=float(np.sum(large[good] ** 2) / r2.sum()),
                acf_hwhm_px=autocorrelation_hwhm(resid), lsf_acf_hwhm_px=float(LSF_ACF_HWHM_PX),
                features=residual_features(resid, ~good), resid=resid)


def read_real(path):
    """Row 0 of an apStar file as compile reads it: (flux, error, mask bool) on 7514 px."""
    flux, error, mask = compile_.read_clean_spectrum(path, "apStar")
    return np.asarray(flux, np.float64), np.asarray(error, np.float64), mask.astype(bool)


def residual_figure(path, title: str, flux, mask, fit: dict, features: pd.DataFrame) -> None:
    """Three chips (columns): data and best-fit mock model above, (data − model)/σ below, the
    strongest features marked with their line names."""
    wave = apogee.wavelength(apogee.N_PIX_GAPLESS)
    good = ~mask
    resid = np.where(good, (flux - fit["model"]) / fit["sigma"], np.nan)
    fig, axes = plt.subplots(2, 3, figsize=(16, 6), sharex="col", sharey="row",
                             gridspec_kw=dict(height_ratios=(2, 1)))
    for col, (chip, (a, b)) in enumerate(apogee.CHIP_OFFSETS.items()):
        top, bottom = axes[0, col], axes[1, col]
        data = np.where(good, flux, np.nan)
        top.plot(wave[a:b], data[a:b], "k", lw=0.5, label="real apStar (row 0)")
        top.plot(wave[a:b], fit["model"][a:b], "C3", lw=0.5, label="mock forward model, best fit")
        bottom.plot(wave[a:b], resid[a:b], "k", lw=0.4)
        bottom.axhline(0.0, color="C3", lw=0.5)
        for row in features.itertuples():
            if a <= row.pixel < b:
                bottom.annotate(row.line, (row.wavelength, row.residual), fontsize=7,
                                color="C0", ha="center")
        top.set_title(f"{chip} chip")
        top.set_ylim(0.3, 1.2)
        bottom.set_xlabel("vacuum wavelength (Å)")
    axes[0, 0].set_ylabel("normalized flux")
    axes[1, 0].set_ylabel("(data − model) / σ")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
