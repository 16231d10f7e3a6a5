"""Test session set-up: JAX as a CPU workflow job runs it (stargrad.pipeline.job), before JAX is
imported, with the compilation cache a job uses (`job.compilation_cache_dir`: the user's,
~/.cache/stargrad/jax/<host CPU>, unless STARGRAD_COMPILATION_CACHE names another or "off"):
the tests (in every pytest-xdist worker) and every workflow run they start (the local CI run,
the SLURM runs, the reruns) load what another, or an earlier session, already compiled. The
tests of the cache itself give it fresh directories of their own."""
import json
import os
import time

from stargrad.pipeline.job import jax_environment

jax_environment("cpu")


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import slurm_runs as slurm_runs_module  # noqa: E402
from slurm_runs import BackgroundRun  # noqa: E402


#: The session's background run of the CI config (the `run` fixture), among its SLURM runs.
LOCAL_RUN = "ci-local"
#: The test processes' nice value, above the background runs' (0): the CI-config run, which a
#: third of the tests await, gets the cores first, and the unit tests take what it leaves.
TEST_NICENESS = 10


@pytest.fixture(scope="session", autouse=True)
def background_runs(request, tmp_path_factory):
    """The session's workflow runs, started with the session so that the other tests go on
    alongside them: the CI-config run that the workflow and cluster tests read (`run`) when one
    of them is selected, and the cluster tests' SLURM runs (tests/slurm_runs.py) when those are
    selected and a SLURM answers. {name: BackgroundRun}, each awaited by the tests that read it.

    Under pytest-xdist every worker comes here: the first to claim the session's shared
    directory starts the runs and lists them there, the others attach to the listed runs, and
    the owner awaits them all before it ends. Then each lowers its own priority
    (_lower_priority); the runs already started keep theirs. STARGRAD_TEST_WORKDIR reuses (and
    updates) an earlier CI-config run's directory."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent              # the session's, above each worker's own
    manifest = shared / "background-runs.json"
    try:
        os.close(os.open(shared / "background-runs.claim", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        _lower_priority()
        yield {name: BackgroundRun(Path(workdir))
               for name, workdir in _await_manifest(manifest).items()}
        return
    items = request.session.items
    workdirs = {}
    if any("run" in item.fixturenames for item in items):
        workdirs[LOCAL_RUN] = Path(os.environ.get("STARGRAD_TEST_WORKDIR") or shared / "wf")
    selected = {item.originalname for item in items}
    if any(name in selected for name in slurm_runs_module.RUNS) and slurm_runs_module.slurm_up():
        workdirs.update({name: shared / name / "run" for name in slurm_runs_module.RUNS
                         if name in selected})
    starts = {LOCAL_RUN: slurm_runs_module.local_run, **slurm_runs_module.RUNS}
    started = [starts[name](workdir) for name, workdir in workdirs.items()]
    manifest.write_text(json.dumps({name: str(workdir) for name, workdir in workdirs.items()}))
    _lower_priority()
    yield dict(zip(workdirs, started))
    try:
        for background in started:
            background.wait()
    finally:
        for background in started:
            background.stop()


def _lower_priority() -> None:
    """This test process's nice value to TEST_NICENESS, for every thread it has (on Linux a nice
    value is a thread's: JAX's CPU threads exist from the collection on) and so for the threads
    and subprocesses they start."""
    tasks = Path("/proc/self/task")
    for thread in os.listdir(tasks) if tasks.is_dir() else ["0"]:
        os.setpriority(os.PRIO_PROCESS, int(thread), TEST_NICENESS)


def _await_manifest(manifest: Path, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while not manifest.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no test process listed the session's runs in {manifest}")
        time.sleep(0.2)
    return json.loads(manifest.read_text())


@pytest.fixture(scope="session")
def run(background_runs):
    """A finished CI-config run of the workflow (the reference of the workflow and cluster
    tests): the session's background run, awaited."""
    local = background_runs[LOCAL_RUN]
    if local.wait() != 0:
        raise AssertionError(f"the CI-config run failed:\n{local.output(8000)}")
    return local.workdir


@pytest.fixture(scope="session")
def slurm_runs(background_runs):
    """The cluster tests' SLURM runs: {test name: BackgroundRun}, each awaited by its test."""
    return {name: r for name, r in background_runs.items() if name in slurm_runs_module.RUNS}


def pytest_collection_modifyitems(items):
    """The tests that read the session's CI-config run go after the unit tests, and the tests
    that await a background SLURM run go last: the other tests run while those runs go on,
    instead of waiting on them halfway through the session. In each group the tests marked
    `long` go first, so that no worker ends the session running one of them while the other
    has nothing left. The readers of the CI-config run go to any worker: none of them changes
    its directory (they rebuild, resume or retry in copies; dry runs and reports only read
    it)."""
    items.sort(key=lambda item: (item.originalname in slurm_runs_module.RUNS,
                                 "run" in item.fixturenames,
                                 item.get_closest_marker("long") is None))


@pytest.fixture
def no_proxy(monkeypatch):
    """No HTTP proxy: the tests' downloads go to the loopback server of tests/httpserver.py."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
