"""A trained model directory (params.npz, model.json, norm.json) loaded back into a Model, its
parameters and its normalization, and the dropout-off forward pass over many spectra. Applying
a trained model to spectra with uncertainties is `stargrad.applied`."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jax
import numpy as np

from . import models, params_io
from .sdss.apogee import N_PIX_GAPLESS
from .batching import map_chunks
from .datasets.dataset import Normalizer
from .tasks import Task


def build_model(model_spec: dict, task: Task) -> models.Model:
    """The Model of a config entry ({family, hyper}) for a task, on the 7514-pixel grid."""
    return models.build(model_spec["family"], n_inputs=N_PIX_GAPLESS, n_outputs=task.n_outputs,
                        kind=task.kind, **model_spec.get("hyper", {}))


def load_trained(model_dir):
    """(Model, params, Normalizer, metadata) of a trained model directory."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    norm = Normalizer.from_json(json.loads((model_dir / "norm.json").read_text()))
    task = Task(meta["task"], meta["dataset"], tuple(meta["labels"]), meta["kind"])
    model = build_model({"family": meta["family"], "hyper": meta["hyper"]}, task)
    params = jax.device_put(params_io.load_params(model_dir / "params.npz"))
    return model, params, norm, meta


def apply_in_chunks(model: models.Model, params, x, x_err=None, batch_size: int = 256) -> dict:
    """`model.apply` with dropout off over (N, P) inputs (and their errors, for families that
    use them) in fixed-size chunks: one compilation whatever N. Returns numpy arrays of the
    outputs that have a leading star axis."""
    arrays = (np.asarray(x, np.float32),)
    if x_err is not None:
        arrays += (np.asarray(x_err, np.float32),)
    apply = _jitted_apply(model)
    return map_chunks(lambda *chunk: apply(params, *chunk[:-1]), arrays,
                      min(batch_size, max(len(arrays[0]), 1)))


@lru_cache(maxsize=32)
def _jitted_apply(model: models.Model):
    return jax.jit(lambda params, x, x_err=None: model.apply(params, x, key=None, train=False,
                                                             x_err=x_err))
