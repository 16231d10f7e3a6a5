"""Test session set-up: JAX as a CPU workflow job runs it (stargrad.pipeline.job), before JAX is
imported, with one compilation cache for the session: the tests and every workflow run they start
(the local CI run, the SLURM runs, the reruns) load what another already compiled. A fresh
directory per session, removed at its end, unless STARGRAD_COMPILATION_CACHE names one."""
import os
import shutil
import tempfile

from stargrad.pipeline.job import CACHE_ENV, jax_environment

SESSION_CACHE = None if os.environ.get(CACHE_ENV) else tempfile.mkdtemp(prefix="stargrad-jax-")
if SESSION_CACHE:
    os.environ[CACHE_ENV] = SESSION_CACHE
jax_environment("cpu")


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import slurm_runs as slurm_runs_module  # noqa: E402
from slurm_runs import BackgroundRun  # noqa: E402
from workflow_jobs import CONFIG  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def local_run(request, tmp_path_factory):
    """The CI-config run of the workflow that the workflow and cluster tests read (`run`),
    started with the session when one of them is selected, so that the unit tests go on
    alongside it (the session's tests otherwise use one core of two); a
    slurm_runs.BackgroundRun, or None. STARGRAD_TEST_WORKDIR reuses (and updates) an earlier
    run's directory."""
    if not any("run" in item.fixturenames for item in request.session.items):
        yield None
        return
    reuse = os.environ.get("STARGRAD_TEST_WORKDIR")
    workdir = Path(reuse) if reuse else tmp_path_factory.mktemp("wf")
    background = BackgroundRun(workdir, ["--configfile", str(CONFIG)], slurm=False)
    yield background
    background.stop()


@pytest.fixture(scope="session")
def run(local_run):
    """A finished CI-config run of the workflow (the reference of the workflow and cluster
    tests): the session's background run, awaited."""
    if local_run.wait() != 0:
        raise AssertionError(f"the CI-config run failed:\n{local_run.output(8000)}")
    return local_run.workdir


def pytest_collection_modifyitems(items):
    """The tests that read the session's CI-config run go after the unit tests, and the tests
    that await a background SLURM run go last: the other tests run while those runs go on,
    instead of waiting on them halfway through the session."""
    items.sort(key=lambda item: (item.originalname in slurm_runs_module.RUNS,
                                 "run" in item.fixturenames))


@pytest.fixture
def no_proxy(monkeypatch):
    """No HTTP proxy: the tests' downloads go to the loopback server of tests/httpserver.py."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session", autouse=True)
def slurm_runs(request, tmp_path_factory):
    """The cluster tests' SLURM runs (tests/slurm_runs.py), started with the session when those
    tests are selected and a SLURM answers, so that they go on alongside the other tests;
    {test name: BackgroundRun}, each awaited by its test."""
    selected = {item.originalname for item in request.session.items}
    wanted = [name for name in slurm_runs_module.RUNS if name in selected]
    runs = {}
    if wanted and slurm_runs_module.slurm_up():
        runs = {name: slurm_runs_module.RUNS[name](tmp_path_factory.mktemp("slurm"))
                for name in wanted}
    yield runs
    for background in runs.values():
        background.stop()


@pytest.fixture(scope="session", autouse=True)
def session_cache():
    """Removes the session's compilation cache when the session ends."""
    yield
    if SESSION_CACHE:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)
