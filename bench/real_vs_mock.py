"""The mock held against reality, as a number (issue 22, part 3): the mock's true forward model
fitted with all 22 labels free to the two real DR17 apStar spectra in tests/data/real_dr17
(row 0, continuum-normalized as compile reads apStar), by the oracle's fit and the shared χ²
solver (`stargrad.mock.real_vs_mock`). Prints per star the best fit's reduced χ² with the raw
errors and with a 0.01 error floor, the fitted labels, the χ² shares by pixel class (mock
molecular / atomic / Brackett lines, the mock's continuum), the large-scale residual share, the
residual autocorrelation width against the LSF's, and the strongest residual features named from
the line list; writes the residual figure of each star (`--figures DIR`) and `--json PATH`.

    PYTHONPATH=src .venv/bin/python bench/real_vs_mock.py [--figures results/real_vs_mock]
        [--json out.json] [--n-iter 30] [--stars giant dwarf]

Starts: the mock population's mean and best prototype, the mock's typical giant (4500 K,
log g 2.5, solar), and Doppler's estimate (from the files' HDU 10, README of real_dr17).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from stargrad.mock import real_vs_mock
from stargrad.mock import LABELS

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_dr17"
#: name: (file, Doppler's Teff K, log g, [Fe/H]) from real_dr17/README.md.
STARS = {"giant": ("apStar-dr17-2M17335483-2753043.fits", 3768.0, 0.32, -0.61),
         "dwarf": ("apStar-dr17-2M19485057+5005279.fits", 5134.0, 5.0, -0.31)}
TYPICAL_GIANT = (4500.0, 2.5, 0.0)


def run_star(name: str, box, figures: Path | None, n_iter: int, same_continuum: bool) -> dict:
    filename, teff, logg, feh = STARS[name]
    flux, error, mask = real_vs_mock.read_real(REAL / filename)
    starts = np.stack([real_vs_mock.label_vector(*TYPICAL_GIANT),
                       real_vs_mock.label_vector(teff, logg, feh)])
    cpu0 = time.process_time()
    fits = real_vs_mock.fit_real(flux, error, mask, box, starts=starts, n_iter=n_iter,
                                 same_continuum=same_continuum)
    cpu = time.process_time() - cpu0
    result = {"file": filename, "doppler": [teff, logg, feh], "n_masked": int(mask.sum()),
              "fit_cpu_s": cpu}
    for kind, fit in fits.items():
        diag = real_vs_mock.diagnose(flux, mask, fit)
        result[kind] = dict(reduced_chi2=fit["reduced_chi2"], dof=fit["dof"],
                            converged=fit["converged"],
                            labels=dict(zip(LABELS, map(float, fit["labels"]))),
                            top_pixel_share=diag["top_pixel_share"],
                            large_scale_share=diag["large_scale_share"],
                            acf_hwhm_px=diag["acf_hwhm_px"],
                            lsf_acf_hwhm_px=diag["lsf_acf_hwhm_px"], classes=diag["classes"],
                            features=diag["features"].to_dict("records"))
        if figures is not None and kind == "floor":
            real_vs_mock.residual_figure(
                figures / f"{name}.png",
                f"{name} {filename}: mock forward model, best fit (σ floor "
                f"{real_vs_mock.ERROR_FLOOR}), reduced χ² {fit['reduced_chi2']:.1f}",
                flux, mask, fit, diag["features"])
    return result


def print_star(name: str, result: dict) -> None:
    print(f"\n== {name}: {result['file']} ({result['n_masked']} masked px; Doppler "
          f"{result['doppler']}; both fits {result['fit_cpu_s']:.0f} CPU s)")
    for kind in ("raw", "floor"):
        r = result[kind]
        labels = r["labels"]
        print(f"{kind:5s} errors: reduced χ² {r['reduced_chi2']:8.1f} (dof {r['dof']}, "
              f"converged {r['converged']}); worst 1 % of pixels carry "
              f"{100 * r['top_pixel_share']:.0f} % of χ²; Teff {labels['teff']:.0f} K, "
              f"log g {labels['logg']:.2f}, [Fe/H] {labels['Fe']:.2f}")
    r = result["floor"]
    print("labels (floor fit): " + ", ".join(f"{k} {v:.2f}" for k, v in r["labels"].items()))
    print(f"{'class':10s} {'pixels':>7s} {'χ² share':>9s} {'χ²/px':>8s} {'mean resid':>11s}")
    for cls, c in r["classes"].items():
        print(f"{cls:10s} {c['n_pixels']:7d} {100 * c['chi2_share']:8.1f}% "
              f"{c['chi2_per_pixel']:8.1f} {c['mean_residual']:11.4f}")
    print(f"large-scale (>{real_vs_mock.CONTINUUM_SCALE_PX} px) share of χ²: "
          f"{100 * r['large_scale_share']:.0f} %; residual ACF HWHM {r['acf_hwhm_px']:.2f} px "
          f"vs {r['lsf_acf_hwhm_px']:.2f} px for a feature of the LSF's width")
    print("strongest residual features (σ units, LSF-smoothed):")
    for f in r["features"]:
        print(f"  {f['wavelength']:9.2f} Å  {f['residual']:7.1f}  {f['line']}"
              + (f" {f['line_vac']:.2f}" if f["line"] != "unlisted" else "")
              + (f" (also {f['also']})" if f["also"] else ""))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", nargs="+", choices=list(STARS), default=list(STARS))
    parser.add_argument("--figures", type=Path, default=Path("results/real_vs_mock"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--n-iter", type=int, default=30)
    parser.add_argument("--true-continuum", action="store_true",
                        help="compare the mock at its true continuum (not renormalized as the "
                             "data were): the comparison before 2026-12-05")
    args = parser.parse_args(argv)
    box = real_vs_mock.mock_box()
    results = {name: run_star(name, box, args.figures, args.n_iter, not args.true_continuum)
               for name in args.stars}
    for name, result in results.items():
        print_star(name, result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
