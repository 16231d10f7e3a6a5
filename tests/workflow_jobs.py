"""Running the real workflow from tests (a `snakemake` subprocess) and reading its plan."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "ci.yaml"
#: One thread per job, so that two of the CI config's small jobs run at once on 2 cores. Results
#: are compared byte for byte only between runs with the same threads: a job's threads set its
#: BLAS threads, which change float64 sums in the last bits.
THREADS = ("--max-threads", "1")


def command(workdir, *args, configfile=CONFIG, snakefile=REPO / "Snakefile") -> list[str]:
    """The snakemake command line the tests run in `workdir` (config/ci.yaml unless
    `configfile` is None, two cores, one thread per job, then `args`)."""
    config = ["--configfile", str(configfile)] if configfile else []
    return [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory",
            str(workdir), *config, "--cores", "2", *THREADS, *args]


#: The environment of the tests' snakemake processes (fixed hash seed: same DAG order).
ENV = {**os.environ, "PYTHONHASHSEED": "0"}


def snakemake(workdir, *args, check=True, snakefile=REPO / "Snakefile"):
    """Run the workflow on config/ci.yaml (plus `args`) in `workdir`; the CompletedProcess."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(command(workdir, *args, snakefile=snakefile), capture_output=True,
                          text=True, env=ENV, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


def result_files(workdir) -> dict[str, bytes]:
    """{path: bytes} of every file under workdir/results and workdir/resources."""
    workdir = Path(workdir)
    return {str(p.relative_to(workdir)): p.read_bytes()
            for top in ("results", "resources") for p in sorted((workdir / top).rglob("*"))
            if p.is_file()}


def _job_blocks(dry_run_output: str):
    """(rule, is local, {field: value}) of every job block a `snakemake -n` prints."""
    for block in dry_run_output.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        head = next((line for line in lines if line.startswith(("rule ", "localrule "))), None)
        if head is None:
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line and line != head)
        yield head.split()[1].rstrip(":"), head.startswith("localrule"), fields


def _pairs(text: str) -> dict:
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a `snakemake -n` plans."""
    return [(rule, _pairs(fields.get("wildcards", "")))
            for rule, _, fields in _job_blocks(dry_run_output)]


def planned_resources(dry_run_output: str) -> list[tuple[str, bool, dict]]:
    """(rule, runs locally, resources) of every job a `snakemake -n` plans."""
    return [(rule, local, _pairs(fields.get("resources", "")))
            for rule, local, fields in _job_blocks(dry_run_output)]


def workflow_copy(tmp_path) -> Path:
    """A copy of the workflow and library (file times kept) whose source a test may edit. The
    library's bytecode comes along: Python checks it against its source's time and size, so an
    edited module is compiled again and the others are not."""
    copy = tmp_path / "repo"
    copy.mkdir()
    ignore = shutil.ignore_patterns("*.egg-info")
    for name in ("Snakefile", "workflow", "scripts", "src", "config", "envs", "profiles"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=ignore)
        else:
            shutil.copy2(source, copy / name)
    return copy
