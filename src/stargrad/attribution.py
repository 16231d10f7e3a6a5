"""Gradient attribution: exact per-star Jacobians d value / d flux of any differentiable Model,
their mean over stars, physical units, the strongest wavelengths matched to the H-band line
list, the share of |J| inside each element's ASPCAP DR17 windows, similarity between models
and to the mock's efficient-estimator weights, and the `jacobian.fits` file.

Shapes: x is (N, P) normalized flux with P = 7514 (gap-removed grid); a model has K outputs;
per-star Jacobians are (N, K, P) and mean Jacobians (K, P). Wavelengths are vacuum Å.

Reverse vs forward mode. With K ≤ 22 outputs and P = 7514 inputs, `jax.jacrev` needs K
vector-Jacobian products per star and `jax.jacfwd` P Jacobian-vector products, so reverse mode
is the default. Measured with float32 random inputs on a busy 2-core CPU (load ~6), compiled:
    MLP 7514-256-128-22 (ReLU), 64 stars, chunk 32:       rev 0.36 s, fwd 4.3 s   (12x)
    conv net (conv1d 8 and 16 channels, kernel 8, max-pool 4, dense 64, 22 out):
        rev 0.04-0.07 s per star; fwd 74 s per star (chunk 1: its P tangents carry
        7514 copies of every activation, ~4 GB per star)                      (>1000x)
"""
from __future__ import annotations

from functools import lru_cache

import fitsio
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import apogee
from .provenance import atomic_path
from .tasks import unit

P = apogee.N_PIX_GAPLESS
#: Default half-width (km/s) for matching a feature to a line: one resolution element
#: (13.3 km/s FWHM at R = 22,500) plus a little for the pixel quantisation (4.14 km/s).
MAX_KMS = 15.0
#: Value of the chip gaps on the 8575 grid: NaN, so that gaps read as "no data" (plots break
#: the curve there, sums need nansum) rather than as a zero gradient.
GAP_FILL = np.nan


# ---------------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _chunk_fn(model, mode: str):
    """Jitted per-chunk Jacobians (C, K, P) for one model and AD mode.

    `keys` is None (deterministic) or a (S,) array of PRNG keys; star i under draw s uses
    fold_in(keys[s], i) with i its global index, so results do not depend on chunking.
    The parameters stay an argument: closing over them (XLA constants) measured 2x faster
    with freshly initialised weights but 2x slower with trained ones."""
    jac = jax.jacrev if mode == "rev" else jax.jacfwd

    def chunk(params, xc, index, keys):
        def value(x, key):
            return model.apply(params, x[None, :], key=key, train=False)["value"][0]

        if keys is None:
            return jax.vmap(lambda x: jac(value)(x, None))(xc)

        def star(x, i):
            draws = jax.vmap(lambda k: jac(value)(x, jax.random.fold_in(k, i)))(keys)
            return jnp.mean(draws, axis=0)

        return jax.vmap(star)(xc, index)

    return jax.jit(chunk)


@jax.jit
def _masked_sums(j, n_valid):
    """Sums over the first n_valid stars of J and |J| (the rest of a chunk is padding).

    A loop over stars: XLA's CPU reduce over the leading axis of (C, K, P) measured ~50x
    slower (40 ms for C = 32), more than a third of the Jacobian time."""
    def add(i, sums):
        ji = jnp.where(i < n_valid, j[i], 0.0)
        return sums[0] + ji, sums[1] + jnp.abs(ji)

    zeros = jnp.zeros(j.shape[1:], j.dtype)
    return jax.lax.fori_loop(0, j.shape[0], add, (zeros, zeros))


def _prepare(model, params, x, chunk_size, key, mc_samples, mode):
    """Validate arguments; return (x float32, chunk size, keys or None, K)."""
    if mode not in ("rev", "fwd"):
        raise ValueError(f"jacobian: mode must be 'rev' or 'fwd', got {mode!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"jacobian: chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) \
            or mc_samples < 0:
        raise ValueError(f"jacobian: mc_samples must be an integer >= 0, got {mc_samples!r}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"jacobian: x must be (N, P) normalized flux with N >= 1, "
                         f"got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"jacobian: x has {np.count_nonzero(~np.isfinite(x))} non-finite "
                         f"values; mask or fill bad pixels before attribution")
    if mc_samples > 0 and key is None:
        raise ValueError("jacobian: mc_samples > 0 needs a PRNG key (jax.random.key(seed))")
    if key is not None and not (isinstance(key, jax.Array) and (
            jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            or (key.shape == (2,) and key.dtype == jnp.uint32))):
        raise TypeError(f"jacobian: key must be a JAX PRNG key (jax.random.key(seed)), "
                        f"got {type(key).__name__}")
    try:
        out = jax.eval_shape(lambda p, xx: model.apply(p, xx, key=None, train=False),
                             params, x[:1])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"jacobian: model.apply fails on x of shape {x.shape}: {exc}") from exc
    value = out.get("value") if isinstance(out, dict) else None
    if value is None or len(value.shape) != 2 or value.shape[0] != 1:
        raise ValueError("jacobian: model.apply must return a dict with 'value' of shape (B, K)")
    keys = None
    if key is not None and model.stochastic:
        keys = jax.random.split(key, mc_samples) if mc_samples > 0 else key[None]
    return x, min(int(chunk_size), x.shape[0]), keys, int(value.shape[1])


def _chunks(x, size):
    """Yield (padded chunk, global indices, n_valid); the last chunk is zero-padded to `size`
    so that every chunk has the same shape and the jitted function compiles once."""
    for start in range(0, x.shape[0], size):
        xc = x[start:start + size]
        n = xc.shape[0]
        if n < size:
            xc = np.concatenate([xc, np.zeros((size - n, x.shape[1]), x.dtype)])
        yield xc, np.arange(start, start + size, dtype=np.int32), n


def jacobian(model, params, x, *, chunk_size: int = 64, key=None, mc_samples: int = 0,
             mode: str = "rev") -> np.ndarray:
    """Per-star Jacobians d value / d x, shape (N, K, P), in normalized label (class-1
    probability for classifiers) per normalized flux.

    Stars are processed `chunk_size` at a time (vmapped), so device memory is about
    chunk_size × max(mc_samples, 1) × K × P floats plus the model's activations, whatever N.
    Deterministic models ignore `key` and `mc_samples`. Stochastic (MC-dropout) models:
    key=None → dropout off; a key with mc_samples=0 → one dropout draw per star; a key with
    mc_samples=S → the mean Jacobian over S draws, which equals the mean of the single-draw
    Jacobians over the keys jax.random.split(key, S). mode: "rev" (jacrev, default; far faster
    for K ≪ P, see the module docstring) or "fwd" (jacfwd)."""
    x, size, keys, k = _prepare(model, params, x, chunk_size, key, mc_samples, mode)
    chunk_fn = _chunk_fn(model, mode)
    out = np.empty((x.shape[0], k, x.shape[1]), dtype=np.float32)
    for xc, index, n in _chunks(x, size):
        out[index[0]:index[0] + n] = np.asarray(chunk_fn(params, xc, index, keys))[:n]
    return out


def mean_jacobian(model, params, x, *, chunk_size: int = 64, key=None, mc_samples: int = 0,
                  mode: str = "rev") -> tuple[np.ndarray, np.ndarray]:
    """(mean over stars of J, mean over stars of |J|), each (K, P) float64, accumulated chunk by
    chunk without holding (N, K, P). Arguments as `jacobian`; with MC draws |J| is taken of each
    star's draw-averaged Jacobian."""
    x, size, keys, k = _prepare(model, params, x, chunk_size, key, mc_samples, mode)
    chunk_fn = _chunk_fn(model, mode)
    total = np.zeros((k, x.shape[1]))
    total_abs = np.zeros((k, x.shape[1]))
    for xc, index, n in _chunks(x, size):
        s, s_abs = _masked_sums(chunk_fn(params, xc, index, keys), n)
        total += np.asarray(s, dtype=np.float64)
        total_abs += np.asarray(s_abs, dtype=np.float64)
    return total / x.shape[0], total_abs / x.shape[0]


# ---------------------------------------------------------------------------------------------
# Units and grids
# ---------------------------------------------------------------------------------------------

def _as_7514(array, name: str) -> np.ndarray:
    """Float array on the 7514 grid along the last axis (8575 input is gap-deleted)."""
    array = np.asarray(array, dtype=float)
    if array.ndim == 0 or array.shape[-1] not in (P, apogee.N_PIX):
        raise ValueError(f"{name}: last axis must have {P} (or {apogee.N_PIX}) pixels, "
                         f"got shape {array.shape}")
    return apogee.gap_delete(array)


def to_physical(jac_norm, input_std, label_std) -> np.ndarray:
    """d label / d flux in label units (K, dex, μHz, ...) per unit of continuum-normalized flux.

    jac_norm (..., K, P) is d normalized label / d normalized flux; label_std (K,) the label
    normalization scale; input_std (P,) or a scalar, the per-pixel flux scale (1 for
    mean-only or no input normalization)."""
    jac = np.asarray(jac_norm, dtype=float)
    label_std = np.asarray(label_std, dtype=float)
    input_std = np.asarray(input_std, dtype=float)
    if jac.ndim < 2:
        raise ValueError(f"to_physical: jac_norm must be (..., K, P), got shape {jac.shape}")
    k, p = jac.shape[-2:]
    if label_std.shape != (k,):
        raise ValueError(f"to_physical: label_std must have shape ({k},), got {label_std.shape}")
    if input_std.shape not in ((), (p,)):
        raise ValueError(f"to_physical: input_std must be a scalar or ({p},), "
                         f"got {input_std.shape}")
    for name, std in (("label_std", label_std), ("input_std", input_std)):
        if not np.all(np.isfinite(std) & (std > 0)):
            raise ValueError(f"to_physical: {name} must be finite and > 0")
    return jac * label_std[:, None] / input_std


def to_full_grid(jac) -> np.ndarray:
    """Put (..., 7514) Jacobians on the 8575 apStar grid; gap pixels are NaN (`GAP_FILL`)."""
    jac = np.asarray(jac, dtype=float)
    if jac.ndim == 0 or jac.shape[-1] != P:
        raise ValueError(f"to_full_grid: last axis must have {P} pixels, got shape {jac.shape}")
    return apogee.gap_insert(jac, fill=GAP_FILL)


# ---------------------------------------------------------------------------------------------
# Top features and line matching
# ---------------------------------------------------------------------------------------------

def top_features(mean_jac_k, n: int = 10, min_separation_px: int = 4) -> pd.DataFrame:
    """The n largest peaks of |J| for one label, at least `min_separation_px` apStar pixels
    apart (greedy, strongest first; pixels with J = 0 are never features).

    Columns: rank, pixel_7514, pixel_8575, wavelength_vac (Å), chip, sign (±1), jacobian."""
    j = _as_7514(mean_jac_k, "top_features: mean_jac_k")
    if j.ndim != 1:
        raise ValueError(f"top_features: mean_jac_k must be one label's (P,) Jacobian, "
                         f"got shape {j.shape}")
    if not np.all(np.isfinite(j)):
        raise ValueError("top_features: mean_jac_k has non-finite values")
    full = apogee.KEPT_PIXELS
    chosen: list[int] = []
    for p in np.argsort(-np.abs(j), kind="stable"):
        if len(chosen) == n or j[p] == 0:
            break
        if all(abs(int(full[p]) - int(full[q])) >= min_separation_px for q in chosen):
            chosen.append(int(p))
    pix = np.array(chosen, dtype=int)
    return pd.DataFrame({
        "rank": np.arange(1, len(pix) + 1),
        "pixel_7514": pix,
        "pixel_8575": full[pix],
        "wavelength_vac": apogee.wavelength(P)[pix],
        "chip": apogee.chip_of_pixel(pix).astype(str),
        "sign": np.sign(j[pix]).astype(int),
        "jacobian": j[pix],
    })


def match_lines(features: pd.DataFrame, lines: pd.DataFrame | None = None,
                max_kms: float = MAX_KMS, n_lines: int = 3) -> pd.DataFrame:
    """Add the up-to-`n_lines` nearest lines within `max_kms` of each feature's wavelength.

    New columns species_i, lambda_i (vacuum Å), dv_kms_i = c·(λ_line − λ_feature)/λ_feature,
    for i = 1..n_lines, nearest first; empty where fewer lines are close enough. The default
    list (`apogee.load_lines`) holds stellar atomic and molecular lines only: arc-lamp lines
    (Th, Ar, U, Ne) are wavelength calibration, not absorption in the star."""
    lines = apogee.load_lines() if lines is None else lines
    missing = {"species", "vac"} - set(lines.columns)
    if missing:
        raise ValueError(f"match_lines: lines table lacks columns {sorted(missing)}")
    if "wavelength_vac" not in features.columns:
        raise ValueError("match_lines: features need a 'wavelength_vac' column (top_features)")
    lines = lines.drop_duplicates(subset=["species", "vac"])
    species = lines["species"].astype(str).to_numpy()
    vac = lines["vac"].to_numpy(dtype=float)
    out = features.copy()
    cols = {f"{name}_{i}": [] for i in range(1, n_lines + 1)
            for name in ("species", "lambda", "dv_kms")}
    for wl in features["wavelength_vac"].to_numpy(dtype=float):
        dv = apogee.velocity_offset_kms(vac, wl)
        near = [i for i in np.argsort(np.abs(dv), kind="stable")[:n_lines]
                if abs(dv[i]) <= max_kms]
        for rank in range(n_lines):
            hit = near[rank] if rank < len(near) else None
            cols[f"species_{rank + 1}"].append(species[hit] if hit is not None else None)
            cols[f"lambda_{rank + 1}"].append(vac[hit] if hit is not None else np.nan)
            cols[f"dv_kms_{rank + 1}"].append(dv[hit] if hit is not None else np.nan)
    for name, values in cols.items():
        out[name] = pd.Series(values, index=out.index,
                              dtype="str" if name.startswith("species") else float)
    return out


def lines_table(mean_jac, labels, n: int = 10, min_separation_px: int = 4,
                max_kms: float = MAX_KMS, lines: pd.DataFrame | None = None) -> pd.DataFrame:
    """Top features of every label matched to lines: one row per (label, rank)."""
    mean_jac = _as_7514(mean_jac, "lines_table: mean_jac")
    labels = _check_labels(labels, mean_jac, "lines_table")
    frames = []
    for label, row in zip(labels, mean_jac):
        table = match_lines(top_features(row, n, min_separation_px), lines, max_kms)
        table.insert(0, "label", label)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def _check_labels(labels, jac, where: str) -> list[str]:
    labels = [str(label) for label in labels]
    if jac.ndim != 2 or jac.shape[0] != len(labels):
        raise ValueError(f"{where}: expected a (K={len(labels)}, P) array for labels {labels}, "
                         f"got shape {jac.shape}")
    return labels


# ---------------------------------------------------------------------------------------------
# Element windows
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _window_matrix() -> tuple[tuple[str, ...], np.ndarray]:
    """(elements, (E, P) bool) masks of the active ASPCAP DR17 windows on the 7514 grid."""
    elements = tuple(apogee.window_elements())
    return elements, np.array([apogee.window_mask(e) for e in elements])


def own_element(label: str) -> str | None:
    """The ASPCAP window element of a label ('Mg' -> 'Mg', 'C1' -> 'CI'), None for labels
    without windows (teff, logg, seismic labels)."""
    element = apogee.window_element(label)
    return element if element in _window_matrix()[0] else None


def window_shares(mean_abs_jac, labels, exclusive: bool = False) -> pd.DataFrame:
    """Share of Σ_p |J| inside each element's active ASPCAP DR17 windows, per label.

    Columns: label, own_element, share_own (share in the label's own element's windows, NaN
    for labels without windows), one column per window element, and `none` (pixels outside
    every window). Windows overlap heavily (C, N, O and Fe cover most of the spectrum), so by
    default a pixel counts fully for every element whose windows contain it and the element
    columns plus `none` need not sum to 1. exclusive=True splits each overlapping pixel's |J|
    equally among its elements, so that they sum to 1 (share_own is then exclusive too). The
    `Fe` column is the share in the Fe windows. |J| is taken of the input; pass the
    mean |J| over stars so that gradients of opposite sign in different stars still count."""
    weight = np.abs(_as_7514(mean_abs_jac, "window_shares: mean_abs_jac"))
    labels = _check_labels(labels, weight, "window_shares")
    elements, masks = _window_matrix()
    cover = masks.sum(axis=0)
    per_element = masks / np.maximum(cover, 1) if exclusive else masks.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = (weight @ per_element.T) / weight.sum(axis=1, keepdims=True)
        none = weight[:, cover == 0].sum(axis=1) / weight.sum(axis=1)
    table = pd.DataFrame(shares, columns=list(elements))
    table.insert(0, "label", labels)
    owns = [own_element(label) for label in labels]
    table.insert(1, "own_element", pd.Series(owns, dtype="str"))
    table.insert(2, "share_own", [table.at[i, e] if e else np.nan for i, e in enumerate(owns)])
    table["none"] = none
    return table


# ---------------------------------------------------------------------------------------------
# Similarity
# ---------------------------------------------------------------------------------------------

def cosine_similarity(a, b) -> np.ndarray:
    """Cosine similarity along the last (pixel) axis; NaN where either vector is all zero."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"cosine_similarity: shapes differ: {a.shape} vs {b.shape}")
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, np.sum(a * b, axis=-1) / norm, np.nan)


def fidelity(mean_jac_physical, efficient_weights, labels=apogee.ASPCAP_LABELS,
             weight_labels=apogee.ASPCAP_LABELS) -> pd.DataFrame:
    """Per label, the cosine similarity between a model's mean physical Jacobian (K, P) for
    `labels` and the mock's efficient-estimator weights (len(weight_labels), P), matched by
    label name (NaN for labels the weights lack). Columns: label, fidelity."""
    jac = _as_7514(mean_jac_physical, "fidelity: mean_jac_physical")
    weights = _as_7514(efficient_weights, "fidelity: efficient_weights")
    labels = _check_labels(labels, jac, "fidelity")
    weight_labels = _check_labels(weight_labels, weights, "fidelity (efficient_weights)")
    row = {name: i for i, name in enumerate(weight_labels)}
    values = [cosine_similarity(j, weights[row[label]]) if label in row else np.nan
              for label, j in zip(labels, jac)]
    return pd.DataFrame({"label": labels, "fidelity": np.asarray(values, dtype=float)})


def similarity_matrix(jacs_by_model: dict, labels) -> pd.DataFrame:
    """Cosine similarity of every pair of models' mean Jacobians ((K, P) each, same labels),
    long format: label, model_a, model_b, cosine (diagonal included). One label's matrix:
    table[table.label == l].pivot(index="model_a", columns="model_b", values="cosine")."""
    if not jacs_by_model:
        raise ValueError("similarity_matrix: jacs_by_model is empty")
    jacs = {name: _as_7514(j, f"similarity_matrix: model {name!r}")
            for name, j in jacs_by_model.items()}
    for name, j in jacs.items():
        _check_labels(labels, j, f"similarity_matrix: model {name!r}")
    labels = [str(label) for label in labels]
    rows = [{"label": label, "model_a": a, "model_b": b,
             "cosine": float(cosine_similarity(jacs[a][k], jacs[b][k]))}
            for k, label in enumerate(labels) for a in jacs for b in jacs]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# jacobian.fits
# ---------------------------------------------------------------------------------------------

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
    mean = _as_7514(mean_jac_7514, "write_jacobian_fits: mean_jac_7514")
    mean_abs = _as_7514(mean_abs_jac_7514, "write_jacobian_fits: mean_abs_jac_7514")
    labels = _check_labels(labels, mean, "write_jacobian_fits")
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
