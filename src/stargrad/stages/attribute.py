"""The attribute rule: exact gradients of one trained model with respect to the input flux."""
from __future__ import annotations

import time
from pathlib import Path

import fitsio
import jax
import numpy as np
import pandas as pd

from ..plots import attribution as plots_attribution
from ..attribution.files import write_jacobian_fits
from ..attribution.jacobian import mean_jacobian
from ..attribution.lines import lines_table
from ..attribution.similarity import fidelity
from ..attribution.units import to_physical
from ..attribution.windows import window_shares
from ..datasets.dataset import load_split
from ..provenance import atomic_path, header_cards
from ..datasets.select import sample_stars
from ..sdss.survey import read_table
from ..trained import load_trained


def efficient_weights_of(truth_path, ids) -> np.ndarray:
    """The mock's mean efficient-estimator weights (22, 7514) from crb.fits, checking that
    they were averaged over exactly the stars `ids` (its ATTRIBUTION_STARS table)."""
    stars = read_table(truth_path, "ATTRIBUTION_STARS", what="attribution star list")
    if set(stars["APOGEE_ID"]) != set(np.asarray(ids).astype(str)):
        raise ValueError(f"{truth_path}: its efficient weights average {len(stars)} stars that "
                         f"are not the {len(ids)} attributed here; rebuild it with the same "
                         f"attribute.max_stars and seed")
    return fitsio.read(str(truth_path), ext="EFFICIENT_WEIGHTS")


def attribute(model_dir, split_path, out_dir, *, chunk_size: int, mc_samples: int, seed: int,
              max_stars: int, truth_path=None, config_digest: str = "", log=print) -> None:
    """The attribute rule: mean Jacobian d label / d flux (physical units) over a seeded random
    subset of `max_stars` test stars (`select.sample_stars`), dropout off; for Bayesian
    families also averaged over `mc_samples` dropout masks. Writes jacobian.fits, lines.csv,
    windows.csv, fidelity.csv (cosine with the efficient-estimator weights of the same stars,
    mock only) and one figure per label."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    model, params, norm, meta = load_trained(model_dir)
    data = load_split(split_path)
    chosen = sample_stars(data.ids, max_stars, seed)
    x = norm.inputs(data.flux[chosen], data.mask[chosen])
    x_err = norm.input_errors(data.error[chosen], data.mask[chosen])
    labels = list(meta["labels"])
    label_std = norm.label_std          # 1 for classification (Normalizer)
    mean_j, mean_abs = mean_jacobian(model, params, x, x_err=x_err, chunk_size=chunk_size)
    mean_j = to_physical(mean_j, norm.input_std, label_std)
    mean_abs = to_physical(mean_abs, norm.input_std, label_std)
    log(f"Jacobian of {len(x)} of {len(data)} test stars (seed {seed}) × {len(labels)} labels "
        f"(dropout off) in {time.perf_counter() - t0:.1f} s: "
        f"{len(x) / (time.perf_counter() - t0):.1f} spectra/s")
    header = header_cards(config_digest, seed, model=meta["model"], task=meta["task"],
                          nstars=len(x))
    with atomic_path(out_dir / "jacobian.fits") as tmp:
        write_jacobian_fits(tmp, mean_j, mean_abs, labels, header)
        if model.stochastic and mc_samples > 0:
            t1 = time.perf_counter()
            mc_j, _ = mean_jacobian(model, params, x, x_err=x_err,
                                    chunk_size=max(1, chunk_size // 4),
                                    key=jax.random.PRNGKey(seed), mc_samples=mc_samples)
            with fitsio.FITS(str(tmp), "rw") as fits:
                fits.write(to_physical(mc_j, norm.input_std, label_std).astype(np.float32),
                           extname="MEAN_JACOBIAN_MC", header={"MCSAMPLE": mc_samples})
            log(f"MC-averaged Jacobian ({mc_samples} dropout masks) in "
                f"{time.perf_counter() - t1:.1f} s")
    lines = lines_table(mean_j, labels)
    shares = window_shares(mean_abs, labels)
    if truth_path:
        fid = fidelity(mean_j, efficient_weights_of(truth_path, data.ids[chosen]), labels=labels)
    else:
        fid = pd.DataFrame({"label": labels, "fidelity": np.nan})
    for name, table in (("lines.csv", lines), ("windows.csv", shares), ("fidelity.csv", fid)):
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots_attribution.plot_label_jacobians(plot_dir, mean_j, labels, lines)
    log(f"attribution of {meta['model']}/{meta['task']} done in {time.perf_counter() - t0:.1f} s")
