"""Line lists in Turbospectrum's format (the format of the APOGEE DR17 line list, Smith et al.
2021, AJ 161, 254), and the bundled molecular subset the mock draws its CN, OH and CO from.

A Turbospectrum list is a sequence of species blocks. Each block opens with two quoted header
lines, the species code and its line count, then a comment::

    '0607.012014 '            1      5591
    'Sneden web '
     15000.983  2.490  -5.316  0.00   48.0  1.00e+00  0.000  'x' 'x'  0.0  1.0

and one line per transition: air wavelength (Å), lower-level excitation χ (eV), log gf, then
broadening and level data not used here. A molecular code is the two atomic numbers and the
isotopes' mass numbers: 0607.012014 is ¹²C¹⁴N, 0108.001016 ¹H¹⁶O.

    python -m stargrad.sdss.turbospectrum turbospec.20180901t20.molec \\
        src/stargrad/data/apogee_dr17_molecular_lines.csv

writes the bundled table from the DR17 molecular list.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

#: Turbospectrum species code -> name, for the molecules the mock uses.
MOLECULES = {"0607.012014": "12C14N", "0607.013014": "13C14N", "0108.001016": "16OH",
             "0608.012016": "12C16O", "0608.013016": "13C16O"}
#: Lines kept per species: log gf − θχ at 4500 K within this many dex of the species' strongest.
KEEP_DEX = 3.0
THETA_KEEP = 5040.0 / 4500.0


def air_to_vacuum(air) -> np.ndarray:
    """Vacuum wavelength (Å) of an air wavelength (Å): the refractive index of standard air
    of Ciddor (1996) in the inverse form of N. Piskunov used by VALD, s = 10⁴/λ_air (μm⁻¹):
    n = 1 + 8.336624212083e-5 + 2.408926869968e-2/(130.1065924522 − s²)
    + 1.599740894897e-4/(38.92568793293 − s²)."""
    air = np.asarray(air, float)
    s2 = (1e4 / air) ** 2
    n = (1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2)
         + 1.599740894897e-4 / (38.92568793293 - s2))
    return air * n


def read_turbospectrum(path) -> pd.DataFrame:
    """Every transition of a Turbospectrum line list: species code, air and vacuum
    wavelength (Å), χ (eV), log gf. A block whose line count does not match its lines, or a
    transition line that does not parse, is a ValueError naming the file and line."""
    path = Path(path)
    rows: list[tuple[str, float, float, float]] = []
    species, expected, seen, header_left = None, 0, 0, 0

    def close_block(lineno):
        if species is not None and seen != expected:
            raise ValueError(f"{path}: species {species} announces {expected} lines but has "
                             f"{seen} (block ending at line {lineno})")

    with path.open() as fh:
        for lineno, text in enumerate(fh, 1):
            if not text.strip():
                continue
            if text.lstrip().startswith("'"):
                if header_left == 0:            # a block's first header line
                    close_block(lineno)
                    parts = text.split("'")
                    counts = parts[2].split() if len(parts) > 2 else []
                    if len(counts) != 2 or not counts[1].isdigit():
                        raise ValueError(f"{path}:{lineno}: expected a species header "
                                         f"'<code>' <ion> <n lines>, got {text.strip()!r}")
                    species, expected, seen = parts[1].strip(), int(counts[1]), 0
                    header_left = 1
                else:                           # its comment line
                    header_left = 0
                continue
            if species is None or header_left:
                raise ValueError(f"{path}:{lineno}: transition before a species header")
            fields = text.split()
            try:
                air, chi, loggf = float(fields[0]), float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: expected 'λ_air χ log gf ...', got "
                                 f"{text.strip()!r}") from None
            rows.append((species, air, chi, loggf))
            seen += 1
    close_block(lineno + 1 if rows else 0)
    table = pd.DataFrame(rows, columns=["code", "air", "chi_eV", "loggf"])
    table["vac"] = air_to_vacuum(table["air"].to_numpy())
    return table


def molecular_subset(table: pd.DataFrame) -> pd.DataFrame:
    """The species of MOLECULES, each cut to lines within KEEP_DEX of its strongest
    log gf − θχ at 4500 K: species name, air and vacuum Å (3 decimals), χ eV, log gf."""
    keep = table[table["code"].isin(list(MOLECULES))].copy()
    strength = keep["loggf"] - THETA_KEEP * keep["chi_eV"]
    keep = keep[strength >= strength.groupby(keep["code"]).transform("max") - KEEP_DEX]
    out = pd.DataFrame({"species": keep["code"].map(MOLECULES), "air": keep["air"],
                        "vac": keep["vac"].round(3), "chi_eV": keep["chi_eV"],
                        "loggf": keep["loggf"]})
    return out.sort_values(["species", "vac"]).reset_index(drop=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("linelist", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    subset = molecular_subset(read_turbospectrum(args.linelist))
    subset.to_csv(args.out, index=False)
    counts = subset["species"].value_counts().sort_index()
    print(f"{args.out}: {len(subset)} lines ({', '.join(f'{k} {v}' for k, v in counts.items())})")


if __name__ == "__main__":
    main()
