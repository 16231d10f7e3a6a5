"""d label / d flux of a trained model (`stargrad.load`) on any spectra, behind
`stargrad.api.TrainedModel.explain`."""
from __future__ import annotations

import numpy as np

from ..applied import TrainedModel
from .jacobian import jacobian
from .units import to_physical


def explain(model: TrainedModel, flux, error=None, mask=None, *,
            chunk_size: int = 32) -> np.ndarray:
    """Per-spectrum Jacobians d label / d flux, (N, K, 7514) float32, in label units per unit
    of continuum-normalized flux (dropout off), of spectra given as `TrainedModel.predict`
    takes them. A masked pixel is replaced by the training mean before the model sees it,
    so its column is the model's sensitivity there, not a measurement's."""
    x, x_err, _ = model.inputs(flux, error, mask)
    jac = jacobian(model.model, model.params, x, x_err=x_err, chunk_size=chunk_size)
    return to_physical(jac, model.norm.input_std, model.norm.label_std).astype(np.float32)
