"""The embedded mock APOGEE survey: a differentiable generator `flux = f(labels)` on the DR17
8575-pixel grid (`lines`, `forward`), red-giant labels with realistic structure
(`population`), a writer in the exact DR17 file layout (`writer`), and the ground truth
beside it: true labels, Cramér–Rao bound and efficient-estimator weights (`crb`).

A label vector θ holds the 22 `apogee.ASPCAP_LABELS` in order: Teff (K), log g (dex, cgs),
then [X/H] (dex) for C, C I, N, O, Na, Mg, Al, Si, P, S, K, Ca, Ti, Ti II, V, Cr, Mn, Fe, Co, Ni.
Wavelengths are vacuum Ångström; fluxes are continuum-normalized.
"""
from ..sdss.apogee import ASPCAP_LABELS as LABELS

N_LABELS = len(LABELS)
LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}
