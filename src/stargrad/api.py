"""The Python API: a trained model directory applied to any spectra.

    model = stargrad.load("results/models/bcnn_censored/aspcap")
    table = model.predict(flux, error, mc_samples=100)     # labels + std columns (DataFrame)
    jac = model.explain(flux)                              # d label / d flux, (N, K, 7514)
    parts = model.reconstruct(flux)                        # generative models: flux, latent

Prediction and reconstruction are `stargrad.applied` (what the workflow's rules run);
`explain` adds the attribution engine, which no prediction rule needs in its code digest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import applied, models
from .applied import spectra
from .attribution.explain import explain as explain_spectra

__all__ = ["TrainedModel", "load", "spectra"]


@dataclass(frozen=True)
class TrainedModel(applied.TrainedModel):
    """`stargrad.applied.TrainedModel` with `explain`, d label / d flux."""

    def explain(self, flux, error=None, mask=None, *, chunk_size: int = 32) -> np.ndarray:
        """Per-spectrum Jacobians d label / d flux, (N, K, 7514) float32, in label units per
        unit of continuum-normalized flux (dropout off): `stargrad.attribution.explain`."""
        self._require_labels("explain")
        if not models.traits(self.meta["family"]).differentiable:
            raise ValueError(f"{self._name} is not differentiable in the flux (its prediction "
                             f"is piecewise constant): it has no Jacobian to explain")
        return explain_spectra(self, flux, error, mask, chunk_size=chunk_size)


def load(model_dir, calibration="auto") -> TrainedModel:
    """A trained model directory (`results/models/<model>/<task>`) as a TrainedModel;
    `calibration` as `stargrad.applied.load` takes it."""
    core = applied.load(model_dir, calibration)
    return TrainedModel(core.model, core.params, core.norm, core.meta, core.calibration)
