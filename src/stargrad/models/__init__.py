"""Model families. A family is one module of this package exposing `TRAITS` (what it is) and
`build(...) -> Model` (how to make one); dropping such a module here registers it. See
docs/ARCHITECTURE.md for the contract and "How to add a model family"."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple


class Traits(NamedTuple):
    """What a family is, declared once per family module and read by the library and the
    workflow (which stages a model enters, which batch arrays it needs)."""
    supervised: bool = True          # learns labels; False: models the spectra (VAE, PCA)
    differentiable: bool = True      # `value` is differentiable in the flux: attribute stage
    uses_flux_errors: bool = False   # reads x_err (batches, apply) to weight pixels


class Model(NamedTuple):
    """A model family instance: small pure functions over a parameter pytree."""
    init: Callable
    apply: Callable
    loss: Callable
    fit: Callable | None = None
    stochastic: bool = False
    input_norm: str = "mean"
    init_data: Callable | None = None
    finish: Callable | None = None


@lru_cache(maxsize=1)
def families() -> tuple[str, ...]:
    """Names of the family modules in this package, sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.ispkg))


def _known(family: str) -> str:
    if family not in families():
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(families())}")
    return family


def _module(family: str):
    return importlib.import_module(f"{__name__}.{_known(family)}")


@lru_cache(maxsize=None)
def traits(family: str) -> Traits:
    """The `TRAITS = Traits(...)` declaration of a family, read from its source without
    importing it (importing a family imports JAX, and the workflow reads every model's traits
    at each parse, including the one inside every cluster job): a module-level assignment of a
    `Traits` call with literal keyword arguments."""
    path = Path(__path__[0]) / f"{_known(family)}.py"
    call = next((node.value for node in ast.parse(path.read_text(), filename=str(path)).body
                 if isinstance(node, ast.Assign)
                 and [getattr(t, "id", None) for t in node.targets] == ["TRAITS"]), None)
    if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Traits" and not call.args:
        try:
            return Traits(**{kw.arg: ast.literal_eval(kw.value) for kw in call.keywords})
        except (TypeError, ValueError):
            pass
    raise TypeError(f"stargrad.models.{family} must declare TRAITS = Traits(...) with literal "
                    f"keyword arguments")


def build(family: str, *, n_inputs: int, n_outputs: int, kind: str = "regression",
          **hyper) -> Model:
    """Build a family's Model for `n_inputs` pixels and `n_outputs` labels."""
    module = _module(family)
    if kind not in ("regression", "classification"):
        raise ValueError(f"kind must be 'regression' or 'classification', got {kind!r}")
    return module.build(n_inputs=n_inputs, n_outputs=n_outputs, kind=kind, **hyper)
