"""The catalogue at survey scale on this machine (a script, not a test).

For each survey size, config/scale.yaml with `survey.mock.n_field` set to it: the workflow
writes the mock survey (4 shard jobs), the 3,000/500/1,000-star split and the three models,
then each model's catalogue alone (so its wall time is the catalogue's), with the machine's
`--cores`. From the `benchmark:` files and the shard logs it reports per model: wall time of
the catalogue, survey spectra/s, peak memory (max_rss) of the largest shard job, and per shard
job the spectra/s of reading files and of the rest (prediction, MC samples included); and the
survey's generation time (wall, its shards in parallel) and size on disk. It then projects the
whole DR17 (733,901 allStar rows) from the largest size: on this machine, on a 32-core node
(16 two-thread shard jobs), and on a SLURM cluster of 64 two-core shard jobs.

    .venv/bin/python bench/bench_scale.py [--sizes 10000 30000 100000] [--workdir scale-runs]
        [--cores 2] [--json PATH] [--from-json PATH]

Each size keeps its run under <workdir>/<size>/ (about 126 kB of files per star); rerunning
reuses what is there, as Snakemake does.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
DR17_ROWS = 733_901
SHARD_LINE = re.compile(r"shard (\d+): (\d+) spectra predicted.*\(([\d.]+) spectra/s\); reading "
                        r"files ([\d.]+) s \(([\d.]+) spectra/s\), the rest ([\d.]+) s "
                        r"\(([\d.]+) spectra/s\)")


def run_size(n_stars: int, workdir: Path, cores: int) -> dict:
    """Run config/scale.yaml at `n_stars` under workdir/<n_stars>; the measured figures."""
    config = yaml.safe_load((REPO / "config" / "scale.yaml").read_text())
    config["survey"]["mock"]["n_field"] = int(n_stars)
    config["survey"]["name"] = name = f"mock-scale-{n_stars}"
    work = workdir / str(n_stars)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    models = list(config["catalogue"]["models"])

    def snakemake(*targets) -> float:
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(work), "--configfile", str(work / "config.yaml"),
               "--cores", str(cores), *targets]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    print(f"{n_stars} stars: mock survey", flush=True)
    survey_wall = snakemake(f"resources/{name}/allStar-dr17-synspec_rev1.fits")
    jobs = [_benchmark(p) for p in (work / "benchmarks/survey").rglob("*.tsv")]
    print(f"{n_stars} stars: split and models", flush=True)
    snakemake(*[f"results/catalogue/{m}/aspcap/reference.npz" for m in models],
              *[f"results/predictions/{m}/aspcap/calibration.csv" for m in models])
    out = {"n_stars": n_stars, "survey_s": survey_wall,
           "survey_max_rss_mb": max(job["max_rss"] for job in jobs),
           "survey_gb": _size(work / "resources" / name) / 1e9, "models": {}}
    for model in models:
        print(f"{n_stars} stars: catalogue of {model}", flush=True)
        wall = snakemake(f"results/catalogue/{model}/aspcap.fits")
        bench = work / "benchmarks/catalogue" / model / "aspcap"
        shards = [_benchmark(p) for p in sorted(bench.glob("shard*.tsv"))]
        lines = [SHARD_LINE.search(p.read_text())
                 for p in sorted((work / "logs/catalogue" / model / "aspcap").glob("shard*.log"))]
        out["models"][model] = {
            "wall_s": wall, "spectra_per_s": n_stars / wall,
            "max_rss_mb": max(s["max_rss"] for s in shards),
            "job_spectra_per_s": [float(m.group(3)) for m in lines],
            "read_spectra_per_s": [float(m.group(5)) for m in lines],
            "rest_spectra_per_s": [float(m.group(7)) for m in lines],
            "n_shards": len(shards),
            "catalogue_mb": (work / f"results/catalogue/{model}/aspcap.fits").stat().st_size / 1e6,
        }
    return out


def _benchmark(path: Path) -> dict:
    row = pd.read_csv(path, sep="\t").iloc[-1]
    return {"s": float(row["s"]), "max_rss": float(row["max_rss"])}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mean(values) -> float:
    return sum(values) / len(values)


def report(results: list[dict]) -> str:
    lines = ["| stars | survey generation | survey on disk | model | catalogue wall | spectra/s "
             "(whole survey) | per shard job: reading / rest, spectra/s | peak memory of a "
             "shard job | catalogue file |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for model, m in res["models"].items():
            lines.append(
                f"| {res['n_stars']:,} | {res['survey_s']:.0f} s | {res['survey_gb']:.2f} GB | "
                f"{model} | {m['wall_s']:.0f} s | {m['spectra_per_s']:.0f} | "
                f"{_mean(m['read_spectra_per_s']):.0f} / {_mean(m['rest_spectra_per_s']):.0f} | "
                f"{m['max_rss_mb']:.0f} MB | {m['catalogue_mb']:.1f} MB |")
    big = max(results, key=lambda r: r["n_stars"])
    per_star_gb = big["survey_gb"] / big["n_stars"]
    lines += ["", f"Projected for DR17 ({DR17_ROWS:,} allStar rows; spectra "
              f"{DR17_ROWS * per_star_gb:.0f} GB at this survey's file size), from the "
              f"{big['n_stars']:,}-star run. Many jobs at once need the filesystem to deliver "
              f"their summed reading rate (last column):", "",
              "| model | this machine | 32-core node (16 two-thread jobs) | SLURM, 64 shard "
              "jobs of 2 cores | catalogue file | reading rate of 16 jobs |",
              "|---|---|---|---|---|---|"]
    for model, m in big["models"].items():
        job_rate = _mean(m["job_spectra_per_s"])
        lines.append(
            f"| {model} | {DR17_ROWS / m['spectra_per_s'] / 3600:.2f} h | "
            f"{DR17_ROWS / (16 * job_rate) / 60:.1f} min | "
            f"{DR17_ROWS / (64 * job_rate) / 60:.1f} min + queue | "
            f"{m['catalogue_mb'] * DR17_ROWS / big['n_stars'] / 1e3:.2f} GB | "
            f"{16 * job_rate * per_star_gb:.1f} GB/s |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--workdir", type=Path, default=REPO / "scale-runs")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--from-json", type=Path, help="print the tables of an earlier --json")
    args = parser.parse_args(argv)
    if args.from_json:
        print(report(json.loads(args.from_json.read_text())))
        return
    results = [run_size(n, args.workdir.resolve(), args.cores) for n in args.sizes]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(report(results))


if __name__ == "__main__":
    main()
