"""Masked losses over label batches (normalized label units).

`y` and `valid` are (B, K); a label with `valid == False` never changes a loss or its gradient,
whatever `y` holds there. A star's loss is the sum of its valid terms over its number of valid
labels (0 for a star with none); the batch loss is the mean of that over the B stars.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax


def per_star_mean(terms, valid):
    """Mean over the batch of each star's mean of valid `terms` (B, K) -> scalar.

    Masked entries of `terms` are replaced by 0 before summing; callers should also build the
    terms from masked inputs (`jnp.where(valid, y, 0)`) so the gradient there is exactly 0."""
    valid = jnp.asarray(valid, bool)
    total = jnp.where(valid, terms, 0.0).sum(axis=-1)
    count = valid.sum(axis=-1)
    return jnp.mean(total / jnp.maximum(count, 1))


def masked_mse(pred, y, valid):
    """Per-star mean squared error over valid labels, averaged over the batch."""
    y = jnp.where(valid, y, 0.0)
    return per_star_mean(jnp.square(pred - y), valid)


def masked_bce_with_logits(logit, y, valid):
    """Per-star binary cross-entropy (natural log) of 0/1 targets `y` given logits."""
    y = jnp.where(valid, y, 0.0)
    return per_star_mean(optax.sigmoid_binary_cross_entropy(logit, y), valid)


def masked_accuracy(prob, y, valid):
    """Per-star fraction of valid labels where `prob > 0.5` matches the 0/1 target."""
    hit = (prob > 0.5) == (jnp.where(valid, y, 0.0) > 0.5)
    return per_star_mean(hit.astype(jnp.float32), valid)


def class_accuracy(prob, y, valid, cls: int):
    """Fraction of the batch's valid labels of class `cls` (0 or 1) predicted as that class
    (`prob > 0.5` for class 1): the per-class accuracy (recall); 0 if the batch has none."""
    of_class = valid & ((y > 0.5) == bool(cls))
    hit = of_class & ((prob > 0.5) == bool(cls))
    return hit.sum() / jnp.maximum(of_class.sum(), 1)


def label_loss(out, batch, kind: str):
    """Loss and metrics of point predictions `out` (an `apply` dict) against a batch.

    Regression: masked MSE of `out["value"]`; classification: masked BCE of `out["logit"]`,
    with the accuracy of `out["value"]` overall and per class (`accuracy_0`, `accuracy_1`) as
    metrics."""
    y, valid = batch["y"], batch["valid"]
    if kind == "classification":
        bce = masked_bce_with_logits(out["logit"], y, valid)
        return bce, {"bce": bce, "accuracy": masked_accuracy(out["value"], y, valid),
                     **{f"accuracy_{c}": class_accuracy(out["value"], y, valid, c)
                        for c in (0, 1)}}
    mse = masked_mse(out["value"], y, valid)
    return mse, {"mse": mse}


def logit_of(prob, eps: float = 1e-6):
    """Logit of a probability clipped to [eps, 1 - eps], for classifiers (ridge, KNN) whose
    natural output is a probability rather than a logit."""
    p = jnp.clip(prob, eps, 1.0 - eps)
    return jnp.log(p) - jnp.log1p(-p)
