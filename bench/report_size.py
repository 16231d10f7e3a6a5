"""What the Snakemake report weighs, measured on a finished run and projected to another
config without running it (a script, not a test).

    .venv/bin/python bench/report_size.py RUN_DIR [--report PATH] [--configfile CONFIG]

RUN_DIR is a finished run (e.g. the tests' CI-config run, or `make run`'s repository root); its
report is built there with `snakemake --report` unless --report names one. It prints the
report's size, its largest embedded files, and, per rule, the projection to CONFIG (default
config/config.yaml): each job `snakemake -n --configfile CONFIG` plans in a scratch directory
gets the files of the measured run's jobs of the same rule and task at their mean size
(`stargrad.pipeline.reportsize.project`). Figures that grow with the data (scatter plots of more
stars) make the projection from a small run a lower bound.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from stargrad.pipeline import reportsize

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--cores", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--report", type=Path, help="an existing report of RUN_DIR")
    parser.add_argument("--run-configfile", type=Path,
                        help="the config RUN_DIR ran with, to build its report (default: the "
                             "run's own config/config.yaml)")
    parser.add_argument("--configfile", type=Path, default=REPO / "config" / "config.yaml")
    args = parser.parse_args()
    report = args.report
    if report is None:
        report = args.run_dir / "report.html"
        config = ["--configfile", str(args.run_configfile)] if args.run_configfile else []
        snakemake(args.run_dir, *config, "--report", str(report))
    measured = reportsize.contents(report)
    extra = reportsize.overhead(report)
    print(f"{report}: {extra['total'] / 1e6:.2f} MB, {len(measured)} embedded files "
          f"({measured['bytes'].sum() / 1e6:.2f} MB of files, "
          f"{measured['embedded'].sum() / 1e6:.2f} MB as base64), "
          f"{extra['fixed'] / 1e6:.2f} MB fixed")
    print(measured.nlargest(5, "bytes")[["path", "bytes"]].to_string(index=False))
    with tempfile.TemporaryDirectory() as scratch:
        plan = snakemake(Path(scratch), "--configfile", str(args.configfile), "-n")
    table = reportsize.project(report, plan)
    print(f"\nprojected report of {args.configfile}:")
    print(table.assign(MB=table["embedded"] / 1e6).drop(columns="embedded")
          .to_string(index=False, float_format="%.2f"))
    print(f"total: {table['embedded'].sum() / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
