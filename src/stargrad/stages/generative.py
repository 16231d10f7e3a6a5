"""What the generative-stage rules do, as library calls over trained VAE/PCA model directories
and compiled splits: reconstruction error against size, the latent space, label regression from
the latent space, denoising (mock only), prior samples and decoder Jacobians, anomaly ranking.

Analyses run on each model's own input normalization (its norm.json); errors are in those
normalized units² (per-pixel standardized flux by default). Figures of spectra are drawn in
continuum-normalized flux, i.e. with the normalization undone.
"""
from __future__ import annotations

from pathlib import Path

import fitsio
import jax
import numpy as np
import pandas as pd

from ..sdss import apogee, survey
from ..generative import analysis as generative
from ..plots import generative as plots_generative
from ..datasets.dataset import Normalizer, SplitData, batch, load_split
from ..mock.writer import read_truth
from ..trained import load_trained
from ..provenance import atomic_path
from ..tasks import Task
from ..train import TrainConfig

LATENT_LABELS = ("teff", "logg", "Fe", "evstate")
#: Families that encode spectra into a latent code and decode them back.
ENCODER_FAMILIES = ("vae", "ae", "pca")


def _write_csv(path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def _inputs(norm: Normalizer, data: SplitData):
    """(normalized flux, good-pixel mask) of a split, both (N, 7514)."""
    return norm.inputs(data.flux, data.mask), ~data.mask


def _physical(norm: Normalizer, x) -> np.ndarray:
    """Normalized flux back to continuum-normalized flux."""
    return np.asarray(x) * norm.input_std + norm.input_mean


def _nonempty(data: SplitData, path) -> SplitData:
    if not len(data):
        raise ValueError(f"{path}: the split has no spectra")
    return data


def _load_models(model_dirs) -> list[tuple]:
    """[(model, params, norm, meta)] of trained VAE/AE/PCA model directories."""
    out = []
    for model_dir in model_dirs:
        model, params, norm, meta = load_trained(model_dir)
        if meta["family"] not in ENCODER_FAMILIES:
            raise ValueError(f"{model_dir}: family {meta['family']!r} is not a model with an "
                             f"encoder ({', '.join(ENCODER_FAMILIES)})")
        out.append((model, params, norm, meta))
    if not out:
        raise ValueError("no generative model directories given")
    return out


# ---------------------------------------------------------------------------- reconstruction

def reconstruction(model_dirs, test_path, out_csv, out_png, log=print) -> pd.DataFrame:
    """Test-split reconstruction error of every model: one row per model (model, family,
    size, mean_error, median_error, n_stars), and the error-vs-size figure."""
    data = _nonempty(load_split(test_path), test_path)
    parts = []
    for model, params, norm, meta in _load_models(model_dirs):
        x, valid = _inputs(norm, data)
        row = generative.error_table(
            [(meta["family"], generative.latent_dim_of(params), params, model)], x, valid)
        row.insert(0, "model", meta["model"])
        log(f"{meta['model']}: mean test reconstruction MSE {row['mean_error'].iat[0]:.4g}")
        parts.append(row)
    table = pd.concat(parts, ignore_index=True).sort_values(["family", "size"], ignore_index=True)
    _write_csv(out_csv, table)
    plots_generative.plot_error_vs_size(out_png, table)
    return table


# ---------------------------------------------------------------------------- latent space

def latent_space(model_dir, split_path, out_png, labels=LATENT_LABELS, log=print) -> None:
    """Latent means of a split's spectra (first two dimensions) coloured by `labels`."""
    model, params, norm, meta = _load_models([model_dir])[0]
    data = _nonempty(load_split(split_path), split_path)
    missing = [l for l in labels if l not in data.labels]
    if missing:
        raise KeyError(f"{split_path}: LABELS table lacks columns {missing}")
    z = generative.reconstruct(model, params, *_inputs(norm, data))["z_mean"]
    log(f"{meta['model']}: latent means of {len(z)} stars, std per dimension "
        f"{np.round(z.std(axis=0), 3).tolist()}")
    plots_generative.plot_latent_space(out_png, z, {l: data.labels[l].to_numpy(float)
                                                    for l in labels})


def latent_regression(model_dir, train_path, test_path, out_csv, *, labels, n_labelled: int,
                      seed: int, hidden, train_spec: dict, log=print) -> pd.DataFrame:
    """Test MSE (physical units²) of an MLP on the latent means vs the same MLP on spectra,
    both trained on `n_labelled` training stars; one row per (input, label)."""
    model, params, norm, meta = _load_models([model_dir])[0]
    train_data = _nonempty(load_split(train_path), train_path)
    test_data = _nonempty(load_split(test_path), test_path)
    missing = [l for l in labels if l not in train_data.labels]
    if missing:
        raise KeyError(f"{train_path}: LABELS table lacks columns {missing}")
    x_train, pv_train = _inputs(norm, train_data)
    x_test, pv_test = _inputs(norm, test_data)
    y_train, y_test = (np.stack([d.labels[l].to_numpy(float) for l in labels], axis=1)
                       for d in (train_data, test_data))
    table = generative.latent_regression(
        model, params, x_train, y_train, x_test, y_test, jax.random.PRNGKey(seed),
        labels=tuple(labels), pixel_valid_train=pv_train, pixel_valid_test=pv_test,
        n_labelled=n_labelled, hidden=tuple(hidden), cfg=TrainConfig.from_dict(train_spec),
        log=log)
    table.insert(0, "model", meta["model"])
    _write_csv(out_csv, table)
    log("latent regression, test MSE:\n" + table.to_string(index=False))
    return table


# ---------------------------------------------------------------------------- denoising

def read_model_flux(survey_root, allstar_path, ids) -> np.ndarray:
    """Gap-deleted (N, 7514) noiseless model flux (aspcapStar HDU3) of stars `ids`."""
    allstar = survey.primary_rows(survey.read_allstar(allstar_path,
                                                      columns=[*survey.ID_COLUMNS, "SNR"]))
    where = allstar.set_index("APOGEE_ID")
    unknown = [i for i in ids if i not in where.index]
    if unknown:
        raise ValueError(f"{allstar_path}: {len(unknown)} stars are not listed, e.g. {unknown[:3]}")
    out = np.empty((len(ids), apogee.N_PIX_GAPLESS), np.float32)
    for k, star in enumerate(ids):
        row = where.loc[star]
        path = survey.spectrum_path(survey_root, "aspcapStar", row["TELESCOPE"], row["FIELD"], star)
        try:
            flux = fitsio.read(str(path), ext=3)
        except (OSError, ValueError, IndexError) as exc:
            raise survey.SurveyFileError(path, f"cannot read the model flux (HDU3): {exc}") from exc
        if flux.shape != (apogee.N_PIX,):
            raise survey.SurveyFileError(path, f"model flux (HDU3) has shape {flux.shape}, "
                                               f"expected ({apogee.N_PIX},)")
        out[k] = apogee.gap_delete(flux.astype(np.float32))
    return out


def denoise(model_dirs, test_path, allstar_path, survey_root, truth_path, out_csv, plot_dir,
            log=print) -> pd.DataFrame:
    """Reconstructions of the noisy test spectra scored against the noiseless mock flux.

    Planted anomalies are left out (HDU3 is the flux without the anomaly). One row per model:
    noisy_mse (input vs noiseless), denoised_mse (reconstruction vs noiseless), their mean
    ratio and median ratio; plus one figure per model of a typical star (median noisy MSE)."""
    data = _nonempty(load_split(test_path), test_path)
    planted = read_truth(truth_path).set_index("APOGEE_ID")["anomaly"]
    keep = planted.reindex(data.ids).fillna("").to_numpy() == ""
    clean = read_model_flux(survey_root, allstar_path, data.ids[keep])
    flux, valid = data.flux[keep], ~data.mask[keep]
    noisy_phys = np.where(valid, (flux - clean) ** 2, 0.0).sum(1) / np.maximum(valid.sum(1), 1)
    example = int(np.argsort(noisy_phys)[len(noisy_phys) // 2])
    star = data.ids[keep][example]
    log(f"denoising {int(keep.sum())} test stars ({int((~keep).sum())} planted anomalies left "
        f"out); example star {star}")
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for model, params, norm, meta in _load_models(model_dirs):
        x = (flux - norm.input_mean) / norm.input_std
        x_clean = (clean - norm.input_mean) / norm.input_std
        scores = generative.denoise_score(model, params, x, x_clean, valid)
        rows.append({"model": meta["model"], "family": meta["family"],
                     "size": generative.latent_dim_of(params), "n_stars": len(scores),
                     "noisy_mse": scores["noisy_mse"].mean(),
                     "denoised_mse": scores["denoised_mse"].mean(),
                     "ratio_of_means": scores["denoised_mse"].mean() / scores["noisy_mse"].mean(),
                     "median_ratio": scores["ratio"].median()})
        recon = generative.reconstruct(model, params, x[example:example + 1],
                                       valid[example:example + 1])["value"][0]
        masked = np.where(valid[example], 1.0, np.nan)
        plots_generative.plot_denoising(
            plot_dir / f"{meta['model']}.png", flux[example] * masked, clean[example],
            _physical(norm, recon), title=f"{meta['model']}: {star}, green chip")
        log(f"{meta['model']}: denoised/noisy MSE {rows[-1]['ratio_of_means']:.3g}")
    table = pd.DataFrame(rows).sort_values(["family", "size"], ignore_index=True)
    _write_csv(out_csv, table)
    return table


# ---------------------------------------------------------------------------- decoder

def decoder_plots(model_dir, split_path, prior_png, jacobian_png, *, n_samples: int, seed: int,
                  log=print) -> None:
    """Spectra decoded from the prior, and d flux / d z at the split's mean latent code, both
    in continuum-normalized flux."""
    model, params, norm, meta = _load_models([model_dir])[0]
    data = _nonempty(load_split(split_path), split_path)
    z0 = generative.reconstruct(model, params, *_inputs(norm, data))["z_mean"].mean(axis=0)
    jac = generative.decoder_jacobian(params, z0) * norm.input_std
    samples = generative.sample_prior(params, jax.random.PRNGKey(seed), n_samples)
    log(f"{meta['model']}: decoder Jacobian at mean z {np.round(z0, 3).tolist()}, "
        f"max |d flux/d z| per dimension {np.round(np.abs(jac).max(axis=1), 4).tolist()}")
    plots_generative.plot_prior_samples(prior_png, _physical(norm, samples))
    plots_generative.plot_decoder_jacobian(jacobian_png, jac)


# ---------------------------------------------------------------------------- anomalies

def _cross_fit_train(model, norm: Normalizer, meta: dict, splits: dict, n_folds: int, log):
    """(fold of each training star, per-fold params): the model refitted `n_folds` times the way
    it was trained (its training config and seed; early stopping on the valid split)."""
    if "valid" not in splits:
        raise ValueError("cross-fitting the training split needs the valid split")
    task = Task(meta["task"], meta["dataset"], tuple(meta["labels"]), meta["kind"])
    cfg = TrainConfig.from_dict({"seed": meta["seed"], **meta.get("train", {})})
    return generative.cross_fit(model, batch(splits["train"], task, norm),
                                batch(splits["valid"], task, norm), cfg,
                                jax.random.PRNGKey(meta["seed"]), n_folds=n_folds, log=log)


def anomalies(model_dir, split_paths, out_csv, out_png, *, truth_path=None, n_shown: int,
              n_folds: int = 5, log=print) -> pd.DataFrame:
    """Rank every star of the compiled splits by reduced χ² of its reconstruction by a model
    that did not see it; mark the mock's planted anomalies (truth `anomaly`: continuum,
    binary); plot the top `n_shown` with the reconstructions that scored them.

    Stars of the split named "train" are scored by K-fold cross-fitting (`n_folds` refits, see
    `generative.cross_fit`; early stopping on the "valid" split; the input normalization stays
    the trained model's), those of the other splits by the trained model. In-sample scores rank
    low exactly the odd spectra a model spent capacity on (a PCA component, say). Fitted on
    (K − 1)/K of the stars, the fold models reconstruct a little worse than the trained one, so
    training-split scores run slightly high. Columns: APOGEE_ID, split, score, rank
    (1 = most anomalous), planted ('' if none)."""
    model, params, norm, meta = _load_models([model_dir])[0]
    splits = {Path(p).stem: load_split(p) for p in split_paths}
    splits = {name: data for name, data in splits.items() if len(data)}
    if not splits:
        raise ValueError(f"no spectra in {list(map(str, split_paths))}")
    ids, names, scores, scorers, flux, masks = [], [], [], [], [], []
    for name, data in splits.items():
        x, valid = _inputs(norm, data)
        error = data.error / norm.input_std
        if name == "train":
            folds, fold_params = _cross_fit_train(model, norm, meta, splits, n_folds, log)
            scores.append(generative.cross_fitted_anomaly_score(model, folds, fold_params, x,
                                                                valid, error))
            scorers += [fold_params[k] for k in folds]
        else:
            scores.append(generative.anomaly_score(model, params, x, valid, error=error))
            scorers += [params] * len(data)
        ids.append(data.ids)
        names.append(np.full(len(data), name))
        flux.append(data.flux)
        masks.append(data.mask)
    ids, scores = np.concatenate(ids), np.concatenate(scores)
    ranking = generative.rank_anomalies(scores, ids)
    planted = (read_truth(truth_path).set_index("APOGEE_ID")["anomaly"].reindex(ids).fillna("")
               .to_numpy() if truth_path else np.full(len(ids), ""))
    order = ranking["index"].to_numpy()
    table = pd.DataFrame({"APOGEE_ID": ids[order], "split": np.concatenate(names)[order],
                          "score": scores[order], "rank": ranking["rank"].to_numpy(),
                          "planted": planted[order]})
    _write_csv(out_csv, table)
    marked = table[table["planted"] != ""]
    log(f"{meta['model']}: {len(table)} stars scored; planted anomalies' ranks: "
        + (", ".join(f"{r.APOGEE_ID} ({r.planted}, {r.split}) #{r.rank}"
                     for r in marked.itertuples()) or "none"))
    top = ranking.head(n_shown)
    flux, masks = np.concatenate(flux)[top["index"]], np.concatenate(masks)[top["index"]]
    x = (flux - norm.input_mean) / norm.input_std
    recon = np.concatenate([generative.reconstruct(model, scorers[i], x[j:j + 1],
                                                   ~masks[j:j + 1])["value"]
                            for j, i in enumerate(top["index"])])
    shown = top.assign(index=np.arange(len(top)),
                       id=[f"{i} ({p})" if p else i for i, p in zip(top["id"], planted[top["index"]])])
    plots_generative.plot_anomalies(out_png, np.where(masks, np.nan, flux),
                                    _physical(norm, recon), shown, n=n_shown)
    return table
