"""`TrainConfig`, the training loop's settings, apart from the loop (`stargrad.train`): the
workflow reads and checks them without importing JAX."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

OPTIMIZERS = ("adam", "adamw", "sgd")
#: TrainConfig fields that steer a run but not its result (left out of config digests).
RUN_CONTROL_FIELDS = ("checkpoint_every", "time_budget_s")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimizer, batching and schedule settings (defaults follow astroNN's callbacks).

    `early_stopping_patience=None` disables early stopping. `optimizer` is "adam", "adamw"
    (decoupled `weight_decay`, which must be 0 otherwise) or "sgd" (plain stochastic gradient
    descent, with heavy-ball `momentum` in [0, 1), which must be 0 otherwise; the seed
    notebooks' optimiser). `seed` is what callers turn into
    the key passed to `fit` (`fit(..., key=None)` does it). With a checkpoint directory, the
    state is saved every `checkpoint_every` epochs, and a run that would pass `time_budget_s`
    seconds (None: no budget) saves and stops with TimeBudgetExceeded so that a retry resumes;
    neither changes the result."""
    learning_rate: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 50
    early_stopping_patience: int | None = 8
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    plateau_min_delta: float = 5e-5
    min_learning_rate: float = 1e-8
    optimizer: str = "adam"
    adam_eps: float = 1e-7
    weight_decay: float = 0.0
    momentum: float = 0.0
    drop_last: bool = True
    seed: int = 0
    checkpoint_every: int = 1
    time_budget_s: float | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            kind = _OPTIONAL_FIELD_TYPES.get(field.name, type(field.default))
            value = _coerce(field.name, getattr(self, field.name), kind)
            object.__setattr__(self, field.name, value)
        checks = {
            "learning_rate": self.learning_rate > 0,
            "batch_size": self.batch_size >= 1,
            "max_epochs": self.max_epochs >= 1,
            "early_stopping_patience": (self.early_stopping_patience is None
                                        or self.early_stopping_patience >= 1),
            "plateau_factor": 0 < self.plateau_factor < 1,
            "plateau_patience": self.plateau_patience >= 1,
            "plateau_min_delta": self.plateau_min_delta >= 0,
            "min_learning_rate": self.min_learning_rate >= 0,
            "optimizer": self.optimizer in OPTIMIZERS,
            "adam_eps": self.adam_eps > 0,
            "weight_decay": self.weight_decay >= 0
            and (self.optimizer == "adamw" or self.weight_decay == 0),
            "momentum": 0 <= self.momentum < 1 and (self.optimizer == "sgd" or self.momentum == 0),
            "checkpoint_every": self.checkpoint_every >= 1,
            "time_budget_s": self.time_budget_s is None or self.time_budget_s > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            name = bad[0]
            hint = {"plateau_factor": "must be in (0, 1)",
                    "optimizer": f"must be one of {', '.join(OPTIMIZERS)}",
                    "weight_decay": "must be >= 0, and 0 unless optimizer is 'adamw'",
                    "momentum": "must be in [0, 1), and 0 unless optimizer is 'sgd'",
                    "early_stopping_patience": "must be >= 1 or None"}.get(name, "out of range")
            raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}: {hint}")

    @classmethod
    def from_dict(cls, d: Mapping) -> "TrainConfig":
        """Build from a config mapping; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Types of the fields whose default is None (None stays allowed).
_OPTIONAL_FIELD_TYPES = {"early_stopping_patience": int, "time_budget_s": float}


def _coerce(name: str, value, kind: type):
    """Check/convert one config value to its field's type (YAML may give '1e-3' as str)."""
    if value is None and name in _OPTIONAL_FIELD_TYPES:
        return None
    try:
        if kind is bool and isinstance(value, (bool, np.bool_)):
            return bool(value)
        if kind is int and not isinstance(value, (bool, np.bool_)) and float(value) == int(value):
            return int(value)
        if kind is float and not isinstance(value, (bool, np.bool_)):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise ValueError(f"TrainConfig.{name} must be {kind.__name__}, got {value!r}")
