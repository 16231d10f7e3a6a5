"""The mock's ground truth for the models: the Cramér–Rao bound of every label and the
efficient estimator's weights, from the generator's exact Jacobian and each star's errors."""
from __future__ import annotations

from pathlib import Path

import fitsio
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..sdss import apogee, survey
from .. import provenance
from ..batching import padded_chunks
from ..datasets.select import sample_stars
from . import LABELS, N_LABELS
from .forward import jacobian
from .writer import TRUTH_NAME, read_truth

#: The generator's Jacobian d flux / d θ on the 7514 chip pixels, vmapped over stars (float32).
_chip_jacobians = jax.jit(jax.vmap(lambda theta: jnp.take(jacobian(theta), apogee.KEPT_PIXELS,
                                                          axis=0)))


def fisher_products(grads, errors) -> tuple[np.ndarray, np.ndarray]:
    """(σ_CRB (N, 22), efficient weights (N, 22, 7514)) from the generator's Jacobians G
    (N, 7514, 22) and flux errors σ (N, 7514), in float64.

    F = Gᵀ C⁻¹ G with C = diag σ²; σ_CRB = sqrt(diag F⁻¹) in label units (K, dex) and
    W = F⁻¹ Gᵀ C⁻¹ (d label / d normalized flux). F is Jacobi-scaled (D⁻¹ F D⁻¹, D = sqrt(diag F))
    before the solve because Teff (K) and abundances (dex) differ by orders of magnitude in
    sensitivity; even scaled, its condition number can exceed what float32 resolves (labels
    such as C and C I, or Ti and Ti II, move the same lines), so the algebra runs in float64."""
    grads = np.asarray(grads, np.float64)
    inv_err = 1.0 / np.asarray(errors, np.float64)
    scaled = grads * inv_err[..., None]                              # C^-1/2 G
    fisher = np.einsum("npk,npl->nkl", scaled, scaled)
    norm = np.sqrt(np.einsum("nkk->nk", fisher))
    inverse_n = np.linalg.inv(fisher / (norm[:, :, None] * norm[:, None, :]))
    sigma = np.sqrt(np.einsum("nkk->nk", inverse_n)) / norm
    weights = (np.einsum("nkl,npl->nkp", inverse_n, scaled / norm[:, None, :])
               * inv_err[:, None, :] / norm[:, :, None])
    return sigma, weights


def _chip_errors(error) -> np.ndarray:
    error = np.asarray(error, np.float64)
    return apogee.gap_delete(error) if error.shape[-1] == apogee.N_PIX else error


def crb(theta, error) -> np.ndarray:
    """Cramér–Rao bound σ_k = sqrt(diag F⁻¹) (22,) in label units (K, dex) for labels θ and a
    per-pixel flux error (8575 or 7514), F = Gᵀ C⁻¹ G over the 7514 chip pixels."""
    grads = _chip_jacobians(np.asarray(theta, np.float32)[None])
    return fisher_products(grads, _chip_errors(error)[None])[0][0]


def efficient_weights(theta, error) -> np.ndarray:
    """Efficient-estimator weights F⁻¹ Gᵀ C⁻¹ (22, 7514): d label / d normalized flux."""
    grads = _chip_jacobians(np.asarray(theta, np.float32)[None])
    return fisher_products(grads, _chip_errors(error)[None])[1][0]


def _read_errors(survey_root: Path, allstar: pd.DataFrame, ids) -> np.ndarray:
    """Gap-removed error arrays (N, 7514) of stars from their aspcapStar files."""
    out = np.empty((len(ids), apogee.N_PIX_GAPLESS), np.float32)
    for row, ident in enumerate(ids):
        star = allstar.loc[ident]
        path = survey_root / survey.aspcapstar_relpath(star["TELESCOPE"], star["FIELD"], ident)
        error = apogee.gap_delete(survey.read_aspcapstar(path)[1])
        if not np.all(np.isfinite(error) & (error > 0)):
            raise survey.SurveyFileError(path, f"error has {int(np.sum(~(error > 0)))} "
                                               "non-positive or NaN pixels inside the chips")
        out[row] = error
    return out


def write_truth_products(survey_root, split_csv, test_path, out_path, *, max_stars: int,
                         seed: int, chunk_size: int = 64, log=print) -> None:
    """Write the mock's truth products for the `test` and `cluster` stars of a split: a CRB
    table (APOGEE_ID, split, crb_<label> in K or dex), the EFFICIENT_WEIGHTS image (22, 7514)
    averaged over the stars the attribute rule explains — `select.sample_stars` of the
    compiled test split `test_path` with `max_stars` and `seed` — and their list
    (ATTRIBUTION_STARS), so that attribution fidelity compares the same stars."""
    survey_root = Path(survey_root)
    split = pd.read_csv(split_csv, dtype={"APOGEE_ID": str, "split": str})
    missing = {"APOGEE_ID", "split"} - set(split.columns)
    if missing:
        raise ValueError(f"{split_csv}: split table lacks columns {sorted(missing)}")
    split = split[split["split"].isin(["test", "cluster"])].reset_index(drop=True)
    if not split["split"].eq("test").any():
        raise ValueError(f"{split_csv}: no star in the 'test' split")
    truth = read_truth(survey_root).set_index("APOGEE_ID")
    allstar = survey.read_allstar(survey_root / survey.ALLSTAR_NAME,
                                  columns=["APOGEE_ID", "TELESCOPE", "FIELD"])
    allstar = allstar.set_index("APOGEE_ID")
    unknown = sorted(set(split["APOGEE_ID"]) - set(truth.index))
    if unknown:
        raise ValueError(f"{split_csv}: {len(unknown)} stars not in {survey_root / TRUTH_NAME}, "
                         f"e.g. {unknown[:3]}")
    compiled = survey.read_table(test_path, "LABELS", columns=["APOGEE_ID"],
                                 what="compiled test split")["APOGEE_ID"].to_numpy()
    attributed = compiled[sample_stars(compiled, max_stars, seed)]
    ids = split["APOGEE_ID"].to_numpy()
    outside = sorted(set(attributed) - set(ids))
    if outside:
        raise ValueError(f"{test_path}: {len(outside)} stars are not test stars of {split_csv}")
    thetas = truth.loc[ids, list(LABELS)].to_numpy(np.float32)
    in_subset = np.isin(ids, attributed)
    sigma = np.empty((len(ids), N_LABELS), np.float64)
    weight_sum = np.zeros((N_LABELS, apogee.N_PIX_GAPLESS), np.float64)
    for start, n_valid, (th, idx) in padded_chunks((thetas, np.arange(len(ids))), chunk_size,
                                                   pad="edge"):
        errors = _read_errors(survey_root, allstar, ids[idx])
        s, w = fisher_products(_chip_jacobians(th), errors)
        sigma[start:start + n_valid] = s[:n_valid]
        weight_sum += w[:n_valid][in_subset[idx[:n_valid]]].sum(axis=0)
        log(f"truth products: {start + n_valid}/{len(ids)} stars")
    table = pd.DataFrame({"APOGEE_ID": ids, "split": split["split"].to_numpy()})
    for k, label in enumerate(LABELS):
        table[f"crb_{label}"] = sigma[:, k]
    truth_seed = fitsio.read_header(str(survey_root / TRUTH_NAME), ext=0).get("SGSEED")
    cards = provenance.header_cards(seed=truth_seed)
    weight_cards = {"BUNIT": "label/flux", "NSTARS": int(in_subset.sum()), "SGSEED": int(seed),
                    **{f"LABEL{k + 1}": label for k, label in enumerate(LABELS)}}
    with provenance.atomic_path(out_path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header=cards)
            fits.write(survey.to_records(table), extname="CRB")
            fits.write((weight_sum / in_subset.sum()).astype(np.float32),
                       extname="EFFICIENT_WEIGHTS", header=weight_cards)
            fits.write(survey.to_records(pd.DataFrame({"APOGEE_ID": np.sort(attributed)})),
                       extname="ATTRIBUTION_STARS")
