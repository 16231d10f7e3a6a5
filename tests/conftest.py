"""Test session set-up: JAX as a CPU workflow job runs it (stargrad.job), before JAX is imported."""
from stargrad.job import jax_environment

jax_environment("cpu")


import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from workflow_jobs import snakemake  # noqa: E402


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """A finished CI-config run of the workflow (the reference of the workflow and cluster
    tests); STARGRAD_TEST_WORKDIR reuses (and updates) an earlier one."""
    reuse = os.environ.get("STARGRAD_TEST_WORKDIR")
    workdir = Path(reuse) if reuse else tmp_path_factory.mktemp("wf")
    snakemake(workdir)
    return workdir
