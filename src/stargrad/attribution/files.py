"""jacobian.fits: mean Jacobians on the 7514 and 8575 grids with their labels and units."""
from __future__ import annotations

import fitsio
import numpy as np

from ..sdss import apogee
from ..provenance import atomic_path
from ..tasks import unit
from .units import P, as_7514, check_labels, to_full_grid


HDU_NAMES = ("MEAN_JACOBIAN", "MEAN_ABS_JACOBIAN", "MEAN_JACOBIAN_8575", "LABELS")
_GRID_7514 = [
    {"name": "CTYPE1", "value": "PIXEL7514", "comment": "gap-removed APOGEE pixel (0-based)"},
    {"name": "PIXMAP", "value": "246:3274,3585:6080,6344:8335",
     "comment": "apStar pixels kept (blue, green, red)"},
    {"name": "LOGW0", "value": apogee.LOG10_LAMBDA0, "comment": "log10 vac A of apStar px 0"},
    {"name": "LOGSTEP", "value": apogee.LOG10_STEP, "comment": "log10 step per apStar pixel"},
    {"name": "CTYPE2", "value": "LABEL", "comment": "row k = LABELS row k"},
]
_GRID_8575 = [
    {"name": "CRVAL1", "value": apogee.LOG10_LAMBDA0, "comment": "log10 vacuum A of pixel 1"},
    {"name": "CDELT1", "value": apogee.LOG10_STEP, "comment": "log10 step"},
    {"name": "CRPIX1", "value": 1},
    {"name": "CTYPE1", "value": "LOG-LINEAR"},
    {"name": "DC-FLAG", "value": 1},
    {"name": "CTYPE2", "value": "LABEL", "comment": "row k = LABELS row k; gaps are NaN"},
]


def write_jacobian_fits(path, mean_jac_7514, mean_abs_jac_7514, labels, header_cards: dict,
                        per_star=None) -> None:
    """Write jacobian.fits atomically: primary header `header_cards` (provenance.header_cards),
    image HDUs MEAN_JACOBIAN and MEAN_ABS_JACOBIAN (K, 7514), MEAN_JACOBIAN_8575 (K, 8575, NaN
    in gaps, log-linear WCS), optional PER_STAR (N, K, 7514), and a LABELS table (LABEL, UNIT).
    Arrays are stored as float32."""
    mean = as_7514(mean_jac_7514, "write_jacobian_fits: mean_jac_7514")
    mean_abs = as_7514(mean_abs_jac_7514, "write_jacobian_fits: mean_abs_jac_7514")
    labels = check_labels(labels, mean, "write_jacobian_fits")
    if mean_abs.shape != mean.shape:
        raise ValueError(f"write_jacobian_fits: mean_abs_jac_7514 shape {mean_abs.shape} "
                         f"differs from mean_jac_7514 {mean.shape}")
    if per_star is not None:
        per_star = np.asarray(per_star)
        if per_star.ndim != 3 or per_star.shape[1:] != mean.shape:
            raise ValueError(f"write_jacobian_fits: per_star must be (N, {len(labels)}, {P}), "
                             f"got {per_star.shape}")
    table = np.zeros(len(labels), dtype=[("LABEL", f"S{max(map(len, labels))}"),
                                         ("UNIT", "S24")])
    table["LABEL"] = [label.encode() for label in labels]
    table["UNIT"] = [unit(label).encode("ascii", "replace")[:24] for label in labels]
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write_image(None, header=dict(header_cards))
            fits.write(mean.astype(np.float32), extname="MEAN_JACOBIAN", header=_GRID_7514)
            fits.write(mean_abs.astype(np.float32), extname="MEAN_ABS_JACOBIAN",
                       header=_GRID_7514)
            fits.write(to_full_grid(mean).astype(np.float32), extname="MEAN_JACOBIAN_8575",
                       header=_GRID_8575)
            if per_star is not None:
                fits.write(per_star.astype(np.float32), extname="PER_STAR", header=_GRID_7514)
            fits.write(table, extname="LABELS")


def read_jacobian_fits(path) -> dict:
    """Read jacobian.fits: dict with mean_jacobian, mean_abs_jacobian (K, 7514),
    mean_jacobian_8575 (K, 8575), per_star (N, K, 7514) or None, labels, header (primary)."""
    try:
        fits = fitsio.FITS(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot open as a jacobian FITS file: {exc}") from exc
    with fits:
        missing = [name for name in HDU_NAMES if name not in fits]
        if missing:
            raise ValueError(f"{path}: not a jacobian file, missing HDUs {missing}")
        primary = fits[0].read_header()
        header = {key: primary[key] for key in primary.keys()}
        labels = [str(s).strip() for s in fits["LABELS"].read()["LABEL"].astype(str)]
        out = {"labels": labels, "header": header,
               "mean_jacobian": fits["MEAN_JACOBIAN"].read(),
               "mean_abs_jacobian": fits["MEAN_ABS_JACOBIAN"].read(),
               "mean_jacobian_8575": fits["MEAN_JACOBIAN_8575"].read(),
               "per_star": fits["PER_STAR"].read() if "PER_STAR" in fits else None}
    if out["mean_jacobian"].shape != (len(labels), P):
        raise ValueError(f"{path}: MEAN_JACOBIAN has shape {out['mean_jacobian'].shape}, "
                         f"expected ({len(labels)}, {P})")
    return out
