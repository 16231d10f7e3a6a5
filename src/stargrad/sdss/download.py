"""Download SDSS DR17 files from the SAS (HTTPS) or a local SAS mirror, with SHA-1 checks,
retries with exponential backoff, HTTP Range resume and a quarantine table.

A source is an `https://` URL (`http://` only when asked: `allow_http`), a `file://` URL or a
plain local path; schemes are case-insensitive; a local mirror directory is laid out like the
SAS and goes through exactly the same code. Every file path is built from the allStar row by
`survey.spectrum_path` (parts checked, kept under the survey root). A file is
written to `<dest>.part` and renamed onto its final name only once complete and verified, so an
interrupted or failed download never leaves a partial file under the final name.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from . import survey
from .survey import (ID_COLUMNS, MANIFEST_COLUMNS, SPECTRUM_KINDS, chunk_of, file_sha1,
                     path_parts, primary_rows, spectrum_relpath)
from ..provenance import atomic_path

ALLSTAR_NAME = survey.ALLSTAR_NAME
_BLOCK = 1 << 20
#: HTTP codes worth retrying: request timeout, rate limit, and every 5xx.
_TRANSIENT_HTTP = {408, 429}


class FetchResult(NamedTuple):
    """Outcome of one `fetch`: status "ok"/"failed", final size (bytes), wall time (s),
    SHA-1 of the final file (None when failed), why it failed ("" when ok), attempts made."""
    status: str
    bytes: int
    seconds: float
    sha1: str | None
    reason: str
    attempts: int


class DownloadError(RuntimeError):
    """A file that could not be downloaded or verified (raised with on_bad_file="error")."""


class _Transient(Exception):
    """A failure worth retrying (connection error, timeout, 5xx, truncated transfer)."""


class _Permanent(Exception):
    """A failure that retrying will not fix (404, 403, missing local file)."""


class _Restart(Exception):
    """Drop the .part file and start again from byte 0 (does not consume a retry)."""


# --------------------------------------------------------------------------- SAS layout

def check_source(base_url: str, allow_http: bool = False) -> str:
    """`base_url` if downloads may come from it: https, file:// or a local path; http only with
    `allow_http` (nothing then protects the files or the checksum lists beside them in
    transit). Schemes are case-insensitive; ValueError names the URL otherwise."""
    scheme = _scheme(str(base_url))
    if scheme == "http" and not allow_http:
        raise ValueError(f"{base_url}: plain http is refused (the checksums would come over the "
                         f"same unprotected connection); use https, or set "
                         f"survey.sas.allow_http: true")
    if scheme not in ("", "file", "http", "https"):
        raise ValueError(f"{base_url}: unsupported URL scheme {scheme!r}; use https, file:// or "
                         f"a local path")
    return str(base_url)


def _scheme(source: str) -> str:
    """The URL scheme of `source`, lower case; "" for a local path."""
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    return "" if len(scheme) <= 1 else scheme        # "C:" is a drive, not a scheme


def _join(base: str, *parts: str) -> str:
    """Join path components onto a URL or a local directory."""
    return "/".join([str(base).rstrip("/"), *(p.strip().strip("/") for p in parts)])


def allstar_url(base_url: str) -> str:
    """URL (or mirror path) of the DR17 allStar catalogue under the synspec_rev1 directory."""
    return _join(base_url, ALLSTAR_NAME)


def aspcapstar_url(base_url: str, telescope: str, field: str, apogee_id: str) -> str:
    """URL of a star's aspcapStar file: <base>/<TELESCOPE>/<FIELD>/aspcapStar-dr17-<ID>.fits."""
    return _join(base_url, spectrum_relpath("aspcapStar", telescope, field, apogee_id))


def apstar_url(base_url: str, telescope: str, field: str, apogee_id: str) -> str:
    """URL of a star's combined apStar/asStar file under the DR17 `redux/dr17/stars` root."""
    return _join(base_url, spectrum_relpath("apStar", telescope, field, apogee_id))


def checksum_list_name(telescope: str, field: str, kind: str = "aspcapStar") -> str:
    """File name of the SAS sha1sum list of one field (DR17 naming)."""
    telescope, field = path_parts(telescope, field)
    if kind == "apStar":
        return f"dr17_stars_{telescope}_{field}.sha1sum"
    if kind != "aspcapStar":
        raise ValueError(f"spectrum kind must be one of {SPECTRUM_KINDS}, got {kind!r}")
    if telescope == "lco25m":
        return f"dr17_synspec_rev1_{telescope}_{field}.sha1sum"
    return f"dr17_synspec_{telescope}_{field}.sha1sum"


def checksum_list_url(base_url: str, telescope: str, field: str, kind: str = "aspcapStar") -> str:
    """URL of the sha1sum list that sits beside a field's spectra."""
    name = checksum_list_name(telescope, field, kind)
    return _join(base_url, telescope.strip(), field.strip(), name)


def parse_sha1sum(text: str) -> dict[str, str]:
    """Parse `sha1sum` output ("<40 hex>  [*]<path>" lines) into {file name: sha1}."""
    sums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        digest = parts[0].lower()
        if len(parts) != 2 or len(digest) != 40 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"sha1sum list line {number} is not '<sha1>  <file>': {line!r}")
        sums[Path(parts[1].strip().lstrip("*")).name] = digest
    return sums


# --------------------------------------------------------------------------- one file

def _is_http(source: str) -> bool:
    return _scheme(source) in ("http", "https")


def _local_path(source: str) -> Path:
    if _scheme(source) == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
    return Path(source)


def _open(source: str, offset: int, timeout_s: float):
    """Open `source` at byte `offset` if it can resume there.

    Returns (stream, start, total): `start` is `offset` when resuming and 0 when the source
    restarts from the beginning; `total` is the full size in bytes, None when unknown."""
    if not _is_http(source):
        path = _local_path(source)
        try:
            stream = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise _Permanent(f"missing file ({exc.strerror}: {path})") from exc
        except OSError as exc:
            raise _Transient(f"cannot open {path}: {exc}") from exc
        total = os.fstat(stream.fileno()).st_size
        start = offset if offset <= total else 0
        stream.seek(start)
        return stream, start, total
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(source, headers=headers),
                                          timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # our .part is not a prefix the server agrees with: restart
            raise _Restart(f"HTTP 416 for a resume at byte {offset}") from exc
        if exc.code >= 500 or exc.code in _TRANSIENT_HTTP:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        what = "missing file" if exc.code in (404, 410) else "refused"
        raise _Permanent(f"{what} (HTTP {exc.code} {exc.reason})") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Transient(f"connection failed: {getattr(exc, 'reason', exc)}") from exc
    length = response.headers.get("Content-Length")
    start = 0
    if offset and response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        if content_range.startswith(f"bytes {offset}-"):
            start = offset
        else:
            response.close()
            raise _Restart(f"unexpected Content-Range {content_range!r} for a resume at {offset}")
    total = start + int(length) if length is not None else None
    return response, start, total


def _stream_to_part(source, part: Path, timeout_s: float, log, label: str, check=None):
    """Append `source` to `part`, resuming where it ends, then run `check(part)` (a problem
    string, "" when whole) if given. Returns (SHA-1, resumed?)."""
    offset = part.stat().st_size if part.exists() else 0
    stream, start, total = _open(source, offset, timeout_s)
    digest = hashlib.sha1()
    if start:
        with open(part, "rb") as fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                digest.update(block)
    received, t0, next_report = start, time.monotonic(), time.monotonic() + 10.0
    with stream, open(part, "ab" if start else "wb") as out:
        while True:
            try:
                block = stream.read(_BLOCK)
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(f"transfer interrupted after {received} bytes: {exc}") from exc
            if not block:
                break
            out.write(block)
            digest.update(block)
            received += len(block)
            if time.monotonic() >= next_report:
                rate = (received - start) / 1e6 / max(time.monotonic() - t0, 1e-9)
                log(f"{label}: {received / 1e6:.1f} / "
                    f"{'?' if total is None else f'{total / 1e6:.1f}'} MB, {rate:.2f} MB/s")
                next_report += 10.0
    if total is not None and received < total:
        raise _Transient(f"truncated transfer: {received} of {total} bytes")
    problem = check(part) if check is not None else ""
    if problem:
        raise _Transient(f"short read: {problem}")
    return digest.hexdigest(), bool(start)


def fetch(url_or_path, dest, *, sha1: str | None = None, retries: int = 5,
          backoff_s: float = 1.0, timeout_s: float = 60, fits: bool = False,
          log: Callable = print) -> FetchResult:
    """Download one file to `dest` via `<dest>.part`, verifying its SHA-1 when given; without
    one, a `fits` file must be whole FITS (`survey.fits_problem`), so that a short read from a
    server that sends no Content-Length is retried rather than kept.

    Transient failures are retried up to `retries` times, waiting backoff_s·2^k seconds; a
    partial `.part` is resumed with an HTTP Range request when the server honours it. A 404 is
    not retried; a SHA-1 mismatch after a clean full download is re-downloaded once, then fails.
    On failure nothing is written under `dest` (a `.part` kept for resume may remain)."""
    source, dest = str(url_or_path), Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = None if sha1 is None else str(sha1).strip().lower()
    check = survey.fits_problem if fits and expected is None else None
    t0 = time.monotonic()
    transient = mismatches = attempts = 0

    def done(status, reason="", digest=None):
        size = dest.stat().st_size if status == "ok" else 0
        return FetchResult(status, size, time.monotonic() - t0, digest, reason, attempts)

    while True:
        attempts += 1
        try:
            digest, resumed = _stream_to_part(source, part, timeout_s, log, dest.name, check)
        except _Restart as exc:
            log(f"{dest.name}: {exc}; restarting from byte 0")
            part.unlink(missing_ok=True)
            continue
        except _Permanent as exc:
            part.unlink(missing_ok=True)
            return done("failed", f"{exc} [{source}]")
        except _Transient as exc:
            transient += 1
            if transient > retries:
                return done("failed", f"gave up after {attempts} attempts: {exc} [{source}]")
            delay = backoff_s * 2 ** (transient - 1)
            log(f"{dest.name}: {exc}; retry {transient}/{retries} in {delay:.2f} s")
            time.sleep(delay)
            continue
        if expected is None or digest == expected:
            os.replace(part, dest)
            return done("ok", digest=digest)
        part.unlink()
        if resumed:  # the kept prefix may be stale: one fresh download decides
            log(f"{dest.name}: SHA-1 mismatch after a resume; downloading from scratch")
            continue
        mismatches += 1
        if mismatches >= 2:
            return done("failed", f"SHA-1 mismatch: expected {expected}, got {digest} "
                                  f"(twice) [{source}]")
        log(f"{dest.name}: SHA-1 mismatch (expected {expected}, got {digest}); re-downloading")


def download_allstar(base_url: str, dest, *, sha1: str | None = None, retries: int = 5,
                     backoff_s: float = 1.0, timeout_s: float = 60, allow_http: bool = False,
                     log: Callable = print) -> FetchResult:
    """Fetch the allStar catalogue to `dest` (the download_allstar rule); raises DownloadError
    naming the file when it cannot be fetched or verified."""
    url = allstar_url(check_source(base_url, allow_http))
    result = fetch(url, dest, sha1=sha1, retries=retries, backoff_s=backoff_s,
                   timeout_s=timeout_s, fits=True, log=log)
    if result.status != "ok":
        raise DownloadError(f"{dest}: {result.reason}")
    log(f"{ALLSTAR_NAME}: {result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s, "
        f"sha1 {result.sha1}{' (verified)' if sha1 else ' (not verified: no allstar_sha1)'}")
    return result


# --------------------------------------------------------------------------- many files

def chunk_targets(allstar: pd.DataFrame, apogee_ids, chunk: int, n_chunks: int, *,
                  every_row: bool = False) -> pd.DataFrame:
    """allStar rows (ID_COLUMNS) of the stars in `apogee_ids` assigned to `chunk`: for a star
    with several rows, the row select and compile use (`survey.primary_rows`, by SNR when the
    table has it), or with `every_row` each of its rows (the catalogue's `fetch_all`). IDs
    absent from allStar raise."""
    missing_cols = [c for c in ID_COLUMNS if c not in allstar]
    if missing_cols:
        raise ValueError(f"allStar table lacks columns {missing_cols}")
    ids = pd.Index(pd.unique(pd.Series(apogee_ids, dtype=str).str.strip()))
    table = allstar[list(ID_COLUMNS)].astype(str).apply(lambda col: col.str.strip())
    if not every_row:
        table = primary_rows(table.assign(**({"SNR": allstar["SNR"]} if "SNR" in allstar
                                             else {})))[list(ID_COLUMNS)]
    unknown = ids.difference(table["APOGEE_ID"])
    if len(unknown):
        raise ValueError(f"{len(unknown)} requested stars are not in allStar, e.g. "
                         f"{list(unknown[:5])}")
    stars = table[table["APOGEE_ID"].isin(ids)].drop_duplicates()
    return stars[chunk_of(stars["APOGEE_ID"], n_chunks) == int(chunk)].reset_index(drop=True)


def download_spectra(stars: pd.DataFrame, survey_root, base_url: str, *,
                     verify: str = "sha1sum", retries: int = 5, backoff_s: float = 1.0,
                     timeout_s: float = 60, on_bad_file: str = "quarantine",
                     spectra: str = "aspcapStar", allow_http: bool = False,
                     progress_every_s: float = 10.0, log: Callable = print) -> pd.DataFrame:
    """Download the spectra of `stars` (allStar rows: APOGEE_ID, TELESCOPE, FIELD) into
    `survey_root`, each at `survey.spectrum_path` of its row.

    Each field's sha1sum list is fetched once (and kept, so a rerun fetches nothing); files
    already present and verified are skipped. Returns the manifest, one row per allStar row
    (MANIFEST_COLUMNS): ids, path, status ("ok"/"quarantined"), reason, bytes, sha1. A row
    whose TELESCOPE, FIELD or APOGEE_ID cannot name a file under the root is quarantined with
    the reason. With on_bad_file="error" the first bad file raises DownloadError naming it
    instead."""
    if verify not in ("sha1sum", "none"):
        raise ValueError(f"verify must be 'sha1sum' or 'none', got {verify!r}")
    if on_bad_file not in ("quarantine", "error"):
        raise ValueError(f"on_bad_file must be 'quarantine' or 'error', got {on_bad_file!r}")
    if spectra not in SPECTRUM_KINDS:
        raise ValueError(f"spectra must be one of {SPECTRUM_KINDS}, got {spectra!r}")
    check_source(base_url, allow_http)
    missing_cols = [c for c in ID_COLUMNS if c not in stars]
    if missing_cols:
        raise ValueError(f"download_spectra: stars table lacks columns {missing_cols}")
    root = Path(survey_root)
    stars = stars[list(ID_COLUMNS)].astype(str)
    stars = stars.apply(lambda col: col.str.strip()).drop_duplicates()
    fetch_kw = dict(retries=retries, backoff_s=backoff_s, timeout_s=timeout_s, log=log)
    rows, n_total, n_bytes = [], len(stars), 0
    t0 = time.monotonic()
    next_report = t0 + progress_every_s

    def bad(row, reason):
        if on_bad_file == "error":
            raise DownloadError(f"{row['path']}: {reason}")
        log(f"quarantined {row['path']}: {reason}")
        return {**row, "status": "quarantined", "reason": reason, "bytes": 0, "sha1": ""}

    placed = {}
    for row in stars.itertuples(index=False):
        ids = dict(zip(ID_COLUMNS, row))
        try:
            placed[row] = survey.spectrum_path(root, spectra, row.TELESCOPE, row.FIELD,
                                               row.APOGEE_ID)
        except survey.PathPartError as exc:
            rows.append(bad({**ids, "path": "/".join(row[1:]) + "/" + row[0]}, exc.reason))
    for (telescope, field), group in pd.DataFrame(list(placed), columns=list(ID_COLUMNS)
                                                  ).groupby(["TELESCOPE", "FIELD"], sort=True):
        sums, list_problem = {}, ""
        if verify == "sha1sum":
            sums, list_problem = _field_checksums(base_url, root, telescope, field, spectra,
                                                  fetch_kw)
        for key in group.itertuples(index=False):
            dest = placed[key]
            row = {**dict(zip(ID_COLUMNS, key)), "path": str(dest)}
            expected = sums.get(dest.name)
            if verify == "sha1sum" and expected is None:
                rows.append(bad(row, list_problem or f"no checksum entry for {dest.name} in "
                                f"{checksum_list_name(telescope, field, spectra)}"))
            else:
                url = _join(base_url, spectrum_relpath(spectra, telescope, field, key.APOGEE_ID))
                rows.append(_one_spectrum(row, url, dest, expected, fetch_kw, bad,
                                          root / ".locks"))
                n_bytes += rows[-1]["bytes"] if rows[-1].get("fetched") else 0
            now = time.monotonic()
            if now >= next_report or len(rows) == n_total:
                n_bad = sum(r["status"] != "ok" for r in rows)
                log(f"spectra: {len(rows)}/{n_total} files, {n_bad} quarantined, "
                    f"{n_bytes / 1e6:.1f} MB downloaded, "
                    f"{n_bytes / 1e6 / max(now - t0, 1e-9):.2f} MB/s")
                next_report = now + progress_every_s
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    return manifest.astype({"bytes": np.int64})


def download_chunk(allstar_path, split_paths, chunk: int, n_chunks: int, survey_root,
                   base_url: str, manifest_path, *, log: Callable = print, **kwargs) -> pd.DataFrame:
    """The download rules: the stars listed in any `split_paths` CSV (APOGEE_ID column), their
    rows as `chunk_targets` picks them, or every allStar row when `split_paths` is empty,
    whose `chunk_of` is `chunk` are downloaded; the manifest is written to `manifest_path`.
    `kwargs` go to `download_spectra`."""
    allstar = survey.read_row_ids(allstar_path)
    ids = [] if split_paths else list(allstar["APOGEE_ID"])
    for path in split_paths:
        table = pd.read_csv(path, dtype={"APOGEE_ID": str}, keep_default_na=False)
        if "APOGEE_ID" not in table:
            raise ValueError(f"{path}: split table has no APOGEE_ID column")
        ids.extend(table["APOGEE_ID"])
    stars = chunk_targets(allstar, ids, chunk, n_chunks, every_row=not split_paths)
    log(f"chunk {chunk}/{n_chunks}: {len(stars)} allStar rows of {len(set(ids))} stars, "
        f"{stars.groupby(['TELESCOPE', 'FIELD']).ngroups} fields, from {base_url}")
    manifest = download_spectra(stars, survey_root, base_url, log=log, **kwargs)
    with atomic_path(manifest_path) as tmp:
        manifest.to_csv(tmp, index=False)
    n_bad = int((manifest["status"] != "ok").sum())
    log(f"chunk {chunk}: {len(manifest) - n_bad} ok, {n_bad} quarantined")
    return manifest


def _field_checksums(base_url, root: Path, telescope, field, kind, fetch_kw):
    """{file: sha1} of one field, from the cached list or the SAS; ("", problem) on failure."""
    name = checksum_list_name(telescope, field, kind)
    local = survey.under_root(root, f"{telescope}/{field}/{name}")
    if not local.exists():
        # Chunk jobs sharing a field may fetch its list at once: each into its own file, then
        # an atomic rename (identical content, so the last one wins harmlessly).
        mine = local.with_name(f".{name}.{os.getpid()}")
        result = fetch(checksum_list_url(base_url, telescope, field, kind), mine, **fetch_kw)
        if result.status != "ok":
            return {}, f"checksum list {name} unavailable: {result.reason}"
        os.replace(mine, local)
    try:
        return parse_sha1sum(local.read_text()), ""
    except (ValueError, UnicodeDecodeError) as exc:
        local.unlink()  # a bad cached list must not poison the next run
        return {}, f"checksum list {local} is unreadable: {exc}"


@contextlib.contextmanager
def _striped_lock(lock_dir: Path, name: str, stripes: int = 256):
    """An exclusive lock shared by every file name hashing to the same of `stripes` lock files
    in `lock_dir`: download jobs of different datasets may want the same spectrum at once."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    stripe = int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big") % stripes
    with open(lock_dir / f"{stripe:03d}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _one_spectrum(row: dict, url: str, dest: Path, expected, fetch_kw, bad,
                  lock_dir: Path) -> dict:
    """Verify an existing file or fetch it, holding its lock; the manifest row (with `fetched`
    set)."""
    with _striped_lock(lock_dir, dest.name):
        return _verify_or_fetch(row, url, dest, expected, fetch_kw, bad)


def _verify_or_fetch(row: dict, url: str, dest: Path, expected, fetch_kw, bad) -> dict:
    if dest.exists():
        digest = file_sha1(dest)
        problem = (survey.fits_problem(dest) if expected is None
                   else "" if digest == expected else f"SHA-1 {digest} does not match {expected}")
        if not problem:
            return {**row, "status": "ok", "reason": "", "bytes": dest.stat().st_size,
                    "sha1": digest, "fetched": False}
        fetch_kw["log"](f"{dest}: {problem}; re-downloading")
        dest.unlink()
    result = fetch(url, dest, sha1=expected, fits=True, **fetch_kw)
    if result.status != "ok":
        return bad(row, result.reason)
    return {**row, "status": "ok", "reason": "", "bytes": result.bytes, "sha1": result.sha1,
            "fetched": True}
