"""Cluster execution as a tested capability: the SLURM profiles against a real SLURM (the
single-node cluster of ../shared/tools/local-slurm: partitions main and gpu, two stand-in GPUs),
GPU routing, JAX set up per job, training that survives its walltime, and the environments.

The SLURM tests skip, saying why, only where no SLURM answers (`sinfo`); CI starts one."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from slurm_runs import CI_SLURM_TARGETS, slurm_up
from workflow_jobs import (CONFIG, REPO, planned_resources, result_files, snakemake,
                           workflow_copy)

pytestmark = pytest.mark.workflow
GPU_PROFILE = REPO / "profiles" / "slurm-gpu" / "config.yaml"
needs_slurm = pytest.mark.skipif(not slurm_up(), reason="no SLURM answers `sinfo` here; "
                                 "start one with ../shared/tools/local-slurm start (root)")


def _gpu_rules() -> set[str]:
    """The rules whose jobs ask for a GPU under device: gpu, from the workflow's own plan."""
    with tempfile.TemporaryDirectory() as empty:
        proc = snakemake(empty, "-n", "--config", "device=gpu", "--resources", "gpu=1")
    return {rule for rule, _, res in planned_resources(proc.stdout) if res.get("gpu") == "1"}


def _rules() -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                           str(REPO / "Snakefile"), "--configfile", str(CONFIG), "--list-rules"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


def test_profiles_name_real_rules_and_route_exactly_the_gpu_rules_to_the_gpu_partition(
        tmp_path):
    rules, gpu_rules = _rules(), _gpu_rules()
    assert {"train", "predict", "attribute", "generative_anomalies"} <= gpu_rules
    assert not {"mock_survey", "compile_dataset", "select_split", "compare_task"} & gpu_rules
    for profile in (REPO / "profiles").glob("*/config.yaml"):
        settings = yaml.safe_load(profile.read_text())
        unknown = set(settings.get("set-resources", {})) - rules
        assert not unknown, f"{profile} sets resources of unknown rules {unknown}"
        for rule, resources in settings.get("set-resources", {}).items():
            assert "cpus_per_task" not in resources, f"{profile}: {rule} fixes its threads"
    # The GPU profile alone, and with a --config of its own (which replaces the profile's
    # `config:` list, device=gpu included): the partition always follows the GPU request.
    gpu_partition = "gpu"
    for extra, on_gpu in (((), gpu_rules), (("--config", "seed=3"), set()),
                          (("--config", "device=gpu", "seed=3"), gpu_rules)):
        plan = snakemake(tmp_path / "plan", "-n", "--profile", str(GPU_PROFILE.parent), *extra)
        jobs = planned_resources(plan.stdout)
        assert jobs, plan.stdout[-2000:]
        for rule, _, res in jobs:
            assert (res.get("gpu") == "1") == (res.get("slurm_partition") == gpu_partition), \
                (extra, rule, res)
        assert {rule for rule, _, res in jobs if res.get("gpu") == "1"} == on_gpu, extra
        print(f"profiles/slurm-gpu {' '.join(extra) or '(alone)'}: GPU partition for "
              f"{sorted(on_gpu) or 'no rule'}")


def test_environments_pin_the_project_stack_and_install_nothing_by_path():
    text = (REPO / "pyproject.toml").read_text()
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', text))
    for env in (REPO / "envs").glob("*.yaml"):
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        assert not [p for p in pip if p.startswith(("-e", ".", "/"))], env
        for requirement in pip:
            name, version = requirement.split("==")
            name = name.split("[")[0]
            assert pins.get(name) == version, f"{env}: {requirement} vs pyproject {pins.get(name)}"


def test_a_job_refuses_a_stargrad_that_is_not_the_workflows_own(tmp_path):
    """Jobs import the workflow's src/stargrad; an installed copy from elsewhere would run other
    code than the job's code digest describes, so the job stops and says so."""
    copy = workflow_copy(tmp_path)
    proc = snakemake(tmp_path / "run", "resources/mock-ci/truth.fits",
                     snakefile=copy / "Snakefile", check=False)
    log = (tmp_path / "run" / "logs/survey/mock-ci/shard0.log").read_text()
    assert proc.returncode != 0 and "not this workflow's" in log, log


@pytest.mark.long
def test_training_past_its_time_budget_resumes_on_retry_to_the_same_model(run, tmp_path):
    """A budget far below one epoch: each attempt trains one epoch, checkpoints and exits
    non-zero; Snakemake's retry resumes from the checkpoint, and the model is byte-identical
    to the uninterrupted run's. A checkpoint of another config is never resumed."""
    work = tmp_path / "work"
    for part in ("resources", "results/data"):
        shutil.copytree(run / part, work / part)
    target = "results/models/bcnn/aspcap/params.npz"
    log = work / "logs/train/bcnn/aspcap.log"
    checkpoints = work / "results/checkpoints/bcnn/aspcap"

    def train_with(extra, retries):
        (tmp_path / "extra.yaml").write_text(yaml.safe_dump(
            {"jobs": {"train_retries": retries}, "models": {"bcnn": extra}}))
        return snakemake(work, target, "--allowed-rules", "train", "--configfile", str(CONFIG),
                         str(tmp_path / "extra.yaml"), check=False)

    budget = {"train": {"max_epochs": 2, "batch_size": 32, "time_budget_s": 0.001}}
    other = train_with({**budget, "hyper": {"dropout_rate": 0.2}}, retries=0)
    assert other.returncode != 0 and "time budget" in log.read_text()   # stopped at epoch 1
    (foreign,) = checkpoints.glob("*/checkpoint.npz")
    assert "resuming" not in log.read_text() and "stopped after epoch 1 of 2" in log.read_text()
    assert train_with(budget, retries=3).returncode == 0
    text = log.read_text()            # Snakemake empties the log between attempts
    assert "rule train, attempt 2" in text
    resumed = [line for line in text.splitlines() if "resuming from" in line]
    assert len(resumed) == 1 and resumed[0].endswith("after epoch 1"), text
    assert foreign.parent.name not in resumed[0]
    assert list(checkpoints.iterdir()) == [foreign.parent]      # its own removed once written
    assert (work / target).read_bytes() == (run / target).read_bytes()


#: Rules the workflow runs on the submitting host (localrule: True); the CI config downloads
#: nothing.
LOCAL_RULES = {"select_split", "compare_task", "plot_pred_vs_true"}


def _jobs(workdir: Path) -> dict[str, tuple[str, str]]:
    """{job log: (rule, SLURM job id or 'none')} from the line every job logs first."""
    jobs = {}
    for log in (workdir / "logs").rglob("*.log"):
        match = re.search(r"rule (\w+), attempt \d+: host \S+, SLURM job (\w+)",
                          log.read_text())
        assert match, f"{log} lacks the job's first line"
        jobs[str(log.relative_to(workdir))] = match.groups()
    return jobs


@needs_slurm
def test_ci_config_through_the_slurm_profile_equals_the_local_run(run, slurm_runs):
    """slurm_runs.CI_SLURM_TARGETS through profiles/slurm: every job but the local rules' is a
    SLURM job whose log the executor kept, and every file equals the local run's, byte for
    byte."""
    ci = slurm_runs["test_ci_config_through_the_slurm_profile_equals_the_local_run"]
    assert ci.wait() == 0, ci.output()
    work = ci.workdir
    kept = {p.stem for p in (work / ".snakemake" / "slurm_logs").rglob("*.log")}
    jobs = _jobs(work)
    in_slurm = {log: job for log, (rule, job) in jobs.items() if rule not in LOCAL_RULES}
    assert in_slurm and "none" not in in_slurm.values(), jobs
    assert set(in_slurm.values()) <= kept, (sorted(in_slurm.values()), sorted(kept))
    assert all(job == "none" for rule, job in jobs.values() if rule in LOCAL_RULES), jobs
    print(f"\nCI config through profiles/slurm: {ci.wall:.0f} s wall (alongside other tests), "
          f"{len(kept)} sbatch jobs for {len(in_slurm)} job logs; local rules "
          f"{sorted(LOCAL_RULES)}")
    ours, reference = result_files(work), result_files(run)
    assert set(CI_SLURM_TARGETS) <= set(ours) <= set(reference)
    assert [n for n in ours if ours[n] != reference[n]] == []


@needs_slurm
def test_gpu_profile_gives_exactly_the_gpu_rules_a_gpu(slurm_runs):
    """device: gpu through profiles/slurm-gpu, with a --config of its own, on a smaller config
    that still runs every GPU rule (slurm_runs.gpu_run): their jobs carry gres:gpu:1 and see
    CUDA_VISIBLE_DEVICES, the others neither and run JAX on the CPU. A train job, submitted by
    the SLURM executor, has its runtime as walltime."""
    gpu = slurm_runs["test_gpu_profile_gives_exactly_the_gpu_rules_a_gpu"]
    assert gpu.wait() == 0, gpu.output()
    work = gpu.workdir
    gpu_rules = _gpu_rules()
    seen = {"gpu": set(), "cpu": set()}
    for log, (rule, job_id) in _jobs(work).items():
        text = (work / log).read_text()
        if job_id == "none":
            assert rule in LOCAL_RULES, log
            continue
        record = gpu.records[job_id]
        visible = re.search(r"CUDA_VISIBLE_DEVICES=(\S+?),", text).group(1)
        if rule in gpu_rules:
            assert "gres:gpu:1" in record and "Partition=gpu" in record, (log, record)
            assert visible != "(unset)", log
            assert "STARGRAD_ALLOW_CPU_AS_GPU=1: this GPU rule computes on the cpu" in text
            if rule == "train":
                assert re.search(r"walltime \d+ s left of \d+ s", text), text
            seen["gpu"].add(rule)
        else:
            assert "gres:gpu" not in record and "Partition=main" in record, (log, record)
            assert visible == "(unset)", log
            if "JAX " in text:
                assert "backend cpu" in text and "JAX_PLATFORMS=cpu" in text, log
            seen["cpu"].add(rule)
        print(f"{log}: SLURM job {job_id}, CUDA_VISIBLE_DEVICES={visible}")
    assert seen["gpu"] == gpu_rules, seen
    assert {"mock_survey", "compile_dataset", "truth_products"} <= seen["cpu"], seen
