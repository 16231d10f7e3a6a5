"""What a Snakemake report (`snakemake --report report.html`) weighs, and what the report of
another config would weigh, without running that config.

The report is one HTML file: a fixed part (the viewer's JavaScript, the rule and package
tables) and, in its `results` object, every file a rule marks with `report()`, embedded as a
base64 data URI beside its caption and the job that made it. `contents` lists those files.
`project` estimates another config's report from a finished run's: each job that config plans
(`snakemake -n`) is given the report files of the measured run's jobs of the same rule and
task (or, for a task the run lacks, of the same rule), at their mean size. Figures whose size
grows with the data (scatter plots of more stars) make it a lower bound for larger surveys.
Not imported by any workflow rule: a tool for measuring (bench/report_size.py) and tests.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd

_RESULTS = re.compile(r"var results = (\{.*?\});\n", re.S)
_JOB = re.compile(r"^(?:local)?rule (\w+):$(.*?)(?=^\s*$|\Z)", re.S | re.M)


def _results_json(html: str) -> str:
    found = _RESULTS.search(html)
    if found is None:
        raise ValueError("not a Snakemake report: no `var results = {...}` object")
    return found.group(1)


def contents(report_path) -> pd.DataFrame:
    """One row per embedded file of a report: path, rule, task (the job's `task` wildcard, ""
    when it has none), wildcards, mime, bytes (the file's own size), embedded (base64 characters
    in the HTML)."""
    html = Path(report_path).read_text(errors="replace")
    rows = []
    for path, entry in json.loads(_results_json(html)).items():
        job = entry.get("job_properties") or {}
        wildcards = _wildcards(job.get("wildcards", ""))
        payload = entry["data_uri"].split("base64,", 1)[-1]
        rows.append({"path": path, "rule": job.get("rule", ""), "task": wildcards.get("task", ""),
                     "wildcards": job.get("wildcards", ""), "mime": entry.get("mime_type", ""),
                     "bytes": len(base64.b64decode(payload)), "embedded": len(payload)})
    return pd.DataFrame(rows, columns=["path", "rule", "task", "wildcards", "mime", "bytes",
                                       "embedded"])


def overhead(report_path) -> dict:
    """{"total": the report's characters, "fixed": those outside the results object,
    "per_file": the mean characters per embedded file besides its data (caption, labels)}."""
    html = Path(report_path).read_text(errors="replace")
    results = _results_json(html)
    n_files = max(len(json.loads(results)), 1)
    data = sum(contents(report_path)["embedded"])
    return {"total": len(html), "fixed": len(html) - len(results),
            "per_file": (len(results) - data) / n_files}


def _wildcards(text: str) -> dict:
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


def planned_jobs(dry_run_output: str) -> pd.DataFrame:
    """rule, task (its `task` wildcard or "") and wildcards of every job `snakemake -n`
    prints."""
    rows = []
    for rule, body in _JOB.findall(dry_run_output):
        line = next((l.strip() for l in body.splitlines() if l.strip().startswith("wildcards:")),
                    "wildcards:")
        text = line.split(":", 1)[1].strip()
        rows.append({"rule": rule, "task": _wildcards(text).get("task", ""), "wildcards": text})
    return pd.DataFrame(rows, columns=["rule", "task", "wildcards"])


def project(report_path, dry_run_output: str) -> pd.DataFrame:
    """Per rule of the planned jobs that put files in the report: jobs, files and estimated
    characters in the projected report (`embedded` plus each file's caption and labels), from
    the measured report's files of the same rule and task. The last row, rule "(fixed)", is
    the part that does not depend on the jobs; the column `embedded` sums to the estimate."""
    measured = contents(report_path)
    extra = overhead(report_path)
    planned = planned_jobs(dry_run_output)
    # A measured job is its rule's wildcards; a report() directory's files add their own
    # (the `label` of plots/{label}.png), which the planned jobs do not have.
    keys = {rule: set(_wildcards(jobs["wildcards"].iat[0]))
            for rule, jobs in planned.groupby("rule")}
    measured["job"] = [tuple(sorted((k, v) for k, v in _wildcards(text).items()
                                    if k in keys.get(rule, ())))
                       for rule, text in zip(measured["rule"], measured["wildcards"])]
    per_key = measured.groupby(["rule", "task"]).agg(files=("path", "size"),
                                                     jobs=("job", "nunique"),
                                                     mean=("embedded", "mean"))
    per_rule = measured.groupby("rule").agg(files=("path", "size"), jobs=("job", "nunique"),
                                            mean=("embedded", "mean"))
    rows = []
    for (rule, task), jobs in planned.groupby(["rule", "task"]):
        if (rule, task) in per_key.index:
            ref = per_key.loc[(rule, task)]
        elif rule in per_rule.index:
            ref = per_rule.loc[rule]
        else:
            continue                    # a rule that puts nothing in the report
        files = len(jobs) * ref["files"] / ref["jobs"]
        rows.append({"rule": rule, "task": task, "jobs": len(jobs), "files": files,
                     "embedded": files * (ref["mean"] + extra["per_file"])})
    table = pd.DataFrame(rows, columns=["rule", "task", "jobs", "files", "embedded"])
    table = table.groupby("rule", as_index=False)[["jobs", "files", "embedded"]].sum()
    fixed = pd.DataFrame([{"rule": "(fixed)", "jobs": 0, "files": 0.0,
                           "embedded": float(extra["fixed"])}])
    return pd.concat([table, fixed], ignore_index=True)
