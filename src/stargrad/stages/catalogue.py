"""The catalogue rules: every star of the survey with a spectrum, predicted by one trained model,
in shards of stars streamed in fixed-size blocks (memory bounded by the block, not the survey),
then gathered into one table with a row per allStar row, in allStar order
(`stages.catalogue_table`).

Flags (the FLAG column, bits):
- NO_SPECTRUM (1): the star has no spectrum file (never downloaded, or missing);
- QUARANTINED (2): its file is unusable (corrupt, truncated, wrong shape, too many bad pixels;
  the reason is in quarantine.csv beside the catalogue) — its labels are NaN;
- LABEL_OUT_OF_RANGE (4): a predicted label lies outside the training set's range of it;
- UNLIKE_TRAINING (8): the spectrum is unlike the training spectra: its reduced χ² against its
  projection on the training set's first principal components exceeds the training set's own
  `ood_quantile` (the reference, fitted once per model and task).
"""
from __future__ import annotations

import time

import fitsio
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..sdss import survey
from ..sdss.survey import ID_COLUMNS, chunk_of
from ..applied import load
from ..sdss.apogee import is_missing
from ..datasets.dataset import load_split
from ..sdss.spectra import BAD_ERROR, MAX_BAD_FRACTION, read_clean_spectrum
from ..models.pca import fit_components
from ..predictions import STD_COLUMNS
from ..provenance import atomic_path

FLAGS = {"NO_SPECTRUM": 1, "QUARANTINED": 2, "LABEL_OUT_OF_RANGE": 4, "UNLIKE_TRAINING": 8}


# ---------------------------------------------------------------------------- reference

def write_reference(train_path, model_dir, out_path, *, n_components: int = 16,
                    quantile: float = 0.999, log=print) -> None:
    """What a catalogue shard compares each star with, from the model's training split: the
    mean and first `n_components` principal components of the training flux, the
    `quantile` of the training stars' reduced χ² against them, and each label's range (min,
    max) in the training set. Written as a pickle-free .npz."""
    data = load_split(train_path)
    trained = load(model_dir, calibration=None)
    pca = fit_components(jnp.asarray(data.flux), jnp.asarray(~data.mask), n_components)
    pca = {k: np.asarray(v, np.float64) for k, v in pca.items()}
    chi2 = projection_chi2(pca, data.flux, data.error, data.mask)
    threshold = float(np.quantile(chi2, quantile))
    truth = np.stack([data.labels[label].to_numpy(float) for label in trained.labels], axis=1)
    known = np.where(is_missing(truth), np.nan, truth)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, mean=pca["mean"], components=pca["components"],
                     chi2_threshold=threshold, quantile=quantile,
                     labels=np.array(trained.labels), label_min=np.nanmin(known, axis=0),
                     label_max=np.nanmax(known, axis=0))
    log(f"reference of {len(data)} training spectra: {n_components} components, χ² "
        f"{quantile:.3%} quantile {threshold:.3g}")


def read_reference(path) -> dict:
    with np.load(path, allow_pickle=False) as saved:
        return {k: saved[k] for k in saved.files}


def projection_chi2(pca: dict, flux, error, mask) -> np.ndarray:
    """Reduced χ² (N,) of spectra (N, 7514) against their projection on the principal
    components: mean over good pixels of ((flux − reconstruction) / error)²."""
    centred = np.where(mask, 0.0, flux - pca["mean"])
    recon = pca["mean"] + (centred @ pca["components"].T) @ pca["components"]
    terms = np.where(mask, 0.0, ((flux - recon) / np.where(mask, 1.0, error)) ** 2)
    return terms.sum(axis=1) / np.maximum((~mask).sum(axis=1), 1)


# ---------------------------------------------------------------------------- shards

def shard_rows(allstar: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """The allStar rows of one shard (a stable hash of APOGEE_ID, as the download chunks), with
    their row number in the catalogue (ROW)."""
    table = allstar[list(ID_COLUMNS)].copy()
    table.insert(0, "ROW", np.arange(len(allstar)))
    return table[chunk_of(table["APOGEE_ID"], n_shards) == int(shard)].reset_index(drop=True)


def predict_shard(allstar_path, survey_root, model_dir, reference_path, split_csv, out_path,
                  quarantine_path, *, shard: int, n_shards: int, calibration_path=None,
                  spectra: str = "aspcapStar", skip: dict | None = None, block_size: int = 256,
                  mc_samples: int = 0, seed: int = 0, batch_size: int = 64,
                  bad_error: float = BAD_ERROR, max_bad_fraction: float = MAX_BAD_FRACTION,
                  log=print) -> None:
    """Predict every star of one shard, reading `block_size` spectra at a time; write the
    shard's rows (ROW, ids, labels with STD_COLUMNS, IN_TRAINING, PCA_CHI2, FLAG) and its
    quarantine rows. Each allStar row is predicted from its own spectrum (its TELESCOPE and
    FIELD: a star with several rows gets one prediction per row). `skip` maps (APOGEE_ID,
    TELESCOPE, FIELD) -> reason for rows known to have no usable file (failed downloads); a
    row whose path parts cannot name a file under the root is quarantined with the reason."""
    t0 = time.perf_counter()
    rows = shard_rows(survey.read_allstar(allstar_path, columns=list(ID_COLUMNS)), shard, n_shards)
    trained = load(model_dir, calibration=calibration_path)
    reference = read_reference(reference_path)
    split = pd.read_csv(split_csv, dtype={"APOGEE_ID": str})
    training = set(split.loc[split["split"].isin(["train", "valid"]), "APOGEE_ID"])
    labels = list(trained.labels)
    columns = [n for label in labels for n in (label, *(f"{label}_{s}" for s in STD_COLUMNS))]
    out = pd.DataFrame(np.nan, index=rows.index, columns=columns + ["PCA_CHI2"])
    flag = np.zeros(len(rows), np.int32)
    quarantine = []
    skip = skip or {}
    log(f"shard {shard}/{n_shards}: {len(rows)} allStar rows, model {trained.meta['model']}/"
        f"{trained.meta['task']}, blocks of {block_size}, {mc_samples} MC samples")
    reading = 0.0                     # seconds spent reading and cleaning spectrum files
    for start in range(0, len(rows), block_size):
        block = rows.iloc[start:start + block_size]
        index, arrays = [], []
        t_read = time.perf_counter()
        for i, row in zip(block.index, block.itertuples(index=False)):
            path, reason = survey.row_spectrum(survey_root, spectra, row, skip)
            if reason is None and not path.exists():
                flag[i] |= FLAGS["NO_SPECTRUM"]
                continue
            try:
                if reason is not None:
                    raise survey.SurveyFileError(path, reason)
                arrays.append(read_clean_spectrum(path, spectra, bad_error, max_bad_fraction))
                index.append(i)
            except survey.SurveyFileError as exc:
                flag[i] |= FLAGS["QUARANTINED"]
                quarantine.append((row.APOGEE_ID, row.TELESCOPE, row.FIELD, str(path),
                                   exc.reason))
        reading += time.perf_counter() - t_read
        if index:
            flux, error, mask = (np.stack(parts) for parts in zip(*arrays))
            mask = mask.astype(bool)
            predicted = trained.predict(flux, error, mask, ids=rows.loc[index, "APOGEE_ID"],
                                        mc_samples=mc_samples, seed=seed,
                                        batch_size=batch_size)
            out.loc[index, columns] = predicted[columns].to_numpy()
            chi2 = projection_chi2(reference, flux, error, mask)
            out.loc[index, "PCA_CHI2"] = chi2
            flag[index] |= np.where(chi2 > reference["chi2_threshold"],
                                    FLAGS["UNLIKE_TRAINING"], 0).astype(np.int32)
            values = predicted[labels].to_numpy()
            outside = (values < reference["label_min"]) | (values > reference["label_max"])
            flag[index] |= np.where(outside.any(axis=1), FLAGS["LABEL_OUT_OF_RANGE"],
                                    0).astype(np.int32)
        log(f"  {min(start + block_size, len(rows))}/{len(rows)} rows, "
            f"{time.perf_counter() - t0:.1f} s")
    table = pd.concat([rows, out], axis=1)
    table["IN_TRAINING"] = table["APOGEE_ID"].isin(training)
    table["FLAG"] = flag
    write_table(out_path, table, "CATALOGUE", {})
    with atomic_path(quarantine_path) as tmp:
        pd.DataFrame(quarantine, columns=["APOGEE_ID", "TELESCOPE", "FIELD", "path", "reason"]
                     ).to_csv(tmp, index=False)
    n_read = int(np.isfinite(out["PCA_CHI2"]).sum())
    total = time.perf_counter() - t0
    log(f"shard {shard}: {n_read} spectra predicted, {len(quarantine)} quarantined, "
        f"{int(np.count_nonzero(flag & FLAGS['NO_SPECTRUM']))} without a spectrum, in "
        f"{total:.1f} s ({n_read / max(total, 1e-9):.1f} spectra/s); reading files "
        f"{reading:.1f} s ({n_read / max(reading, 1e-9):.1f} spectra/s), the rest "
        f"{total - reading:.1f} s ({n_read / max(total - reading, 1e-9):.1f} spectra/s)")


def write_table(path, table: pd.DataFrame, extname: str, header: dict) -> None:
    """`table` as the binary-table HDU `extname` of a new FITS file at `path`."""
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header=header)
            fits.write(survey.to_records(table), extname=extname)
