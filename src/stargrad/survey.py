"""Read and write survey files in the SDSS DR17 layout: the allStar catalogue and the
per-star aspcapStar spectra under `<TELESCOPE>/<FIELD>/`.

The mock survey and real DR17 data go through these same functions, so the real-data code
path is the one the default run exercises.
"""
from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from . import apogee
from .provenance import atomic_path

ALLSTAR_NAME = "allStar-dr17-synspec_rev1.fits"
SEISMIC_NAME = "seismic.csv"
SEISMIC_COLUMNS = ("APOGEE_ID", "DNU", "NUMAX", "DPI1", "EVSTATE")
#: WCS keywords of aspcapStar HDU1–3 (log-linear vacuum grid).
GRID_CARDS = {"CRVAL1": apogee.LOG10_LAMBDA0, "CDELT1": apogee.LOG10_STEP, "CRPIX1": 1,
              "CTYPE1": "LOG-LINEAR", "DC-FLAG": 1}


class SurveyFileError(ValueError):
    """A survey file that cannot be used; the message names the file and the problem."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


#: Spectrum products a survey root can hold (the `survey.sas.spectra` config key).
SPECTRUM_KINDS = ("aspcapStar", "apStar")


def aspcapstar_relpath(telescope: str, field: str, apogee_id: str) -> str:
    """Path of a star's aspcapStar file relative to the survey root (DR17 naming)."""
    return f"{telescope.strip()}/{field.strip()}/aspcapStar-dr17-{apogee_id.strip()}.fits"


def spectrum_relpath(kind: str, telescope: str, field: str, apogee_id: str) -> str:
    """Path of a star's spectrum relative to its product root: aspcapStar-dr17-<ID>.fits, or
    apStar-dr17-<ID>.fits (asStar-… for lco25m), under <TELESCOPE>/<FIELD>/."""
    if kind == "aspcapStar":
        return aspcapstar_relpath(telescope, field, apogee_id)
    if kind == "apStar":
        prefix = "asStar" if telescope.strip() == "lco25m" else "apStar"
        return f"{telescope.strip()}/{field.strip()}/{prefix}-dr17-{apogee_id.strip()}.fits"
    raise ValueError(f"spectrum kind must be one of {SPECTRUM_KINDS}, got {kind!r}")


def to_records(table: pd.DataFrame) -> np.ndarray:
    """pandas -> numpy structured array with fixed-width byte strings (FITS-friendly)."""
    cols = []
    for name in table.columns:
        values = table[name].to_numpy()
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            strings = [str(v) for v in values]
            width = max(1, max((len(s) for s in strings), default=1))
            values = np.array(strings, dtype=f"S{width}")
        elif values.dtype == np.float64:
            values = values.astype(np.float32) if name.lower().endswith("_err") else values
        cols.append((name, values))
    out = np.empty(len(table), dtype=[(n, v.dtype, v.shape[1:]) for n, v in cols])
    for n, v in cols:
        out[n] = v
    return out


def write_allstar(path, table: pd.DataFrame, header: dict | None = None) -> None:
    """Write an allStar catalogue (table in HDU1) atomically."""
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header={"VERSION": "dr17", **(header or {})})
            fits.write(to_records(table), extname="ALLSTAR")


def table_frame(records: np.ndarray) -> pd.DataFrame:
    """A FITS table (numpy structured array) as a DataFrame: string columns decoded and
    stripped, numbers in native byte order; array-valued columns are left out."""
    frame = {}
    for name in records.dtype.names:
        col = records[name]
        if col.dtype.kind in "SU":
            col = np.char.strip(col.astype(str))
        elif col.ndim > 1:
            continue
        elif col.dtype.byteorder not in ("=", "|"):
            col = col.astype(col.dtype.newbyteorder("="))
        frame[name] = col
    return pd.DataFrame(frame)


def read_table(path, ext, columns=None, what: str = "table") -> pd.DataFrame:
    """One FITS table HDU (`ext`: number or EXTNAME) as a DataFrame (`table_frame`);
    SurveyFileError naming the file and `what` when it cannot be read."""
    try:
        return table_frame(fitsio.read(str(path), ext=ext, columns=columns))
    except (OSError, ValueError, KeyError) as exc:
        raise SurveyFileError(path, f"cannot read the {what}: {exc}") from exc


def read_allstar(path, columns=None) -> pd.DataFrame:
    """Read allStar HDU1 into a DataFrame (string columns stripped)."""
    table = read_table(path, 1, columns, what="allStar table")
    if "APOGEE_ID" not in table:
        raise SurveyFileError(path, "allStar table has no APOGEE_ID column")
    return table


def write_aspcapstar(path, flux, error, model=None, header: dict | None = None,
                     row: np.ndarray | None = None) -> None:
    """Write one aspcapStar file: HDU1 flux, HDU2 error, HDU3 model on the 8575 grid, HDU4 row."""
    flux = np.asarray(flux, dtype=np.float32)
    error = np.asarray(error, dtype=np.float32)
    model = flux if model is None else np.asarray(model, dtype=np.float32)
    for name, arr in (("flux", flux), ("error", error), ("model", model)):
        if arr.shape != (apogee.N_PIX,):
            raise ValueError(f"write_aspcapstar {path}: {name} must have shape ({apogee.N_PIX},), "
                             f"got {arr.shape}")
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header={"VERSION": "dr17", **(header or {})})
            for arr, what in ((flux, "normalized flux"), (error, "flux uncertainty"),
                              (model, "best-fit model")):
                fits.write(arr, header={**GRID_CARDS, "BUNIT": "normalized", "COMMENT": what})
            if row is not None:
                fits.write(row)


def _read_hdus(path, extensions, read) -> list:
    """`read(hdu)` of HDUs `extensions` (numbers) of a FITS file; SurveyFileError naming the
    file when it is missing, unreadable, truncated or has too few HDUs."""
    path = Path(path)
    if not path.exists():
        raise SurveyFileError(path, "file is missing")
    with open(path, "rb") as handle:
        if not handle.read(80).startswith(b"SIMPLE  ="):
            raise SurveyFileError(path, "not a FITS file (it does not start with a SIMPLE card)")
    try:
        with fitsio.FITS(str(path)) as fits:
            if len(fits) <= max(extensions):
                raise SurveyFileError(path, f"truncated or incomplete FITS: expected at least "
                                            f"{max(extensions) + 1} HDUs, found {len(fits)}")
            return [read(fits[ext]) for ext in extensions]
    except SurveyFileError:
        raise
    except (OSError, ValueError, IndexError) as exc:
        raise SurveyFileError(path, f"corrupt or truncated FITS: {str(exc).splitlines()[0]}") from exc


def read_image_hdus(path, extensions) -> list:
    """The image data of HDUs `extensions` (numbers) of a FITS file; SurveyFileError naming
    the file when it is missing, unreadable, truncated or has too few HDUs."""
    return _read_hdus(path, extensions, lambda hdu: hdu.read())


#: What HDUs 1–3 of each spectrum product hold (`spectrum_kind` tells them apart by HDU 3).
SPECTRUM_LAYOUTS = {
    "aspcapStar": "HDU1 normalized flux, HDU2 error, HDU3 best-fit model: float images of "
                  "shape (8575,)",
    "apStar": "HDU1 flux, HDU2 error, HDU3 APOGEE_PIXMASK bits: images of shape (8575,) or "
              "(n_rows, 8575), HDU3 of integers",
}


def _layout(hdu) -> tuple:
    """(HDU type, image shape or None, holds integers) of one HDU, without reading its data."""
    if hdu.get_exttype() != "IMAGE_HDU":
        return hdu.get_exttype(), None, False
    info = hdu.get_info()
    return "IMAGE_HDU", tuple(info["dims"]), info["img_equiv_type"] > 0


def _kind_of(path, layouts) -> str:
    """The spectrum kind of HDUs 1–3's `_layout`s (see `spectrum_kind`)."""
    shapes = {shape for _, shape, _ in layouts}
    if all(kind == "IMAGE_HDU" for kind, _, _ in layouts) and len(shapes) == 1:
        shape = shapes.pop()
        if len(shape) in (1, 2) and shape[-1] == apogee.N_PIX and shape[0] > 0:
            if layouts[2][2]:
                return "apStar"
            if len(shape) == 1 and not any(integer for _, _, integer in layouts):
                return "aspcapStar"
    found = ", ".join(f"HDU{k} {kind} shape {shape}{' integer' if integer else ''}"
                      for k, (kind, shape, integer) in enumerate(layouts, start=1))
    raise SurveyFileError(path, f"neither an aspcapStar ({SPECTRUM_LAYOUTS['aspcapStar']}) nor "
                                f"an apStar ({SPECTRUM_LAYOUTS['apStar']}); found {found}")


def spectrum_kind(path) -> str:
    """"aspcapStar" or "apStar": which DR17 spectrum product a file is, from its HDU layout,
    not its name (`SPECTRUM_LAYOUTS`). Both hold images of 8575 pixels a row in HDUs 1–3;
    HDU 3 is the best-fit model (float, one row) in an aspcapStar and the APOGEE_PIXMASK
    bits (integers) in an apStar/asStar. SurveyFileError naming the file and both layouts
    when it is neither."""
    return _kind_of(path, _read_hdus(path, (1, 2, 3), _layout))


def read_spectrum_hdus(path) -> tuple[str, list]:
    """(`spectrum_kind`, [HDU1, HDU2, HDU3 data]) of a spectrum file, opened once."""
    read = _read_hdus(path, (1, 2, 3), lambda hdu: (_layout(hdu), hdu.read()))
    return _kind_of(path, [layout for layout, _ in read]), [data for _, data in read]


def aspcapstar_arrays(path, flux, error) -> tuple[np.ndarray, np.ndarray]:
    """An aspcapStar's HDU1 flux and HDU2 error checked to be (8575,), as float32 (NaN or
    ±inf pixels as they are); SurveyFileError naming `path` otherwise."""
    for name, arr in (("flux", flux), ("error", error)):
        if arr is None or arr.ndim != 1 or arr.shape[0] != apogee.N_PIX:
            shape = None if arr is None else arr.shape
            raise SurveyFileError(path, f"{name} has shape {shape}, expected ({apogee.N_PIX},)")
    return flux.astype(np.float32), error.astype(np.float32)


def read_aspcapstar(path) -> tuple[np.ndarray, np.ndarray]:
    """Read (flux, error) from an aspcapStar file, both float32 on the 8575 grid, as stored:
    NaN or ±inf pixels are returned as they are (`compile.clean_spectrum` masks them).

    Raises SurveyFileError naming the file for a missing, unreadable, truncated or
    wrong-shaped file."""
    return aspcapstar_arrays(path, *read_image_hdus(path, (1, 2)))


def read_seismic(path) -> pd.DataFrame:
    """A seismic catalogue (CSV: APOGEE_ID, DNU μHz, NUMAX μHz, DPI1 s, EVSTATE 1=RGB 2=RC)."""
    table = pd.read_csv(path)
    missing = [c for c in ("APOGEE_ID",) if c not in table]
    if missing:
        raise SurveyFileError(path, f"seismic catalogue lacks columns {missing}")
    table["APOGEE_ID"] = table["APOGEE_ID"].astype(str).str.strip()
    return table
