"""Where a finished workflow run spent its time: per rule, its jobs, wall and CPU seconds and
start-up seconds, and the critical path through the DAG.

    .venv/bin/python bench/dag_profile.py [RUNDIR] [--json PATH]     # RUNDIR: . by default

Reads what the run left in RUNDIR:
- `.snakemake/metadata/` (one record per output file): each job's rule, inputs, log, start and
  end time (wall = end - start, Snakemake's own bookkeeping included);
- `logs/**.log`: the job's SET_UP and DONE lines (`stargrad.pipeline.job`): start-up = seconds from
  the job's process start to the end of its set-up (Python, Snakemake's script preamble, JAX
  imported and its backend up; the stage's own imports come after), and the job's CPU seconds
  (its process and children) when it ends; in a JAX job its JAX_PROGRAMS line: the programs
  JAX made and the seconds it spent tracing and lowering them (Python work that no cache
  saves) and compiling them or loading them from the compilation cache;
- `benchmarks/**.tsv` beside a log (logs/X.log -> benchmarks/X.tsv): CPU seconds of jobs whose
  log has no DONE line, and peak memory.
The profile describes the jobs that made the current files: a target rebuilt later counts
with its latest job. The critical path is the chain of jobs, each needing the previous one's
output, with the largest sum of wall times: no schedule on any number of cores ends sooner.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from stargrad.pipeline.job import job_timing  # noqa: E402


#: A job's JAX_PROGRAMS figures, summed per rule: programs, wall seconds tracing and lowering
#: them, and compiling or loading them from the compilation cache.
JAX_FIELDS = ("programs", "trace_lower_s", "compile_s")


@dataclass
class Job:
    rule: str
    name: str                     # its log path, else its first output
    start: float                  # epoch seconds
    end: float
    outputs: set = field(default_factory=set)
    inputs: set = field(default_factory=set)
    cpu_s: float | None = None
    setup_s: float | None = None
    setup_cpu_s: float | None = None
    programs: int = 0
    trace_lower_s: float = 0.0
    compile_s: float = 0.0
    max_rss_mb: float | None = None

    @property
    def wall_s(self) -> float:
        return self.end - self.start


def _metadata_records(rundir: Path):
    """(output path, record) of every file Snakemake's metadata describes."""
    root = rundir / ".snakemake" / "metadata"
    for path in sorted(root.rglob("*")):
        if path.is_file():
            encoded = "".join(path.relative_to(root).parts)    # long names are split in folders
            output = base64.urlsafe_b64decode(encoded).decode()
            yield output, json.loads(path.read_text())


def _benchmark(path: Path) -> dict:
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return rows[-1] if rows else {}


def load_jobs(rundir) -> list[Job]:
    """Every job recorded in `rundir`'s metadata, with its timings from logs and benchmarks."""
    rundir = Path(rundir)
    jobs: dict[tuple, Job] = {}
    for output, record in _metadata_records(rundir):
        if record.get("incomplete") or record.get("starttime") is None:
            continue
        logs = record.get("log") or []
        key = (record["rule"], record.get("job_hash"))
        job = jobs.setdefault(key, Job(record["rule"], logs[0] if logs else output,
                                       record["starttime"], record["endtime"]))
        job.start, job.end = min(job.start, record["starttime"]), max(job.end, record["endtime"])
        job.outputs.add(output)
        job.inputs.update(record.get("input") or [])
    for job in jobs.values():
        log = rundir / job.name
        if not job.name.startswith("logs/") or not log.is_file():
            continue
        timing = job_timing(log.read_text(errors="replace"))
        job.cpu_s = timing.get("cpu_s")
        job.setup_s, job.setup_cpu_s = timing.get("setup_s"), timing.get("setup_cpu_s")
        job.programs = timing.get("programs", 0)
        job.trace_lower_s = timing.get("trace_s", 0.0) + timing.get("lower_s", 0.0)
        job.compile_s = timing.get("compile_s", 0.0)
        bench = rundir / "benchmarks" / Path(job.name).relative_to("logs").with_suffix(".tsv")
        if bench.is_file():
            row = _benchmark(bench)
            if job.cpu_s is None and row.get("cpu_time") not in (None, "", "NA"):
                job.cpu_s = float(row["cpu_time"])
            if row.get("max_rss") not in (None, "", "NA"):
                job.max_rss_mb = float(row["max_rss"])
    return sorted(jobs.values(), key=lambda j: j.start)


def rule_table(jobs: list[Job]) -> list[dict]:
    """Per rule: jobs, wall, CPU and start-up seconds, JAX programs and the seconds spent making
    them (sums over its jobs; of the jobs that logged them), peak memory; most CPU first."""
    rules: dict[str, dict] = {}
    for job in jobs:
        row = rules.setdefault(job.rule, {"rule": job.rule, "jobs": 0, "wall_s": 0.0,
                                          "cpu_s": 0.0, "setup_s": 0.0, "setup_cpu_s": 0.0,
                                          **dict.fromkeys(JAX_FIELDS, 0), "max_rss_mb": None})
        row["jobs"] += 1
        row["wall_s"] += job.wall_s
        row["cpu_s"] += job.cpu_s or 0.0
        row["setup_s"] += job.setup_s or 0.0
        row["setup_cpu_s"] += job.setup_cpu_s or 0.0
        for name in JAX_FIELDS:
            row[name] += getattr(job, name)
        if job.max_rss_mb is not None:
            row["max_rss_mb"] = max(row["max_rss_mb"] or 0.0, job.max_rss_mb)
    return sorted(rules.values(), key=lambda r: -r["cpu_s"])


def critical_path(jobs: list[Job]) -> list[Job]:
    """The chain of jobs, each reading an output of the one before, with the largest sum of
    wall times."""
    producer = {output: job for job in jobs for output in job.outputs}
    best: dict[int, tuple[float, Job | None]] = {}
    for job in sorted(jobs, key=lambda j: j.end):            # producers end before consumers
        parents = {id(producer[i]): producer[i] for i in job.inputs if i in producer}
        before = max(((best[k][0], parent) for k, parent in parents.items() if k in best),
                     key=lambda pair: pair[0], default=(0.0, None))
        best[id(job)] = (before[0] + job.wall_s, before[1])
    if not best:
        return []
    by_id = {id(job): job for job in jobs}
    last = by_id[max(best, key=lambda k: best[k][0])]
    path = [last]
    while best[id(path[-1])][1] is not None:
        path.append(best[id(path[-1])][1])
    return path[::-1]


def profile(rundir) -> dict:
    """The rule table, totals and critical path of the run in `rundir`, as plain data."""
    jobs = load_jobs(rundir)
    path = critical_path(jobs)
    return {
        "rules": rule_table(jobs),
        "total": {"jobs": len(jobs), "wall_s": sum(j.wall_s for j in jobs),
                  "cpu_s": sum(j.cpu_s or 0.0 for j in jobs),
                  "setup_s": sum(j.setup_s or 0.0 for j in jobs),
                  "setup_cpu_s": sum(j.setup_cpu_s or 0.0 for j in jobs),
                  "jobs_with_cpu": sum(j.cpu_s is not None for j in jobs),
                  **{name: sum(getattr(j, name) for j in jobs) for name in JAX_FIELDS},
                  "makespan_s": (max(j.end for j in jobs) - min(j.start for j in jobs)
                                 if jobs else 0.0)},
        "critical_path": [{"rule": j.rule, "job": j.name, "wall_s": j.wall_s,
                           "setup_s": j.setup_s, "inputs": sorted(j.inputs),
                           "outputs": sorted(j.outputs)} for j in path],
    }


def _fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_profile(data: dict, out=sys.stdout) -> None:
    total = data["total"]
    print(f"{'rule':34s} {'jobs':>5s} {'wall s':>9s} {'CPU s':>9s} {'start-up s':>10s} "
          f"{'(CPU s)':>8s} {'JAX programs':>12s} {'trace+lower s':>13s} {'compile s':>9s} "
          f"{'peak MB':>8s}", file=out)
    for row in data["rules"] + [{"rule": "total", "max_rss_mb": None, **total}]:
        print(f"{row['rule']:34s} {row['jobs']:5d} {row['wall_s']:9.1f} {row['cpu_s']:9.1f} "
              f"{row['setup_s']:10.1f} {row['setup_cpu_s']:8.1f} {row['programs']:12d} "
              f"{row['trace_lower_s']:13.1f} {row['compile_s']:9.1f} "
              f"{_fmt(row['max_rss_mb'], 0):>8s}", file=out)
    print(f"\n{total['jobs']} jobs ({total['jobs_with_cpu']} with CPU seconds); first start to "
          f"last end {total['makespan_s']:.1f} s; CPU {total['cpu_s']:.1f} s, of which "
          f"start-up {total['setup_cpu_s']:.1f} s; JAX made {total['programs']} programs, "
          f"{total['trace_lower_s']:.1f} s tracing and lowering them (wall), "
          f"{total['compile_s']:.1f} s compiling or loading them", file=out)
    path = data["critical_path"]
    print(f"\ncritical path: {len(path)} jobs, {sum(j['wall_s'] for j in path):.1f} s wall "
          f"(start-up {sum(j['setup_s'] or 0 for j in path):.1f} s)", file=out)
    for job in path:
        print(f"  {job['wall_s']:7.1f} s  (start-up {_fmt(job['setup_s'])} s)  {job['rule']:28s}"
              f" {job['job']}", file=out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rundir", nargs="?", default=".", type=Path,
                        help="directory the workflow ran in (default: .)")
    parser.add_argument("--json", type=Path, help="also write the profile to this JSON file")
    args = parser.parse_args(argv)
    if not (args.rundir / ".snakemake" / "metadata").is_dir():
        parser.error(f"{args.rundir}: no .snakemake/metadata here; run the workflow first")
    data = profile(args.rundir)
    print_profile(data)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
