"""bench/dag_profile.py on the CI config's finished run: every job accounted for once, with its
wall, CPU and start-up seconds, and a critical path that is a real chain of the DAG."""
import json
import subprocess
import sys

from workflow_jobs import REPO


def test_dag_profile_accounts_for_every_job_and_a_chain_of_the_dag(run, tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "dag_profile.py"), str(run),
                           "--json", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    logs = {str(p.relative_to(run)) for p in (run / "logs").rglob("*.log")}
    total = data["total"]
    # one job per log file (every rule logs), each with the SET_UP and DONE lines of its log
    assert total["jobs"] == len(logs) == total["jobs_with_cpu"]
    assert sum(row["jobs"] for row in data["rules"]) == total["jobs"]
    for row in data["rules"]:
        assert row["cpu_s"] > 0 and 0 < row["setup_s"] < row["wall_s"]
        assert row["rule"] in proc.stdout
    assert {"train", "predict", "attribute", "compile_dataset"} <= {r["rule"] for r in data["rules"]}
    # JAX jobs count the programs they made and the seconds spent making them; others none
    rows = {row["rule"]: row for row in data["rules"]}
    for rule in ("train", "predict", "attribute"):
        assert rows[rule]["programs"] >= rows[rule]["jobs"], rows[rule]
        assert 0 < rows[rule]["trace_lower_s"] + rows[rule]["compile_s"] < rows[rule]["wall_s"]
    assert rows["compile_dataset"]["programs"] == 0
    assert total["programs"] == sum(row["programs"] for row in data["rules"])

    path = data["critical_path"]
    for before, after in zip(path, path[1:]):
        assert set(before["outputs"]) & set(after["inputs"]), (before["job"], after["job"])
    # the longest chain starts where every job's inputs start: the mock survey's spectra
    assert path[0]["rule"] == "mock_spectra" and {job["job"] for job in path} <= logs
    # a chain runs one job after another, so it fits within the run's span
    assert sum(job["wall_s"] for job in path) <= total["makespan_s"] + 1e-6
