"""The cluster tests' runs through the SLURM profiles, started in the background when the
session starts (conftest.py): their jobs spend most of their time queued or waiting for the
executor's next status check, so they go on alongside the other tests, and each test awaits
its own run."""
from __future__ import annotations

import os
import signal
import re
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
    """A snakemake process running in `workdir`, its output in workdir/../<name>.log, and
    SLURM's record of every job while it runs (`records`: job id -> `scontrol show job`
    line), polled every `poll_s`: SLURM forgets a finished job after MinJobAge (300 s here),
    before a test that awaits a background run may look."""

    def __init__(self, workdir: Path, args, env=None, slurm: bool = True):
        self.workdir = Path(workdir)
        self.slurm = slurm               # False: a local run, no SLURM records to poll
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir.with_suffix(".log")
        self.t0 = time.monotonic()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(command(self.workdir, *args, configfile=None),
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                                         start_new_session=True, env={**ENV, **(env or {})})
        self.wall = None
        self.records: dict[str, str] = {}
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def _poll(self, poll_s: float = 2.0) -> None:
        while True:
            running = self.proc.poll() is None
            if self.slurm:
                self._record_jobs()
            if not running:
                self.wall = time.monotonic() - self.t0
                return
            time.sleep(poll_s)

    def _record_jobs(self) -> None:
        out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            match = re.match(r"JobId=(\d+) ", line)
            if match:
                self.records[match.group(1)] = line

    def wait(self, timeout: float = 1800) -> int:
        """The run's exit status, once it has finished; `wall` is then its wall time (s, to
        within a poll)."""
        code = self.proc.wait(timeout=timeout)
        self._poller.join()
        return code

    def output(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()


def ci_run(tmp: Path) -> BackgroundRun:
    """The CI config end to end through profiles/slurm."""
    return BackgroundRun(tmp / "slurm", ["--configfile", str(CONFIG), "--profile",
                                         str(REPO / "profiles" / "slurm"), *LOCAL_SLURM])


def gpu_run(tmp: Path) -> BackgroundRun:
    """device: gpu through profiles/slurm-gpu with a --config of its own (which replaces the
    profile's `config:` list, so it repeats device=gpu), on a smaller config that still runs
    every GPU rule (the GAN for generative_samples, which then scores no labels). The stand-in
    GPUs compute on the CPU: the test-only allowance says so."""
    config = yaml.safe_load(CONFIG.read_text())
    config["models"] = {m: s for m, s in config["models"].items()
                        if m in ("linear", "vae_2", "pca_2", "pca_4", "gan")}
    config["models"]["linear"]["tasks"] = ["logg"]
    config["tasks"] = {t: s for t, s in config["tasks"].items() if t in ("aspcap", "logg")}
    config["catalogue"].update(models={"linear": ["logg"]}, n_shards=1)
    config["generative"]["samples"]["label_model"] = None
    (tmp / "gpu.yaml").write_text(yaml.safe_dump(config))
    return BackgroundRun(tmp / "gpu", ["--configfile", str(tmp / "gpu.yaml"), "--profile",
                                       str(REPO / "profiles" / "slurm-gpu"), *LOCAL_SLURM,
                                       "--config", "device=gpu", f"seed={config['seed']}"],
                         env={"STARGRAD_ALLOW_CPU_AS_GPU": "1"})


#: test name -> how its run starts (given a fresh temporary directory)
RUNS = {"test_ci_config_through_the_slurm_profile_equals_the_local_run": ci_run,
        "test_gpu_profile_gives_exactly_the_gpu_rules_a_gpu": gpu_run}
