"""The oracle rule (mock surveys): the mock's *true* forward model (`mock.forward.spectrum`)
fitted to every star of a task's valid and test splits by χ² with the shared solver
(`stargrad.solver`), written as a model's PREDICTIONS. It is the measured ceiling of the
comparison: for a correct model a χ² fit is the efficient estimator, so its test mad_std should
sit at the Cramér–Rao bound (the gap of a family to the oracle is what it loses to its model of
the spectrum and to finite training data).

The fit, per star: the 22 labels standardized by the training split's mean and std (so the
solver's box and damping see comparable numbers), inside the training range widened by
`bound_margin` of its width on each side; `n_iter` Levenberg-Marquardt iterations from two
starts, the training mean and the one of `n_prototypes` training label vectors whose true
spectrum fits best; weights 1/σ² from the compiled errors, 0 at masked pixels; no prior. In
float64 (the Fisher matrix of labels such as C and C I, or Ti and Ti II, that move the same
lines is too ill-conditioned for float32; see `mock.crb`). The mock's spectra also hold what
the forward model does not (a bad continuum, a binary companion: `mock.writer`), so a few stars
misfit — those are the mock's anomalies, and mad_std is robust to them.

Columns: value, std_model = sqrt(diag (GᵀC⁻¹G)⁻¹) at the fit (the formal error; the true
model has no error of its own, so std_predictive = 0 and std_total = std_model),
std_calibrated from the valid split (`stages.predict.calibration_scales`), converged."""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..sdss import apogee
from .. import solver
from ..sdss.apogee import ASPCAP_LABELS, is_missing
from ..batching import padded_chunks
from ..datasets.dataset import load_split, task_labels
from ..mock.forward import spectrum
from ..predictions import ORACLE, write_predictions
from ..provenance import atomic_path, header_cards
from ..tasks import Task
from .predict import calibration_scales



def check_oracle_task(task: Task) -> None:
    """ValueError unless the task's labels are among the mock's 22 (the oracle fits those)."""
    unknown = [label for label in task.labels if label not in ASPCAP_LABELS]
    if unknown or task.kind != "regression":
        raise ValueError(f"oracle: task {task.name} has labels {unknown or list(task.labels)} "
                         f"the mock's forward model does not take (it takes {ASPCAP_LABELS})")


def true_flux(mean, std, continuum=None):
    """The forward model on the 7514 chip pixels as a function of standardized labels; with
    `continuum` = (operator (7514, U), columns (U,)), divided by operator @ flux[columns], the
    pseudo-continuum that the data's normalization would fit to it
    (`sdss.continuum.continuum_operator`)."""
    kept = jnp.asarray(apogee.KEPT_PIXELS, jnp.int32)     # int32 in and out of x64 mode

    def flux(labels):
        model = jnp.take(spectrum(mean + std * labels), kept)
        if continuum is None:
            return model
        operator, columns = continuum
        return model / (operator @ jnp.take(model, columns))
    return flux


@partial(jax.jit, static_argnames="n_iter")
def _fit_chunk(x, inv_var, starts, mean, std, lower, upper, continuum, *, n_iter: int):
    return solver.fit_stars(true_flux(mean, std, continuum), x, inv_var, starts, n_iter=n_iter,
                            lower=lower, upper=upper, implicit=False, star_chunk=x.shape[0])


def training_box(train_labels, bound_margin: float, n_prototypes: int):
    """(mean, std, lower, upper (22,) in standardized units, prototypes (J, 22) standardized)
    from the training split's catalogue labels (N, 22), missing ones left out per label."""
    y = np.where(is_missing(train_labels), np.nan, train_labels)
    mean, std = np.nanmean(y, axis=0), np.nanstd(y, axis=0)
    if not np.all(np.isfinite(mean) & (std > 0)):
        raise ValueError("oracle: every label needs at least two different training values")
    z = (y - mean) / std
    low, high = np.nanmin(z, axis=0), np.nanmax(z, axis=0)
    width = high - low
    complete = z[np.isfinite(z).all(axis=1)]
    return (mean, std, low - bound_margin * width, high + bound_margin * width,
            solver.prototype_labels(complete, n_prototypes))


def fit_oracle(flux, error, mask, box, *, n_iter: int, batch_size: int = 32,
               extra_starts=None, continuum=None) -> dict:
    """Fit the true forward model to spectra (N, 7514): dict of value, std (N, 22) in label
    units, chi2, converged (N,). `extra_starts` (S, 22) in label units, clipped into the box,
    are tried for every star besides the training mean and the best prototype; `continuum` as
    `true_flux` takes it (the same for every star)."""
    mean, std, lower, upper, prototypes = box
    with jax.enable_x64(True):
        proto_flux = np.asarray(jax.vmap(true_flux(mean, std, continuum))(
            jnp.asarray(prototypes)))
        inv_var = np.where(mask, 0.0, 1.0 / np.square(np.asarray(error, np.float64)))
        x = np.where(mask, 0.0, np.asarray(flux, np.float64))
        chi2 = (inv_var * x * x).sum(1)[:, None] - 2 * (inv_var * x) @ proto_flux.T \
            + inv_var @ (proto_flux ** 2).T
        best = prototypes[np.argmin(chi2, axis=1)]
        starts = np.stack([np.zeros_like(best), best], axis=1)
        if extra_starts is not None:
            extra = np.clip((np.asarray(extra_starts, np.float64) - mean) / std, lower, upper)
            starts = np.concatenate([starts, np.broadcast_to(extra, (len(x), *extra.shape))],
                                    axis=1)
        out = {"value": [], "std": [], "chi2": [], "converged": []}
        for _, n_valid, (xc, wc, sc) in padded_chunks((x, inv_var, starts), batch_size,
                                                      pad="edge"):
            fit = _fit_chunk(xc, wc, sc, mean, std, lower, upper, continuum, n_iter=n_iter)
            out["value"].append(mean + std * np.asarray(fit["value"])[:n_valid])
            cov = np.asarray(fit["covariance"])[:n_valid]
            out["std"].append(std * np.sqrt(np.einsum("nkk->nk", cov)))
            out["chi2"].append(np.asarray(fit["chi2"])[:n_valid])
            out["converged"].append(np.asarray(fit["converged"])[:n_valid])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def oracle_predictions(train_path, split_paths, out_paths, calibration_path, *, task: Task,
                       n_iter: int, n_prototypes: int, bound_margin: float,
                       batch_size: int = 32, config_digest: str = "", log=print) -> None:
    """The oracle rule: fit the splits `split_paths` (named by their stems; valid among them) and
    write one PREDICTIONS table each, calibrated on valid, and the calibration table."""
    check_oracle_task(task)
    stems = [Path(p).stem for p in split_paths]
    if "valid" not in stems:
        raise ValueError(f"oracle: calibration needs the valid split among {stems}")
    train = load_split(train_path)
    all_labels = Task(task.name, task.dataset, ASPCAP_LABELS, "regression")
    box = training_box(task_labels(train, all_labels), bound_margin, n_prototypes)
    keep = [ASPCAP_LABELS.index(label) for label in task.labels]
    labels = list(task.labels)
    tables, truths, ids = {}, {}, {}
    for stem, path in zip(stems, split_paths):
        data = load_split(path)
        t0, cpu0 = time.perf_counter(), time.process_time()
        fit = fit_oracle(data.flux, data.error, data.mask, box, n_iter=n_iter,
                         batch_size=batch_size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        log(f"oracle: {len(data)} stars of {stem} in {wall:.1f} s ({cpu:.1f} CPU s, "
            f"{len(data) / max(wall, 1e-9):.1f} stars/s); {int(fit['converged'].sum())} "
            f"converged, median χ²/pixel "
            f"{np.median(fit['chi2'] / np.maximum((~data.mask).sum(1) - 22, 1)):.3f}")
        columns = {}
        for k, label in zip(keep, labels):
            columns[label] = fit["value"][:, k]
            columns[f"{label}_std_model"] = fit["std"][:, k]
            columns[f"{label}_std_predictive"] = np.zeros(len(data))
            columns[f"{label}_std_total"] = fit["std"][:, k]
        columns["converged"] = fit["converged"]
        tables[stem], truths[stem], ids[stem] = pd.DataFrame(columns), task_labels(data, task), \
            data.ids
    scales, n_used = calibration_scales(tables["valid"], truths["valid"], labels)
    log("oracle calibration (std_total scale from the valid split): "
        + ", ".join(f"{label} {s:.3g}" for label, s in zip(labels, scales)))
    with atomic_path(calibration_path) as tmp:
        pd.DataFrame({"label": labels, "scale": scales, "n_valid": n_used,
                      "method": "valid mad_std of z"}).to_csv(tmp, index=False,
                                                               float_format="%.6g")
    for stem, out_path in zip(stems, out_paths):
        table = tables[stem]
        for label, scale in zip(labels, scales):
            table[f"{label}_std_calibrated"] = table[f"{label}_std_total"] * scale
        write_predictions(out_path, ids[stem], table, truths[stem], labels, header_cards(
            config_digest, None, model=ORACLE, task=task.name, split=stem))
