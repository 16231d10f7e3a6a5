"""The mock survey on disk in the DR17 layout: allStar catalogue, one aspcapStar file per star
(noisy flux, error, noiseless model, allStar row), seismic.csv and truth.fits; written in one
call (`write_mock_survey`) or as the workflow does, the spectra in shards and then the
catalogues."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from ..sdss import apogee, survey
from .. import provenance
from . import LABELS
from .forward import batch_spectra, spectrum
from .population import CLUSTER, draw_labels

TRUTH_NAME = "truth.fits"
BAD_PIXEL_ERROR = 1.0e3
#: Bright OH airglow lines (vacuum Å, SA `airglow.vac.apogee`): sites of sky-line residuals.
AIRGLOW_LINES = (15187.14, 15240.95, 15287.79, 15332.40, 15395.33, 15474.21, 15500.86,
                 15539.71, 15570.16, 15597.63, 15631.44, 15654.95, 15702.54, 15972.60,
                 16030.83, 16079.75, 16128.61, 16194.62, 16235.79, 16270.32, 16302.28,
                 16350.65, 16388.49, 16414.74, 16475.65, 16502.37, 16553.81, 16609.99,
                 16692.38, 16708.65, 16724.04, 16733.67, 16840.48, 16903.68)

# (telescope, field, location id, RA°, Dec°, share of the field stars)
_FIELDS = (("apo25m", "K2_C5_121+36", 5251, 130.1, 17.6, 0.25),
           ("apo25m", "120+12", 4424, 8.2, 74.6, 0.20),
           ("apo25m", "060+00", 4151, 290.9, 24.2, 0.20),
           ("apo25m", "TESS_CVZ_N", 5702, 270.0, 66.6, 0.20),
           ("lco25m", "300-04", 6312, 187.4, -66.7, 0.15))
_CLUSTER_FIELD = ("apo25m", CLUSTER["name"], 4325, CLUSTER["ra"], CLUSTER["dec"])
#: catalogue label uncertainty at S/N = 100 (DR12-like, apogee-facts §1.4); scales as 100/S/N
_NOMINAL_ERR = {"teff": 40.0, "logg": 0.08, "C": 0.035, "C1": 0.06, "N": 0.067, "O": 0.026,
                "Na": 0.095, "Mg": 0.029, "Al": 0.063, "Si": 0.043, "P": 0.10, "S": 0.048,
                "K": 0.063, "Ca": 0.040, "Ti": 0.041, "Ti2": 0.08, "V": 0.20, "Cr": 0.05,
                "Mn": 0.048, "Fe": 0.035, "Co": 0.07, "Ni": 0.043}
_ALPHA_LABELS = ("O", "Mg", "Si", "S", "Ca", "Ti")
ASPCAPFLAG_BITS = {"SN_WARN": 11, "STAR_BAD": 23, "SN_BAD": 27}
STARFLAG_BITS = {"PERSIST_LOW": 11}


def _apogee_id(ra: float, dec: float) -> str:
    """2MASS-style designation 2MHHMMSSss±DDMMSSs of a position in degrees."""
    hours = ra / 15.0
    hh, rem = divmod(round(hours * 360000), 360000)
    mm, ss = divmod(rem, 6000)
    sign = "-" if dec < 0 else "+"
    dd, rem = divmod(round(abs(dec) * 36000), 36000)
    dm, ds = divmod(rem, 600)
    return f"2M{hh % 24:02d}{mm:02d}{ss:04d}{sign}{dd:02d}{dm:02d}{ds:03d}"


def _positions(rng, truth: pd.DataFrame) -> pd.DataFrame:
    """Telescope, field, location id, RA/Dec and a unique APOGEE_ID for every star."""
    n = len(truth)
    is_cluster = truth["is_cluster"].to_numpy()
    shares = np.array([f[5] for f in _FIELDS])
    pick = rng.choice(len(_FIELDS), size=n, p=shares / shares.sum())
    fields = [_CLUSTER_FIELD if c else _FIELDS[k][:5] for c, k in zip(is_cluster, pick)]
    radius_deg = np.where(is_cluster, 0.15, 1.5) * np.sqrt(rng.random(n))
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    dec = np.array([f[4] for f in fields]) + radius_deg * np.sin(angle)
    ra = (np.array([f[3] for f in fields])
          + radius_deg * np.cos(angle) / np.cos(np.radians(dec))) % 360.0
    ids, seen = [], set()
    for i in range(n):
        ident = _apogee_id(ra[i], dec[i])
        while ident in seen:   # nudge by 0.1" until unique
            dec[i] += 1.0 / 36000.0
            ident = _apogee_id(ra[i], dec[i])
        seen.add(ident)
        ids.append(ident)
    return pd.DataFrame({"APOGEE_ID": ids, "TELESCOPE": [f[0] for f in fields],
                         "FIELD": [f[1] for f in fields],
                         "LOCATION_ID": np.array([f[2] for f in fields], np.int32),
                         "RA": ra, "DEC": dec})


def _allstar_table(rng, truth: pd.DataFrame, meta: pd.DataFrame, persistence: np.ndarray,
                   missing_rate: float) -> pd.DataFrame:
    """DR17-named allStar columns: true labels ([X/Fe] except FE_H), errors ∝ 1/S/N, flags,
    and −9999 for a `missing_rate` of each label independently."""
    n = len(truth)
    snr = truth["snr"].to_numpy()
    aspcapflag = np.zeros(n, np.int64)
    aspcapflag |= np.where(snr < 70, 1 << ASPCAPFLAG_BITS["SN_WARN"], 0)
    aspcapflag |= np.where(snr < 50, (1 << ASPCAPFLAG_BITS["SN_BAD"])
                           | (1 << ASPCAPFLAG_BITS["STAR_BAD"]), 0)
    starflag = np.where(persistence, 1 << STARFLAG_BITS["PERSIST_LOW"], 0).astype(np.int64)
    binary = truth["anomaly"].eq("binary").to_numpy()
    vscatter = np.where(binary, rng.uniform(5.0, 20.0, n), rng.lognormal(np.log(0.15), 0.6, n))
    nvisits = rng.integers(1, 13, n).astype(np.int32)
    feh = truth["Fe"].to_numpy()
    alpha_m = truth[list(_ALPHA_LABELS)].to_numpy().mean(axis=1) - feh
    cols = {**meta, "SNR": snr.astype(np.float32), "STARFLAG": starflag,
            "ASPCAPFLAG": aspcapflag, "VSCATTER": vscatter.astype(np.float32),
            "NVISITS": nvisits,
            "M_H": feh.astype(np.float32), "M_H_ERR": (0.027 * 100 / snr).astype(np.float32),
            "ALPHA_M": alpha_m.astype(np.float32),
            "ALPHA_M_ERR": (0.013 * 100 / snr).astype(np.float32)}
    for label in LABELS:
        value = truth[label].to_numpy()
        if label not in ("teff", "logg", "Fe"):
            value = value - feh
        error = _NOMINAL_ERR[label] * 100.0 / snr
        missing = rng.random(n) < missing_rate
        column = apogee.allstar_column(label)
        cols[column] = np.where(missing, apogee.MAGIC_NUMBER, value).astype(np.float32)
        cols[column + "_ERR"] = np.where(missing, apogee.MAGIC_NUMBER, error).astype(np.float32)
    cols["MEMBER"] = np.where(truth["is_cluster"].to_numpy(), CLUSTER["name"], "")
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------- observed spectra

def _continuum_distortion(rng) -> np.ndarray:
    """A bad continuum (≤ 1): a tilt dropping 3–8% at one end and a 2–6% curvature."""
    x = np.linspace(-1.0, 1.0, apogee.N_PIX) * rng.choice([-1.0, 1.0])
    return 1.0 - rng.uniform(0.03, 0.08) * (1.0 + x) / 2.0 - rng.uniform(0.02, 0.06) * x ** 2


def _binary_companion(rng, theta: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A hotter, smaller companion: (labels, flux ratio, velocity shift in pixels)."""
    companion = theta.copy()
    companion[0] += rng.uniform(200.0, 500.0)
    companion[1] += rng.uniform(0.5, 1.5)
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(8.0, 15.0)   # 33–62 km/s
    return companion, rng.uniform(0.3, 0.6), shift


def _observe(rng, model: np.ndarray, snr: float, persistence: bool, sky_prob: float):
    """Noisy flux and error on the 8575 grid from a noiseless flux: σ = 1/S/N inside the chips,
    0 in the gaps; persistence and sky-line residual pixels get a perturbed flux and an error
    of BAD_PIXEL_ERROR. Returns (flux, error, number of bad pixels)."""
    inside = np.zeros(apogee.N_PIX, bool)
    inside[apogee.KEPT_PIXELS] = True
    error = np.where(inside, 1.0 / snr, 0.0)
    flux = np.where(inside, model + rng.normal(0.0, 1.0, apogee.N_PIX) / snr, 0.0)
    bad = np.zeros(apogee.N_PIX, bool)
    if persistence:
        blue_start, blue_stop = apogee.CHIPS["blue"]
        start = rng.integers(blue_start, blue_stop - 1000)
        stop = start + rng.integers(200, 1000)
        ramp = np.linspace(0.0, 1.0, stop - start)
        flux[start:stop] += rng.uniform(0.05, 0.2) * np.sin(np.pi * ramp)
        bad[start:stop] = True
    for line in AIRGLOW_LINES:
        if rng.random() < sky_prob:
            centre = int(round(float(apogee.pixel_of_wavelength(line))))
            span = slice(centre - 2, centre + 3)
            flux[span] += rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.4)
            bad[span] = True
    bad &= inside
    error[bad] = BAD_PIXEL_ERROR
    flux[~inside] = 0.0
    return flux.astype(np.float32), error.astype(np.float32), int(bad.sum())


@dataclass(frozen=True)
class MockPopulation:
    """Everything about a mock survey's stars but their spectra: labels (`truth`), positions and
    IDs (`meta`), persistence, the allStar table, and the generator state that the seismic
    catalogue continues from. Deterministic in its arguments, so that each job of a sharded
    generation draws the same population."""
    truth: pd.DataFrame
    meta: pd.DataFrame
    persistence: np.ndarray
    allstar: pd.DataFrame
    rng: np.random.Generator
    seed: int
    bad_pixel_fraction: float
    seismic_fraction: float


def mock_population(*, n_field: int, n_cluster: int, seed: int, n_anomalies: int = 8,
                    missing_rate: float = 0.02, seismic_fraction: float = 0.7,
                    bad_pixel_fraction: float = 0.1) -> MockPopulation:
    """The stars of a mock survey (see `write_mock_survey` for the arguments)."""
    for name, value in (("missing_rate", missing_rate), ("seismic_fraction", seismic_fraction),
                        ("bad_pixel_fraction", bad_pixel_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"write_mock_survey: {name} must lie in [0, 1], got {value!r}")
    truth = draw_labels(n_field, n_cluster, seed, n_anomalies)
    rng = np.random.default_rng([int(seed), 2])
    meta = _positions(rng, truth)
    persistence = rng.random(len(truth)) < bad_pixel_fraction
    allstar = _allstar_table(rng, truth, meta, persistence, missing_rate)
    return MockPopulation(truth, meta, persistence, allstar, rng, int(seed), bad_pixel_fraction,
                          seismic_fraction)


def write_mock_spectra(root, population: MockPopulation, *, shard: int = 0, n_shards: int = 1,
                       config_digest: str | None = None, batch_size: int = 128,
                       log=print) -> pd.DataFrame:
    """Write the aspcapStar files of the stars of one shard (row i of the allStar table is in
    shard i mod `n_shards`; each star's noise comes from the seed and its row alone, so the
    files do not depend on the sharding). Returns the shard's manifest: APOGEE_ID and path
    (relative to `root`) of every file written."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"write_mock_spectra: shard must lie in [0, {n_shards}), got {shard}")
    root = Path(root)
    truth, meta, anomaly = population.truth, population.meta, population.truth["anomaly"]
    cards = provenance.header_cards(config_digest, seed=population.seed)
    rows = survey.to_records(population.allstar)
    thetas = truth[list(LABELS)].to_numpy(float)
    mine = np.arange(shard, len(truth), n_shards)
    paths, n_bad = [], 0
    log(f"mock survey: shard {shard}/{n_shards}, {len(mine)} of {len(truth)} stars -> {root}")
    for start in range(0, len(mine), batch_size):
        batch = mine[start:start + batch_size]
        models = batch_spectra(thetas[batch], batch_size=batch_size)
        for model, i in zip(models, batch):
            star_rng = np.random.default_rng([population.seed, 3, int(i)])
            clean = model
            if anomaly.iat[i] == "continuum":
                clean = model * _continuum_distortion(star_rng)
            elif anomaly.iat[i] == "binary":
                companion, ratio, shift = _binary_companion(star_rng, thetas[i])
                second = np.asarray(spectrum(companion.astype(np.float32), np.float32(shift)))
                clean = (model + ratio * second) / (1.0 + ratio)
            flux, error, bad = _observe(star_rng, clean, truth["snr"].iat[i],
                                        population.persistence[i], population.bad_pixel_fraction)
            n_bad += bad > 0
            relpath = survey.aspcapstar_relpath(meta["TELESCOPE"].iat[i], meta["FIELD"].iat[i],
                                                meta["APOGEE_ID"].iat[i])
            survey.write_aspcapstar(root / relpath, flux, error, model=model,
                                    header={**cards, "OBJID": meta["APOGEE_ID"].iat[i]},
                                    row=rows[i:i + 1])
            paths.append(str(relpath))
            if len(paths) % 500 == 0 or len(paths) == len(mine):
                log(f"mock survey: {len(paths)}/{len(mine)} aspcapStar files written")
    log(f"mock survey: shard {shard}: {n_bad} stars with bad pixels")
    return pd.DataFrame({"APOGEE_ID": meta["APOGEE_ID"].to_numpy()[mine], "path": paths})


def write_mock_shard(root, manifest_path, *, shard: int, n_shards: int,
                     config_digest: str | None = None, log=print, **settings) -> None:
    """The workflow's mock_spectra job: the spectra of one shard (`write_mock_spectra`) of the
    survey `settings` describe (`mock_population`), then the shard's manifest CSV, written
    last so that it exists only once every file it lists does."""
    population = mock_population(**settings)
    manifest = write_mock_spectra(root, population, shard=shard, n_shards=n_shards,
                                  config_digest=config_digest, log=log)
    with provenance.atomic_path(manifest_path) as tmp:
        manifest.to_csv(tmp, index=False)


def write_mock_catalogues(root, population: MockPopulation, *,
                          config_digest: str | None = None, log=print) -> None:
    """seismic.csv, truth.fits and the allStar catalogue of a mock survey, the allStar last:
    written once every shard's spectra are, a complete allStar implies every spectrum it lists
    exists."""
    root = Path(root)
    cards = provenance.header_cards(config_digest, seed=population.seed)
    ids, truth = population.meta["APOGEE_ID"], population.truth
    # a copy: the population's generator state stays as drawn, so this can run again
    _write_seismic(root / survey.SEISMIC_NAME, copy.deepcopy(population.rng), ids, truth,
                   population.seismic_fraction)
    _write_truth(root / TRUTH_NAME, ids, truth, cards)
    survey.write_allstar(root / survey.ALLSTAR_NAME, population.allstar, header=cards)
    log(f"mock survey: {len(truth)} stars ({int((~truth['is_cluster']).sum())} field, "
        f"{int(truth['is_cluster'].sum())} cluster), {int(population.persistence.sum())} with "
        f"persistence, {int((truth['anomaly'] != '').sum())} anomalies")


def write_mock_survey(root, *, n_field: int, n_cluster: int, seed: int, n_anomalies: int = 8,
                      missing_rate: float = 0.02, seismic_fraction: float = 0.7,
                      bad_pixel_fraction: float = 0.1, config_digest: str | None = None,
                      batch_size: int = 128, log=print) -> None:
    """Write a deterministic mock survey under `root` in the DR17 layout, in one job: the
    allStar catalogue, one aspcapStar per star (HDU1 noisy flux, HDU2 error, HDU3 noiseless
    model without anomalies, HDU4 the star's allStar row), seismic.csv for a
    `seismic_fraction` of field stars, and truth.fits. `bad_pixel_fraction` is the probability
    that a star has a persistence stretch on the blue chip, and that each airglow line leaves a
    residual. The workflow writes the same files in shards (`write_mock_spectra`, then
    `write_mock_catalogues`)."""
    population = mock_population(n_field=n_field, n_cluster=n_cluster, seed=seed,
                                 n_anomalies=n_anomalies, missing_rate=missing_rate,
                                 seismic_fraction=seismic_fraction,
                                 bad_pixel_fraction=bad_pixel_fraction)
    write_mock_spectra(root, population, config_digest=config_digest, batch_size=batch_size,
                       log=log)
    write_mock_catalogues(root, population, config_digest=config_digest, log=log)


def _write_truth(path, ids, truth: pd.DataFrame, cards: dict) -> None:
    table = truth.copy()
    table.insert(0, "APOGEE_ID", ids.to_numpy())
    with provenance.atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
            fits.write(None, header=cards)
            fits.write(survey.to_records(table), extname="TRUTH")


def read_truth(path) -> pd.DataFrame:
    """The TRUTH table of a mock survey (`truth.fits` or the survey root holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_NAME
    return survey.read_table(path, "TRUTH", what="TRUTH table")


def _write_seismic(path, rng, ids, truth: pd.DataFrame, fraction: float) -> None:
    """seismic.csv for a `fraction` of the field stars (EVSTATE 1 RGB, 2 RC)."""
    field = np.flatnonzero(~truth["is_cluster"].to_numpy())
    chosen = np.sort(rng.choice(field, size=int(round(fraction * len(field))), replace=False))
    table = pd.DataFrame({"APOGEE_ID": ids.to_numpy()[chosen],
                          "DNU": truth["dnu"].to_numpy()[chosen].round(5),
                          "NUMAX": truth["numax"].to_numpy()[chosen].round(4),
                          "DPI1": truth["dpi1"].to_numpy()[chosen].round(3),
                          "EVSTATE": truth["evstate"].to_numpy()[chosen] + 1})
    with provenance.atomic_path(path) as tmp:
        table[list(survey.SEISMIC_COLUMNS)].to_csv(tmp, index=False)
