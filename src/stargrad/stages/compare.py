"""Cross-model metrics: the log g study's MSE table, astroNN's median / mad_std table,
per-class accuracy, uncertainty calibration and the ratio to the Cramér–Rao bound."""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from ..sdss.apogee import ASPCAP_LABELS, is_missing
from ..attribution.files import read_jacobian_fits
from ..attribution.similarity import similarity_matrix
from ..predictions import ORACLE, mad_std, read_predictions
from ..plots.compare import plot_metric_by_label, plot_ranking
from ..plots.attribution import plot_jacobian_comparisons
from ..provenance import atomic_path
from ..sdss.survey import read_table

METRIC_COLUMNS = ("model", "task", "split", "label", "n", "mse", "rmse", "bias_median", "mad_std",
                  "z_mad_std", "z_mad_std_calibrated", "crb_median", "crb_ratio", "spread_ratio",
                  "accuracy", "accuracy_rgb", "accuracy_rc")


def regression_metrics(pred: np.ndarray, true: np.ndarray, std_total: np.ndarray,
                       crb: np.ndarray | None = None,
                       std_calibrated: np.ndarray | None = None) -> dict:
    """Metrics of one label on one split; missing truths (−9999, NaN) are left out.

    z_mad_std: robust spread of residual/std_total (1 = calibrated); z_mad_std_calibrated the
    same with the valid-split-scaled std_calibrated. crb_ratio: mad_std of
    the residuals over the median per-star Cramér–Rao bound (1 = the physical limit).
    spread_ratio: robust spread of the predictions over that of the truth (a cluster's
    abundance spread recovered or not)."""
    ok = ~is_missing(true) & np.isfinite(pred)
    resid = pred[ok] - true[ok]
    out = {"n": int(ok.sum())}
    if not ok.any():
        return out
    out.update(mse=float(np.mean(resid ** 2)), rmse=float(np.sqrt(np.mean(resid ** 2))),
               bias_median=float(np.median(resid)), mad_std=float(mad_std(resid)))
    for name, std in (("z_mad_std", std_total), ("z_mad_std_calibrated", std_calibrated)):
        if std is not None and np.all(std[ok] > 0):
            out[name] = float(mad_std(resid / std[ok]))
    true_spread = mad_std(true[ok])
    if true_spread > 0:
        out["spread_ratio"] = float(mad_std(pred[ok]) / true_spread)
    if crb is not None:
        c = crb[ok]
        c = c[np.isfinite(c) & (c > 0)]
        if c.size:
            out["crb_median"] = float(np.median(c))
            out["crb_ratio"] = out["mad_std"] / out["crb_median"]
    return out


def classification_metrics(prob: np.ndarray, true: np.ndarray) -> dict:
    """Accuracy overall and per class (0 RGB, 1 RC) at threshold 0.5."""
    ok = ~is_missing(true)
    pred_class = (prob[ok] >= 0.5).astype(float)
    truth = true[ok]
    out = {"n": int(ok.sum())}
    if not ok.any():
        return out
    out["accuracy"] = float(np.mean(pred_class == truth))
    for cls, name in ((0.0, "accuracy_rgb"), (1.0, "accuracy_rc")):
        sel = truth == cls
        if sel.any():
            out[name] = float(np.mean(pred_class[sel] == cls))
    p = np.clip(prob[ok], 1e-7, 1 - 1e-7)
    out["mse"] = float(np.mean((p - truth) ** 2))
    return out


def task_metrics(predictions: dict[tuple[str, str], pd.DataFrame], labels: list[str], kind: str,
                 task: str, crb: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (model, split, label). `predictions` maps (model, split) -> PREDICTIONS."""
    rows = []
    crb_by_id = crb.set_index("APOGEE_ID") if crb is not None else None
    for (model, split_name), table in sorted(predictions.items()):
        for label in labels:
            pred, true = table[label].to_numpy(), table[f"{label}_true"].to_numpy()
            if kind == "classification":
                row = classification_metrics(pred, true)
            else:
                crb_values = None
                if crb_by_id is not None and f"crb_{label}" in crb_by_id:
                    crb_values = crb_by_id[f"crb_{label}"].reindex(table["APOGEE_ID"]).to_numpy()
                calibrated = table.get(f"{label}_std_calibrated")
                row = regression_metrics(pred, true, table[f"{label}_std_total"].to_numpy(),
                                         crb_values, None if calibrated is None
                                         else calibrated.to_numpy())
            rows.append({"model": model, "task": task, "split": split_name, "label": label, **row})
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def compare_task(prediction_paths, crb_path, attribution_dirs: dict, task, out: dict,
                 log=print) -> None:
    """The compare rule. Prediction files are `results/predictions/<model>/<task>/<split>.fits`;
    `attribution_dirs` maps differentiable models to their attribution directory. `out` holds
    the paths metrics, summary, scorecard, ranking, similarity and comparison_plots."""
    predictions = {}
    for path in prediction_paths:
        path = Path(path)
        predictions[(path.parent.parent.name, path.stem)] = read_predictions(path)
    crb = read_table(crb_path, "CRB", what="Cramér–Rao table") if crb_path else None
    metrics = task_metrics(predictions, list(task.labels), task.kind, task.name, crb)
    with atomic_path(out["metrics"]) as tmp:
        metrics.to_csv(tmp, index=False, float_format="%.6g")
    test = metrics[metrics["split"] == "test"]
    if task.kind == "classification":
        metric, ylabel, ref = "accuracy", "test accuracy", None
    elif crb is not None and test["crb_ratio"].notna().any():
        metric, ylabel, ref = "crb_ratio", "test mad_std / Cramér–Rao bound", 1.0
    else:
        metric, ylabel, ref = "mad_std", "test mad_std of residuals", None
    plot_metric_by_label(out["summary"], test, metric, f"{task.name}: {ylabel}", ylabel, ref)
    attribution = {m: {"fidelity": pd.read_csv(Path(d) / "fidelity.csv"),
                       "windows": pd.read_csv(Path(d) / "windows.csv")}
                   for m, d in attribution_dirs.items()}
    card = scorecard(metrics, attribution)
    with atomic_path(out["scorecard"]) as tmp:
        card.to_csv(tmp, index=False, float_format="%.6g")
    rank = ranking(card, task.kind)
    plot_ranking(out["ranking"], rank, f"{task.name}: models ranked on the test split")
    jacs = {m: read_jacobian_fits(Path(d) / "jacobian.fits")["mean_jacobian"]
            for m, d in sorted(attribution_dirs.items())}
    if crb_path and jacs:
        jacs[EFFICIENT] = efficient_weights_for(crb_path, list(task.labels))
    compare_attribution(jacs, out["similarity"], out["comparison_plots"], list(task.labels))
    log(f"{task.name}: {len(metrics)} metric rows for {len(predictions)} prediction files; "
        f"ranking: {', '.join(f'{r.model} {r.score:.3g}' for r in rank.itertuples())}")


SCORECARD_COLUMNS = ("model", "label", "test_mse", "test_mad_std", "test_bias_median",
                     "z_mad_std", "z_mad_std_calibrated", "crb_ratio", "accuracy", "accuracy_rgb",
                     "accuracy_rc", "cluster_spread_ratio", "fidelity", "share_own", "share_Fe")


def scorecard(metrics: pd.DataFrame, attribution: dict[str, dict[str, pd.DataFrame]]) -> pd.DataFrame:
    """One row per (model, label): test accuracy (MSE, mad_std, bias, per-class accuracy),
    calibration (z_mad_std raw and calibrated), the Cramér–Rao ratio, the cluster's recovered
    spread and, for differentiable models, attribution fidelity and window shares (own element,
    Fe). The oracle's rows (mock surveys) come first.

    `attribution` maps model -> {"fidelity": DataFrame(label, fidelity),
    "windows": window_shares DataFrame}."""
    test = metrics[metrics["split"] == "test"].set_index(["model", "label"])
    cluster = metrics[metrics["split"] == "cluster"].set_index(["model", "label"])
    rows = []
    for (model, label), row in test.iterrows():
        out = {"model": model, "label": label, "test_mse": row["mse"],
               "test_mad_std": row["mad_std"], "test_bias_median": row["bias_median"]}
        for col in ("z_mad_std", "z_mad_std_calibrated", "crb_ratio", "accuracy", "accuracy_rgb",
                    "accuracy_rc"):
            out[col] = row.get(col, np.nan)
        if (model, label) in cluster.index:
            out["cluster_spread_ratio"] = cluster.loc[(model, label), "spread_ratio"]
        if model in attribution:
            fid = attribution[model]["fidelity"].set_index("label")["fidelity"]
            win = attribution[model]["windows"].set_index("label")
            out["fidelity"] = fid.get(label, np.nan)
            if label in win.index:
                out["share_own"] = win.loc[label, "share_own"]
                out["share_Fe"] = win.loc[label, "Fe"] if "Fe" in win else np.nan
        rows.append(out)
    rows.sort(key=lambda r: r["model"] != ORACLE)       # the measured ceiling first
    return pd.DataFrame(rows, columns=list(SCORECARD_COLUMNS))


def ranking(card: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Models ranked on the test split: by median Cramér–Rao ratio when known, else median
    normalized MSE (MSE over the best model's, per label), or accuracy for classification."""
    if kind == "classification":
        score = card.groupby("model")["accuracy"].median().rename("score")
        return score.sort_values(ascending=False).reset_index().assign(metric="accuracy")
    if card["crb_ratio"].notna().any():
        score = card.groupby("model")["crb_ratio"].median().rename("score")
        metric = "median crb_ratio"
    else:
        best = card.groupby("label")["test_mse"].transform("min")
        score = (card["test_mse"] / best).groupby(card["model"]).median().rename("score")
        metric = "median MSE / best MSE"
    return score.sort_values().reset_index().assign(metric=metric)


#: The mock's efficient estimator, compared with the models' Jacobians under this name.
EFFICIENT = "efficient_estimator"


def efficient_weights_for(crb_path, labels) -> np.ndarray:
    """The mock's mean efficient-estimator weights (d label / d flux) of `labels`, (K, 7514);
    NaN rows for labels it has none of (seismic labels)."""
    weights = fitsio.read(str(crb_path), ext="EFFICIENT_WEIGHTS").astype(float)
    row = {label: k for k, label in enumerate(ASPCAP_LABELS)}
    return np.array([weights[row[label]] if label in row else np.full(weights.shape[1], np.nan)
                     for label in labels])


def compare_attribution(jacs: dict[str, np.ndarray], out_csv, plot_dir, labels) -> None:
    """Cosine similarity of the mean Jacobians (K, 7514) of every pair of models (and of the
    mock's efficient estimator, when given as a model) per label, and one side-by-side figure
    per label."""
    with atomic_path(out_csv) as tmp:
        (similarity_matrix(jacs, labels) if jacs else
         pd.DataFrame(columns=["label", "model_a", "model_b", "cosine"])).to_csv(
            tmp, index=False, float_format="%.6g")
    Path(plot_dir).mkdir(parents=True, exist_ok=True)
    shown = {label: by_model for k, label in enumerate(labels)
             if (by_model := {m: j[k] for m, j in jacs.items() if np.all(np.isfinite(j[k]))})}
    plot_jacobian_comparisons(plot_dir, shown)
