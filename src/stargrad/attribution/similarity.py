"""Similarity of mean Jacobians: between models, and to the mock's efficient-estimator weights."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..sdss import apogee
from .units import as_7514, check_labels


def cosine_similarity(a, b) -> np.ndarray:
    """Cosine similarity along the last (pixel) axis; NaN where either vector is all zero."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"cosine_similarity: shapes differ: {a.shape} vs {b.shape}")
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, np.sum(a * b, axis=-1) / norm, np.nan)


def fidelity(mean_jac_physical, efficient_weights, labels=apogee.ASPCAP_LABELS,
             weight_labels=apogee.ASPCAP_LABELS) -> pd.DataFrame:
    """Per label, the cosine similarity between a model's mean physical Jacobian (K, P) for
    `labels` and the mock's efficient-estimator weights (len(weight_labels), P), matched by
    label name (NaN for labels the weights lack). Columns: label, fidelity."""
    jac = as_7514(mean_jac_physical, "fidelity: mean_jac_physical")
    weights = as_7514(efficient_weights, "fidelity: efficient_weights")
    labels = check_labels(labels, jac, "fidelity")
    weight_labels = check_labels(weight_labels, weights, "fidelity (efficient_weights)")
    row = {name: i for i, name in enumerate(weight_labels)}
    values = [cosine_similarity(j, weights[row[label]]) if label in row else np.nan
              for label, j in zip(labels, jac)]
    return pd.DataFrame({"label": labels, "fidelity": np.asarray(values, dtype=float)})


def similarity_matrix(jacs_by_model: dict, labels) -> pd.DataFrame:
    """Cosine similarity of every pair of models' mean Jacobians ((K, P) each, same labels),
    long format: label, model_a, model_b, cosine (diagonal included). One label's matrix:
    table[table.label == l].pivot(index="model_a", columns="model_b", values="cosine")."""
    if not jacs_by_model:
        raise ValueError("similarity_matrix: jacs_by_model is empty")
    jacs = {name: as_7514(j, f"similarity_matrix: model {name!r}")
            for name, j in jacs_by_model.items()}
    for name, j in jacs.items():
        check_labels(labels, j, f"similarity_matrix: model {name!r}")
    labels = [str(label) for label in labels]
    rows = [{"label": label, "model_a": a, "model_b": b,
             "cosine": float(cosine_similarity(jacs[a][k], jacs[b][k]))}
            for k, label in enumerate(labels) for a in jacs for b in jacs]
    return pd.DataFrame(rows)
