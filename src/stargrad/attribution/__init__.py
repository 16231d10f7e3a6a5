"""Gradient attribution: exact Jacobians d label / d flux of any differentiable model
(`jacobian`), their units and grids (`units`), the strongest features matched to the H-band line
list (`lines`), the share of |J| in each element's ASPCAP DR17 windows (`windows`), similarity
between models and to the mock's efficient estimator (`similarity`), the jacobian.fits
file (`files`), and `TrainedModel.explain` for a loaded model (`explain`).

Shapes: x is (N, P) normalized flux with P = 7514 (gap-removed grid); a model has K outputs;
per-star Jacobians are (N, K, P) and mean Jacobians (K, P). Wavelengths are vacuum Å.
"""
