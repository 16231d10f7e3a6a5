"""Model families. Each family is one module exposing `build(...) -> Model`; see
docs/ARCHITECTURE.md for the contract."""
from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

FAMILIES = ("linear", "knn", "mlp", "bcnn", "bcnn_censored", "vae", "pca")


class Model(NamedTuple):
    """A model family instance: small pure functions over a parameter pytree."""
    init: Callable
    apply: Callable
    loss: Callable
    fit: Callable | None = None
    stochastic: bool = False
    input_norm: str = "mean"


def build(family: str, *, n_inputs: int, n_outputs: int, kind: str = "regression",
          **hyper) -> Model:
    """Build a family's Model for `n_inputs` pixels and `n_outputs` labels."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    if kind not in ("regression", "classification"):
        raise ValueError(f"kind must be 'regression' or 'classification', got {kind!r}")
    module = importlib.import_module(f"stargrad.models.{family}")
    return module.build(n_inputs=n_inputs, n_outputs=n_outputs, kind=kind, **hyper)
