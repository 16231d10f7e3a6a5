"""The session's background workflow runs (conftest.py): the CI-config run, then the cluster
tests' runs through the SLURM profiles, whose jobs spend most of their time queued or waiting
for the executor's next status check; the other tests go on alongside them, and each test
awaits the run it reads."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import yaml

from workflow_jobs import CONFIG, ENV, REPO, command

#: For the local cluster (../shared/tools/local-slurm): no accounting database, a quick first
#: status check, the plugin's job logs kept as evidence.
LOCAL_SLURM = ("--slurm-status-command", "squeue", "--slurm-no-account",
               "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs",
               "--default-resources", "slurm_partition=main")


def slurm_up() -> bool:
    """Whether a SLURM answers `sinfo` here."""
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class BackgroundRun:
    """A snakemake process running in `workdir`, its output in workdir/../<name>.log, started by
    one test process of the session (`start`) and awaited from any: under
    pytest-xdist the tests that read a run may go to another worker than the one that owns it.
    The owner records SLURM's line for every job while the run goes on (`records`: job id ->
    `scontrol show job` line, polled every `poll_s`: SLURM forgets a finished job after
    MinJobAge, 300 s here, before a test that awaits a background run may look) and, once it
    has finished, its exit status and wall time (s, to within a poll), in files beside the
    log."""

    def __init__(self, workdir: Path):
        """The run in `workdir`, started by this test process (`start`) or another."""
        self.workdir = Path(workdir)
        self.log = self.workdir.with_suffix(".log")
        self._records = self.workdir.with_suffix(".records.json")
        self._status = self.workdir.with_suffix(".status.json")
        self.proc = None

    @classmethod
    def start(cls, workdir: Path, args, env=None, slurm: bool = True) -> BackgroundRun:
        """Start snakemake in `workdir` with `args` (ENV updated with `env`); `slurm`: poll
        SLURM's job records (False for a local run)."""
        self = cls(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(command(self.workdir, *args, configfile=None),
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                                         start_new_session=True, env={**ENV, **(env or {})})
        self._poller = threading.Thread(target=self._poll, args=(slurm,), daemon=True)
        self._poller.start()
        return self

    def _poll(self, slurm: bool, poll_s: float = 2.0) -> None:
        records = {}
        while True:
            code = self.proc.poll()
            if slurm:
                records.update(_job_records())
                _write_json(self._records, records)
            if code is not None:
                _write_json(self._status, {"code": code, "wall": time.monotonic() - self.t0})
                return
            time.sleep(poll_s)

    def wait(self, timeout: float = 1800) -> int:
        """The run's exit status, once it has finished."""
        deadline = time.monotonic() + timeout
        if self.proc is not None:
            self.proc.wait(timeout=timeout)
            self._poller.join()
        while not self._status.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the run in {self.workdir} did not finish in {timeout:.0f} s")
            time.sleep(1.0)
        return json.loads(self._status.read_text())["code"]

    @property
    def wall(self) -> float:
        """The finished run's wall time (s)."""
        return json.loads(self._status.read_text())["wall"]

    @property
    def records(self) -> dict[str, str]:
        return json.loads(self._records.read_text()) if self._records.exists() else {}

    def output(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()


def _job_records() -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True,
                         text=True).stdout
    return {match.group(1): line for line in out.splitlines()
            if (match := re.match(r"JobId=(\d+) ", line))}


def _write_json(path: Path, value) -> None:
    """Written whole, then renamed: a reader in another process never sees half of it."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value))
    partial.replace(path)


def local_run(workdir: Path) -> BackgroundRun:
    """The CI config, run locally in `workdir`: the reference the workflow and cluster tests
    read."""
    return BackgroundRun.start(workdir, ["--configfile", str(CONFIG)], slurm=False)


#: What the CI config's run through profiles/slurm makes: one model's way through every stage
#: that submits jobs (survey, data, train, predict, attribute, catalogue with its shards) and a
#: local rule, not every family: every job runs the same set-up (stargrad.pipeline.job) on SLURM
#: as locally. The session's SLURM jobs go two at a time on the test node (2 CPUs), and the
#: whole CI config through SLURM (60 sbatch jobs, 16 min) was the session's longest task.
CI_SLURM_TARGETS = ("results/catalogue/bcnn_censored/aspcap.fits",
                    "results/attribution/bcnn_censored/aspcap/jacobian.fits",
                    "results/compare/aspcap/pred_vs_true_bcnn_censored.png")


def ci_run(workdir: Path) -> BackgroundRun:
    """CI_SLURM_TARGETS of the CI config through profiles/slurm, in `workdir`."""
    return BackgroundRun.start(workdir, [*CI_SLURM_TARGETS, "--configfile", str(CONFIG),
                                         "--profile", str(REPO / "profiles" / "slurm"),
                                         *LOCAL_SLURM])


def gpu_run(workdir: Path) -> BackgroundRun:
    """device: gpu through profiles/slurm-gpu with a --config of its own (which replaces the
    profile's `config:` list, so it repeats device=gpu), on a smaller config that still runs
    every GPU rule (the GAN for generative_samples, which then scores no labels) and no oracle
    (a CPU rule of 50 CPU s that the CPU-side checks do not need). The stand-in
    GPUs compute on the CPU: the test-only allowance says so. In `workdir`, its config beside
    it."""
    config = yaml.safe_load(CONFIG.read_text())
    config["models"] = {m: s for m, s in config["models"].items()
                        if m in ("linear", "vae_2", "pca_2", "pca_4", "gan")}
    config["models"]["linear"]["tasks"] = ["logg"]
    config["tasks"] = {t: s for t, s in config["tasks"].items() if t in ("aspcap", "logg")}
    config["catalogue"].update(models={"linear": ["logg"]}, n_shards=1)
    config["oracle"]["tasks"] = []
    config["generative"]["samples"]["label_model"] = None
    configfile = workdir.with_name("gpu.yaml")
    configfile.parent.mkdir(parents=True, exist_ok=True)
    configfile.write_text(yaml.safe_dump(config))
    return BackgroundRun.start(workdir, ["--configfile", str(configfile), "--profile",
                                         str(REPO / "profiles" / "slurm-gpu"), *LOCAL_SLURM,
                                         "--config", "device=gpu", f"seed={config['seed']}"],
                               env={"STARGRAD_ALLOW_CPU_AS_GPU": "1"})


#: test name -> how its run starts (given a fresh working directory)
RUNS = {"test_ci_config_through_the_slurm_profile_equals_the_local_run": ci_run,
        "test_gpu_profile_gives_exactly_the_gpu_rules_a_gpu": gpu_run}
