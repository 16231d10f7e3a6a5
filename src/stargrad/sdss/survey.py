"""Read and write survey files in the SDSS DR17 layout: the allStar catalogue and the
per-star aspcapStar spectra under `<TELESCOPE>/<FIELD>/`.

The mock survey and real DR17 data go through these same functions, so the real-data code
path is the one the default run exercises.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from . import apogee
from ..provenance import atomic_path

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
#: DR17's TELESCOPE values (allStar TELESCOPE description).
TELESCOPES = ("apo25m", "lco25m", "apo1m")
#: The allStar columns that place a star's files: <TELESCOPE>/<FIELD>/…-<APOGEE_ID>.fits.
ID_COLUMNS = ("APOGEE_ID", "TELESCOPE", "FIELD")


class PathPartError(ValueError):
    """An allStar TELESCOPE, FIELD or APOGEE_ID that cannot name a file under the survey root
    (the row is quarantined with this reason)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def path_parts(telescope, field, apogee_id=None) -> tuple[str, ...]:
    """The stripped TELESCOPE, FIELD (and APOGEE_ID) of an allStar row, checked against DR17's
    own patterns: TELESCOPE one of TELESCOPES; FIELD and APOGEE_ID non-empty, printable, with
    no path separator and no '..'. Raises PathPartError naming the value."""
    telescope, field = str(telescope).strip(), str(field).strip()
    if telescope not in TELESCOPES:
        raise PathPartError(f"TELESCOPE {telescope!r} is not one of {', '.join(TELESCOPES)}")
    parts = {"FIELD": field}
    if apogee_id is not None:
        parts["APOGEE_ID"] = str(apogee_id).strip()
    for name, value in parts.items():
        if (not value or "/" in value or "\\" in value or ".." in value
                or not value.isprintable()):
            raise PathPartError(f"{name} {value!r} cannot name a DR17 file (empty, or a path "
                                f"separator, '..' or a control character in it)")
    return (telescope, *parts.values())


def aspcapstar_relpath(telescope: str, field: str, apogee_id: str) -> str:
    """Path of a star's aspcapStar file relative to the survey root (DR17 naming; the parts
    checked by `path_parts`)."""
    return spectrum_relpath("aspcapStar", telescope, field, apogee_id)


def spectrum_relpath(kind: str, telescope: str, field: str, apogee_id: str) -> str:
    """Path of a star's spectrum relative to its product root: aspcapStar-dr17-<ID>.fits, or
    apStar-dr17-<ID>.fits (asStar-… for lco25m), under <TELESCOPE>/<FIELD>/; the parts checked
    by `path_parts` (PathPartError)."""
    if kind not in SPECTRUM_KINDS:
        raise ValueError(f"spectrum kind must be one of {SPECTRUM_KINDS}, got {kind!r}")
    telescope, field, apogee_id = path_parts(telescope, field, apogee_id)
    prefix = {"aspcapStar": "aspcapStar", "apStar": "asStar" if telescope == "lco25m"
              else "apStar"}[kind]
    return f"{telescope}/{field}/{prefix}-dr17-{apogee_id}.fits"


def under_root(root, relpath) -> Path:
    """`root / relpath`, checked to stay under `root` once normalized (lexically: a mirror may
    link its directories elsewhere); PathPartError otherwise."""
    path = Path(root) / relpath
    base = os.path.normpath(os.path.abspath(root))
    if os.path.commonpath([base, os.path.normpath(os.path.abspath(path))]) != base:
        raise PathPartError(f"{relpath} resolves outside the survey root {root}")
    return path


def spectrum_path(root, kind: str, telescope: str, field: str, apogee_id: str) -> Path:
    """Where a star's spectrum lies under the survey `root` (`spectrum_relpath`, `under_root`)."""
    return under_root(root, spectrum_relpath(kind, telescope, field, apogee_id))


def row_spectrum(root, kind: str, row, skip: dict) -> tuple:
    """(path, reason) of an allStar `row` (APOGEE_ID, TELESCOPE, FIELD attributes): where its
    spectrum lies under `root`, and why it cannot be used — its entry in `skip` (keyed by
    (APOGEE_ID, TELESCOPE, FIELD)), or, path then the row's own text, why its parts cannot
    name a file (`path_parts`); reason None when nothing is known against it."""
    try:
        path = spectrum_path(root, kind, row.TELESCOPE, row.FIELD, row.APOGEE_ID)
    except PathPartError as exc:
        return f"{row.TELESCOPE}/{row.FIELD}/{row.APOGEE_ID}", exc.reason
    return path, skip.get((row.APOGEE_ID, row.TELESCOPE, row.FIELD))


def primary_rows(allstar: pd.DataFrame) -> pd.DataFrame:
    """One row per APOGEE_ID, the one rule for stars with several allStar rows (a star observed
    in several fields or by both telescopes has a row each in DR17): the row with the highest
    SNR, the first such row on ties (the first row when there is no SNR column), in allStar
    order. The download fetches these rows' spectra (unless asked for every row), select and
    compile read them."""
    if "SNR" not in allstar:
        return allstar.drop_duplicates("APOGEE_ID", keep="first")
    order = np.argsort(-allstar["SNR"].to_numpy(dtype=float), kind="stable")
    return allstar.iloc[order].drop_duplicates("APOGEE_ID", keep="first").sort_index()


def read_row_ids(path) -> pd.DataFrame:
    """ID_COLUMNS of every allStar row, and SNR when the table has it (what `primary_rows`
    needs), without reading the other columns."""
    try:
        with fitsio.FITS(str(path)) as fits:
            names = fits[1].get_colnames()
    except (OSError, ValueError, IndexError) as exc:
        raise SurveyFileError(path, f"cannot read the allStar table: {exc}") from exc
    return read_allstar(path, columns=[*ID_COLUMNS, *(["SNR"] if "SNR" in names else [])])


def chunk_of(apogee_ids, n_chunks: int) -> np.ndarray:
    """Job (0 … n_chunks−1) of each star, from a stable hash of its stripped ID: the download
    chunks and the catalogue shards."""
    if int(n_chunks) < 1:
        raise ValueError(f"n_chunks must be >= 1, got {n_chunks}")
    ids = [str(i).strip() for i in np.atleast_1d(np.asarray(apogee_ids, dtype=object))]
    digests = [int.from_bytes(hashlib.sha1(i.encode()).digest()[:8], "big") for i in ids]
    return np.array([d % int(n_chunks) for d in digests], dtype=np.int64)


def file_sha1(path) -> str:
    """SHA-1 hex digest of a file."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_FITS_BLOCK = 2880


def fits_problem(path) -> str:
    """"" when the file at `path` is whole FITS — HDUs of 2880-byte header blocks up to END,
    then BITPIX/8 × GCOUNT × (PCOUNT + ΠNAXISn) data bytes padded to 2880, ending exactly at
    the end of the file; otherwise what is wrong. Reads the headers only: a short read (no
    checksum to catch it) cannot pass."""
    size, offset = os.path.getsize(path), 0
    with open(path, "rb") as handle:
        while offset < size:
            cards = {}
            while "END" not in cards:
                block = handle.read(_FITS_BLOCK)
                if len(block) < _FITS_BLOCK:
                    return f"ends inside a FITS header ({size} bytes)"
                offset += _FITS_BLOCK
                for start in range(0, _FITS_BLOCK, 80):
                    card = block[start:start + 80].decode("ascii", "replace")
                    key = card[:8].strip()
                    cards.setdefault(key, card[10:].split("/")[0].strip())
                    if key == "END":
                        break
            if offset == _FITS_BLOCK and block[:9] != b"SIMPLE  =":
                return "not a FITS file (it does not start with a SIMPLE card)"
            try:
                naxes = [int(cards[f"NAXIS{k}"]) for k in range(1, int(cards["NAXIS"]) + 1)]
                n = int(cards.get("GCOUNT", 1)) * (int(cards.get("PCOUNT", 0))
                                                   + (int(np.prod(naxes)) if naxes else 0))
                data = abs(int(cards["BITPIX"])) // 8 * n
            except (KeyError, ValueError) as exc:
                return f"unreadable FITS header at byte {offset}: {exc}"
            offset += -(-data // _FITS_BLOCK) * _FITS_BLOCK
            handle.seek(offset)
    if offset != size:
        return f"truncated FITS: {size} bytes, its HDUs need {offset}"
    return ""


def verify_allstar(path, sha1: str | None, out_path, *, log=print) -> str:
    """The verify_allstar rule: the allStar at `path`, downloaded or placed by hand, checked
    against `sha1` (None: only that it is whole FITS); its SHA-1 is written to `out_path`
    (sha1sum format). Raises SurveyFileError naming the file otherwise."""
    digest = file_sha1(path)
    if sha1 is not None and digest != str(sha1).strip().lower():
        raise SurveyFileError(path, f"SHA-1 {digest} is not survey.sas.allstar_sha1 {sha1}; "
                                    f"delete the file to download it again, or fix the setting")
    problem = fits_problem(path) if sha1 is None else ""
    if problem:
        raise SurveyFileError(path, problem)
    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(f"{digest}  {Path(path).name}\n")
    log(f"{path}: sha1 {digest}" + (" (verified)" if sha1 else " (not verified: no allstar_sha1)"))
    return digest


#: Columns of a download manifest (one row per allStar row whose spectrum was asked for).
MANIFEST_COLUMNS = (*ID_COLUMNS, "path", "status", "reason", "bytes", "sha1")


def manifest_skips(manifest_paths) -> dict[tuple[str, str, str], str]:
    """{(APOGEE_ID, TELESCOPE, FIELD): reason} of the allStar rows whose spectrum download
    manifests list as not "ok"."""
    skip = {}
    for manifest in manifest_paths:
        rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        bad = rows[rows["status"] != "ok"]
        skip.update(zip(zip(*(bad[c] for c in ID_COLUMNS)), bad["reason"]))
    return skip


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
    NaN or ±inf pixels are returned as they are (`spectra.clean_spectrum` masks them).

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
